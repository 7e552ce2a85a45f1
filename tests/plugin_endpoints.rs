//! Every endpoint of the plugin, end to end: a private mosquitto, the simulated DropBot on a
//! pty, and a client that talks like MicroDrop 3's (a fresh `micropede-async-*` client per
//! request, waiting for the notify). Each check looks at the reply, the retained state and the
//! simulated board itself.

use std::collections::BTreeSet;

use dropbot_testkit::{PluginHarness, PluginOptions};
use serde_json::{json, Value};

async fn harness() -> PluginHarness {
    PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts")
}

fn channels(v: &Value) -> BTreeSet<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_triggers_answer_like_a_microdrop_plugin() {
    let h = harness().await;
    let pong = h.trigger("ping", json!({})).await.unwrap();
    assert!(pong.is_success(), "{pong:?}");
    assert_eq!(pong.response, json!("pong"));
    assert_eq!(
        pong.head["plugin_name"],
        json!("dropbot"),
        "replies carry our __head__"
    );
    assert!(
        pong.topic
            .starts_with("microdrop/dropbot/notify/micropede-async-"),
        "{}",
        pong.topic
    );

    let schema = h.trigger("get-schema", json!({})).await.unwrap();
    let props = schema.response["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for p in [
        "voltage",
        "frequency",
        "hv-output-enabled",
        "channels",
        "capacitance-update-interval-ms",
        "disabled-channels",
    ] {
        assert!(
            props.contains_key(p),
            "schema lacks {p}: {}",
            schema.response
        );
    }
    // A step's voltage is the electrodes model's; ours is global (see the README).
    assert_eq!(props["voltage"]["per_step"], json!(false));
    assert_eq!(props["wait-for-board"]["per_step"], json!(true));
    assert_eq!(props["hv-output-enabled"]["per_step"], json!(false));

    let subs = h.trigger("get-subscriptions", json!({})).await.unwrap();
    let subs: Vec<String> = serde_json::from_value(subs.response).unwrap();
    for want in [
        "microdrop/trigger/dropbot/execute",
        "microdrop/put/dropbot/voltage",
        "microdrop/device-model/state/three-object",
        "microdrop/electrodes-model/state/active-electrodes",
    ] {
        assert!(subs.iter().any(|s| s == want), "{want} not in {subs:?}");
    }

    let state = json!({"voltage": 90, "frequency": 1000});
    let migrated = h
        .trigger(
            "update-version",
            json!({"state": state, "storageVersion": "0.0.1", "pluginVersion": "0.1.0"}),
        )
        .await
        .unwrap();
    assert!(migrated.is_success());
    assert_eq!(migrated.response, state);

    let connect = h.trigger("connect-dropbot", json!({})).await.unwrap();
    assert!(connect.is_success(), "{connect:?}");
    assert_eq!(connect.response["board"], json!("connected"));
    assert_eq!(connect.response["channel_count"], json!(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_retained_state_describes_the_connected_board() {
    let h = harness().await;
    let status = h.wait_board("connected").await.unwrap();
    assert_eq!(status["bus"], json!("online"));
    assert!(
        status["port"]
            .as_str()
            .is_some_and(|p| p.ends_with("/dropbot")),
        "{status}"
    );
    let info = h.state_where("info", |v| v.is_object()).await.unwrap();
    for key in [
        "voltage",
        "frequency",
        "hv_output_enabled",
        "channel_count",
        "max_voltage",
        "min_frequency",
        "max_frequency",
        "uuid",
        "software_version",
        "hardware_version",
        "id",
        // The firmware's strings, read at connection (MicroDrop's DropBot panel lists them).
        "base_node_software_version",
        "package_name",
        "display_name",
        "manufacturer",
        "url",
        "event_mask",
    ] {
        assert!(
            info.get(key).is_some_and(|v| !v.is_null()),
            "info lacks {key}: {info}"
        );
    }
    assert_eq!(info["channel_count"], json!(120));
    let schema = h
        .state_where("schema", |v| v["properties"].is_object())
        .await
        .unwrap();
    assert_eq!(schema["properties"]["voltage"]["maximum"], json!(150.0));
    assert_eq!(
        h.state_where("actuated-channels", Value::is_array)
            .await
            .unwrap(),
        json!([])
    );
    assert_eq!(
        h.state_where("hv-output-enabled", Value::is_boolean)
            .await
            .unwrap(),
        json!(false)
    );
    assert_eq!(
        h.state_where("disabled-channels", Value::is_array)
            .await
            .unwrap(),
        json!([])
    );
    let snap = h.sim.snapshot();
    let voltage = h.state_where("voltage", Value::is_number).await.unwrap();
    assert_eq!(voltage.as_f64(), Some(snap.voltage_target));
    let frequency = h.state_where("frequency", Value::is_number).await.unwrap();
    assert_eq!(frequency.as_f64(), Some(snap.frequency));
    assert_eq!(
        h.state_where("halted", |_| true).await.unwrap(),
        Value::Null
    );
    assert!(h
        .state_where("capacitance-update-interval-ms", Value::is_number)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_puts_change_the_board_and_the_retained_state() {
    let h = harness().await;
    let r = h.put("voltage", json!(120)).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.response.as_f64(), Some(120.0));
    assert_eq!(h.sim.snapshot().voltage_target, 120.0);
    h.state_where("voltage", |v| v.as_f64() == Some(120.0))
        .await
        .unwrap();

    let r = h.put("frequency", json!(5000)).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(h.sim.snapshot().frequency, 5000.0);
    h.state_where("frequency", |v| v.as_f64() == Some(5000.0))
        .await
        .unwrap();

    let r = h.put("channels", json!([3, 1, 2])).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(channels(&r.response), BTreeSet::from([1, 2, 3]));
    let snap = h.sim.snapshot();
    assert_eq!(snap.actuated, vec![1, 2, 3]);
    assert!(
        snap.hv_enabled,
        "auto-HV: the first actuation with channels turns HV on"
    );
    h.state_where("actuated-channels", |v| {
        channels(v) == BTreeSet::from([1, 2, 3])
    })
    .await
    .unwrap();
    h.state_where("hv-output-enabled", |v| *v == json!(true))
        .await
        .unwrap();

    let r = h
        .put("capacitance-update-interval-ms", json!(50))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    h.state_where("capacitance-update-interval-ms", |v| *v == json!(50))
        .await
        .unwrap();
    let reading = h
        .state_where("capacitance", |v| v["board_time_us"].is_number())
        .await
        .unwrap();
    assert_eq!(
        reading["unit"],
        json!("F"),
        "HV is on, so the stream runs: {reading}"
    );

    let r = h.put("hv-output-enabled", json!(false)).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.response, json!(false));
    assert!(!h.sim.snapshot().hv_enabled);
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .unwrap();

    let r = h.put("disabled-channels", json!([7, 9])).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(channels(&r.response), BTreeSet::from([7, 9]));
    assert_eq!(h.sim.snapshot().disabled, vec![7, 9]);
    h.state_where("disabled-channels", |v| {
        channels(v) == BTreeSet::from([7, 9])
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_measurement_triggers_answer_and_publish_readings() {
    let h = harness().await;
    let r = h
        .trigger(
            "put-voltage-frequency",
            json!({"voltage": 110, "frequency": 2000}),
        )
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.response["voltage"].as_f64(), Some(110.0));
    assert_eq!(r.response["frequency"].as_f64(), Some(2000.0));
    let snap = h.sim.snapshot();
    assert_eq!((snap.voltage_target, snap.frequency), (110.0, 2000.0));

    h.sim
        .add_droplet("electrode030", h.sim.unit_volume("electrode030").unwrap())
        .unwrap();
    assert!(h.put("channels", json!([])).await.unwrap().is_success());
    // Bare numbers, as the 2018 plugin answered; the retained state has the details.
    let r = h.trigger("measure-capacitance", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let value = r.response.as_f64().unwrap();
    let retained = h
        .state_where("capacitance", |v| v["value"].as_f64() == Some(value))
        .await
        .unwrap();
    assert!(
        retained["host_time_ms"].as_f64().unwrap() > 1.7e12,
        "{retained}"
    );

    let r = h.trigger("measure-voltage", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    let measured = r.response.as_f64().unwrap();
    h.state_where("measured-voltage", |v| {
        v["value"].as_f64() == Some(measured)
    })
    .await
    .unwrap();

    let r = h
        .trigger("scan-capacitances", json!({"channels": [0, 5]}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    let map = r.response.as_object().cloned().unwrap_or_default();
    assert_eq!(
        map.keys().cloned().collect::<Vec<_>>(),
        vec!["0".to_owned(), "5".to_owned()]
    );
    assert!(map.values().all(Value::is_number));
    let all = h.trigger("scan-capacitances", json!({})).await.unwrap();
    assert_eq!(
        all.response.as_object().map(serde_json::Map::len),
        Some(120)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_detect_shorts_disables_them_and_signals() {
    let mut h = harness().await;
    let signal = h.topic("signal", "shorts-detected");
    h.client.subscribe(&signal).await.unwrap();
    h.sim.set_shorted(vec![4, 17]);
    let r = h
        .trigger("detect-shorts", json!({"delay_ms": 1}))
        .await
        .unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(channels(&r.response), BTreeSet::from([4, 17]));
    let m = h.client.next_message(&signal).await.unwrap();
    assert_eq!(
        channels(&m.value().unwrap()["channels"]),
        BTreeSet::from([4, 17])
    );
    h.state_where("disabled-channels", |v| {
        channels(v) == BTreeSet::from([4, 17])
    })
    .await
    .unwrap();
    assert_eq!(h.sim.snapshot().disabled, vec![4, 17]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_all_off_turns_channels_and_hv_off() {
    let h = harness().await;
    assert!(h
        .put("channels", json!([1, 50, 100]))
        .await
        .unwrap()
        .is_success());
    let r = h.trigger("all-off", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.response["channels"], json!([]));
    assert_eq!(r.response["hv_output_enabled"], json!(false));
    let snap = h.sim.snapshot();
    assert!(snap.actuated.is_empty() && !snap.hv_enabled, "{snap:?}");
    h.state_where("actuated-channels", |v| *v == json!([]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_execute_applies_the_step_and_answers() {
    let mut h = harness().await;
    let steps = "microdrop/electrodes-model/state/";
    // A protocol step is loaded by writing the electrodes model's retained states.
    let voltage = format!("{steps}voltage");
    h.publish_seen(&voltage, br#""95 V""#.to_vec(), true)
        .await
        .unwrap();
    let frequency = format!("{steps}frequency");
    h.publish_seen(&frequency, br#""3000 Hz""#.to_vec(), true)
        .await
        .unwrap();
    h.set_active_electrodes(&["electrode030", "electrode031"])
        .await
        .unwrap();
    let r = h.trigger("execute", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
    assert_eq!(r.response["applied"], json!(true));
    assert_eq!(r.response["voltage"].as_f64(), Some(95.0));
    assert_eq!(r.response["frequency"].as_f64(), Some(3000.0));
    let snap = h.sim.snapshot();
    assert_eq!((snap.voltage_target, snap.frequency), (95.0, 3000.0));
    assert!(snap.hv_enabled);
    assert_eq!(
        channels(&r.response["channels"]),
        snap.actuated.iter().map(|&c| u64::from(c)).collect()
    );
    assert_eq!(snap.actuated.len(), 2, "{snap:?}");
    assert!(r.response["capacitance"].is_number(), "{r:?}");
}
