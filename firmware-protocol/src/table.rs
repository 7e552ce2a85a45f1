//! Command tables: which code each command has in a given firmware build.
//!
//! Real DropBot builds number their commands from the order of their methods (README section
//! 9), so codes are data, kept in TOML files keyed by the firmware version from the ID
//! handshake (`dropbot::<version>`). The tables of the known firmware ship inside this crate
//! ([`crate::TableSet::builtin`]); others are parsed from text the caller reads (this crate
//! does no I/O). Format:
//!
//! ```toml
//! format = 1
//! description = "DropBot firmware 1.73.0 to 1.74.1"
//! source = "src/Node.h of sci-bots/dropbot.py v1.73.6; ..."   # optional
//! firmware_versions = ["1.73.6", "1.74.0"]   # exact versions this table serves
//!
//! [codes]                                     # firmware method name = code
//! microseconds = 6
//! set_state_of_channels = 1949
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use thiserror::Error;

use crate::commands::CommandName;

/// The table of the simulator's own numbering (`dropbot::1.0.0-sim`), kept while the
/// simulator reports that id by default; it goes once the simulator speaks a real firmware's
/// table (issue 8).
pub const SIMULATOR_TABLE: &str = include_str!("../tables/dropbot-1.0.0-sim.toml");

/// The firmware version the simulator reports by default (`dropbot::1.0.0-sim`).
pub const SIMULATOR_VERSION: &str = "1.0.0-sim";

/// The only table format this crate reads.
pub const TABLE_FORMAT: u32 = 1;

/// A table that cannot be read or used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TableError {
    /// Not valid TOML or not of the table's shape.
    #[error("command table is not valid: {0}")]
    Parse(String),
    /// A format this crate does not read.
    #[error(
        "command table format {found} is not supported (this build reads format {TABLE_FORMAT})"
    )]
    Format { found: u32 },
    /// Two commands share a code.
    #[error("command table gives code {code} to both `{first}` and `{second}`")]
    DuplicateCode {
        code: u16,
        first: String,
        second: String,
    },
    /// The firmware does not have this command (per its table).
    #[error("the command table for firmware {firmware} has no code for `{name}`")]
    Missing { name: CommandName, firmware: String },
    /// No table serves this firmware version.
    #[error("no command table for firmware version `{version}`{}; tables are known for {known}. \
             Supply one with --command-table FILE (tools/rpc-table derives it from the \
             firmware's headers; see the protocol README)",
             nearest.as_ref().map(|n| format!(" (the nearest known is {n})")).unwrap_or_default())]
    NoTable {
        version: String,
        nearest: Option<String>,
        known: String,
    },
    /// The handshake answer is not `<name>::<version>`.
    #[error("identity `{0}` is not of the form `dropbot::<version>`")]
    BadIdentity(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    format: u32,
    #[serde(default)]
    description: String,
    #[serde(default)]
    source: String,
    firmware_versions: Vec<String>,
    codes: BTreeMap<String, u16>,
}

/// Codes of one firmware build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTable {
    description: String,
    source: String,
    firmware_versions: Vec<String>,
    codes: BTreeMap<CommandName, u16>,
    names: HashMap<u16, CommandName>,
    /// The firmware's other methods, outside this crate's command set.
    others: BTreeMap<String, u16>,
}

impl CommandTable {
    /// Parse a table from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, TableError> {
        let file: TableFile = toml::from_str(text).map_err(|e| TableError::Parse(e.to_string()))?;
        if file.format != TABLE_FORMAT {
            return Err(TableError::Format { found: file.format });
        }
        let mut codes = BTreeMap::new();
        let mut names = HashMap::new();
        let mut others = BTreeMap::new();
        let mut seen: HashMap<u16, String> = HashMap::new();
        for (name, code) in file.codes {
            if let Some(first) = seen.insert(code, name.clone()) {
                return Err(TableError::DuplicateCode {
                    code,
                    first,
                    second: name,
                });
            }
            match name.parse::<CommandName>() {
                Ok(command) => {
                    names.insert(code, command);
                    codes.insert(command, code);
                }
                Err(_) => {
                    others.insert(name, code);
                }
            }
        }
        Ok(Self {
            description: file.description,
            source: file.source,
            firmware_versions: file.firmware_versions,
            codes,
            names,
            others,
        })
    }

    /// The simulator's table.
    pub fn simulator() -> Self {
        // The shipped table is checked by this crate's tests; an empty table is the safe
        // fallback should it ever not parse.
        Self::from_toml(SIMULATOR_TABLE).unwrap_or_else(|_| Self {
            description: String::new(),
            firmware_versions: vec![SIMULATOR_VERSION.into()],
            source: String::new(),
            codes: BTreeMap::new(),
            names: HashMap::new(),
            others: BTreeMap::new(),
        })
    }

    /// The code of `name` in this firmware.
    pub fn code(&self, name: CommandName) -> Result<u16, TableError> {
        self.codes
            .get(&name)
            .copied()
            .ok_or_else(|| TableError::Missing {
                name,
                firmware: self.firmware_versions.join(", "),
            })
    }

    /// The code of any method the table lists, by its firmware name, including those outside
    /// this crate's command set.
    pub fn code_of(&self, name: &str) -> Option<u16> {
        match name.parse::<CommandName>() {
            Ok(command) => self.codes.get(&command).copied(),
            Err(_) => self.others.get(name).copied(),
        }
    }

    /// Where the codes come from (free text).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The command a code stands for in this firmware.
    pub fn name(&self, code: u16) -> Option<CommandName> {
        self.names.get(&code).copied()
    }

    /// Whether the firmware has `name`.
    pub fn has(&self, name: CommandName) -> bool {
        self.codes.contains_key(&name)
    }

    /// Firmware versions this table serves.
    pub fn firmware_versions(&self) -> &[String] {
        &self.firmware_versions
    }

    /// Free text about the table.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Split a handshake answer `dropbot::<version>` into its name and version.
pub fn parse_identity(identity: &str) -> Result<(&str, &str), TableError> {
    match identity.split_once("::") {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok((name, version)),
        _ => Err(TableError::BadIdentity(identity.to_owned())),
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
