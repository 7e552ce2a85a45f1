//! The board layer: the link to a DropBot over a serial port (or a pty), its typed API, device
//! time, discovery and a supervisor that reconnects.
//!
//! - [`link`] owns the port: one reader, one request in flight, events fanned out; [`port`]
//!   opens a serial port and reads it on a thread of its own.
//! - [`dropbot`] is the typed API built on the firmware-protocol crate's commands.
//! - [`clock`] unwraps the board's 32-bit microsecond counter and maps it to host time.
//! - [`discovery`] lists ports and probes candidates with the handshake; [`selector`] says
//!   which board the user means.
//! - [`supervisor`] connects, puts the board in a safe state, and reconnects after loss.
//!
//! Errors come in two levels: [`LinkError`] (the link broke or timed out) and [`BoardError`]
//! (the board refused or answered nonsense, or the request was out of range).

mod api;
mod blocking;
pub mod check;
pub mod clock;
pub mod discovery;
pub mod dropbot;
pub mod error;
pub mod event;
pub mod link;
pub mod port;
pub mod selector;
mod slot;
pub mod supervisor;
mod transport;

pub use blocking::spin_until;
pub use clock::BoardClock;
pub use discovery::{
    describe_ports, discover, DiscoveryError, PortInfo, PortLister, Probe, Selector, SystemPorts,
};
pub use dropbot::{BoardInfo, BuildInfo, CallTiming, DropBot};
pub use error::{BoardError, LinkError};
pub use event::BoardEvent;
pub use link::{EventSink, Link, LinkOptions, LinkStats, Reply, ResyncProbe};
pub use port::{open_port, Port};
pub use supervisor::{BoardStatus, BoardSupervisor, SupervisorHandle, SupervisorOptions};
pub use transport::CloseReason;
