//! Ordered and level requests on the engine's thread, and the board calls they are made of.
//! Every call that energises anything is checked by the policy first, on this thread.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::board::Stamp;
use super::engine::Engine;
use super::inbox::{lock, LevelOutcome, LevelTarget, Ordered, Responder, Response};
use super::policy::ChannelsVerdict;
use super::ActuationError;

/// What one request may cost the board, at most, in the normal case (a DropBot answers a
/// trivial call in ~1-7 ms): while a sequence keeps time, a request goes only if the next
/// deadline is further away than this, or right after a phase starts.
const REQUEST_BUDGET: Duration = Duration::from_millis(20);
/// The same for a keep-alive (one trivial call). Without room it waits until it is overdue,
/// and then takes the moment right after a phase starts.
pub(super) const KEEPALIVE_BUDGET: Duration = Duration::from_millis(10);

/// Channels per chunk of a capacitance scan (~5.5 ms each on a DropBot): a halt waits at
/// most one chunk.
const SCAN_CHUNK: usize = 8;

/// What to take next.
enum Next {
    Ordered(Ordered, Responder),
    Level(u64, LevelTarget),
}

impl Engine {
    /// Take the request that arrived first (ordered or level) and carry it out; true if
    /// there was one.
    pub(super) fn next_request(&mut self) -> bool {
        if self.run.as_ref().is_some_and(|r| r.program.needs_hv) {
            // Refused now (no board call), not carried out when the sequence ends: a click or
            // another sequence asked during a sequence must not start minutes later. (A
            // protocol step's hold still lets them through at its end.)
            let busy = |what: &str| ActuationError::Busy(format!("a sequence is running ({what})"));
            if lock(&self.inbox.level).pending.is_some() {
                self.fail_level(busy("stop it to set electrodes by hand"));
            }
            self.cancel_queued(u64::MAX, &busy("stop it first"), refused_during_run);
        }
        if !self.room_for(REQUEST_BUDGET) {
            return false;
        }
        let next = {
            let mut ordered = lock(&self.inbox.ordered);
            let mut level = lock(&self.inbox.level);
            let ordered_seq = ordered.front().map(|(seq, _, _)| *seq);
            let level_seq = level.pending.as_ref().map(|(seq, _, _)| *seq);
            match (ordered_seq, level_seq) {
                (Some(o), Some(l)) if l < o => {
                    level.pending.take().map(|(_, g, t)| Next::Level(g, t))
                }
                (Some(_), _) => ordered.pop_front().map(|(_, o, r)| Next::Ordered(o, r)),
                (None, Some(_)) => level.pending.take().map(|(_, g, t)| Next::Level(g, t)),
                (None, None) => None,
            }
        };
        match next {
            Some(Next::Ordered(request, reply)) => self.ordered(request, reply),
            Some(Next::Level(generation, target)) => {
                let result = self.level(&target);
                self.out
                    .level
                    .send_replace(LevelOutcome { generation, result });
            }
            None => return false,
        }
        true
    }

    fn ordered(&mut self, request: Ordered, reply: Responder) {
        if reply.is_closed() {
            // Nobody waits for it any more: its asker was told it was not applied (a
            // timeout), so it must not happen now, minutes later (HV on, a sequence...).
            tracing::info!("dropped a request given up before the board was free");
            return;
        }
        let busy = self.run.is_some() && refused_during_run(&request);
        if busy {
            let _ = reply.send(Err(ActuationError::Busy("a sequence is running".into())));
            return;
        }
        if let Ordered::Run(program) = request {
            return self.start_run(program, reply);
        }
        // Long ones (scans, measurements) end early if their asker gives up meanwhile.
        self.asker = Some(reply);
        let result = match request {
            Ordered::Run(_) => Err(ActuationError::Interrupted),
            Ordered::Waveform { voltage, frequency } => self
                .set_waveform(voltage, frequency)
                .map(|_| Response::Picture(self.picture.clone())),
            Ordered::HvOn => self.hv_on().map(Response::Picture),
            Ordered::Disabled(channels) => self.set_disabled(channels).map(Response::Picture),
            Ordered::DetectShorts { delay_ms } => self.detect_shorts(delay_ms),
            Ordered::Scan(channels) => self.scan(&channels).map(Response::Scan),
            Ordered::Capacitance => self
                .board()
                .and_then(|a| a.board.capacitance().map_err(ActuationError::Board))
                .map(Response::Capacitance),
            Ordered::MeasuredVoltage => self
                .board()
                .and_then(|a| a.board.measured_voltage().map_err(ActuationError::Board))
                .map(Response::Voltage),
            Ordered::Stream(ms) => self
                .set_stream(ms)
                .map(|()| Response::Picture(self.picture.clone())),
            Ordered::Monitor => self.monitor().map(Response::Monitor),
            Ordered::Measure {
                sets,
                repeats,
                settle,
            } => self
                .measure_sets(&sets, repeats, settle)
                .map(Response::Measured),
            Ordered::TestCapacitors { repeats } => self
                .measure_test_capacitors(repeats)
                .map(Response::TestCapacitors),
            Ordered::SetFeedbackCapacitor(farads) => self
                .set_feedback_capacitor(farads)
                .map(|()| Response::Picture(self.picture.clone())),
        };
        if let Some(reply) = self.asker.take() {
            let _ = reply.send(result);
        }
    }

    /// Electrodes from a click, a step or a route frame.
    fn level(&mut self, target: &LevelTarget) -> Result<super::picture::Picture, ActuationError> {
        self.board()?;
        // A protocol step's hold lets electrodes through (MicroDrop plays a step's routes
        // beside it, as electrode updates); a sequence does not.
        if self.run.as_ref().is_some_and(|r| r.program.needs_hv) {
            return Err(ActuationError::Busy(
                "a sequence is running (stop it to set electrodes by hand)".into(),
            ));
        }
        let verdict = self.policy.channels(
            !target.channels.is_empty(),
            target.live,
            self.picture.hv_output_enabled,
        )?;
        self.write_channels(&target.channels)?;
        if verdict == ChannelsVerdict::WithHv {
            self.set_hv(true)?;
        }
        Ok(self.picture.clone())
    }

    /// Whether the board may be used now without delaying a sequence's next phase: no
    /// sequence keeps time, or its next deadline is more than `budget` away, or a phase has
    /// just started (once per phase).
    pub(super) fn room_for(&mut self, budget: Duration) -> bool {
        self.fits(budget) || std::mem::take(&mut self.slot_after_phase)
    }

    /// Whether `budget` fits before a keeping-time sequence's next deadline (or none runs).
    pub(super) fn fits(&self, budget: Duration) -> bool {
        let deadline = self
            .run
            .as_ref()
            .filter(|r| r.paused_at.is_none())
            .and_then(super::run::Run::deadline);
        deadline.is_none_or(|d| Instant::now() + budget <= d)
    }

    /// One channel frame; the picture follows what the board took.
    pub(super) fn write_channels(
        &mut self,
        channels: &BTreeSet<u16>,
    ) -> Result<Stamp, ActuationError> {
        self.write_channels_at(channels, None)
    }

    /// [`Engine::write_channels`], written no earlier than `at` (a phase's planned start).
    pub(super) fn write_channels_at(
        &mut self,
        channels: &BTreeSet<u16>,
        at: Option<Instant>,
    ) -> Result<Stamp, ActuationError> {
        let count = self.board()?.channel_count;
        if let Some(&c) = channels.iter().find(|c| **c >= count) {
            return Err(ActuationError::Invalid(format!(
                "channel {c} does not exist (the board has {count}: 0 to {})",
                count.saturating_sub(1)
            )));
        }
        let board = &mut self.board()?.board;
        let r = match at {
            Some(at) => board.set_channels_at(channels, at),
            None => board.set_channels(channels),
        };
        let stamp = r.map_err(|e| self.board_failed(e))?;
        self.picture.channels = channels.clone();
        self.picture.refresh_actuated();
        // Samples the board took before it confirmed this frame describe the previous one.
        self.tag_from = Some(stamp.confirmed);
        self.publish();
        Ok(stamp)
    }

    pub(super) fn set_hv(&mut self, on: bool) -> Result<(), ActuationError> {
        let r = self.board()?.board.set_hv(on);
        r.map_err(|e| self.board_failed(e))?;
        self.picture.hv_output_enabled = on;
        self.publish();
        Ok(())
    }

    pub(super) fn set_waveform(
        &mut self,
        voltage: Option<f32>,
        frequency: Option<f32>,
    ) -> Result<Stamp, ActuationError> {
        let r = self.board()?.board.set_waveform(voltage, frequency);
        let stamp = r.map_err(|e| self.board_failed(e))?;
        if voltage.is_some() {
            self.picture.voltage = voltage;
        }
        if frequency.is_some() {
            self.picture.frequency = frequency;
        }
        self.publish();
        Ok(stamp)
    }

    pub(super) fn set_stream(&mut self, ms: u32) -> Result<(), ActuationError> {
        let r = self.board()?.board.set_capacitance_stream(ms);
        r.map_err(|e| self.board_failed(e))?;
        self.picture.capacitance_update_interval_ms = Some(ms);
        self.publish();
        Ok(())
    }

    /// The user's HV-on: resumes after a halt. After the board's own halt every channel is
    /// disabled, with its old channel bits still set: clear them first, then give back the
    /// mask, so nothing that was on before the halt comes back on.
    fn hv_on(&mut self) -> Result<super::picture::Picture, ActuationError> {
        self.board()?;
        if let Some(halt) = self.policy.resume() {
            tracing::info!(reason = %halt.reason, "resumed after a halt");
            self.picture.halted = None;
            if let Some(mask) = self.mask_before_halt.take() {
                self.write_channels(&BTreeSet::new())?;
                let r = self.board()?.board.set_disabled_channels(&mask);
                r.map_err(|e| self.board_failed(e))?;
                self.read_mask();
            }
            self.publish();
        }
        self.set_hv(true)?;
        Ok(self.picture.clone())
    }

    fn set_disabled(
        &mut self,
        channels: BTreeSet<u16>,
    ) -> Result<super::picture::Picture, ActuationError> {
        let r = self.board()?.board.set_disabled_channels(&channels);
        r.map_err(|e| self.board_failed(e))?;
        self.user_disabled = channels;
        self.read_mask();
        self.publish();
        Ok(self.picture.clone())
    }

    fn detect_shorts(&mut self, delay_ms: u8) -> Result<Response, ActuationError> {
        if let Some(h) = self.policy.halted() {
            return Err(ActuationError::Halted(h.reason.clone()));
        }
        let r = self.board()?.board.detect_shorts(delay_ms);
        let shorts = r.map_err(|e| self.board_failed(e))?;
        // The firmware replaced the whole mask with the shorts.
        self.read_mask();
        self.keep_user_disabled();
        self.publish();
        Ok(Response::Shorts(shorts, self.picture.clone()))
    }

    /// Capacitance of each channel alone, in chunks: a halt or stop in between ends it.
    ///
    /// The firmware switches HV on for each call that finds it off, and back off after, with
    /// its ~200 ms enable sequence each time (dropbot.py `Node.h` `channel_capacitances`): so
    /// HV stays on for the whole scan (a measurement the user asked for; refused while halted)
    /// and goes back to how it was at the end.
    fn scan(&mut self, channels: &[u16]) -> Result<Vec<(u16, f32)>, ActuationError> {
        if let Some(h) = self.policy.halted() {
            return Err(ActuationError::Halted(h.reason.clone()));
        }
        let hv_was_on = self.picture.hv_output_enabled;
        if !hv_was_on && !channels.is_empty() {
            self.set_hv(true)?;
        }
        let mut values = Vec::with_capacity(channels.len());
        let mut outcome = Ok(());
        for chunk in channels.chunks(SCAN_CHUNK) {
            let r = self.board()?.board.channel_capacitances(chunk);
            match r {
                Ok(got) => values.extend(chunk.iter().copied().zip(got)),
                Err(e) => {
                    outcome = Err(self.board_failed(e));
                    break;
                }
            }
            if self.interrupted() {
                outcome = Err(ActuationError::Interrupted);
                break;
            }
        }
        if !hv_was_on && self.picture.hv_output_enabled && self.board.is_some() {
            self.set_hv(false)?;
        }
        outcome.map(|()| values)
    }
}

/// Requests a running sequence refuses: they would change what it drives, or hold the board.
fn refused_during_run(request: &Ordered) -> bool {
    matches!(
        request,
        Ordered::Run(_)
            | Ordered::Scan(_)
            | Ordered::DetectShorts { .. }
            | Ordered::Disabled(_)
            | Ordered::Measure { .. }
            | Ordered::TestCapacitors { .. }
            | Ordered::SetFeedbackCapacitor(_)
    )
}
