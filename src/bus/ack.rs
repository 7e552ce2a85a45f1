//! Never leaving the broker's last packet unanswered at the TCP level.
//!
//! A broker with Nagle's algorithm on (mosquitto's default) holds a packet for us while an earlier
//! one is not acknowledged, and Linux delays the ACK of a packet we do not answer (~40 ms on
//! loopback). So a message the plugin does not reply to (a state update that changes nothing, a
//! SUBACK, a PINGRESP) would hold up the next message for 40 ms. Every packet we send carries the
//! ACK; when nothing has been sent [`ACK_GRACE`] after a packet came in, this task sends the
//! smallest packet that needs no answer: an empty QoS 0 PUBLISH on a topic nobody subscribes to.
//! Our own retained messages coming back (we subscribe to some of our own state topics) are
//! acknowledged at once and not handed on: nothing will answer them, and the broker's next
//! packet (often the next request) follows them closely. Likewise, when the plugin has done
//! with everything it received and has nothing in flight ([`Acks::settled`]: a step's update
//! that changed nothing, say), the empty packet goes at once rather than after the grace: the
//! broker's next packet (the step loader's next put) was waiting for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::shared::Shared;
use super::sync::SYNC_PREFIX;

/// How long after a packet from the broker we wait for a reply of our own to carry the ACK
/// (the default of `BusOptions::ack_grace`). The plugin's own replies (a board round trip)
/// take a fraction of this.
pub(crate) const ACK_GRACE: Duration = Duration::from_millis(1);

/// Turns given to the poll task, once the plugin has settled, to write what it queued before.
const SETTLED_YIELDS: usize = 8;

/// Counts of packets in and of how many of them a packet out has acknowledged.
pub(crate) struct Acks {
    grace: Duration,
    received: AtomicU64,
    acknowledged: AtomicU64,
    kick: Notify,
    settled: Notify,
    /// The count of packets received when the plugin last said it was done with them.
    settled_upto: AtomicU64,
    /// Messages queued to rumqttc, and messages it has written: while more were queued, one
    /// of ours is on its way and will carry the ACK.
    queued: AtomicU64,
    written: AtomicU64,
    sent_empty: AtomicU64,
}

impl Acks {
    /// An empty packet goes `grace` after a packet nothing answered.
    pub(crate) fn new(grace: Duration) -> Self {
        Acks {
            grace,
            received: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            kick: Notify::new(),
            settled: Notify::new(),
            settled_upto: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            written: AtomicU64::new(0),
            sent_empty: AtomicU64::new(0),
        }
    }

    /// A packet came in from the broker.
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::AcqRel);
        self.kick.notify_one();
    }

    /// A message was queued to rumqttc.
    pub(crate) fn queued(&self) {
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    /// A message was written (after [`Acks::sent`]).
    pub(crate) fn written(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether a message of ours is queued and not yet written: it will acknowledge.
    fn on_its_way(&self) -> bool {
        self.written.load(Ordering::Acquire) < self.queued.load(Ordering::Acquire)
    }

    /// A packet went out: its TCP segment acknowledges everything received so far.
    pub(crate) fn sent(&self) {
        let received = self.received.load(Ordering::Acquire);
        self.acknowledged.fetch_max(received, Ordering::AcqRel);
    }

    /// The plugin has handled everything it received and has nothing in flight: nothing of
    /// its own will acknowledge a packet still unanswered, so the empty one may go now.
    pub(crate) fn settled(&self) {
        let received = self.received.load(Ordering::Acquire);
        self.settled_upto.fetch_max(received, Ordering::AcqRel);
        if self.unanswered() {
            self.settled.notify_one();
        }
    }

    /// Whether the plugin said it was done with every packet received so far.
    fn is_settled(&self) -> bool {
        self.settled_upto.load(Ordering::Acquire) >= self.received.load(Ordering::Acquire)
    }

    fn unanswered(&self) -> bool {
        self.acknowledged.load(Ordering::Acquire) < self.received.load(Ordering::Acquire)
    }

    /// Empty packets sent only to acknowledge (for the stats).
    pub(crate) fn sent_empty(&self) -> u64 {
        self.sent_empty.load(Ordering::Relaxed)
    }
}

/// Acknowledges now a packet that is known to need no answer (our own message coming back).
pub(crate) fn acknowledge_now(shared: &Shared) {
    if shared
        .try_publish(ack_topic(shared), false, Vec::new())
        .is_ok()
    {
        shared.acks.sent_empty.fetch_add(1, Ordering::Relaxed);
    }
}

fn ack_topic(shared: &Shared) -> String {
    format!("{SYNC_PREFIX}{}/ack", shared.header.plugin_name)
}

/// Sends an empty packet whenever one from the broker stays unanswered for the grace
/// ([`ACK_GRACE`] by default), or at once when the plugin says it is settled.
pub(crate) async fn ack_task(shared: Arc<Shared>) {
    let topic = ack_topic(&shared);
    loop {
        shared.acks.kick.notified().await;
        if shared.is_closed() {
            return;
        }
        let deadline = tokio::time::Instant::now() + shared.acks.grace;
        loop {
            if shared.acks.is_settled() {
                // What the plugin queued before it said so goes first, and acknowledges: let
                // the poll task write it (a few turns at most; it may be stuck on a dead
                // connection, and one empty packet too many costs nothing).
                for _ in 0..SETTLED_YIELDS {
                    if !(shared.acks.on_its_way() && shared.acks.unanswered()) {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                // Looked at again: a wake-up left from an earlier packet says nothing of this one.
                () = shared.acks.settled.notified() => {}
            }
        }
        if shared.acks.unanswered()
            && shared.is_connected()
            && shared
                .try_publish(topic.as_str(), false, Vec::new())
                .is_ok()
        {
            shared.acks.sent_empty.fetch_add(1, Ordering::Relaxed);
        }
    }
}
