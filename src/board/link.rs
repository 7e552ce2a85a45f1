//! The one owner of the port: a reader (a thread for a serial port, `port.rs`; a task for any
//! other stream, `transport.rs`) and a serialised
//! request path, exactly one request in flight (the board does not match replies).
//!
//! Requests write straight to the port from the caller's task under an async mutex: no hop
//! through a writer task on the hot path. Nothing is flushed: a serial port's flush is a
//! blocking `tcdrain`, and writes go straight to the file descriptor anyway.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firmware_protocol::Packet;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, oneshot, watch, Notify};

use super::clock::BoardClock;
use super::error::LinkError;
use super::event::BoardEvent;
use super::port::{spawn_reader, Port};
use super::slot::{Arrival, Expect, Pending, Slot, Tx};
pub use super::transport::LinkStats;
use super::transport::{
    describe_io, lock, read_loop, CloseReason, Core, Counters, InFlight, ReaderHandle, Writer,
};

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Default per-request timeout. Longer than the firmware's longest stall: it runs
    /// `detect_shorts(5)` (~1.2 s for 120 channels) inside its loop on every chip insertion,
    /// and answers nothing meanwhile.
    pub request_timeout: Duration,
    /// Timeout of one ID handshake attempt.
    pub handshake_timeout: Duration,
    /// Without a resync probe: how long, after a timeout, the next request waits for the late
    /// reply before sending.
    pub stale_grace: Duration,
    /// Consecutive timeouts after which the board counts as gone (0: never).
    pub dead_after_timeouts: u32,
    /// Events buffered per broadcast subscriber before the slowest loses the oldest.
    pub event_capacity: usize,
    /// How long the line must stay quiet, with a packet candidate open, before the candidate
    /// is taken for a false start. A Teensy holds the last partial 64-byte USB packet of a
    /// reply for its ~5 ms transmit-flush timer (`teensy3/usb_serial.c`), so a real packet
    /// may pause that long mid-way: this must be well above it.
    pub idle_flush: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_millis(300),
            stale_grace: Duration::from_millis(300),
            dead_after_timeouts: 3,
            event_capacity: 256,
            idle_flush: Duration::from_millis(30),
        }
    }
}

/// A reply with the host times of the round trip.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply payload.
    pub payload: Vec<u8>,
    /// When the request was about to be written.
    pub sent: Instant,
    /// When its last byte had been handed to the port.
    pub written: Instant,
    /// When the reply was decoded.
    pub received: Instant,
}

/// How to bring a link back in step after a request was given up: `make(nonce)` returns a
/// request payload and the exact reply it must get (e.g. an echo call carrying the nonce).
/// Every DATA reply before that answer is a late one and is discarded.
pub type ResyncProbe = Arc<dyn Fn(u32) -> (Vec<u8>, Vec<u8>) + Send + Sync>;

/// Called by the link's reader with every event, before the broadcast: a path that never
/// drops (it must not block).
pub type EventSink = Arc<dyn Fn(&BoardEvent) + Send + Sync>;

/// A handle to the link; cheap to clone. The port closes when the last handle is dropped.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    options: LinkOptions,
    consecutive_timeouts: AtomicU32,
    probe: Mutex<Option<ResyncProbe>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reader) = lock(&self.core.reader).take() {
            reader.stop();
        }
    }
}

impl Link {
    /// Take over `stream` (any byte stream) and start its reader task. Must be called within a
    /// tokio runtime. A serial port opened by path goes to [`Link::spawn_port`] instead.
    pub fn spawn<S>(stream: S, options: LinkOptions) -> Link
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let idle_flush = options.idle_flush;
        let link = Link::with_writer(Box::new(write_half), options);
        let core = link.inner.core.clone();
        let task = tokio::spawn(read_loop(core.clone(), read_half, idle_flush));
        *lock(&core.reader) = Some(ReaderHandle::Task(task.abort_handle()));
        link
    }

    /// Take over an open serial port: its reader is a thread of its own (see [`super::port`]).
    /// Must be called within a tokio runtime.
    pub fn spawn_port(port: Port, options: LinkOptions) -> Result<Link, LinkError> {
        let path = port.path().to_owned();
        let (writer, reader) = port.split()?;
        let idle_flush = options.idle_flush;
        let link = Link::with_writer(Box::new(writer), options);
        let core = link.inner.core.clone();
        let handle =
            spawn_reader(core.clone(), reader, idle_flush).map_err(|e| LinkError::Open {
                path,
                reason: format!("starting the port's reader failed: {e}"),
            })?;
        *lock(&core.reader) = Some(handle);
        Ok(link)
    }

    fn with_writer(writer: Box<dyn AsyncWrite + Send + Unpin>, options: LinkOptions) -> Link {
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let (closed, _) = watch::channel(None);
        let (reader_done, _) = watch::channel(false);
        let core = Arc::new(Core {
            slot: Mutex::new(Slot::default()),
            drained: Notify::new(),
            writer: tokio::sync::Mutex::new(Writer::new(writer)),
            counters: Counters::default(),
            events,
            sink: Mutex::new(None),
            clock: Mutex::new(BoardClock::default()),
            closed,
            reader: Mutex::new(None),
            reader_done,
        });
        Link {
            inner: Arc::new(Inner {
                core,
                options,
                consecutive_timeouts: AtomicU32::new(0),
                probe: Mutex::new(None),
            }),
        }
    }

    pub(super) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// The options this link was made with.
    pub fn options(&self) -> &LinkOptions {
        &self.inner.options
    }

    /// Use `probe` to get back in step after a request was given up (see [`ResyncProbe`]).
    pub fn set_resync_probe(&self, probe: ResyncProbe) {
        *lock(&self.inner.probe) = Some(probe);
    }

    /// Hand every event to `sink` as it arrives (replacing an earlier sink), besides the
    /// broadcast.
    pub fn set_event_sink(&self, sink: Option<EventSink>) {
        *lock(&self.inner.core.sink) = sink;
    }

    /// Send a DATA request and wait for its reply. `command` names it in errors.
    pub async fn request(
        &self,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        Ok(self
            .exchange(Expect::Data, command, payload, timeout)
            .await?
            .payload)
    }

    /// [`Link::request`], also returning when it was sent, written and answered.
    pub async fn request_timed(
        &self,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        self.exchange(Expect::Data, command, payload, timeout).await
    }

    /// Send an ID request and return the identity text's bytes.
    pub async fn identify(&self, timeout: Duration) -> Result<Vec<u8>, LinkError> {
        Ok(self
            .exchange(Expect::Identity, "identify", &[], timeout)
            .await?
            .payload)
    }

    /// Subscribe to the board's events (a lagging receiver loses the oldest; for a path that
    /// never drops, see [`Link::set_event_sink`]).
    pub fn events(&self) -> broadcast::Receiver<BoardEvent> {
        self.inner.core.events.subscribe()
    }

    /// Run `f` on the board clock (shared with the event stamping).
    pub fn with_clock<T>(&self, f: impl FnOnce(&mut BoardClock) -> T) -> T {
        f(&mut lock(&self.inner.core.clock))
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        let core = &self.inner.core;
        core.counters.snapshot(lock(&core.slot).delivered)
    }

    /// Why the link closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.core.close_reason()
    }

    /// Whether the link is closed.
    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    /// Resolves when the link closes (immediately if it already has).
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.inner.core.closed.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return CloseReason::Host;
            }
        }
    }

    /// A watch of the close reason (None while open), for `select!` loops.
    pub fn watch_closed(&self) -> watch::Receiver<Option<CloseReason>> {
        self.inner.core.closed.subscribe()
    }

    /// Close the link on purpose; pending and later requests fail with [`LinkError::Closed`].
    pub fn close(&self) {
        self.inner.core.shut(CloseReason::Host);
    }

    /// Close the link and wait until the port is released (both halves dropped), so that it
    /// can be opened again at once (ports are opened exclusively).
    pub async fn shutdown(&self) {
        let core = &self.inner.core;
        if !self.is_closed() {
            core.shut(CloseReason::Host);
        }
        // A request holding the writer fails fast now that the link is closed.
        core.writer.lock().await.half = None;
        let mut done = core.reader_done.subscribe();
        let _ = done.wait_for(|done| *done).await;
    }

    pub(super) fn check_open(&self) -> Result<(), LinkError> {
        match self.close_reason() {
            Some(reason) => Err(reason.to_error()),
            None => Ok(()),
        }
    }

    /// One request under the writer lock: get back in step if needed, then send and wait.
    async fn exchange(
        &self,
        expect: Expect,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        self.check_open()?;
        let mut writer = self.inner.core.writer.lock().await;
        let result = async {
            self.check_open()?;
            if expect == Expect::Data {
                match self.resync_needed() {
                    Some(Some(probe)) => {
                        let (payload, answer) = probe(rand::random());
                        let probe = Expect::Probe(answer);
                        self.send_and_wait(&mut writer, probe, "resync", &payload, timeout)
                            .await
                            .map_err(|e| e.for_command(command))?;
                    }
                    Some(None) => self.drain_stale().await?,
                    None => {}
                }
            }
            self.send_and_wait(&mut writer, expect, command, payload, timeout)
                .await
        }
        .await;
        self.release_if_closed(&mut writer);
        result
    }

    /// Whether the link is out of step after a request was given up, and how to get back:
    /// `Some(Some(probe))` with a resync probe (its nonce's answer: every reply before it is a
    /// late one; if it gets none the caller's request is not sent and times out too),
    /// `Some(None)` by waiting out the grace period.
    pub(super) fn resync_needed(&self) -> Option<Option<ResyncProbe>> {
        lock(&self.inner.core.slot)
            .out_of_step()
            .then(|| lock(&self.inner.probe).clone())
    }

    /// Once the link is closed the port is released: the one place that happens after a
    /// failed request.
    pub(super) fn release_if_closed(&self, writer: &mut Writer) {
        if self.is_closed() {
            writer.half = None;
        }
    }

    /// Put a request in the slot (answered through `tx`) and encode it into the writer's
    /// buffer; its id.
    pub(super) fn register(
        &self,
        writer: &mut Writer,
        expect: Expect,
        payload: &[u8],
        tx: Tx,
    ) -> Result<u16, LinkError> {
        let core = &self.inner.core;
        let id = writer.next_id();
        let packet = match expect {
            Expect::Identity => Packet::IdRequest { id },
            Expect::Data | Expect::Probe(_) => Packet::Data {
                id,
                payload: payload.to_vec(),
            },
        };
        writer.buf.clear();
        packet.encode_into(&mut writer.buf)?;
        lock(&core.slot).pending = Some(Pending { id, expect, tx });
        core.counters.requests.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Writing failed: the port is gone.
    pub(super) fn write_failed(&self, e: &std::io::Error) -> LinkError {
        self.inner
            .core
            .shut(CloseReason::Gone(describe_io("writing to the port", e)));
        self.gone()
    }

    /// The reply came.
    pub(super) fn answered(&self, arrival: Arrival, sent: Instant, written: Instant) -> Reply {
        self.inner.consecutive_timeouts.store(0, Ordering::Relaxed);
        Reply {
            payload: arrival.payload,
            sent,
            written,
            received: arrival.at,
        }
    }

    async fn send_and_wait(
        &self,
        writer: &mut Writer,
        expect: Expect,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        let (tx, mut rx) = oneshot::channel();
        let id = self.register(writer, expect, payload, Tx::Async(tx))?;
        let mut guard = InFlight {
            core: &self.inner.core,
            id,
            grace: self.inner.options.stale_grace,
            armed: true,
        };
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + timeout);
        let Some(half) = writer.half.as_mut() else {
            guard.armed = false;
            return Err(self.gone());
        };
        let write = tokio::time::timeout_at(deadline, half.write_all(&writer.buf)).await;
        guard.armed = false;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.write_failed(&e)),
            // A partial packet may be on the wire; the firmware's parser drops it on a bad CRC.
            Err(_) => return self.timed_out(id, command, timeout, || late(&mut rx), sent, sent),
        }
        guard.armed = true;
        let written = Instant::now();
        let outcome = tokio::time::timeout_at(deadline, &mut rx).await;
        guard.armed = false;
        match outcome {
            Ok(Ok(Ok(arrival))) => Ok(self.answered(arrival, sent, written)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => self.timed_out(id, command, timeout, || late(&mut rx), sent, written),
        }
    }

    /// Request `id` timed out: give it up, or take its reply if it raced in (`late`).
    pub(super) fn timed_out(
        &self,
        id: u16,
        command: &'static str,
        after: Duration,
        late: impl FnOnce() -> Option<Arrival>,
        sent: Instant,
        written: Instant,
    ) -> Result<Reply, LinkError> {
        let core = &self.inner.core;
        let grace = Instant::now() + self.inner.options.stale_grace;
        let abandoned = lock(&core.slot).abandon(id, grace);
        if !abandoned {
            if let Some(arrival) = late() {
                return Ok(self.answered(arrival, sent, written));
            }
        }
        core.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        let run = self
            .inner
            .consecutive_timeouts
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let limit = self.inner.options.dead_after_timeouts;
        if limit > 0 && run >= limit {
            core.shut(CloseReason::Gone(format!(
                "the board stopped answering ({run} requests in a row got no reply)"
            )));
        }
        Err(LinkError::Timeout { command, after })
    }

    /// Without a probe: wait (up to the grace period) for the replies owed to timed-out
    /// requests, so they are not taken for the next one.
    async fn drain_stale(&self) -> Result<(), LinkError> {
        let core = &self.inner.core;
        loop {
            let until = {
                let mut slot = lock(&core.slot);
                match slot.stale_until {
                    _ if !slot.out_of_step() => return Ok(()),
                    Some(until) if until > Instant::now() => until,
                    _ => {
                        slot.forget_stale();
                        return Ok(());
                    }
                }
            };
            let until = tokio::time::Instant::from_std(until);
            tokio::select! {
                _ = core.drained.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            self.check_open()?;
        }
    }

    pub(super) fn gone(&self) -> LinkError {
        self.close_reason()
            .map(|r| r.to_error())
            .unwrap_or(LinkError::Gone {
                reason: "the reader stopped".into(),
            })
    }
}

/// A reply that raced in as the request timed out.
fn late(rx: &mut oneshot::Receiver<Result<Arrival, LinkError>>) -> Option<Arrival> {
    rx.try_recv().ok().and_then(Result::ok)
}
