//! [`Hub`]: the one picture shared by the bus task, the droplet reader and every page.
//!
//! Pages are not sent a queue of changes. Each page's stream keeps a [`Cursor`] (which
//! version of the chip and of the live state it has, and which capacitance reading it saw
//! last) and asks for what is newer when it is ready to send; a slow browser therefore gets
//! the latest state, coalesced, and costs the server one cursor, never a growing queue.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use tokio::sync::watch;

use super::picture::Picture;

/// One server-sent event: its name and JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `device`, `live` or `capacitance`.
    pub event: &'static str,
    /// Compact JSON (no raw newlines, as server-sent events need).
    pub data: Arc<str>,
}

/// What one page has been sent.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    device: Option<u64>,
    live: Option<u64>,
    samples: u64,
}

struct Inner {
    picture: Picture,
    device: Arc<str>,
    live: Arc<str>,
    live_version: u64,
}

/// The shared picture and who is watching it.
pub struct Hub {
    inner: Mutex<Inner>,
    changed: watch::Sender<()>,
    viewers: watch::Sender<usize>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// A hub with an empty picture.
    pub fn new() -> Self {
        let picture = Picture::new();
        let live = picture.live().to_string().into();
        Hub {
            inner: Mutex::new(Inner {
                picture,
                device: "null".into(),
                live,
                live_version: 1,
            }),
            changed: watch::Sender::new(()),
            viewers: watch::Sender::new(0),
        }
    }

    /// The picture stays usable after a panic elsewhere: every change to it is one call.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Changes the picture and wakes the pages if anything they show changed.
    pub fn update<R>(&self, change: impl FnOnce(&mut Picture) -> R) -> R {
        let mut inner = self.lock();
        let device_before = inner.picture.device_version();
        let samples_before = inner.picture.samples().next_seq();
        let result = change(&mut inner.picture);
        let mut changed = inner.picture.samples().next_seq() != samples_before;
        if inner.picture.device_version() != device_before {
            inner.device = inner.picture.device_page().unwrap_or_else(|| "null".into());
            changed = true;
        }
        let live = inner.picture.live().to_string();
        if *live != *inner.live {
            inner.live = live.into();
            inner.live_version += 1;
            changed = true;
        }
        drop(inner);
        if changed {
            self.changed.send_replace(());
        }
        result
    }

    /// Reads the picture.
    pub fn read<R>(&self, look: impl FnOnce(&Picture) -> R) -> R {
        look(&self.lock().picture)
    }

    /// The live state as the page gets it (JSON text).
    pub fn live_json(&self) -> Arc<str> {
        self.lock().live.clone()
    }

    /// What `cursor` has not been sent yet (empty when it is up to date), and the cursor moved
    /// past it.
    pub fn poll(&self, cursor: &mut Cursor) -> Vec<Message> {
        let inner = self.lock();
        let mut out = Vec::new();
        let device_version = inner.picture.device_version();
        if cursor.device != Some(device_version) {
            cursor.device = Some(device_version);
            out.push(Message {
                event: "device",
                data: inner.device.clone(),
            });
        }
        if cursor.live != Some(inner.live_version) {
            cursor.live = Some(inner.live_version);
            out.push(Message {
                event: "live",
                data: inner.live.clone(),
            });
        }
        let (samples, next) = inner.picture.samples().since(cursor.samples);
        cursor.samples = next;
        if !samples.is_empty() {
            out.push(Message {
                event: "capacitance",
                data: json!({ "samples": samples }).to_string().into(),
            });
        }
        out
    }

    /// Fires whenever something a page shows changed.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The number of open pages, watched.
    pub fn viewers(&self) -> watch::Receiver<usize> {
        self.viewers.subscribe()
    }

    /// Counts a page in while fewer than `max` are open; the page counts out when the
    /// returned guard is dropped.
    pub fn join(self: &Arc<Self>, max: usize) -> Option<Viewer> {
        let joined = self.viewers.send_if_modified(|n| {
            let room = *n < max;
            if room {
                *n += 1;
            }
            room
        });
        joined.then(|| Viewer { hub: self.clone() })
    }
}

/// One open page (see [`Hub::join`]).
pub struct Viewer {
    hub: Arc<Hub>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.hub.viewers.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn events(messages: &[Message]) -> Vec<&'static str> {
        messages.iter().map(|m| m.event).collect()
    }

    #[test]
    fn a_new_page_gets_everything_then_only_what_changed() {
        let hub = Hub::new();
        let mut cursor = Cursor::default();
        let first = hub.poll(&mut cursor);
        assert_eq!(events(&first), ["device", "live"]);
        assert_eq!(&*first[0].data, "null");
        assert!(hub.poll(&mut cursor).is_empty());

        hub.update(|p| p.on_state("voltage", Ok(json!(100.0))));
        let next = hub.poll(&mut cursor);
        assert_eq!(events(&next), ["live"]);
        let live: Value = serde_json::from_str(&next[0].data).unwrap();
        assert_eq!(live["voltage"], json!(100.0));

        // A change nobody sees (an ignored topic) wakes nobody and sends nothing.
        let mut woken = hub.subscribe();
        woken.borrow_and_update();
        hub.update(|p| p.on_state("schema", Ok(json!({}))));
        assert!(!woken.has_changed().unwrap());
        assert!(hub.poll(&mut cursor).is_empty());
    }

    #[test]
    fn a_slow_page_gets_the_latest_state_coalesced() {
        let hub = Hub::new();
        let mut cursor = Cursor::default();
        hub.poll(&mut cursor);
        for v in 0..1000 {
            hub.update(|p| p.on_state("voltage", Ok(json!(v))));
            hub.update(|p| {
                p.on_state(
                    "capacitance",
                    Ok(json!({"value": 1e-12, "host_time_ms": v})),
                )
            });
        }
        let late = hub.poll(&mut cursor);
        assert_eq!(events(&late), ["live", "capacitance"]);
        let live: Value = serde_json::from_str(&late[0].data).unwrap();
        assert_eq!(live["voltage"], json!(999));
        let samples: Value = serde_json::from_str(&late[1].data).unwrap();
        assert_eq!(samples["samples"].as_array().unwrap().len(), 1000);
    }

    #[test]
    fn pages_are_counted_and_capped() {
        let hub = Arc::new(Hub::new());
        let watch = hub.viewers();
        let a = hub.join(2).unwrap();
        let b = hub.join(2).unwrap();
        assert!(hub.join(2).is_none());
        assert_eq!(*watch.borrow(), 2);
        drop(a);
        assert_eq!(*watch.borrow(), 1);
        let _c = hub.join(2).unwrap();
        drop(b);
        assert_eq!(*watch.borrow(), 1);
    }
}
