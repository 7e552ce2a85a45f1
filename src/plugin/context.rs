//! Shared context of the plugin's tasks: the bus handle, the actuation engine and the model,
//! plus the one function that publishes retained state from the model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use super::model::Model;
use super::properties::InputError;
use super::routes::Route;
use crate::actuation::{
    ActuationError, Actuator, LevelTarget, Ordered, Pending, Picture, Response,
};
use crate::board::BoardError;
use crate::bus::{BusHandle, Router};
use crate::device::DeviceError;
use crate::ratelimit::{failure_reports, log_limited, TokenBucket};

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
    Actuation(ActuationError),
    /// Too many requests wait already.
    #[error("busy: {0}")]
    Busy(String),
    /// Electrodes or device problems.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The bus refused to send.
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    /// A calibration could not be made or kept.
    #[error(transparent)]
    Calibration(#[from] crate::calibration::CalibrationError),
    /// A sequence ended early (halted, or the board failed): why, and what each phase did
    /// (the `failed` reply carries the report).
    #[error("{message}")]
    SequenceEnded {
        /// Why, in words.
        message: String,
        /// The run's report, as the reply's response.
        report: Value,
    },
}

impl RequestError {
    /// Whether the request itself was wrong (a value, a device's ids), not its carrying out:
    /// what a flood of bad input repeats.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, RequestError::Input(_) | RequestError::Device(_))
    }
}

impl From<ActuationError> for RequestError {
    fn from(e: ActuationError) -> Self {
        match e {
            ActuationError::Board(b) => RequestError::Board(b),
            ActuationError::Halted(reason) => RequestError::Halted(reason),
            ActuationError::NoBoard => RequestError::NoBoard("searching".into()),
            other => RequestError::Actuation(other),
        }
    }
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
    /// Arm the board's failsafe with this timeout where the firmware has one (the DropBot's
    /// MCU watchdog, no longer refreshed by the firmware itself): if this process dies or
    /// hangs, the board restarts with HV and channels off. The engine refreshes it at least
    /// every third of it. `None` leaves the board's own behaviour.
    pub failsafe: Option<Duration>,
    /// Requests (puts and triggers) being carried out at once; more are answered "busy".
    pub max_in_flight: usize,
    /// After the broker has been gone this long, the board goes safe and stays halted until a
    /// user resumes: nobody could switch it off from the bus meanwhile.
    pub safe_after_bus_loss: Duration,
    /// Readings: rates, batches, health readings, calibration and run record directories.
    pub readings: super::telemetry::ReadingsOptions,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            auto_hv: true,
            apply_timeout: Duration::from_secs(10),
            max_request_payload: 1024 * 1024,
            failsafe: Some(Duration::from_secs(5)),
            max_in_flight: 256,
            safe_after_bus_loss: Duration::from_secs(5),
            readings: super::telemetry::ReadingsOptions::default(),
        }
    }
}

/// Everything the plugin's tasks share.
pub struct Ctx {
    /// Our bus name.
    pub name: String,
    /// Publishing side of the bus.
    pub bus: BusHandle,
    /// The owner of the board's command stream.
    pub actuator: Actuator,
    /// Permits for requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// The one permit for a long measurement (shorts, scans, calibrations).
    pub long_op: Arc<Semaphore>,
    /// Routes of our subscriptions.
    pub router: Router<Route>,
    /// Behaviour settings.
    pub behaviour: Behaviour,
    /// Asks the main loop to shut down (the `exit` trigger).
    pub exit: mpsc::Sender<()>,
    /// Readings, calibration and run records.
    pub telemetry: Arc<super::telemetry::Telemetry>,
    /// Device models waiting to be parsed off the main loop.
    pub devices: super::devices::DeviceLoader,
    model: Mutex<Model>,
    published: Mutex<BTreeMap<&'static str, Arc<Value>>>,
    /// Room for reports of failed requests (see [`Ctx::report_error`]).
    failure_reports: TokenBucket,
}

impl Ctx {
    /// A context with an empty model.
    pub fn new(
        bus: BusHandle,
        actuator: Actuator,
        router: Router<Route>,
        behaviour: Behaviour,
        exit: mpsc::Sender<()>,
    ) -> Arc<Ctx> {
        let name = bus.name().to_owned();
        let telemetry = super::telemetry::Telemetry::new(bus.clone(), behaviour.readings.clone());
        Arc::new(Ctx {
            telemetry,
            model: Mutex::new(Model::new(&name)),
            name,
            bus,
            in_flight: Arc::new(Semaphore::new(behaviour.max_in_flight.max(1))),
            long_op: Arc::new(Semaphore::new(1)),
            actuator,
            router,
            behaviour,
            exit,
            devices: Default::default(),
            published: Mutex::new(BTreeMap::new()),
            failure_reports: failure_reports(),
        })
    }

    /// The model, locked (never hold it across an await).
    pub fn model(&self) -> MutexGuard<'_, Model> {
        crate::sync::lock(&self.model)
    }

    /// Change the model, then publish every retained state that changed.
    pub fn update<T>(&self, change: impl FnOnce(&mut Model) -> T) -> T {
        let mut model = self.model();
        let out = change(&mut model);
        let states = model.states();
        // Taken before the model is let go: updates publish in the order they computed, so
        // an older picture can never be published after a newer one.
        let mut published = crate::sync::lock(&self.published);
        drop(model);
        for (property, value) in states {
            let same = published
                .get(property)
                .is_some_and(|p| Arc::ptr_eq(p, &value) || **p == *value);
            if !same {
                if let Err(e) = self.bus.publish_state(property, &value) {
                    log_limited!(warn, property, error = %e, "could not publish state");
                }
                published.insert(property, value);
            }
        }
        out
    }

    /// With no request or wait in flight, nothing of ours will answer what the broker sent
    /// last: the bus may acknowledge it at once ([`BusHandle::settled`]).
    pub fn settle_if_idle(&self) {
        if self.in_flight.available_permits() >= self.behaviour.max_in_flight.max(1) {
            self.bus.settled();
        }
    }

    /// Whether a board is connected (as the model knows it).
    pub fn has_board(&self) -> bool {
        self.model().board().is_some()
    }

    /// A board is connected, or why there is none.
    pub fn board(&self) -> Result<(), RequestError> {
        if self.has_board() {
            return Ok(());
        }
        let status = self.model().status();
        let detail = status.get("detail").and_then(Value::as_str);
        let detail = detail.unwrap_or("searching").to_owned();
        Err(RequestError::NoBoard(detail))
    }

    /// Submit electrodes now, in message order (newest wins); the generation to confirm.
    pub fn submit_level(
        &self,
        channels: std::collections::BTreeSet<u16>,
        live: bool,
    ) -> Result<u64, RequestError> {
        self.board()?;
        Ok(self.actuator.submit_level(LevelTarget { channels, live }))
    }

    /// Wait until electrodes of `generation` (or newer) were applied; the picture after.
    pub async fn confirm_level(&self, generation: u64) -> Result<Picture, RequestError> {
        let picture = self
            .actuator
            .wait_level(generation, self.behaviour.apply_timeout)
            .await?;
        self.take_picture(&picture);
        Ok(picture)
    }

    /// Submit an ordered request now, in message order.
    pub fn submit(&self, request: Ordered) -> Result<Pending, RequestError> {
        self.board()?;
        Ok(self.actuator.submit(request))
    }

    /// Wait for an ordered or control request's answer, taking the picture it carries.
    pub async fn answer(
        &self,
        pending: Pending,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        let response = pending.wait(timeout).await?;
        if let Response::Picture(p) | Response::Shorts(_, p) = &response {
            self.take_picture(p);
        }
        Ok(response)
    }

    /// Take a picture from the engine into the model (an older one is ignored there).
    pub fn take_picture(&self, picture: &Picture) {
        self.update(|m| m.on_picture(picture));
    }

    /// Report a failed request: a warning, and `microdrop/<self>/error/<property>` with a
    /// readable message while there is room for failure reports (a flood of bad requests must
    /// fill neither the outgoing queue that the answers to good ones need, nor the log).
    pub fn report_error(&self, property: &str, error: &dyn std::fmt::Display) {
        self.report_error_if_room(property, error);
    }

    /// [`Ctx::report_error`]; whether there was room for the report (a failed reply goes out
    /// only with its report).
    pub fn report_error_if_room(&self, property: &str, error: &dyn std::fmt::Display) -> bool {
        log_limited!(warn, property, %error, "request failed");
        if !self.failure_reports.take() {
            return false;
        }
        let value = json!({"error": error.to_string()});
        if let Err(e) = self.bus.publish_error(property, &value) {
            log_limited!(warn, property, error = %e, "could not publish error");
        }
        true
    }
}
