//! Wills for several retained topics (the bus layer's guards), on mosquitto and on MicroDrop's
//! mosca: a crash resets every guarded topic, a clean disconnect none, and someone else's value
//! on a guarded topic is replaced by ours while we live.

use std::time::Duration;

use dropbot_plugin::bus::{BusClient, BusError, BusOptions, Farewell, Will};
use dropbot_testkit::{BrokerKind, TestBroker, TestClient};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const WAIT: Duration = Duration::from_secs(10);
const STATUS: &str = "microdrop/guarded/state/status";
const HV: &str = "microdrop/guarded/state/hv-output-enabled";
const CHANNELS: &str = "microdrop/guarded/state/actuated-channels";

/// A client named `guarded` with a will on `status` and guards on `hv` and `channels`.
fn options(broker: &TestBroker) -> BusOptions {
    let mut o = broker.bus_options("guarded");
    o.will = Some(Will {
        topic: STATUS.into(),
        value: json!("offline"),
    });
    o.guards = vec![
        Will {
            topic: HV.into(),
            value: Value::Null,
        },
        Will {
            topic: CHANNELS.into(),
            value: Value::Null,
        },
    ];
    o
}

/// Connected, guards up (the resync waits for them), our state published and seen.
async fn energised(broker: &TestBroker, ui: &TestClient) -> Result<BusClient, BoxError> {
    let client = BusClient::start(options(broker))?;
    client.wait_connected(WAIT).await?;
    let handle = client.handle();
    handle.sync(WAIT).await?;
    assert_eq!(handle.stats().guards_connected, 2);
    handle.publish_state("status", &json!("online"))?;
    handle.publish_state("hv-output-enabled", &json!(true))?;
    handle.publish_state("actuated-channels", &json!([1, 2]))?;
    ui.wait_retained_where(STATUS, |v| v == "online").await?;
    ui.wait_retained_where(HV, |v| *v == json!(true)).await?;
    ui.wait_retained_where(CHANNELS, |v| *v == json!([1, 2]))
        .await?;
    Ok(client)
}

async fn start(kind: BrokerKind) -> Result<(TestBroker, TestClient), BoxError> {
    let broker = tokio::task::spawn_blocking(move || TestBroker::start(kind)).await??;
    let mut ui = TestClient::connect(broker.host(), broker.port()).await?;
    ui.set_timeout(WAIT);
    Ok((broker, ui))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_resets_every_guarded_topic() -> TestResult {
    for kind in BrokerKind::ALL {
        let (_broker, ui) = start(kind).await?;
        let client = energised(&_broker, &ui).await?;
        // Aborts every task: all sockets close without DISCONNECT, as when the process dies.
        drop(client);
        ui.wait_retained_where(STATUS, |v| v == "offline").await?;
        ui.wait_retained_where(HV, Value::is_null).await?;
        ui.wait_retained_where(CHANNELS, Value::is_null).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_disconnect_fires_no_will() -> TestResult {
    let (mut broker, ui) = start(BrokerKind::Mosquitto).await?;
    let client = energised(&broker, &ui).await?;
    let handle = client.handle();
    handle.publish_state("hv-output-enabled", &json!(false))?;
    ui.wait_retained_where(HV, |v| *v == json!(false)).await?;
    let farewell = [Farewell {
        topic: STATUS.into(),
        value: json!("said goodbye"),
        retain: true,
    }];
    client.disconnect(&farewell, WAIT).await?;
    ui.wait_retained_where(STATUS, |v| v == "said goodbye")
        .await?;
    // mosquitto logs "Client <id> disconnected." once it has handled a DISCONNECT, after
    // which that connection has no will any more: wait for all three.
    let mosquitto = broker.as_mosquitto().ok_or("mosquitto")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while mosquitto.log().matches(" disconnected.").count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every connection said goodbye: {}",
            mosquitto.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ui.wait_retained(HV).await?, json!(false));
    assert_eq!(ui.wait_retained(CHANNELS).await?, json!([1, 2]));
    assert_eq!(ui.wait_retained(STATUS).await?, json!("said goodbye"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_value_on_a_guarded_topic_is_replaced_by_ours() -> TestResult {
    for kind in BrokerKind::ALL {
        let (broker, mut ui) = start(kind).await?;
        let client = energised(&broker, &ui).await?;
        let handle = client.handle();
        // What a guard's will does when its connection alone breaks, or what another client
        // may do: write our retained state.
        ui.subscribe(HV).await?;
        ui.publish(HV, &Value::Null, true).await?;
        let mut seen = Vec::new();
        while seen.last() != Some(&json!(true)) || seen.len() < 2 {
            seen.push(ui.next_message(HV).await?.value()?);
        }
        assert!(seen.contains(&Value::Null), "{kind}: {seen:?}");
        assert_eq!(ui.wait_retained(HV).await?, json!(true), "{kind}");
        assert!(handle.stats().defended >= 1, "{kind}");
        // The bus layer's own subscriptions are not the plugin's: MicroDrop reads those.
        assert!(handle.subscriptions().is_empty(), "{kind}");
        drop(client);
    }
    Ok(())
}

#[tokio::test]
async fn a_guard_the_options_cannot_encode_is_an_error() {
    let mut o = BusOptions::new("guarded", "127.0.0.1", 1);
    o.max_payload = 8;
    o.guards = vec![Will {
        topic: HV.into(),
        value: json!("a value far too long for eight bytes"),
    }];
    assert!(matches!(
        BusClient::start(o).err(),
        Some(BusError::TooLarge { .. })
    ));
}
