//! Device time: the board's free-running 32-bit microsecond counter (it wraps every ~71.6
//! minutes) unwrapped into a 64-bit timeline, and mapped to host time by sampling.
//!
//! A sample is a `microseconds()` call: the board read its counter somewhere between the host's
//! send and the moment its reply left. A DropBot holds a short reply for 4 to 5 ms before it
//! leaves (the Teensy's USB serial sends a partial packet at the fifth 1 ms frame after the
//! last write: PaulStoffregen/cores `teensy3/usb_serial.c`, `TRANSMIT_FLUSH_TIMEOUT` 5), so in
//! a round trip at least [`SHORT_REPLY_HOLD`] long the counter was read in its first
//! `rtt - hold`; a shorter one (a board or simulator that answers at once) had no hold. The
//! middle of that window is the best guess and half of it bounds the error (the plain
//! midpoint of a DropBot's round trip is ~2 ms late). The sample with the narrowest window
//! among the recent ones anchors the mapping; samples older than `max_age` are forgotten so
//! the crystals' drift does not accumulate. Pure: no I/O.

use std::time::{Duration, Instant};

/// Samples kept for choosing the best round trip.
const MAX_SAMPLES: usize = 8;

/// The shortest time a DropBot holds a short reply before it leaves; see the module docs.
pub const SHORT_REPLY_HOLD: Duration = Duration::from_millis(4);

/// One synchronisation sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSample {
    /// Unwrapped board microseconds.
    pub board_us: u64,
    /// Host time at the middle of the window in which the board read its counter.
    pub host: Instant,
    /// The round trip.
    pub rtt: Duration,
    /// The window in which the board read its counter (the round trip less the reply's
    /// hold); the mapping's error is at most half of it.
    pub window: Duration,
}

/// The board's timeline; see the module docs.
#[derive(Debug, Clone)]
pub struct BoardClock {
    /// Latest unwrapped counter value seen (never decreases).
    last: Option<u64>,
    samples: Vec<SyncSample>,
    max_age: Duration,
    reply_hold: Duration,
}

impl Default for BoardClock {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// The 64-bit value congruent to `raw` modulo 2^32 that lies nearest to `reference`.
pub fn unwrap_near(raw: u32, reference: u64) -> u64 {
    // Truncation is the point: the low 32 bits of the reference.
    let delta = i64::from(raw.wrapping_sub(reference as u32) as i32);
    let value = i128::from(reference) + i128::from(delta);
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

impl BoardClock {
    /// A clock that forgets samples older than `max_age` (relative to the newest).
    pub fn new(max_age: Duration) -> Self {
        Self {
            last: None,
            samples: Vec::with_capacity(MAX_SAMPLES),
            max_age,
            reply_hold: SHORT_REPLY_HOLD,
        }
    }

    /// The same clock for a board that holds short replies for `hold` (zero: answers at once).
    pub fn with_reply_hold(mut self, hold: Duration) -> Self {
        self.reply_hold = hold;
        self
    }

    /// Unwrap a counter value read now (or near the latest one): values are taken within
    /// ±35 minutes of the latest seen, so out-of-order values stay in place.
    pub fn unwrap(&mut self, raw: u32) -> u64 {
        let value = match self.last {
            Some(last) => unwrap_near(raw, last),
            None => u64::from(raw),
        };
        self.note(value);
        value
    }

    /// Unwrap a counter value that the board read at about host time `at` (e.g. an event's
    /// timestamp): the reference is the mapped board time at `at` when a sample exists.
    pub fn unwrap_at(&mut self, raw: u32, at: Instant) -> u64 {
        match self.board_at(at) {
            Some(reference) => {
                let value = unwrap_near(raw, reference);
                self.note(value);
                value
            }
            None => self.unwrap(raw),
        }
    }

    /// Record a `microseconds()` round trip: sent at `sent`, answered `raw` at `received`.
    /// Returns the unwrapped board time of the sample.
    pub fn add_sample(&mut self, raw: u32, sent: Instant, received: Instant) -> u64 {
        let rtt = received.saturating_duration_since(sent);
        let hold = match rtt >= self.reply_hold {
            true => self.reply_hold,
            false => Duration::ZERO,
        };
        let window = rtt - hold;
        let host = sent + window / 2;
        let board_us = self.unwrap_at(raw, host);
        let sample = SyncSample {
            board_us,
            host,
            rtt,
            window,
        };
        let newest = self.samples.iter().map(|s| s.host).max().unwrap_or(host);
        let newest = newest.max(host);
        let max_age = self.max_age;
        self.samples
            .retain(|s| newest.saturating_duration_since(s.host) <= max_age);
        if self.samples.len() >= MAX_SAMPLES {
            // Forget the oldest.
            if let Some(oldest) = self
                .samples
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.host)
                .map(|(i, _)| i)
            {
                self.samples.swap_remove(oldest);
            }
        }
        self.samples.push(sample);
        board_us
    }

    /// The sample anchoring the mapping: the narrowest window among the recent ones.
    pub fn best(&self) -> Option<SyncSample> {
        self.samples.iter().min_by_key(|s| s.window).copied()
    }

    /// Latest unwrapped counter value seen.
    pub fn latest(&self) -> Option<u64> {
        self.last
    }

    /// Board microseconds at host time `at`, if synchronised.
    pub fn board_at(&self, at: Instant) -> Option<u64> {
        let best = self.best()?;
        let value = if at >= best.host {
            i128::from(best.board_us) + (at - best.host).as_micros() as i128
        } else {
            i128::from(best.board_us) - (best.host - at).as_micros() as i128
        };
        Some(u64::try_from(value.max(0)).unwrap_or(u64::MAX))
    }

    /// Host time at which the board's counter read `board_us`, if synchronised.
    pub fn host_at(&self, board_us: u64) -> Option<Instant> {
        let best = self.best()?;
        if board_us >= best.board_us {
            best.host
                .checked_add(Duration::from_micros(board_us - best.board_us))
        } else {
            best.host
                .checked_sub(Duration::from_micros(best.board_us - board_us))
        }
    }

    fn note(&mut self, value: u64) {
        self.last = Some(self.last.map_or(value, |last| last.max(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAP: u64 = 1 << 32;

    #[test]
    fn unwraps_across_the_wrap() {
        let mut c = BoardClock::default();
        assert_eq!(c.unwrap(u32::MAX - 10), WRAP - 11);
        assert_eq!(c.unwrap(5), WRAP + 5);
        assert_eq!(c.unwrap(1_000), WRAP + 1_000);
        // Many wraps, each seen at least once per half period.
        let mut raw = 1_000u32;
        for _ in 0..10 {
            raw = raw.wrapping_add(u32::MAX / 3);
            c.unwrap(raw);
        }
        assert!(c.latest().unwrap() > 4 * WRAP);
    }

    #[test]
    fn out_of_order_values_stay_in_place() {
        let mut c = BoardClock::default();
        c.unwrap(3);
        // Nearest to 3 is "-3": the timeline starts at 0, so it clamps there.
        assert_eq!(c.unwrap(u32::MAX - 2), 0);
        let mut c = BoardClock::default();
        c.unwrap(u32::MAX - 100);
        c.unwrap(50); // wrapped
                      // A late value from before the wrap unwraps below the latest, and the latest holds.
        assert_eq!(c.unwrap(u32::MAX - 60), WRAP - 61);
        assert_eq!(c.latest(), Some(WRAP + 50));
        assert_eq!(unwrap_near(10, 3 * WRAP + 20), 3 * WRAP + 10);
        assert_eq!(unwrap_near(u32::MAX, 3 * WRAP + 20), 3 * WRAP - 1);
    }

    #[test]
    fn maps_with_the_best_round_trip() {
        let t0 = Instant::now();
        let mut c = BoardClock::default();
        assert_eq!(c.board_at(t0), None);
        // Board counter = 1_000_000 + host microseconds since t0.
        let us = |d: Duration| (1_000_000 + d.as_micros()) as u32;
        // A slow sample whose answer came early in its window (midpoint off by 4 ms).
        let sent = t0;
        let received = t0 + Duration::from_millis(10);
        c.add_sample(us(Duration::from_millis(1)), sent, received);
        // A fast sample, exact.
        let sent = t0 + Duration::from_millis(20);
        let received = sent + Duration::from_micros(200);
        c.add_sample(us(Duration::from_micros(20_100)), sent, received);
        assert_eq!(c.best().unwrap().rtt, Duration::from_micros(200));
        let at = t0 + Duration::from_millis(50);
        assert_eq!(c.board_at(at), Some(1_050_000));
        let host = c.host_at(1_050_000).unwrap();
        assert_eq!(host, at);
    }

    #[test]
    fn a_dropbot_s_held_reply_is_not_taken_for_the_middle_of_its_round_trip() {
        let t0 = Instant::now();
        let mut c = BoardClock::default();
        // Board counter = host microseconds since t0. The board read it 300 µs after the
        // send; its reply left 4.6 ms later (the USB flush) and arrived 100 µs after that.
        let sent = t0 + Duration::from_millis(10);
        let read = sent + Duration::from_micros(300);
        let received = read + Duration::from_micros(4_700);
        c.add_sample((read - t0).as_micros() as u32, sent, received);
        let best = c.best().unwrap();
        assert_eq!(best.window, Duration::from_micros(1_000));
        let at = t0 + Duration::from_millis(100);
        let error = c.board_at(at).unwrap().abs_diff(100_000);
        // The middle of the window: 200 µs off (the round trip's midpoint: 2,200 µs).
        assert_eq!(error, 200);
        // A board that answers at once keeps the midpoint.
        let mut c = BoardClock::default().with_reply_hold(Duration::ZERO);
        c.add_sample((read - t0).as_micros() as u32, sent, received);
        assert_eq!(c.board_at(at).unwrap().abs_diff(100_000), 2_200);
    }

    #[test]
    fn old_samples_are_forgotten() {
        let t0 = Instant::now();
        let mut c = BoardClock::new(Duration::from_secs(1));
        c.add_sample(100, t0, t0 + Duration::from_micros(10));
        let later = t0 + Duration::from_secs(5);
        c.add_sample(5_000_100, later, later + Duration::from_millis(3));
        // The fast but old sample is gone: the slow recent one anchors.
        assert_eq!(c.best().unwrap().rtt, Duration::from_millis(3));
        for i in 0..20u32 {
            let t = later + Duration::from_millis(u64::from(i));
            c.add_sample(5_000_100 + i * 1000, t, t + Duration::from_millis(3));
        }
        assert!(c.samples.len() <= MAX_SAMPLES);
    }

    #[test]
    fn event_time_unwraps_near_the_mapped_time() {
        let t0 = Instant::now();
        let mut c = BoardClock::default();
        // Synchronised just before a wrap.
        c.add_sample(u32::MAX - 1_000, t0, t0);
        // An event stamped 2 ms later, after the wrap, arrives.
        let v = c.unwrap_at(999, t0 + Duration::from_millis(2));
        assert_eq!(v, WRAP + 999);
    }
}
