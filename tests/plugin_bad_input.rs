//! Bad input never hurts the plugin: every refused request gets a `failed` notify that says
//! what was wrong and what is allowed, plus `microdrop/<name>/error/<topic>`; nothing reaches
//! the board; the plugin keeps answering.

use std::time::Duration;

use dropbot_testkit::{
    async_client_name, PluginHarness, PluginOptions, Reply, ACTIVE_ELECTRODES_TOPIC,
};
use firmware_protocol::Config;
use serde_json::{json, Value};

async fn harness() -> PluginHarness {
    PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts")
}

/// A refusal that names the problem and what is allowed, also on the error topic.
async fn assert_refused(h: &mut PluginHarness, reply: &Reply, topic: &str, says: &[&str]) {
    assert!(!reply.is_success(), "{topic} was accepted: {reply:?}");
    let text = reply.response.as_str().unwrap_or_default();
    assert!(text.contains("allowed"), "{topic}: {text}");
    for s in says {
        assert!(text.contains(s), "{topic}: `{s}` not in {text}");
    }
    let error = h.next_error(topic).await.unwrap();
    assert_eq!(error, text, "{topic}");
}

/// The plugin is alive and well: it answers, and its task has not ended.
async fn assert_alive(h: &PluginHarness) {
    assert_eq!(
        h.trigger("ping", json!({})).await.unwrap().response,
        json!("pong")
    );
    assert!(!h.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_refuses_wrong_values_and_says_what_is_allowed() {
    let mut h = harness().await;
    h.client.subscribe(&h.topic("error", "#")).await.unwrap();
    let cases: [(&str, Value, &[&str]); 10] = [
        ("voltage", json!("abc"), &["the string \"abc\"", "0 to 150"]),
        ("voltage", json!(151), &["151 is out of range", "0 to 150"]),
        ("voltage", json!(-5), &["out of range"]),
        (
            "frequency",
            json!(50),
            &["50 is out of range", "100 to 10000"],
        ),
        ("frequency", json!(true), &["a boolean"]),
        ("hv-output-enabled", json!("yes"), &["true or false"]),
        (
            "channels",
            json!([1, 120]),
            &["channel 120 does not exist", "0 to 119"],
        ),
        ("channels", json!("1,2"), &["the string"]),
        (
            "disabled-channels",
            json!([-1]),
            &["channel -1 does not exist"],
        ),
        (
            "capacitance-update-interval-ms",
            json!(1.5),
            &["the number 1.5", "milliseconds"],
        ),
    ];
    for (property, value, says) in cases {
        let reply = h.put(property, value).await.unwrap();
        assert_refused(&mut h, &reply, property, says).await;
    }
    let triggers: [(&str, Value, &[&str]); 3] = [
        (
            "put-voltage-frequency",
            json!({"voltage": 100}),
            &["missing `frequency`"],
        ),
        ("detect-shorts", json!({"delay_ms": 1000}), &["0 to 255"]),
        (
            "scan-capacitances",
            json!({"channels": [500]}),
            &["channel 500"],
        ),
    ];
    for (action, value, says) in triggers {
        let reply = h.trigger(action, value).await.unwrap();
        assert_refused(&mut h, &reply, action, says).await;
    }
    let snap = h.sim.snapshot();
    assert!(
        snap.actuated.is_empty() && !snap.hv_enabled && snap.disabled.is_empty(),
        "{snap:?}"
    );
    assert_eq!(
        snap.voltage_target, 100.0,
        "no refused value reached the board"
    );
    assert_alive(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_answers_malformed_and_oversized_requests() {
    let mut h = harness().await;
    h.client.subscribe(&h.topic("error", "#")).await.unwrap();
    // Broken JSON still names its sender: it gets a `failed` notify.
    let asker = async_client_name();
    let notify = format!("microdrop/dropbot/notify/{asker}/voltage");
    h.client.subscribe(&notify).await.unwrap();
    let broken = format!(r#"{{"voltage": 1,, "__head__": {{"plugin_name": "{asker}"}}}}"#);
    h.client
        .publish_raw("microdrop/put/dropbot/voltage", broken.into_bytes(), false)
        .await
        .unwrap();
    let reply = h
        .client
        .next_message(&notify)
        .await
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(reply["status"], json!("failed"));
    let text = reply["response"].as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("unreadable request") && text.contains("allowed"),
        "{text}"
    );
    let error = h.next_error("voltage").await.unwrap();
    assert_eq!(error, text);
    // Not even JSON, no sender: the error topic alone tells.
    h.client
        .publish_raw(
            "microdrop/trigger/dropbot/halt",
            b"\xff\xfe{".to_vec(),
            false,
        )
        .await
        .unwrap();
    let error = h.next_error("halt").await.unwrap();
    assert!(error.contains("unreadable"));

    // 2 MiB is over the 1 MiB request limit.
    let reply = h.put("voltage", json!("1".repeat(2 << 20))).await.unwrap();
    assert_refused(
        &mut h,
        &reply,
        "voltage",
        &["too large", "at most 1048576 bytes"],
    )
    .await;
    assert_eq!(h.sim.snapshot().voltage_target, 100.0);

    assert_alive(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reports_bad_electrodes_and_devices_without_actuating() {
    let mut h = harness().await;
    let errors = h.topic("error", "#");
    h.client.subscribe(&errors).await.unwrap();
    // Known ids would be applied (tests/interop_step_flow.rs); these are all unknown.
    h.set_active_electrodes(&["electrode999", "nope"])
        .await
        .unwrap();
    let e = h.next_error("active-electrodes").await.unwrap();
    let text = e.clone();
    assert!(
        text.contains("electrode999") && text.contains("nope"),
        "{text}"
    );

    for payload in [
        &br#"{"ids": ["electrode030"]}"#[..],
        b"[1, 2]",
        b"[\"electrode030\"",
    ] {
        h.client
            .publish_raw(ACTIVE_ELECTRODES_TOPIC, payload.to_vec(), false)
            .await
            .unwrap();
        let e = h.next_error("active-electrodes").await.unwrap();
        let text = e.clone();
        assert!(text.contains("array of electrode id strings"), "{text}");
    }
    let device = "microdrop/device-model/state/three-object";
    for payload in [
        &b"{not json"[..],
        b"{\"electrodes\": 1}",
        br#"[{"id": "e1"}]"#,
    ] {
        h.client
            .publish_raw(device, payload.to_vec(), false)
            .await
            .unwrap();
        let e = h.next_error("three-object").await.unwrap();
        assert!(!e.is_empty(), "the error says what is wrong");
    }
    let step = "microdrop/electrodes-model/state/voltage";
    h.client
        .publish_raw(step, br#""900 V""#.to_vec(), false)
        .await
        .unwrap();
    let e = h.next_error("voltage").await.unwrap();
    assert!(e.contains("0 to 150"));

    let snap = h.sim.snapshot();
    assert!(snap.actuated.is_empty() && !snap.hv_enabled, "{snap:?}");
    assert_eq!(snap.voltage_target, 100.0);
    // The device in use is still the good one.
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let on = h
        .state_where("actuated-channels", |v| {
            v.as_array().is_some_and(|a| !a.is_empty())
        })
        .await
        .unwrap();
    assert_eq!(
        on,
        json!([26]),
        "electrode030 is channel 26 on the default device"
    );
    assert_alive(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_takes_its_limits_from_the_board() {
    let config = Config {
        max_voltage: Some(120.0),
        min_frequency: Some(200.0),
        max_frequency: Some(5000.0),
        ..Config::default()
    };
    let options = PluginOptions {
        board_config: Some(config),
        ..PluginOptions::default()
    };
    let mut h = PluginHarness::start(options).await.unwrap();
    h.client.subscribe(&h.topic("error", "#")).await.unwrap();
    let schema = h
        .state_where("schema", |s| {
            s["properties"]["voltage"]["maximum"] == json!(120.0)
        })
        .await
        .unwrap();
    assert_eq!(schema["properties"]["frequency"]["maximum"], json!(5000.0));
    let info = h.state_where("info", Value::is_object).await.unwrap();
    assert_eq!(info["max_voltage"], json!(120.0));

    let reply = h.put("voltage", json!(130)).await.unwrap();
    assert_refused(
        &mut h,
        &reply,
        "voltage",
        &["130 is out of range", "0 to 120"],
    )
    .await;
    let reply = h.put("frequency", json!(6000)).await.unwrap();
    assert_refused(&mut h, &reply, "frequency", &["200 to 5000"]).await;
    let reply = h.put("frequency", json!(150)).await.unwrap();
    assert_refused(&mut h, &reply, "frequency", &["200 to 5000"]).await;
    let reply = h
        .trigger(
            "put-voltage-frequency",
            json!({"voltage": 121, "frequency": 1000}),
        )
        .await
        .unwrap();
    assert_refused(&mut h, &reply, "put-voltage-frequency", &["0 to 120"]).await;
    assert!(h.put("voltage", json!(120)).await.unwrap().is_success());
    assert_eq!(h.sim.snapshot().voltage_target, 120.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_without_a_board_refuses_clearly_but_runs_protocols() {
    let mut h = harness().await;
    h.client.subscribe(&h.topic("error", "#")).await.unwrap();
    h.sim.unplug().await;
    h.state_where("status", |s| s["board"] != json!("connected"))
        .await
        .unwrap();

    for (property, value) in [
        ("voltage", json!(100)),
        ("channels", json!([1])),
        ("hv-output-enabled", json!(true)),
    ] {
        let reply = h.put(property, value).await.unwrap();
        assert!(!reply.is_success(), "{property}: {reply:?}");
        let text = reply.response.as_str().unwrap_or_default();
        assert!(
            text.contains("no DropBot is connected"),
            "{property}: {text}"
        );
        h.client
            .next_message(&h.topic("error", property))
            .await
            .unwrap();
    }
    for action in [
        "measure-capacitance",
        "measure-voltage",
        "connect-dropbot",
        "halt",
        "detect-shorts",
    ] {
        let reply = h.trigger(action, json!({})).await.unwrap();
        assert!(!reply.is_success(), "{action}: {reply:?}");
        assert!(
            reply
                .response
                .as_str()
                .unwrap_or_default()
                .contains("no DropBot"),
            "{action}: {reply:?}"
        );
    }
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let e = h.next_error("active-electrodes").await.unwrap();
    assert!(e.contains("no DropBot"));

    // The step runner waits for every `execute` without a timeout: it must get an answer.
    let step = h.trigger("execute", json!({})).await.unwrap();
    assert!(step.is_success(), "{step:?}");
    assert_eq!(step.response["applied"], json!(false));
    assert!(
        step.response["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("no DropBot"),
        "{step:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_alive(&h).await;
}
