//! Sequences as the engine runs them: phases of channels with a duration, or with a
//! capacitance to wait for; and what each phase did.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One phase: these channels (and only these) on, for a time or until a capacitance.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Channels on during the phase.
    pub channels: BTreeSet<u16>,
    /// How long it lasts; for a feedback phase, its timeout.
    pub duration: Duration,
    /// RMS voltage to set at its start, V.
    pub voltage: Option<f32>,
    /// Frequency to set at its start, Hz.
    pub frequency: Option<f32>,
    /// End as soon as the capacitance reaches this many farads (a feedback phase).
    pub until_farads: Option<f64>,
    /// A name for reports (e.g. the electrodes, or a route's step).
    pub label: Option<String>,
}

impl Phase {
    /// A timed phase of `channels` for `duration`.
    pub fn timed(channels: BTreeSet<u16>, duration: Duration) -> Self {
        Phase {
            channels,
            duration,
            voltage: None,
            frequency: None,
            until_farads: None,
            label: None,
        }
    }
}

/// Phases run in order, the whole list `repeats` times.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The phases.
    pub phases: Vec<Phase>,
    /// How many times the list runs (at least 1).
    pub repeats: u32,
    /// A sequence that moves droplets needs HV: refused while the user has HV switched off.
    /// A protocol step (`false`) applies its electrodes either way, as a click does.
    pub needs_hv: bool,
}

impl Program {
    /// A sequence of `phases`, once, needing HV.
    pub fn new(phases: Vec<Phase>) -> Self {
        Program {
            phases,
            repeats: 1,
            needs_hv: true,
        }
    }
}

impl Program {
    /// Phases in the whole run, repeats unrolled.
    pub fn len(&self) -> usize {
        self.phases
            .len()
            .saturating_mul(self.repeats.max(1) as usize)
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Phase `index` of the whole run.
    pub fn phase(&self, index: usize) -> Option<&Phase> {
        match self.phases.len() {
            0 => None,
            n if index < self.len() => self.phases.get(index % n),
            _ => None,
        }
    }

    /// Whether any phase waits for a capacitance.
    pub fn has_feedback(&self) -> bool {
        self.phases.iter().any(|p| p.until_farads.is_some())
    }
}

/// Why a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    /// Its duration ran out.
    Duration,
    /// The capacitance reached the target.
    Reached,
    /// A feedback phase's timeout ran out first.
    Timeout,
    /// The user stopped the sequence.
    Stopped,
    /// A halt ended it.
    Halted,
    /// The board went away or refused.
    Failed,
}

/// What one phase did. Times are host monotonic instants; `*_board_us` the board's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseResult {
    /// Index in the whole run.
    pub index: usize,
    /// The phase's label.
    pub label: Option<String>,
    /// When it was planned to start.
    pub planned_start: Instant,
    /// When the write of its frame was issued.
    pub issued: Instant,
    /// When its frame was written (the write returned).
    pub started: Instant,
    /// When the board confirmed the frame.
    pub confirmed: Instant,
    /// Board time at the write, if known.
    pub started_board_us: Option<u64>,
    /// When it ended.
    pub ended: Instant,
    /// Why it ended.
    pub reason: EndReason,
    /// The last capacitance sample while it was on, farads.
    pub capacitance: Option<f64>,
}

/// How a sequence ended, and what every phase did.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceReport {
    /// Why the sequence ended: `Duration` (completed), `Stopped`, `Halted` or `Failed`.
    pub outcome: EndReason,
    /// When it started (the first phase's planned start).
    pub started: Instant,
    /// One result per phase that started, in order.
    pub phases: Vec<PhaseResult>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_unroll() {
        let a = Phase::timed(BTreeSet::from([1]), Duration::from_millis(10));
        let b = Phase::timed(BTreeSet::from([2]), Duration::from_millis(10));
        let p = Program {
            repeats: 3,
            ..Program::new(vec![a.clone(), b.clone()])
        };
        assert_eq!(p.len(), 6);
        assert_eq!(p.phase(4), Some(&a));
        assert_eq!(p.phase(5), Some(&b));
        assert_eq!(p.phase(6), None);
        assert!(!p.has_feedback());
        let empty = Program {
            repeats: 5,
            ..Program::new(vec![])
        };
        assert!(empty.is_empty() && empty.phase(0).is_none());
    }
}
