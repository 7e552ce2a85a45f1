//! The engine's thread: the one owner of the board's command stream.
//!
//! Each turn of the loop takes, in this order: control requests (halt, HV off, all off, stop,
//! pause, resume, attach, detach, shutdown), board events (halts, interlock, shorts, samples),
//! a due sequence phase, a due keep-alive, then one ordered or level request (whichever
//! arrived first). Then it sleeps until the next deadline or a ring. Phase starts are written
//! at absolute deadlines: the thread parks until shortly before, then spin-sleeps to the
//! instant (see [`super::timing`]).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::board::DmfBoard;
use super::inbox::{lock, Control, Inbox, LevelOutcome, Ordered, Response};
use super::outputs::{Notice, Outputs};
use super::picture::{Halt, Picture, SequenceState};
use super::policy::Policy;
use super::run::Run;
use super::timing;
use super::{ActuationError, EngineOptions};
use crate::board::BoardError;

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Exit,
}

/// The board the engine drives now.
pub(super) struct Attached {
    pub board: Box<dyn DmfBoard>,
    pub channel_count: u16,
}

/// The engine's state, owned by its thread.
pub(super) struct Engine {
    pub inbox: Arc<Inbox>,
    pub out: Outputs,
    pub options: EngineOptions,
    pub board: Option<Attached>,
    pub policy: Policy,
    pub picture: Picture,
    pub run: Option<Run>,
    /// The channels the user disabled (kept across chip insertions and halts).
    pub user_disabled: BTreeSet<u16>,
    /// The disabled mask before the board's own halt disabled every channel.
    pub mask_before_halt: Option<BTreeSet<u16>>,
    pub next_keepalive: Instant,
    /// A sequence phase just started: one waiting request may go before the next deadline.
    pub slot_after_phase: bool,
    /// Who waits for the ordered request being carried out (a long one ends if they give up).
    pub asker: Option<super::inbox::Responder>,
    /// What was on since when, newest last: samples are tagged from here.
    pub tags: VecDeque<super::events::Tag>,
    /// The instant the next tag starts at (a frame's confirmation), if not now.
    pub tag_from: Option<Instant>,
    /// The sequence phase (index, label) on the board, for tags.
    pub phase_tag: Option<(usize, Option<String>)>,
    /// The board that was lost while energised: its serial, when, and its clock then.
    pub lost_energised: Option<(String, Instant, Option<u64>)>,
    /// The attached board's serial.
    pub serial: Option<String>,
    /// How much spinning for feedback is left.
    pub spin: timing::SpinBudget,
    /// Notices and samples held back while one sequence phase hands over to the next:
    /// handing them up wakes tokio tasks, which costs tens of microseconds (on a virtual
    /// machine, an interrupt to another CPU) that belong after the next frame.
    pub held: Held,
}

/// See [`Engine::held`].
#[derive(Default)]
pub(super) struct Held {
    /// A phase ended and the next one's frame is not written yet.
    pub for_phase: bool,
    pub notices: Vec<Notice>,
    pub samples: Vec<crate::board::BoardEvent>,
}

impl Engine {
    pub fn new(inbox: Arc<Inbox>, out: Outputs, options: EngineOptions) -> Self {
        Engine {
            inbox,
            out,
            policy: Policy::new(options.auto_hv),
            options,
            board: None,
            picture: Picture::default(),
            run: None,
            user_disabled: BTreeSet::new(),
            mask_before_halt: None,
            next_keepalive: Instant::now(),
            slot_after_phase: false,
            asker: None,
            tags: VecDeque::new(),
            tag_from: None,
            phase_tag: None,
            lost_energised: None,
            serial: None,
            spin: timing::SpinBudget::new(),
            held: Held::default(),
        }
    }

    /// The thread's body.
    pub fn run_loop(mut self) {
        let realtime = timing::prepare_thread(self.options.realtime);
        self.spin.set_realtime(realtime);
        loop {
            if self.take_control() == Flow::Exit {
                self.release_held();
                return;
            }
            self.take_events();
            // An overdue keep-alive first: a sequence that is behind its schedule always has a
            // phase due, and must not starve the board's failsafe.
            if self.keepalive_overdue() && self.keepalive_if_due() {
                continue;
            }
            if self.step_sequence() || self.keepalive_if_due() || self.next_request() {
                continue;
            }
            self.sleep();
        }
    }

    /// Publish the picture (after every change).
    pub fn publish(&mut self) {
        self.retag();
        self.picture.revision += 1;
        self.out.picture.send_replace(self.picture.clone());
    }

    /// Hand a notice up, after any held ones (they keep their order).
    pub fn notice(&mut self, notice: Notice) {
        match !self.held.for_phase && self.held.notices.is_empty() {
            true => {
                let _ = self.out.notices.try_send(notice);
            }
            false => self.held.notices.push(notice),
        }
    }

    /// The attached board, or why there is none.
    pub fn board(&mut self) -> Result<&mut Attached, ActuationError> {
        self.board.as_mut().ok_or(ActuationError::NoBoard)
    }

    /// A board call that failed: a link that is gone means the board is gone.
    pub fn board_failed(&mut self, e: BoardError) -> ActuationError {
        if e.is_gone() {
            tracing::warn!(error = %e, "board link gone");
        }
        ActuationError::Board(e)
    }

    fn take_control(&mut self) -> Flow {
        loop {
            let next = lock(&self.inbox.control).pop_front();
            let Some(control) = next else {
                return Flow::Continue;
            };
            if self.control(control) == Flow::Exit {
                return Flow::Exit;
            }
        }
    }

    /// Between chunks of a long operation: keep the board's failsafe fed and take control
    /// requests; true if one of them should end the operation (anything that changes what is
    /// on: halt, off, stop, detach), or if the operation's asker gave up on it.
    pub fn interrupted(&mut self) -> bool {
        self.keepalive_if_due();
        if self.asker.as_ref().is_some_and(|r| r.is_closed()) {
            // Its asker was told it was not applied: it must not go on for minutes.
            tracing::info!("ended a long request whose asker gave up");
            return true;
        }
        if lock(&self.inbox.control).is_empty() {
            return false;
        }
        let before = (self.picture.connection, self.policy.halted().is_some());
        let exit = self.take_control() == Flow::Exit;
        exit || before != (self.picture.connection, self.policy.halted().is_some())
    }

    fn control(&mut self, control: Control) -> Flow {
        match control {
            Control::Attach { board, connection } => self.attach(board, connection),
            Control::Detach { connection } => {
                if self.picture.connection == Some(connection) {
                    self.detach("the board was disconnected");
                }
            }
            Control::Halt { halt, reply } => {
                let result = self.halt(halt);
                if let Some(reply) = reply {
                    let _ = reply.send(result.map(Response::Picture));
                }
            }
            Control::HvOff { seq, reply } => {
                self.cancel_older(seq, false, "switching HV off");
                self.policy.hv_off_by_user();
                self.end_run(super::program::EndReason::Stopped, None);
                let result = self.hv_off();
                let _ = reply.send(result.map(Response::Picture));
            }
            Control::AllOff { seq, reply } => {
                self.cancel_older(seq, true, "all off");
                self.policy.hv_off_by_user();
                self.end_run(super::program::EndReason::Stopped, None);
                let result = self.all_off();
                let _ = reply.send(result.map(Response::Picture));
            }
            Control::Stop { seq, reply } => {
                // A stop covers the sequences asked before it, not only the running one.
                let stop = ActuationError::Superseded("stop".into());
                self.cancel_queued(seq, &stop, |o| matches!(o, Ordered::Run(_)));
                let result = match self.run.is_some() {
                    true => {
                        self.end_run(super::program::EndReason::Stopped, None);
                        self.channels_off()
                    }
                    false => Ok(self.picture.clone()),
                };
                let _ = reply.send(result.map(Response::Picture));
            }
            Control::Pause(reply) => {
                let _ = reply.send(self.pause().map(Response::Picture));
            }
            Control::Resume(reply) => {
                let _ = reply.send(self.resume_run().map(Response::Picture));
            }
            Control::Shutdown(reply) => {
                self.end_run(super::program::EndReason::Stopped, None);
                let result = self.shutdown();
                let _ = reply.send(result.map(Response::Picture));
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    fn attach(&mut self, board: Box<dyn DmfBoard>, connection: u64) {
        if self.board.is_some() {
            self.detach("replaced by a new board");
        }
        let summary = board.summary();
        let inbox = self.inbox.clone();
        let mut attached = Attached {
            board,
            channel_count: summary.channel_count,
        };
        attached
            .board
            .set_event_sink(Some(Arc::new(move |e| inbox.push_event(e))));
        self.board = Some(attached);
        self.noticed_restart(&summary);
        self.serial = Some(summary.serial.clone());
        self.policy.on_connect();
        self.picture.forget_board(Some(connection));
        self.mask_before_halt = None;
        tracing::info!(identity = %summary.identity, channels = summary.channel_count,
            "actuation engine attached to the board");
        if let Err(e) = self.board().map(|a| a.board.prepare()) {
            tracing::warn!(error = %e, "board setup failed");
        }
        self.arm_failsafe();
        self.read_mask();
        self.keep_user_disabled();
        self.next_keepalive = Instant::now() + self.options.keepalive;
        self.publish();
    }

    fn arm_failsafe(&mut self) {
        let Some(timeout) = self.options.failsafe else {
            return;
        };
        let Ok(attached) = self.board() else { return };
        match attached.board.arm_failsafe(timeout) {
            Ok(armed) => {
                self.picture.failsafe_armed = armed;
                if armed {
                    tracing::info!(
                        ?timeout,
                        "board failsafe armed: HV goes off if this host goes silent"
                    );
                } else {
                    tracing::warn!(
                        "this board has no failsafe: if this host dies, HV stays as it is"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not arm the board's failsafe"),
        }
    }

    /// The same board back after it was lost while energised, and it restarted meanwhile (its
    /// watchdog fired, it lost power, it was unplugged): whatever it was doing was cut, which
    /// is a halt nobody asked for. It stays halted until a user resumes.
    fn noticed_restart(&mut self, summary: &super::board::BoardSummary) {
        let Some((serial, at, clock_then)) = self.lost_energised.take() else {
            return;
        };
        let (Some(then), Some(now)) = (clock_then, summary.uptime) else {
            return;
        };
        if serial != summary.serial || !restarted(then, at.elapsed(), now) {
            return;
        }
        let detail = json!(format!(
            "the board restarted while energised (its clock reads {now:?}, {:?} after it was \
             lost): its watchdog fired, or it lost power or was unplugged",
            at.elapsed()
        ));
        self.policy.halt(Halt::new("board-reset", detail.clone()));
        self.picture.halted = self.policy.halted().cloned();
        self.notice(Notice::Halted(Halt::new("board-reset", detail)));
    }

    /// Forget the board: fail what waits for it, so nothing of it reaches the next board.
    pub fn detach(&mut self, why: &str) {
        let energised = self.picture.hv_output_enabled || !self.picture.actuated.is_empty();
        if let (true, Some(serial)) = (energised, self.serial.take()) {
            let now = Instant::now();
            let clock = self.board.as_ref().and_then(|a| a.board.board_time(now));
            self.lost_energised = Some((serial, now, clock));
        }
        self.end_run(super::program::EndReason::Failed, Some(why.to_owned()));
        if let Some(mut attached) = self.board.take() {
            attached.board.set_event_sink(None);
        }
        self.fail_pending(ActuationError::NoBoard);
        lock(&self.inbox.events).clear();
        lock(&self.inbox.samples).clear();
        self.picture.forget_board(None);
        self.publish();
    }

    /// Fail every queued request and the level slot.
    pub fn fail_pending(&mut self, error: ActuationError) {
        let queued: Vec<_> = lock(&self.inbox.ordered).drain(..).collect();
        for (_, _, reply) in queued {
            let _ = reply.send(Err(error.clone()));
        }
        self.fail_level(error);
    }

    /// Answer the pending level request (if any) with `error`.
    pub fn fail_level(&mut self, error: ActuationError) {
        let pending = lock(&self.inbox.level).pending.take();
        if let Some((_, generation, _)) = pending {
            self.out.level.send_replace(LevelOutcome {
                generation,
                result: Err(error),
            });
        }
    }

    /// Cancel what an "off" overtakes: energising requests that arrived before `seq` (and,
    /// for all-off, the pending electrodes).
    fn cancel_older(&mut self, seq: u64, electrodes_too: bool, by: &str) {
        let superseded = ActuationError::Superseded(by.to_owned());
        self.cancel_queued(seq, &superseded, Ordered::energises);
        let older_level = lock(&self.inbox.level)
            .pending
            .as_ref()
            .is_some_and(|(s, _, _)| *s < seq);
        if electrodes_too && older_level {
            self.fail_level(ActuationError::Superseded(by.to_owned()));
        }
    }

    /// Answer `error` to the queued requests that arrived before `seq` and match `which`.
    pub(super) fn cancel_queued(
        &mut self,
        seq: u64,
        error: &ActuationError,
        which: impl Fn(&Ordered) -> bool,
    ) {
        let cancelled: Vec<_> = {
            let mut queue = lock(&self.inbox.ordered);
            let (old, keep): (Vec<_>, Vec<_>) =
                queue.drain(..).partition(|(s, o, _)| *s < seq && which(o));
            queue.extend(keep);
            old
        };
        for (_, _, reply) in cancelled {
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Latch a halt and make the board safe: the board's own halt for a requested one, the
    /// safe state otherwise (the board already halted itself, or the host decided).
    pub fn halt(&mut self, halt: Halt) -> Result<Picture, ActuationError> {
        tracing::warn!(reason = %halt.reason, "halt");
        let requested = halt.reason == "requested";
        self.policy.halt(halt.clone());
        self.picture.halted = self.policy.halted().cloned();
        self.end_run(super::program::EndReason::Halted, Some(halt.reason.clone()));
        self.fail_level(ActuationError::Halted(halt.reason.clone()));
        self.notice(Notice::Halted(halt));
        let result = match self.board.as_mut() {
            None => Ok(()),
            Some(_) if requested => {
                self.mask_before_halt
                    .get_or_insert_with(|| self.picture.disabled.clone());
                let r = self.board()?.board.halt();
                r.map_err(|e| self.board_failed(e))
            }
            Some(_) => self.board_safe(),
        };
        self.picture.hv_output_enabled = false;
        self.picture.channels.clear();
        if requested {
            self.read_mask();
        }
        self.picture.refresh_actuated();
        self.publish();
        result.map(|()| self.picture.clone())
    }

    fn board_safe(&mut self) -> Result<(), ActuationError> {
        let r = self.board()?.board.safe_state();
        r.map_err(|e| self.board_failed(e))
    }

    fn hv_off(&mut self) -> Result<Picture, ActuationError> {
        let r = self.board()?.board.set_hv(false);
        r.map_err(|e| self.board_failed(e))?;
        self.picture.hv_output_enabled = false;
        self.publish();
        Ok(self.picture.clone())
    }

    fn all_off(&mut self) -> Result<Picture, ActuationError> {
        let hv = self.hv_off();
        let channels = self.channels_off();
        hv.and(channels)
    }

    /// Every channel off.
    pub fn channels_off(&mut self) -> Result<Picture, ActuationError> {
        let r = self.board()?.board.set_channels(&BTreeSet::new());
        r.map_err(|e| self.board_failed(e))?;
        self.picture.channels.clear();
        self.picture.refresh_actuated();
        self.publish();
        Ok(self.picture.clone())
    }

    fn shutdown(&mut self) -> Result<Picture, ActuationError> {
        self.fail_pending(ActuationError::Stopped);
        let result = match self.board.as_mut() {
            Some(attached) => {
                let safe = attached.board.safe_state();
                let disarm = attached.board.disarm_failsafe();
                safe.and(disarm).map_err(ActuationError::Board)
            }
            None => Ok(()),
        };
        if let Some(mut attached) = self.board.take() {
            attached.board.set_event_sink(None);
        }
        self.picture.forget_board(None);
        self.picture.sequence = SequenceState::Idle;
        self.publish();
        result.map(|()| self.picture.clone())
    }

    /// Read the board's disabled mask into the picture.
    pub fn read_mask(&mut self) {
        let Ok(attached) = self.board() else { return };
        match attached.board.disabled_channels() {
            Ok(mask) => {
                self.picture.disabled = mask;
                self.picture.refresh_actuated();
            }
            Err(e) => tracing::warn!(error = %e, "could not read the disabled channels"),
        }
    }

    /// The board replaced its mask (chip insertion, short detection): keep the channels the
    /// user disabled disabled.
    pub fn keep_user_disabled(&mut self) {
        if self.user_disabled.is_subset(&self.picture.disabled) {
            return;
        }
        let mask: BTreeSet<u16> = self
            .picture
            .disabled
            .union(&self.user_disabled)
            .copied()
            .collect();
        let Ok(attached) = self.board() else { return };
        match attached.board.set_disabled_channels(&mask) {
            Ok(()) => self.read_mask(),
            Err(e) => tracing::warn!(error = %e, "could not keep the user's disabled channels"),
        }
    }

    /// A keep-alive a whole period late: it goes before anything else.
    fn keepalive_overdue(&self) -> bool {
        self.board.is_some() && Instant::now() >= self.next_keepalive + self.options.keepalive
    }

    fn keepalive_if_due(&mut self) -> bool {
        let now = Instant::now();
        if self.board.is_none() || now < self.next_keepalive {
            return false;
        }
        // Like requests, out of a sequence's way: with room before its next deadline or, once
        // overdue, right after a phase starts (that deadline is less than the budget away, so
        // the wait is short, and the board's failsafe is armed for at least three periods).
        let room = self.fits(super::ops::KEEPALIVE_BUDGET);
        let squeezed = !room && self.keepalive_overdue() && self.slot_after_phase;
        if !room && !squeezed {
            return false;
        }
        if squeezed {
            self.slot_after_phase = false;
        }
        self.next_keepalive = now + self.options.keepalive;
        let Ok(attached) = self.board() else {
            return false;
        };
        match attached.board.keepalive(room) {
            Ok(k) if k.board_reset => {
                tracing::warn!("the board restarted: everything it was told is gone");
                self.picture.hv_output_enabled = false;
                self.picture.channels.clear();
                let _ = self.halt(Halt::new(
                    "board-reset",
                    json!("the board restarted (its watchdog fired, or it lost power)"),
                ));
                self.arm_failsafe();
                self.read_mask();
                self.publish();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "board keep-alive failed"),
        }
        true
    }

    /// When the keep-alive next wants the thread: when due; due already but without room (a
    /// sequence's deadline is near), when it is overdue; overdue, never (it waits for the
    /// next phase start, which wakes the thread anyway).
    fn keepalive_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let overdue = self.next_keepalive + self.options.keepalive;
        match (now >= self.next_keepalive, now >= overdue) {
            (false, _) => Some(self.next_keepalive),
            (true, false) => Some(overdue),
            (true, true) => None,
        }
    }

    fn sleep(&mut self) {
        let run_deadline = self.run.as_ref().and_then(Run::deadline);
        let keepalive = self.board.as_ref().and_then(|_| self.keepalive_wake());
        if let (Some(t), true) = (
            run_deadline,
            self.run.as_ref().is_some_and(Run::awaits_feedback),
        ) {
            let t = keepalive.map_or(t, |k| t.min(k));
            return self.spin.spin(&self.inbox, t);
        }
        match (run_deadline, keepalive) {
            (Some(t), k) if k.is_none_or(|k| t <= k) => timing::sleep_until(&self.inbox, t),
            (_, Some(k)) => self.inbox.wait(Some(k)),
            (r, None) => self.inbox.wait(r),
        }
    }
}

/// Slack when telling a restarted board from one that kept running while it was away (both
/// readings come from clock mappings good to well under a millisecond).
const RESTART_MARGIN: Duration = Duration::from_millis(200);

/// Whether a board whose clock read `then_us` when it was lost, `away` ago, and reads `now`
/// has restarted meanwhile: a board that kept running reads `then + away`. Its clock is a
/// 32-bit microsecond counter (the DropBot's `micros()`), so the comparison wraps.
fn restarted(then_us: u64, away: Duration, now: Duration) -> bool {
    const WRAP: u64 = 1 << 32;
    let expected = (then_us + u64::try_from(away.as_micros()).unwrap_or(u64::MAX)) % WRAP;
    let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX) % WRAP;
    let off = now.abs_diff(expected);
    let off = off.min(WRAP - off);
    Duration::from_micros(off) > RESTART_MARGIN
}

/// How long a control request may wait behind the final spin to a deadline.
pub(super) const SPIN_WINDOW: Duration = Duration::from_millis(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_shows_in_the_board_clock() {
        let s = Duration::from_secs;
        // Kept running: then + away, give or take the margin.
        assert!(!restarted(3_000_000, s(1), s(4)));
        assert!(!restarted(3_000_000, s(1), Duration::from_millis(4_100)));
        assert!(restarted(3_000_000, s(1), Duration::from_millis(4_500)));
        // Restarted: its clock began again.
        assert!(restarted(3_000_000, s(1), Duration::from_millis(200)));
        assert!(restarted(600_000_000, s(10), s(9)));
        // Across the 32-bit wrap (~71.6 min) a running board still matches.
        let near_wrap = (1u64 << 32) - 500_000;
        assert!(!restarted(near_wrap, s(1), Duration::from_micros(500_000)));
    }
}
