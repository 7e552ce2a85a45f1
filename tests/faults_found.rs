//! Defects the fault suite found, each pinned by a test of its own (see docs/reliability.md):
//! - a flood of requests made `ping` and `halt` "busy";
//! - a sender name longer than an MQTT topic may be made the plugin publish a malformed packet,
//!   and the broker dropped its connection;
//! - `detect-shorts`, `scan-capacitances` and the calibration triggers took any value
//!   (`"abc"`, `[1]`) for "no options" and kept the board busy for seconds;
//! - a request answered "not applied within ..." was carried out later anyway, and a long one
//!   (a scan) went on after its asker was told so;
//! - long measurements queued one behind the other (the bus fuzz queued calibrations for
//!   minutes): one at a time, a second is refused.

mod faults_support;

use std::time::Duration;

use dropbot_plugin::plugin::Behaviour;
use dropbot_plugin::sim::{Faults, TraceEntry};
use dropbot_testkit::{PluginHarness, PluginOptions, Reply, TestClient};
use faults_support::stop_cleanly;
use serde_json::{json, Value};

const ASKER: &str = "faults-asker";

async fn harness(behaviour: Behaviour) -> PluginHarness {
    let mut h = PluginHarness::start(PluginOptions {
        behaviour,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    h.client.set_timeout(Duration::from_secs(30));
    h.client
        .subscribe(&format!("microdrop/{}/notify/{ASKER}/+", h.name))
        .await
        .expect("subscribe to the answers");
    h
}

/// Publishes a trigger from the observing client (so several keep their order) without
/// waiting; its answer comes with [`answer`].
async fn send(h: &PluginHarness, action: &str, value: Value) {
    let mut payload = match value {
        Value::Object(m) => m,
        other => serde_json::Map::from_iter([("data".to_owned(), other)]),
    };
    payload.insert("__head__".into(), json!({"plugin_name": ASKER}));
    let topic = format!("microdrop/trigger/{}/{action}", h.name);
    let bytes = serde_json::to_vec(&Value::Object(payload)).expect("JSON");
    h.client
        .publish_raw(&topic, bytes, false)
        .await
        .expect("publish");
}

/// The next answer to [`ASKER`] about `action`: (status, response).
async fn answer(h: &mut PluginHarness, action: &str) -> (String, Value) {
    let topic = format!("microdrop/{}/notify/{ASKER}/{action}", h.name);
    let v = h
        .client
        .next_message(&topic)
        .await
        .expect("an answer")
        .value();
    let v = v.expect("JSON");
    (
        v["status"].as_str().unwrap_or_default().to_owned(),
        v["response"].clone(),
    )
}

/// Waits until the simulated firmware is busy with `cause` (e.g. a shorts detection).
async fn until_busy_with(h: &PluginHarness, cause: &str) {
    for _ in 0..1500 {
        let busy =
            h.sim.trace().iter().any(
                |r| matches!(&r.entry, TraceEntry::Busy { cause: c, .. } if c.contains(cause)),
            );
        if busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the board never got busy with {cause}: {:?}",
        h.sim.snapshot()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_permit_taken_ping_and_halt_are_still_served() {
    let mut h = harness(Behaviour {
        max_in_flight: 4,
        apply_timeout: Duration::from_secs(3),
        ..Behaviour::default()
    })
    .await;
    // 120 channels at 50 ms each: the board is busy for seconds.
    send(&h, "detect-shorts", json!({"delay_ms": 50})).await;
    until_busy_with(&h, "detect").await;
    // Ordinary requests may take all but the reserved permits (here 2 of 4).
    send(&h, "measure-voltage", json!({})).await;
    send(&h, "measure-capacitance", json!({})).await;
    send(&h, "ping", json!({})).await;
    send(&h, "halt", json!({})).await;
    let (status, busy) = answer(&mut h, "measure-capacitance").await;
    assert_eq!(status, "failed");
    assert!(
        busy.as_str().unwrap_or_default().starts_with("busy"),
        "{busy}"
    );
    assert_eq!(answer(&mut h, "ping").await.1, json!("pong"));
    let (_, halt) = answer(&mut h, "halt").await;
    assert!(
        !halt.as_str().unwrap_or_default().starts_with("busy"),
        "a halt must never be busy: {halt}"
    );
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    stop_cleanly(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_names_unfit_for_a_topic_get_no_answer_and_cut_nothing_off() {
    let mut h = harness(Behaviour::default()).await;
    let notify = format!("microdrop/{}/notify/#", h.name);
    h.client.subscribe(&notify).await.expect("subscribe");
    // Too long for an MQTT topic (rumqttc would cut its length to 16 bits and send the rest
    // as payload), a control character, a Unicode non-character (mosquitto drops a client
    // that publishes either).
    let names = [
        "n".repeat(70_000),
        "ctl\u{1}name".to_owned(),
        "x\u{ffff}".to_owned(),
    ];
    for (name, volts) in names.iter().zip([110, 111, 112]) {
        let payload = json!({"voltage": volts, "__head__": {"plugin_name": name}});
        let topic = format!("microdrop/put/{}/voltage", h.name);
        let bytes = serde_json::to_vec(&payload).expect("JSON");
        h.client
            .publish_raw(&topic, bytes, false)
            .await
            .expect("publish");
        // The put is carried out; only its answer cannot be addressed.
        h.state_where("voltage", |v| v.as_f64() == Some(f64::from(volts)))
            .await
            .expect("applied");
    }
    send(&h, "ping", json!({})).await;
    assert_eq!(answer(&mut h, "ping").await.1, json!("pong"));
    let answers = h
        .client
        .collect_for(&notify, Duration::from_millis(300))
        .await
        .expect("collect");
    let stray: Vec<_> = answers
        .iter()
        .filter(|m| !m.topic.contains(ASKER))
        .map(|m| m.topic.chars().take(60).collect::<String>())
        .collect();
    assert!(stray.is_empty(), "answers to unusable names: {stray:?}");
    let log = h.broker.log();
    assert!(!log.contains("malformed"), "{log}");
    let sessions = log.matches(" as dropbot>>").count();
    assert_eq!(sessions, 1, "the plugin had to reconnect:\n{log}");
    stop_cleanly(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_triggers_refuse_values_that_are_not_their_options() {
    let mut h = harness(Behaviour::default()).await;
    h.client
        .subscribe(&h.topic("error", "#"))
        .await
        .expect("errors");
    let cases = [
        ("detect-shorts", json!("abc"), "delay_ms"),
        ("detect-shorts", json!([1, 2]), "delay_ms"),
        (
            "detect-shorts",
            json!({"delay": 5}),
            "unknown option `delay`",
        ),
        ("scan-capacitances", json!(7), "channels"),
        (
            "scan-capacitances",
            json!({"channel": [1]}),
            "unknown option `channel`",
        ),
        ("calibrate-capacitance", json!("abc"), "sets"),
        ("calibrate-feedback", json!([1]), "repeats"),
        (
            "detect-droplets",
            json!({"chanels": [1]}),
            "unknown option `chanels`",
        ),
    ];
    for (action, value, says) in cases {
        let reply: Reply = h.trigger(action, value.clone()).await.expect("a reply");
        let text = reply.response.as_str().unwrap_or_default().to_owned();
        assert!(!reply.is_success(), "{action} {value}: {reply:?}");
        assert!(text.contains(says) && text.contains("allowed"), "{text}");
        assert_eq!(h.next_error(action).await.expect("error topic"), text);
    }
    let asked = h.sim.trace().iter().any(|r| {
        matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. }
            if c.contains("detect_shorts") || c.contains("channel_capacitances"))
    });
    assert!(!asked, "a refused request reached the board");
    // The options themselves still work.
    let ok = h
        .trigger("scan-capacitances", json!({"channels": [3]}))
        .await;
    assert!(ok.expect("a reply").is_success());
    stop_cleanly(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_as_not_applied_is_not_applied_later() {
    let mut h = harness(Behaviour {
        apply_timeout: Duration::from_secs(1),
        ..Behaviour::default()
    })
    .await;
    send(&h, "detect-shorts", json!({"delay_ms": 30})).await;
    until_busy_with(&h, "detect").await;
    // HV on waits behind the shorts detection for longer than the plugin waits for it.
    let mut quick = TestClient::connect(h.broker.host(), h.broker.port())
        .await
        .expect("a client");
    quick.set_timeout(Duration::from_secs(30));
    let hv = quick
        .put(&h.name, "hv-output-enabled", &json!(true))
        .await
        .expect("a reply");
    assert!(!hv.is_success(), "{hv:?}");
    // Once a later board request succeeds, everything queued before it has been taken.
    let mut measured = false;
    for _ in 0..30 {
        let v = h
            .trigger("measure-voltage", json!({}))
            .await
            .expect("reply");
        if v.is_success() {
            measured = true;
            break;
        }
    }
    assert!(measured, "the board never became free");
    let snap = h.sim.snapshot();
    assert!(
        !snap.hv_enabled,
        "HV came on after the user was told it did not: {snap:?}"
    );
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .expect("the state says off");
    stop_cleanly(&mut h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_long_measurement_at_a_time_and_none_after_its_asker_gave_up() {
    let mut h = harness(Behaviour {
        apply_timeout: Duration::from_secs(1),
        ..Behaviour::default()
    })
    .await;
    // Every reply 300 ms late: a scan of all 120 channels (15 chunks) takes seconds.
    h.sim.set_faults(Faults {
        reply_delay: Duration::from_millis(300),
        ..Faults::default()
    });
    send(&h, "scan-capacitances", json!({})).await;
    // A second long measurement is refused while the first runs, not queued behind it.
    send(&h, "detect-shorts", json!({})).await;
    let (status, busy) = answer(&mut h, "detect-shorts").await;
    assert_eq!(status, "failed");
    assert!(
        busy.as_str()
            .unwrap_or_default()
            .contains("long measurement"),
        "{busy}"
    );
    let (status, late) = answer(&mut h, "scan-capacitances").await;
    assert_eq!(status, "failed", "{late}");
    // The scan ended when its asker was told it was not applied: the next request is served,
    // and the board measured far fewer than the 15 chunks.
    h.sim.set_faults(Faults::default());
    let v = h
        .trigger("measure-voltage", json!({}))
        .await
        .expect("reply");
    assert!(v.is_success(), "{v:?}");
    let chunks = h
        .sim
        .trace()
        .iter()
        .filter(|r| {
            matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. }
                if c.contains("channel_capacitances"))
        })
        .count();
    assert!(
        chunks < 15,
        "{chunks} chunks measured after the asker gave up"
    );
    stop_cleanly(&mut h).await;
}
