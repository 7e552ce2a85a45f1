//! Interop: MicroDrop 3's own client library, the npm package `@micropede/client` 0.0.39
//! (pinned in `tests/interop/node/package-lock.json`), drives the plugin unchanged, on mosquitto
//! with its default configuration and on MicroDrop 3's own broker, mosca. A private broker, the
//! plugin with a simulated board, and `tests/interop/node/drive.js` doing what MicroDrop's UI and
//! step runner do; the test checks the script's JSON summary and the board.
//!
//! Needs `node` and `npm` (CI installs them); `npm ci` runs once and its `node_modules` stays.

use std::time::Duration;

use dropbot_testkit::node::{interop_dir, npm_ci, ScriptOutcome};
use dropbot_testkit::{BrokerKind, PluginHarness, PluginOptions};
use serde_json::{json, Value};

/// The step `label` of the summary, which must have resolved; its value.
fn resolved<'a>(summary: &'a Value, label: &str) -> &'a Value {
    let step = &summary["steps"][label];
    assert_eq!(step["outcome"], json!("resolved"), "{label}: {step}");
    &step["value"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micropede_client_library_drives_the_plugin_unchanged_on_mosquitto() {
    drives_the_plugin(BrokerKind::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micropede_client_library_drives_the_plugin_unchanged_on_mosca() {
    drives_the_plugin(BrokerKind::Mosca).await;
}

async fn drives_the_plugin(kind: BrokerKind) {
    let dir = interop_dir("node");
    npm_ci(&dir).expect("the client library installs");
    let h = PluginHarness::start(PluginOptions {
        broker: kind,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    let voltage_at_start = h.sim.snapshot().voltage_target;
    let child = tokio::process::Command::new("node")
        .arg("drive.js")
        .args(["--host", h.broker.host()])
        .args(["--port", &h.broker.port().to_string()])
        .args(["--name", &h.name])
        .args(["--deadline-ms", "40000"])
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(50), child)
        .await
        .expect("drive.js ends within 50 s")
        .expect("node runs drive.js");
    // The script's own checks, each named, then ours on the raw outcomes.
    let outcome = ScriptOutcome::from_output(&out).expect("a summary");
    outcome.assert_passed();
    let summary = outcome.summary;
    assert_eq!(summary["version"], json!("0.0.39"));

    assert_eq!(
        resolved(&summary, "watch_voltage").as_f64(),
        Some(voltage_at_start)
    );
    let pong = resolved(&summary, "ping");
    assert_eq!(pong["status"], json!("success"));
    assert_eq!(pong["response"], json!("pong"));
    assert_eq!(pong["__head__"]["plugin_name"], json!(h.name));
    let subs = resolved(&summary, "get_subscriptions");
    let subs: Vec<&str> = subs
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        subs.contains(&"microdrop/trigger/dropbot/execute"),
        "{subs:?}"
    );
    let schema = resolved(&summary, "get_schema");
    assert_eq!(schema["properties"]["voltage"]["per_step"], json!(false));
    assert_eq!(
        schema["properties"]["wait-for-board"]["per_step"],
        json!(true)
    );

    let put = resolved(&summary, "put_voltage");
    assert_eq!(put["status"], json!("success"));
    assert_eq!(put["response"], json!(90));
    assert_eq!(resolved(&summary, "watch_voltage_90"), &json!(90));
    assert_eq!(resolved(&summary, "get_state_voltage"), &json!(90));

    let execute = resolved(&summary, "execute");
    assert_eq!(execute["status"], json!("success"), "{execute}");
    assert_eq!(execute["response"]["voltage"], json!(90));

    // The library rejects a failed reply with [label, ...response].
    let bad = &summary["steps"]["put_voltage_10000"];
    assert_eq!(bad["outcome"], json!("rejected"), "{bad}");
    let message = bad["error"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(
        message.starts_with("voltage: 10000 is out of range; allowed:"),
        "{bad}"
    );
    assert_eq!(
        resolved(&summary, "get_state_voltage_after_bad_put"),
        &json!(90)
    );

    // The watcher saw the retained value at subscription, then the put's.
    let seen = summary["watched"]["voltage"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(seen.last(), Some(&json!(95)), "{seen:?}");
    assert_eq!(summary["watched"]["status"][0]["board"], json!("connected"));

    // A write to our voltage state was not applied; the next put set the broker right.
    assert_eq!(
        resolved(&summary, "get_state_voltage_after_reput"),
        &json!(95)
    );
    assert_eq!(
        resolved(&summary, "execute_after_write")["response"]["voltage"],
        json!(90)
    );

    // And the board itself.
    assert_eq!(h.sim.snapshot().voltage_target, 95.0);
}
