//! MicroDrop 3's own flows replayed with its client library (`tests/interop/node/flows.js`,
//! `@micropede/client` 0.0.39) against the plugin and a simulated board, on mosquitto with its
//! default configuration and on MicroDrop's mosca: step creation and loading in both plugin
//! orders, route frames at the routes model's rate, a step whose electrodes the device partly
//! lacks, and a plugin restart while a step is loaded (stored electrodes must not actuate).

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use dropbot_plugin::device::{Device, Direction};
use dropbot_testkit::node::{interop_dir, npm_ci, ScriptOutcome};
use dropbot_testkit::{BrokerKind, PluginHarness, PluginOptions};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

async fn harness(kind: BrokerKind) -> PluginHarness {
    npm_ci(&interop_dir("node")).expect("the client library installs");
    PluginHarness::start(PluginOptions {
        broker: kind,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts")
}

fn flows(h: &PluginHarness, scenario: &str) -> Command {
    let mut c = Command::new("node");
    c.arg("flows.js")
        .args(["--port", &h.broker.port().to_string()])
        .args(["--scenario", scenario])
        .current_dir(interop_dir("node"))
        .kill_on_drop(true);
    c
}

async fn run(mut command: Command) -> ScriptOutcome {
    let out = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("flows.js ends in time")
        .expect("node runs flows.js");
    ScriptOutcome::from_output(&out).expect("a summary")
}

fn channels(ids: &[&str]) -> BTreeSet<u16> {
    let device = Device::microdrop3_default().expect("default device");
    device.channels_for(ids).expect("known ids")
}

async fn steps(kind: BrokerKind) {
    let h = harness(kind).await;
    let outcome = run(flows(&h, "steps")).await;
    outcome.assert_passed();
    // Both orders ran each step at its own settings, on the board too.
    let runs = outcome.summary["observed"]["runs"].as_array().cloned();
    assert_eq!(runs.map(|r| r.len()), Some(4), "{}", outcome.summary);
    let snap = h.sim.snapshot();
    assert_eq!((snap.voltage_target, snap.frequency), (95.0, 2000.0));
    let on: BTreeSet<u16> = snap.actuated.into_iter().collect();
    assert_eq!(on, channels(&["electrode031"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_load_and_run_the_same_in_both_plugin_orders_on_mosquitto() {
    steps(BrokerKind::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_load_and_run_the_same_in_both_plugin_orders_on_mosca() {
    steps(BrokerKind::Mosca).await;
}

/// A route's frames: a walk of neighbouring electrodes from electrode030 that each have a
/// channel of their own (each frame one electrode, trail length 1), as the routes model sends
/// them.
fn route_frames() -> Vec<Vec<String>> {
    let device = Device::microdrop3_default().expect("default device");
    let own = |i: usize| {
        device.electrode(i).is_some_and(|e| {
            e.channels
                .iter()
                .all(|&c| device.electrodes_on_channel(c).len() == 1)
        })
    };
    let mut walk = vec![device.index_of("electrode030").expect("electrode030")];
    while walk.len() < 8 {
        let here = walk.last().copied().unwrap_or_default();
        let next = Direction::ALL
            .into_iter()
            .filter_map(|d| device.neighbour_in_direction(here, d))
            .find(|n| own(*n) && !walk.contains(n));
        match next {
            Some(n) => walk.push(n),
            None => break,
        }
    }
    assert!(walk.len() >= 4, "a route on the default device: {walk:?}");
    walk.into_iter()
        .filter_map(|i| device.electrode(i).map(|e| vec![e.id.clone()]))
        .collect()
}

async fn routes(kind: BrokerKind) {
    let h = harness(kind).await;
    // As in MicroDrop, where the step that runs the routes switched HV on first: a frame that
    // came while HV is still switching on (the firmware blocks ~200 ms for it) would be
    // superseded by the next one, newest wins.
    let on = h.put("hv-output-enabled", json!(true)).await.unwrap();
    assert!(on.is_success(), "{on:?}");
    let frames = route_frames();
    let mut command = flows(&h, "routes");
    command.args(["--frames", &json!(frames).to_string()]);
    let outcome = run(command).await;
    outcome.assert_passed();
    // Every frame reached the board, in order: its channels appear in the plugin's
    // actuated-channels states in the order sent.
    let seen: Vec<BTreeSet<u16>> = outcome.summary["observed"]["actuated"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut at = 0;
    for frame in &frames {
        let ids: Vec<&str> = frame.iter().map(String::as_str).collect();
        let want = channels(&ids);
        let found = seen.iter().skip(at).position(|s| *s == want);
        assert!(
            found.is_some(),
            "frame {frame:?} ({want:?}) missing after state {at}: {seen:?}"
        );
        at += found.unwrap_or_default() + 1;
    }
    let last: Vec<&str> = frames
        .last()
        .map(|f| f.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let on: BTreeSet<u16> = h.sim.snapshot().actuated.into_iter().collect();
    assert_eq!(on, channels(&last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_frames_reach_the_board_in_order_on_mosquitto() {
    routes(BrokerKind::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_frames_reach_the_board_in_order_on_mosca() {
    routes(BrokerKind::Mosca).await;
}

async fn unknown(kind: BrokerKind) {
    let h = harness(kind).await;
    let outcome = run(flows(&h, "unknown")).await;
    outcome.assert_passed();
    let reply = &outcome.summary["observed"]["execute"]["response"];
    assert_eq!(
        reply["unknown_electrodes"],
        json!(["electrode999"]),
        "{reply}"
    );
    // The known electrode is on and the one before it is off: no stale set.
    let on: BTreeSet<u16> = h.sim.snapshot().actuated.into_iter().collect();
    assert_eq!(on, channels(&["electrode031"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_electrodes_the_device_lacks_runs_the_known_ones_on_mosquitto() {
    unknown(BrokerKind::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_electrodes_the_device_lacks_runs_the_known_ones_on_mosca() {
    unknown(BrokerKind::Mosca).await;
}

async fn restart(kind: BrokerKind) {
    let mut h = harness(kind).await;
    let mut child = flows(&h, "restart")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs flows.js");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    tokio::time::timeout(WAIT, stdout.read_line(&mut line))
        .await
        .expect("the step loads in time")
        .expect("flows.js writes");
    assert_eq!(
        serde_json::from_str::<Value>(&line).ok(),
        Some(json!({"loaded": true})),
        "{line}"
    );

    h.restart_plugin().await.expect("the plugin restarts");
    // The loaded step's electrodes are stored on the broker and delivered to the new plugin
    // (with the retain flag on mosquitto, without it on mosca): they must not switch anything
    // on. A put goes through the actuator after anything submitted before it.
    let reply = h.put("voltage", json!(110)).await.expect("a reply");
    assert!(reply.is_success(), "{reply:?}");
    let snap = h.sim.snapshot();
    assert!(
        snap.actuated.is_empty() && !snap.hv_enabled,
        "{kind}: stored electrodes actuated after a restart: {snap:?}"
    );

    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"continue\n")
        .await
        .expect("flows.js reads");
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut rest))
        .await
        .expect("flows.js ends in time")
        .expect("flows.js writes");
    let status = child.wait().await.expect("flows.js exits");
    let out = std::process::Output {
        status,
        stdout: rest.into_bytes(),
        stderr: Vec::new(),
    };
    ScriptOutcome::from_output(&out)
        .expect("a summary")
        .assert_passed();
    // The step runner's execute is a live request: now the step's electrode is on.
    let on: BTreeSet<u16> = h.sim.snapshot().actuated.into_iter().collect();
    assert_eq!(on, channels(&["electrode030"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_restart_while_a_step_is_loaded_keeps_the_step_and_actuates_nothing_on_mosquitto()
{
    restart(BrokerKind::Mosquitto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_restart_while_a_step_is_loaded_keeps_the_step_and_actuates_nothing_on_mosca() {
    restart(BrokerKind::Mosca).await;
}

/// The step editor's `wait-for-board: false` (a put, recorded in the loaded step): `execute`
/// answers at once and the board applies the step all the same; a step loaded with `true`
/// waits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_does_not_wait_for_the_board_still_runs() {
    let mut h = harness(BrokerKind::Mosquitto).await;
    let reply = h.put("wait-for-board", json!(false)).await.unwrap();
    assert_eq!((reply.is_success(), reply.response), (true, json!(false)));
    h.state_where("wait-for-board", |v| *v == json!(false))
        .await
        .unwrap();
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let run = h.trigger("execute", json!({})).await.unwrap();
    assert!(run.is_success(), "{run:?}");
    assert_eq!(run.response["applied"], json!("pending"), "{run:?}");
    h.state_where("actuated-channels", |v| *v == json!([26]))
        .await
        .unwrap();
    // Loading a step that waits: the step loader writes our state topic.
    let topic = h.state_topic("wait-for-board");
    h.publish_seen(&topic, b"true".to_vec(), true)
        .await
        .unwrap();
    let run = h.trigger("execute", json!({})).await.unwrap();
    assert_eq!(run.response["applied"], json!(true), "{run:?}");
}
