//! Command tables: which code each command has in a given firmware build.
//!
//! Real DropBot builds number their commands from the order of their methods, so codes are
//! data, kept in versioned TOML files keyed by the firmware version from the ID handshake
//! (`dropbot::<version>`). The simulator's table ships inside this crate; others are parsed
//! from text the caller reads (this crate does no I/O). Format:
//!
//! ```toml
//! format = 1
//! description = "DropBot simulator"
//! firmware_versions = ["1.0.0-sim"]   # exact versions this table serves
//!
//! [codes]
//! software_version = 16
//! set_state_of_channels = 22
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use thiserror::Error;

use crate::commands::CommandName;

/// The table the simulator uses, in this crate's `tables/` folder.
pub const SIMULATOR_TABLE: &str = include_str!("../tables/dropbot-1.0.0-sim.toml");

/// The firmware version the simulator reports (`dropbot::1.0.0-sim`).
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
    #[error("no command table for firmware version `{version}` (tables known for: {known}); supply one with --command-table FILE")]
    NoTable { version: String, known: String },
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

/// The tables a host knows, chosen by firmware version.
#[derive(Debug, Clone, Default)]
pub struct TableSet {
    tables: Vec<CommandTable>,
}

impl TableSet {
    /// The built-in tables (the simulator's).
    pub fn builtin() -> Self {
        Self {
            tables: vec![CommandTable::simulator()],
        }
    }

    /// Add a table; it takes precedence over earlier ones for the versions it serves.
    pub fn add(&mut self, table: CommandTable) {
        self.tables.insert(0, table);
    }

    /// The table for a firmware version.
    pub fn for_version(&self, version: &str) -> Result<&CommandTable, TableError> {
        self.tables
            .iter()
            .find(|t| t.firmware_versions.iter().any(|v| v == version))
            .ok_or_else(|| TableError::NoTable {
                version: version.to_owned(),
                known: self
                    .tables
                    .iter()
                    .flat_map(|t| t.firmware_versions.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_table_covers_every_command() {
        let table = CommandTable::from_toml(SIMULATOR_TABLE).unwrap();
        for name in CommandName::ALL {
            assert!(table.has(*name), "{name} missing from the simulator table");
        }
        assert_eq!(table.firmware_versions(), [SIMULATOR_VERSION]);
    }

    #[test]
    fn chooses_by_version_and_names_the_missing_one() {
        let set = TableSet::builtin();
        assert!(set.for_version(SIMULATOR_VERSION).is_ok());
        let err = set.for_version("1.79.0").unwrap_err();
        assert!(err.to_string().contains("1.79.0"), "{err}");
        assert!(err.to_string().contains("--command-table"), "{err}");
    }

    #[test]
    fn rejects_bad_tables() {
        let dup = "format = 1\nfirmware_versions = [\"x\"]\n[codes]\nhalt = 3\nreboot = 3\n";
        assert!(matches!(
            CommandTable::from_toml(dup),
            Err(TableError::DuplicateCode { code: 3, .. })
        ));
        // A method outside the command set is kept, by its firmware name.
        let other = "format = 1\nfirmware_versions = [\"x\"]\n[codes]\nfly = 3\n";
        let table = CommandTable::from_toml(other).unwrap();
        assert_eq!(table.code_of("fly"), Some(3));
        assert_eq!(table.name(3), None);
        let clash = "format = 1\nfirmware_versions = [\"x\"]\n[codes]\nfly = 3\nhalt = 3\n";
        assert!(matches!(
            CommandTable::from_toml(clash),
            Err(TableError::DuplicateCode { code: 3, .. })
        ));
        let format = "format = 2\nfirmware_versions = []\n[codes]\n";
        assert_eq!(
            CommandTable::from_toml(format),
            Err(TableError::Format { found: 2 })
        );
        assert!(matches!(
            CommandTable::from_toml("not toml ["),
            Err(TableError::Parse(_))
        ));
    }

    #[test]
    fn identity_parsing() {
        assert_eq!(
            parse_identity("dropbot::1.0.0-sim").unwrap(),
            ("dropbot", "1.0.0-sim")
        );
        assert!(parse_identity("teensy").is_err());
        assert!(parse_identity("dropbot::").is_err());
    }

    #[test]
    fn added_tables_take_precedence_and_missing_codes_are_named() {
        let mut set = TableSet::builtin();
        let text = format!(
            "format = 1\ndescription = \"partial\"\nfirmware_versions = [\"{SIMULATOR_VERSION}\", \"2.0\"]\n[codes]\nhalt = 7\n"
        );
        set.add(CommandTable::from_toml(&text).unwrap());
        let table = set.for_version(SIMULATOR_VERSION).unwrap();
        assert_eq!(table.description(), "partial");
        assert_eq!(table.code(CommandName::Halt), Ok(7));
        assert_eq!(table.name(7), Some(CommandName::Halt));
        let err = table.code(CommandName::Reboot).unwrap_err().to_string();
        assert!(err.contains("reboot") && err.contains("2.0"), "{err}");
        assert!(set.for_version("2.0").is_ok());
        let extra = "format = 1\nfirmware_versions = []\nextra = 1\n[codes]\n";
        assert!(matches!(
            CommandTable::from_toml(extra),
            Err(TableError::Parse(_))
        ));
    }
}
