//! A network failure on MicroDrop 3's own broker, mosca, while the electrodes model holds a set
//! of active electrodes: the plugin reconnects and resubscribes, mosca hands it the stored set
//! (with the retain flag cleared, as it does with every message), and nothing is switched on.

use std::time::Duration;

use dropbot_testkit::{BrokerKind, PluginHarness, PluginOptions, ACTIVE_ELECTRODES_TOPIC};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_on_mosca_does_not_actuate_the_stored_active_electrodes() {
    let mut h = PluginHarness::start(PluginOptions {
        broker: BrokerKind::Mosca,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    // A click: the electrodes model publishes its retained state, live to the plugin, so it
    // actuates (HV on by auto-HV); then the user switches all off. The electrodes model's
    // stored state still says electrode030.
    h.publish_seen(
        ACTIVE_ELECTRODES_TOPIC,
        br#"["electrode030"]"#.to_vec(),
        true,
    )
    .await
    .unwrap();
    h.state_where("actuated-channels", |v| *v == json!([26]))
        .await
        .unwrap();
    let off = h.trigger("all-off", json!({})).await.unwrap();
    assert!(off.is_success(), "{off:?}");
    let snap = h.sim.snapshot();
    assert!(snap.actuated.is_empty() && !snap.hv_enabled, "{snap:?}");

    let mosca = h.broker.as_mosca().expect("a mosca broker");
    let dropped = mosca.drop_clients().unwrap();
    assert!(
        dropped >= 2,
        "the plugin and the test client were connected: {dropped}"
    );
    // From here on every value of actuated-channels is seen, the stored one included. The
    // test's own client was dropped too and reconnects by itself: a subscription asked while
    // it still is can lose its marker's PUBACK with the old connection, so it asks again.
    let actuated = h.state_topic("actuated-channels");
    h.client.set_timeout(Duration::from_secs(2));
    let mut subscribed = false;
    for _ in 0..10 {
        if h.client.subscribe(&actuated).await.is_ok() {
            subscribed = true;
            break;
        }
    }
    h.client.set_timeout(Duration::from_secs(10));
    assert!(subscribed, "the test client did not come back");

    // Answering again means it has reconnected and resubscribed.
    let mut answered = false;
    for _ in 0..50 {
        if h.trigger("ping", json!({})).await.is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the plugin did not come back");
    // A live update after the stored one: the stored set, had it been taken as live, would
    // have switched electrode030 on before this or after it (mosca looks stored messages up
    // asynchronously), and the board would not end with electrode031 alone.
    h.publish_seen(
        ACTIVE_ELECTRODES_TOPIC,
        br#"["electrode031"]"#.to_vec(),
        true,
    )
    .await
    .unwrap();
    h.state_where("actuated-channels", |v| *v == json!([36]))
        .await
        .unwrap();
    // A put goes through the actuator after everything submitted before it.
    assert!(h.put("voltage", json!(100)).await.unwrap().is_success());
    assert_eq!(h.sim.snapshot().actuated, vec![36]);
    let seen = h
        .client
        .collect_for(&actuated, Duration::from_millis(100))
        .await
        .unwrap();
    for m in seen {
        let value = m.value().unwrap();
        assert_ne!(value, json!([26]), "the stored electrodes were actuated");
    }
}
