//! The link's shared core and its reader task: bytes from the port go through the resyncing
//! [`Decoder`]; a DATA reply goes to the one pending request, an ID_RESPONSE to a pending
//! handshake, a STREAM event to the broadcast channel, anything else is counted.
//!
//! Stale replies: the original firmware does not echo request ids, so after a request timed
//! out its late reply could be taken for the next request's answer. The slot counts replies
//! still owed to abandoned requests and discards that many (the request path waits, up to a
//! grace period, for them before sending). Once the board has echoed ids several times in a
//! row, replies are matched by id instead and nobody waits.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use firmware_protocol::{Decoder, DecoderStats, Event, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{broadcast, oneshot, watch, Notify};
use tokio::task::AbortHandle;

use super::clock::BoardClock;
use super::error::LinkError;
use super::event::{raw_board_time, BoardEvent};

/// Consecutive echoed ids after which replies are matched by id.
pub(super) const ECHO_TRUST: u32 = 3;
/// Ids of abandoned requests remembered for an echoing board.
const MAX_STALE_IDS: usize = 64;

/// Why a link closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The port failed or the board stopped answering.
    Gone(String),
    /// This program closed it.
    Host,
}

impl CloseReason {
    /// The error requests get once the link closed for this reason.
    pub fn to_error(&self) -> LinkError {
        match self {
            CloseReason::Gone(reason) => LinkError::Gone {
                reason: reason.clone(),
            },
            CloseReason::Host => LinkError::Closed,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Gone(reason) => f.write_str(reason),
            CloseReason::Host => f.write_str("closed by this program"),
        }
    }
}

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

/// Counters, shared with the reader task.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub requests: AtomicU64,
    pub replies: AtomicU64,
    pub timeouts: AtomicU64,
    pub stale_replies: AtomicU64,
    pub unexpected: AtomicU64,
    pub events: AtomicU64,
    pub bad_events: AtomicU64,
    pub unheard_events: AtomicU64,
    pub decoder: Mutex<DecoderStats>,
}

/// State shared by the link's handles and its reader task.
pub(super) struct Core {
    pub slot: Mutex<Slot>,
    /// Signalled when an owed reply was discarded.
    pub drained: Notify,
    pub writer: tokio::sync::Mutex<Writer>,
    pub counters: Counters,
    pub events: broadcast::Sender<BoardEvent>,
    pub clock: Mutex<BoardClock>,
    pub closed: watch::Sender<Option<CloseReason>>,
    pub reader: Mutex<Option<AbortHandle>>,
    /// Becomes true once the reader task has ended and dropped its half of the port.
    pub reader_done: watch::Sender<bool>,
}

/// The write half and the request id counter.
pub(super) struct Writer {
    pub half: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    next_id: u16,
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new(half: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Self {
            half: Some(half),
            next_id: 0,
            buf: Vec::with_capacity(64),
        }
    }

    /// The next request id: never 0 (what a non-echoing board may send) and never one whose
    /// high byte is `'|'` (reserved by the framing).
    pub fn next_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && self.next_id >> 8 != u16::from(b'|') {
                return self.next_id;
            }
        }
    }
}

/// Lock a std mutex, recovering from a poisoned one (its data stays consistent: every
/// critical section here is panic-free).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    /// Mark the link closed (first reason wins), fail the pending request, stop the reader and
    /// release the write half if nobody is using it.
    pub fn shut(&self, reason: CloseReason) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
        let error = self.close_reason().map(|r| r.to_error());
        if let (Some(p), Some(error)) = (lock(&self.slot).pending.take(), error) {
            let _ = p.tx.send(Err(error));
        }
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
        if let Ok(mut writer) = self.writer.try_lock() {
            writer.half = None;
        }
        self.drained.notify_one();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.borrow().clone()
    }

    fn dispatch(&self, packet: Packet) {
        let now = Instant::now();
        let disposition = match packet {
            Packet::Data { id, payload } => {
                let d = lock(&self.slot).on_data(id, payload, now);
                if d == Disposition::Stale {
                    self.drained.notify_one();
                }
                d
            }
            Packet::IdResponse { payload, .. } => lock(&self.slot).on_identity(payload, now),
            Packet::Stream { payload, .. } => {
                self.publish(&payload, now);
                return;
            }
            Packet::IdRequest { .. } | Packet::Ack { .. } | Packet::Nack { .. } => {
                Disposition::Unexpected
            }
        };
        let counter = match disposition {
            Disposition::Delivered => &self.counters.replies,
            Disposition::Stale => &self.counters.stale_replies,
            Disposition::Unexpected => &self.counters.unexpected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn publish(&self, payload: &[u8], received: Instant) {
        let Ok(event) = Event::parse(payload) else {
            self.counters.bad_events.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let (board_time_us, board_time_host) = match raw_board_time(&event) {
            Some(raw) => {
                let mut clock = lock(&self.clock);
                let us = clock.unwrap_at(raw, received);
                (Some(us), clock.host_at(us))
            }
            None => (None, None),
        };
        let event = BoardEvent {
            event,
            received,
            received_wall: SystemTime::now(),
            board_time_us,
            board_time_host,
        };
        // Never blocks: slow receivers lag and lose the oldest events.
        if self.events.send(event).is_err() {
            self.counters.unheard_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Describe a read or write error as a reason the link is gone.
pub(super) fn describe_io(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EIO) => format!("{what} failed with EIO: the board was unplugged or reset"),
        Some(libc::ENXIO) => format!("{what} failed with ENXIO: the device no longer exists"),
        Some(libc::ENODEV) => format!("{what} failed with ENODEV: the device was removed"),
        _ => format!("{what} failed: {e}"),
    }
}

/// How long the line must stay quiet, with a packet candidate open, before the candidate is
/// taken for a false start (a board writes a whole packet at once: 1 KiB is < 2 ms over USB).
const IDLE_FLUSH: Duration = Duration::from_millis(5);

/// Marks the reader done when dropped: at its end, or when the task is aborted.
struct ReaderDone(Arc<Core>);

impl Drop for ReaderDone {
    fn drop(&mut self) {
        self.0.reader_done.send_replace(true);
    }
}

/// The reader task: runs until the port ends or fails, then closes the link.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(core: Arc<Core>, port: R) {
    // Declared before `port`, so dropped after it: "done" means the half is released.
    let _done = ReaderDone(core.clone());
    let mut port = port;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let reason = loop {
        let read = if decoder.buffered() > 0 {
            // A corrupted header may claim the bytes of a real reply behind it; when the
            // line goes quiet, rescan them rather than wait for bytes that never come.
            match tokio::time::timeout(IDLE_FLUSH, port.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    decoder.flush(|packet| core.dispatch(packet));
                    *lock(&core.counters.decoder) = decoder.stats();
                    continue;
                }
            }
        } else {
            port.read(&mut buf).await
        };
        match read {
            Ok(0) => {
                break "end of file on the port: the board was unplugged or its port closed"
                    .to_owned()
            }
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                decoder.feed(chunk, |packet| core.dispatch(packet));
                *lock(&core.counters.decoder) = decoder.stats();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break describe_io("reading the port", &e),
        }
    };
    tracing::warn!(%reason, "board link closed");
    core.shut(CloseReason::Gone(reason));
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn ids_skip_zero_and_reserved() {
        let mut w = Writer::new(Box::new(tokio::io::sink()));
        let mut seen = 0;
        for _ in 0..70_000 {
            let id = w.next_id();
            assert!(id != 0 && id >> 8 != 0x7C);
            seen += 1;
        }
        assert_eq!(seen, 70_000);
    }
}
