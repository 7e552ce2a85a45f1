//! Exponential backoff with jitter between connection attempts, reset only after a stable
//! session (a broker that drops us right after each ConnAck is not hammered).

use std::time::Duration;

use rand::Rng;

/// First delay after a connection error; doubles up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest delay between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A session at least this long resets the backoff when it ends.
pub(crate) const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = 50 ms * 2^n,
/// capped at 2 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// The delay after a connection error; `session` is how long the connection that just
    /// broke lasted (`None`: it never came up). Only a stable session starts again from the
    /// shortest delay.
    pub(crate) fn after_error(&mut self, session: Option<Duration>) -> Duration {
        if session.is_some_and(|s| s >= STABLE_SESSION) {
            self.reset();
        }
        self.next_delay()
    }

    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = BACKOFF_START.saturating_mul(1 << i).min(BACKOFF_MAX);
            assert!(*d >= full / 2 && *d <= full, "delay {i}: {d:?} vs {full:?}");
        }
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }

    #[test]
    fn only_a_stable_session_resets_the_backoff() {
        let mut b = Backoff::new();
        for _ in 0..8 {
            b.after_error(None);
        }
        // A broker that drops us right after each ConnAck keeps us at the longest delay.
        let short = Some(Duration::from_millis(50));
        assert!(b.after_error(short) >= BACKOFF_MAX / 2);
        assert!(b.after_error(short) >= BACKOFF_MAX / 2);
        assert!(b.after_error(Some(STABLE_SESSION)) <= BACKOFF_START);
    }
}
