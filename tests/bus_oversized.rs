//! A publisher's oversized messages against the bus client, on mosquitto and on MicroDrop's
//! mosca: a retained message over its topic's limit is dropped as it arrives, named, and the
//! connection stays up (it would come again at every resubscription); a packet over the
//! transport's maximum drops the connection, and the error names the subscription it came
//! with, without a tight reconnect loop.

use std::time::Duration;

use dropbot_plugin::bus::{BusClient, BusError, BusMessage, ConnectionState};
use dropbot_testkit::{BrokerKind, TestBroker, TestClient};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const WAIT: Duration = Duration::from_secs(10);
const DEVICE: &str = "microdrop/device-model/state/three-object";
const VOLTAGE: &str = "microdrop/electrodes-model/state/voltage";

async fn recv(client: &mut BusClient) -> Result<BusMessage, BoxError> {
    Ok(tokio::time::timeout(WAIT, client.recv())
        .await?
        .ok_or("client closed")?)
}

async fn start(kind: BrokerKind) -> Result<(TestBroker, TestClient), BoxError> {
    let broker = tokio::task::spawn_blocking(move || TestBroker::start(kind)).await??;
    let mut ui = TestClient::connect(broker.host(), broker.port()).await?;
    ui.set_timeout(WAIT);
    Ok((broker, ui))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_over_its_topics_limit_is_named_and_the_connection_stays() -> TestResult
{
    for kind in BrokerKind::ALL {
        let (broker, ui) = start(kind).await?;
        // Stored before we subscribe: delivered at every (re)subscription.
        let big = json!("x".repeat(64 * 1024));
        ui.publish(DEVICE, &big, true).await?;
        ui.publish(VOLTAGE, &json!("100 V"), true).await?;
        ui.wait_retained(DEVICE).await?;
        ui.wait_retained(VOLTAGE).await?;

        let mut options = broker.bus_options("limited");
        options.max_payload = 1024;
        options.payload_limits = vec![("microdrop/device-model/state/+".into(), 16 * 1024)];
        let mut client = BusClient::start(options)?;
        client.wait_connected(WAIT).await?;
        let handle = client.handle();
        handle.subscribe_many(&[DEVICE, VOLTAGE])?;
        handle.sync(WAIT).await?;

        let mut got = vec![recv(&mut client).await?, recv(&mut client).await?];
        got.sort_by(|a, b| a.topic.cmp(&b.topic));
        let [device, voltage] = <[BusMessage; 2]>::try_from(got).map_err(|_| "two")?;
        assert!(device.stored && device.is_oversized(), "{kind}: {device:?}");
        match device.envelope() {
            Err(BusError::Oversized { topic, size, limit }) => {
                assert_eq!((topic.as_str(), limit), (DEVICE, 16 * 1024), "{kind}");
                assert!(size > 64 * 1024, "{kind}: {size}");
            }
            other => panic!("{kind}: {other:?}"),
        }
        let text = device.envelope().err().map(|e| e.to_string());
        assert!(
            text.as_deref().is_some_and(|t| t.contains(DEVICE)),
            "{kind}: {text:?}"
        );
        assert_eq!(voltage.envelope()?.value, json!("100 V"), "{kind}");
        assert_eq!(handle.stats().oversized, 1, "{kind}");
        assert_eq!(
            handle.rejected().map(|r| r.topic).as_deref(),
            Some(DEVICE),
            "{kind}"
        );
        // Everything stored has been delivered (the sync is done): had the message broken
        // the connection, it would have happened by now.
        handle.sync(WAIT).await?;
        assert!(handle.is_connected(), "{kind}");
        assert_eq!(handle.stats().connections, 1, "{kind}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_the_transport_maximum_names_its_subscription_and_backs_off() -> TestResult {
    let (broker, ui) = start(BrokerKind::Mosquitto).await?;
    ui.publish(DEVICE, &json!("x".repeat(64 * 1024)), true)
        .await?;
    ui.wait_retained(DEVICE).await?;
    let mut options = broker.bus_options("limited");
    options.max_packet_size = 16 * 1024;
    options.max_payload = 8 * 1024;
    let client = BusClient::start(options)?;
    client.wait_connected(WAIT).await?;
    let handle = client.handle();
    let mut state = handle.connection();
    handle.subscribe(DEVICE)?;
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            if let ConnectionState::Disconnected { reason } = &*state.borrow_and_update() {
                return reason.clone();
            }
            let _ = state.changed().await;
        }
    })
    .await?;
    assert!(
        reason.contains(DEVICE) && reason.contains("max_packet_size"),
        "{reason}"
    );
    // Each reconnection brings the stored packet again: the backoff keeps that slow (it
    // resets only after a stable session). At most 50 ms, 100 ms, ... 2 s apart: in 3 s
    // that is a handful, where rumqttc alone would retry thousands of times.
    let before = handle.stats().connections;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = handle.stats().connections - before;
    assert!(again <= 12, "{again} reconnections in 3 s");
    Ok(())
}
