//! [`BusHandle`]: the cloneable, never-blocking publishing side of the connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::client::ConnectionState;
use super::envelope::{encode, reply_body, Envelope, Header, ReplyStatus};
use super::error::BusError;
use super::router::Router;
use super::shared::Shared;
use super::topics::Topic;

/// Bytes an MQTT PUBLISH adds around topic and payload (fixed header + topic length), at most.
const PUBLISH_OVERHEAD: usize = 7;

/// Counters describing the connection's life, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Connection attempts made (each `poll()` while not connected).
    pub connection_attempts: u64,
    /// Successful connections (ConnAcks received).
    pub connections: u64,
    /// Outgoing messages dropped because the request queue was full.
    pub dropped_outgoing: u64,
    /// Empty packets sent only to acknowledge a packet from the broker that nothing else
    /// answered (see the bus layer's `ack` module).
    pub empty_acks: u64,
    /// Incoming messages dropped for being over their topic's payload limit.
    pub oversized: u64,
    /// Times someone else's value on a guarded retained topic was replaced by ours.
    pub defended: u64,
    /// Will connections (guards) up now.
    pub guards_connected: u64,
}

/// Cloneable handle for publishing and subscribing from any task. Never blocks: when the
/// request queue is full (broker down for a while), plain messages are dropped and counted,
/// while retained messages and subscriptions are kept and sent when there is room again.
#[derive(Clone)]
pub struct BusHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BusHandle {
    /// Our plugin name (first part of the client id, sender in our topics).
    pub fn name(&self) -> &str {
        &self.shared.header.plugin_name
    }

    /// The `__head__` put in our object payloads.
    pub fn header(&self) -> &Header {
        &self.shared.header
    }

    /// Largest payload accepted when decoding incoming messages.
    pub fn max_payload(&self) -> usize {
        self.shared.max_payload
    }

    /// Publishes `value` as JSON (objects get our `__head__`) with QoS 0.
    pub fn publish_json(&self, topic: &str, value: &Value, retain: bool) -> Result<(), BusError> {
        let payload = encode(value, &self.shared.header, self.shared.max_payload)?;
        self.publish_bytes(topic, payload, retain)
    }

    /// Publishes a raw payload with QoS 0. A retained empty payload clears the retained value.
    pub fn publish_bytes(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), BusError> {
        self.checked_size(topic, &payload)?;
        if retain {
            return self.shared.publish_retained(topic, payload);
        }
        self.shared
            .try_publish(topic, false, payload)
            .map_err(|_| self.shared.dropped(topic))
    }

    /// A topic we may publish on, and a packet rumqttc will send: it would drop the whole
    /// connection over an oversized one.
    fn checked_size(&self, topic: &str, payload: &[u8]) -> Result<(), BusError> {
        check_publish_topic(topic)?;
        let size = topic.len() + payload.len() + PUBLISH_OVERHEAD;
        match size > self.shared.max_packet {
            true => Err(BusError::TooLarge {
                size,
                limit: self.shared.max_packet,
            }),
            false => Ok(()),
        }
    }

    /// Publishes `value` as a retained message once: unlike [`publish_json`](Self::publish_json)
    /// with `retain`, it is not restored after a reconnection. For state another client owns
    /// (MicroDrop's models), where restoring our old copy later would undo newer news.
    pub fn publish_retained_once(&self, topic: &str, value: &Value) -> Result<(), BusError> {
        let payload = encode(value, &self.shared.header, self.shared.max_payload)?;
        self.checked_size(topic, &payload)?;
        self.shared
            .try_publish(topic, true, payload)
            .map_err(|_| self.shared.dropped(topic))
    }

    /// Clears a retained value we published (an empty retained payload).
    pub fn clear_retained(&self, topic: &str) -> Result<(), BusError> {
        self.publish_bytes(topic, Vec::new(), true)
    }

    /// Retained `microdrop/<self>/state/<property>`.
    pub fn publish_state(&self, property: &str, value: &Value) -> Result<(), BusError> {
        let topic = Topic::state(self.name(), property)?;
        self.publish_json(&topic.to_string(), value, true)
    }

    /// `microdrop/<self>/error/<property>` (not retained).
    pub fn publish_error(&self, property: &str, value: &Value) -> Result<(), BusError> {
        let topic = Topic::error(self.name(), property)?;
        self.publish_json(&topic.to_string(), value, false)
    }

    /// `microdrop/<self>/signal/<topic>` (not retained).
    pub fn signal(&self, topic: &str, value: &Value) -> Result<(), BusError> {
        let topic = Topic::signal(self.name(), topic)?;
        self.publish_json(&topic.to_string(), value, false)
    }

    /// `microdrop/status/<self>` (not retained).
    pub fn status(&self, value: &Value) -> Result<(), BusError> {
        let topic = Topic::status(self.name())?;
        self.publish_json(&topic.to_string(), value, false)
    }

    /// Notify reply `{"status", "response"}` to `microdrop/<self>/notify/<receiver>/<topic>`.
    /// Never dropped for a full queue, unlike other plain messages: its asker waits for it, so
    /// it waits, in order, for room (bounded; see `Shared::publish_answer`).
    pub fn notify(
        &self,
        receiver: &str,
        topic: &str,
        status: ReplyStatus,
        response: Value,
    ) -> Result<(), BusError> {
        let topic = Topic::notify(self.name(), receiver, topic)?.to_string();
        let body = reply_body(status, response);
        let payload = encode(&body, &self.shared.header, self.shared.max_payload)?;
        self.checked_size(&topic, &payload)?;
        self.shared.publish_answer(&topic, payload)
    }

    /// Answers `request` (a put or trigger about `topic`) if it asked for a reply.
    /// Returns whether a reply was sent.
    pub fn reply(
        &self,
        request: &Envelope,
        topic: &str,
        status: ReplyStatus,
        response: Value,
    ) -> Result<bool, BusError> {
        match request.reply_to() {
            Some(receiver) => self
                .notify(receiver, topic, status, response)
                .map(|()| true),
            None => Ok(false),
        }
    }

    /// Subscribes to `filter` (QoS 0), now and after every reconnection. Messages it holds
    /// stored arrive with [`BusMessage::stored`](super::BusMessage::stored) set. Our own retained
    /// messages coming back are not handed on (each once; the same value written by someone
    /// else is).
    pub fn subscribe(&self, filter: &str) -> Result<(), BusError> {
        self.subscribe_many(&[filter])
    }

    /// Subscribes to all `filters` in one SUBSCRIBE (see [`BusHandle::subscribe`]).
    pub fn subscribe_many(&self, filters: &[&str]) -> Result<(), BusError> {
        if let Some(bad) = filters
            .iter()
            .find(|f| !rumqttc::valid_filter(f) || f.contains('\0'))
        {
            return Err(BusError::Topic {
                topic: (*bad).to_owned(),
                reason: "not a valid MQTT filter",
            });
        }
        self.shared.subscribe(filters)
    }

    /// Subscribes to every filter of `router`, in one SUBSCRIBE.
    pub fn subscribe_router<K>(&self, router: &Router<K>) -> Result<(), BusError> {
        let filters = router.filters();
        let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
        self.subscribe_many(&filters)
    }

    /// Every filter subscribed so far, in order.
    pub fn subscriptions(&self) -> Vec<String> {
        self.shared.filters()
    }

    /// Waits until every subscription so far, also those restored after a reconnection, is in
    /// place and its stored messages have been delivered, and (on brokers that handle a
    /// client's packets in order, such as mosquitto) everything queued before this call has
    /// been processed; at most `timeout`. Works with a retained marker of our own (see the bus
    /// layer's `sync` module).
    pub async fn sync(&self, timeout: Duration) -> Result<(), BusError> {
        let deadline = Instant::now() + timeout;
        let too_late = |_| BusError::Timeout(timeout, "the broker to process our requests");
        let shared = &self.shared;
        // First the restore after the current connection's ConnAck must be queued.
        let mut resynced = shared.resynced.subscribe();
        let ready = resynced.wait_for(|&done| {
            shared.is_connected() && done >= shared.counters.connections.load(Ordering::Acquire)
        });
        timeout_at(deadline, ready)
            .await
            .map_err(too_late)?
            .map_err(|_| BusError::Closed)?;
        let synced = shared.syncs.add_waiter();
        shared.kick.notify_one();
        timeout_at(deadline, synced)
            .await
            .map_err(too_late)?
            .map_err(|_| BusError::Closed)
    }

    /// Whether the client is connected to the broker right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Watch the connection state (see [`ConnectionState`]).
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }

    /// Everything received so far has been handled and nothing is in flight: if the broker's
    /// last packet is still unanswered at the TCP level, acknowledge it now instead of after
    /// the grace (see `bus/ack.rs`: the broker may hold its next packet until then).
    pub fn settled(&self) {
        self.shared.acks.settled();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        let c = &self.shared.counters;
        BusStats {
            connection_attempts: c.connection_attempts.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            dropped_outgoing: c.dropped_outgoing.load(Ordering::Relaxed),
            empty_acks: self.shared.acks.sent_empty(),
            oversized: c.oversized.load(Ordering::Relaxed),
            defended: c.defended.load(Ordering::Relaxed),
            guards_connected: self.shared.guards.connected() as u64,
        }
    }

    /// The latest incoming message dropped for being over its topic's payload limit.
    pub fn rejected(&self) -> Option<super::Rejected> {
        self.shared.rejected()
    }
}

/// U+FDD0 to U+FDEF and the last two code points of every plane.
fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// Longest topic MQTT can carry (a 16-bit length): rumqttc would send a longer one anyway and
/// the broker would drop the connection over the malformed packet.
const MAX_TOPIC_LEN: usize = 65_535;

fn check_publish_topic(topic: &str) -> Result<(), BusError> {
    let reason = if topic.is_empty() {
        "empty topic"
    } else if topic.len() > MAX_TOPIC_LEN {
        // The topic comes from a sender's name: only its start goes into the error.
        let start: String = topic.chars().take(120).collect();
        return Err(BusError::Topic {
            topic: format!("{start}... ({} bytes)", topic.len()),
            reason: "a topic is at most 65535 bytes in MQTT",
        });
    } else if topic.contains(['+', '#', '\0']) {
        "wildcards and NUL are not allowed in a topic to publish to"
    } else if topic.chars().any(|c| c.is_control() || is_noncharacter(c)) {
        // MQTT 3.1.1 section 1.5.3: mosquitto drops a client that sends one.
        "control characters and Unicode non-characters are not allowed in a topic"
    } else {
        return Ok(());
    };
    Err(BusError::Topic {
        topic: topic.to_owned(),
        reason,
    })
}
