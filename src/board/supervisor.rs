//! Keeps a board connected: discover, put the board in a safe state (HV off, channels off)
//! BEFORE announcing it, watch the link (and sync time as a heartbeat), and on loss go back
//! to searching with backoff. Nothing is ever re-enabled here: after a reconnect the board
//! stays safe until the layer above asks for more.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::discovery::{discover, PortLister, Probe, Selector};
use super::dropbot::{BoardInfo, DropBot};
use super::error::BoardError;

/// What the supervisor is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum BoardStatus {
    /// Looking for the board; `attempt` counts failures since the last connection.
    Searching {
        /// Failed attempts so far.
        attempt: u32,
        /// Why the last attempt failed.
        last_error: Option<String>,
    },
    /// Connected, and put in the safe state.
    Connected(Arc<BoardInfo>),
    /// The link was lost; searching resumes.
    Disconnected {
        /// Why the link was lost.
        reason: String,
    },
    /// Shut down.
    Stopped,
}

/// How the supervisor finds and watches the board.
#[derive(Clone)]
pub struct SupervisorOptions {
    /// Which board (a path is re-opened on every attempt, so a link path that comes back
    /// after a replug is found again).
    pub selector: Selector,
    /// Lists the ports.
    pub lister: Arc<dyn PortLister>,
    /// Tables and link options.
    pub probe: Probe,
    /// First wait after a failed attempt.
    pub backoff_min: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Period of the time-sync heartbeat while connected (it also notices a board that
    /// stopped answering: the link closes after `dead_after_timeouts` timeouts). `None` when
    /// another owner of the board's command stream keeps it alive (the actuation engine).
    pub heartbeat: Option<Duration>,
}

impl SupervisorOptions {
    /// Defaults: backoff 100 ms to 2 s, heartbeat every 2 s.
    pub fn new(selector: Selector, lister: Arc<dyn PortLister>, probe: Probe) -> Self {
        Self {
            selector,
            lister,
            probe,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            heartbeat: Some(Duration::from_secs(2)),
        }
    }
}

/// Starts the supervisor.
pub struct BoardSupervisor;

impl BoardSupervisor {
    /// Start supervising; must be called within a tokio runtime.
    pub fn spawn(options: SupervisorOptions) -> SupervisorHandle {
        let (status_tx, status) = watch::channel(BoardStatus::Searching {
            attempt: 0,
            last_error: None,
        });
        let (board_tx, board) = watch::channel(None);
        let (transitions, _) = broadcast::channel(64);
        let cancel = CancellationToken::new();
        let sup = Supervisor {
            options,
            status: status_tx,
            board: board_tx,
            transitions: transitions.clone(),
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(sup.run());
        SupervisorHandle {
            status,
            board,
            transitions,
            cancel,
            task: Some(task),
        }
    }
}

/// Talks to a running supervisor. Dropping it stops the supervisor, which puts the board in
/// the safe state first.
pub struct SupervisorHandle {
    status: watch::Receiver<BoardStatus>,
    board: watch::Receiver<Option<DropBot>>,
    transitions: broadcast::Sender<BoardStatus>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), BoardError>>>,
}

impl SupervisorHandle {
    /// The latest status (a watch: quick successions are coalesced).
    pub fn status(&self) -> watch::Receiver<BoardStatus> {
        self.status.clone()
    }

    /// Every transition, in order (a slow receiver lags and loses the oldest).
    pub fn transitions(&self) -> broadcast::Receiver<BoardStatus> {
        self.transitions.subscribe()
    }

    /// The connected board, if any.
    pub fn board(&self) -> Option<DropBot> {
        self.board.borrow().clone()
    }

    /// A watch of the connected board.
    pub fn watch_board(&self) -> watch::Receiver<Option<DropBot>> {
        self.board.clone()
    }

    /// Put the board in the safe state and stop. Returns the safe state's outcome; a
    /// supervisor that died (panicked) is an error, never a success.
    pub async fn shutdown(mut self) -> Result<(), BoardError> {
        self.cancel.cancel();
        match self.task.take() {
            Some(task) => joined(task.await),
            None => Ok(()),
        }
    }

    /// Resolves once the supervisor's task has ended. It ends by itself only when it died
    /// (a panic): the owner should then stop, and [`shutdown`](Self::shutdown) says why.
    pub fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut status = self.status.clone();
        // The task holds the status sender: the watch closes when the task ends.
        async move { while status.changed().await.is_ok() {} }
    }
}

/// A joined supervisor task's outcome: a panic or cancellation is an error.
fn joined(
    result: Result<Result<(), BoardError>, tokio::task::JoinError>,
) -> Result<(), BoardError> {
    result.unwrap_or_else(|e| {
        let why = if e.is_panic() {
            "it panicked"
        } else {
            "it was cancelled"
        };
        tracing::error!(error = %e, "the board supervisor died");
        Err(BoardError::SupervisorFailed(why.into()))
    })
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Supervisor {
    options: SupervisorOptions,
    status: watch::Sender<BoardStatus>,
    board: watch::Sender<Option<DropBot>>,
    transitions: broadcast::Sender<BoardStatus>,
    cancel: CancellationToken,
}

impl Supervisor {
    /// The status watch first: whoever hears of a transition finds the watch already there.
    fn announce(&self, status: BoardStatus) {
        tracing::debug!(?status, "board status");
        self.status.send_replace(status.clone());
        let _ = self.transitions.send(status);
    }

    async fn run(self) -> Result<(), BoardError> {
        let mut backoff = self.options.backoff_min;
        let mut attempt = 0u32;
        loop {
            let found = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return self.stop(None).await,
                found = discover(
                    self.options.lister.as_ref(),
                    &self.options.selector,
                    &self.options.probe,
                ) => found,
            };
            let error = match found {
                Ok(bot) => match bot.safe_state().await {
                    Ok(()) => {
                        backoff = self.options.backoff_min;
                        attempt = 0;
                        match self.watch(bot).await {
                            Some(result) => return result,
                            None => continue,
                        }
                    }
                    Err(e) => {
                        bot.disconnect().await;
                        format!("connected but could not put the board in a safe state: {e}")
                    }
                },
                Err(e) => e.to_string(),
            };
            attempt += 1;
            self.announce(BoardStatus::Searching {
                attempt,
                last_error: Some(error),
            });
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return self.stop(None).await,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.options.backoff_max);
        }
    }

    /// Announce `bot` and watch it until its link closes (None: search again) or the
    /// supervisor is stopped (Some: the final safe state's outcome).
    async fn watch(&self, bot: DropBot) -> Option<Result<(), BoardError>> {
        self.board.send_replace(Some(bot.clone()));
        self.announce(BoardStatus::Connected(bot.info_arc()));
        // Without a heartbeat its branch below is disabled and the interval never polled.
        let period = self.options.heartbeat.unwrap_or(Duration::from_secs(3600));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Some(self.stop(Some(bot)).await),
                reason = bot.closed() => break reason,
                _ = heartbeat.tick(), if self.options.heartbeat.is_some() => {
                    if let Err(e) = bot.sync_time().await {
                        tracing::warn!(error = %e, "board heartbeat failed");
                    }
                }
            }
        };
        self.board.send_replace(None);
        self.announce(BoardStatus::Disconnected {
            reason: reason.to_string(),
        });
        // Release the port before searching: it may be the same path, opened exclusively.
        bot.disconnect().await;
        None
    }

    async fn stop(&self, bot: Option<DropBot>) -> Result<(), BoardError> {
        self.board.send_replace(None);
        let result = match bot {
            Some(bot) => {
                let result = bot.safe_state().await;
                bot.disconnect().await;
                result
            }
            None => Ok(()),
        };
        self.announce(BoardStatus::Stopped);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::discovery::{DiscoveryError, PortInfo};
    use firmware_protocol::TableSet;

    /// A port lister that panics, as a bug deep in discovery would.
    struct Panics;

    impl PortLister for Panics {
        fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
            panic!("a bug in port listing");
        }
    }

    fn options() -> SupervisorOptions {
        let probe = Probe::new(Arc::new(TableSet::builtin()));
        SupervisorOptions::new(Selector::default(), Arc::new(Panics), probe)
    }

    #[tokio::test]
    async fn a_dead_supervisor_is_noticed_and_an_error_at_shutdown() {
        let supervisor = BoardSupervisor::spawn(options());
        let gone = tokio::time::timeout(Duration::from_secs(30), supervisor.gone()).await;
        assert!(gone.is_ok(), "the supervisor did not die");
        let outcome = supervisor.shutdown().await;
        assert!(
            matches!(outcome, Err(BoardError::SupervisorFailed(ref why)) if why.contains("panicked")),
            "{outcome:?}"
        );
    }
}
