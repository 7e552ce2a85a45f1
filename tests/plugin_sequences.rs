//! Sequences and routes end to end: MicroDrop 3's route objects and `run-sequence` payloads
//! on the bus, the simulated DropBot with MicroDrop 3's default chip and a droplet on it.
//! Every check reads the simulator (its snapshot or trace), not the plugin's own account.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{SimSnapshot, TraceEntry, TraceRecord};
use dropbot_testkit::{PluginHarness, PluginOptions};
use serde_json::{json, Value};

/// The end of MicroDrop 3's own example route on its default chip (`electrode030` up, up,
/// up, right, right; see `device::Direction`), without the reservoir it starts from: four
/// electrodes of about 37 mm², 6 mm apart.
const WALK: [&str; 4] = [
    "electrode091",
    "electrode084",
    "electrode083",
    "electrode082",
];

fn device() -> Device {
    Device::microdrop3_default().expect("the default device parses")
}

fn channels_of(ids: &[&str]) -> Vec<u16> {
    device()
        .channels_for(ids)
        .expect("known ids")
        .into_iter()
        .collect()
}

async fn harness() -> PluginHarness {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts");
    // Runs answer when they end: wait generously on a loaded machine.
    h.client.set_timeout(Duration::from_secs(30));
    h
}

/// A droplet that exactly covers `electrode`.
fn droplet_on(h: &PluginHarness, electrode: &str) {
    let volume = h.sim.unit_volume(electrode).expect("an electrode");
    h.sim.add_droplet(electrode, volume).expect("a droplet");
}

/// Waits until the snapshot satisfies `done` (30 s at most).
async fn until(h: &PluginHarness, what: &str, done: impl Fn(&SimSnapshot) -> bool) {
    for _ in 0..3000 {
        if done(&h.sim.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached; board: {:?}", h.sim.snapshot());
}

fn at_rest_on(s: &SimSnapshot, electrode: &str) -> bool {
    s.droplets.len() == 1 && s.droplets[0].electrode == electrode && s.droplets[0].to.is_none()
}

/// Electrodes a droplet came to rest on, in order, from the trace.
fn rested_on(trace: &[TraceRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in trace {
        if let TraceEntry::Droplets { droplets } = &r.entry {
            for d in droplets.iter().filter(|d| d.to.is_none()) {
                if out.last() != Some(&d.electrode) {
                    out.push(d.electrode.clone());
                }
            }
        }
    }
    out
}

/// The channel sets the board drove, in order, repeats folded.
fn driven(trace: &[TraceRecord]) -> Vec<Vec<u16>> {
    let mut out: Vec<Vec<u16>> = trace
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Channels { actuated, .. } => Some(actuated.clone()),
            _ => None,
        })
        .collect();
    out.dedup();
    out
}

fn reasons(response: &Value) -> Vec<String> {
    response["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .map(|p| p["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_moves_a_droplet_from_start_to_end() {
    let mut h = harness().await;
    droplet_on(&h, WALK[0]);
    let progress = h.topic("signal", "sequence-progress");
    h.client.subscribe(&progress).await.unwrap();
    // A droplet crosses 6 mm in about 0.3 s at 100 V: 0.8 s per step leaves room for a
    // loaded machine.
    let route = json!({"start": WALK[0], "path": ["up", "right", "right"],
        "transition-duration-seconds": 0.8, "uuid": "r1"});
    let reply = h
        .trigger("run-routes", json!({"routes": [route]}))
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let r = &reply.response;
    assert_eq!(r["outcome"], "completed", "{r}");
    assert_eq!(r["routes"][0]["ids"], json!(WALK));
    assert_eq!(reasons(r), vec!["duration"; 4]);
    // Each phase planned exactly one transition after the previous one.
    for (i, p) in r["phases"].as_array().unwrap().iter().enumerate() {
        assert_eq!(p["planned_start_ms"], json!(800.0 * i as f64), "{p}");
        assert!(
            p["start_ms"].as_f64() >= p["planned_start_ms"].as_f64(),
            "{p}"
        );
        assert_eq!(p["label"], json!(WALK[i]));
        assert!(p["board_time_us"].is_u64(), "{p}");
    }

    // The board: the droplet on the last electrode, which stays on.
    until(&h, "the droplet at the end", |s| at_rest_on(s, WALK[3])).await;
    let snap = h.sim.snapshot();
    assert_eq!(snap.actuated, channels_of(&[WALK[3]]));
    assert!(snap.hv_enabled);
    let trace = h.sim.trace();
    assert_eq!(rested_on(&trace), WALK, "electrodes the droplet rested on");
    let frames: Vec<Vec<u16>> = WALK.iter().map(|id| channels_of(&[id])).collect();
    let seen: Vec<Vec<u16>> = driven(&trace)
        .into_iter()
        .filter(|f| !f.is_empty())
        .collect();
    assert_eq!(seen, frames);
    h.state_where("sequence", |v| v["state"] == "idle")
        .await
        .unwrap();
    // Progress signals: every phase started and ended.
    let mut started = BTreeSet::new();
    let mut ended = BTreeSet::new();
    while ended.len() < 4 {
        let m = h
            .client
            .next_message(&progress)
            .await
            .unwrap()
            .value()
            .unwrap();
        let phase = m["phase"].as_u64().unwrap();
        match m["event"].as_str() {
            Some("phase-started") => started.insert(phase),
            _ => ended.insert(phase),
        };
    }
    assert_eq!(started, (0..4).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feedback_phase_ends_when_the_droplet_arrives_and_times_out_when_it_cannot() {
    let h = harness().await;
    droplet_on(&h, WALK[0]);
    let d = device();
    // Half of the next electrode under liquid (the simulator's 1 pF/mm²).
    let target = |id: &str| 0.5 * d.by_id(id).unwrap().area_mm2 * 1e-12;
    let reply = h
        .trigger(
            "run-sequence",
            json!({"phases": [{"electrodes": [WALK[1]], "until": {"capacitance_f": target(WALK[1])},
                "timeout_ms": 20000, "label": "pull"}]}),
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let phase = &reply.response["phases"][0];
    assert_eq!(phase["reason"], "reached", "{phase}");
    assert!(
        phase["capacitance"].as_f64().unwrap() >= target(WALK[1]),
        "{phase}"
    );
    assert!(phase["end_ms"].as_f64().unwrap() < 20000.0, "{phase}");
    until(&h, "the droplet pulled over", |s| at_rest_on(s, WALK[1])).await;
    // The capacitance the board measured crossed the target while the phase was on.
    let crossed = h.sim.trace().iter().any(|r| {
        matches!(&r.entry, TraceEntry::Capacitance { value, actuated, .. }
            if *value >= target(WALK[1]) && *actuated == channels_of(&[WALK[1]]))
    });
    assert!(crossed, "no reading reached the target");

    // Two electrodes away (084 -> 083 -> 082) the droplet feels nothing: the phase runs to
    // its timeout.
    let reply = h
        .trigger(
            "run-sequence",
            json!({"phases": [{"electrodes": [WALK[3]], "until": {"capacitance_f": target(WALK[3])},
                "timeout_ms": 400}]}),
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let phase = &reply.response["phases"][0];
    assert_eq!(phase["reason"], "timeout", "{phase}");
    assert!(
        phase["capacitance"].as_f64().unwrap() < target(WALK[3]),
        "{phase}"
    );
    let snap = h.sim.snapshot();
    assert!(at_rest_on(&snap, WALK[1]), "{snap:?}");
    assert_eq!(snap.actuated, channels_of(&[WALK[3]]));
}

/// The voltage in an `update_state` request (hex payload: code, array slot, protobuf).
fn told_voltage(payload_hex: &str) -> Option<f32> {
    let bytes: Vec<u8> = (0..payload_hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(payload_hex.get(i..i + 2)?, 16).ok())
        .collect();
    firmware_protocol::State::from_bytes(bytes.get(10..)?)
        .ok()?
        .voltage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_phases_repeat_with_their_settings() {
    let h = harness().await;
    let reply = h
        .trigger(
            "run-sequence",
            json!({"phases": [
                {"channels": [5, 6], "duration_ms": 40, "voltage": 90},
                {"channels": [7], "duration_ms": 40, "voltage": 120, "frequency": 2000},
            ], "repeats": 2}),
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reasons(&reply.response), vec!["duration"; 4]);
    let want = vec![vec![5, 6], vec![7], vec![5, 6], vec![7]];
    let seen = driven(&h.sim.trace());
    assert!(seen.ends_with(&want), "{seen:?}");
    let snap = h.sim.snapshot();
    assert_eq!(snap.actuated, vec![7]);
    assert_eq!((snap.voltage_target, snap.frequency), (120.0, 2000.0));
    // Voltages the board was told, in order: each phase's own (from the requests it got).
    let mut volts: Vec<f32> = h
        .sim
        .trace()
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Rx {
                command: Some(c),
                payload,
                ..
            } if c == "update_state" => told_voltage(payload),
            _ => None,
        })
        .collect();
    volts.dedup();
    assert!(volts.ends_with(&[90.0, 120.0, 90.0, 120.0]), "{volts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_are_refused_before_anything_moves() {
    let h = harness().await;
    let refused = |reply: dropbot_testkit::Reply, words: &[&str]| {
        assert_eq!(reply.status, "failed", "{reply:?}");
        let text = reply.response.as_str().unwrap_or_default().to_owned();
        for w in words {
            assert!(text.contains(w), "{text:?} lacks {w:?}");
        }
    };
    let off_chip = json!([{"start": "electrode030", "path": ["up", "left", "left", "left"]}]);
    let reply = h.trigger("run-routes", off_chip).await.unwrap();
    refused(
        reply,
        &["run-routes", "route #0", "left", "step #", "allowed"],
    );
    let reply = h
        .trigger("run-routes", json!([{"start": "electrode999", "path": []}]))
        .await
        .unwrap();
    refused(reply, &["electrode999"]);
    let reply = h
        .trigger(
            "run-sequence",
            json!({"phases": [{"electrodes": ["electrode030", "ghost"], "duration_ms": 10}]}),
        )
        .await
        .unwrap();
    refused(reply, &["phases[0].electrodes", "ghost"]);
    let reply = h.trigger("pause", json!({})).await.unwrap();
    refused(reply, &["no sequence is running"]);
    let reply = h.trigger("resume", json!({})).await.unwrap();
    refused(reply, &["no sequence is running", "hv-output-enabled"]);
    // Nothing reached the board.
    let snap = h.sim.snapshot();
    assert!(snap.actuated.is_empty() && !snap.hv_enabled, "{snap:?}");
    let frames = driven(&h.sim.trace());
    assert!(frames.iter().all(Vec::is_empty), "{frames:?}");
}
