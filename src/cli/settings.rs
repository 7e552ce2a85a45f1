//! The configuration flags `run` and `config` share, and loading the configuration with them.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dropbot_plugin::config::{self, Flag, Loaded, Sources};

/// Where the configuration comes from, and the settings given as flags (they beat the
/// environment and the file; see `docs/operations.md`).
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The configuration file [default: $DROPBOT_CONFIG, else the first of
    /// ./dropbot-plugin.toml, ~/.config/dropbot-plugin/config.toml,
    /// /etc/dropbot-plugin/config.toml that exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Any setting, as KEY=VALUE with a TOML value (repeatable), e.g.
    /// `--set safety.failsafe_timeout_ms=3000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// MQTT broker as HOST:PORT, or unix:PATH (`broker.address`).
    #[arg(long, value_name = "HOST:PORT")]
    broker: Option<String>,
    /// Our name on the bus; a second board needs a second name (`name`).
    #[arg(long)]
    name: Option<String>,
    /// Broker user name (`broker.username`).
    #[arg(long)]
    username: Option<String>,
    /// Broker password (`broker.password`; prefer DROPBOT_BROKER__PASSWORD or
    /// broker.password_file: a command line is visible to every user of the machine).
    #[arg(long)]
    password: Option<String>,
    /// Trust these PEM certificate authorities and connect with TLS (`broker.tls_ca`).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Largest MQTT packet either way, bytes (`limits.max_packet_size`).
    #[arg(long, value_name = "BYTES")]
    max_packet_size: Option<usize>,
    /// Which board: a device path, VID:PID, VID:PID:SERIAL or uuid:UUID (`board.port`)
    /// [default: the one DropBot (16c0:0483) present; several is an error].
    #[arg(long, value_name = "SELECTOR")]
    pub port: Option<String>,
    /// Command table of a firmware build (TOML); repeatable (`board.command_tables`).
    #[arg(long, value_name = "FILE")]
    command_table: Vec<PathBuf>,
    /// Do not turn HV on with the first electrode request (`safety.auto_hv = false`).
    #[arg(long)]
    no_auto_hv: bool,
    /// Serve the live view at PORT or IP:PORT (`view.listen`) [127.0.0.1:8088 when given
    /// without a value].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "8088")]
    view: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
}

/// Where files go (`run` and `demo`).
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Where calibrations are kept, one file per chip and board (`data.directory`) [default:
    /// the user's data directory, e.g. ~/.local/share/dropbot-plugin].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where run records go (`data.runs`) [default: DATA_DIR/runs].
    #[arg(long, value_name = "DIR")]
    runs_dir: Option<PathBuf>,
    /// Keep no calibration file and no run record (`data.keep = false`).
    #[arg(long, conflicts_with_all = ["data_dir", "runs_dir"])]
    no_data: bool,
}

impl DataArgs {
    /// These flags as settings.
    pub fn flags(&self) -> Vec<Flag> {
        let path = |p: &PathBuf| toml::Value::from(p.display().to_string());
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push(Flag::new("data.directory", path(dir)));
        }
        if let Some(dir) = &self.runs_dir {
            flags.push(Flag::new("data.runs", path(dir)));
        }
        if self.no_data {
            flags.push(Flag::new("data.keep", false));
        }
        flags
    }
}

impl SettingsArgs {
    /// The sources these flags describe.
    pub fn sources(&self) -> Result<Sources> {
        let mut flags = Vec::new();
        let path = |p: &PathBuf| p.display().to_string();
        let mut add = |key: &str, value: Option<toml::Value>| {
            if let Some(value) = value {
                flags.push(Flag::new(key, value));
            }
        };
        add("broker.address", self.broker.clone().map(Into::into));
        add("name", self.name.clone().map(Into::into));
        add("broker.username", self.username.clone().map(Into::into));
        add("broker.password", self.password.clone().map(Into::into));
        add(
            "broker.tls_ca",
            self.tls_ca.as_ref().map(path).map(Into::into),
        );
        let size = self.max_packet_size.and_then(|n| i64::try_from(n).ok());
        add("limits.max_packet_size", size.map(Into::into));
        add("board.port", self.port.clone().map(Into::into));
        let tables: Vec<toml::Value> = self
            .command_table
            .iter()
            .map(path)
            .map(Into::into)
            .collect();
        add(
            "board.command_tables",
            (!tables.is_empty()).then(|| tables.into()),
        );
        add("safety.auto_hv", self.no_auto_hv.then_some(false.into()));
        add("view.listen", self.view.clone().map(Into::into));
        flags.extend(self.data.flags());
        for text in &self.set {
            flags.push(Flag::parse(text)?);
        }
        Ok(Sources {
            file: self.config.clone(),
            flags,
            no_env: false,
        })
    }

    /// The configuration these flags, the environment and the file give.
    pub fn load(&self) -> Result<Loaded> {
        Ok(config::load(&self.sources()?)?)
    }
}
