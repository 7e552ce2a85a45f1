//! Run records of a simulated run: one CSV row per sample the plugin published, phases in
//! order and each row's actuated channels those of its phase, a JSON summary that says what
//! ran where; and the `plot` subcommand drawing the record.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::plugin::telemetry::ReadingsOptions;
use dropbot_plugin::plugin::Behaviour;
use dropbot_plugin::runlog::read_rows;
use dropbot_plugin::sim::{SimOptions, Timing};
use dropbot_testkit::{PluginHarness, PluginOptions};
use serde_json::{json, Value};

const IDS: [&str; 3] = ["electrode091", "electrode084", "electrode083"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_records_one_row_per_sample_with_consistent_phases_and_plots() {
    let runs = tempfile::tempdir().unwrap();
    let options = PluginOptions {
        sim: SimOptions {
            timing: Timing::Fast,
            ..SimOptions::default()
        },
        behaviour: Behaviour {
            readings: ReadingsOptions {
                runs_dir: Some(runs.path().to_path_buf()),
                ..ReadingsOptions::default()
            },
            ..Behaviour::default()
        },
        ..PluginOptions::default()
    };
    let mut h = PluginHarness::start(options).await.expect("harness starts");
    h.client.set_timeout(Duration::from_secs(30));
    let batches = h.topic("signal", "capacitance-updated");
    h.client.subscribe(&batches).await.unwrap();

    let device = Device::microdrop3_default().unwrap();
    let phases: Vec<Value> = IDS
        .iter()
        .map(|id| json!({"electrodes": [id], "duration_ms": 400, "label": format!("on {id}")}))
        .chain([json!({"channels": [], "duration_ms": 200, "label": "off"})])
        .collect();
    let r = h
        .trigger("run-sequence", json!({"phases": phases}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let csv = r.response["record"]["csv"]
        .as_str()
        .expect("a record")
        .to_owned();
    let summary_path = r.response["record"]["json"].as_str().unwrap().to_owned();

    // What the plugin published, from the first row's sample to the last.
    let rows = read_rows(std::path::Path::new(&csv)).unwrap();
    assert!(rows.len() >= 20, "1.4 s at 25 ms: {} rows", rows.len());
    let first = rows[0].board_time_us.unwrap();
    let last = rows.last().unwrap().board_time_us.unwrap();
    let mut published = Vec::new();
    while published.last().is_none_or(|t| *t < last) {
        let m = h.client.next_message(&batches).await.unwrap();
        let v = m.value().unwrap();
        for s in v["samples"].as_array().unwrap() {
            let t = s["board_time_us"].as_u64().unwrap();
            if t >= first {
                published.push(t);
            }
        }
    }
    published.retain(|t| *t <= last);
    let recorded: Vec<u64> = rows.iter().map(|r| r.board_time_us.unwrap()).collect();
    assert_eq!(recorded, published, "one row per published sample");

    // Phases in order; each row's channels are its phase's.
    let phase_channels: Vec<BTreeSet<u16>> = IDS
        .iter()
        .map(|id| device.channels_for(&[*id]).unwrap())
        .chain([BTreeSet::new()])
        .collect();
    let mut last_phase = 0;
    let mut began = false;
    for row in &rows {
        // The record opens when the run is asked for: a sample the board took before it
        // confirmed the first phase belongs to no phase (on a loaded machine there can be one).
        let Some(phase) = row.phase else {
            assert!(!began, "a row without a phase inside the run: {row:?}");
            continue;
        };
        began = true;
        assert!(phase >= last_phase, "phases go forward");
        last_phase = phase;
        let actuated: BTreeSet<u16> = row
            .actuated
            .split_whitespace()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(actuated, phase_channels[phase], "row {row:?}");
        assert_eq!(row.label.as_deref(), phases[phase]["label"].as_str());
        assert!(row.frequency_hz.is_some() && row.voltage_v > 0.0, "{row:?}");
    }
    let seen: BTreeSet<usize> = rows.iter().filter_map(|r| r.phase).collect();
    assert!(seen.len() >= 3, "rows in phases {seen:?}");

    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["rows"].as_u64(), Some(rows.len() as u64));
    assert_eq!(summary["rows_dropped"].as_u64(), Some(0));
    assert!(summary["board"]["uuid"].is_string(), "{summary}");
    assert!(summary["board"]["firmware"]
        .as_str()
        .unwrap()
        .starts_with("dropbot::"));
    assert!(summary["device"]["layout_hash"].is_string());
    assert_eq!(
        summary["device"]["electrodes"].as_array().map(Vec::len),
        Some(92)
    );
    assert_eq!(
        summary["request"]["phases"].as_array().map(Vec::len),
        Some(4)
    );
    // The stream was turned on for the record, and back off after it.
    h.state_where("capacitance-update-interval-ms", |v| *v == json!(0))
        .await
        .unwrap();

    // The plot subcommand draws it.
    let png = runs.path().join("run.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dropbot-plugin"))
        .args(["plot", &csv, "--out"])
        .arg(&png)
        .args(["--width", "900", "--height", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (900, 600));
    let rgb = &pixels[..info.buffer_size()];
    let not_white = rgb.chunks(3).filter(|p| p.iter().any(|c| *c < 200)).count();
    let colours: BTreeSet<&[u8]> = rgb.chunks(3).collect();
    assert!(not_white > 900 * 600 / 100, "{not_white} drawn pixels");
    assert!(
        colours.len() > 10,
        "{} colours: lines, text and axes",
        colours.len()
    );
}
