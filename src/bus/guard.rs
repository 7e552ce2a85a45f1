//! Wills for more than one topic.
//!
//! MQTT gives a connection one last will, and the main connection's is the retained `status`
//! ("offline"). But other retained topics say that something is energised (HV on, channels
//! actuated, a sequence running): if the process dies, they must stop saying so too. So each of
//! those topics gets a *guard*: an idle connection of its own (same broker, same credentials,
//! a client id without MicroDrop's `>>` fields, so MicroDrop's broker announces no plugin for
//! it) whose only content is the will that sets the topic to its "nothing known" value. A
//! crash, a kill or a lost network closes every socket at once and the broker publishes every
//! will; a clean exit publishes the same values itself and disconnects the guards first with
//! DISCONNECT, so no will fires.
//!
//! A guard whose connection alone breaks while the plugin lives makes the broker publish its
//! will although nothing changed: the main connection subscribes to the guarded topics and
//! puts our latest value back whenever someone else's value arrives there (see
//! `Shared::defend`). The resync after each ConnAck waits (at most `SYNC_TIMEOUT`) until every
//! guard is connected, so no request is taken before the wills are in place.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use super::backoff::Backoff;
use super::error::BusError;
use super::options::{BusOptions, Will};

/// The guards of one client: their connections and how many are up.
pub(crate) struct Guards {
    members: Vec<Member>,
    watch: GuardWatch,
}

/// How many guards are connected, for those who wait for them.
#[derive(Clone)]
pub(crate) struct GuardWatch {
    up: watch::Receiver<usize>,
    all: usize,
}

impl GuardWatch {
    /// How many guards are connected now.
    pub(crate) fn connected(&self) -> usize {
        *self.up.borrow()
    }

    /// Waits until every guard is connected, at most `timeout`; whether they are.
    pub(crate) async fn wait_all(&self, timeout: Duration) -> bool {
        let all = self.all;
        let mut up = self.up.clone();
        let ready = up.wait_for(|n| *n >= all);
        let outcome = tokio::time::timeout(timeout, ready).await;
        matches!(outcome, Ok(Ok(_)))
    }
}

struct Member {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Guards {
    /// One guard connection per will in `options.guards` (none: nothing is started).
    pub(crate) fn spawn(options: &BusOptions) -> Result<Guards, BusError> {
        let (up_tx, up) = watch::channel(0usize);
        let up_tx = Arc::new(up_tx);
        let mut members = Vec::with_capacity(options.guards.len());
        for (index, will) in options.guards.iter().enumerate() {
            let id = format!("{}-will-{index}-{}", options.name, uuid::Uuid::new_v4());
            let mqtt = options.mqtt_options(id, Some(will))?;
            // The request queue only ever holds the final DISCONNECT.
            let (client, eventloop) = AsyncClient::new(mqtt, 4);
            let task = tokio::spawn(run(eventloop, will.clone(), up_tx.clone()));
            members.push(Member { client, task });
        }
        let watch = GuardWatch {
            up,
            all: members.len(),
        };
        Ok(Guards { members, watch })
    }

    /// A watch of how many are connected.
    pub(crate) fn watch(&self) -> GuardWatch {
        self.watch.clone()
    }

    /// Disconnects every guard with DISCONNECT (no will fires), waiting at most until
    /// `deadline`; the ones not done by then are dropped (and their wills fire).
    pub(crate) async fn disconnect(&mut self, deadline: Instant) {
        for member in &self.members {
            let _ = member.client.try_disconnect();
        }
        for member in &mut self.members {
            if timeout_at(deadline, &mut member.task).await.is_err() {
                member.task.abort();
            }
        }
    }
}

impl Drop for Guards {
    /// Without DISCONNECT: the broker publishes the wills, as after a crash.
    fn drop(&mut self) {
        for member in &self.members {
            member.task.abort();
        }
    }
}

/// Keeps one guard connected (with backoff) until its DISCONNECT has been written.
async fn run(mut eventloop: EventLoop, will: Will, up: Arc<watch::Sender<usize>>) {
    let mut backoff = Backoff::new();
    let mut connected_at: Option<Instant> = None;
    let mut last_error = String::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                up.send_modify(|n| *n += 1);
                tracing::debug!(topic = %will.topic, "will connection up");
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                super::client::drain(&mut eventloop).await;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let session = connected_at.take().map(|t| t.elapsed());
                if session.is_some() {
                    up.send_modify(|n| *n = n.saturating_sub(1));
                }
                let error = e.to_string();
                if error != last_error {
                    // A refused will (an ACL that does not let us write the topic) shows here.
                    tracing::warn!(topic = %will.topic, %error, "the will connection for this topic failed; retrying");
                    last_error = error;
                }
                tokio::time::sleep(backoff.after_error(session)).await;
            }
        }
    }
    if connected_at.is_some() {
        up.send_modify(|n| *n = n.saturating_sub(1));
    }
}
