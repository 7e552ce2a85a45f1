//! Fixtures for tests and benches: real parts, no mocks.
//!
//! - [`TestBroker`]: a private broker per test, of either [`BrokerKind`]: [`Mosquitto`] (a child
//!   process with mosquitto's default settings) or [`Mosca`] (MicroDrop 3's own broker, from npm).
//! - [`TestClient`]: an MQTT client that talks like MicroDrop 3's UI (puts and triggers with
//!   `micropede-async-*` names waiting for notify replies, retained-state checks).
//! - [`PluginHarness`]: broker + simulated board + the plugin, for end-to-end tests.
//! - [`mod@bench`]: latency histograms and the bare pty echo the benchmarks compare with.

pub mod bench;
mod broker;
mod client;
mod embedded;
mod mosca;
mod mosquitto;
pub mod node;
mod plugin;
mod session;
pub mod sim_host;
pub mod stream_board;

pub use broker::{BrokerKind, TestBroker};
pub use client::{TestClient, TestMessage};
pub use embedded::embedded_broker;
pub use mosca::Mosca;
pub use mosquitto::Mosquitto;
pub use plugin::{PluginHarness, PluginOptions, ACTIVE_ELECTRODES_TOPIC, DEVICE_TOPIC};
pub use session::{async_client_name, Reply};

/// What can go wrong in a test fixture.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The MQTT client failed.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// A payload was not JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Starting or stopping a process failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
