//! The link's shared core and its reader (a task here, or a thread in `port.rs`): bytes from the port go through the resyncing
//! [`Decoder`]; a DATA reply goes to the one pending request (see [`super::slot`]), an
//! ID_RESPONSE to a pending handshake, a STREAM event to the broadcast channel, anything else
//! is counted.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use firmware_protocol::{Decoder, DecoderStats, Event, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::AbortHandle;

use super::clock::BoardClock;
use super::error::LinkError;
use super::event::{raw_board_time, BoardEvent};
use super::slot::{Disposition, Slot};

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

/// What the link has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Requests sent.
    pub requests: u64,
    /// Replies delivered to their request.
    pub replies: u64,
    /// Requests that got no reply in time.
    pub timeouts: u64,
    /// Late replies to timed-out requests, discarded.
    pub stale_replies: u64,
    /// Packets nobody asked for (replies with no request, ACK, NACK, ...).
    pub unexpected: u64,
    /// Events received and parsed.
    pub events: u64,
    /// STREAM payloads that are not a known event.
    pub bad_events: u64,
    /// Events that arrived while nobody subscribed (dropped).
    pub unheard_events: u64,
    /// Packets dropped for a bad CRC.
    pub crc_errors: u64,
    /// Bytes skipped while resynchronising.
    pub discarded_bytes: u64,
    /// Candidates dropped for an unknown type or an oversized length.
    pub bad_headers: u64,
}

/// Counters, shared with the reader.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub stale_replies: AtomicU64,
    pub unexpected: AtomicU64,
    pub events: AtomicU64,
    pub bad_events: AtomicU64,
    pub unheard_events: AtomicU64,
    pub decoder: Mutex<DecoderStats>,
}

impl Counters {
    /// A snapshot as [`LinkStats`], with the replies the slot delivered.
    pub fn snapshot(&self, replies: u64) -> LinkStats {
        let d = *lock(&self.decoder);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            requests: get(&self.requests),
            replies,
            timeouts: get(&self.timeouts),
            stale_replies: get(&self.stale_replies),
            unexpected: get(&self.unexpected),
            events: get(&self.events),
            bad_events: get(&self.bad_events),
            unheard_events: get(&self.unheard_events),
            crc_errors: d.crc_errors,
            discarded_bytes: d.discarded_bytes,
            bad_headers: d.bad_types + d.oversized,
        }
    }
}

/// State shared by the link's handles and its reader.
pub(super) struct Core {
    pub slot: Mutex<Slot>,
    /// Signalled when an owed reply was discarded.
    pub drained: Notify,
    pub writer: tokio::sync::Mutex<Writer>,
    pub counters: Counters,
    pub events: broadcast::Sender<BoardEvent>,
    /// The lossless consumer of events, if any (see `Link::set_event_sink`).
    pub sink: Mutex<Option<super::link::EventSink>>,
    pub clock: Mutex<BoardClock>,
    pub closed: watch::Sender<Option<CloseReason>>,
    pub reader: Mutex<Option<ReaderHandle>>,
    /// Becomes true once the reader has ended and dropped its half of the port.
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

pub(super) use crate::sync::lock;

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
            p.tx.send(Err(error));
        }
        if let Some(reader) = lock(&self.reader).take() {
            reader.stop();
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
            Packet::Data { payload, .. } => {
                let d = lock(&self.slot).on_data(payload, now);
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
        // Delivered replies are counted by the slot, before the requester wakes.
        let counter = match disposition {
            Disposition::Delivered => return,
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
        let sink = lock(&self.sink).clone();
        if let Some(sink) = sink {
            sink(&event);
        }
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

/// Marks the reader done when dropped: at its end, or when it is stopped.
pub(super) struct ReaderDone(pub Arc<Core>);

impl Drop for ReaderDone {
    fn drop(&mut self) {
        self.0.reader_done.send_replace(true);
    }
}

/// How to stop the link's reader.
pub(super) enum ReaderHandle {
    /// A tokio task reading an async stream.
    Task(AbortHandle),
    /// A thread reading a port (see `super::port`): it ends when this end of its stop socket
    /// is dropped.
    Thread(std::os::unix::net::UnixStream),
}

impl ReaderHandle {
    pub fn stop(self) {
        match self {
            ReaderHandle::Task(task) => task.abort(),
            ReaderHandle::Thread(stop) => drop(stop),
        }
    }
}

/// What a reader does with what it reads, however it waits for it: decode, dispatch, and say
/// when the port is gone.
pub(super) struct Reading {
    core: Arc<Core>,
    decoder: Decoder,
    pub buf: Vec<u8>,
    /// The packets of one read, dispatched once the decoder's counters are stored: a
    /// requester woken by its reply (on another thread) sees the bytes before it counted.
    packets: Vec<Packet>,
}

impl Reading {
    pub fn new(core: Arc<Core>) -> Self {
        Reading {
            core,
            decoder: Decoder::new(),
            buf: vec![0u8; 4096],
            packets: Vec::new(),
        }
    }

    /// A packet candidate is open: wait for more bytes only as long as the idle flush allows.
    /// (A corrupted header may claim the bytes of a real reply behind it; when the line goes
    /// quiet, they are rescanned rather than waited for.)
    pub fn candidate_open(&self) -> bool {
        self.decoder.buffered() > 0
    }

    /// The line stayed quiet with a candidate open.
    pub fn idle(&mut self) {
        let packets = &mut self.packets;
        self.decoder.flush(|packet| packets.push(packet));
        self.dispatch();
    }

    /// Store the decoder's counters, then hand the decoded packets on.
    fn dispatch(&mut self) {
        *lock(&self.core.counters.decoder) = self.decoder.stats();
        for packet in self.packets.drain(..) {
            self.core.dispatch(packet);
        }
    }

    /// One read's outcome (into `buf`); why the link is gone, if it is.
    pub fn read(&mut self, read: io::Result<usize>) -> Option<String> {
        match read {
            Ok(0) => Some(
                "end of file on the port: the board was unplugged or its port closed".to_owned(),
            ),
            Ok(n) => {
                let chunk = self.buf.get(..n).unwrap_or_default();
                let packets = &mut self.packets;
                self.decoder.feed(chunk, |packet| packets.push(packet));
                self.dispatch();
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(describe_io("reading the port", &e)),
        }
    }

    /// The reader ends: the link is gone for `reason`.
    pub fn gone(self, reason: String) {
        tracing::warn!(%reason, "board link closed");
        self.core.shut(CloseReason::Gone(reason));
    }
}

/// The reader task of an async stream: runs until the port ends or fails, then closes the link.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    core: Arc<Core>,
    port: R,
    idle_flush: Duration,
) {
    // Declared before `port`, so dropped after it: "done" means the half is released.
    let _done = ReaderDone(core.clone());
    let mut port = port;
    let mut reading = Reading::new(core);
    let reason = loop {
        let read = if reading.candidate_open() {
            match tokio::time::timeout(idle_flush, port.read(&mut reading.buf)).await {
                Ok(read) => read,
                Err(_) => {
                    reading.idle();
                    continue;
                }
            }
        } else {
            port.read(&mut reading.buf).await
        };
        if let Some(reason) = reading.read(read) {
            break reason;
        }
    };
    reading.gone(reason);
}

/// Marks a request abandoned if its future is dropped before it completed, so its late reply
/// is not taken for the next request's.
pub(super) struct InFlight<'a> {
    pub core: &'a Core,
    pub id: u16,
    pub grace: Duration,
    pub armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.core.slot).abandon(self.id, Instant::now() + self.grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
