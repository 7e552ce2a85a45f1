//! The plugin's configuration: one TOML file, environment variables and command-line flags,
//! in that order of precedence (a flag beats an environment variable beats the file beats the
//! default). Every setting, its default and what it does: `docs/dropbot-plugin.example.toml`
//! (a test checks that file against [`Config::default`]); how they are found:
//! `docs/operations.md`.
//!
//! - [`load`](mod@load): the file's search path, the environment, the flags, and errors that name
//!   where a bad value came from, the key, the value and what is allowed.
//! - [`settings`]: checks the values and turns them into what the layers take ([`Settings`]).
//! - [`print`](mod@print): the effective configuration as TOML, secrets hidden, with where each
//!   value came from (`config --print`).

pub mod load;
pub mod print;
pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{load, Flag, Loaded, Sources, CONFIG_ENV, ENV_PREFIX};
pub use settings::Settings;

/// Everything that can be configured. Unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Our name on the bus (`microdrop/<name>/...`); a second board needs a second name.
    pub name: String,
    /// How to reach MicroDrop's broker.
    pub broker: Broker,
    /// Which board, and its firmware's command tables.
    pub board: Board,
    /// The safety policy's settings.
    pub safety: Safety,
    /// What the plugin takes in, and how much of it at once.
    pub limits: Limits,
    /// The live view in the browser.
    pub view: View,
    /// Where files are written.
    pub data: Data,
    /// Readings on the bus: rates and batches.
    pub readings: Readings,
    /// Logging.
    pub log: Log,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "dropbot".into(),
            broker: Broker::default(),
            board: Board::default(),
            safety: Safety::default(),
            limits: Limits::default(),
            view: View::default(),
            data: Data::default(),
            readings: Readings::default(),
            log: Log::default(),
        }
    }
}

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Broker {
    /// `HOST:PORT` (MicroDrop 3's broker listens on 1884), or `unix:PATH` for a Unix socket.
    pub address: String,
    /// User name, if the broker wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (prefer `password_file` or the environment: a file is easily shared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file whose first line is the password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM certificate authorities to trust: connect with TLS (a build with `--features tls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// MQTT keep-alive, seconds (0: off).
    pub keep_alive_s: u64,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            address: "127.0.0.1:1884".into(),
            username: None,
            password: None,
            password_file: None,
            tls_ca: None,
            keep_alive_s: 60,
        }
    }
}

/// `[board]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Board {
    /// Which board: a device path, `VID:PID`, `VID:PID:SERIAL` or `uuid:UUID`; none: the one
    /// DropBot present (several is an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// Command tables of other firmware builds (TOML files), beside the built-in ones.
    pub command_tables: Vec<PathBuf>,
}

/// `[safety]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Safety {
    /// HV turns on with the first live electrode request (until a user switches it off).
    pub auto_hv: bool,
    /// The board's failsafe: if this process goes silent this long, the board restarts with HV
    /// and channels off, ms (0: leave the firmware's own watchdog as it is).
    pub failsafe_timeout_ms: u64,
    /// After the broker has been gone this long, the board goes safe and stays halted until a
    /// user resumes, ms.
    pub safe_after_bus_loss_ms: u64,
    /// How long a request waits for the board to apply it, ms.
    pub apply_timeout_ms: u64,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            auto_hv: true,
            failsafe_timeout_ms: 5_000,
            safe_after_bus_loss_ms: 5_000,
            apply_timeout_ms: 10_000,
        }
    }
}

/// `[limits]`: sizes in bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest MQTT packet either way (MQTT's own maximum by default: a packet over it drops
    /// the connection, so keep it at least as high as the broker's own limit).
    pub max_packet_size: usize,
    /// Largest payload taken on a topic that `payload` does not list (and largest sent).
    pub payload_default: usize,
    /// Payload limits per MQTT filter (`+`, `#`); the most specific match wins. A message
    /// over its limit is dropped and named on the error topic; the connection stays.
    pub payload: BTreeMap<String, usize>,
    /// Largest put or trigger taken (a larger one is answered "too large").
    pub request_payload: usize,
    /// Bytes of received messages that may wait to be handled.
    pub incoming_bytes: usize,
    /// Requests being carried out at once; more are answered "busy".
    pub max_in_flight: usize,
}

/// The device model's topic, with a limit of its own by default.
pub const DEVICE_TOPIC: &str = "microdrop/device-model/state/three-object";

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: crate::bus::MQTT_MAX_PACKET,
            payload_default: 8 * 1024 * 1024,
            payload: BTreeMap::from([(DEVICE_TOPIC.to_owned(), 8 * 1024 * 1024)]),
            request_payload: 1024 * 1024,
            incoming_bytes: 8 * 1024 * 1024,
            max_in_flight: 256,
        }
    }
}

/// `[view]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct View {
    /// Serve the live view at `PORT` or `IP:PORT` (empty: off). An IP other than loopback
    /// lets other machines in, with no login.
    pub listen: String,
}

/// `[data]`: where files are written (calibrations, run records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Data {
    /// Keep calibrations (one file per chip and board) and run records on disk; `false`:
    /// calibrations live in memory only and no run is recorded.
    pub keep: bool,
    /// The plugin's data directory, where calibrations are kept (empty:
    /// `$XDG_DATA_HOME/dropbot-plugin`, else `~/.local/share/dropbot-plugin`).
    pub directory: String,
    /// Where run records go (empty: `runs` in the data directory).
    pub runs: String,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            keep: true,
            directory: String::new(),
            runs: String::new(),
        }
    }
}

/// `[readings]`: how readings reach the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Readings {
    /// Shortest time between two publications of one retained reading, ms (100: 10 Hz).
    pub retained_interval_ms: u64,
    /// Longest a capacitance sample waits for its `capacitance-updated` batch, ms.
    pub batch_interval_ms: u64,
    /// Most samples in one `capacitance-updated` batch.
    pub batch_max: usize,
    /// Period of the health readings (measured HV, temperature, currents), ms (0: never).
    pub monitor_interval_ms: u64,
}

impl Default for Readings {
    fn default() -> Self {
        let d = crate::plugin::telemetry::ReadingsOptions::default();
        let ms = |t: std::time::Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        Readings {
            retained_interval_ms: ms(d.retained_interval),
            batch_interval_ms: ms(d.batch_interval),
            batch_max: d.batch_max,
            monitor_interval_ms: d.monitor_interval.map_or(0, ms),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `text` (lines for people) or `json` (one object per line, for journald and shippers).
    pub format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret (a password): shown and serialized as [`Secret::HIDDEN`], never as itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// What a secret shows instead of itself.
    pub const HIDDEN: &'static str = "<hidden>";

    /// A secret of `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::HIDDEN)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::HIDDEN)
    }
}

/// Every key a setting can have (dotted), for the environment and for checks of the docs.
/// `limits.payload` is a table of filters, set in the file (or with `--set`).
pub const KEYS: &[&str] = &[
    "name",
    "broker.address",
    "broker.username",
    "broker.password",
    "broker.password_file",
    "broker.tls_ca",
    "broker.keep_alive_s",
    "board.port",
    "board.command_tables",
    "safety.auto_hv",
    "safety.failsafe_timeout_ms",
    "safety.safe_after_bus_loss_ms",
    "safety.apply_timeout_ms",
    "limits.max_packet_size",
    "limits.payload_default",
    "limits.payload",
    "limits.request_payload",
    "limits.incoming_bytes",
    "limits.max_in_flight",
    "view.listen",
    "data.keep",
    "data.directory",
    "data.runs",
    "readings.retained_interval_ms",
    "readings.batch_interval_ms",
    "readings.batch_max",
    "readings.monitor_interval_ms",
    "log.format",
];

/// A configuration that cannot be used: where it came from, the key, the value, and what is
/// allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is not acceptable.
    #[error("{origin}: `{key}` = {value}: {problem}")]
    Invalid {
        /// Where the value came from (a file's path, an environment variable, the command line).
        origin: String,
        /// The dotted key.
        key: String,
        /// The value as given.
        value: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// The file named by `--config` (or `DROPBOT_CONFIG`) cannot be read.
    #[error("configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Something else about the configuration (e.g. a `--set` that is not `KEY=VALUE`).
    #[error("{0}")]
    Other(String),
}
