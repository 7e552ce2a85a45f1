//! Running a sequence on the engine's thread, on an absolute schedule.
//!
//! A timed phase is planned to start where the previous one was planned to end, so lateness
//! never accumulates (no drift); a feedback phase ends the moment a sample reaches its
//! target (or at its timeout, counted from its start), and the next phase starts at once.
//! Pause holds the current phase's channels and stops the clock; resume shifts the rest of
//! the schedule by the pause.

use std::time::{Duration, Instant};

use super::board::Stamp;
use super::engine::Engine;
use super::inbox::{Responder, Response};
use super::outputs::Notice;
use super::picture::{Picture, SequenceState};
use super::policy::ChannelsVerdict;
use super::program::{EndReason, PhaseResult, Program, SequenceReport};
use super::ActuationError;

/// The phase that is on.
pub(super) struct Current {
    pub index: usize,
    pub label: Option<String>,
    pub planned: Instant,
    pub stamp: Stamp,
    /// When it ends unless a sample ends it first.
    pub end: Instant,
    /// Feedback target, farads.
    pub until: Option<f64>,
    /// When a sample reached the target.
    pub reached: Option<Instant>,
    pub last_sample: Option<f64>,
}

/// A sequence in progress.
pub(super) struct Run {
    pub program: Program,
    pub reply: Option<Responder>,
    pub next_index: usize,
    pub next_start: Instant,
    pub current: Option<Current>,
    pub paused_at: Option<Instant>,
    pub results: Vec<PhaseResult>,
    pub started: Instant,
    /// The stream period to restore at the end (feedback phases turn the stream on).
    pub restore_stream: Option<u32>,
}

/// The stream period used while feedback phases wait (the firmware samples every 25 ms).
const FEEDBACK_STREAM_MS: u32 = 25;

/// How long before a phase's planned start the thread begins it: enough to finish the phase
/// before, take the port and encode the frame, so that at the instant only the write is left
/// (the board layer spins to it). Control requests wait at most this long behind it.
pub(super) const PHASE_LEAD: Duration = Duration::from_micros(300);

impl Run {
    /// When the run next needs the thread (none while paused): [`PHASE_LEAD`] before a
    /// planned phase start (a timed phase's end is the next one's start).
    pub fn deadline(&self) -> Option<Instant> {
        if self.paused_at.is_some() {
            return None;
        }
        let lead = |t: Instant| t.checked_sub(PHASE_LEAD).unwrap_or(t);
        match &self.current {
            Some(c) if c.reached.is_some() => Some(Instant::now()),
            Some(c) if c.until.is_some() => Some(c.end),
            Some(c) => Some(lead(c.end)),
            None => Some(lead(self.next_start)),
        }
    }

    /// Whether a sample ended the current phase (the next one starts at once).
    pub fn reached(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.reached.is_some())
    }

    /// Whether a feedback phase is waiting for its target: a sample may end it any moment.
    pub fn awaits_feedback(&self) -> bool {
        self.paused_at.is_none()
            && self
                .current
                .as_ref()
                .is_some_and(|c| c.until.is_some() && c.reached.is_none())
    }

    /// A capacitance reading that arrived at `at`.
    pub fn on_capacitance(&mut self, farads: f64, at: Instant) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        // Samples taken before the board confirmed the phase describe the previous one.
        if at < c.stamp.confirmed {
            return;
        }
        c.last_sample = Some(farads);
        if let Some(target) = c.until {
            if farads >= target && c.reached.is_none() && self.paused_at.is_none() {
                c.reached = Some(at);
            }
        }
    }
}

impl Engine {
    /// Start `program` (an ordered request).
    pub(super) fn start_run(&mut self, program: Program, reply: Responder) {
        if self.run.is_some() {
            let _ = reply.send(Err(ActuationError::Busy("a sequence is running".into())));
            return;
        }
        if program.is_empty() {
            let _ = reply.send(Err(ActuationError::Invalid(
                "the sequence has no phases".into(),
            )));
            return;
        }
        let hv_on = self.picture.hv_output_enabled;
        let verdict = match self.board() {
            Err(e) => Err(e),
            Ok(_) if program.needs_hv => self.policy.sequence(hv_on),
            Ok(_) => {
                let any = program.phases.iter().any(|p| !p.channels.is_empty());
                self.policy.channels(any, true, hv_on)
            }
        };
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if verdict == ChannelsVerdict::WithHv {
            // HV first: its enable sequence takes ~200 ms, before the schedule starts.
            if let Err(e) = self.set_hv(true) {
                let _ = reply.send(Err(e));
                return;
            }
        }
        let mut restore_stream = None;
        if program.has_feedback() && self.picture.capacitance_update_interval_ms.unwrap_or(0) == 0 {
            let old = self.picture.capacitance_update_interval_ms.unwrap_or(0);
            if self.set_stream(FEEDBACK_STREAM_MS).is_ok() {
                restore_stream = Some(old);
            }
        }
        let now = Instant::now();
        self.run = Some(Run {
            program,
            reply: Some(reply),
            next_index: 0,
            next_start: now,
            current: None,
            paused_at: None,
            results: Vec::new(),
            started: now,
            restore_stream,
        });
    }

    /// Do what the running sequence needs now; true if anything was done.
    pub(super) fn step_sequence(&mut self) -> bool {
        let now = Instant::now();
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        if run.paused_at.is_some() {
            return false;
        }
        if let Some(c) = &run.current {
            let (ended, reason, next_start) = match (c.reached, c.until) {
                (Some(at), _) => (at, EndReason::Reached, now),
                // Counted from its start: the next phase starts now.
                (None, Some(_)) if now >= c.end => (c.end, EndReason::Timeout, now),
                // On the schedule: the next phase was planned to start at this end, and is
                // begun a lead before it (this one stays on the board until then).
                (None, None) if now + PHASE_LEAD >= c.end => (c.end, EndReason::Duration, c.end),
                _ => return false,
            };
            self.finish_phase(reason, ended);
            if let Some(run) = self.run.as_mut() {
                run.next_start = next_start;
            }
            return true;
        }
        if run.next_index >= run.program.len() {
            self.end_run(EndReason::Duration, None);
            return true;
        }
        if now + PHASE_LEAD < run.next_start {
            return false;
        }
        self.start_phase();
        true
    }

    fn start_phase(&mut self) {
        let Some(run) = self.run.as_mut() else { return };
        let index = run.next_index;
        let planned = run.next_start;
        let of = run.program.len();
        let Some(phase) = run.program.phase(index).cloned() else {
            return;
        };
        run.next_index += 1;
        let waveform = (phase.voltage.is_some() && phase.voltage != self.picture.voltage)
            || (phase.frequency.is_some() && phase.frequency != self.picture.frequency);
        if waveform {
            // At the planned start, not the lead before it: the board is still on the last phase.
            crate::board::spin_until(planned);
            if let Err(e) = self.set_waveform(phase.voltage, phase.frequency) {
                return self.end_run(EndReason::Failed, Some(e.to_string()));
            }
        }
        self.phase_tag = Some((index, phase.label.clone()));
        let stamp = match self.write_channels_at(&phase.channels, Some(planned)) {
            Ok(stamp) => stamp,
            Err(e) => return self.end_run(EndReason::Failed, Some(e.to_string())),
        };
        if let Some(target) = phase.until_farads {
            // The board's own target event where it has one; the stream is watched anyway.
            self.set_capacitance_target(target as f32);
        }
        let end = match phase.until_farads {
            Some(_) => stamp.written + phase.duration,
            // On the schedule; but after a stall (a busy board, a loaded host) a phase still
            // gets at least half its time, and the rest of the schedule moves with it, rather
            // than the following phases running back to back to catch up.
            None => (planned + phase.duration).max(stamp.written + phase.duration / 2),
        };
        self.picture.sequence = SequenceState::Running {
            phase: index,
            of,
            label: phase.label.clone(),
        };
        self.publish();
        self.notice(Notice::PhaseStarted {
            index,
            of,
            label: phase.label.clone(),
            planned,
            written: stamp.written,
            board_us: stamp.board_us,
        });
        self.release_held();
        if let Some(run) = self.run.as_mut() {
            run.current = Some(super::run::Current {
                index,
                label: phase.label,
                planned,
                stamp,
                end,
                until: phase.until_farads,
                reached: None,
                last_sample: None,
            });
        }
        self.slot_after_phase = true;
    }

    fn finish_phase(&mut self, reason: EndReason, ended: Instant) {
        let Some(c) = self.run.as_mut().and_then(|r| r.current.take()) else {
            return;
        };
        if c.until.is_some() {
            match reason {
                // The firmware clears its target when its event fires.
                EndReason::Reached => self.picture.capacitance_target = Some(0.0),
                _ => self.set_capacitance_target(0.0),
            }
        }
        let result = PhaseResult {
            index: c.index,
            label: c.label,
            planned_start: c.planned,
            issued: c.stamp.issued,
            started: c.stamp.written,
            confirmed: c.stamp.confirmed,
            started_board_us: c.stamp.board_us,
            ended,
            reason,
            capacitance: c.last_sample,
        };
        // Held, with whatever else comes, until the next phase's frame is written.
        self.held.for_phase = true;
        self.notice(Notice::PhaseEnded(result.clone()));
        if let Some(run) = self.run.as_mut() {
            run.results.push(result);
        }
    }

    /// Set the board's target capacitance (0: none); the picture says what the board holds.
    fn set_capacitance_target(&mut self, farads: f32) {
        let Ok(attached) = self.board() else { return };
        if attached.board.set_capacitance_target(farads).is_ok() {
            self.picture.capacitance_target = Some(farads);
        }
    }

    /// End the running sequence (if any) for `reason` and answer its request.
    pub(super) fn end_run(&mut self, reason: EndReason, error: Option<String>) {
        if self.run.is_none() {
            return;
        }
        let ended = Instant::now();
        self.finish_phase(reason, ended);
        // Progress before the answer, as it happened.
        self.release_held();
        if reason == EndReason::Duration {
            self.measure_last_phase();
        }
        let Some(mut run) = self.run.take() else {
            return;
        };
        self.phase_tag = None;
        if let Some(old) = run.restore_stream {
            if self.board.is_some() {
                let _ = self.set_stream(old);
            }
        }
        self.picture.sequence = SequenceState::Idle;
        self.publish();
        let report = SequenceReport {
            outcome: reason,
            started: run.started,
            phases: std::mem::take(&mut run.results),
            error,
        };
        if let Some(reply) = run.reply.take() {
            let _ = reply.send(Ok(Response::Sequence(report)));
        }
    }

    /// A run that completed reports the capacitance its last phase ended with: one reading
    /// when the stream gave none (after the last phase, so no phase waits for it).
    fn measure_last_phase(&mut self) {
        let missing = self
            .run
            .as_ref()
            .and_then(|r| r.results.last())
            .is_some_and(|p| p.capacitance.is_none());
        if !missing {
            return;
        }
        let reading = self
            .board()
            .and_then(|a| a.board.capacitance().map_err(ActuationError::Board));
        if let (Ok(reading), Some(last)) = (
            reading,
            self.run.as_mut().and_then(|r| r.results.last_mut()),
        ) {
            last.capacitance = Some(reading.farads);
        }
    }

    /// Hold the running sequence.
    pub(super) fn pause(&mut self) -> Result<Picture, ActuationError> {
        let Some(run) = self.run.as_mut() else {
            return Err(ActuationError::NotRunning);
        };
        if run.paused_at.is_none() {
            run.paused_at = Some(Instant::now());
            self.release_held();
            if let SequenceState::Running { phase, of, label } = self.picture.sequence.clone() {
                self.picture.sequence = SequenceState::Paused { phase, of, label };
            }
            self.publish();
        }
        Ok(self.picture.clone())
    }

    /// Go on after a pause: the rest of the schedule moves by the time paused.
    pub(super) fn resume_run(&mut self) -> Result<Picture, ActuationError> {
        let Some(run) = self.run.as_mut() else {
            return Err(ActuationError::NotRunning);
        };
        if let Some(at) = run.paused_at.take() {
            let held: Duration = at.elapsed();
            run.next_start += held;
            if let Some(c) = run.current.as_mut() {
                c.end += held;
            }
            if let SequenceState::Paused { phase, of, label } = self.picture.sequence.clone() {
                self.picture.sequence = SequenceState::Running { phase, of, label };
            }
            self.publish();
        }
        Ok(self.picture.clone())
    }
}
