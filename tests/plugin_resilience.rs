//! The plugin through trouble: a broker that crashes and comes back, a payload too large for its
//! MQTT client, a board that halts (by itself or on request), is unplugged and plugged back,
//! chip removal, and the `exit` trigger. HV never comes back by itself.

use std::time::Duration;

use dropbot_testkit::{PluginHarness, PluginOptions, TestClient};
use serde_json::{json, Value};

async fn harness() -> PluginHarness {
    PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts")
}

/// Pings until the plugin answers (it may be reconnecting); panics after about 10 s.
async fn until_answering(h: &PluginHarness) {
    for _ in 0..40 {
        let mut quick = TestClient::connect(h.broker.host(), h.broker.port())
            .await
            .expect("broker up");
        quick.set_timeout(Duration::from_millis(250));
        if quick
            .trigger(&h.name, "ping", &json!({}))
            .await
            .is_ok_and(|r| r.is_success())
        {
            return;
        }
    }
    panic!("the plugin does not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_resubscribes_and_restores_retained_state_after_a_broker_crash() {
    let mut h = harness().await;
    assert!(h.put("voltage", json!(110)).await.unwrap().is_success());
    assert!(h.put("channels", json!([8, 9])).await.unwrap().is_success());

    h.broker.kill().unwrap();
    h.broker.restart().unwrap();
    // A fresh broker holds nothing until the plugin comes back and republishes.
    until_answering(&h).await;
    let status = h.wait_board("connected").await.unwrap();
    assert_eq!(status["bus"], json!("online"));
    h.state_where("voltage", |v| v.as_f64() == Some(110.0))
        .await
        .unwrap();
    h.state_where("actuated-channels", |v| *v == json!([8, 9]))
        .await
        .unwrap();
    h.state_where("hv-output-enabled", |v| *v == json!(true))
        .await
        .unwrap();
    h.state_where("schema", |v| v["properties"].is_object())
        .await
        .unwrap();
    h.state_where("info", |v| v["channel_count"] == json!(120))
        .await
        .unwrap();
    let snap = h.sim.snapshot();
    assert_eq!(
        snap.actuated,
        vec![8, 9],
        "a broker crash does not touch the board"
    );

    // Every endpoint is subscribed again, and the device model survived in the plugin.
    let r = h.put("frequency", json!(2000)).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    h.state_where("actuated-channels", |v| *v == json!([26]))
        .await
        .unwrap();
    assert_eq!(h.sim.snapshot().actuated, vec![26]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_exit_trigger_shuts_down_safely() {
    let mut h = harness().await;
    assert!(h
        .put("channels", json!([1, 2, 3]))
        .await
        .unwrap()
        .is_success());
    assert!(h.sim.snapshot().hv_enabled);
    let r = h.trigger("exit", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let outcome = h.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    let status = h
        .state_where("status", |s| s["bus"] == json!("offline"))
        .await
        .unwrap();
    assert_eq!(status["board"], json!("unknown"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_reports_a_board_halt_and_keeps_hv_off() {
    let mut h = harness().await;
    let signal = h.topic("signal", "halted");
    h.client.subscribe(&signal).await.unwrap();
    // A shorted channel under HV draws more current than the board allows: it halts itself.
    h.sim.set_shorted(vec![5]);
    let _ = h.put("channels", json!([5])).await.unwrap();
    let m = h
        .client
        .next_message(&signal)
        .await
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(m["reason"], json!("output-current-exceeded"), "{m}");
    h.state_where("halted", |v| {
        v["reason"] == json!("output-current-exceeded")
    })
    .await
    .unwrap();
    h.wait_board("halted").await.unwrap();
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .unwrap();
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");

    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let refused = h.put("channels", json!([6])).await.unwrap();
    assert!(
        refused
            .response
            .as_str()
            .unwrap_or_default()
            .contains("halted"),
        "{refused:?}"
    );
    assert!(
        !h.sim.snapshot().hv_enabled,
        "nothing re-enables HV after a halt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_keeps_a_halt_across_a_reconnection() {
    let mut h = harness().await;
    assert!(h.put("channels", json!([1])).await.unwrap().is_success());
    assert!(h.trigger("halt", json!({})).await.unwrap().is_success());
    h.sim.unplug().await;
    h.state_where("status", |s| s["uuid"].is_null())
        .await
        .unwrap();
    h.sim.replug().await.unwrap();
    let status = h.wait_board("halted").await.unwrap();
    assert!(status["uuid"].is_string(), "connected again: {status}");
    h.state_where("halted", |v| v["reason"] == json!("requested"))
        .await
        .unwrap();

    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let refused = h.put("channels", json!([2])).await.unwrap();
    assert!(!refused.is_success(), "{refused:?}");
    engine_barrier(&h).await;
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");

    assert!(h
        .put("hv-output-enabled", json!(true))
        .await
        .unwrap()
        .is_success());
    h.wait_board("connected").await.unwrap();
    h.state_where("halted", Value::is_null).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_halt_refuses_actuation_until_hv_is_put_on() {
    let mut h = harness().await;
    let signal = h.topic("signal", "halted");
    h.client.subscribe(&signal).await.unwrap();
    assert!(h
        .put("channels", json!([10, 11]))
        .await
        .unwrap()
        .is_success());
    assert!(h.sim.snapshot().hv_enabled);

    let r = h.trigger("halt", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    assert_eq!(
        h.client
            .next_message(&signal)
            .await
            .unwrap()
            .value()
            .unwrap()["reason"],
        json!("requested")
    );
    h.state_where("halted", |v| v["reason"] == json!("requested"))
        .await
        .unwrap();
    h.wait_board("halted").await.unwrap();
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .unwrap();
    h.state_where("actuated-channels", |v| *v == json!([]))
        .await
        .unwrap();

    let refused = h.put("channels", json!([10])).await.unwrap();
    assert!(!refused.is_success());
    let text = refused.response.as_str().unwrap_or_default();
    assert!(
        text.contains("halted") && text.contains("hv-output-enabled"),
        "{text}"
    );
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    engine_barrier(&h).await;
    assert!(
        !h.sim.snapshot().hv_enabled,
        "a click must not re-enable HV after a halt"
    );

    let resume = h.put("hv-output-enabled", json!(true)).await.unwrap();
    assert!(resume.is_success(), "{resume:?}");
    h.wait_board("connected").await.unwrap();
    h.state_where("halted", Value::is_null).await.unwrap();
    assert!(h.put("channels", json!([10])).await.unwrap().is_success());
    assert_eq!(h.sim.snapshot().actuated, vec![10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_signals_chip_and_board_connection() {
    let mut h = harness().await;
    let signals = h.topic("signal", "#");
    h.client.subscribe(&signals).await.unwrap();

    h.sim.insert_chip(false);
    let m = h
        .client
        .next_message(&h.topic("signal", "chip-removed"))
        .await
        .unwrap();
    assert_eq!(m.value().unwrap(), json!({}));
    h.state_where("chip-inserted", |v| *v == json!(false))
        .await
        .unwrap();
    h.sim.insert_chip(true);
    h.client
        .next_message(&h.topic("signal", "chip-inserted"))
        .await
        .unwrap();
    h.state_where("chip-inserted", |v| *v == json!(true))
        .await
        .unwrap();

    h.sim.unplug().await;
    let m = h
        .client
        .next_message(&h.topic("signal", "board-disconnected"))
        .await
        .unwrap();
    assert!(m.value().unwrap()["reason"].is_string(), "{m:?}");
    h.state_where("status", |s| s["board"] != json!("connected"))
        .await
        .unwrap();
    h.state_where("actuated-channels", Value::is_null)
        .await
        .unwrap();
    let refused = h.put("voltage", json!(100)).await.unwrap();
    assert!(!refused.is_success());
    assert!(
        refused
            .response
            .as_str()
            .unwrap_or_default()
            .contains("no DropBot"),
        "{refused:?}"
    );

    h.sim.replug().await.unwrap();
    let m = h
        .client
        .next_message(&h.topic("signal", "board-connected"))
        .await
        .unwrap();
    assert_eq!(m.value().unwrap()["board"], json!("connected"));
    h.wait_board("connected").await.unwrap();
    let snap = h.sim.snapshot();
    assert!(
        !snap.hv_enabled && snap.actuated.is_empty(),
        "nothing is re-enabled: {snap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_survives_a_payload_over_its_topics_limit() {
    let mut h = harness().await;
    assert!(h.put("channels", json!([3])).await.unwrap().is_success());
    let errors = h.topic("error", "voltage");
    h.client.subscribe(&errors).await.unwrap();
    // 9 MiB is over the plugin's payload limit (8 MiB): the bus drops the message as it
    // arrives, names its topic, and the connection stays up.
    let huge = format!(r#"{{"voltage": "{}"}}"#, "1".repeat(9 << 20));
    h.client
        .publish_raw("microdrop/put/dropbot/voltage", huge.into_bytes(), false)
        .await
        .unwrap();
    let error = h.next_error("voltage").await.unwrap();
    assert!(
        error.contains("microdrop/put/dropbot/voltage") && error.contains("limit"),
        "{error}"
    );
    assert!(h.trigger("ping", json!({})).await.unwrap().is_success());
    let log = h.broker.log();
    assert_eq!(
        log.matches(" as dropbot>>").count(),
        1,
        "reconnected: {log}"
    );
    assert_eq!(
        h.sim.snapshot().actuated,
        vec![3],
        "the board is not touched"
    );
    assert_eq!(h.sim.snapshot().voltage_target, 100.0);
    assert!(!h.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_restarted_while_energised_comes_back_halted() {
    let h = harness().await;
    assert!(h.put("channels", json!([4])).await.unwrap().is_success());
    assert!(h.sim.snapshot().hv_enabled);
    // The board restarts as when its watchdog fires: the USB link drops and comes back.
    h.sim.reboot().await.unwrap();
    h.state_where("halted", |v| v["reason"] == json!("board-reset"))
        .await
        .unwrap();
    h.wait_board("halted").await.unwrap();
    let refused = h.put("channels", json!([4])).await.unwrap();
    assert!(!refused.is_success(), "{refused:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    assert!(h
        .put("hv-output-enabled", json!(true))
        .await
        .unwrap()
        .is_success());
    assert!(h.put("channels", json!([4])).await.unwrap().is_success());
    assert_eq!(h.sim.snapshot().actuated, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_insertion_keeps_the_users_disabled_channels_disabled() {
    let mut h = harness().await;
    let r = h.put("disabled-channels", json!([7, 8])).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(h.sim.snapshot().disabled, vec![7, 8]);
    // On insertion the firmware runs its own short detection, which rewrites the whole mask
    // (dropbot.py `Node.h`, `channels.cpp` `detect_shorts`): channel 20 is shorted now.
    h.sim.set_shorted(vec![20]);
    let removed = h.topic("signal", "chip-removed");
    h.client.subscribe(&removed).await.unwrap();
    h.sim.insert_chip(false);
    // The removal counts once the interlock has been stable for its debounce.
    h.client.next_message(&removed).await.unwrap();
    h.sim.insert_chip(true);
    h.state_where("disabled-channels", |v| *v == json!([7, 8, 20]))
        .await
        .unwrap();
    assert_eq!(h.sim.snapshot().disabled, vec![7, 8, 20]);
    // The plugin still answers after the firmware's stall.
    assert!(h.trigger("ping", json!({})).await.unwrap().is_success());
}

/// Returns once the engine has dealt with everything submitted before: it takes requests in
/// arrival order, and a measurement is an ordered request it answers even while halted.
async fn engine_barrier(h: &PluginHarness) {
    let r = h.trigger("measure-voltage", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
}
