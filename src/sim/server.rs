//! The simulator's I/O task and its handle: serves the board on a pty master, runs the firmware's
//! ticks in real time (or leaves time to `advance` with a virtual clock), and acts out unplug,
//! replug and shutdown. The board itself is a [`SimCore`] shared with the handle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_serial::SerialStream;

use super::clock::SimClock;
use super::core::SimCore;
use super::faults::FaultInjector;
use super::firmware::{Firmware, FirmwareOptions};
use super::handle::SimHandle;
use super::layout::Layout;
use super::options::SimOptions;
use super::physics::Physics;
use super::pty;
use super::switching::{Switching, CHANNELS_PER_BOARD, MAX_CHANNELS};
use super::trace::{TraceEntry, Tracer};
use super::SimError;

/// How often to look for a host while nobody holds the slave.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// Longest wait for the host to take bytes before they are dropped (a full pty buffer).
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// What the handle asks of the I/O task.
pub(super) enum Control {
    Unplug(oneshot::Sender<()>),
    Plug(SerialStream, oneshot::Sender<()>),
    Shutdown,
}

/// State shared by the handle and the I/O task.
pub(super) struct Shared {
    pub core: Mutex<SimCore>,
    /// The pty slave the host opens; changes on every replug and re-enumeration.
    pub path: watch::Sender<PathBuf>,
    pub link: Option<PathBuf>,
    pub wake: Notify,
    pub task: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub fn core(&self) -> MutexGuard<'_, SimCore> {
        // A panic while holding the lock leaves a usable board; keep serving.
        crate::sync::lock(&self.core)
    }
}

/// A simulated board on a fresh pty; the returned handle's `path()` (`/dev/pts/N`) is opened
/// by the host through the normal open path (`tokio_serial::new(path, 115200)`).
pub async fn spawn_pty(opts: SimOptions) -> Result<SimHandle, SimError> {
    spawn(opts, None)
}

/// Same as [`spawn_pty`], with a symlink at `link` that follows replugs.
pub async fn spawn_at_link(opts: SimOptions, link: &Path) -> Result<SimHandle, SimError> {
    spawn(opts, Some(link.to_path_buf()))
}

fn spawn(opts: SimOptions, link: Option<PathBuf>) -> Result<SimHandle, SimError> {
    let core = build_core(opts)?;
    let (master, path) = pty::open_pair()?;
    if let Some(link) = &link {
        pty::relink(link, &path)?;
    }
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        path: watch::Sender::new(path),
        link,
        wake: Notify::new(),
        task: Mutex::new(None),
    });
    let task = tokio::spawn(serve(Arc::clone(&shared), master, ctl_rx));
    *crate::sync::lock(&shared.task) = Some(task);
    Ok(SimHandle::new(shared, ctl_tx))
}

/// The board described by `opts`, powered on at time zero.
pub(super) fn build_core(opts: SimOptions) -> Result<SimCore, SimError> {
    if opts.channels == 0 || opts.channels % CHANNELS_PER_BOARD != 0 || opts.channels > MAX_CHANNELS
    {
        return Err(SimError::Options(format!(
            "channel count {} is not 40, 80 or 120 (1 to 3 switching boards of 40 channels)",
            opts.channels
        )));
    }
    if !(opts.supply_v.is_finite() && opts.supply_v >= 0.0) {
        return Err(SimError::Options(format!(
            "supply voltage {} V is not a voltage (use 0 for no power supply)",
            opts.supply_v
        )));
    }
    let layout = match opts.device {
        Some(device) => Layout::from_device(device),
        None => Layout::default_grid()?,
    };
    let timing = opts.timing.params();
    let mut seeds = ChaCha8Rng::seed_from_u64(opts.seed);
    let uuid = opts.uuid.unwrap_or_else(|| {
        let mut uuid = [0u8; 16];
        seeds.fill_bytes(&mut uuid);
        uuid
    });
    let mut physics = Physics::new(
        layout,
        opts.physics,
        timing.hv_step,
        opts.chip_inserted,
        opts.supply_v,
        seeds.next_u64(),
    );
    physics.set_shorted(opts.shorted.iter().copied());
    let faults = FaultInjector::new(opts.faults, seeds.next_u64());
    let tracer =
        Tracer::new(opts.trace.as_deref(), opts.trace_capacity).map_err(|e| SimError::File {
            path: opts.trace.clone().unwrap_or_default(),
            source: e,
        })?;
    let clock = if opts.virtual_clock {
        SimClock::virtual_clock()
    } else {
        SimClock::real()
    };
    let fw_opts = FirmwareOptions {
        firmware_id: opts.firmware_id,
        uuid,
        timing,
    };
    let boards = Switching::new(opts.channels, !opts.switching_boards_late);
    let mut fw = Firmware::new(fw_opts, physics, boards, tracer, clock.now());
    // Boards that came up late answer from now on, but the boot-time scan missed them.
    fw.boards_mut().set_answering(true);
    Ok(SimCore::new(fw, clock, timing, faults))
}

/// The I/O task.
async fn serve(
    shared: Arc<Shared>,
    master: SerialStream,
    mut ctl: mpsc::UnboundedReceiver<Control>,
) {
    let mut master = Some(master);
    let mut connected = false;
    let mut buf = vec![0u8; 4096];
    let is_virtual = shared.core().clock.is_virtual();
    // While the USB device re-enumerates after an MCU reset: when it is back.
    let mut back_at: Option<Instant> = None;
    loop {
        let reset = {
            let mut core = shared.core();
            core.pump();
            core.take_reenumeration()
        };
        if let Some(delay) = reset {
            // The MCU reset: the host sees the device vanish and, after the Teensy's startup
            // delays, a new one.
            master = None;
            connected = false;
            if let Some(link) = &shared.link {
                pty::unlink(link);
            }
            back_at = Some(Instant::now() + delay);
        }
        if let Some(at) = back_at.filter(|at| *at <= Instant::now()) {
            match replace_pty(&shared) {
                Ok(m) => {
                    master = Some(m);
                    back_at = None;
                }
                Err(e) => {
                    tracing::warn!("simulator: re-enumerating: {e}");
                    back_at = Some(at + IDLE_POLL * 20);
                }
            }
        }
        let write_at = flush(&shared, &mut master, connected).await;
        let mut wake_at = Instant::now() + Duration::from_secs(1);
        let accepting = {
            let core = shared.core();
            if !is_virtual {
                wake_at = wake_at.min(core.next_wakeup());
            }
            core.accepting()
        };
        for at in [write_at, back_at].into_iter().flatten() {
            wake_at = wake_at.min(at);
        }
        if master.is_some() && !connected {
            wake_at = wake_at.min(Instant::now() + IDLE_POLL);
        }
        tokio::select! {
            biased;
            control = ctl.recv() => match control {
                None | Some(Control::Shutdown) => break,
                Some(Control::Unplug(ack)) => {
                    master = None;
                    connected = false;
                    back_at = None;
                    let _ = ack.send(());
                }
                Some(Control::Plug(m, ack)) => {
                    master = Some(m);
                    connected = false;
                    back_at = None;
                    let _ = ack.send(());
                }
            },
            read = read_some(&mut master, &mut buf), if connected && accepting => match read {
                Ok(n) if n > 0 => {
                    if let Some(bytes) = buf.get(..n) {
                        shared.core().receive(bytes);
                    }
                }
                Ok(_) => connected = false,
                Err(e) => {
                    if !pty::is_hangup(&e) {
                        tracing::warn!("simulator pty read: {e}");
                    }
                    connected = false;
                }
            },
            () = shared.wake.notified() => {}
            () = tokio::time::sleep_until(wake_at.into()) => {}
        }
        if let Some(m) = master.as_ref() {
            if !connected && pty::peer_connected(m) {
                match pty::fresh_handle(m) {
                    Ok(fresh) => {
                        master = Some(fresh);
                        connected = true;
                    }
                    Err(e) => tracing::warn!("simulator pty: {e}"),
                }
            }
        }
    }
    let mut core = shared.core();
    core.power_off();
    let now = core.clock.now();
    core.fw.record(
        now,
        TraceEntry::Note {
            message: "simulator shut down".into(),
        },
    );
    drop(core);
    if let Some(link) = &shared.link {
        pty::unlink(link);
    }
}

/// A new pty for the board (and the link pointed at it): a replug or a re-enumeration.
pub(super) fn replace_pty(shared: &Shared) -> Result<SerialStream, SimError> {
    let (master, path) = pty::open_pair()?;
    if let Some(link) = &shared.link {
        pty::relink(link, &path)?;
    }
    let detail = path.display().to_string();
    {
        let mut core = shared.core();
        let now = core.clock.now();
        core.fw.record(
            now,
            TraceEntry::Fault {
                fault: "usb".into(),
                detail: format!("device present at {detail}"),
            },
        );
    }
    shared.path.send_replace(path);
    Ok(master)
}

/// Read from the master, or wait forever when there is none.
async fn read_some(master: &mut Option<SerialStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match master.as_mut() {
        Some(m) => m.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Write every queued packet whose time has come; when the next one is due.
async fn flush(
    shared: &Shared,
    master: &mut Option<SerialStream>,
    connected: bool,
) -> Option<Instant> {
    loop {
        let next = shared.core().pop_outgoing(Instant::now());
        let bytes = match next {
            Ok(bytes) => bytes,
            Err(at) => return at,
        };
        let Some(m) = master.as_mut().filter(|_| connected) else {
            // Nobody listening: a real board's USB buffer drops them too.
            shared.core().discard_outgoing();
            return None;
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, m.write_all(&bytes)).await;
        if !matches!(written, Ok(Ok(()))) {
            let mut core = shared.core();
            let now = core.clock.now();
            let detail = format!("{} bytes not written (host not reading)", bytes.len());
            core.fw.record(
                now,
                TraceEntry::Fault {
                    fault: "tx_overflow".into(),
                    detail,
                },
            );
        }
    }
}
