//! Actuation: the one owner of the board's command stream, and of the safety policy.
//!
//! The engine runs on its own thread ([`Actuator::spawn`]) and drives a board through the
//! small [`DmfBoard`] trait (the DropBot implements it in [`dropbot`]). Requests reach it in
//! lanes ([`inbox`]): control requests (halt, HV off, all off, stop, pause, resume) overtake
//! everything queued; ordered requests (waveform, HV on, disabled channels, scans, sequences)
//! go in arrival order; electrode requests coalesce, newest wins. The safety policy
//! ([`policy`]: halt latch, auto-HV, an explicit HV-off) is consulted on the same thread
//! before anything energises, so no request can slip past a halt. Sequences ([`program`]) run
//! on an absolute schedule with capacitance feedback; what the board confirmed is published as
//! a [`Picture`] on a watch.

pub mod board;
pub mod dropbot;
mod engine;
mod events;
mod handle;
pub mod inbox;
mod measure;
mod ops;
mod outputs;
pub mod picture;
pub mod policy;
mod priority;
pub mod program;
pub mod routes;
mod run;
mod timing;

use std::time::Duration;

pub use board::{BoardSummary, DmfBoard, KeepAlive, Monitor, Reading, Stamp};
pub use dropbot::DropBotBoard;
pub use handle::{Actuator, Pending, Streams};
pub use inbox::{LevelOutcome, LevelTarget, Ordered, Response, TestCapacitorReadings};
pub use outputs::{Notice, Sample};
pub use picture::{Halt, Picture, SequenceState};
pub use program::{EndReason, Phase, PhaseResult, Program, SequenceReport};
pub use timing::set_fifo;

use crate::board::BoardError;

/// How the engine behaves.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Turn HV on with the first live electrode request (and at a sequence's start).
    pub auto_hv: bool,
    /// Period of the keep-alive (failsafe refresh and clock sync); at most a third of
    /// `failsafe`.
    pub keepalive: Duration,
    /// Arm the board's failsafe with this timeout where it has one (`None`: leave it).
    pub failsafe: Option<Duration>,
    /// Ask for a real-time priority for the engine's thread (falls back quietly).
    pub realtime: bool,
    /// Ordered requests that may wait at once; more are refused as busy.
    pub max_queue: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            auto_hv: true,
            keepalive: Duration::from_secs(1),
            failsafe: Some(Duration::from_secs(5)),
            realtime: true,
            max_queue: 256,
        }
    }
}

/// Why an actuation request was not carried out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActuationError {
    /// No board is connected: nothing was applied.
    #[error("no board is connected")]
    NoBoard,
    /// The board refused, or the link failed.
    #[error(transparent)]
    Board(#[from] BoardError),
    /// Actuation is halted until a user switches HV on again.
    #[error("halted ({0})")]
    Halted(String),
    /// The user switched HV off; a sequence needs it.
    #[error("HV was switched off by request: switch it on to run a sequence")]
    HvOff,
    /// Something else has the board.
    #[error("busy: {0}")]
    Busy(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// A later "off" request overtook and cancelled it.
    #[error("cancelled: {0} was asked after it")]
    Superseded(String),
    /// Pause or resume with no sequence running.
    #[error("no sequence is running")]
    NotRunning,
    /// A long operation was cut short by a halt, a stop or a disconnection.
    #[error("interrupted by a halt, a stop or a disconnection")]
    Interrupted,
    /// The engine has stopped.
    #[error("actuation has stopped")]
    Stopped,
    /// Not done in time.
    #[error("not applied within {0:?}")]
    Timeout(Duration),
}
