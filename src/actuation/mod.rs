//! Actuation: the one owner of the board's command stream for electrodes, voltage, frequency
//! and HV. Requests are coalesced, newest wins: when targets arrive faster than the board
//! applies them, only the latest value of each field is applied, never a queue of stale ones.
//! Halt and shutdown go through it as well ([`Actuator::exclusive`], [`Actuator::stop`]), so no
//! command of an older apply reaches the board after them.
//!
//! Today the applier is a tokio task driven by requests; timed sequences and routes (a
//! dedicated thread with absolute deadlines, talking to tokio through channels) will plug in
//! here as further submitters of [`Target`]s.

mod applier;
mod target;

pub use applier::{Actuator, Applied, BoardSource};
pub use target::{Confirmed, Target};

/// Errors of the actuation layer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ActuationError {
    /// No board is connected: nothing was applied.
    #[error("no DropBot is connected")]
    NoBoard,
    /// The board refused or the link failed while applying.
    #[error("{0}")]
    Board(String),
    /// A newer target replaced this one before it was applied.
    #[error("superseded by a newer request")]
    Superseded,
    /// The actuator has stopped.
    #[error("actuation has stopped")]
    Stopped,
    /// Not applied in time.
    #[error("not applied within {0:?}")]
    Timeout(std::time::Duration),
}
