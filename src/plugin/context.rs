//! Shared context of the plugin's tasks: the bus handle, the board supervisor, the actuator
//! and the model, plus the one function that publishes retained state from the model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::model::Model;
use super::properties::InputError;
use super::routes::Route;
use crate::actuation::{ActuationError, Actuator, Confirmed, Target};
use crate::board::{BoardError, DropBot};
use crate::bus::{BusHandle, Router};
use crate::device::DeviceError;

/// Why a request failed: the `failed` notify's response and the error topic say this.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The value is not acceptable.
    #[error(transparent)]
    Input(#[from] InputError),
    /// No board to carry it out.
    #[error("no DropBot is connected ({0})")]
    NoBoard(String),
    /// The board halted and the user has not resumed.
    #[error("the DropBot is halted ({0}): put hv-output-enabled true to resume")]
    Halted(String),
    /// The board refused, or the link failed.
    #[error("DropBot: {0}")]
    Board(#[from] BoardError),
    /// Applying failed.
    #[error("{0}")]
    Actuation(#[from] ActuationError),
    /// Electrodes or device problems.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The bus refused to send.
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::BusError),
}

/// Settings of the plugin's behaviour.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Turn HV on with the first actuation request that has channels (see README).
    pub auto_hv: bool,
    /// How long a request waits for the board to apply it.
    pub apply_timeout: Duration,
    /// Largest put or trigger payload taken, bytes (the device file has its own bus limit).
    pub max_request_payload: usize,
    /// Arm the board's host-liveness watchdog with this timeout, where the firmware has one:
    /// if this process dies or hangs, the board turns HV and channels off by itself. Must be
    /// longer than the supervisor's heartbeat (2 s); `None` leaves it off.
    pub host_watchdog: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            auto_hv: true,
            apply_timeout: Duration::from_secs(10),
            max_request_payload: 1024 * 1024,
            host_watchdog: Some(Duration::from_secs(5)),
        }
    }
}

/// Everything the plugin's tasks share.
pub struct Ctx {
    /// Our bus name.
    pub name: String,
    /// Publishing side of the bus.
    pub bus: BusHandle,
    /// The connected board, as the supervisor publishes it.
    pub boards: watch::Receiver<Option<DropBot>>,
    /// The owner of actuation.
    pub actuator: Actuator,
    /// Routes of our subscriptions.
    pub router: Router<Route>,
    /// Behaviour settings.
    pub behaviour: Behaviour,
    /// Asks the main loop to shut down (the `exit` trigger).
    pub exit: mpsc::Sender<()>,
    model: Mutex<Model>,
    published: Mutex<BTreeMap<&'static str, Value>>,
}

impl Ctx {
    /// A context with an empty model.
    pub fn new(
        bus: BusHandle,
        boards: watch::Receiver<Option<DropBot>>,
        actuator: Actuator,
        router: Router<Route>,
        behaviour: Behaviour,
        exit: mpsc::Sender<()>,
    ) -> Arc<Ctx> {
        let name = bus.name().to_owned();
        Arc::new(Ctx {
            model: Mutex::new(Model::new(&name)),
            name,
            bus,
            boards,
            actuator,
            router,
            behaviour,
            exit,
            published: Mutex::new(BTreeMap::new()),
        })
    }

    /// The model, locked (never hold it across an await).
    pub fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Change the model, then publish every retained state that changed.
    pub fn update<T>(&self, change: impl FnOnce(&mut Model) -> T) -> T {
        let mut model = self.model();
        let out = change(&mut model);
        let states = model.states();
        // Taken before the model is let go: updates publish in the order they computed, so
        // an older picture can never be published after a newer one.
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(model);
        for (property, value) in states {
            if published.get(property) != Some(&value) {
                if let Err(e) = self.bus.publish_state(property, &value) {
                    tracing::warn!(property, error = %e, "could not publish state");
                }
                published.insert(property, value);
            }
        }
        out
    }

    /// The connected board, if any.
    pub fn current_board(&self) -> Option<DropBot> {
        self.boards.borrow().clone()
    }

    /// The connected board, or why there is none.
    pub fn board(&self) -> Result<DropBot, RequestError> {
        self.current_board().ok_or_else(|| {
            let status = self.model().status();
            let detail = status["detail"].as_str().unwrap_or("searching").to_owned();
            RequestError::NoBoard(detail)
        })
    }

    /// Submit a target, adding HV when auto-HV applies, and wait for the board.
    pub async fn actuate(&self, target: Target) -> Result<Confirmed, RequestError> {
        let generation = self.submit(target)?;
        self.confirm(generation).await
    }

    /// Submit a target now (adding HV when auto-HV applies); its generation for
    /// [`Ctx::confirm`]. Synchronous, so that targets are submitted in the order their
    /// messages arrived: newest wins only if "newest" means the last one received.
    pub fn submit(&self, mut target: Target) -> Result<u64, RequestError> {
        self.board()?;
        let wants_channels = target.channels.as_ref().is_some_and(|c| !c.is_empty());
        if wants_channels {
            // Checked under the model's lock, so a halt marked before this cannot be missed.
            let model = self.model();
            if let Some(h) = &model.halted {
                return Err(RequestError::Halted(h.reason.clone()));
            }
            if self.behaviour.auto_hv
                && target.hv_output_enabled.is_none()
                && !model.hv_output_enabled
            {
                target.hv_output_enabled = Some(true);
            }
        }
        Ok(self.actuator.submit(target))
    }

    /// Wait until the board has applied generation `generation`; what it confirmed.
    pub async fn confirm(&self, generation: u64) -> Result<Confirmed, RequestError> {
        let applied = self
            .actuator
            .wait(generation, self.behaviour.apply_timeout)
            .await?;
        self.update(|m| m.on_applied(applied.generation, &applied.picture));
        Ok(applied.picture)
    }

    /// Publish `microdrop/<self>/error/<property>` with a readable message.
    pub fn report_error(&self, property: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(property, %error, "request failed");
        let value = json!({"error": error.to_string()});
        if let Err(e) = self.bus.publish_error(property, &value) {
            tracing::warn!(property, error = %e, "could not publish error");
        }
    }
}
