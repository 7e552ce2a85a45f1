//! The single request slot: which request waits for a reply, and which late replies are still
//! owed to requests that timed out.
//!
//! The original firmware does not echo request ids, so after a request timed out its late
//! reply could be taken for the next request's answer. The slot counts replies still owed to
//! abandoned requests and discards that many (the request path waits, up to a grace period,
//! for them before sending). Once the board has echoed ids several times in a row, replies are
//! matched by id instead and nobody waits.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::LinkError;

/// Consecutive echoed ids after which replies are matched by id.
pub(super) const ECHO_TRUST: u32 = 3;
/// Ids of abandoned requests remembered for an echoing board.
const MAX_STALE_IDS: usize = 64;

/// What a pending request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Data,
    Identity,
}

/// A reply and when it arrived.
#[derive(Debug)]
pub(super) struct Arrival {
    pub payload: Vec<u8>,
    pub at: Instant,
}

pub(super) struct Pending {
    pub id: u16,
    pub expect: Expect,
    pub tx: oneshot::Sender<Result<Arrival, LinkError>>,
}

/// The single request slot; see the module docs.
#[derive(Default)]
pub(super) struct Slot {
    pub pending: Option<Pending>,
    /// Replies still owed to abandoned DATA requests.
    pub stale: u32,
    pub stale_ids: VecDeque<u16>,
    /// After this, owed replies are no longer waited for.
    pub stale_until: Option<Instant>,
    /// Consecutive replies that echoed their request's id.
    pub echo_run: u32,
}

/// What became of a received reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Delivered,
    Stale,
    Unexpected,
}

impl Slot {
    pub fn echo_trusted(&self) -> bool {
        self.echo_run >= ECHO_TRUST
    }

    /// Route a DATA reply with `id`.
    pub fn on_data(&mut self, id: u16, payload: Vec<u8>, at: Instant) -> Disposition {
        if self.echo_trusted() {
            if let Some(pos) = self.stale_ids.iter().position(|&s| s == id) {
                self.stale_ids.remove(pos);
                self.stale = self.stale.saturating_sub(1);
                return Disposition::Stale;
            }
            let ours = self
                .pending
                .as_ref()
                .is_some_and(|p| p.expect == Expect::Data && p.id == id);
            if !ours {
                return Disposition::Unexpected;
            }
        } else if self.stale > 0 {
            // Not matched by id: the first replies after a timeout are the late ones.
            self.stale -= 1;
            self.stale_ids.pop_front();
            return Disposition::Stale;
        }
        match self.pending.take() {
            Some(p) if p.expect == Expect::Data => {
                self.echo_run = if p.id == id { self.echo_run + 1 } else { 0 };
                // The requester may have given up in this instant; its guard handles that.
                let _ = p.tx.send(Ok(Arrival { payload, at }));
                Disposition::Delivered
            }
            other => {
                self.pending = other;
                Disposition::Unexpected
            }
        }
    }

    /// Route an ID_RESPONSE.
    pub fn on_identity(&mut self, payload: Vec<u8>, at: Instant) -> Disposition {
        match self.pending.take() {
            Some(p) if p.expect == Expect::Identity => {
                let _ = p.tx.send(Ok(Arrival { payload, at }));
                Disposition::Delivered
            }
            other => {
                self.pending = other;
                Disposition::Unexpected
            }
        }
    }

    /// Give up on request `id`. Returns false if it is no longer pending (its reply came).
    pub fn abandon(&mut self, id: u16, grace_until: Instant) -> bool {
        match self.pending.take() {
            Some(p) if p.id == id => {
                if p.expect == Expect::Data {
                    self.stale += 1;
                    self.stale_ids.push_back(id);
                    if self.stale_ids.len() > MAX_STALE_IDS {
                        self.stale_ids.pop_front();
                    }
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

    /// Forget owed replies (their grace period is over).
    pub fn forget_stale(&mut self) {
        self.stale = 0;
        self.stale_ids.clear();
        self.stale_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pending(slot: &mut Slot, id: u16) -> oneshot::Receiver<Result<Arrival, LinkError>> {
        let (tx, rx) = oneshot::channel();
        slot.pending = Some(Pending {
            id,
            expect: Expect::Data,
            tx,
        });
        rx
    }

    fn reply(rx: &mut oneshot::Receiver<Result<Arrival, LinkError>>) -> Option<Vec<u8>> {
        rx.try_recv().ok().and_then(|r| r.ok()).map(|a| a.payload)
    }

    #[test]
    fn late_reply_is_not_taken_for_the_next_one_without_echo() {
        let now = Instant::now();
        let mut slot = Slot::default();
        let _rx1 = pending(&mut slot, 1);
        assert!(slot.abandon(1, now + Duration::from_millis(100)));
        // The late reply to request 1 (the board sends id 0: no echo) is discarded...
        assert_eq!(slot.on_data(0, b"old".to_vec(), now), Disposition::Stale);
        assert_eq!(slot.stale, 0);
        // ...and request 2 gets its own.
        let mut rx2 = pending(&mut slot, 2);
        assert_eq!(
            slot.on_data(0, b"new".to_vec(), now),
            Disposition::Delivered
        );
        assert_eq!(reply(&mut rx2), Some(b"new".to_vec()));
        assert!(!slot.echo_trusted());
    }

    #[test]
    fn echoing_board_is_matched_by_id() {
        let now = Instant::now();
        let mut slot = Slot::default();
        for id in 1..=ECHO_TRUST as u16 {
            let mut rx = pending(&mut slot, id);
            slot.on_data(id, vec![id as u8], now);
            assert!(reply(&mut rx).is_some());
        }
        assert!(slot.echo_trusted());
        let _rx = pending(&mut slot, 10);
        slot.abandon(10, now);
        let mut rx = pending(&mut slot, 11);
        // A reply with an unknown id is not ours; the late reply to 10 is stale.
        assert_eq!(slot.on_data(99, vec![], now), Disposition::Unexpected);
        assert_eq!(slot.on_data(10, vec![], now), Disposition::Stale);
        assert_eq!(slot.on_data(11, b"x".to_vec(), now), Disposition::Delivered);
        assert_eq!(reply(&mut rx), Some(b"x".to_vec()));
    }

    #[test]
    fn identity_and_unexpected_packets() {
        let now = Instant::now();
        let mut slot = Slot::default();
        assert_eq!(slot.on_data(1, vec![], now), Disposition::Unexpected);
        assert_eq!(slot.on_identity(vec![], now), Disposition::Unexpected);
        let (tx, mut rx) = oneshot::channel();
        slot.pending = Some(Pending {
            id: 5,
            expect: Expect::Identity,
            tx,
        });
        // A DATA reply does not answer a handshake.
        assert_eq!(slot.on_data(5, vec![], now), Disposition::Unexpected);
        assert_eq!(
            slot.on_identity(b"dropbot::x".to_vec(), now),
            Disposition::Delivered
        );
        assert!(reply(&mut rx).is_some());
        // Abandoning a handshake owes no DATA reply.
        let (tx, _rx) = oneshot::channel();
        slot.pending = Some(Pending {
            id: 6,
            expect: Expect::Identity,
            tx,
        });
        assert!(slot.abandon(6, now));
        assert_eq!(slot.stale, 0);
        assert!(!slot.abandon(6, now));
    }
}
