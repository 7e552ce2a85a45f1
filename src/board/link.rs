//! The one owner of the port: a reader task (in `transport.rs`) and a serialised
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
use super::slot::{Arrival, Expect, Pending, Slot};
pub use super::transport::LinkStats;
use super::transport::{
    describe_io, lock, read_loop, CloseReason, Core, Counters, InFlight, Writer,
};

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Default per-request timeout.
    pub request_timeout: Duration,
    /// Timeout of one ID handshake attempt.
    pub handshake_timeout: Duration,
    /// How long, after a timeout, the next request waits for the late reply before sending
    /// (only for boards that do not echo request ids).
    pub stale_grace: Duration,
    /// Consecutive timeouts after which the board counts as gone (0: never).
    pub dead_after_timeouts: u32,
    /// Events buffered per subscriber before the slowest loses the oldest.
    pub event_capacity: usize,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_millis(500),
            handshake_timeout: Duration::from_millis(300),
            stale_grace: Duration::from_millis(300),
            dead_after_timeouts: 3,
            event_capacity: 256,
        }
    }
}

/// A reply with the host times of the round trip.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply payload.
    pub payload: Vec<u8>,
    /// When the request's first byte was written.
    pub sent: Instant,
    /// When the reply was decoded.
    pub received: Instant,
}

/// A handle to the link; cheap to clone. The port closes when the last handle is dropped.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    options: LinkOptions,
    consecutive_timeouts: AtomicU32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reader) = lock(&self.core.reader).take() {
            reader.abort();
        }
    }
}

impl Link {
    /// Take over `stream` (a serial port, a pty, any byte stream) and start its reader task.
    /// Must be called within a tokio runtime.
    pub fn spawn<S>(stream: S, options: LinkOptions) -> Link
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let (closed, _) = watch::channel(None);
        let (reader_done, _) = watch::channel(false);
        let core = Arc::new(Core {
            slot: Mutex::new(Slot::default()),
            drained: Notify::new(),
            writer: tokio::sync::Mutex::new(Writer::new(Box::new(write_half))),
            counters: Counters::default(),
            events,
            clock: Mutex::new(BoardClock::default()),
            closed,
            reader: Mutex::new(None),
            reader_done,
        });
        let task = tokio::spawn(read_loop(core.clone(), read_half));
        *lock(&core.reader) = Some(task.abort_handle());
        Link {
            inner: Arc::new(Inner {
                core,
                options,
                consecutive_timeouts: AtomicU32::new(0),
            }),
        }
    }

    /// The options this link was made with.
    pub fn options(&self) -> &LinkOptions {
        &self.inner.options
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

    /// [`Link::request`], also returning when it was sent and answered.
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

    /// Subscribe to the board's events.
    pub fn events(&self) -> broadcast::Receiver<BoardEvent> {
        self.inner.core.events.subscribe()
    }

    /// Run `f` on the board clock (shared with the event stamping).
    pub fn with_clock<T>(&self, f: impl FnOnce(&mut BoardClock) -> T) -> T {
        f(&mut lock(&self.inner.core.clock))
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.inner.core.counters.snapshot()
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

    fn check_open(&self) -> Result<(), LinkError> {
        match self.close_reason() {
            Some(reason) => Err(reason.to_error()),
            None => Ok(()),
        }
    }

    async fn exchange(
        &self,
        expect: Expect,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        let core = &self.inner.core;
        self.check_open()?;
        let mut writer = core.writer.lock().await;
        if let Err(e) = self.check_open() {
            writer.half = None;
            return Err(e);
        }
        if expect == Expect::Data {
            self.drain_stale().await?;
        }
        let id = writer.next_id();
        let packet = match expect {
            Expect::Data => Packet::Data {
                id,
                payload: payload.to_vec(),
            },
            Expect::Identity => Packet::IdRequest { id },
        };
        let writer = &mut *writer;
        writer.buf.clear();
        packet.encode_into(&mut writer.buf)?;
        let (tx, mut rx) = oneshot::channel();
        lock(&core.slot).pending = Some(Pending { id, expect, tx });
        let mut guard = InFlight {
            core,
            id,
            grace: self.inner.options.stale_grace,
            armed: true,
        };
        core.counters.requests.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent + timeout);
        let Some(half) = writer.half.as_mut() else {
            guard.armed = false;
            return Err(self.gone());
        };
        match tokio::time::timeout_at(deadline, half.write_all(&writer.buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                guard.armed = false;
                writer.half = None;
                core.shut(CloseReason::Gone(describe_io("writing to the port", &e)));
                return Err(self.gone());
            }
            Err(_) => {
                // A partial packet may be on the wire; the board's decoder resyncs on `|||`.
                return match self.timed_out(&mut guard, &mut rx, command, timeout, sent) {
                    Ok(error) => Err(error),
                    Err(reply) => Ok(reply),
                };
            }
        }
        let outcome = tokio::time::timeout_at(deadline, &mut rx).await;
        match outcome {
            Ok(Ok(Ok(arrival))) => {
                guard.armed = false;
                self.inner.consecutive_timeouts.store(0, Ordering::Relaxed);
                Ok(Reply {
                    payload: arrival.payload,
                    sent,
                    received: arrival.at,
                })
            }
            Ok(Ok(Err(e))) => {
                guard.armed = false;
                writer.half = None;
                Err(e)
            }
            Ok(Err(_)) => {
                guard.armed = false;
                writer.half = None;
                Err(self.gone())
            }
            Err(_) => {
                let result = self.timed_out(&mut guard, &mut rx, command, timeout, sent);
                if self.is_closed() {
                    writer.half = None;
                }
                match result {
                    Ok(error) => Err(error),
                    Err(reply) => Ok(reply),
                }
            }
        }
    }

    /// The request timed out: give it up, or take its reply if it raced in. `Ok(error)` is the
    /// timeout to report; `Err(reply)` is a reply that arrived at the last instant.
    fn timed_out(
        &self,
        guard: &mut InFlight<'_>,
        rx: &mut oneshot::Receiver<Result<Arrival, LinkError>>,
        command: &'static str,
        after: Duration,
        sent: Instant,
    ) -> Result<LinkError, Reply> {
        guard.armed = false;
        let core = &self.inner.core;
        let abandoned = lock(&core.slot).abandon(guard.id, Instant::now() + guard.grace);
        if !abandoned {
            if let Ok(Ok(arrival)) = rx.try_recv() {
                self.inner.consecutive_timeouts.store(0, Ordering::Relaxed);
                return Err(Reply {
                    payload: arrival.payload,
                    sent,
                    received: arrival.at,
                });
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
        Ok(LinkError::Timeout { command, after })
    }

    /// Before a DATA request: if replies are owed to timed-out requests and the board does not
    /// echo ids, wait for them (up to the grace period) so they are not taken for ours.
    async fn drain_stale(&self) -> Result<(), LinkError> {
        let core = &self.inner.core;
        loop {
            let until = {
                let mut slot = lock(&core.slot);
                if slot.stale == 0 || slot.echo_trusted() {
                    return Ok(());
                }
                match slot.stale_until {
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

    fn gone(&self) -> LinkError {
        self.close_reason()
            .map(|r| r.to_error())
            .unwrap_or(LinkError::Gone {
                reason: "the reader stopped".into(),
            })
    }
}
