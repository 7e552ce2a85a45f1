//! A derived table as the `firmware-protocol` crate reads it (format 1; see its README).

use std::collections::BTreeMap;
use std::fmt::Write;

/// What a table says about itself.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Free text, e.g. `DropBot firmware 1.73.x (sci-bots/dropbot.py)`.
    pub description: String,
    /// Where the codes come from, e.g. the repositories and tags of the headers.
    pub source: String,
    /// The firmware versions (`dropbot::<version>`) this table serves, exactly.
    pub firmware_versions: Vec<String>,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The TOML text of a table: `codes` listed by code.
pub fn to_toml(info: &TableInfo, codes: &BTreeMap<String, u16>) -> String {
    let mut out = String::new();
    out.push_str("# Command codes of a DropBot firmware build, derived from its headers by tools/rpc-table\n");
    out.push_str("# (the firmware code generator's numbering; see firmware-protocol/README.md).\n");
    out.push_str("format = 1\n");
    let _ = writeln!(out, "description = {}", quoted(&info.description));
    let _ = writeln!(out, "source = {}", quoted(&info.source));
    let versions: Vec<String> = info.firmware_versions.iter().map(|v| quoted(v)).collect();
    let _ = writeln!(out, "firmware_versions = [{}]", versions.join(", "));
    out.push_str("\n[codes]\n");
    let mut by_code: Vec<(&String, &u16)> = codes.iter().collect();
    by_code.sort_by_key(|(name, code)| (**code, (*name).clone()));
    for (name, code) in by_code {
        let bare = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let key = if bare { name.clone() } else { quoted(name) };
        let _ = writeln!(out, "{key} = {code}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_table_the_protocol_crate_reads() {
        let codes: BTreeMap<String, u16> = [
            ("microseconds", 6),
            ("halt", 1962),
            ("mystery", 7),
            ("operator==", 8),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_owned(), c))
        .collect();
        let info = TableInfo {
            description: "test \"build\"".into(),
            source: "here".into(),
            firmware_versions: vec!["1.2.3".into()],
        };
        let text = to_toml(&info, &codes);
        assert!(text.find("microseconds = 6").unwrap() < text.find("mystery = 7").unwrap());
        let table = firmware_protocol::CommandTable::from_toml(&text).unwrap();
        assert_eq!(table.firmware_versions(), ["1.2.3"]);
        assert_eq!(table.code(firmware_protocol::CommandName::Halt), Ok(1962));
        assert_eq!(table.code_of("mystery"), Some(7));
        assert_eq!(table.code_of("operator=="), Some(8));
    }
}
