//! Calibration against the simulated DropBot on MicroDrop 3's default chip (92 electrodes):
//! the feedback correction from the on-board test capacitors, liquid and filler capacitance
//! per mm² recovered within 2% of the simulator's physics, kept in a file and reloaded by the
//! next plugin; droplet detection that finds exactly the simulator's droplets.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::plugin::telemetry::ReadingsOptions;
use dropbot_plugin::plugin::Behaviour;
use dropbot_plugin::sim::{PhysicsParams, SimOptions, Timing};
use dropbot_testkit::{PluginHarness, PluginOptions};
use serde_json::{json, Value};

/// The simulated board's real feedback capacitor is this much larger than configured: its
/// readings are 1/1.04 of the truth until corrected.
const FEEDBACK_ERROR: f64 = 1.04;

fn device() -> Device {
    Device::microdrop3_default().expect("the default device parses")
}

/// Electrodes alone on their channel: a reading of the channel is theirs.
fn alone(d: &Device) -> Vec<usize> {
    (0..d.len())
        .filter(|&i| {
            let e = d.electrode(i).expect("electrode");
            e.channels.len() == 1
                && e.channels[0] < 120
                && d.electrodes_on_channel(e.channels[0]).len() == 1
        })
        .collect()
}

/// `count` electrodes for droplets (pairwise not touching), and `dry` electrodes touching
/// none of them.
fn pick(count: usize, dry: usize) -> (Vec<String>, Vec<String>) {
    let d = device();
    let candidates = alone(&d);
    let mut wet: Vec<usize> = Vec::new();
    for &i in &candidates {
        if wet.len() < count && wet.iter().all(|&w| w != i && !d.neighbours(w).contains(&i)) {
            wet.push(i);
        }
    }
    let near: BTreeSet<usize> = wet
        .iter()
        .flat_map(|&w| d.neighbours(w).iter().copied().chain([w]))
        .collect();
    let dry: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|i| !near.contains(i))
        .take(dry)
        .collect();
    let id = |i: &usize| d.electrode(*i).expect("electrode").id.clone();
    (wet.iter().map(id).collect(), dry.iter().map(id).collect())
}

fn options(data: &Path, feedback_error: bool) -> PluginOptions {
    let mut sim = SimOptions {
        timing: Timing::Fast,
        ..SimOptions::default()
    };
    if feedback_error {
        // The simulator's configured C16 (its EEPROM's, its build's default), made larger in
        // the hardware.
        let configured = f64::from(firmware_protocol::Config::firmware_default_c16(
            dropbot_plugin::sim::DEFAULT_FIRMWARE_VERSION,
        ));
        sim.physics = PhysicsParams {
            feedback_capacitor_f: Some(configured * FEEDBACK_ERROR),
            ..PhysicsParams::default()
        };
    }
    PluginOptions {
        sim,
        behaviour: Behaviour {
            readings: ReadingsOptions {
                data_dir: Some(data.to_path_buf()),
                ..ReadingsOptions::default()
            },
            ..Behaviour::default()
        },
        ..PluginOptions::default()
    }
}

async fn start(options: PluginOptions) -> PluginHarness {
    let mut h = PluginHarness::start(options).await.expect("harness starts");
    h.client.set_timeout(Duration::from_secs(30));
    h
}

fn droplets_on(h: &PluginHarness, ids: &[String]) {
    for id in ids {
        let volume = h.sim.unit_volume(id.as_str()).expect("an electrode");
        h.sim.add_droplet(id.as_str(), volume).expect("a droplet");
    }
}

fn within(got: f64, want: f64, fraction: f64) -> bool {
    (got / want - 1.0).abs() <= fraction
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibration_recovers_liquid_and_filler_within_2_percent_and_is_reloaded() {
    let data = tempfile::tempdir().unwrap();
    let mut h = start(options(data.path(), true)).await;
    let (wet, dry) = pick(2, 12);
    droplets_on(&h, &wet);

    let r = h
        .trigger("calibrate-feedback", json!({"repeats": 10}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let ratio = r.response["feedback_f"].as_f64().unwrap()
        / r.response["feedback_before_f"].as_f64().unwrap();
    assert!(
        within(ratio, FEEDBACK_ERROR, 0.005),
        "feedback corrected by {ratio}: {r:?}"
    );

    let sets = json!([
        {"electrodes": [wet[0]], "liquid": [wet[0]]},
        {"electrodes": [wet[1]], "liquid": [wet[1]]},
        {"electrodes": [wet[0], wet[1]], "liquid": [wet[0], wet[1]]},
        {"electrodes": dry[..8]},
        {"electrodes": dry[8..]},
        {"electrodes": [wet[0], dry[0], dry[1]], "liquid": [wet[0]]},
    ]);
    let r = h
        .trigger("calibrate-capacitance", json!({"sets": sets, "repeats": 5}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let physics = PhysicsParams::default();
    let liquid = r.response["fit"]["liquid_f_per_mm2"].as_f64().unwrap();
    let filler = r.response["fit"]["filler_f_per_mm2"].as_f64().unwrap();
    assert!(
        within(liquid, physics.liquid_f_per_mm2, 0.02),
        "liquid {liquid:e}"
    );
    assert!(
        within(filler, physics.filler_f_per_mm2, 0.02),
        "filler {filler:e}"
    );
    assert_eq!(
        r.response["fit"]["residuals_f"].as_array().map(Vec::len),
        Some(6)
    );
    let file = r.response["file"]
        .as_str()
        .expect("saved to a file")
        .to_owned();
    assert!(Path::new(&file).starts_with(data.path()), "{file}");
    h.state_where("calibration", |c| {
        c["capacitance"]["liquid_f_per_mm2"].is_number()
    })
    .await
    .unwrap();
    // Nothing is left on, and the droplets did not move.
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled, "HV back off");
    let on: BTreeSet<String> = snap.droplets.iter().map(|d| d.electrode.clone()).collect();
    assert_eq!(on, wet.iter().cloned().collect());
    h.stop().await.unwrap().unwrap();

    // The next plugin, on the same board and chip, finds both calibrations.
    let h = start(options(data.path(), true)).await;
    let state = h
        .state_where("calibration", |c| {
            c["capacitance"]["liquid_f_per_mm2"].as_f64() == Some(liquid)
        })
        .await
        .unwrap();
    assert!(state["feedback"]["gain"].is_number(), "{state}");
    assert!(
        state["chip"].is_string() && state["board"].is_string(),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn droplet_detection_finds_exactly_the_simulators_droplets_on_the_default_chip() {
    let data = tempfile::tempdir().unwrap();
    let h = start(options(data.path(), false)).await;
    assert_eq!(device().len(), 92);
    let (wet, dry) = pick(4, 8);
    droplets_on(&h, &wet);

    let r = h.trigger("detect-droplets", json!({})).await.unwrap();
    assert!(!r.is_success(), "refused before a calibration: {r:?}");
    assert!(
        r.response
            .as_str()
            .unwrap_or_default()
            .contains("calibrate"),
        "{r:?}"
    );

    let sets = json!([
        {"electrodes": [wet[0]], "liquid": [wet[0]]},
        {"electrodes": [wet[1]], "liquid": [wet[1]]},
        {"electrodes": dry},
    ]);
    let r = h
        .trigger("calibrate-capacitance", json!({"sets": sets}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");

    let r = h.trigger("detect-droplets", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let found: BTreeSet<String> = r.response["droplets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["electrodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    let truth: BTreeSet<String> = h
        .sim
        .snapshot()
        .droplets
        .iter()
        .map(|d| d.electrode.clone())
        .collect();
    assert_eq!(found, truth);
    assert_eq!(
        r.response["droplets"].as_array().map(Vec::len),
        Some(wet.len())
    );
    // Every channel of the chip was scanned.
    let scanned = r.response["channels"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(scanned, device().channels().len());
    h.state_where("droplets", |d: &Value| {
        d["droplets"].as_array().map(Vec::len) == Some(wet.len())
    })
    .await
    .unwrap();

    // The force per unit length at the measured voltage, from the calibration.
    let r = h.trigger("measure-force", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let v = r.response["voltage"].as_f64().unwrap();
    let c = r.response["liquid_f_per_mm2"].as_f64().unwrap();
    let force = r.response["force_n_per_mm"].as_f64().unwrap();
    let want = 1e3 * 0.5 * c * v * v;
    // The same formula, computed in another order: equal to rounding.
    assert!(
        (force - want).abs() <= 1e-12 * want.abs(),
        "{force} vs {want}"
    );
}
