//! A serial port (or a pty) opened by path, as the link uses it: written from tokio (write
//! readiness only) and read by a dedicated thread.
//!
//! Why a thread reads: every reply and every sample waits for the reader. As a tokio task it
//! shares the runtime's workers with everything else (MQTT, telemetry, a simulator in tests):
//! on a two-core machine, with the engine spinning on one core, a sample's hand-over to the
//! engine took 15 µs at the median but 102 µs at p99 (`docs/benchmarks.md`). A thread blocked
//! in `poll(2)` runs when the bytes arrive, with nothing queued before it; and since the port
//! is registered with tokio for write readiness only, arriving bytes no longer wake a runtime
//! worker too. The thread keeps the normal priority: at a real-time one (just below the
//! engine's) the engine's own timing got worse (phase starts issued p99 19-24 µs late instead
//! of 1-4, the feedback reaction p99 167 µs instead of 110; two A/B runs on two cores), as
//! the kernel moves a real-time thread that wakes where the engine spins.

use std::io;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};

use super::error::LinkError;
use super::transport::{Core, ReaderDone, ReaderHandle, Reading};

/// An open serial port: exclusive, 115200 baud (ignored by USB CDC), raw, DTR asserted.
#[derive(Debug)]
pub struct Port {
    fd: OwnedFd,
    path: String,
}

/// Open the serial port at `path` as the board layer does: exclusively (a second opener, e.g.
/// another plugin instance or a terminal, would corrupt the one-request-in-flight stream), at
/// 115200 baud, in raw mode, DTR asserted (CDC firmware reads it as "a host is listening"; a
/// Teensy does not reset on DTR, only on the 134-baud reboot request).
pub fn open_port(path: &str) -> Result<Port, LinkError> {
    let failed = |reason: String| LinkError::Open {
        path: path.to_owned(),
        reason,
    };
    let port = tokio_serial::new(path, 115_200)
        .dtr_on_open(true)
        .open_native()
        .map_err(|e| failed(describe_open_error(path, &e)))?;
    // SAFETY: `into_raw_fd` hands over the port's open descriptor, owned by nothing else now.
    let fd = unsafe { OwnedFd::from_raw_fd(port.into_raw_fd()) };
    // Non-blocking: the writer must never block a runtime worker, and the reader waits in
    // poll(2) anyway (the flag is shared by the duplicate it reads from).
    let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(|e| failed(e.desc().to_owned()))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(|e| failed(e.desc().to_owned()))?;
    Ok(Port {
        fd,
        path: path.to_owned(),
    })
}

fn describe_open_error(path: &str, e: &tokio_serial::Error) -> String {
    let exists = std::path::Path::new(path).exists();
    match e.kind() {
        tokio_serial::ErrorKind::NoDevice if exists => format!(
            "{e} (the port exists: another program, or another instance of this one, probably \
             holds it open)"
        ),
        tokio_serial::ErrorKind::NoDevice | tokio_serial::ErrorKind::Io(_) if !exists => {
            format!("{e} (no such port: is the board plugged in? list ports with `ports`)")
        }
        tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => format!(
            "{e} (permission denied: add your user to the `dialout` group or install the udev \
             rule)"
        ),
        _ => e.to_string(),
    }
}

impl Port {
    /// The path it was opened at.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The writer (registered with the current tokio runtime) and a duplicate descriptor for
    /// the reader thread.
    pub(super) fn split(self) -> Result<(PortWriter, OwnedFd), LinkError> {
        let Port { fd, path } = self;
        let failed = |e: io::Error| LinkError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        let reader = fd.try_clone().map_err(failed)?;
        // SAFETY: an `OwnedFd` is open and always returns the same descriptor; the `AsyncFd`
        // owns it until dropped.
        let writer = unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }
            .map_err(|e| failed(e.into()))?;
        Ok((PortWriter(writer), reader))
    }
}

/// The port's write half: writes go straight to the descriptor; only a full output buffer
/// waits for tokio's write readiness.
pub(super) struct PortWriter(AsyncFd<OwnedFd>);

impl AsyncWrite for PortWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match nix::unistd::write(self.0.get_ref(), buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            // Full: wait until writable (readiness seen before this attempt is stale).
            let mut ready = ready!(self.0.poll_write_ready(cx))?;
            ready.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A serial port's flush is a blocking `tcdrain`; the bytes are in the kernel already.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Start the reader thread on `fd`; it runs until the port ends or fails (then it closes the
/// link) or until the returned handle is stopped.
pub(super) fn spawn_reader(
    core: Arc<Core>,
    fd: OwnedFd,
    idle_flush: Duration,
) -> io::Result<ReaderHandle> {
    let (stop, stopped) = UnixStream::pair()?;
    std::thread::Builder::new()
        .name("board-reader".into())
        .spawn(move || read_thread(core, fd, stopped, idle_flush))?;
    Ok(ReaderHandle::Thread(stop))
}

fn read_thread(core: Arc<Core>, fd: OwnedFd, stopped: UnixStream, idle_flush: Duration) {
    // Declared before `fd`, so dropped after it: "done" means the descriptor is closed.
    let _done = ReaderDone(core.clone());
    let (fd, stopped) = (fd, stopped);
    let mut reading = Reading::new(core);
    let idle =
        PollTimeout::try_from(idle_flush.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
    let hang_up = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
    let reason = loop {
        let mut fds = [
            PollFd::new(fd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = match reading.candidate_open() {
            true => idle,
            false => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                reading.idle();
                continue;
            }
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => break format!("waiting for the port failed: {}", e.desc()),
        }
        let [port, stop] = fds.map(|f| f.revents().unwrap_or(PollFlags::empty()));
        if !stop.is_empty() {
            // Stopped by this program: the link is closed already, or closing.
            return;
        }
        match nix::unistd::read(&fd, &mut reading.buf) {
            Err(Errno::EAGAIN) if port.intersects(hang_up) => {
                break "the port hung up: the board was unplugged or its port closed".to_owned()
            }
            Err(Errno::EAGAIN) => continue,
            read => {
                if let Some(reason) = reading.read(read.map_err(io::Error::from)) {
                    break reason;
                }
            }
        }
    };
    reading.gone(reason);
}
