//! Simulation time: real (an `Instant` at start) or virtual (moved only by `advance` and by
//! the firmware's own work), so that physics and determinism tests are exact.

use std::time::{Duration, Instant};

/// Time since the simulation started, real or virtual.
#[derive(Debug, Clone)]
pub struct SimClock {
    start: Instant,
    virtual_now: Option<Duration>,
}

impl SimClock {
    /// A clock following the wall clock from now.
    pub fn real() -> Self {
        Self {
            start: Instant::now(),
            virtual_now: None,
        }
    }

    /// A clock standing at zero until advanced.
    pub fn virtual_clock() -> Self {
        Self {
            start: Instant::now(),
            virtual_now: Some(Duration::ZERO),
        }
    }

    /// Whether time moves only on [`SimClock::advance_to`].
    pub fn is_virtual(&self) -> bool {
        self.virtual_now.is_some()
    }

    /// Simulation time now.
    pub fn now(&self) -> Duration {
        match self.virtual_now {
            Some(now) => now,
            None => self.start.elapsed(),
        }
    }

    /// Move a virtual clock forward to `t` (never backwards); no effect on a real clock.
    pub fn advance_to(&mut self, t: Duration) {
        if let Some(now) = self.virtual_now.as_mut() {
            *now = (*now).max(t);
        }
    }

    /// The wall-clock instant of simulation time `t`. A virtual clock maps its present to the
    /// present instant (and its future, which only `advance` reaches, as far ahead).
    pub fn instant_of(&self, t: Duration) -> Instant {
        match self.virtual_now {
            Some(now) => Instant::now() + t.saturating_sub(now),
            None => self.start + t,
        }
    }

    /// The instant the clock was made (USB frames count from it).
    pub fn epoch(&self) -> Instant {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_forward_on_request() {
        let mut clock = SimClock::virtual_clock();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.advance_to(Duration::from_millis(5));
        clock.advance_to(Duration::from_millis(2));
        assert_eq!(clock.now(), Duration::from_millis(5));
        assert!(clock.is_virtual());
        let real = SimClock::real();
        assert!(!real.is_virtual());
    }
}
