//! A DropBot on the wire behind a pseudo-terminal, for tests, benchmarks and demos without
//! hardware. It speaks the `firmware-protocol` crate's packets exactly as the board does (ID
//! handshake, every command of the simulator's table, state and config validation, gated
//! events), over a pty that the host opens like a serial port.
//!
//! Pure core, thin I/O:
//! - [`firmware`] (+ `commands`, `ticks`): the firmware as a state machine, packets in and out
//!   at a given simulation time;
//! - [`physics`] (+ [`hv`], [`layout`]): electrodes, droplets, capacitance, current, shorts;
//! - [`clock`]: real or virtual time; [`faults`]: injected byte faults; [`trace`]: JSON lines
//!   of what the board did;
//! - [`pty`] + `server` + [`handle`]: the I/O task serving a pty master, and [`SimHandle`] to
//!   control it (unplug, replug, reboot, chip, droplets, virtual time);
//! - [`cli`]: the `simulate` subcommand; [`control`]: its live fault commands (stdin, `--at`).
//!
//! Beyond the real board it has an optional host-liveness watchdog (`set_host_watchdog`):
//! HV and all channels go off when the host is silent for the configured time.

pub mod cli;
pub mod clock;
mod commands;
pub mod control;
mod core;
pub mod faults;
pub mod firmware;
pub mod handle;
pub mod hv;
pub mod layout;
mod motion;
pub mod options;
mod output;
pub mod physics;
pub mod pty;
mod server;
pub mod snapshot;
mod ticks;
pub mod trace;

#[cfg(test)]
mod physics_tests;

use std::path::PathBuf;

pub use cli::{run_simulate, SimulateArgs};
pub use clock::SimClock;
pub use firmware::{Firmware, FirmwareOptions};
pub use handle::{ElectrodeRef, SimHandle};
pub use layout::Layout;
pub use options::{Faults, PhysicsParams, SimOptions, Timing, TimingParams};
pub use physics::DropletView;
pub use server::{spawn_at_link, spawn_pty};
pub use snapshot::SimSnapshot;
pub use trace::{TraceEntry, TraceRecord};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Creating or serving the pseudo-terminal failed.
    #[error("pseudo-terminal: {0}")]
    Pty(String),
    /// A system call failed (symlink, signal handler, ...).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The device (chip) could not be built or read.
    #[error("device: {0}")]
    Device(#[from] crate::device::DeviceError),
    /// A file (trace, device) could not be written or read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An option is out of range.
    #[error("invalid simulator option: {0}")]
    Options(String),
    /// A control command (stdin or `--at`) that cannot be carried out.
    #[error("control: {0}")]
    Control(String),
    /// No electrode with this id or index.
    #[error("unknown electrode `{0}`")]
    UnknownElectrode(String),
    /// The simulator has shut down.
    #[error("the simulator has shut down")]
    Closed,
}

impl From<tokio_serial::Error> for SimError {
    fn from(e: tokio_serial::Error) -> Self {
        SimError::Pty(e.to_string())
    }
}
