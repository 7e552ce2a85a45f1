//! What the bus takes in: payload limits per topic, and a byte budget for the messages waiting
//! to be handled.
//!
//! rumqttc drops the whole connection over a packet larger than its maximum, and a *retained*
//! packet comes again at every resubscription: one bad publisher would keep the plugin off the
//! bus. So the transport's maximum is MQTT's own (what a broker with default settings forwards),
//! and the limits that matter are per topic, applied as each message arrives: a message over
//! its topic's limit is dropped at once (only its size is handed on, so the handler can say
//! which topic and what is allowed), and the connection stays up.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::topics::filter_matches;

/// MQTT 3.1.1's largest packet (remaining length 268,435,455 plus the fixed header, which
/// rumqttc does not count).
pub const MQTT_MAX_PACKET: usize = 268_435_455;

/// Largest payload taken, per topic: the most specific filter of `topics` that matches (the
/// one with more literal levels; then one without `#`; then the longer), else `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadLimits {
    /// The limit of topics that no filter of `topics` matches, bytes.
    pub default: usize,
    /// MQTT filters (`+` and `#` allowed) and their limits, bytes.
    pub topics: Vec<(String, usize)>,
}

impl PayloadLimits {
    /// Only a default.
    pub fn new(default: usize) -> Self {
        PayloadLimits {
            default,
            topics: Vec::new(),
        }
    }

    /// The limit for a message on `topic`.
    pub fn for_topic(&self, topic: &str) -> usize {
        self.topics
            .iter()
            .filter(|(filter, _)| filter_matches(filter, topic))
            .max_by_key(|(filter, _)| {
                let literal = filter.split('/').filter(|l| *l != "+" && *l != "#").count();
                (literal, !filter.ends_with('#'), filter.len())
            })
            .map_or(self.default, |(_, limit)| *limit)
    }

    /// The largest limit of all (what the transport must at least carry).
    pub fn largest(&self) -> usize {
        self.topics
            .iter()
            .map(|(_, limit)| *limit)
            .fold(self.default, usize::max)
    }
}

/// Bytes of incoming messages not handled yet: the poll task waits for room before it hands
/// a message on, so what waits in the channel is bounded by bytes as well as by count.
#[derive(Clone)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    total: u32,
}

impl Budget {
    /// A budget of `bytes` (at least 1, at most `u32::MAX`).
    pub(crate) fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        Budget {
            bytes: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits until `size` bytes fit (a message larger than the whole budget takes all of it).
    pub(crate) async fn take(&self, size: usize) -> Option<Arc<OwnedSemaphorePermit>> {
        let n = u32::try_from(size).unwrap_or(u32::MAX).clamp(1, self.total);
        // Fails only when the semaphore is closed, which this type never does.
        self.bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .ok()
            .map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_filter_wins() {
        let limits = PayloadLimits {
            default: 100,
            topics: vec![
                ("microdrop/#".into(), 10),
                ("microdrop/+/state/+".into(), 20),
                ("microdrop/device-model/state/+".into(), 30),
                ("microdrop/device-model/state/three-object".into(), 40),
            ],
        };
        assert_eq!(limits.for_topic("other/topic"), 100);
        assert_eq!(limits.for_topic("microdrop/put/dropbot/voltage"), 10);
        assert_eq!(limits.for_topic("microdrop/dropbot/state/status"), 20);
        assert_eq!(limits.for_topic("microdrop/device-model/state/x"), 30);
        assert_eq!(
            limits.for_topic("microdrop/device-model/state/three-object"),
            40
        );
        assert_eq!(limits.largest(), 100);
    }

    #[tokio::test]
    async fn the_budget_bounds_bytes_in_flight() {
        let budget = Budget::new(1000);
        let a = budget.take(600).await;
        let b = budget.take(400).await;
        assert!(a.is_some() && b.is_some());
        use futures_util::FutureExt;
        assert!(
            budget.take(1).now_or_never().is_none(),
            "the budget was exceeded"
        );
        drop(a);
        // A message larger than the whole budget waits for all of it, then passes.
        drop(b);
        assert!(budget.take(5000).await.is_some());
    }
}
