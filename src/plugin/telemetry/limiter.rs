//! Rate limits for retained readings, and batches for the sample signal. Pure: time comes
//! from the caller, so every rule is unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// At most one value per `interval`; a value offered too early waits and is replaced by a
/// newer one, so the last value published is always the newest offered.
#[derive(Debug, Clone)]
pub struct Limiter {
    interval: Duration,
    last: Option<Instant>,
    pending: Option<Value>,
}

impl Limiter {
    /// At most one value per `interval`.
    pub fn new(interval: Duration) -> Self {
        Limiter {
            interval,
            last: None,
            pending: None,
        }
    }

    /// `value` at `now`: returned if it may go now, otherwise kept for [`Limiter::poll`].
    pub fn offer(&mut self, now: Instant, value: Value) -> Option<Value> {
        if self.last.is_none_or(|last| now >= last + self.interval) {
            self.last = Some(now);
            self.pending = None;
            Some(value)
        } else {
            self.pending = Some(value);
            None
        }
    }

    /// When a kept value may go.
    pub fn due(&self) -> Option<Instant> {
        match (&self.pending, self.last) {
            (Some(_), Some(last)) => Some(last + self.interval),
            (Some(_), None) => Some(Instant::now()),
            _ => None,
        }
    }

    /// The kept value, if its time has come.
    pub fn poll(&mut self, now: Instant) -> Option<Value> {
        if self.due().is_some_and(|due| now >= due) {
            self.last = Some(now);
            self.pending.take()
        } else {
            None
        }
    }
}

/// The retained readings that describe the connected board: null while there is none, and
/// never published from a board that is gone. (`recording`, also published here, describes
/// the run record and outlives a board.)
pub const BOARD_READINGS: [&str; 7] = [
    "capacitance",
    "measured-voltage",
    "currents",
    "temperature",
    "chip",
    "shorts",
    "droplets",
];

/// One [`Limiter`] per retained topic, and whether board readings may go.
#[derive(Debug, Clone)]
pub struct Limiters {
    interval: Duration,
    topics: BTreeMap<&'static str, Limiter>,
    board: bool,
}

impl Limiters {
    /// At most one value per `interval` on each topic.
    pub fn new(interval: Duration) -> Self {
        Limiters {
            interval,
            topics: BTreeMap::new(),
            board: false,
        }
    }

    /// `value` for `topic` at `now`: returned if it may go now. A board reading offered while
    /// no board is attached is dropped: a sample still queued when its board was lost must
    /// not replace the null that says there is no board.
    pub fn offer(&mut self, topic: &'static str, now: Instant, value: Value) -> Option<Value> {
        if !self.board && BOARD_READINGS.contains(&topic) {
            return None;
        }
        let interval = self.interval;
        self.topics
            .entry(topic)
            .or_insert_with(|| Limiter::new(interval))
            .offer(now, value)
    }

    /// The earliest time a kept value may go.
    pub fn due(&self) -> Option<Instant> {
        self.topics.values().filter_map(Limiter::due).min()
    }

    /// Every kept value whose time has come.
    pub fn poll(&mut self, now: Instant) -> Vec<(&'static str, Value)> {
        self.topics
            .iter_mut()
            .filter_map(|(topic, l)| l.poll(now).map(|v| (*topic, v)))
            .collect()
    }

    /// Forget `topic`, a kept value included; whether it had been offered a value.
    pub fn forget(&mut self, topic: &str) -> bool {
        self.topics.remove(topic).is_some()
    }

    /// A board is attached: its readings may go.
    pub fn board_attached(&mut self) {
        self.board = true;
    }

    /// The board is gone: forget its readings, kept values included, and drop any offered
    /// until the next board is attached; the reading topics that were offered a value.
    pub fn board_gone(&mut self) -> Vec<&'static str> {
        self.board = false;
        let gone: Vec<_> = (self.topics.keys().copied())
            .filter(|t| BOARD_READINGS.contains(t))
            .collect();
        for topic in &gone {
            self.topics.remove(topic);
        }
        gone
    }
}

/// Samples gathered into one message: sent when `max` are in, or `interval` after the first.
#[derive(Debug, Clone)]
pub struct Batch {
    max: usize,
    interval: Duration,
    started: Option<Instant>,
    items: Vec<Value>,
}

impl Batch {
    /// Batches of at most `max` samples, at most `interval` old.
    pub fn new(max: usize, interval: Duration) -> Self {
        Batch {
            max: max.max(1),
            interval,
            started: None,
            items: Vec::new(),
        }
    }

    /// Add a sample at `now`; the full batch if this filled it.
    pub fn push(&mut self, now: Instant, item: Value) -> Option<Vec<Value>> {
        self.started.get_or_insert(now);
        self.items.push(item);
        (self.items.len() >= self.max).then(|| self.take())
    }

    /// When the batch must go.
    pub fn due(&self) -> Option<Instant> {
        self.started.map(|s| s + self.interval)
    }

    /// The batch, if its time has come.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Value>> {
        match self.due() {
            Some(due) if now >= due => Some(self.take()),
            _ => None,
        }
    }

    /// Whatever is gathered (empty if nothing).
    pub fn take(&mut self) -> Vec<Value> {
        self.started = None;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_limiter_lets_one_through_per_interval_and_keeps_the_newest() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = Limiter::new(Duration::from_millis(100));
        assert_eq!(l.offer(ms(0), json!(1)), Some(json!(1)));
        assert_eq!(l.offer(ms(10), json!(2)), None);
        assert_eq!(l.offer(ms(20), json!(3)), None);
        assert_eq!(l.due(), Some(ms(100)));
        assert_eq!(l.poll(ms(99)), None);
        assert_eq!(
            l.poll(ms(100)),
            Some(json!(3)),
            "the newest, not the first kept"
        );
        assert_eq!(l.due(), None);
        assert_eq!(
            l.offer(ms(150), json!(4)),
            None,
            "100 ms after the last sent"
        );
        assert_eq!(l.offer(ms(200), json!(5)), Some(json!(5)));
    }

    #[test]
    fn limiters_are_per_topic() {
        let t0 = Instant::now();
        let mut l = Limiters::new(Duration::from_millis(100));
        assert!(l.offer("a", t0, json!(1)).is_some());
        assert!(l.offer("b", t0, json!(1)).is_some());
        assert!(l.offer("a", t0, json!(2)).is_none());
        let later = t0 + Duration::from_millis(100);
        assert_eq!(l.due(), Some(later));
        assert_eq!(l.poll(later), vec![("a", json!(2))]);
    }

    #[test]
    fn a_lost_board_takes_its_readings_and_only_them() {
        let t0 = Instant::now();
        let mut l = Limiters::new(Duration::from_millis(100));
        assert_eq!(l.offer("capacitance", t0, json!(1)), None, "no board yet");
        assert_eq!(l.due(), None, "and nothing kept for later");
        l.board_attached();
        assert!(l.offer("capacitance", t0, json!(1)).is_some());
        assert!(l.offer("capacitance", t0, json!(2)).is_none(), "kept");
        assert!(l.offer("chip", t0, json!(1)).is_some());
        assert!(l.offer("recording", t0, json!(true)).is_some());
        assert!(l.offer("recording", t0, json!(false)).is_none(), "kept");
        assert_eq!(l.board_gone(), vec!["capacitance", "chip"]);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            l.poll(later),
            vec![("recording", json!(false))],
            "the kept reading is gone, the record's state is not"
        );
        assert_eq!(
            l.offer("capacitance", later, json!(3)),
            None,
            "a late sample"
        );
        assert_eq!(l.due(), None);
        assert!(l.board_gone().is_empty());
        assert!(l.forget("recording") && !l.forget("recording"));
        l.board_attached();
        assert!(
            l.offer("capacitance", later, json!(4)).is_some(),
            "a new board"
        );
    }

    #[test]
    fn a_batch_goes_when_full_or_when_old() {
        let t0 = Instant::now();
        let mut b = Batch::new(3, Duration::from_millis(50));
        assert!(b.push(t0, json!(1)).is_none());
        assert!(b.push(t0, json!(2)).is_none());
        assert_eq!(
            b.push(t0, json!(3)),
            Some(vec![json!(1), json!(2), json!(3)])
        );
        assert_eq!(b.due(), None);
        assert!(b.push(t0 + Duration::from_millis(10), json!(4)).is_none());
        assert_eq!(b.poll(t0 + Duration::from_millis(59)), None);
        assert_eq!(b.poll(t0 + Duration::from_millis(60)), Some(vec![json!(4)]));
        assert!(b.take().is_empty());
    }
}
