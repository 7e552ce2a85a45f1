//! Stored state and live messages told apart on the brokers users run (mosquitto with its
//! defaults, MicroDrop 3's mosca, which clears the retain flag on every message), at
//! subscription and after a reconnection; and every packet from the broker acknowledged.

use std::time::Duration;

use dropbot_plugin::bus::{BusClient, BusMessage};
use dropbot_plugin::device::MICRODROP3_DEFAULT_THREE_OBJECT;
use dropbot_testkit::{BrokerKind, TestBroker, TestClient};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const WAIT: Duration = Duration::from_secs(10);
const STATES: &str = "microdrop/electrodes-model/state/+";
const DEVICE: &str = "microdrop/device-model/state/three-object";
/// Enough stored messages that a broker looking them up asynchronously takes a while.
const STORED: usize = 60;

async fn recv(client: &mut BusClient) -> Result<BusMessage, BoxError> {
    Ok(tokio::time::timeout(WAIT, client.recv())
        .await?
        .ok_or("client closed")?)
}

/// A broker holding `STORED` retained states and MicroDrop's default device (93 KB).
async fn broker_with_state(kind: BrokerKind) -> Result<(TestBroker, TestClient), BoxError> {
    let broker = TestBroker::start(kind)?;
    let ui = TestClient::connect(broker.host(), broker.port()).await?;
    for i in 0..STORED {
        let topic = format!("microdrop/electrodes-model/state/k{i}");
        ui.publish_raw(&topic, format!("[{i}]").into_bytes(), true)
            .await?;
    }
    let device = MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec();
    ui.publish_raw(DEVICE, device, true).await?;
    ui.wait_retained(DEVICE).await?;
    ui.wait_retained(&format!("microdrop/electrodes-model/state/k{}", STORED - 1))
        .await?;
    Ok((broker, ui))
}

/// Receives the `STORED + 1` stored messages; each must be marked stored.
async fn expect_stored(client: &mut BusClient, kind: BrokerKind, when: &str) -> TestResult {
    for n in 0..=STORED {
        let m = recv(client).await?;
        assert!(
            m.stored,
            "{kind}, {when}: message {n} on {} arrived as live",
            m.topic
        );
        if kind == BrokerKind::Mosca {
            assert!(!m.retain, "mosca set the retain flag after all");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_state_is_told_from_live_messages_on_every_broker() -> TestResult {
    for kind in BrokerKind::ALL {
        let (mut broker, ui) = broker_with_state(kind).await?;
        let mut client = BusClient::start(broker.bus_options("dropbot"))?;
        client.wait_connected(WAIT).await?;
        let handle = client.handle();
        handle.subscribe_many(&[STATES, DEVICE])?;
        handle.sync(WAIT).await?;
        expect_stored(&mut client, kind, "at subscription").await?;

        ui.publish_raw(
            "microdrop/electrodes-model/state/k0",
            b"[100]".to_vec(),
            true,
        )
        .await?;
        let live = recv(&mut client).await?;
        assert_eq!(live.payload.as_ref(), b"[100]");
        assert!(
            !live.stored && !live.retain,
            "{kind}: a live message as stored"
        );

        if let Some(mosca) = broker.as_mosca() {
            // A network failure: the broker keeps its retained messages, we resubscribe.
            assert!(mosca.drop_clients()? >= 2);
            let mut state = handle.connection();
            tokio::time::timeout(
                WAIT,
                state.wait_for(|s| {
                    *s == dropbot_plugin::bus::ConnectionState::Connected { session: 2 }
                }),
            )
            .await??;
            handle.sync(WAIT).await?;
            expect_stored(&mut client, kind, "after a reconnection").await?;
        }

        // Every marker was cleared: nothing of ours stays stored on the broker.
        let mut ui = ui;
        ui.subscribe("microdrop-bus-sync/#").await?;
        let left: Vec<String> = ui
            .collect_for("microdrop-bus-sync/#", Duration::from_millis(200))
            .await?
            .into_iter()
            .filter(|m| !m.payload.is_empty())
            .map(|m| m.topic)
            .collect();
        assert!(
            left.is_empty(),
            "{kind}: markers left on the broker: {left:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_answers_is_acknowledged_all_the_same() -> TestResult {
    for kind in BrokerKind::ALL {
        let broker = TestBroker::start(kind)?;
        let ui = TestClient::connect(broker.host(), broker.port()).await?;
        let mut client = BusClient::start(broker.bus_options("dropbot"))?;
        client.wait_connected(WAIT).await?;
        let handle = client.handle();
        handle.subscribe(STATES)?;
        handle.sync(WAIT).await?;
        // Each message gets its own empty packet (a packet of the sync itself, such as the
        // UNSUBACK of its marker, can account for one at most).
        for i in 0..3 {
            let before = handle.stats().empty_acks;
            let payload = format!("[{i}]").into_bytes();
            ui.publish_raw("microdrop/electrodes-model/state/k1", payload, false)
                .await?;
            recv(&mut client).await?;
            // We publish nothing in answer: the bus sends an empty packet to carry the ACK.
            let deadline = tokio::time::Instant::now() + WAIT;
            while handle.stats().empty_acks == before {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{kind}: message {i} was not acknowledged"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_state_coming_back_is_not_handed_on_but_a_write_by_others_is() -> TestResult {
    for kind in BrokerKind::ALL {
        let broker = TestBroker::start(kind)?;
        let ui = TestClient::connect(broker.host(), broker.port()).await?;
        let mut client = BusClient::start(broker.bus_options("dropbot"))?;
        client.wait_connected(WAIT).await?;
        let handle = client.handle();
        handle.subscribe("microdrop/dropbot/state/#")?;
        handle.sync(WAIT).await?;
        handle.publish_state("voltage", &serde_json::json!(90))?;
        ui.wait_retained_where("microdrop/dropbot/state/voltage", |v| *v == 90)
            .await?;
        ui.publish_raw("microdrop/dropbot/state/voltage", b"91".to_vec(), true)
            .await?;
        let m = recv(&mut client).await?;
        assert_eq!(
            m.payload.as_ref(),
            b"91",
            "{kind}: our own 90 was handed on"
        );
    }
    Ok(())
}
