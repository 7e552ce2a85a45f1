//! `config --print`: the configuration in effect, as TOML a file could hold, secrets hidden,
//! with where every value that is not the default came from.

use std::fmt::Write as _;

use super::load::{search_path, Loaded};
use super::KEYS;

/// The configuration in effect as commented TOML.
pub fn effective(loaded: &Loaded) -> String {
    let mut out = String::from("# dropbot-plugin: the configuration in effect\n");
    match &loaded.file {
        Some(file) => {
            let _ = writeln!(out, "# file: {}", file.display());
        }
        None => {
            let searched: Vec<String> = search_path()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let _ = writeln!(out, "# file: none (looked for {})", searched.join(", "));
        }
    }
    let set: Vec<(&str, String)> = KEYS
        .iter()
        .map(|key| (*key, loaded.source_of(key)))
        .filter(|(_, source)| source != "default")
        .collect();
    if set.is_empty() {
        out.push_str("# every value is the default\n");
    } else {
        out.push_str("# not the default:\n");
        for (key, source) in set {
            let _ = writeln!(out, "#   {key}: from {source}");
        }
    }
    out.push('\n');
    match toml::to_string_pretty(&loaded.config) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "# cannot show it as TOML: {e}");
        }
    }
    out
}
