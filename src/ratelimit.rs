//! Limits on what a flood of bad input would otherwise repeat once per message: log lines and
//! the bus messages that only report it (error reports, failed replies).
//!
//! A client that misbehaves can send tens of thousands of messages a second. Each one gets
//! its answer while there is room, but a warning per message fills the disk, and a failure
//! report per message fills the outgoing queue that the answers to well-formed requests need.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Lines per [`LOG_WINDOW`] of a warning a flood can repeat, for each call site.
pub(crate) const LOG_BURST: u32 = 10;
/// See [`LOG_BURST`].
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Room for reports of failed requests (error topic and failed reply): a burst of 100, then
/// 100 a second. Far above what a user's mistakes make; far below what fills the outgoing
/// queue (rumqttc's, 256 messages, which the broker drains at tens of thousands a second).
pub(crate) fn failure_reports() -> TokenBucket {
    TokenBucket::new(100, 100)
}

/// A token bucket: up to `burst` at once, then `per_second` on average.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    burst: f64,
    per_second: f64,
    state: Mutex<Option<(f64, Instant)>>,
}

impl TokenBucket {
    /// A bucket that starts full.
    pub(crate) const fn new(burst: u32, per_second: u32) -> Self {
        TokenBucket {
            burst: burst as f64,
            per_second: per_second as f64,
            state: Mutex::new(None),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> bool {
        let mut state = lock(&self.state);
        let (tokens, since) = state.unwrap_or((self.burst, now));
        let refilled = now.saturating_duration_since(since).as_secs_f64() * self.per_second;
        let tokens = (tokens + refilled).min(self.burst);
        let (left, taken) = match tokens >= 1.0 {
            true => (tokens - 1.0, true),
            false => (tokens, false),
        };
        *state = Some((left, now));
        taken
    }
}

/// Log lines of one kind: at most `burst` per `window`; the others are counted, and the count
/// goes with the next line logged (`suppressed`), so a flood shows as a few lines with totals.
#[derive(Debug)]
pub(crate) struct LogLimit {
    burst: u32,
    window: Duration,
    state: Mutex<LogWindow>,
}

#[derive(Debug, Default)]
struct LogWindow {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// At most `burst` lines per `window`.
    pub(crate) const fn new(burst: u32, window: Duration) -> Self {
        LogLimit {
            burst,
            window,
            state: Mutex::new(LogWindow {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this line may be logged, `n` being the lines left out since the last one
    /// logged; `None` if it is left out (and counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = lock(&self.state);
        let expired = w
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged >= self.burst {
            w.suppressed += 1;
            return None;
        }
        w.logged += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// `tracing::$level!`, at most [`LOG_BURST`] lines per [`LOG_WINDOW`] from each call site;
/// the lines left out since the last one are its `suppressed` field.
macro_rules! log_limited {
    ($level:ident, $($field:tt)*) => {{
        static LIMIT: $crate::ratelimit::LogLimit = $crate::ratelimit::LogLimit::new(
            $crate::ratelimit::LOG_BURST,
            $crate::ratelimit::LOG_WINDOW,
        );
        if let Some(suppressed) = LIMIT.allow() {
            tracing::$level!(suppressed, $($field)*);
        }
    }};
}
pub(crate) use log_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let bucket = TokenBucket::new(3, 10);
        let t0 = Instant::now();
        let taken = (0..10).filter(|_| bucket.take_at(t0)).count();
        assert_eq!(taken, 3);
        // 10 a second: one more after 100 ms, never more than the burst.
        assert!(bucket.take_at(t0 + Duration::from_millis(100)));
        assert!(!bucket.take_at(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take_at(later)).count(), 3);
    }

    #[test]
    fn a_log_limit_counts_what_it_leaves_out() {
        let limit = LogLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(t0), Some(0));
        assert_eq!(limit.allow_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.allow_at(t0 + Duration::from_secs(1)), None);
        }
        // A new window: the first line carries the count of the ones left out.
        let next = t0 + Duration::from_secs(10);
        assert_eq!(limit.allow_at(next), Some(5));
        assert_eq!(limit.allow_at(next), Some(0));
        assert_eq!(limit.allow_at(next), None);
    }
}
