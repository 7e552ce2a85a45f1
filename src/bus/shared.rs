//! State shared by [`BusHandle`](super::BusHandle)s, the poll task and the resync task: the
//! book of what must be restored on every (re)connection (subscriptions and our retained
//! messages), and the resync task that restores it. Every SUBSCRIBE goes out from the resync
//! task, synced (see [`super::sync`]), one at a time.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{watch, Notify};

use super::ack::Acks;
use super::client::ConnectionState;
use super::envelope::Header;
use super::error::BusError;
use super::guard::GuardWatch;
use super::limits::PayloadLimits;
use super::options::BusOptions;
use super::sync::{subscribe_synced, Synced, Syncs, SYNC_TIMEOUT};

/// How long the resync task waits before retrying when the request queue is full.
const RETRY_FULL: Duration = Duration::from_millis(20);
/// Our retained payloads remembered per topic until they come back; beyond this the oldest are
/// taken as lost (a topic we do not subscribe to never sends them back).
const MAX_ECHOES: usize = 8;
/// Answers that did not fit the request queue, kept in order until there is room; beyond this
/// many the newest are dropped (only a broker that takes nothing for long gets here).
const MAX_UNSENT_ANSWERS: usize = 1024;
/// A guarded topic is put back at most this often: two plugins started with one name would
/// otherwise overwrite each other as fast as the broker goes.
const DEFEND_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connection_attempts: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) dropped_outgoing: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) defended: AtomicU64,
}

/// The latest incoming message dropped for its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its topic.
    pub topic: String,
    /// Its payload's size, bytes.
    pub size: usize,
    /// The topic's limit, bytes.
    pub limit: usize,
}

/// What must survive a reconnection.
#[derive(Default)]
struct Book {
    /// Every filter subscribed, in order.
    filters: Vec<String>,
    /// Latest retained payload we published, per topic (cleared topics are absent).
    retained: HashMap<String, Vec<u8>>,
    /// Filters subscribed for the bus layer itself, left out of [`Shared::filters`].
    hidden: BTreeSet<String>,
    /// Filters not subscribed yet in this connection (the resync task sends them).
    unsent_filters: BTreeSet<String>,
    /// Retained topics whose latest value did not fit the request queue.
    unsent_retained: BTreeSet<String>,
    /// Answers (topic, payload) that did not fit the request queue, oldest first.
    unsent_answers: VecDeque<(String, Vec<u8>)>,
    /// Retained payloads we sent and have not seen come back, per topic, oldest first.
    echoes: HashMap<String, VecDeque<Vec<u8>>>,
    /// When each guarded topic was last put back.
    defended: HashMap<String, Instant>,
    /// The latest message dropped for its size.
    rejected: Option<Rejected>,
}

impl Book {
    /// Remembers `payload` as the latest retained value of `topic` (empty = cleared).
    fn record(&mut self, topic: &str, payload: &[u8]) {
        if payload.is_empty() {
            self.retained.remove(topic);
        } else {
            self.retained.insert(topic.to_owned(), payload.to_vec());
        }
    }

    /// Remembers that `payload` went out on `topic` and may come back.
    fn sent(&mut self, topic: &str, payload: &[u8]) {
        let queue = self.echoes.entry(topic.to_owned()).or_default();
        if queue.len() == MAX_ECHOES {
            queue.pop_front();
        }
        queue.push_back(payload.to_vec());
    }
}

/// State shared by handles, the poll task and the resync task.
pub(crate) struct Shared {
    pub(crate) client: AsyncClient,
    pub(crate) header: Header,
    pub(crate) max_packet: usize,
    pub(crate) max_payload: usize,
    /// Incoming payload limits per topic.
    pub(crate) limits: PayloadLimits,
    /// Retained topics our guards' wills reset (see the `guard` module).
    guarded: Vec<String>,
    /// How many guards are connected.
    pub(crate) guards: GuardWatch,
    pub(crate) counters: Counters,
    pub(crate) connected: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// Set by the poll task on ConnAck: the next resync restores everything.
    pub(crate) resync_all: AtomicBool,
    /// Wakes the resync task.
    pub(crate) kick: Notify,
    pub(crate) state: watch::Receiver<ConnectionState>,
    /// Number of the last connection whose full resync has been queued.
    pub(crate) resynced: watch::Sender<u64>,
    book: Mutex<Book>,
    /// Subscription syncs: which messages are stored state, who waits for a sync.
    pub(crate) syncs: Syncs,
    /// Packets from the broker and whether we acknowledged them.
    pub(crate) acks: Acks,
}

impl Shared {
    /// Queues a QoS 0 message, counted for the acknowledgements (see [`Acks::on_its_way`]).
    pub(crate) fn try_publish(
        &self,
        topic: impl Into<String>,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), rumqttc::ClientError> {
        self.client
            .try_publish(topic, QoS::AtMostOnce, retain, payload)?;
        self.acks.queued();
        Ok(())
    }

    pub(crate) fn new(
        client: AsyncClient,
        options: &BusOptions,
        state: watch::Receiver<ConnectionState>,
        guards: GuardWatch,
    ) -> Self {
        Shared {
            client,
            header: Header::new(options.name.clone(), options.version.clone()),
            max_packet: options.max_packet_size,
            max_payload: options.max_payload,
            limits: options.limits(),
            guarded: options.guards.iter().map(|w| w.topic.clone()).collect(),
            guards,
            counters: Counters::default(),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            resync_all: AtomicBool::new(false),
            kick: Notify::new(),
            state,
            resynced: watch::Sender::new(0),
            book: Mutex::new(Book::default()),
            syncs: Syncs::default(),
            acks: Acks::new(options.ack_grace),
        }
    }

    /// The book survives a panic elsewhere: its data stays consistent under the lock.
    fn book(&self) -> MutexGuard<'_, Book> {
        crate::sync::lock(&self.book)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// The error for a request that did not fit the queue, counted as a drop.
    pub(crate) fn dropped(&self, topic: &str) -> BusError {
        if self.is_closed() {
            return BusError::Closed;
        }
        self.counters
            .dropped_outgoing
            .fetch_add(1, Ordering::Relaxed);
        BusError::QueueFull(topic.to_owned())
    }

    /// Records a retained payload and queues it, both under the book's lock so that the last
    /// value queued for a topic is always the one in the book (the resync task does the same).
    /// A payload that does not fit the queue is not dropped: the resync task sends the latest
    /// value when there is room or after the next ConnAck.
    pub(crate) fn publish_retained(&self, topic: &str, payload: Vec<u8>) -> Result<(), BusError> {
        let mut book = self.book();
        book.record(topic, &payload);
        if self.try_publish(topic, true, payload.clone()).is_ok() {
            book.sent(topic, &payload);
            book.unsent_retained.remove(topic);
            return Ok(());
        }
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        book.unsent_retained.insert(topic.to_owned());
        drop(book);
        self.kick.notify_one();
        Ok(())
    }

    /// Queues a message that must not be lost to a full request queue (an answer to a
    /// request: its asker waits for it). What does not fit waits, in order and bounded, for
    /// the resync task, which sends it when there is room, after the retained states queued
    /// before it.
    pub(crate) fn publish_answer(&self, topic: &str, payload: Vec<u8>) -> Result<(), BusError> {
        let mut book = self.book();
        let waiting = !book.unsent_answers.is_empty() || !book.unsent_retained.is_empty();
        if !waiting && self.try_publish(topic, false, payload.clone()).is_ok() {
            return Ok(());
        }
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        if book.unsent_answers.len() >= MAX_UNSENT_ANSWERS {
            return Err(self.dropped(topic));
        }
        book.unsent_answers.push_back((topic.to_owned(), payload));
        drop(book);
        self.kick.notify_one();
        Ok(())
    }

    /// Whether `payload` on `topic` is a retained message of ours coming back (consumed, with
    /// any older one that did not come back). The same bytes written by someone else after a
    /// write of another value are not: each of our publications comes back once.
    pub(crate) fn take_own_echo(&self, topic: &str, payload: &[u8]) -> bool {
        let mut book = self.book();
        let Some(queue) = book.echoes.get_mut(topic) else {
            return false;
        };
        match queue.iter().position(|p| p.as_slice() == payload) {
            Some(at) => {
                queue.drain(..=at);
                true
            }
            None => false,
        }
    }

    /// Remembers a retained value without queueing it (the caller queues it itself), so that
    /// a concurrent resync cannot queue an older value after it.
    pub(crate) fn record_retained(&self, topic: &str, payload: &[u8]) {
        self.book().record(topic, payload);
    }

    /// Records `filters` (restored after every ConnAck) and has the resync task subscribe to
    /// the new ones, in one synced SUBSCRIBE.
    pub(crate) fn subscribe(&self, filters: &[&str]) -> Result<(), BusError> {
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        let mut book = self.book();
        for filter in filters {
            if !book.filters.iter().any(|f| f == filter) {
                book.filters.push((*filter).to_owned());
                book.unsent_filters.insert((*filter).to_owned());
            }
        }
        drop(book);
        self.kick.notify_one();
        Ok(())
    }

    /// Like [`subscribe`](Self::subscribe), for the bus layer's own use: not listed by
    /// [`filters`](Self::filters) (MicroDrop reads a plugin's subscriptions to learn what it
    /// takes).
    pub(crate) fn subscribe_hidden(&self, filters: &[&str]) -> Result<(), BusError> {
        self.book()
            .hidden
            .extend(filters.iter().map(|f| (*f).to_owned()));
        self.subscribe(filters)
    }

    /// Every filter subscribed so far, in order (the bus layer's own left out).
    pub(crate) fn filters(&self) -> Vec<String> {
        let book = self.book();
        book.filters
            .iter()
            .filter(|f| !book.hidden.contains(*f))
            .cloned()
            .collect()
    }

    /// An incoming message over its topic's limit: counted, remembered and logged.
    pub(crate) fn reject(&self, topic: &str, size: usize, limit: usize) {
        self.counters.oversized.fetch_add(1, Ordering::Relaxed);
        crate::ratelimit::log_limited!(
            warn,
            topic,
            size,
            limit,
            "dropped a message over its topic's payload limit (bus.payload_limits)"
        );
        self.book().rejected = Some(Rejected {
            topic: topic.to_owned(),
            size,
            limit,
        });
    }

    /// The latest incoming message dropped for its size.
    pub(crate) fn rejected(&self) -> Option<Rejected> {
        self.book().rejected.clone()
    }

    /// Someone else's value arrived on `topic`: if one of our guards' wills resets it, ours
    /// is put back (at most every [`DEFEND_EVERY`]) and true is returned (the message is not
    /// handed on). A guard's will fires when its connection alone breaks, while we live.
    pub(crate) fn defend(&self, topic: &str) -> bool {
        if !self.guarded.iter().any(|t| t == topic) {
            return false;
        }
        let mut book = self.book();
        if !book.retained.contains_key(topic) {
            return true;
        }
        let now = Instant::now();
        if book
            .defended
            .get(topic)
            .is_some_and(|t| now.duration_since(*t) < DEFEND_EVERY)
        {
            crate::ratelimit::log_limited!(
                warn,
                topic,
                "another client keeps writing our retained state (a second plugin with our name?)"
            );
            return true;
        }
        book.defended.insert(topic.to_owned(), now);
        book.unsent_retained.insert(topic.to_owned());
        drop(book);
        self.counters.defended.fetch_add(1, Ordering::Relaxed);
        tracing::info!(topic, "our retained value was overwritten; putting it back");
        self.kick.notify_one();
        true
    }
}

/// Restores subscriptions and retained messages: everything after each ConnAck, or what is new
/// or did not fit the request queue. Runs until the client closes.
pub(crate) async fn resync_task(shared: std::sync::Arc<Shared>) {
    loop {
        shared.kick.notified().await;
        if shared.is_closed() {
            return;
        }
        if !shared.is_connected() {
            // The next ConnAck restores everything.
            continue;
        }
        let all = shared.resync_all.swap(false, Ordering::AcqRel);
        let session = shared.counters.connections.load(Ordering::Acquire);
        let (filters, topics) = {
            let mut book = shared.book();
            let unsent_filters = std::mem::take(&mut book.unsent_filters);
            let mut topics = std::mem::take(&mut book.unsent_retained);
            if all {
                topics.extend(book.retained.keys().cloned());
                (book.filters.clone(), topics)
            } else {
                (unsent_filters.into_iter().collect::<Vec<_>>(), topics)
            }
        };
        if !filters.is_empty() || shared.syncs.has_waiters() {
            if subscribe_synced(&shared, &filters).await == Synced::Lost {
                let mut book = shared.book();
                book.unsent_filters.extend(filters);
                book.unsent_retained.extend(topics);
                continue;
            }
            shared.syncs.release_waiters();
        }
        // Subscriptions first: requests are heard again at once. The retained states wait for
        // the wills (a crash right after must not leave them saying something is on), which
        // after a broker restart may take the guards' backoff.
        if all && !shared.guards.wait_all(SYNC_TIMEOUT).await {
            tracing::warn!(
                connected = shared.guards.connected(),
                "not every will connection is up: going on without them"
            );
        }
        let mut pending = topics.into_iter();
        let mut complete = true;
        while let Some(topic) = pending.next() {
            if !republish(&shared, &topic).await {
                let mut book = shared.book();
                book.unsent_retained.insert(topic);
                book.unsent_retained.extend(pending);
                complete = false;
                break;
            }
        }
        if all && complete {
            shared.resynced.send_replace(session);
        }
        while complete {
            let Some((topic, payload)) = shared.book().unsent_answers.pop_front() else {
                break;
            };
            if !send_when_room(&shared, &topic, &payload).await {
                shared.book().unsent_answers.push_front((topic, payload));
                complete = false;
            }
        }
        // Requests that came while this pass ran are served by the next one.
        let book = shared.book();
        let more = !book.unsent_filters.is_empty() || (complete && !book.unsent_answers.is_empty());
        drop(book);
        if shared.syncs.has_waiters() || more {
            shared.kick.notify_one();
        }
    }
}

/// Queues `payload` on `topic` (not retained), waiting for room. False if the connection went
/// away.
async fn send_when_room(shared: &Shared, topic: &str, payload: &[u8]) -> bool {
    loop {
        if shared.try_publish(topic, false, payload.to_vec()).is_ok() {
            return true;
        }
        if !shared.is_connected() || shared.is_closed() {
            return false;
        }
        tokio::time::sleep(RETRY_FULL).await;
    }
}

/// Queues the latest retained value of `topic` (empty if cleared), waiting for room.
/// False if the connection went away.
async fn republish(shared: &Shared, topic: &str) -> bool {
    loop {
        {
            let mut book = shared.book();
            let payload = book.retained.get(topic).cloned().unwrap_or_default();
            if shared.try_publish(topic, true, payload.clone()).is_ok() {
                book.sent(topic, &payload);
                return true;
            }
        }
        if !shared.is_connected() || shared.is_closed() {
            return false;
        }
        tokio::time::sleep(RETRY_FULL).await;
    }
}
