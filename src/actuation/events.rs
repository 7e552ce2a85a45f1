//! Board events on the engine's thread: the board's own halt latches the engine's, chip
//! insertion and short detection re-read the disabled mask (the firmware replaces it), and
//! every capacitance sample is tagged with what was on, checked against a waiting feedback
//! phase, and handed up.

use std::sync::Arc;

use firmware_protocol::events::HaltReason;
use firmware_protocol::Event;
use serde_json::json;

use super::engine::Engine;
use super::inbox::lock;
use super::outputs::{Notice, Sample};
use super::picture::Halt;
use crate::board::BoardEvent;

impl Engine {
    /// Take every queued board event, the rare ones first.
    pub(super) fn take_events(&mut self) {
        loop {
            let next = lock(&self.inbox.events).pop_front();
            let Some(event) = next else { break };
            self.board_event(event);
        }
        let samples: Vec<BoardEvent> = lock(&self.inbox.samples).drain(..).collect();
        for event in samples {
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
                if let Err(err) = self.halt(Halt::new(reason, detail)) {
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
            }
            _ => {}
        }
        let _ = self.out.notices.try_send(Notice::Board(e));
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
        self.feedback(new_value, e.received);
        let (phase, label) = match self.run.as_ref().and_then(|r| r.current.as_ref()) {
            Some(c) => (Some(c.index), c.label.clone()),
            None => (None, None),
        };
        if *self.actuated_tag != self.picture.actuated {
            self.actuated_tag = Arc::new(self.picture.actuated.clone());
        }
        self.out.sample(Sample {
            farads: new_value,
            board_us: e.board_time_us,
            received: e.received,
            received_wall: e.received_wall,
            n_samples,
            voltage: v_a,
            phase,
            label,
            actuated: self.actuated_tag.clone(),
        });
    }

    /// A capacitance reading: it may end a waiting feedback phase.
    fn feedback(&mut self, farads: f64, at: std::time::Instant) {
        if let Some(run) = self.run.as_mut() {
            run.on_capacitance(farads, at);
        }
    }
}
