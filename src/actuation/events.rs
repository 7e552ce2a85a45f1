//! Board events on the engine's thread: the board's own halt latches the engine's, chip
//! insertion and short detection re-read the disabled mask (the firmware replaces it), and
//! every capacitance sample is tagged with what was on, checked against a waiting feedback
//! phase, and handed up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use firmware_protocol::events::HaltReason;
use firmware_protocol::Event;
use serde_json::json;

use super::engine::Engine;
use super::inbox::lock;
use super::outputs::{Notice, Sample};
use super::picture::Halt;
use crate::board::BoardEvent;

/// Tags kept: enough for samples that wait behind a few short phases.
const MAX_TAGS: usize = 64;

/// Samples held for a phase change at most (a phase change takes well under a millisecond;
/// this only bounds memory if one does not come).
const MAX_HELD: usize = 256;

/// What was on the board from an instant on: the phase and the actuated channels.
#[derive(Debug, Clone)]
pub(super) struct Tag {
    pub from: Instant,
    pub phase: Option<usize>,
    pub label: Option<String>,
    pub actuated: Arc<BTreeSet<u16>>,
}

impl Engine {
    /// Take every queued board event, the rare ones first. Samples that end a waiting
    /// feedback phase are held (see [`Engine::held`]) until the next phase is written.
    pub(super) fn take_events(&mut self) {
        if !self.held.for_phase || self.held.samples.len() >= MAX_HELD {
            self.release_held();
        }
        loop {
            let next = lock(&self.inbox.events).pop_front();
            let Some(event) = next else { break };
            self.board_event(event);
        }
        let samples: Vec<BoardEvent> = lock(&self.inbox.samples).drain(..).collect();
        for e in &samples {
            if let Event::CapacitanceUpdated { new_value, .. } = e.event {
                self.feedback(new_value, e.received);
            }
        }
        if self.held.for_phase || self.run.as_ref().is_some_and(|r| r.reached()) {
            self.held.samples.extend(samples);
            return;
        }
        for event in samples {
            self.sample(event);
        }
    }

    /// Hand up what was held back for a phase change.
    pub(super) fn release_held(&mut self) {
        self.held.for_phase = false;
        for notice in std::mem::take(&mut self.held.notices) {
            let _ = self.out.notices.try_send(notice);
        }
        for event in std::mem::take(&mut self.held.samples) {
            self.sample(event);
        }
    }

    fn board_event(&mut self, e: BoardEvent) {
        match &e.event {
            Event::Halted { error, .. } => {
                // The firmware's halt: HV off and every channel disabled (dropbot.py
                // `Node.h` `halt()`); the mask before it is restored on resume.
                self.mask_before_halt
                    .get_or_insert_with(|| self.picture.disabled.clone());
                let reason = match error {
                    HaltReason::OutputCurrentExceeded { .. } => "output-current-exceeded",
                    HaltReason::ChipLoadSaturated { .. } => "chip-load-saturated",
                };
                let detail = json!({"error": error, "board_time_us": e.board_time_us});
                let halt = Halt::new(reason, detail).at_board_time(e.board_time_us);
                if let Err(err) = self.halt(halt) {
                    tracing::warn!(error = %err, "could not confirm the safe state after a halt");
                }
                self.read_mask();
                self.publish();
            }
            Event::OutputEnabled | Event::OutputDisabled => {
                self.picture.chip_inserted = Some(e.event == Event::OutputEnabled);
                self.publish();
            }
            Event::ShortsDetected { .. } => {
                // Sent after the firmware's own short detection (on every chip insertion),
                // which replaced the whole mask.
                self.read_mask();
                self.keep_user_disabled();
                self.publish();
            }
            Event::CapacitanceExceeded { new_value, .. } => {
                self.feedback(*new_value, e.received);
                if self.run.as_ref().is_some_and(|r| r.reached()) {
                    // The next phase's frame first.
                    self.held.for_phase = true;
                }
            }
            _ => {}
        }
        self.notice(Notice::Board(e));
    }

    fn sample(&mut self, e: BoardEvent) {
        let Event::CapacitanceUpdated {
            new_value,
            n_samples,
            v_a,
            ..
        } = e.event
        else {
            return;
        };
        // What was on when the board took it: the newest tag from before it arrived (the
        // board sends a sample before the reply to a later frame).
        let tag = self
            .tags
            .iter()
            .rev()
            .find(|t| t.from <= e.received)
            .or(self.tags.front());
        let (phase, label, actuated) = match tag {
            Some(t) => (t.phase, t.label.clone(), t.actuated.clone()),
            None => (None, None, Arc::new(self.picture.actuated.clone())),
        };
        self.out.sample(Sample {
            farads: new_value,
            board_us: e.board_time_us,
            received: e.received,
            received_wall: e.received_wall,
            n_samples,
            voltage: v_a,
            phase,
            label,
            actuated,
        });
    }

    /// After a change of the picture or the phase: a new tag if what samples are tagged
    /// with changed.
    pub(super) fn retag(&mut self) {
        let from = self.tag_from.take().unwrap_or_else(Instant::now);
        let phase = self.phase_tag.as_ref().map(|(i, _)| *i);
        let same = self.tags.back().is_some_and(|t| {
            t.phase == phase
                && *t.actuated == self.picture.actuated
                && t.label == self.phase_tag.as_ref().and_then(|(_, l)| l.clone())
        });
        if same {
            return;
        }
        if self.tags.len() == MAX_TAGS {
            self.tags.pop_front();
        }
        self.tags.push_back(Tag {
            from,
            phase,
            label: self.phase_tag.as_ref().and_then(|(_, l)| l.clone()),
            actuated: Arc::new(self.picture.actuated.clone()),
        });
    }

    /// A capacitance reading: it may end a waiting feedback phase.
    fn feedback(&mut self, farads: f64, at: std::time::Instant) {
        if let Some(run) = self.run.as_mut() {
            run.on_capacitance(farads, at);
        }
    }
}
