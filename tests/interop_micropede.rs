//! Interop: MicroDrop 3's own client library, the npm package `@micropede/client` 0.0.39
//! (pinned in `tests/interop/node/package-lock.json`), drives the plugin unchanged. A private
//! mosquitto, the plugin with a simulated board, and `tests/interop/node/drive.js` doing what
//! MicroDrop's UI and step runner do; the test checks the script's JSON summary and the board.
//!
//! Needs `node` and `npm` (CI installs them); `npm ci` runs once and its `node_modules` stays.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dropbot_plugin::testkit::{PluginHarness, PluginOptions};
use serde_json::{json, Value};

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node")
}

/// `tool --version`, or a failure that says what to install.
fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is needed by the interop tests: install Node.js and npm \
         (e.g. `apt-get install nodejs npm`; `.ci/run` does)"
    );
}

/// `npm ci` from the committed lock file, unless an earlier run already installed it.
fn install_client_library(dir: &Path) {
    let installed = dir.join("node_modules/.package-lock.json").is_file()
        && dir
            .join("node_modules/@micropede/client/package.json")
            .is_file();
    if installed {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "npm ci failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The step `label` of the summary, which must have resolved; its value.
fn resolved<'a>(summary: &'a Value, label: &str) -> &'a Value {
    let step = &summary["steps"][label];
    assert_eq!(step["outcome"], json!("resolved"), "{label}: {step}");
    &step["value"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micropede_client_library_drives_the_plugin_unchanged() {
    require("node");
    require("npm");
    let dir = node_dir();
    install_client_library(&dir);

    let h = PluginHarness::start(PluginOptions::default())
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary; stdout:\n{stdout}\nstderr:\n{stderr}"));

    // The script's own checks, each named, then ours on the raw outcomes.
    let failed: Vec<&Value> = summary["checks"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != json!(true)).collect())
        .unwrap_or_default();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:?}\nsummary: {summary}\nstderr:\n{stderr}"
    );
    assert!(out.status.success(), "exit {:?}: {summary}", out.status);
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
    assert!(resolved(&summary, "get_schema")["properties"]["voltage"]["per_step"] == json!(true));

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
    assert_eq!(seen.last(), Some(&json!(90)), "{seen:?}");
    assert_eq!(summary["watched"]["status"][0]["board"], json!("connected"));

    // A step load overwrote our retained voltage; the next successful put restores it.
    assert_eq!(
        resolved(&summary, "get_state_voltage_after_reput"),
        &json!(90)
    );

    // And the board itself.
    assert_eq!(h.sim.snapshot().voltage_target, 90.0);
}
