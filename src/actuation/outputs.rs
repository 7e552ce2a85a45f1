//! What the engine tells the layer above: the picture (a watch: the newest always wins and is
//! never lost), the outcome of level requests (a watch), and two bounded queues that never
//! block the engine: notices (board events, halts, sequence progress) and tagged capacitance
//! samples. When a queue is full the engine drops and counts, it never waits.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::inbox::LevelOutcome;
use super::picture::{Halt, Picture};
use super::program::PhaseResult;
use crate::board::BoardEvent;

/// Something worth a signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A board event other than a capacitance sample (interlock, shorts, halts, drops, ...).
    Board(BoardEvent),
    /// Actuation halted (by the board, a request, a lost bus or a board reset).
    Halted(Halt),
    /// A sequence phase started.
    PhaseStarted {
        /// Index in the whole run.
        index: usize,
        /// Phases in the whole run.
        of: usize,
        /// Its label.
        label: Option<String>,
        /// When it was planned to start.
        planned: Instant,
        /// When its frame was written.
        written: Instant,
        /// Board time at the write.
        board_us: Option<u64>,
    },
    /// A sequence phase ended.
    PhaseEnded(PhaseResult),
}

/// A capacitance sample, tagged with what was on when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Farads.
    pub farads: f64,
    /// Board time, unwrapped microseconds.
    pub board_us: Option<u64>,
    /// Host monotonic time it arrived.
    pub received: Instant,
    /// Host wall-clock time it arrived.
    pub received_wall: SystemTime,
    /// Samples the board averaged.
    pub n_samples: u32,
    /// Actuation voltage at the sample, V.
    pub voltage: f64,
    /// The sequence phase that was on (index in the whole run), if any.
    pub phase: Option<usize>,
    /// Its label.
    pub label: Option<String>,
    /// The channels the board drove.
    pub actuated: Arc<BTreeSet<u16>>,
}

/// Counters of what the queues dropped.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Notices dropped because the layer above fell behind.
    pub notices: AtomicU64,
    /// Samples dropped because the layer above fell behind.
    pub samples: AtomicU64,
}

/// The engine's side of its outputs.
pub(super) struct Outputs {
    pub picture: watch::Sender<Picture>,
    pub level: watch::Sender<LevelOutcome>,
    pub notices: NoticeSender,
    pub samples: mpsc::Sender<Sample>,
    pub dropped: Arc<Dropped>,
}

/// A notice queue that drops (and counts) rather than block.
pub(super) struct NoticeSender {
    pub tx: mpsc::Sender<Notice>,
    pub dropped: Arc<Dropped>,
}

impl NoticeSender {
    pub fn try_send(&self, notice: Notice) -> Result<(), ()> {
        self.tx.try_send(notice).map_err(|_| {
            self.dropped.notices.fetch_add(1, Ordering::Relaxed);
        })
    }
}

impl Outputs {
    /// Hand a sample up, or count it dropped.
    pub fn sample(&self, sample: Sample) {
        if self.samples.try_send(sample).is_err() {
            self.dropped.samples.fetch_add(1, Ordering::Relaxed);
        }
    }
}
