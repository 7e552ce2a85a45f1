//! The plugin: the only layer that knows both the bus and the board. It turns MicroDrop 3's
//! puts, triggers and model states into board actions (through the actuator), and the board's
//! confirmed state and events into retained state topics, signals and notify replies.
//!
//! - [`routes`]: every subscription, as data.
//! - [`properties`]: settable properties: schema, validation, limits.
//! - [`requests`]: puts and triggers.
//! - [`electrodes`]: device and electrodes models, the step runner's `execute`.
//! - [`devices`]: device models parsed off the main loop, newest wins, size-capped.
//! - [`sequences`], [`runs`]: `run-sequence` and `run-routes` (through
//!   [`crate::actuation::routes`]), `stop`, `pause`, `resume`.
//! - [`telemetry`]: readings (rate-limited retained state, batched samples, health
//!   readings) and board events as signals.
//! - [`calibration`]: the chip's calibration: kept, loaded, made by triggers.
//! - [`recording`]: run records of sequences, routes, protocols and recordings by hand.
//! - [`model`]: the model every retained state is derived from.
//! - [`service`]: the main loop and the safe shutdown.

mod actions;
pub mod calibration;
pub mod context;
pub mod devices;
pub mod electrodes;
pub mod model;
pub mod properties;
pub mod recording;
pub mod requests;
pub mod routes;
pub mod runs;
pub mod sequences;
pub mod service;
pub mod telemetry;

pub use context::Behaviour;
pub use service::run;

/// Errors that end the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bus could not be set up.
    #[error("bus: {0}")]
    Bus(#[from] crate::bus::BusError),
    /// The board could not be put in the safe state on the way out.
    #[error("board: {0}")]
    Board(#[from] crate::board::BoardError),
    /// The actuation engine could not start.
    #[error("actuation: {0}")]
    Actuation(#[from] crate::actuation::ActuationError),
    /// The board supervisor ended on its own (it should only end at shutdown).
    #[error("the board supervisor stopped unexpectedly")]
    SupervisorGone,
}

/// Set `key` of the JSON object `value` (a `null` becomes an object; anything else is left as
/// it is: indexing a non-object `Value` for writing would panic).
pub(crate) fn set_field(value: &mut serde_json::Value, key: &str, field: serde_json::Value) {
    if value.is_null() {
        *value = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(map) = value.as_object_mut() {
        map.insert(key.to_owned(), field);
    }
}
