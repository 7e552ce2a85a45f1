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
//! packet (often the next request) follows them closely.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio::sync::Notify;

use super::shared::Shared;
use super::sync::SYNC_PREFIX;

/// How long after a packet from the broker we wait for a reply of our own to carry the ACK.
/// The plugin's own replies (a board round trip) take a fraction of this.
pub(crate) const ACK_GRACE: Duration = Duration::from_millis(1);

/// Counts of packets in and of how many of them a packet out has acknowledged.
#[derive(Default)]
pub(crate) struct Acks {
    received: AtomicU64,
    acknowledged: AtomicU64,
    kick: Notify,
    sent_empty: AtomicU64,
}

impl Acks {
    /// A packet came in from the broker.
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::AcqRel);
        self.kick.notify_one();
    }

    /// A packet went out: its TCP segment acknowledges everything received so far.
    pub(crate) fn sent(&self) {
        let received = self.received.load(Ordering::Acquire);
        self.acknowledged.fetch_max(received, Ordering::AcqRel);
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
        .client
        .try_publish(ack_topic(shared), QoS::AtMostOnce, false, Vec::new())
        .is_ok()
    {
        shared.acks.sent_empty.fetch_add(1, Ordering::Relaxed);
    }
}

fn ack_topic(shared: &Shared) -> String {
    format!("{SYNC_PREFIX}{}/ack", shared.header.plugin_name)
}

/// Sends an empty packet whenever one from the broker stays unanswered for [`ACK_GRACE`].
pub(crate) async fn ack_task(shared: Arc<Shared>) {
    let topic = ack_topic(&shared);
    loop {
        shared.acks.kick.notified().await;
        if shared.is_closed() {
            return;
        }
        tokio::time::sleep(ACK_GRACE).await;
        if shared.acks.unanswered()
            && shared.is_connected()
            && shared
                .client
                .try_publish(topic.as_str(), QoS::AtMostOnce, false, Vec::new())
                .is_ok()
        {
            shared.acks.sent_empty.fetch_add(1, Ordering::Relaxed);
        }
    }
}
