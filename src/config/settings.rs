//! From configuration to what the layers take: every value checked, a bad one named with where
//! it came from, its key, its value and what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load::Loaded;
use super::{Config, ConfigError, LogFormat, Secret};
use crate::board::Selector;
use crate::bus::{BusOptions, BusTransport, MQTT_MAX_PACKET};
use crate::plugin::telemetry::ReadingsOptions;
use crate::plugin::Behaviour;

/// The configuration, checked and in the layers' terms.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How the bus connects, with payload limits.
    pub bus: BusOptions,
    /// The plugin's behaviour (safety policy, limits of requests).
    pub behaviour: Behaviour,
    /// Which board (`None`: the one DropBot present).
    pub selector: Option<Selector>,
    /// Command tables to load beside the built-in ones.
    pub command_tables: Vec<PathBuf>,
    /// Where the live view listens, if it is on.
    pub view: Option<SocketAddr>,
    /// How log lines look.
    pub log_format: LogFormat,
}

/// Checks every value of `loaded` (what [`super::load`] does before it returns).
pub(crate) fn check(loaded: &Loaded) -> Result<(), ConfigError> {
    Settings::from_loaded(loaded).map(drop)
}

/// What `key`'s bad `value` (as given) gets: where it came from, and the problem.
struct Checker<'a> {
    loaded: &'a Loaded,
}

impl Checker<'_> {
    fn bad(&self, key: &str, value: impl ToString, problem: impl Into<String>) -> ConfigError {
        // A table's entry (`limits.payload."a/#"`) came from where its table did.
        let lookup = key.split(".\"").next().unwrap_or(key);
        ConfigError::Invalid {
            origin: self.loaded.source_of(lookup),
            key: key.to_owned(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    fn range<T: PartialOrd + Copy + ToString>(
        &self,
        key: &str,
        value: T,
        min: T,
        max: T,
        unit: &str,
    ) -> Result<T, ConfigError> {
        if value < min || value > max {
            let (min, max) = (min.to_string(), max.to_string());
            return Err(self.bad(key, value, format!("allowed: {min} to {max} {unit}")));
        }
        Ok(value)
    }
}

impl Settings {
    /// Checks and converts.
    pub fn from_loaded(loaded: &Loaded) -> Result<Settings, ConfigError> {
        let c = Checker { loaded };
        let config: &Config = &loaded.config;
        let bus = bus_options(&c, config)?;
        let safety = &config.safety;
        let ms = Duration::from_millis;
        let failsafe = match safety.failsafe_timeout_ms {
            0 => None,
            t => Some(ms(c.range(
                "safety.failsafe_timeout_ms",
                t,
                1_000,
                60_000,
                "ms, or 0 to leave the firmware's own watchdog",
            )?)),
        };
        // Settings added to `Behaviour` later keep their defaults until configured here.
        #[allow(clippy::needless_update)]
        let behaviour = Behaviour {
            auto_hv: safety.auto_hv,
            failsafe,
            safe_after_bus_loss: ms(c.range(
                "safety.safe_after_bus_loss_ms",
                safety.safe_after_bus_loss_ms,
                500,
                86_400_000,
                "ms",
            )?),
            apply_timeout: ms(c.range(
                "safety.apply_timeout_ms",
                safety.apply_timeout_ms,
                100,
                600_000,
                "ms",
            )?),
            max_request_payload: c.range(
                "limits.request_payload",
                config.limits.request_payload,
                1024,
                config.limits.max_packet_size,
                "bytes (at most limits.max_packet_size)",
            )?,
            max_in_flight: c.range(
                "limits.max_in_flight",
                config.limits.max_in_flight,
                1,
                65_536,
                "requests",
            )?,
            readings: readings(&c, config)?,
            ..Behaviour::default()
        };
        let selector = match &config.board.port {
            Some(text) if !text.trim().is_empty() => Some(
                text.parse::<Selector>()
                    .map_err(|e| c.bad("board.port", format!("{text:?}"), e.to_string()))?,
            ),
            _ => None,
        };
        let view = match config.view.listen.trim() {
            "" => None,
            text => Some(
                crate::view::parse_listen(text)
                    .map_err(|e| c.bad("view.listen", format!("{text:?}"), e))?,
            ),
        };
        Ok(Settings {
            bus,
            behaviour,
            selector,
            command_tables: config.board.command_tables.clone(),
            view,
            log_format: config.log.format,
        })
    }
}

/// The readings' rates and where their files go.
fn readings(c: &Checker<'_>, config: &Config) -> Result<ReadingsOptions, ConfigError> {
    let (data, r) = (&config.data, &config.readings);
    let ms = Duration::from_millis;
    let (data_dir, runs_dir) = match data.keep {
        false => (None, None),
        true => {
            let dir = match data.directory.trim() {
                "" => default_data_dir(),
                dir => PathBuf::from(dir),
            };
            let runs = match data.runs.trim() {
                "" => dir.join("runs"),
                runs => PathBuf::from(runs),
            };
            (Some(dir), Some(runs))
        }
    };
    let monitor = match r.monitor_interval_ms {
        0 => None,
        t => Some(ms(c.range(
            "readings.monitor_interval_ms",
            t,
            100,
            3_600_000,
            "ms, or 0 for never",
        )?)),
    };
    Ok(ReadingsOptions {
        retained_interval: ms(c.range(
            "readings.retained_interval_ms",
            r.retained_interval_ms,
            1,
            60_000,
            "ms",
        )?),
        batch_interval: ms(c.range(
            "readings.batch_interval_ms",
            r.batch_interval_ms,
            1,
            10_000,
            "ms",
        )?),
        batch_max: c.range("readings.batch_max", r.batch_max, 1, 10_000, "samples")?,
        monitor_interval: monitor,
        data_dir,
        runs_dir,
        ..ReadingsOptions::default()
    })
}

/// `$XDG_DATA_HOME/dropbot-plugin`, else `~/.local/share/dropbot-plugin`, else a relative
/// `dropbot-plugin-data`.
fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")));
    match base {
        Some(base) => base.join("dropbot-plugin"),
        None => PathBuf::from("dropbot-plugin-data"),
    }
}

fn bus_options(c: &Checker<'_>, config: &Config) -> Result<BusOptions, ConfigError> {
    let broker = &config.broker;
    let address = broker.address.trim();
    let mut options = match address.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => {
            let mut o = BusOptions::new(config.name.clone(), "localhost", 0);
            o.transport = BusTransport::Unix(PathBuf::from(path));
            o
        }
        _ => {
            let allowed = "allowed: HOST:PORT (e.g. 127.0.0.1:1884) or unix:PATH";
            let bad = || c.bad("broker.address", format!("{address:?}"), allowed);
            let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(bad)?;
            if host.is_empty() {
                return Err(bad());
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            BusOptions::new(config.name.clone(), host, port)
        }
    };
    options.keep_alive = match broker.keep_alive_s {
        0 => Duration::ZERO,
        s => {
            Duration::from_secs(c.range("broker.keep_alive_s", s, 1, 65_535, "s, or 0 for off")?)
        }
    };
    options.credentials = credentials(c, config)?;
    if let Some(ca) = &broker.tls_ca {
        options.transport = tls(c, ca, &options.transport)?;
    }
    let limits = &config.limits;
    options.max_packet_size = c.range(
        "limits.max_packet_size",
        limits.max_packet_size,
        1024,
        MQTT_MAX_PACKET,
        "bytes",
    )?;
    options.max_payload = c.range(
        "limits.payload_default",
        limits.payload_default,
        1,
        options.max_packet_size,
        "bytes (at most limits.max_packet_size)",
    )?;
    for (filter, limit) in &limits.payload {
        let key = format!("limits.payload.\"{filter}\"");
        if !rumqttc::valid_filter(filter) {
            return Err(c.bad(&key, limit, "the key is not an MQTT filter"));
        }
        c.range(
            &key,
            *limit,
            1,
            options.max_packet_size,
            "bytes (at most limits.max_packet_size)",
        )?;
    }
    options.payload_limits = limits.payload.clone().into_iter().collect();
    options.incoming_bytes = c.range(
        "limits.incoming_bytes",
        limits.incoming_bytes,
        64 * 1024,
        u32::MAX as usize,
        "bytes",
    )?;
    if let Err(e) = options.validate() {
        let problem = format!(
            "{e}; allowed: any name without `/`, `+`, `#` or NUL, not a MicroDrop topic kind"
        );
        return Err(c.bad("name", format!("{:?}", config.name), problem));
    }
    Ok(options)
}

fn credentials(c: &Checker<'_>, config: &Config) -> Result<Option<(String, String)>, ConfigError> {
    let broker = &config.broker;
    let password = match (&broker.password, &broker.password_file) {
        (Some(_), Some(file)) => {
            return Err(c.bad(
                "broker.password_file",
                file.display(),
                "give broker.password or broker.password_file, not both",
            ))
        }
        (Some(p), None) => Some(p.expose().to_owned()),
        (None, Some(file)) => Some(read_password(c, file)?),
        (None, None) => None,
    };
    match (&broker.username, password) {
        (Some(user), Some(pass)) => Ok(Some((user.clone(), pass))),
        (Some(user), None) => Ok(Some((user.clone(), String::new()))),
        (None, Some(_)) => Err(c.bad(
            "broker.password",
            Secret::HIDDEN,
            "a password needs broker.username too",
        )),
        (None, None) => Ok(None),
    }
}

fn read_password(c: &Checker<'_>, file: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        c.bad(
            "broker.password_file",
            file.display(),
            format!("cannot read it: {e}"),
        )
    })?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    if line.is_empty() {
        return Err(c.bad(
            "broker.password_file",
            file.display(),
            "its first line is empty",
        ));
    }
    Ok(line)
}

#[cfg(feature = "tls")]
fn tls(c: &Checker<'_>, ca: &Path, transport: &BusTransport) -> Result<BusTransport, ConfigError> {
    if matches!(transport, BusTransport::Unix(_)) {
        return Err(c.bad(
            "broker.tls_ca",
            ca.display(),
            "TLS needs a HOST:PORT broker address",
        ));
    }
    let ca_pem = std::fs::read(ca).map_err(|e| {
        c.bad(
            "broker.tls_ca",
            ca.display(),
            format!("cannot read it: {e}"),
        )
    })?;
    Ok(BusTransport::Tls { ca_pem })
}

#[cfg(not(feature = "tls"))]
fn tls(c: &Checker<'_>, ca: &Path, _: &BusTransport) -> Result<BusTransport, ConfigError> {
    Err(c.bad(
        "broker.tls_ca",
        ca.display(),
        "this build has no TLS: rebuild with `cargo build --release --features tls`",
    ))
}
