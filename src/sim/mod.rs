//! A DropBot on the wire behind a pseudo-terminal, for tests, benchmarks and demos without
//! hardware. It behaves as the real firmware does, not as a host would like it to: replies
//! carry id 0, replies and events over 64 bytes arrive in USB pieces ~5 ms apart, the firmware
//! blocks while it works (HV enable 200 ms, short detection ~1.2 s on every chip insertion) and
//! has one packet buffer, `halt` disables every channel, short detection rewrites the disabled
//! mask, the MCU watchdog resets the board (and the USB device re-enumerates). Each behaviour
//! and the firmware source it follows are listed in `src/sim/FIRMWARE.md`.
//!
//! Pure core, thin I/O:
//! - [`firmware`] (+ `commands`, `state_update`, `ticks`, [`switching`], [`watchdog`]): the
//!   firmware as a state machine, run one pass of its main loop at a time;
//! - [`framing`] (the firmware's parser and writer), [`usb`] (the Teensy's USB transmit path),
//!   `core` (the schedule: busy firmware, parser, USB, resets);
//! - [`physics`] (+ [`hv`], [`layout`]): electrodes, droplets, capacitance, current, shorts;
//! - [`clock`]: real or virtual time; [`faults`]: injected byte faults; [`trace`]: JSON lines
//!   of what the board did;
//! - [`pty`] + `server` + [`handle`]: the I/O task serving a pty master, and [`SimHandle`] to
//!   control it (unplug, replug, reboot, chip, droplets, virtual time);
//! - [`control`]: live fault commands (stdin, `--at`) of the `simulate` subcommand (whose
//!   command line is the binary's, `src/cli/simulate.rs`).

pub mod basenode;
mod boot;
pub mod clock;
mod commands;
pub mod control;
mod core;
pub mod faults;
pub mod firmware;
pub mod framing;
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
mod state_update;
pub mod switching;
mod ticks;
pub mod trace;
pub mod usb;
pub mod watchdog;

#[cfg(test)]
mod physics_tests;

use std::path::PathBuf;

pub use clock::SimClock;
pub use firmware::{Firmware, FirmwareOptions};
pub use handle::{ElectrodeRef, SimHandle};
pub use layout::Layout;
pub use options::{
    table_for_id, Faults, PhysicsParams, SimOptions, Timing, TimingParams, DEFAULT_FIRMWARE_VERSION,
};
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
