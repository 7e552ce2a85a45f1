//! A broker that wants a user name and password: the right credentials connect and work, wrong
//! ones are refused without the client spinning on reconnects.

use std::time::Duration;

use dropbot_plugin::bus::{BusClient, BusOptions};
use dropbot_testkit::Mosquitto;
use serde_json::json;

fn options(broker: &Mosquitto, user: &str, password: &str) -> BusOptions {
    let mut options = broker.bus_options("dropbot");
    options.credentials = Some((user.to_owned(), password.to_owned()));
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_credentials_connect_and_carry_messages() {
    let broker = Mosquitto::start_with_password("lab", "s3cret").unwrap();
    let mut client = BusClient::start(options(&broker, "lab", "s3cret")).unwrap();
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let handle = client.handle();
    handle.subscribe("microdrop/dropbot/signal/#").unwrap();
    handle.sync(Duration::from_secs(10)).await.unwrap();
    // (Our own latest retained state coming back is not handed on; a signal is.)
    handle.signal("tick", &json!(90)).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), client.recv())
        .await
        .expect("our own signal comes back")
        .expect("client open");
    assert_eq!(message.topic, "microdrop/dropbot/signal/tick");
    assert_eq!(&message.payload[..], b"90");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_retried_with_backoff() {
    let broker = Mosquitto::start_with_password("lab", "s3cret").unwrap();
    for (user, password) in [("lab", "wrong"), ("intruder", "s3cret")] {
        let client = BusClient::start(options(&broker, user, password)).unwrap();
        let refused = client.wait_connected(Duration::from_millis(1500)).await;
        assert!(refused.is_err(), "{user}/{password} connected");
        let stats = client.handle().stats();
        assert_eq!(stats.connections, 0);
        // Backoff from 50 ms doubling: a handful of attempts in 1.5 s, not thousands.
        assert!((1..50).contains(&stats.connection_attempts), "{stats:?}");
    }
    // Anonymous clients are refused too.
    let anonymous = BusClient::start(broker.bus_options("dropbot")).unwrap();
    assert!(anonymous
        .wait_connected(Duration::from_millis(500))
        .await
        .is_err());
}
