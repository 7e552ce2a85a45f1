//! The embedded rumqttd broker with real rumqttc clients over TCP (websockets: broker_websocket.rs).

use std::time::Duration;

use dropbot_plugin::broker::{BrokerOptions, EmbeddedBroker, DEFAULT_MAX_PACKET_SIZE};
use dropbot_plugin::device::MICRODROP3_DEFAULT_THREE_OBJECT;
use dropbot_testkit::embedded_broker;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
/// How long we listen to conclude that a message is NOT coming.
const QUIET: Duration = Duration::from_millis(700);

/// A broker on free ports (retrying if another test grabs a port in between).
fn start_broker(websocket: bool) -> EmbeddedBroker {
    embedded_broker(websocket).unwrap_or_else(|e| panic!("broker: {e}"))
}

/// A rumqttc client whose incoming packets arrive on `rx`.
struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

async fn connect(broker: &EmbeddedBroker, id: &str, will: Option<LastWill>) -> Client {
    let addr = broker.tcp_addr();
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    if let Some(will) = will {
        opts.set_last_will(will);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // Stops at the first error: these tests never want a reconnect.
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(p) = event {
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    let mut c = Client { client, rx, task };
    c.expect(|p| matches!(p, Packet::ConnAck(_))).await;
    c
}

impl Client {
    async fn expect(&mut self, wanted: impl Fn(&Packet) -> bool) -> Packet {
        let found = timeout(WAIT, async {
            while let Some(p) = self.rx.recv().await {
                if wanted(&p) {
                    return Some(p);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(p)) => p,
            Ok(None) => panic!("connection closed while waiting"),
            Err(_) => panic!("timed out waiting for a packet"),
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        self.expect(|p| matches!(p, Packet::SubAck(_))).await;
    }

    async fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }

    async fn next_publish(&mut self) -> Publish {
        match self.expect(|p| matches!(p, Packet::Publish(_))).await {
            Packet::Publish(p) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    /// A publish arriving within [`QUIET`], if any.
    async fn maybe_publish(&mut self) -> Option<Publish> {
        let got = timeout(QUIET, async {
            loop {
                match self.rx.recv().await {
                    Some(Packet::Publish(p)) => return Some(p),
                    Some(_) => continue,
                    None => return None,
                }
            }
        });
        got.await.ok().flatten()
    }

    async fn disconnect(mut self) {
        self.client
            .disconnect()
            .await
            .unwrap_or_else(|e| panic!("disconnect: {e}"));
        // The event loop ends with an error once the broker has the DISCONNECT.
        let _ = timeout(WAIT, &mut self.task).await;
    }
}

#[tokio::test]
async fn publish_reaches_subscriber() {
    let broker = start_broker(false);
    let mut sub = connect(&broker, "sub", None).await;
    sub.subscribe("microdrop/+/state/#", QoS::AtLeastOnce).await;
    let publisher = connect(&broker, "pub", None).await;
    publisher
        .publish("microdrop/dropbot/state/voltage", false, b"100 V".to_vec())
        .await;
    let p = sub.next_publish().await;
    assert_eq!(p.topic, "microdrop/dropbot/state/voltage");
    assert_eq!(&p.payload[..], b"100 V");
    assert!(!p.retain);
}

#[tokio::test]
async fn retained_device_file_reaches_late_subscriber_and_can_be_cleared() {
    let broker = start_broker(false);
    let topic = "microdrop/device-model/state/three-object";
    let device = MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec();
    assert!(device.len() > 90_000);
    let publisher = connect(&broker, "device-model", None).await;
    publisher.publish(topic, true, device.clone()).await;
    publisher.disconnect().await;

    let mut late = connect(&broker, "late-ui", None).await;
    late.subscribe("microdrop/#", QoS::AtMostOnce).await;
    let p = late.next_publish().await;
    assert_eq!(p.topic, topic);
    assert!(
        p.retain,
        "a retained message must arrive with the retain flag"
    );
    assert_eq!(p.payload.len(), device.len());
    assert!(p.payload[..] == device[..]);

    // An empty retained payload clears it: the next subscriber gets nothing.
    late.publish(topic, true, Vec::new()).await;
    let _echo = late.next_publish().await;
    let mut later = connect(&broker, "later-ui", None).await;
    later.subscribe("microdrop/#", QoS::AtMostOnce).await;
    assert!(later.maybe_publish().await.is_none());
}

#[tokio::test]
async fn many_retained_topics_reach_a_qos0_wildcard_subscriber() {
    let broker = start_broker(false);
    let publisher = connect(&broker, "many", None).await;
    for i in 0..300 {
        publisher
            .publish(&format!("many/state/{i}"), true, vec![1])
            .await;
    }
    publisher.disconnect().await;
    let mut sub = connect(&broker, "many-sub", None).await;
    sub.subscribe("many/#", QoS::AtMostOnce).await;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(p) = sub.maybe_publish().await {
        assert!(p.retain);
        seen.insert(p.topic);
    }
    assert_eq!(seen.len(), 300);
}

/// Fails with rumqttd 0.20 (the latest): a QoS 1 subscription receives only 100 of the 150
/// retained messages. router/iobufs.rs has `MAX_INFLIGHT = 100`; router/routing.rs truncates
/// the retained messages of a new subscription to the free inflight slots and never sends the
/// rest. MicroDrop subscribes with QoS 0 (previous test), which is not affected.
#[tokio::test]
#[ignore = "known rumqttd 0.20 defect: QoS 1 subscribers get at most 100 retained messages"]
async fn qos1_wildcard_subscriber_gets_all_retained_messages() {
    let broker = start_broker(false);
    let publisher = connect(&broker, "many1", None).await;
    for i in 0..150 {
        publisher
            .publish(&format!("many1/state/{i}"), true, vec![1])
            .await;
    }
    publisher.disconnect().await;
    let mut sub = connect(&broker, "many1-sub", None).await;
    sub.subscribe("many1/#", QoS::AtLeastOnce).await;
    let mut count = 0;
    while sub.maybe_publish().await.is_some() {
        count += 1;
    }
    assert_eq!(count, 150);
}

#[tokio::test]
async fn last_will_fires_when_socket_drops_but_not_on_disconnect() {
    let broker = start_broker(false);
    let mut watcher = connect(&broker, "watcher", None).await;
    watcher
        .subscribe("microdrop/dropbot/state/status", QoS::AtLeastOnce)
        .await;
    let will = || {
        LastWill::new(
            "microdrop/dropbot/state/status",
            "offline",
            QoS::AtLeastOnce,
            true,
        )
    };

    // Clean DISCONNECT: the will is discarded.
    connect(&broker, "polite", Some(will()))
        .await
        .disconnect()
        .await;
    assert!(
        watcher.maybe_publish().await.is_none(),
        "will fired on a clean DISCONNECT"
    );

    // Socket dropped (event loop gone, no DISCONNECT): the will is published.
    let crashing = connect(&broker, "crashing", Some(will())).await;
    crashing.task.abort();
    let _ = crashing.task.await;
    let p = watcher.next_publish().await;
    assert_eq!(&p.payload[..], b"offline");

    // It was retained: a client arriving later still learns the plugin is offline.
    let mut late = connect(&broker, "late", None).await;
    late.subscribe("microdrop/dropbot/state/status", QoS::AtMostOnce)
        .await;
    let p = late.next_publish().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"offline");
}

#[tokio::test]
async fn one_megabyte_payload_passes() {
    let broker = start_broker(false);
    let mut sub = connect(&broker, "big-sub", None).await;
    sub.subscribe("big", QoS::AtLeastOnce).await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let publisher = connect(&broker, "big-pub", None).await;
    publisher.publish("big", false, payload.clone()).await;
    let p = sub.next_publish().await;
    assert_eq!(p.payload.len(), payload.len());
    assert!(p.payload[..] == payload[..]);
}

#[tokio::test]
async fn second_broker_on_same_port_is_refused_with_a_hint() {
    let broker = start_broker(false);
    let again = EmbeddedBroker::start(BrokerOptions {
        tcp: broker.tcp_addr(),
        websocket: None,
        max_packet_size: DEFAULT_MAX_PACKET_SIZE,
    });
    let msg = again.err().map(|e| e.to_string()).unwrap_or_default();
    let expected = format!(
        "port {} is in use: is MicroDrop's broker already running? use --broker HOST:PORT",
        broker.tcp_addr().port()
    );
    assert_eq!(msg, expected);
    // The first broker is unaffected.
    connect(&broker, "still-there", None).await;
}

/// The plugin's bus client on the embedded broker (`demo`): its subscriptions sync (the
/// marker comes back), stored state is marked stored, and a live message is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_client_tells_stored_from_live_on_the_embedded_broker() {
    use dropbot_plugin::bus::{BusClient, BusOptions};
    let broker = start_broker(false);
    let addr = broker.tcp_addr();
    let mut publisher = connect(&broker, "publisher", None).await;
    let topic = "microdrop/electrodes-model/state/active-electrodes";
    publisher
        .client
        .publish(
            topic,
            QoS::AtLeastOnce,
            true,
            br#"["electrode030"]"#.to_vec(),
        )
        .await
        .unwrap();
    publisher.expect(|p| matches!(p, Packet::PubAck(_))).await;
    let mut bus = BusClient::start(BusOptions::new(
        "dropbot",
        addr.ip().to_string(),
        addr.port(),
    ))
    .unwrap();
    bus.wait_connected(WAIT).await.unwrap();
    let handle = bus.handle();
    handle.subscribe(topic).unwrap();
    handle.sync(WAIT).await.unwrap();
    let stored = timeout(WAIT, bus.recv()).await.unwrap().unwrap();
    assert!(stored.stored, "{stored:?}");
    publisher
        .client
        .publish(
            topic,
            QoS::AtMostOnce,
            false,
            br#"["electrode031"]"#.to_vec(),
        )
        .await
        .unwrap();
    let live = timeout(WAIT, bus.recv()).await.unwrap().unwrap();
    assert_eq!(live.payload.as_ref(), br#"["electrode031"]"#);
    assert!(!live.stored, "{live:?}");
}
