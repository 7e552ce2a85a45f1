//! [`BusClient`]: owner of the MQTT connection.
//!
//! rumqttc's `EventLoop::poll()` runs alone in its own task and forwards incoming publishes
//! over a channel bounded by count and by bytes, each marked stored or live (see the bus
//! layer's `sync` module) and checked against its topic's payload limit (see `limits`). After
//! an error it sleeps with exponential backoff and jitter (see `backoff`: reset only after a
//! stable session, so a broker that drops us right after each ConnAck is not hammered); on
//! every ConnAck the resync task restores subscriptions and our retained messages, because a
//! clean session loses both (and a restarted broker has no retained state). The ack task keeps
//! every packet from the broker acknowledged (see the `ack` module); the guards carry the wills
//! of more retained topics (see `guard`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::ack::{ack_task, acknowledge_now};
use super::backoff::Backoff;
use super::envelope::{encode, Envelope};
use super::error::BusError;
use super::guard::Guards;
use super::handle::BusHandle;
use super::limits::Budget;
use super::options::BusOptions;
use super::shared::{resync_task, Shared};
use super::sync::SYNC_PREFIX;
use super::topics::Topic;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not connected yet.
    Connecting,
    /// Connected; `session` counts connections from 1.
    Connected {
        /// Which connection this is (1 = first).
        session: u64,
    },
    /// The connection failed or broke; the client keeps retrying.
    Disconnected {
        /// Why, in words.
        reason: String,
    },
    /// The client has shut down.
    Closed,
}

/// One incoming message.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// Topic it was published on.
    pub topic: String,
    /// Raw payload.
    pub payload: bytes::Bytes,
    /// The retain flag as the broker set it (mosca clears it on every message).
    pub retain: bool,
    /// Whether it is stored state delivered at (re)subscription rather than a live message:
    /// the retain flag, or arrival before our subscription's marker (see the bus layer's `sync` module).
    /// This holds on every broker; `retain` does not.
    pub stored: bool,
    /// The payload's size when it was over its topic's limit (the payload is then empty).
    oversized: Option<usize>,
    /// The topic's payload limit.
    limit: usize,
    /// Its bytes in the incoming budget, given back when the last clone is dropped.
    _budget: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

impl BusMessage {
    /// The payload parsed as MicroDrop JSON, `__head__` stripped; a message that was over its
    /// topic's limit is [`BusError::Oversized`].
    pub fn envelope(&self) -> Result<Envelope, BusError> {
        if let Some(size) = self.oversized {
            return Err(self.oversized_error(size));
        }
        Envelope::decode(&self.payload, self.limit)
    }

    /// Whether it was over its topic's payload limit (then dropped, and the payload is empty).
    pub fn is_oversized(&self) -> bool {
        self.oversized.is_some()
    }

    fn oversized_error(&self, size: usize) -> BusError {
        BusError::Oversized {
            topic: self.topic.clone(),
            size,
            limit: self.limit,
        }
    }

    /// The topic parsed with MicroDrop's grammar.
    pub fn parsed_topic(&self) -> Result<Topic, BusError> {
        self.topic.parse()
    }
}

/// A message to publish on the way out, before DISCONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Farewell {
    /// Topic.
    pub topic: String,
    /// Value (objects get our `__head__`).
    pub value: Value,
    /// Whether it is retained.
    pub retain: bool,
}

/// Owner of the MQTT connection: runs the poll and resync tasks, receives messages.
/// Dropping it aborts both tasks without DISCONNECT, so the broker fires our will.
pub struct BusClient {
    handle: BusHandle,
    messages: mpsc::Receiver<BusMessage>,
    poll_task: JoinHandle<()>,
    resync_task: JoinHandle<()>,
    ack_task: JoinHandle<()>,
    guards: Guards,
}

impl BusClient {
    /// Starts connecting in the background (returns at once; call inside a tokio runtime).
    pub fn start(options: BusOptions) -> Result<BusClient, BusError> {
        let mqtt = options.to_mqtt()?;
        let (client, mut eventloop) = AsyncClient::new(mqtt, options.request_capacity);
        // rumqttc writes each request on its own: with Nagle on, a reply queued right after a
        // state publish waits for the broker's delayed ACK (~40 ms on loopback).
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (msg_tx, messages) = mpsc::channel(options.incoming_capacity);
        let guards = Guards::spawn(&options)?;
        let shared = Arc::new(Shared::new(client, &options, state_rx, guards.watch()));
        let guarded: Vec<&str> = options.guards.iter().map(|w| w.topic.as_str()).collect();
        if !guarded.is_empty() {
            shared.subscribe_hidden(&guarded)?;
        }
        let incoming = Incoming {
            tx: msg_tx,
            budget: Budget::new(options.incoming_bytes),
        };
        let poll_task = tokio::spawn(poll_task(eventloop, shared.clone(), incoming, state_tx));
        let resync_task = tokio::spawn(resync_task(shared.clone()));
        let ack_task = tokio::spawn(ack_task(shared.clone()));
        Ok(BusClient {
            handle: BusHandle { shared },
            messages,
            poll_task,
            resync_task,
            ack_task,
            guards,
        })
    }

    /// A handle for publishing from other tasks.
    pub fn handle(&self) -> BusHandle {
        self.handle.clone()
    }

    /// The next incoming message; `None` once the client has shut down.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.messages.recv().await
    }

    /// The incoming channel itself, e.g. for `select!` (its `recv` is cancel-safe).
    pub fn messages(&mut self) -> &mut mpsc::Receiver<BusMessage> {
        &mut self.messages
    }

    /// Waits until connected, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), BusError> {
        let mut state = self.handle.connection();
        let wait = state.wait_for(|s| matches!(s, ConnectionState::Connected { .. }));
        let outcome = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BusError::Closed),
            Err(_) => Err(BusError::Timeout(timeout, "the broker's ConnAck")),
        };
        outcome
    }

    /// Publishes `farewell` (e.g. a retained offline status), sends DISCONNECT (on the guards'
    /// connections too) and waits until they are written to the socket, at most `timeout`.
    /// The broker then fires none of our wills. On timeout (e.g. broker down) the tasks are
    /// aborted anyway.
    pub async fn disconnect(
        mut self,
        farewell: &[Farewell],
        timeout: Duration,
    ) -> Result<(), BusError> {
        let deadline = Instant::now() + timeout;
        let result = self.say_goodbye(farewell, deadline, timeout).await;
        self.guards.disconnect(deadline).await;
        self.handle.shared.closed.store(true, Ordering::Release);
        self.handle.shared.kick.notify_one();
        self.ack_task.abort();
        result
    }

    async fn say_goodbye(
        &self,
        farewell: &[Farewell],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), BusError> {
        let shared = &self.handle.shared;
        let too_late = |_| BusError::Timeout(timeout, "a graceful disconnect");
        for f in farewell {
            let payload = encode(&f.value, &shared.header, shared.max_payload)?;
            if f.retain {
                shared.record_retained(&f.topic, &payload);
            }
            // `publish().await` waits for room in the queue, which the poll task drains.
            let queued = shared
                .client
                .publish(f.topic.clone(), QoS::AtMostOnce, f.retain, payload);
            timeout_at(deadline, queued)
                .await
                .map_err(too_late)?
                .map_err(|_| BusError::Closed)?;
        }
        timeout_at(deadline, shared.client.disconnect())
            .await
            .map_err(too_late)?
            .map_err(|_| BusError::Closed)?;
        // The poll task ends (state `Closed`) once DISCONNECT is flushed to the socket.
        let mut state = shared.state.clone();
        let closed = state.wait_for(|s| *s == ConnectionState::Closed);
        // An error here means the poll task is gone already, which is just as closed.
        let _ = timeout_at(deadline, closed).await.map_err(too_late)?;
        Ok(())
    }
}

impl Drop for BusClient {
    fn drop(&mut self) {
        self.handle.shared.closed.store(true, Ordering::Release);
        self.poll_task.abort();
        self.resync_task.abort();
        self.ack_task.abort();
    }
}

/// Where incoming messages go: the channel, and the byte budget they take there.
struct Incoming {
    tx: mpsc::Sender<BusMessage>,
    budget: Budget,
}

impl Incoming {
    /// Hands a publish on (stored or live, within its topic's limit or not). Waits while the
    /// receiver is behind (back-pressure).
    async fn forward(&self, shared: &Shared, p: rumqttc::Publish) {
        let stored = p.retain || shared.syncs.in_window(&p.topic);
        let limit = shared.limits.for_topic(&p.topic);
        let size = p.payload.len();
        let oversized = (size > limit).then_some(size);
        if oversized.is_some() {
            shared.reject(&p.topic, size, limit);
        }
        let budget = match oversized {
            Some(_) => None,
            None => self.budget.take(size).await,
        };
        let msg = BusMessage {
            topic: p.topic,
            payload: if oversized.is_some() {
                bytes::Bytes::new()
            } else {
                p.payload
            },
            retain: p.retain,
            stored,
            oversized,
            limit,
            _budget: budget,
        };
        // Fails only when the `BusClient` is gone, and then this task is being aborted anyway.
        let _ = self.tx.send(msg).await;
    }
}

/// Runs `poll()` alone, forever: forwards publishes, reports the connection, backs off after
/// errors. Ends when our DISCONNECT has been written.
async fn poll_task(
    mut eventloop: EventLoop,
    shared: Arc<Shared>,
    incoming: Incoming,
    state: watch::Sender<ConnectionState>,
) {
    let mut backoff = Backoff::new();
    let mut connected_at: Option<Instant> = None;
    loop {
        if connected_at.is_none() {
            shared
                .counters
                .connection_attempts
                .fetch_add(1, Ordering::Relaxed);
        }
        let event = eventloop.poll().await;
        match &event {
            Ok(Event::Incoming(_)) => shared.acks.received(),
            Ok(Event::Outgoing(out)) => {
                shared.acks.sent();
                if matches!(out, Outgoing::Publish(_)) {
                    shared.acks.written();
                }
            }
            Err(_) => {}
        }
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                let session = shared.counters.connections.fetch_add(1, Ordering::Relaxed) + 1;
                shared.connected.store(true, Ordering::Release);
                shared.resync_all.store(true, Ordering::Release);
                // The state first: the resync task's waits end when it stops being Connected.
                state.send_replace(ConnectionState::Connected { session });
                shared.kick.notify_one();
                tracing::info!(session, "connected to the MQTT broker");
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => shared.syncs.puback(),
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with(SYNC_PREFIX) => {
                shared.syncs.marker_arrived(&p.topic);
            }
            Ok(Event::Incoming(Packet::Publish(p)))
                if shared.take_own_echo(&p.topic, &p.payload) =>
            {
                acknowledge_now(&shared);
            }
            // Someone else's value on a topic one of our wills guards: ours goes back.
            Ok(Event::Incoming(Packet::Publish(p))) if shared.defend(&p.topic) => {}
            Ok(Event::Incoming(Packet::Publish(p))) => incoming.forward(&shared, p).await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                drain(&mut eventloop).await;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let reason = describe_error(&e, &shared);
                let session = connected_at.take().map(|t| t.elapsed());
                if session.is_some() {
                    tracing::warn!(%reason, "MQTT connection lost");
                } else {
                    tracing::debug!(%reason, "MQTT connection attempt failed");
                }
                shared.connected.store(false, Ordering::Release);
                state.send_if_modified(|s| {
                    let changed =
                        !matches!(s, ConnectionState::Disconnected { reason: r } if *r == reason);
                    if changed {
                        *s = ConnectionState::Disconnected {
                            reason: reason.clone(),
                        };
                    }
                    changed
                });
                tokio::time::sleep(backoff.after_error(session)).await;
            }
        }
    }
    shared.connected.store(false, Ordering::Release);
    shared.closed.store(true, Ordering::Release);
    state.send_replace(ConnectionState::Closed);
}

/// After our DISCONNECT: reads (and drops) whatever the broker still sends until it closes the
/// connection. Closing it ourselves with unread data (our own retained messages coming back)
/// would send a TCP reset, and a reset makes the broker discard what it has not read yet: the
/// farewell messages and the DISCONNECT itself (the will would fire).
pub(crate) async fn drain(eventloop: &mut EventLoop) {
    let closed = async {
        // The first error is the broker closing the connection; polling again would reconnect.
        while eventloop.poll().await.is_ok() {}
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, closed).await;
}

/// Longest wait for the broker to close the connection after our DISCONNECT.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the connection failed, in words. A packet over `max_packet_size` makes rumqttc drop the
/// connection without naming its topic: the subscription it came after is named instead.
fn describe_error(e: &rumqttc::ConnectionError, shared: &Shared) -> String {
    use rumqttc::mqttbytes::Error as Mqtt;
    use rumqttc::{ConnectionError, StateError};
    let ConnectionError::MqttState(StateError::Deserialization(Mqtt::PayloadSizeLimitExceeded(
        size,
    ))) = e
    else {
        return e.to_string();
    };
    let context = match shared.syncs.window_filters() {
        Some(filters) => format!(
            "a message stored on one of the topics {} (delivered at subscription: it will come \
             again at every reconnection)",
            filters.join(", ")
        ),
        None => "a live message".to_owned(),
    };
    let reason = format!(
        "the broker sent a packet of {size} bytes, over max_packet_size ({} bytes): {context}; \
         raise bus.max_packet_size or lower the broker's own limit",
        shared.max_packet
    );
    tracing::error!("{reason}");
    reason
}
