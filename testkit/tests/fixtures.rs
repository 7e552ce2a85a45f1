//! The test fixtures themselves: the private mosquitto and the MicroDrop-like test client.

use std::net::TcpStream;
use std::time::Duration;

use dropbot_testkit::{Mosquitto, TestClient, TestError};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[test]
fn mosquitto_stops_and_restarts_on_the_same_port() -> TestResult {
    let mut broker = Mosquitto::start()?;
    let port = broker.port();
    let other = Mosquitto::start()?;
    assert_ne!(port, other.port(), "two brokers share a port");
    assert!(broker.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    broker.stop()?;
    // Not "the port is closed": another test may take a freed port at once.
    assert!(!broker.is_running());
    broker.restart()?;
    assert_eq!(broker.port(), port);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    broker.kill()?;
    assert!(!broker.is_running());
    assert!(
        broker.log().contains("mosquitto version"),
        "{}",
        broker.log()
    );
    Ok(())
}

#[tokio::test]
async fn test_client_keeps_unmatched_messages_for_later() -> TestResult {
    let broker = Mosquitto::start()?;
    let mut ui = TestClient::connect(broker.host(), broker.port()).await?;
    ui.set_timeout(Duration::from_secs(5));
    ui.subscribe("microdrop/+/signal/#").await?;
    ui.subscribe("microdrop/a/state/x").await?;
    ui.publish("microdrop/a/signal/one", &json!(1), false)
        .await?;
    ui.publish("microdrop/a/state/x", &json!({"v": 2}), false)
        .await?;
    ui.publish("microdrop/b/signal/two", &json!([2]), false)
        .await?;

    let state = ui.next_message("microdrop/a/state/x").await?;
    assert_eq!(state.value()?, json!({"v": 2}));
    assert_eq!(state.json()?["__head__"]["plugin_name"], "test-client");
    let signals = ui
        .collect_for("microdrop/+/signal/#", Duration::from_millis(200))
        .await?;
    let topics: Vec<&str> = signals.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["microdrop/a/signal/one", "microdrop/b/signal/two"]);

    ui.set_timeout(Duration::from_millis(200));
    let none = ui.next_message("microdrop/a/state/x").await;
    assert!(matches!(none, Err(TestError::Timeout(_))), "{none:?}");
    // Nobody answers: a put times out instead of hanging.
    let reply = ui.put("nobody", "voltage", &json!(1)).await;
    assert!(matches!(reply, Err(TestError::Timeout(_))), "{reply:?}");
    Ok(())
}
