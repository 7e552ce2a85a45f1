//! The applier task: takes the latest merged [`Target`], applies it to whichever board is
//! connected, and reports what the board confirmed.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use firmware_protocol::State;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{ActuationError, Confirmed, Target};
use crate::board::{BoardError, DropBot};

/// Where the applier finds the board to talk to (the supervisor's current board).
pub trait BoardSource: Send + Sync + 'static {
    /// The connected board, if any.
    fn current(&self) -> Option<DropBot>;
}

impl<F> BoardSource for F
where
    F: Fn() -> Option<DropBot> + Send + Sync + 'static,
{
    fn current(&self) -> Option<DropBot> {
        self()
    }
}

/// The outcome of applying everything submitted up to `generation`.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The newest request folded into what was applied.
    pub generation: u64,
    /// Everything the board has confirmed since it was connected (cumulative, so a watcher
    /// that skips an outcome still sees the whole picture).
    pub picture: Confirmed,
    /// Whether this request was applied in full, or why not.
    pub outcome: Result<(), ActuationError>,
}

#[derive(Default)]
struct Pending {
    generation: u64,
    target: Target,
}

struct Shared {
    pending: Mutex<Pending>,
    picture: Mutex<Confirmed>,
    wake: Notify,
    applied: watch::Sender<Applied>,
    /// Bumped by [`Actuator::clear`]: an apply that sees it change stops between two board
    /// requests and reports nothing (its waiters were answered by the clear).
    epoch: AtomicU64,
    /// Held while commands are sent to the board: by the applier for one whole apply, and by
    /// [`Actuator::exclusive`] (halt, shutdown), so nothing of an older apply follows them.
    stream: tokio::sync::Mutex<()>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The locks guard plain data; a panic elsewhere cannot leave them inconsistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn picture(&self) -> std::sync::MutexGuard<'_, Confirmed> {
        self.picture.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the applier task (aborted on drop).
pub struct Actuator {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Actuator {
    /// Start the applier; it applies to `source.current()`.
    pub fn spawn(source: impl BoardSource) -> Actuator {
        let (applied, _) = watch::channel(Applied {
            generation: 0,
            picture: Confirmed::default(),
            outcome: Ok(()),
        });
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            picture: Mutex::new(Confirmed::default()),
            wake: Notify::new(),
            applied,
            epoch: AtomicU64::new(0),
            stream: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(run(shared.clone(), source));
        Actuator { shared, task }
    }

    /// Fold `target` into what is pending; returns its generation for [`Actuator::wait`].
    pub fn submit(&self, target: Target) -> u64 {
        let generation = {
            let mut pending = self.shared.lock();
            pending.target.merge(target);
            pending.generation += 1;
            pending.generation
        };
        self.shared.wake.notify_one();
        generation
    }

    /// Drop whatever is pending and forget the board's picture (e.g. the board went away:
    /// stale targets must never be applied to the next board); waiters get `reason`.
    pub fn clear(&self, reason: ActuationError) {
        let generation = {
            let mut pending = self.shared.lock();
            pending.target = Target::default();
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            pending.generation
        };
        *self.shared.picture() = Confirmed::default();
        self.shared.applied.send_replace(Applied {
            generation,
            picture: Confirmed::default(),
            outcome: Err(reason),
        });
    }

    /// Clear with `reason`, wait for the board request in flight (an older apply stops
    /// there), then run `commands` (e.g. a halt) while nothing else may talk to the board.
    pub async fn exclusive<T>(
        &self,
        reason: ActuationError,
        commands: impl Future<Output = T>,
    ) -> T {
        self.clear(reason);
        let _stream = self.shared.stream.lock().await;
        commands.await
    }

    /// Stop for good: clear with [`ActuationError::Stopped`], wait for the board request in
    /// flight, and end the applier task, so that no command of ours follows the caller's
    /// own (e.g. the safe state on shutdown).
    pub async fn stop(&self) {
        self.clear(ActuationError::Stopped);
        let _stream = self.shared.stream.lock().await;
        self.task.abort();
    }

    /// Wait until everything up to `generation` has been applied (or failed).
    pub async fn wait(
        &self,
        generation: u64,
        timeout: Duration,
    ) -> Result<Applied, ActuationError> {
        let mut applied = self.shared.applied.subscribe();
        let reached = applied.wait_for(|a| a.generation >= generation);
        let outcome = match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(a)) => a.outcome.clone().map(|()| a.clone()),
            Ok(Err(_)) => Err(ActuationError::Stopped),
            Err(_) => Err(ActuationError::Timeout(timeout)),
        };
        outcome
    }

    /// Every outcome, as it happens.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }
}

impl Drop for Actuator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, source: impl BoardSource) {
    loop {
        shared.wake.notified().await;
        let stream = shared.stream.lock().await;
        let (generation, target, epoch) = {
            let mut pending = shared.lock();
            let epoch = shared.epoch.load(Ordering::Acquire);
            (
                pending.generation,
                std::mem::take(&mut pending.target),
                epoch,
            )
        };
        let mut confirmed = Confirmed::default();
        let current = || shared.epoch.load(Ordering::Acquire) == epoch;
        let outcome = match source.current() {
            _ if target.is_empty() => Ok(()),
            None => Err(ActuationError::NoBoard),
            Some(board) => apply(&board, &target, &mut confirmed, current)
                .await
                .map_err(|e| ActuationError::Board(e.to_string())),
        };
        drop(stream);
        let picture = {
            let mut picture = shared.picture();
            if !current() {
                // Cleared meanwhile: the waiters have their answer, and what this apply did
                // belongs to a picture that no longer exists.
                continue;
            }
            picture.merge(confirmed);
            picture.clone()
        };
        shared.applied.send_replace(Applied {
            generation,
            picture,
            outcome,
        });
    }
}

/// Apply in a safe order: HV off first, then voltage and frequency, then channels, HV on last.
/// What succeeded before an error is still recorded in `confirmed`. Stops (with `Ok`) before
/// any step once `current()` turns false (the actuator was cleared, e.g. by a halt).
async fn apply(
    board: &DropBot,
    target: &Target,
    confirmed: &mut Confirmed,
    current: impl Fn() -> bool,
) -> Result<(), BoardError> {
    if target.hv_output_enabled == Some(false) {
        board.set_hv_output_enabled(false).await?;
        confirmed.hv_output_enabled = Some(false);
    }
    if (target.voltage.is_some() || target.frequency.is_some()) && current() {
        board
            .update_state(&State {
                voltage: target.voltage,
                frequency: target.frequency,
                ..State::default()
            })
            .await?;
        confirmed.voltage = target.voltage;
        confirmed.frequency = target.frequency;
    }
    if let (Some(channels), true) = (&target.channels, current()) {
        // `set_state_of_channels` answers true when it took these bits: that answer is the
        // confirmation (reading them back would cost a second round trip). The board never
        // drives disabled channels; the plugin's model, which knows the mask, leaves them out.
        board.set_channels(channels).await?;
        confirmed.channels = Some(channels.clone());
    }
    if target.hv_output_enabled == Some(true) && current() {
        board.set_hv_output_enabled(true).await?;
        confirmed.hv_output_enabled = Some(true);
    }
    Ok(())
}
