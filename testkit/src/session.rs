//! One-shot MQTT sessions of [`TestClient`], like `@micropede/client`'s async helper: puts and
//! triggers from a fresh `micropede-async-<uuid>-<uuid>` client waiting for the notify reply,
//! and retained-state queries on a fresh connection.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Map, Value};
use tokio::time::{timeout_at, Instant};

use super::client::{TestClient, TestMessage};
use super::TestError;
use dropbot_plugin::bus::BusOptions;

/// Largest packet the test clients send or accept.
pub(super) const MAX_PACKET: usize = 64 * 1024 * 1024;
/// Version the async helper puts in `__head__.version`.
const MICROPEDE_VERSION: &str = "0.0.39";

/// A notify reply to a put or trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// `"success"` or `"failed"`.
    pub status: String,
    /// The `response` field.
    pub response: Value,
    /// The reply's `__head__`.
    pub head: Value,
    /// The topic the reply came on.
    pub topic: String,
}

impl Reply {
    /// Whether `status` is `"success"`.
    pub fn is_success(&self) -> bool {
        self.status == "success"
    }
}

pub(super) fn mqtt_options(
    name: &str,
    host: &str,
    port: u16,
    credentials: Option<&(String, String)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(BusOptions::client_id(name), host, port);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_keep_alive(Duration::from_secs(60))
        .set_request_channel_capacity(64);
    if let Some((user, password)) = credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    o
}

/// A fresh topic for a retained marker: subscribed right after other filters, its stored value
/// comes back after theirs on mosquitto and on mosca alike (which clears the retain flag).
pub(super) fn marker_topic() -> String {
    format!("dropbot-test-sync/{}", uuid::Uuid::new_v4())
}

/// A name like the async helper's: `micropede-async-<uuid>-<uuid>`.
pub fn async_client_name() -> String {
    format!(
        "micropede-async-{}-{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    )
}

/// MicroDrop's wrapping: objects as they are, other values under `key`; then `__head__`.
pub(super) fn wrap(key: &str, value: &Value, name: &str) -> Value {
    let mut map = match value {
        Value::Object(m) => m.clone(),
        other => {
            let mut m = Map::new();
            m.insert(key.to_owned(), other.clone());
            m
        }
    };
    map.insert(
        "__head__".into(),
        json!({"plugin_name": name, "version": MICROPEDE_VERSION}),
    );
    Value::Object(map)
}

/// Polls a short-lived connection until `want` picks an event, or the deadline.
pub(super) async fn poll_until<T>(
    eventloop: &mut EventLoop,
    deadline: Instant,
    what: &'static str,
    mut want: impl FnMut(&Event) -> Option<T>,
) -> Result<T, TestError> {
    loop {
        let event = timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| TestError::Timeout(what.into()))?
            .map_err(|e| TestError::Mqtt(format!("{what}: {e}")))?;
        if let Some(found) = want(&event) {
            return Ok(found);
        }
    }
}

impl TestClient {
    /// The retained message on `topic` right now, asking the broker on a fresh connection
    /// (at most `wait`, or the client's timeout if longer). `None` if nothing is retained.
    /// Works whatever the broker does with the retain flag (mosca clears it): a retained
    /// marker subscribed right after `topic` comes back after `topic`'s stored message.
    pub async fn retained(
        &self,
        topic: &str,
        wait: Duration,
    ) -> Result<Option<TestMessage>, TestError> {
        let (client, mut eventloop) = AsyncClient::new(
            mqtt_options(
                "test-retained",
                &self.host,
                self.port,
                self.credentials.as_ref(),
            ),
            8,
        );
        let deadline = Instant::now() + self.timeout.max(wait);
        let mqtt = |e: rumqttc::ClientError| TestError::Mqtt(e.to_string());
        poll_until(&mut eventloop, deadline, "ConnAck", |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
        })
        .await?;
        let marker = marker_topic();
        client
            .try_publish(&marker, QoS::AtLeastOnce, true, b"marker".to_vec())
            .map_err(mqtt)?;
        poll_until(&mut eventloop, deadline, "PubAck", |e| {
            matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
        })
        .await?;
        let filters = [topic, marker.as_str()]
            .map(|f| rumqttc::SubscribeFilter::new(f.to_owned(), QoS::AtMostOnce));
        client.try_subscribe_many(filters).map_err(mqtt)?;
        let mut found = None;
        poll_until(&mut eventloop, deadline, "the marker", |e| match e {
            Event::Incoming(Packet::Publish(p)) if p.topic == marker => Some(()),
            Event::Incoming(Packet::Publish(p)) if p.topic == topic => {
                found = Some(TestMessage {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                });
                None
            }
            _ => None,
        })
        .await?;
        let _ = client.try_publish(&marker, QoS::AtMostOnce, true, Vec::new());
        let _ = client.try_disconnect();
        // Flush the clear and the DISCONNECT (the broker closes the connection after it).
        let _ = poll_until(&mut eventloop, deadline, "DISCONNECT", |e| {
            matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect)).then_some(())
        })
        .await;
        Ok(found.filter(|m| !m.payload.is_empty()))
    }

    /// Waits (up to the timeout) until the broker holds a retained value on `topic` whose
    /// value (without `__head__`) satisfies `accept`; returns that value.
    pub async fn wait_retained_where(
        &self,
        topic: &str,
        mut accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value, TestError> {
        let deadline = Instant::now() + self.timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(Some(m)) = self.retained(topic, Duration::from_millis(200)).await {
                let value = m.value()?;
                if accept(&value) {
                    return Ok(value);
                }
                last = Some(value);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(TestError::Timeout(format!(
            "retained value on {topic} (last seen: {last:?})"
        )))
    }

    /// Waits (up to the timeout) until the broker holds any retained value on `topic`.
    pub async fn wait_retained(&self, topic: &str) -> Result<Value, TestError> {
        self.wait_retained_where(topic, |_| true).await
    }

    /// A put as MicroDrop's UI sends it (`{"<property>": value}` for non-objects), waiting
    /// for the notify reply.
    pub async fn put(
        &self,
        receiver: &str,
        property: &str,
        value: &Value,
    ) -> Result<Reply, TestError> {
        let name = async_client_name();
        let payload = wrap(property, value, &name);
        let topic = format!("microdrop/put/{receiver}/{property}");
        self.request(&name, &topic, receiver, property, &payload)
            .await
    }

    /// A trigger as MicroDrop's UI sends it (`{"data": value}` for non-objects), waiting for
    /// the notify reply.
    pub async fn trigger(
        &self,
        receiver: &str,
        action: &str,
        value: &Value,
    ) -> Result<Reply, TestError> {
        let name = async_client_name();
        let payload = wrap("data", value, &name);
        let topic = format!("microdrop/trigger/{receiver}/{action}");
        self.request(&name, &topic, receiver, action, &payload)
            .await
    }

    async fn request(
        &self,
        name: &str,
        topic: &str,
        receiver: &str,
        about: &str,
        payload: &Value,
    ) -> Result<Reply, TestError> {
        let reply_topic = format!("microdrop/{receiver}/notify/{name}/{about}");
        let (client, mut eventloop) = AsyncClient::new(
            mqtt_options(name, &self.host, self.port, self.credentials.as_ref()),
            8,
        );
        let deadline = Instant::now() + self.timeout;
        let mqtt = |e: rumqttc::ClientError| TestError::Mqtt(e.to_string());
        poll_until(&mut eventloop, deadline, "ConnAck", |e| {
            matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
        })
        .await?;
        client
            .try_subscribe(&reply_topic, QoS::AtMostOnce)
            .map_err(mqtt)?;
        poll_until(&mut eventloop, deadline, "SubAck", |e| {
            matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
        })
        .await?;
        client
            .try_publish(topic, QoS::AtMostOnce, false, serde_json::to_vec(payload)?)
            .map_err(mqtt)?;
        let what = "the notify reply";
        let bytes = poll_until(&mut eventloop, deadline, what, |e| match e {
            Event::Incoming(Packet::Publish(p)) if p.topic == reply_topic => {
                Some(p.payload.clone())
            }
            _ => None,
        })
        .await?;
        let _ = client.try_disconnect();
        let mut v: Value = serde_json::from_slice(&bytes)?;
        let field = |v: &mut Value, k: &str| v.as_object_mut().and_then(|m| m.remove(k));
        Ok(Reply {
            status: field(&mut v, "status")
                .and_then(|s| s.as_str().map(str::to_owned))
                .unwrap_or_default(),
            response: field(&mut v, "response").unwrap_or(Value::Null),
            head: field(&mut v, "__head__").unwrap_or(Value::Null),
            topic: reply_topic,
        })
    }
}
