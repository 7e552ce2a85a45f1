//! Device models from the bus, parsed off the main loop: too many electrodes is refused with a
//! clear error (the plugin goes on with the device it had), and electrodes sent right after a
//! new device are mapped with that device.

use dropbot_plugin::device::MICRODROP3_DEFAULT_THREE_OBJECT;
use dropbot_plugin::plugin::devices::MAX_ELECTRODES;
use dropbot_testkit::{PluginHarness, PluginOptions, DEVICE_TOPIC};
use serde_json::{json, Value};

fn default_device() -> Vec<Value> {
    match serde_json::from_str(MICRODROP3_DEFAULT_THREE_OBJECT) {
        Ok(Value::Array(electrodes)) => electrodes,
        other => panic!("{other:?}"),
    }
}

/// MicroDrop's default chip with every id prefixed, plus `stacked` electrodes without a
/// channel on one spot (slow to parse: each overlaps every other).
fn renamed(prefix: &str, stacked: usize) -> Vec<u8> {
    let mut electrodes: Vec<Value> = default_device()
        .into_iter()
        .map(|mut e| {
            let id = e["id"].as_str().unwrap_or_default().to_owned();
            e["id"] = json!(format!("{prefix}{id}"));
            e
        })
        .collect();
    let first = electrodes.first().cloned().unwrap();
    electrodes.extend((0..stacked).map(|i| {
        let mut e = first.clone();
        e["id"] = json!(format!("{prefix}stacked{i}"));
        e["channel"] = json!("");
        e["translation"] = json!({"x": -1000.0, "y": -1000.0});
        e
    }));
    serde_json::to_vec(&electrodes).unwrap()
}

/// Clicks `id` alone; the one channel it actuates (other than `before`).
async fn channel_of(h: &mut PluginHarness, id: &str, before: Option<u16>) -> u16 {
    h.set_active_electrodes(&[id]).await.unwrap();
    let before = before.map(|c| json!([c]));
    let want = h
        .state_where("actuated-channels", |v| {
            v.as_array().is_some_and(|a| a.len() == 1) && Some(v) != before.as_ref()
        })
        .await
        .unwrap();
    let channel = u16::try_from(want[0].as_u64().unwrap()).unwrap();
    until_actuated(h, &[channel]).await;
    channel
}

async fn until_actuated(h: &PluginHarness, channels: &[u16]) {
    let want: Vec<u64> = channels.iter().map(|&c| u64::from(c)).collect();
    let seen = h
        .state_where("actuated-channels", |v| *v == json!(want))
        .await;
    assert!(seen.is_ok(), "{seen:?}");
    assert_eq!(h.sim.snapshot().actuated, channels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_too_many_electrodes_is_refused_and_the_old_one_stays() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .unwrap();
    let errors = h.topic("error", "three-object");
    h.client.subscribe(&errors).await.unwrap();
    let first = default_device().into_iter().next().unwrap();
    let too_many: Vec<Value> = (0..=MAX_ELECTRODES)
        .map(|i| {
            let mut e = first.clone();
            e["id"] = json!(format!("stacked{i}"));
            e
        })
        .collect();
    h.client
        .publish_raw(DEVICE_TOPIC, serde_json::to_vec(&too_many).unwrap(), true)
        .await
        .unwrap();
    let error = h.next_error("three-object").await.unwrap();
    assert!(
        error.contains(&format!("{} electrodes", MAX_ELECTRODES + 1))
            && error.contains(&format!("at most {MAX_ELECTRODES}")),
        "{error}"
    );
    // The device loaded before still maps clicks.
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let applied = h
        .state_where("actuated-channels", |v| {
            v.as_array().is_some_and(|a| a.len() == 1)
        })
        .await;
    assert!(applied.is_ok(), "{applied:?}");
    assert_eq!(h.sim.snapshot().actuated.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electrodes_right_after_a_new_device_are_mapped_with_it() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .unwrap();
    let c31 = channel_of(&mut h, "electrode031", None).await;
    let c30 = channel_of(&mut h, "electrode030", Some(c31)).await;
    assert_ne!(c30, c31);
    until_actuated(&h, &[c30]).await;
    // A new device that takes a while to parse, and at once a click on one of its (new) ids:
    // no wait in between. Were the click taken before the device, its id would be unknown
    // and electrode030 would stay on.
    h.client
        .publish_raw(DEVICE_TOPIC, renamed("new-", 400), true)
        .await
        .unwrap();
    h.set_active_electrodes(&["new-electrode031"])
        .await
        .unwrap();
    until_actuated(&h, &[c31]).await;
    // The old ids are gone with the old device.
    let errors = h.topic("error", "active-electrodes");
    h.client.subscribe(&errors).await.unwrap();
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let error = h.next_error("active-electrodes").await.unwrap();
    assert!(error.contains("electrode030"), "{error}");
}
