//! Where settings come from, lowest precedence first: the defaults, one TOML file, environment
//! variables (`DROPBOT_<SECTION>__<KEY>`, e.g. `DROPBOT_BROKER__ADDRESS`, and `DROPBOT_NAME`),
//! command-line flags.
//!
//! The file is `--config FILE`, else `$DROPBOT_CONFIG`, else the first that exists of
//! `./dropbot-plugin.toml`, `$XDG_CONFIG_HOME/dropbot-plugin/config.toml` (or
//! `~/.config/dropbot-plugin/config.toml`) and `/etc/dropbot-plugin/config.toml`; none is fine
//! (the defaults apply). A file that was named but cannot be read is an error.

use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError, KEYS};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DROPBOT_CONFIG";
/// The prefix of environment variables that set keys (`__` separates a section from a key).
pub const ENV_PREFIX: &str = "DROPBOT_";
/// Older names, still read (below the `DROPBOT_BROKER__*` ones).
const LEGACY_ENV: [(&str, &str); 2] = [
    ("DROPBOT_MQTT_USERNAME", "broker.username"),
    ("DROPBOT_MQTT_PASSWORD", "broker.password"),
];

/// One setting given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// The key as given, e.g. `broker.address` or `limits.payload."microdrop/#"`.
    pub key: String,
    /// The setting as a TOML table (`{broker = {address = ...}}`).
    table: toml::Table,
}

impl Flag {
    /// A flag with a typed value; `key` is dotted (no quoted parts).
    pub fn new(key: &str, value: impl Into<toml::Value>) -> Self {
        let mut value = value.into();
        for part in key.rsplit('.') {
            let mut table = toml::Table::new();
            table.insert(part.to_owned(), value);
            value = toml::Value::Table(table);
        }
        let table = match value {
            toml::Value::Table(table) => table,
            _ => toml::Table::new(),
        };
        Flag {
            key: key.to_owned(),
            table,
        }
    }

    /// `KEY=VALUE` as `--set` takes it: KEY is a TOML key (`safety.auto_hv`,
    /// `limits.payload."microdrop/#"`), the value is read as TOML (`3000`, `true`,
    /// `["a", "b"]`, `"text"`), and taken as a plain string when it is not TOML.
    pub fn parse(text: &str) -> Result<Flag, ConfigError> {
        let Some((key, raw)) = text.split_once('=') else {
            return Err(ConfigError::Other(format!(
                "--set {text}: expected KEY=VALUE, e.g. --set safety.auto_hv=false"
            )));
        };
        let key = key.trim();
        let as_string = toml::Value::String(raw.to_owned()).to_string();
        let table = toml::from_str::<toml::Table>(&format!("{key} = {raw}"))
            .or_else(|_| toml::from_str::<toml::Table>(&format!("{key} = {as_string}")))
            .map_err(|e| ConfigError::Other(format!("--set {text}: `{key}` is not a key: {e}")))?;
        Ok(Flag {
            key: key.to_owned(),
            table,
        })
    }
}

/// What to read besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// Settings from the command line, in order (a later one wins).
    pub flags: Vec<Flag>,
    /// Read neither the environment nor a file on the search path (only `file`, if named):
    /// tests and `demo` are independent of the caller's setup.
    pub no_env: bool,
}

/// A loaded configuration and where it came from.
pub struct Loaded {
    /// The values.
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    figment: Figment,
}

impl Loaded {
    /// Where `key`'s value came from: a file's path, an environment variable, the command
    /// line, or `default`.
    pub fn source_of(&self, key: &str) -> String {
        let defaults = Serialized::defaults(Config::default()).metadata().name;
        match self.figment.find_metadata(key) {
            Some(metadata) if metadata.name != defaults => describe(metadata, key),
            _ => "default".into(),
        }
    }
}

/// Reads the configuration from `sources`.
pub fn load(sources: &Sources) -> Result<Loaded, ConfigError> {
    let file = config_file(sources)?;
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = &file {
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::File {
                path: path.clone(),
                reason: e.to_string(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    if !sources.no_env {
        figment = figment.merge(legacy_env()).merge(env());
    }
    figment = figment.merge(FlagProvider(sources.flags.clone()));
    let config = figment
        .extract::<Config>()
        .map_err(|e| explain(e, &figment))?;
    let loaded = Loaded {
        config,
        file,
        figment,
    };
    super::settings::check(&loaded)?;
    Ok(loaded)
}

/// The file to read: named, or found on the search path, or none.
fn config_file(sources: &Sources) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = &sources.file {
        return Ok(Some(path.clone()));
    }
    if sources.no_env {
        return Ok(None);
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok(Some(PathBuf::from(path)));
    }
    Ok(search_path().into_iter().find(|p| p.is_file()))
}

/// Where a configuration file is looked for when none is named, in order.
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("dropbot-plugin.toml")];
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(dir) = config_home {
        paths.push(dir.join("dropbot-plugin").join("config.toml"));
    }
    paths.push(PathBuf::from("/etc/dropbot-plugin/config.toml"));
    paths
}

/// `DROPBOT_SECTION__KEY` for every known key (others, such as the launcher's own
/// `DROPBOT_PLUGIN_*`, are not ours and are left alone).
fn env() -> Env {
    Env::prefixed(ENV_PREFIX).filter_map(|k| {
        let key = k.as_str().to_ascii_lowercase().replace("__", ".");
        KEYS.contains(&key.as_str()).then(|| key.into())
    })
}

fn legacy_env() -> Env {
    Env::raw().filter_map(|k| {
        LEGACY_ENV
            .iter()
            .find(|(name, _)| k.as_str().eq_ignore_ascii_case(name))
            .map(|(_, key)| (*key).into())
    })
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// The command line's settings, named as such in messages.
struct FlagProvider(Vec<Flag>);

impl Provider for FlagProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named("command line")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut all = Dict::new();
        for flag in &self.0 {
            if let Value::Dict(_, dict) = Value::serialize(&flag.table)? {
                merge(&mut all, dict);
            }
        }
        Ok(Profile::Default.collect(all))
    }
}

/// Merges `from` into `into`, tables key by key, a later value winning.
fn merge(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, old)), Value::Dict(_, new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Where a value came from, in words.
fn describe(metadata: &Metadata, key: &str) -> String {
    if let Some(path) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return path.display().to_string();
    }
    if metadata.name.contains("environment") {
        if let Some((name, _)) = LEGACY_ENV.iter().find(|(_, k)| *k == key) {
            if std::env::var_os(name).is_some() && std::env::var_os(env_name(key)).is_none() {
                return format!("environment variable {name}");
            }
        }
        return format!("environment variable {}", env_name(key));
    }
    metadata.name.to_string()
}

/// A figment error as "where: `key` = value: what is allowed".
fn explain(error: figment::Error, figment: &Figment) -> ConfigError {
    let key = error
        .path
        .iter()
        .filter(|p| p.as_str() != "default")
        .cloned()
        .collect::<Vec<_>>()
        .join(".");
    let source = match (&error.metadata, key.is_empty()) {
        (Some(m), _) => describe(m, &key),
        (None, false) => figment
            .find_metadata(&key)
            .map_or_else(|| "configuration".into(), |m| describe(m, &key)),
        (None, true) => "configuration".into(),
    };
    let shown = |key: &str| match key.ends_with("password") {
        true => super::Secret::HIDDEN.to_owned(),
        false => figment
            .find_value(key)
            .ok()
            .map_or_else(|| "?".to_owned(), |v| show(&v)),
    };
    let value = shown(&key);
    let problem = match &error.kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
            let expected = match expected.as_str() {
                "u64" | "usize" | "u32" => "a whole number, 0 or more",
                other => other,
            };
            format!("not allowed here: expected {expected}")
        }
        Kind::UnknownField(field, allowed) => {
            // The path ends with the unknown field itself (or, at the top, is empty).
            let key = match key.is_empty() {
                true => field.clone(),
                false => key,
            };
            return ConfigError::Invalid {
                origin: source,
                value: shown(&key),
                key,
                problem: format!("no such setting; allowed here: {}", allowed.join(", ")),
            };
        }
        Kind::UnknownVariant(v, allowed) => {
            format!("`{v}` is not one of: {}", allowed.join(", "))
        }
        other => other.to_string(),
    };
    ConfigError::Invalid {
        origin: source,
        key,
        value,
        problem,
    }
}

/// A value as TOML would write it (strings quoted).
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("{c:?}"),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => match n.to_u128() {
            Some(u) => u.to_string(),
            None => n.to_i128().map_or_else(
                || n.to_f64().map_or_else(|| "?".into(), |f| f.to_string()),
                |i| i.to_string(),
            ),
        },
        Value::Empty(..) => "(empty)".into(),
        Value::Dict(..) => "{…}".into(),
        Value::Array(_, items) => {
            let items: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", items.join(", "))
        }
    }
}
