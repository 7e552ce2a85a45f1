//! Telling stored state from live messages, whatever the broker does with the retain flag.
//!
//! mosquitto sets the retain flag on the stored messages it delivers at subscription; MicroDrop 3's
//! broker, mosca, clears it on every message. So every SUBSCRIBE we send is synced with a marker:
//! a retained message of our own on a fresh topic, stored (QoS 1, acknowledged) before the
//! SUBSCRIBE, and subscribed last in the same packet. Brokers deliver a SUBSCRIBE's stored
//! messages filter by filter, so the marker comes back after the stored messages of every other
//! filter of the packet: until it arrives, whatever arrives on those filters is stored state.
//!
//! Measured on mosca 2.8.3: a plain (not retained) probe published right after the SUBSCRIBE came
//! back *before* the stored messages in 19 of 20 trials (mosca looks them up asynchronously, in a
//! LevelUp read stream per filter), which is why the marker is itself a stored message; the
//! retained marker came back after them in 100 of 100 trials (20 or 200 stored messages, one of
//! 93 KB, a live message racing the subscription), but only once it was stored before the
//! SUBSCRIBE (published with QoS 0 right before it, it came back live, first). `tests/bus_stored.rs`
//! checks it on every run, on mosquitto and mosca, at subscription and after a reconnection. A live message that arrives inside the
//! window counts as stored too: the safe side for anything that would actuate. A marker that never
//! comes back closes the window after [`SYNC_TIMEOUT`], with a warning.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{QoS, SubscribeFilter};
use tokio::sync::oneshot;

use super::client::ConnectionState;
use super::shared::Shared;
use super::topics::filter_matches;

/// Topic prefix of sync markers and TCP acknowledgements: outside `microdrop/`, so no MicroDrop
/// client sees them; the poll task swallows them.
pub(crate) const SYNC_PREFIX: &str = "microdrop-bus-sync/";

/// Longest wait for the broker to acknowledge or return a marker.
pub(crate) const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the request queue may stay full before a step of a sync gives up.
const RETRY_FULL: Duration = Duration::from_millis(20);

/// The SUBSCRIBE whose stored messages are still coming.
struct Window {
    marker: String,
    filters: Vec<String>,
    arrived: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    window: Option<Window>,
    puback: Option<oneshot::Sender<()>>,
    waiters: Vec<oneshot::Sender<()>>,
}

/// The sync book: the open window, the marker's acknowledgement, callers of
/// [`BusHandle::sync`](super::BusHandle::sync) waiting for the next completed sync.
#[derive(Default)]
pub(crate) struct Syncs {
    state: Mutex<State>,
}

impl Syncs {
    fn state(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Whether a message on `topic` is stored state delivered at (re)subscription.
    pub(crate) fn in_window(&self, topic: &str) -> bool {
        self.state()
            .window
            .as_ref()
            .is_some_and(|w| w.filters.iter().any(|f| filter_matches(f, topic)))
    }

    /// The filters whose stored messages are being delivered, if a sync is open.
    pub(crate) fn window_filters(&self) -> Option<Vec<String>> {
        self.state().window.as_ref().map(|w| w.filters.clone())
    }

    /// A message on a `SYNC_PREFIX` topic came back: the marker of the open window ends it.
    pub(crate) fn marker_arrived(&self, topic: &str) {
        let mut state = self.state();
        if let Some(w) = state.window.as_mut().filter(|w| w.marker == topic) {
            if let Some(tx) = w.arrived.take() {
                let _ = tx.send(());
            }
        }
    }

    /// The broker acknowledged a QoS 1 publish (only markers are sent with QoS 1).
    pub(crate) fn puback(&self) {
        if let Some(tx) = self.state().puback.take() {
            let _ = tx.send(());
        }
    }

    /// A receiver that fires after the next completed sync.
    pub(crate) fn add_waiter(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.state().waiters.push(tx);
        rx
    }

    /// Whether anyone waits for a sync.
    pub(crate) fn has_waiters(&self) -> bool {
        !self.state().waiters.is_empty()
    }

    /// Fires (and forgets) every waiter registered so far.
    pub(crate) fn release_waiters(&self) {
        for tx in std::mem::take(&mut self.state().waiters) {
            let _ = tx.send(());
        }
    }

    fn expect_puback(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.state().puback = Some(tx);
        rx
    }

    fn open(&self, marker: &str, filters: &[String]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.state().window = Some(Window {
            marker: marker.to_owned(),
            filters: filters.to_vec(),
            arrived: Some(tx),
        });
        rx
    }

    fn close(&self) {
        let mut state = self.state();
        state.window = None;
        state.puback = None;
    }
}

/// How a synced SUBSCRIBE ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synced {
    /// The marker came back: everything stored for `filters` has been delivered.
    Done,
    /// The broker did not answer in time; the window is closed anyway (logged).
    TimedOut,
    /// The connection went away (or the client closed): do it again after the next ConnAck.
    Lost,
}

/// Subscribes to `filters` (none: only a sync) and waits until their stored messages have been
/// delivered. One at a time: only the resync task calls it.
pub(crate) async fn subscribe_synced(shared: &Shared, filters: &[String]) -> Synced {
    let marker = format!(
        "{SYNC_PREFIX}{}/{}",
        shared.header.plugin_name,
        uuid::Uuid::new_v4()
    );
    let outcome = run(shared, &marker, filters).await;
    shared.syncs.close();
    if outcome != Synced::Lost {
        // Not subscribed any more, so clearing it cannot come back to us.
        let _ = shared.client.try_unsubscribe(marker.as_str());
        let _ = shared
            .client
            .try_publish(marker.as_str(), QoS::AtMostOnce, true, Vec::new());
    }
    if outcome == Synced::TimedOut {
        tracing::warn!(
            timeout = ?SYNC_TIMEOUT,
            "the broker did not return our subscription marker: messages that follow count as live"
        );
    }
    outcome
}

async fn run(shared: &Shared, marker: &str, filters: &[String]) -> Synced {
    // 1. The marker is stored before we subscribe to it, so it can only come back as stored.
    let acked = shared.syncs.expect_puback();
    let store = || {
        shared
            .client
            .try_publish(marker, QoS::AtLeastOnce, true, b"{}".to_vec())
    };
    if !queue(shared, store).await {
        return Synced::Lost;
    }
    match wait(shared, acked).await {
        Synced::Done => {}
        other => return other,
    }
    // 2. One SUBSCRIBE, the marker last: it returns after every other filter's stored messages.
    let arrived = shared.syncs.open(marker, filters);
    let many: Vec<SubscribeFilter> = filters
        .iter()
        .map(String::as_str)
        .chain([marker])
        .map(|f| SubscribeFilter::new(f.to_owned(), QoS::AtMostOnce))
        .collect();
    if !queue(shared, || shared.client.try_subscribe_many(many.clone())).await {
        return Synced::Lost;
    }
    wait(shared, arrived).await
}

/// Queues a request, retrying while the queue is full. False if the connection went away.
async fn queue<E>(shared: &Shared, mut request: impl FnMut() -> Result<(), E>) -> bool {
    loop {
        if request().is_ok() {
            return true;
        }
        if !shared.is_connected() || shared.is_closed() {
            return false;
        }
        tokio::time::sleep(RETRY_FULL).await;
    }
}

/// Waits for `signal`, at most [`SYNC_TIMEOUT`], or until the connection is lost.
async fn wait(shared: &Shared, signal: oneshot::Receiver<()>) -> Synced {
    let mut state = shared.state.clone();
    let lost = state.wait_for(|s| !matches!(s, ConnectionState::Connected { .. }));
    tokio::select! {
        fired = signal => match fired {
            Ok(()) => Synced::Done,
            Err(_) => Synced::Lost,
        },
        _ = lost => Synced::Lost,
        () = tokio::time::sleep(SYNC_TIMEOUT) => Synced::TimedOut,
    }
}
