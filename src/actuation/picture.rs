//! What the engine knows of the board: only what the board confirmed, plus the engine's own
//! state (halt latch, running sequence). Published on a watch after every change, so the layer
//! above derives its retained state from one place and never from what was requested.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

/// Why actuation stopped, until a user resumes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Halt {
    /// `output-current-exceeded`, `chip-load-saturated`, `requested`, `bus-lost`,
    /// `board-reset`, ...
    pub reason: String,
    /// Details (the board's own words where it gave some).
    pub detail: Value,
    /// When the host learned of it, ms since the Unix epoch.
    pub host_time_ms: f64,
    /// Board time (unwrapped microseconds) of the board's own halt event.
    pub board_time_us: Option<u64>,
}

impl Halt {
    /// A halt for `reason` with `detail`, now.
    pub fn new(reason: impl Into<String>, detail: Value) -> Self {
        let host_time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Halt {
            reason: reason.into(),
            detail,
            host_time_ms,
            board_time_us: None,
        }
    }

    /// The same halt, at board time `board_us`.
    pub fn at_board_time(self, board_us: Option<u64>) -> Self {
        Halt {
            board_time_us: board_us,
            ..self
        }
    }
}

/// Where a sequence stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SequenceState {
    /// No sequence.
    #[default]
    Idle,
    /// Phases are being applied.
    Running {
        /// Index of the current phase in the whole run (repeats unrolled).
        phase: usize,
        /// Phases in the whole run.
        of: usize,
        /// The phase's label.
        label: Option<String>,
    },
    /// Held by `pause`: the current phase's channels stay on, its clock stopped.
    Paused {
        /// Index of the held phase.
        phase: usize,
        /// Phases in the whole run.
        of: usize,
        /// The phase's label.
        label: Option<String>,
    },
}

/// The engine's picture of the board; see the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Picture {
    /// Which board connection this describes (`None`: no board).
    pub connection: Option<u64>,
    /// Channel bits the board took (`set_state_of_channels` answered true).
    pub channels: BTreeSet<u16>,
    /// Channels the board really drives: `channels` minus `disabled`.
    pub actuated: BTreeSet<u16>,
    /// Channels the board will not drive (as it reported them).
    pub disabled: BTreeSet<u16>,
    /// HV output as the board took it.
    pub hv_output_enabled: bool,
    /// Voltage the board took, V.
    pub voltage: Option<f32>,
    /// Frequency the board took, Hz.
    pub frequency: Option<f32>,
    /// Capacitance stream period the board took, ms.
    pub capacitance_update_interval_ms: Option<u32>,
    /// Chip interlock, once known.
    pub chip_inserted: Option<bool>,
    /// The board's target capacitance (farads, 0: none) once this engine set one.
    pub capacitance_target: Option<f32>,
    /// Set while halted; cleared only when a user resumes.
    pub halted: Option<Halt>,
    /// Whether the board's own failsafe (turning HV off when the host goes silent) is armed.
    pub failsafe_armed: bool,
    /// The running sequence.
    pub sequence: SequenceState,
    /// Bumped on every change.
    pub revision: u64,
}

impl Picture {
    /// Recompute what the board really drives.
    pub(super) fn refresh_actuated(&mut self) {
        self.actuated = self.channels.difference(&self.disabled).copied().collect();
    }

    /// Forget everything the board confirmed (it went away, or restarted).
    pub(super) fn forget_board(&mut self, connection: Option<u64>) {
        let halted = self.halted.take();
        *self = Picture {
            connection,
            halted,
            revision: self.revision,
            ..Picture::default()
        };
    }
}
