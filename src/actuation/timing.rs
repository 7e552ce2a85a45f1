//! Deadlines on the engine's thread: a real-time priority where the OS allows it (with a quiet
//! fallback), and sleeping to an absolute instant: parked (and wakeable) until shortly before,
//! then spin-sleeping to the instant. Measured on these machines: a parked thread wakes 0.1 to
//! 1.5 ms late, `spin_sleep` to a deadline p99 14-86 us, on a SCHED_FIFO thread p99 5 us.
//!
//! While a feedback phase waits for its target the thread spins on its inbox instead of
//! parking: a parked thread is woken by the sample's ring tens of microseconds later (on a
//! virtual machine the ring is an inter-processor interrupt to an idle CPU). A feedback wait
//! therefore keeps one core busy; [`SpinBudget`] keeps it within the kernel's real-time share
//! (a real-time thread that never sleeps is throttled, 50 ms of every second).

use std::time::{Duration, Instant};

use super::engine::SPIN_WINDOW;
use super::inbox::Inbox;

/// Give the calling thread a real-time (FIFO) priority if allowed; log what happened. True if
/// it has one.
pub(super) fn prepare_thread(realtime: bool) -> bool {
    if !realtime {
        return false;
    }
    match set_fifo() {
        Ok(()) => {
            tracing::debug!("actuation thread runs with a real-time priority");
            true
        }
        Err(e) => {
            tracing::info!(
            error = %e,
            "no real-time priority for the actuation thread (it still keeps its deadlines, \
             with more jitter); grant CAP_SYS_NICE or an rtprio limit to get one"
            );
            false
        }
    }
}

/// Give the calling thread the engine thread's real-time priority (FIFO, mid-range: above every
/// normal thread, below the kernel's own real-time threads); why not, if the OS refuses.
pub fn set_fifo() -> Result<(), String> {
    super::priority::set_fifo_priority(ENGINE_PRIORITY)
}

/// The engine thread's FIFO priority.
const ENGINE_PRIORITY: u8 = 50;

/// Sleep until `deadline`: parked (a ring wakes it early) until [`SPIN_WINDOW`] before, then
/// spin-sleeping to the instant. Returns early when rung during the parked part; the caller's
/// loop then looks again.
pub(super) fn sleep_until(inbox: &Inbox, deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    match deadline.checked_sub(SPIN_WINDOW) {
        Some(park_until) if park_until > now => inbox.wait(Some(park_until)),
        _ => sleeper().sleep_until(deadline),
    }
}

/// Native sleep to this long before the instant, then spin: a real-time thread's native sleep
/// wakes within a few microseconds, but a virtual machine's CPU can take a few hundred.
fn sleeper() -> spin_sleep::SpinSleeper {
    spin_sleep::SpinSleeper::new(300_000).with_spin_strategy(spin_sleep::SpinStrategy::SpinLoopHint)
}

/// How a feedback wait spins: a real-time thread spins at its real-time priority for at most
/// [`SpinBudget::SHARE`] of each [`SpinBudget::WINDOW`] (the kernel throttles a real-time
/// thread that does not sleep: 50 ms of every second, by default), then at the normal
/// priority, where it is not throttled and the kernel shares the core fairly. Parking instead
/// would cost a wake per reaction, tens to a hundred microseconds on a virtual machine.
#[derive(Debug)]
pub(super) struct SpinBudget {
    window_start: Instant,
    spent: Duration,
    /// The thread has a real-time priority to come back to.
    realtime: bool,
}

impl SpinBudget {
    const WINDOW: Duration = Duration::from_secs(1);
    const SHARE: Duration = Duration::from_millis(900);
    /// One spin, at most: the loop looks at everything else between spins.
    const SLICE: Duration = Duration::from_millis(5);

    pub fn new() -> Self {
        SpinBudget {
            window_start: Instant::now(),
            spent: Duration::ZERO,
            realtime: false,
        }
    }

    /// The thread got a real-time priority (spins past the share drop it for their length).
    pub fn set_realtime(&mut self, realtime: bool) {
        self.realtime = realtime;
    }

    /// Spin on `inbox` until rung or `deadline` (at most one slice).
    pub fn spin(&mut self, inbox: &Inbox, deadline: Instant) {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Self::WINDOW {
            self.window_start = now;
            self.spent = Duration::ZERO;
        }
        let demote = self.realtime && self.spent >= Self::SHARE;
        if demote && super::priority::set_normal_policy().is_err() {
            // Still real-time: spinning on would be throttled; park instead.
            return sleep_until(inbox, deadline.min(now + Self::SLICE));
        }
        let share_left = Self::SHARE.saturating_sub(self.spent);
        let slice = match self.realtime && !demote {
            true => Self::SLICE.min(share_left),
            false => Self::SLICE,
        };
        inbox.spin(deadline.min(now + slice));
        if demote {
            if let Err(e) = set_fifo() {
                tracing::warn!(error = %e, "the actuation thread lost its real-time priority");
                self.realtime = false;
            }
        } else {
            self.spent += now.elapsed();
        }
    }
}
