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

/// One [`Limiter`] per retained topic.
#[derive(Debug, Clone)]
pub struct Limiters {
    interval: Duration,
    topics: BTreeMap<&'static str, Limiter>,
}

impl Limiters {
    /// At most one value per `interval` on each topic.
    pub fn new(interval: Duration) -> Self {
        Limiters {
            interval,
            topics: BTreeMap::new(),
        }
    }

    /// `value` for `topic` at `now`: returned if it may go now.
    pub fn offer(&mut self, topic: &'static str, now: Instant, value: Value) -> Option<Value> {
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

    /// Forget every topic, kept values included; the topics that were offered a value.
    pub fn forget(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.topics).into_keys().collect()
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
    fn forgetting_drops_kept_values_and_names_the_topics_used() {
        let t0 = Instant::now();
        let mut l = Limiters::new(Duration::from_millis(100));
        assert!(l.offer("a", t0, json!(1)).is_some());
        assert!(l.offer("a", t0, json!(2)).is_none());
        assert!(l.offer("b", t0, json!(1)).is_some());
        assert_eq!(l.forget(), vec!["a", "b"]);
        assert_eq!(l.due(), None, "the kept value is gone");
        assert!(l.forget().is_empty());
        assert!(l.offer("a", t0, json!(3)).is_some(), "a new start");
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
