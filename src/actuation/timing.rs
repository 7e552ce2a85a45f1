//! Deadlines on the engine's thread: a real-time priority where the OS allows it (with a quiet
//! fallback), and sleeping to an absolute instant: parked (and wakeable) until shortly before,
//! then spin-sleeping to the instant. Measured on these machines: a parked thread wakes 0.1 to
//! 1.5 ms late, `spin_sleep` to a deadline p99 14-86 us, on a SCHED_FIFO thread p99 5 us.
//!
//! While a feedback phase waits for its target the thread spins on its inbox instead of
//! parking: a parked thread is woken by the sample's ring tens of microseconds later (on a
//! virtual machine the ring is an inter-processor interrupt to an idle CPU). Spinning is
//! capped by [`SpinBudget`], so a run of long feedback phases cannot take a core for good (and
//! a real-time thread that never sleeps is throttled by the kernel, 50 ms of every second).

use std::time::{Duration, Instant};

use super::engine::SPIN_WINDOW;
use super::inbox::Inbox;

/// Give the calling thread a real-time (FIFO) priority if allowed; log what happened.
pub(super) fn prepare_thread(realtime: bool) {
    if !realtime {
        return;
    }
    match set_fifo() {
        Ok(()) => tracing::debug!("actuation thread runs with a real-time priority"),
        Err(e) => tracing::info!(
            error = %e,
            "no real-time priority for the actuation thread (it still keeps its deadlines, \
             with more jitter); grant CAP_SYS_NICE or an rtprio limit to get one"
        ),
    }
}

/// Give the calling thread the engine thread's real-time priority (FIFO, mid-range); why not,
/// if the OS refuses.
#[cfg(unix)]
pub fn set_fifo() -> Result<(), String> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    // Mid-range: above every normal thread, below the kernel's own real-time threads.
    let value = ThreadPriorityValue::try_from(50u8).map_err(|e| e.to_string())?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Give the calling thread the engine thread's real-time priority: not supported here.
#[cfg(not(unix))]
pub fn set_fifo() -> Result<(), String> {
    Err("not supported on this OS".into())
}

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

/// How much of the thread's time may go to spinning for feedback: at most [`SpinBudget::SHARE`]
/// of each [`SpinBudget::WINDOW`].
#[derive(Debug)]
pub(super) struct SpinBudget {
    window_start: Instant,
    spent: Duration,
}

impl SpinBudget {
    const WINDOW: Duration = Duration::from_secs(1);
    const SHARE: Duration = Duration::from_millis(500);
    /// One spin, at most: the loop looks at everything else between spins.
    const SLICE: Duration = Duration::from_millis(5);

    pub fn new() -> Self {
        SpinBudget {
            window_start: Instant::now(),
            spent: Duration::ZERO,
        }
    }

    /// Spin on `inbox` until rung or `deadline` (at most one slice), if the budget allows;
    /// false if it does not (the caller parks instead).
    pub fn spin(&mut self, inbox: &Inbox, deadline: Instant) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Self::WINDOW {
            self.window_start = now;
            self.spent = Duration::ZERO;
        }
        if self.spent >= Self::SHARE {
            return false;
        }
        let until = deadline.min(now + Self::SLICE.min(Self::SHARE - self.spent));
        inbox.spin(until);
        self.spent += now.elapsed();
        true
    }
}
