//! The capacitance trace: the newest readings in a ring of fixed size, each with a sequence
//! number so that every page gets each reading once, and a page that fell behind gets what
//! is still in the ring rather than a queue that grows.

use std::collections::VecDeque;

/// Readings kept (two minutes at the demo's 100 ms stream).
pub const CAPACITY: usize = 1200;

/// One reading: host time (ms since the Unix epoch) and farads.
pub type Sample = [f64; 2];

/// A ring of the newest readings.
#[derive(Debug, Clone)]
pub struct Samples {
    ring: VecDeque<Sample>,
    capacity: usize,
    /// Sequence number of the next reading.
    next: u64,
}

impl Default for Samples {
    fn default() -> Self {
        Samples::with_capacity(CAPACITY)
    }
}

impl Samples {
    /// A ring of at most `capacity` readings (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Samples {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    /// Adds a reading, forgetting the oldest when full. Readings that are not finite are
    /// refused (false).
    pub fn push(&mut self, t_ms: f64, farads: f64) -> bool {
        if !(t_ms.is_finite() && farads.is_finite()) {
            return false;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back([t_ms, farads]);
        self.next += 1;
        true
    }

    /// Sequence number of the next reading (a cursor that has seen everything).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The readings from sequence number `from` on that are still kept, and the cursor after
    /// them.
    pub fn since(&self, from: u64) -> (Vec<Sample>, u64) {
        let oldest = self.next - self.ring.len() as u64;
        let skip = from.saturating_sub(oldest);
        let fresh = self
            .ring
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .copied()
            .collect();
        (fresh, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reading_is_handed_out_once() {
        let mut s = Samples::with_capacity(4);
        let (none, cursor) = s.since(0);
        assert!(none.is_empty());
        assert_eq!(cursor, 0);
        s.push(1.0, 1e-12);
        s.push(2.0, 2e-12);
        let (got, cursor) = s.since(cursor);
        assert_eq!(got, vec![[1.0, 1e-12], [2.0, 2e-12]]);
        assert_eq!(s.since(cursor).0, Vec::<Sample>::new());
        s.push(3.0, 3e-12);
        assert_eq!(s.since(cursor), (vec![[3.0, 3e-12]], 3));
    }

    #[test]
    fn a_reader_that_fell_behind_gets_what_the_ring_still_holds() {
        let mut s = Samples::with_capacity(3);
        for i in 0..10 {
            s.push(f64::from(i), 1e-12);
        }
        let (got, cursor) = s.since(2);
        assert_eq!(
            got.iter().map(|r| r[0]).collect::<Vec<_>>(),
            [7.0, 8.0, 9.0]
        );
        assert_eq!(cursor, 10);
        // A cursor from the future (another hub) yields nothing rather than panicking.
        assert!(s.since(99).0.is_empty());
    }

    #[test]
    fn nonsense_readings_are_refused() {
        let mut s = Samples::default();
        assert!(!s.push(f64::NAN, 1e-12));
        assert!(!s.push(1.0, f64::INFINITY));
        assert_eq!(s.next_seq(), 0);
    }
}
