//! [`TestClient`]: an MQTT client that behaves like MicroDrop 3's client library, for tests.
//!
//! Requests (`put`, `trigger`) each use a fresh connection named `micropede-async-<uuid>-<uuid>`,
//! like `@micropede/client`'s async helper, and wait for the notify reply. Observation
//! (`next_message`, `collect_for`) uses one long-lived connection that resubscribes after a
//! broker restart; `wait_retained` asks the broker afresh each time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::session::{marker_topic, mqtt_options, poll_until, wrap};
use super::TestError;
use dropbot_plugin::bus::filter_matches;

/// Messages kept for later `next_message` calls before the oldest are dropped.
const BUFFER_LIMIT: usize = 10_000;

/// A message seen by a test client.
#[derive(Debug, Clone)]
pub struct TestMessage {
    /// Topic it arrived on.
    pub topic: String,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// Whether the broker sent it as a stored retained message.
    pub retain: bool,
}

impl TestMessage {
    /// The payload as JSON, `__head__` included.
    pub fn json(&self) -> Result<Value, TestError> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// The payload as JSON with the top-level `__head__` removed (what a reader uses).
    pub fn value(&self) -> Result<Value, TestError> {
        let mut v = self.json()?;
        if let Value::Object(map) = &mut v {
            map.remove("__head__");
        }
        Ok(v)
    }
}

enum Seen {
    Message(TestMessage),
    SubAck,
    PubAck,
}

/// An MQTT client for tests that talks like MicroDrop 3's UI.
pub struct TestClient {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) timeout: Duration,
    /// User name and password of every connection this client makes.
    pub(super) credentials: Option<(String, String)>,
    client: AsyncClient,
    seen: mpsc::UnboundedReceiver<Seen>,
    filters: Arc<Mutex<Vec<String>>>,
    buffer: VecDeque<TestMessage>,
    task: JoinHandle<()>,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestClient {
    /// Connects the observing client to `host:port` (waits for the ConnAck).
    pub async fn connect(host: &str, port: u16) -> Result<TestClient, TestError> {
        Self::connect_with(host, port, None).await
    }

    /// Like [`TestClient::connect`], as user `user` with `password`; every connection the
    /// client makes (requests, retained checks) logs in so.
    pub async fn connect_as(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
    ) -> Result<TestClient, TestError> {
        Self::connect_with(host, port, Some((user.to_owned(), password.to_owned()))).await
    }

    async fn connect_with(
        host: &str,
        port: u16,
        credentials: Option<(String, String)>,
    ) -> Result<TestClient, TestError> {
        let options = mqtt_options("test-observer", host, port, credentials.as_ref());
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let deadline = Instant::now() + Duration::from_secs(5);
        poll_until(&mut eventloop, deadline, "observer ConnAck", |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
        })
        .await?;
        let (tx, seen) = mpsc::unbounded_channel();
        let filters = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(observe(eventloop, client.clone(), filters.clone(), tx));
        Ok(TestClient {
            host: host.to_owned(),
            port,
            timeout: Duration::from_secs(5),
            credentials,
            client,
            seen,
            filters,
            buffer: VecDeque::new(),
            task,
        })
    }

    /// Sets how long every wait lasts (default 5 s, like MicroDrop's client).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Subscribes the observing client to `filter` and waits until the broker has delivered
    /// the messages it holds for it (they are kept for `next_message`). Works whatever the
    /// broker does with the retain flag: a retained marker of our own is subscribed right
    /// after `filter`, and comes back after `filter`'s stored messages.
    pub async fn subscribe(&mut self, filter: &str) -> Result<(), TestError> {
        if let Ok(mut f) = self.filters.lock() {
            if !f.iter().any(|x| x == filter) {
                f.push(filter.to_owned());
            }
        }
        let mqtt = |e: rumqttc::ClientError| TestError::Mqtt(e.to_string());
        let marker = marker_topic();
        let deadline = Instant::now() + self.timeout;
        self.client
            .publish(&marker, QoS::AtLeastOnce, true, b"marker".to_vec())
            .await
            .map_err(mqtt)?;
        // Stored before we subscribe to it, so it cannot come back live.
        loop {
            match self.recv(deadline, "PubAck").await? {
                Seen::PubAck => break,
                Seen::Message(m) => self.keep(m),
                Seen::SubAck => {}
            }
        }
        let filters = [filter, marker.as_str()]
            .map(|f| rumqttc::SubscribeFilter::new(f.to_owned(), QoS::AtMostOnce));
        self.client.subscribe_many(filters).await.map_err(mqtt)?;
        loop {
            match self.recv(deadline, "the marker").await? {
                Seen::Message(m) if m.topic == marker => break,
                Seen::Message(m) => self.keep(m),
                Seen::SubAck | Seen::PubAck => {}
            }
        }
        self.client.unsubscribe(&marker).await.map_err(mqtt)?;
        self.client
            .publish(&marker, QoS::AtMostOnce, true, Vec::new())
            .await
            .map_err(mqtt)
    }

    /// The next message on `filter` (subscribing first if needed), waiting at most the
    /// timeout. Messages on other topics are kept for later calls.
    pub async fn next_message(&mut self, filter: &str) -> Result<TestMessage, TestError> {
        self.ensure_subscribed(filter).await?;
        if let Some(pos) = self
            .buffer
            .iter()
            .position(|m| filter_matches(filter, &m.topic))
        {
            if let Some(m) = self.buffer.remove(pos) {
                return Ok(m);
            }
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Seen::Message(m) = self.recv(deadline, "a message").await? {
                if filter_matches(filter, &m.topic) {
                    return Ok(m);
                }
                self.keep(m);
            }
        }
    }

    /// Every message on `filter` during `window` (subscribing first if needed).
    pub async fn collect_for(
        &mut self,
        filter: &str,
        window: Duration,
    ) -> Result<Vec<TestMessage>, TestError> {
        self.ensure_subscribed(filter).await?;
        let mut out: Vec<TestMessage> = Vec::new();
        let mut rest = VecDeque::new();
        for m in self.buffer.drain(..) {
            if filter_matches(filter, &m.topic) {
                out.push(m);
            } else {
                rest.push_back(m);
            }
        }
        self.buffer = rest;
        let deadline = Instant::now() + window;
        loop {
            match self.recv(deadline, "").await {
                Ok(Seen::Message(m)) if filter_matches(filter, &m.topic) => out.push(m),
                Ok(Seen::Message(m)) => self.keep(m),
                Ok(Seen::SubAck | Seen::PubAck) => {}
                Err(TestError::Timeout(_)) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets every message received so far.
    pub fn clear(&mut self) {
        self.buffer.clear();
        while self.seen.try_recv().is_ok() {}
    }

    /// Publishes `value` as a MicroDrop plugin would (objects get a `__head__` naming
    /// `test-client`), from the observing connection.
    pub async fn publish(&self, topic: &str, value: &Value, retain: bool) -> Result<(), TestError> {
        let payload = match value {
            Value::Object(_) => wrap("", value, "test-client"),
            other => other.clone(),
        };
        self.publish_raw(topic, serde_json::to_vec(&payload)?, retain)
            .await
    }

    /// Publishes MicroDrop 3's default device, retained, as its device model does when it
    /// runs (the 93 KB `three-object`).
    pub async fn publish_default_device(&self) -> Result<(), TestError> {
        let device = dropbot_plugin::device::MICRODROP3_DEFAULT_THREE_OBJECT;
        self.publish_raw(super::DEVICE_TOPIC, device.as_bytes().to_vec(), true)
            .await
    }

    /// Publishes raw bytes (e.g. malformed JSON) from the observing connection.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), TestError> {
        self.client
            .publish(topic, QoS::AtMostOnce, retain, payload)
            .await
            .map_err(|e| TestError::Mqtt(e.to_string()))
    }

    async fn ensure_subscribed(&mut self, filter: &str) -> Result<(), TestError> {
        let known = self
            .filters
            .lock()
            .map(|f| f.iter().any(|x| x == filter))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        self.subscribe(filter).await
    }

    fn keep(&mut self, m: TestMessage) {
        if self.buffer.len() >= BUFFER_LIMIT {
            self.buffer.pop_front();
        }
        self.buffer.push_back(m);
    }

    async fn recv(&mut self, deadline: Instant, what: &str) -> Result<Seen, TestError> {
        match timeout_at(deadline, self.seen.recv()).await {
            Ok(Some(seen)) => Ok(seen),
            Ok(None) => Err(TestError::Mqtt("observer stopped".into())),
            Err(_) => Err(TestError::Timeout(what.to_owned())),
        }
    }
}

/// The observer's poll loop: forwards messages and SubAcks, resubscribes after reconnecting.
async fn observe(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filters: Arc<Mutex<Vec<String>>>,
    tx: mpsc::UnboundedSender<Seen>,
) {
    loop {
        let seen = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(TestMessage {
                topic: p.topic,
                payload: p.payload.to_vec(),
                retain: p.retain,
            }),
            Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
            Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let list = filters.lock().map(|f| f.clone()).unwrap_or_default();
                for f in list {
                    let _ = client.try_subscribe(f, QoS::AtMostOnce);
                }
                continue;
            }
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if tx.send(seen).is_err() {
            return;
        }
    }
}
