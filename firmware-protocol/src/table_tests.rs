//! Tests of command tables and of their selection by firmware version.

use super::*;
use crate::table_set::{TableSet, BUILTIN_TABLES};

#[test]
fn simulator_table_covers_every_command() {
    let table = CommandTable::from_toml(SIMULATOR_TABLE).unwrap();
    for name in CommandName::ALL {
        assert!(table.has(*name), "{name} missing from the simulator table");
    }
    assert_eq!(table.firmware_versions(), [SIMULATOR_VERSION]);
}

#[test]
fn every_builtin_table_parses_and_has_every_typed_command() {
    for (file, text) in BUILTIN_TABLES {
        let table = CommandTable::from_toml(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for name in CommandName::ALL {
            assert!(table.has(*name), "{file} lacks {name}");
        }
    }
    assert_eq!(TableSet::builtin().tables().len(), BUILTIN_TABLES.len());
}

/// Codes worked out by hand from the headers (BaseNode.h order; class index x 255 + method
/// index), and the review's derivation for dropbot::Node, for every real table.
#[test]
fn real_tables_have_the_generators_numbering() {
    let set = TableSet::builtin();
    for version in [
        "1.73.0", "1.73.6", "1.74.0", "1.73.25", "1.74.1", "1.74.2", "1.74.3",
    ] {
        let t = set.for_version(version).unwrap();
        let code = |n| t.code(n).unwrap();
        assert_eq!(code(CommandName::SoftwareVersion), 4, "{version}");
        assert_eq!(code(CommandName::Microseconds), 6);
        assert_eq!(code(CommandName::DigitalRead), 12);
        assert_eq!(code(CommandName::StrEcho), 19);
        assert_eq!(t.code_of("max_serial_payload_size"), Some(255));
        assert_eq!(code(CommandName::SaveConfig), 1276);
        assert_eq!(code(CommandName::SerializeConfig), 1278);
        assert_eq!(code(CommandName::UpdateConfig), 1279);
        assert_eq!(code(CommandName::SerializeState), 1531);
        assert_eq!(code(CommandName::UpdateState), 1532);
        assert_eq!(code(CommandName::DetectShorts), 1806);
        assert_eq!(code(CommandName::Capacitance), 1919);
        assert_eq!(code(CommandName::SetStateOfChannels), 1949);
        assert_eq!(code(CommandName::Halt), 1962);
        // No real command has a code between BaseNode's last and the next class's first.
        assert!((20..255).all(|c| t.name(c).is_none()));
    }
    // The fork appends new methods at the end of Node.h (v1.74.2, v1.74.3).
    let fork = set.for_version("1.74.3").unwrap();
    assert_eq!(fork.code_of("recalibrate_adc"), Some(1966));
    assert_eq!(
        set.for_version("1.74.2")
            .unwrap()
            .code_of("recalibrate_adc"),
        None
    );
    assert_eq!(
        set.for_version("1.73.6")
            .unwrap()
            .code_of("on_config_watchdog_enabled_changed"),
        None
    );
}

#[test]
fn chooses_by_the_reported_id_and_names_the_nearest() {
    let set = TableSet::builtin();
    let (name, version) = parse_identity("dropbot::1.73.6").unwrap();
    assert_eq!(name, "dropbot");
    assert!(set
        .for_version(version)
        .unwrap()
        .description()
        .contains("1.73.0 to 1.74.1"));
    assert!(set.for_version("1.74.3+4.g856c7fa").is_ok());
    assert!(set.for_version(SIMULATOR_VERSION).is_ok());
    for (asked, nearest) in [
        ("1.79.0", "1.74.3"),
        ("1.74.3+9.gdeadbee", "1.74.3"),
        ("1.72.0", "1.73.0"),
        ("1.73.30", "1.73.25"),
    ] {
        let err = set.for_version(asked).unwrap_err().to_string();
        assert!(err.contains(asked), "{err}");
        assert!(
            err.contains(&format!("nearest known is {nearest},")),
            "{asked}: {err}"
        );
        assert!(err.contains("--command-table"), "{err}");
    }
    let err = set.for_version("experimental").unwrap_err().to_string();
    assert!(
        !err.contains("nearest") && err.contains("--command-table"),
        "{err}"
    );
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
