//! [`Actuator`]: the tokio side of the engine. Every method only enqueues (it never blocks and
//! never waits for the board); the answer, where there is one, is a [`Pending`] to await
//! later. Calls made one after the other are taken in that order, so a caller that submits
//! in the order messages arrived gets "newest wins" in that order.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::board::DmfBoard;
use super::engine::Engine;
use super::inbox::{lock, Control, Inbox, LevelOutcome, LevelTarget, Ordered, Response};
use super::outputs::{Dropped, Notice, NoticeSender, Outputs, Sample};
use super::picture::{Halt, Picture};
use super::{ActuationError, EngineOptions};

/// Notices and samples queued for the layer above, at most this many of each.
const OUTPUT_CAPACITY: usize = 4096;

/// An answer to come from the engine.
pub struct Pending(Result<oneshot::Receiver<Result<Response, ActuationError>>, ActuationError>);

impl Pending {
    /// Wait for the answer (at most `timeout`, if given).
    pub async fn wait(self, timeout: Option<Duration>) -> Result<Response, ActuationError> {
        let rx = self.0?;
        let answer = match timeout {
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| ActuationError::Timeout(t))?,
            None => rx.await,
        };
        answer.unwrap_or(Err(ActuationError::Stopped))
    }

    fn refused(error: ActuationError) -> Self {
        Pending(Err(error))
    }
}

/// What the engine reports besides the picture: read them from one task each.
pub struct Streams {
    /// Board events, halts, sequence progress.
    pub notices: mpsc::Receiver<Notice>,
    /// Capacitance samples, tagged.
    pub samples: mpsc::Receiver<Sample>,
}

/// Handle to the engine's thread; dropping it shuts the engine down (board safe first).
pub struct Actuator {
    inbox: Arc<Inbox>,
    picture: watch::Receiver<Picture>,
    level: watch::Receiver<LevelOutcome>,
    dropped: Arc<Dropped>,
    max_queue: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Actuator {
    /// Start the engine on its own thread.
    pub fn spawn(options: EngineOptions) -> Result<(Actuator, Streams), ActuationError> {
        let inbox = Arc::new(Inbox::new());
        let (picture_tx, picture) = watch::channel(Picture::default());
        let (level_tx, level) = watch::channel(LevelOutcome {
            generation: 0,
            result: Ok(Picture::default()),
        });
        let (notices_tx, notices) = mpsc::channel(OUTPUT_CAPACITY);
        let (samples_tx, samples) = mpsc::channel(OUTPUT_CAPACITY);
        let dropped = Arc::new(Dropped::default());
        let out = Outputs {
            picture: picture_tx,
            level: level_tx,
            notices: NoticeSender {
                tx: notices_tx,
                dropped: dropped.clone(),
            },
            samples: samples_tx,
            dropped: dropped.clone(),
        };
        let max_queue = options.max_queue;
        let engine = Engine::new(inbox.clone(), out, options);
        let thread = std::thread::Builder::new()
            .name("actuation".into())
            .spawn(move || engine.run_loop())
            .map_err(|e| ActuationError::Busy(format!("cannot start the actuation thread: {e}")))?;
        let actuator = Actuator {
            inbox,
            picture,
            level,
            dropped,
            max_queue,
            thread: Mutex::new(Some(thread)),
        };
        Ok((actuator, Streams { notices, samples }))
    }

    /// Drive `board` (connection `connection`) from now on; the board must be safe already.
    pub fn attach(&self, board: Box<dyn DmfBoard>, connection: u64) {
        self.inbox
            .push_control(Control::Attach { board, connection });
    }

    /// Connection `connection` is gone: fail what waits for it.
    pub fn detach(&self, connection: u64) {
        self.inbox.push_control(Control::Detach { connection });
    }

    /// Electrodes to actuate, newest wins; its generation for [`Actuator::wait_level`].
    pub fn submit_level(&self, target: LevelTarget) -> u64 {
        self.inbox.push_level(target)
    }

    /// Wait until level request `generation` (or a newer one) was applied or refused.
    pub async fn wait_level(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Result<Picture, ActuationError> {
        let mut level = self.level.clone();
        let reached = async move {
            level
                .wait_for(|o| o.generation >= generation)
                .await
                .map(|o| o.result.clone())
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ActuationError::Stopped),
            Err(_) => Err(ActuationError::Timeout(timeout)),
        }
    }

    /// Queue an ordered request (refused at once when the queue is full).
    pub fn submit(&self, request: Ordered) -> Pending {
        if lock(&self.inbox.ordered).len() >= self.max_queue {
            return Pending::refused(ActuationError::Busy(format!(
                "{} requests are already waiting for the board",
                self.max_queue
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.inbox.push_ordered(request, tx);
        Pending(Ok(rx))
    }

    /// Halt: latch it and make the board safe, before anything queued.
    pub fn halt(&self, halt: Halt) -> Pending {
        self.control(|reply| Control::Halt {
            halt,
            reply: Some(reply),
        })
    }

    /// HV off, before anything queued; cancels queued HV-on requests and sequences.
    pub fn hv_off(&self) -> Pending {
        let seq = self.inbox.next_seq();
        self.control(|reply| Control::HvOff { seq, reply })
    }

    /// HV and every channel off, before anything queued; cancels what it overtakes.
    pub fn all_off(&self) -> Pending {
        let seq = self.inbox.next_seq();
        self.control(|reply| Control::AllOff { seq, reply })
    }

    /// Stop the running sequence (its channels go off) and cancel sequences queued before.
    pub fn stop(&self) -> Pending {
        let seq = self.inbox.next_seq();
        self.control(|reply| Control::Stop { seq, reply })
    }

    /// Hold the running sequence.
    pub fn pause(&self) -> Pending {
        self.control(Control::Pause)
    }

    /// Go on with a held sequence.
    pub fn resume(&self) -> Pending {
        self.control(Control::Resume)
    }

    /// Make the board safe, hand it back its own watchdog behaviour, and end the thread.
    pub async fn shutdown(&self) -> Result<Picture, ActuationError> {
        let answer = self.control(Control::Shutdown).wait(None).await;
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        match answer? {
            Response::Picture(p) => Ok(p),
            _ => Ok(self.picture.borrow().clone()),
        }
    }

    /// The picture, as a watch.
    pub fn picture(&self) -> watch::Receiver<Picture> {
        self.picture.clone()
    }

    /// Notices and samples dropped so far because the reader fell behind.
    pub fn dropped(&self) -> (u64, u64) {
        (
            self.dropped.notices.load(Ordering::Relaxed),
            self.dropped.samples.load(Ordering::Relaxed),
        )
    }

    fn control(&self, make: impl FnOnce(super::inbox::Responder) -> Control) -> Pending {
        let (tx, rx) = oneshot::channel();
        self.inbox.push_control(make(tx));
        Pending(Ok(rx))
    }
}

impl Drop for Actuator {
    fn drop(&mut self) {
        if lock(&self.thread).is_some() {
            let (tx, _rx) = oneshot::channel();
            self.inbox.push_control(Control::Shutdown(tx));
        }
    }
}
