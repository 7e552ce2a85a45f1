//! Raw MQTT for the fault suite: a [`Publisher`] that sends as fast as the broker takes it
//! (QoS 0, like MicroDrop's clients) and can tell when the broker has everything it sent, and a
//! [`Counter`] of the messages the plugin sends back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Largest packet either side handles: the plugin reads up to 8 MiB.
const MAX_PACKET: usize = 16 * 1024 * 1024;

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_keep_alive(Duration::from_secs(60))
        .set_request_channel_capacity(1024)
        .set_clean_session(true);
    o
}

/// A client that publishes raw payloads, QoS 0.
pub struct Publisher {
    client: AsyncClient,
    acks: Arc<AtomicU64>,
    acked: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Connects to the broker on 127.0.0.1:`port`.
    pub async fn connect(id: &str, port: u16) -> Publisher {
        let (client, mut eventloop) = AsyncClient::new(options(id, port), 1024);
        let acks = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(Notify::new());
        let (a, n) = (acks.clone(), acked.clone());
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        n.notify_waiters();
                    }
                    Ok(_) => {}
                    // A broker restart: try again (tests restart brokers on purpose).
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acks,
            acked,
            task,
        }
    }

    /// Queues one message (waits while the client's queue is full).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, payload)
            .await
            .expect("the publisher's event loop runs");
    }

    /// Waits (up to `timeout`) until the broker has received everything published so far: a
    /// QoS 1 message after them is acknowledged only once the broker has read what came before
    /// it on this connection.
    pub async fn sync(&self, timeout: Duration) -> bool {
        let before = self.acks.load(Ordering::SeqCst);
        let topic = format!("dropbot-faults-sync/{}", uuid::Uuid::new_v4());
        if self
            .client
            .publish(topic, QoS::AtLeastOnce, false, b"sync".to_vec())
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.acked.notified();
                if self.acks.load(Ordering::SeqCst) > before {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts the messages arriving on some filters, per filter.
pub struct Counter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    task: JoinHandle<()>,
}

impl Counter {
    /// Subscribes to `filters` on 127.0.0.1:`port` and counts what arrives (by the first
    /// filter that matches the topic).
    pub async fn start(id: &str, port: u16, filters: &[&str]) -> Counter {
        let (client, mut eventloop) = AsyncClient::new(options(id, port), 64);
        let filters: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let c = counts.clone();
        let subscribed = Arc::new(Notify::new());
        let s = subscribed.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = client.try_subscribe(f, QoS::AtMostOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(f) = filters
                            .iter()
                            .find(|f| dropbot_plugin::bus::filter_matches(f, &p.topic))
                        {
                            let status = serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|v| {
                                    let busy = v["response"]
                                        .as_str()
                                        .is_some_and(|r| r.starts_with("busy"));
                                    let status = v["status"].as_str()?;
                                    Some(if busy { "busy" } else { status }.to_owned())
                                });
                            let last = p.topic.rsplit('/').next().unwrap_or_default();
                            if let Ok(mut counts) = c.lock() {
                                *counts.entry(f.clone()).or_default() += 1;
                                if let Some(status) = status {
                                    *counts.entry(format!("{last} {status}")).or_default() += 1;
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), subscribed.notified())
            .await
            .expect("the counter's subscription");
        Counter { counts, task }
    }

    /// Answers counted per topic's last level and status (`"voltage failed"`), most first.
    pub fn answers(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .counts
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(k, _)| {
                        k.ends_with(" success") || k.ends_with(" failed") || k.ends_with(" busy")
                    })
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|a| std::cmp::Reverse(a.1));
        out
    }

    /// Messages counted on `filter` so far.
    pub fn count(&self, filter: &str) -> u64 {
        self.counts
            .lock()
            .map(|c| c.get(filter).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
