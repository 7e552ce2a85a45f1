//! The single request slot: which request waits for a reply, and whether the link is out of
//! step after a request that was given up.
//!
//! The firmware never echoes request ids (base-node-rpc `SerialHandler.h` answers with id 0),
//! so a reply that comes after its request timed out looks exactly like the next request's
//! answer. Once a DATA request is given up the slot is *out of step*: the link then sends a
//! resync probe (an echo call carrying a fresh nonce, see [`super::link::ResyncProbe`]) before
//! the next request, and every DATA reply until the probe's own answer is discarded. The
//! firmware answers in order, so nothing late can follow that answer.
//!
//! A link without a probe (a bare [`super::Link`] over some other device) falls back to
//! counting the replies still owed and discarding that many, waiting up to a grace period.

use std::time::Instant;

use tokio::sync::oneshot;

use super::error::LinkError;

/// What a pending request waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// Any DATA reply (the link is in step).
    Data,
    /// An ID_RESPONSE.
    Identity,
    /// The DATA reply with exactly these bytes: a resync probe's answer.
    Probe(Vec<u8>),
}

/// A reply and when it arrived.
#[derive(Debug)]
pub(super) struct Arrival {
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// Where a request's answer goes: a task awaiting it, or a plain thread blocked on it.
pub(super) enum Tx {
    Async(oneshot::Sender<Result<Arrival, LinkError>>),
    Blocking(crossbeam_channel::Sender<Result<Arrival, LinkError>>),
}

impl Tx {
    /// Hand over the answer (nobody may be waiting any more: that is fine).
    pub fn send(self, answer: Result<Arrival, LinkError>) {
        match self {
            Tx::Async(tx) => {
                let _ = tx.send(answer);
            }
            Tx::Blocking(tx) => {
                let _ = tx.try_send(answer);
            }
        }
    }
}

pub(super) struct Pending {
    pub id: u16,
    pub expect: Expect,
    pub tx: Tx,
}

/// The single request slot; see the module docs.
#[derive(Default)]
pub(super) struct Slot {
    pub pending: Option<Pending>,
    /// Replies still owed to abandoned DATA requests (0: in step).
    pub stale: u32,
    /// Without a probe: after this, owed replies are no longer waited for.
    pub stale_until: Option<Instant>,
    /// Replies handed to their request, counted before the hand-over: a requester that wakes
    /// on another thread already sees its reply counted.
    pub delivered: u64,
}

/// What became of a received reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Delivered,
    Stale,
    Unexpected,
}

impl Slot {
    /// Whether a request was given up and its reply may still come.
    pub fn out_of_step(&self) -> bool {
        self.stale > 0
    }

    /// Route a DATA reply (its id says nothing: the firmware always sends 0).
    pub fn on_data(&mut self, payload: Vec<u8>, at: Instant) -> Disposition {
        match self.pending.take() {
            Some(p) if p.expect == Expect::Probe(payload.clone()) => {
                self.forget_stale();
                self.deliver(p, Arrival { payload, at })
            }
            Some(p) if matches!(p.expect, Expect::Probe(_)) => {
                // Anything before the probe's answer belongs to a request given up earlier.
                self.pending = Some(p);
                Disposition::Stale
            }
            Some(p) if self.stale > 0 => {
                // No probe: the first replies after a timeout are the late ones.
                self.pending = Some(p);
                self.stale -= 1;
                Disposition::Stale
            }
            Some(p) if p.expect == Expect::Data => {
                // The requester may have given up in this instant; its guard handles that.
                self.deliver(p, Arrival { payload, at })
            }
            other => {
                self.pending = other;
                if self.stale > 0 {
                    self.stale -= 1;
                    Disposition::Stale
                } else {
                    Disposition::Unexpected
                }
            }
        }
    }

    /// Route an ID_RESPONSE.
    pub fn on_identity(&mut self, payload: Vec<u8>, at: Instant) -> Disposition {
        match self.pending.take() {
            Some(p) if p.expect == Expect::Identity => self.deliver(p, Arrival { payload, at }),
            other => {
                self.pending = other;
                Disposition::Unexpected
            }
        }
    }

    fn deliver(&mut self, pending: Pending, arrival: Arrival) -> Disposition {
        self.delivered += 1;
        pending.tx.send(Ok(arrival));
        Disposition::Delivered
    }

    /// Give up on request `id`. Returns false if it is no longer pending (its reply came).
    pub fn abandon(&mut self, id: u16, grace_until: Instant) -> bool {
        match self.pending.take() {
            Some(p) if p.id == id => {
                if p.expect != Expect::Identity {
                    self.stale = self.stale.saturating_add(1);
                    self.stale_until = Some(grace_until);
                }
                true
            }
            other => {
                self.pending = other;
                false
            }
        }
    }

    /// Forget owed replies (a probe came back, or the grace period is over).
    pub fn forget_stale(&mut self) {
        self.stale = 0;
        self.stale_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(
        slot: &mut Slot,
        id: u16,
        expect: Expect,
    ) -> oneshot::Receiver<Result<Arrival, LinkError>> {
        let (tx, rx) = oneshot::channel();
        slot.pending = Some(Pending {
            id,
            expect,
            tx: Tx::Async(tx),
        });
        rx
    }

    fn reply(rx: &mut oneshot::Receiver<Result<Arrival, LinkError>>) -> Option<Vec<u8>> {
        rx.try_recv().ok().and_then(|r| r.ok()).map(|a| a.payload)
    }

    #[test]
    fn after_a_timeout_everything_before_the_probe_answer_is_stale() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let _rx1 = pending(&mut slot, 1, Expect::Data);
        assert!(slot.abandon(1, now));
        assert!(slot.out_of_step());
        let mut probe = pending(&mut slot, 2, Expect::Probe(b"n1".to_vec()));
        // Two late replies (the abandoned request's, and an older probe's) are dropped...
        assert_eq!(slot.on_data(b"old".to_vec(), now), Disposition::Stale);
        assert_eq!(slot.on_data(b"n0".to_vec(), now), Disposition::Stale);
        assert!(reply(&mut probe).is_none());
        // ...the probe's own answer puts the link back in step.
        assert_eq!(slot.on_data(b"n1".to_vec(), now), Disposition::Delivered);
        assert_eq!(reply(&mut probe), Some(b"n1".to_vec()));
        assert!(!slot.out_of_step());
        let mut rx3 = pending(&mut slot, 3, Expect::Data);
        assert_eq!(slot.on_data(b"new".to_vec(), now), Disposition::Delivered);
        assert_eq!(reply(&mut rx3), Some(b"new".to_vec()));
        assert_eq!(slot.delivered, 2, "the probe's answer and the new reply");
    }

    #[test]
    fn without_a_probe_the_owed_replies_are_counted_off() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let _rx1 = pending(&mut slot, 1, Expect::Data);
        assert!(slot.abandon(1, now + Duration::from_millis(100)));
        // The late reply arrives before the next request: discarded.
        assert_eq!(slot.on_data(b"old".to_vec(), now), Disposition::Stale);
        assert!(!slot.out_of_step());
        let mut rx2 = pending(&mut slot, 2, Expect::Data);
        assert_eq!(slot.on_data(b"new".to_vec(), now), Disposition::Delivered);
        assert_eq!(reply(&mut rx2), Some(b"new".to_vec()));
        // A reply nobody asked for is unexpected.
        assert_eq!(slot.on_data(b"?".to_vec(), now), Disposition::Unexpected);
    }

    #[test]
    fn identity_and_unexpected_packets() {
        let now = Instant::now();
        let mut slot = Slot::default();
        assert_eq!(slot.on_identity(vec![], now), Disposition::Unexpected);
        let mut rx = pending(&mut slot, 5, Expect::Identity);
        // A DATA reply does not answer a handshake.
        assert_eq!(slot.on_data(vec![], now), Disposition::Unexpected);
        assert_eq!(
            slot.on_identity(b"dropbot::x".to_vec(), now),
            Disposition::Delivered
        );
        assert!(reply(&mut rx).is_some());
        // Abandoning a handshake owes no DATA reply.
        let _rx = pending(&mut slot, 6, Expect::Identity);
        assert!(slot.abandon(6, now));
        assert!(!slot.out_of_step());
        assert!(!slot.abandon(6, now));
    }
}
