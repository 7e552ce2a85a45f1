//! [`SimHandle`]: cloneable control and inspection of a running simulated board.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::options::Faults;
use super::pty;
use super::server::{replace_pty, Control, Shared};
use super::snapshot::SimSnapshot;
use super::trace::{TraceEntry, TraceRecord};
use super::SimError;

/// An electrode named by index (in the device's order) or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElectrodeRef {
    /// Position in the device's electrode list.
    Index(usize),
    /// MicroDrop id, e.g. `electrode042`.
    Id(String),
}

impl From<usize> for ElectrodeRef {
    fn from(i: usize) -> Self {
        ElectrodeRef::Index(i)
    }
}

impl From<&str> for ElectrodeRef {
    fn from(id: &str) -> Self {
        ElectrodeRef::Id(id.to_owned())
    }
}

impl From<String> for ElectrodeRef {
    fn from(id: String) -> Self {
        ElectrodeRef::Id(id)
    }
}

/// Control and inspection of a simulated board; clones share the board. When the last clone
/// is dropped the board shuts down (HV and channels off, link removed).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<Control>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("path", &self.path())
            .finish()
    }
}

impl SimHandle {
    pub(super) fn new(shared: Arc<Shared>, ctl: mpsc::UnboundedSender<Control>) -> Self {
        Self { shared, ctl }
    }

    /// The pty slave the host opens (`/dev/pts/N`; a new one after each replug and each
    /// re-enumeration after an MCU reset).
    pub fn path(&self) -> PathBuf {
        self.shared.path.borrow().clone()
    }

    /// The pty path as it changes (replugs, re-enumerations after MCU resets).
    pub fn path_changes(&self) -> watch::Receiver<PathBuf> {
        self.shared.path.subscribe()
    }

    /// The symlink that follows replugs, if the board was spawned at one.
    pub fn link(&self) -> Option<PathBuf> {
        self.shared.link.clone()
    }

    /// Simulation time now.
    pub fn now(&self) -> Duration {
        self.shared.core().clock.now()
    }

    /// The board's `micros()` counter now (what `microseconds()` would answer), to check a
    /// host's mapping of board time.
    pub fn board_micros(&self) -> u32 {
        self.shared.core().board_micros()
    }

    /// The board now: channels, HV, chip, droplets.
    pub fn snapshot(&self) -> SimSnapshot {
        self.shared.core().snapshot()
    }

    /// Replace the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.core().set_faults(faults);
        self.shared.wake.notify_one();
    }

    /// The injected faults.
    pub fn faults(&self) -> Faults {
        self.shared.core().faults().clone()
    }

    /// Pull the USB cable: the board loses power (HV and channels off), the host reads EOF and
    /// the pty (and the link) disappear.
    pub async fn unplug(&self) {
        {
            let mut core = self.shared.core();
            core.power_off();
            let now = core.clock.now();
            let path = self.path().display().to_string();
            core.fw.record(
                now,
                TraceEntry::Fault {
                    fault: "unplug".into(),
                    detail: path,
                },
            );
        }
        if let Some(link) = &self.shared.link {
            pty::unlink(link);
        }
        let (ack, done) = oneshot::channel();
        if self.ctl.send(Control::Unplug(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Plug the cable back in: a new pty (and the link pointed at it), the firmware boots.
    pub async fn replug(&self) -> Result<PathBuf, SimError> {
        let master = replace_pty(&self.shared)?;
        self.shared.core().power_on("power restored (replug)");
        let (ack, done) = oneshot::channel();
        self.ctl
            .send(Control::Plug(master, ack))
            .map_err(|_| SimError::Closed)?;
        done.await.map_err(|_| SimError::Closed)?;
        Ok(self.path())
    }

    /// Restart the MCU (as the `reboot` command does): the USB device vanishes and comes back
    /// as a new pty after the re-enumeration delay; its path.
    pub async fn reboot(&self) -> Result<PathBuf, SimError> {
        let mut changes = self.path_changes();
        changes.borrow_and_update();
        self.shared.core().reboot("reboot (simulator control)");
        self.shared.wake.notify_one();
        changes.changed().await.map_err(|_| SimError::Closed)?;
        let path = changes.borrow().clone();
        Ok(path)
    }

    /// Insert or remove the chip (events follow after the interlock's debounce).
    pub fn insert_chip(&self, inserted: bool) {
        let mut core = self.shared.core();
        let now = core.clock.now();
        core.fw.insert_chip(inserted, now);
        drop(core);
        self.shared.wake.notify_one();
    }

    /// Set the channels shorted to ground on the chip.
    pub fn set_shorted(&self, channels: Vec<u16>) {
        let mut core = self.shared.core();
        let now = core.clock.now();
        let detail = format!("{channels:?}");
        core.fw.physics_mut().set_shorted(channels);
        core.fw.record(
            now,
            TraceEntry::Fault {
                fault: "shorted".into(),
                detail,
            },
        );
    }

    /// Put a droplet of `volume_ul` µL at rest on an electrode; its id.
    pub fn add_droplet(
        &self,
        electrode: impl Into<ElectrodeRef>,
        volume_ul: f64,
    ) -> Result<u32, SimError> {
        let mut core = self.shared.core();
        let index = resolve(&core.fw, electrode.into())?;
        let now = core.clock.now();
        let id = core
            .fw
            .physics_mut()
            .add_droplet(index, volume_ul)
            .ok_or_else(|| {
                SimError::Options(format!("droplet volume {volume_ul} µL must be positive"))
            })?;
        core.fw.record_droplets(now);
        drop(core);
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// The volume (µL) that exactly covers an electrode.
    pub fn unit_volume(&self, electrode: impl Into<ElectrodeRef>) -> Result<f64, SimError> {
        let core = self.shared.core();
        let index = resolve(&core.fw, electrode.into())?;
        Ok(core.fw.physics().unit_volume(index))
    }

    /// Move a virtual clock forward, running everything due on the way; no effect on a real
    /// clock.
    pub fn advance(&self, by: Duration) {
        self.shared.core().advance(by);
        self.shared.wake.notify_one();
    }

    /// The trace records kept in memory, oldest first.
    pub fn trace(&self) -> Vec<TraceRecord> {
        self.shared.core().fw.tracer().records()
    }

    /// Trace records as they happen.
    pub fn subscribe_trace(&self) -> broadcast::Receiver<TraceRecord> {
        self.shared.core().fw.tracer().subscribe()
    }

    /// Stop the board: HV and channels off, the pty closed, the link removed, the trace flushed.
    pub async fn shutdown(self) {
        let _ = self.ctl.send(Control::Shutdown);
        let task = crate::sync::lock(&self.shared.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared.core().fw.flush_trace();
    }
}

fn resolve(fw: &super::firmware::Firmware, electrode: ElectrodeRef) -> Result<usize, SimError> {
    let layout = fw.physics().layout();
    match electrode {
        ElectrodeRef::Index(i) if i < layout.len() => Ok(i),
        ElectrodeRef::Index(i) => Err(SimError::UnknownElectrode(i.to_string())),
        ElectrodeRef::Id(id) => layout.index_of(&id).ok_or(SimError::UnknownElectrode(id)),
    }
}
