//! The tables a host knows, chosen by the firmware version of the ID handshake.
//!
//! Built in: the tables derived by `tools/rpc-table` from the real firmware headers (README
//! section 9), and the simulator's own numbering while it still reports `1.0.0-sim`.

use crate::table::{CommandTable, TableError};

/// The built-in tables' TOML text, by file name.
pub const BUILTIN_TABLES: [(&str, &str); 4] = [
    (
        "dropbot-1.73.toml",
        include_str!("../tables/dropbot-1.73.toml"),
    ),
    (
        "dropbot-1.74.2.toml",
        include_str!("../tables/dropbot-1.74.2.toml"),
    ),
    (
        "dropbot-1.74.3.toml",
        include_str!("../tables/dropbot-1.74.3.toml"),
    ),
    (
        "dropbot-1.0.0-sim.toml",
        include_str!("../tables/dropbot-1.0.0-sim.toml"),
    ),
];

/// The tables a host knows, chosen by firmware version.
#[derive(Debug, Clone, Default)]
pub struct TableSet {
    tables: Vec<CommandTable>,
}

impl TableSet {
    /// The built-in tables.
    pub fn builtin() -> Self {
        // Each built-in table is checked by this crate's tests; one that did not parse would
        // only be missing, never wrong.
        let tables = BUILTIN_TABLES
            .iter()
            .filter_map(|(_, text)| CommandTable::from_toml(text).ok())
            .collect();
        Self { tables }
    }

    /// Add a table; it takes precedence over earlier ones for the versions it serves.
    pub fn add(&mut self, table: CommandTable) {
        self.tables.insert(0, table);
    }

    /// Every table, the ones added last first.
    pub fn tables(&self) -> &[CommandTable] {
        &self.tables
    }

    /// The table serving exactly `version`. For any other version the error names the
    /// nearest known version (same major and minor first, then the closest patch).
    pub fn for_version(&self, version: &str) -> Result<&CommandTable, TableError> {
        self.tables
            .iter()
            .find(|t| t.firmware_versions().iter().any(|v| v == version))
            .ok_or_else(|| TableError::NoTable {
                version: version.to_owned(),
                nearest: self.nearest(version),
                known: self
                    .tables
                    .iter()
                    .map(|t| match t.firmware_versions() {
                        [] => "(none)".to_owned(),
                        [one] => one.clone(),
                        [first, .., last] if t.firmware_versions().len() > 3 => format!(
                            "{first} to {last} ({} versions)",
                            t.firmware_versions().len()
                        ),
                        some => some.join(", "),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            })
    }

    /// The known version closest to `version`, with its table's description.
    fn nearest(&self, version: &str) -> Option<String> {
        let wanted = numeric(version)?;
        self.tables
            .iter()
            .flat_map(|t| t.firmware_versions().iter().map(move |v| (v, t)))
            .filter_map(|(v, t)| Some((distance(&wanted, &numeric(v)?), v, t)))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, v, t)| format!("{v}, table \"{}\"", t.description()))
    }
}

/// The leading `major.minor.patch` numbers of a version (`1.74.3+4.g856c7fa` -> 1, 74, 3).
pub(crate) fn numeric(version: &str) -> Option<[u64; 3]> {
    let core = version.split(['+', '-']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some([major, minor, patch])
}

/// How far `known` is from `wanted`: major, then minor; within the same minor line the patch
/// difference, across lines the patch nearest the boundary (the newest of an older line, the
/// oldest of a newer one).
fn distance(wanted: &[u64; 3], known: &[u64; 3]) -> [u64; 3] {
    let patch = if wanted[..2] == known[..2] {
        wanted[2].abs_diff(known[2])
    } else if known < wanted {
        u64::MAX - known[2]
    } else {
        known[2]
    };
    [
        wanted[0].abs_diff(known[0]),
        wanted[1].abs_diff(known[1]),
        patch,
    ]
}
