//! Requests from a plain thread: the actuation engine writes its frames from its own thread at
//! its deadlines. Same slot, same resync and timeout rules as the async path, but no tokio
//! timer and no task hop: the calling thread writes the packet itself and blocks on the
//! reply, which the link's reader hands over through a channel. (A tokio timer taken from
//! a real-time thread shares the timer driver's lock with the runtime's workers; on a loaded
//! machine that lock is how a frame gets late.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::io::AsyncWrite;

use super::error::LinkError;
use super::link::{Link, Reply};
use super::slot::{Expect, Tx};
use super::transport::{lock, Writer};

/// While the port cannot take more bytes (a board that stopped reading), look again this often.
const WRITE_RETRY: Duration = Duration::from_micros(200);

impl Link {
    /// [`Link::request_timed`] from a thread that is not running async tasks (it blocks that
    /// thread). Must not be called from inside an async runtime.
    pub fn request_blocking(
        &self,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, LinkError> {
        self.request_blocking_at(command, payload, timeout, None)
    }

    /// [`Link::request_blocking`], written no earlier than `at`: everything but the write
    /// itself (taking the port, encoding, registering the reply's slot) is done first, then
    /// the thread spins to `at` and only the write is left. For frames with a deadline.
    pub fn request_blocking_at(
        &self,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
        at: Option<Instant>,
    ) -> Result<Reply, LinkError> {
        self.check_open()?;
        let mut writer = self.core().writer.blocking_lock();
        let result = (|| {
            self.check_open()?;
            match self.resync_needed() {
                Some(Some(probe)) => {
                    let (payload, answer) = probe(rand::random());
                    let probe = Expect::Probe(answer);
                    self.send_and_wait_blocking(
                        &mut writer,
                        probe,
                        "resync",
                        &payload,
                        timeout,
                        None,
                    )
                    .map_err(|e| e.for_command(command))?;
                }
                Some(None) => self.drain_stale_blocking()?,
                None => {}
            }
            self.send_and_wait_blocking(&mut writer, Expect::Data, command, payload, timeout, at)
        })();
        self.release_if_closed(&mut writer);
        result
    }

    fn send_and_wait_blocking(
        &self,
        writer: &mut Writer,
        expect: Expect,
        command: &'static str,
        payload: &[u8],
        timeout: Duration,
        at: Option<Instant>,
    ) -> Result<Reply, LinkError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.register(writer, expect, payload, Tx::Blocking(tx))?;
        if let Some(at) = at {
            spin_until(at);
        }
        let sent = Instant::now();
        let deadline = sent + timeout;
        let late = |rx: &Receiver<_>| rx.try_recv().ok().and_then(Result::ok);
        let Some(half) = writer.half.as_mut() else {
            return Err(self.gone());
        };
        match write_all_blocking(half.as_mut(), &writer.buf, deadline) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return self.timed_out(id, command, timeout, || late(&rx), sent, sent);
            }
            Err(e) => return Err(self.write_failed(&e)),
        }
        let written = Instant::now();
        match rx.recv_deadline(deadline) {
            Ok(Ok(arrival)) => Ok(self.answered(arrival, sent, written)),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Disconnected) => Err(self.gone()),
            Err(RecvTimeoutError::Timeout) => {
                self.timed_out(id, command, timeout, || late(&rx), sent, written)
            }
        }
    }

    /// Without a probe: wait (up to the grace period) for the replies owed to timed-out
    /// requests, so they are not taken for the next one.
    fn drain_stale_blocking(&self) -> Result<(), LinkError> {
        loop {
            {
                let mut slot = lock(&self.core().slot);
                match slot.stale_until {
                    _ if !slot.out_of_step() => return Ok(()),
                    Some(until) if until > Instant::now() => {}
                    _ => {
                        slot.forget_stale();
                        return Ok(());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
            self.check_open()?;
        }
    }
}

/// Busy-wait until `at`: for the last few hundred microseconds before a deadline, where
/// sleeping (even spin-sleeping) would wake too late.
pub fn spin_until(at: Instant) {
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// Write all of `buf` by polling the port's write half from this thread (no runtime needed:
/// a port that can take the bytes takes them at once; one that cannot is looked at again
/// until `deadline`, then `TimedOut`).
fn write_all_blocking(
    half: &mut (dyn AsyncWrite + Send + Unpin),
    buf: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = 0;
    while let Some(rest) = buf.get(done..).filter(|r| !r.is_empty()) {
        match Pin::new(&mut *half).poll_write(&mut cx, rest) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => done += n,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending if Instant::now() >= deadline => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Poll::Pending => std::thread::sleep(WRITE_RETRY),
        }
    }
    Ok(())
}
