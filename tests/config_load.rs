//! The configuration: the documented example is every default, precedence is defaults < file <
//! environment < flags, bad values name where they came from, the key, the value and what is
//! allowed, and `config --print` hides secrets. Environment cases run the real binary (the
//! environment of this test process is shared by its tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dropbot_plugin::config::{self, Config, ConfigError, Flag, Settings, Sources, KEYS};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/docs/dropbot-plugin.example.toml"
);

fn sources(file: Option<&Path>, flags: Vec<Flag>) -> Sources {
    Sources {
        file: file.map(Path::to_path_buf),
        flags,
        no_env: true,
    }
}

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary's `config` with `args` and `env`, with none of the caller's DROPBOT_ variables
/// and a working directory and config home without configuration files.
fn binary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BINARY);
    command
        .arg("config")
        .args(args)
        .current_dir(dir)
        .env("XDG_CONFIG_HOME", dir)
        .env("RUST_BACKTRACE", "0");
    for (key, _) in std::env::vars() {
        if key.starts_with("DROPBOT_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_documented_example_is_every_default_and_names_every_key() {
    let loaded = config::load(&sources(Some(Path::new(EXAMPLE)), Vec::new())).unwrap();
    assert_eq!(loaded.config, Config::default());
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    for key in KEYS {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let section = key.split_once('.').map(|(s, _)| format!("[{s}]"));
        assert!(
            example.contains(&format!("{leaf} =")) || example.contains(&format!("[{key}]")),
            "{key} is not documented in the example"
        );
        if let Some(section) = section {
            assert!(example.contains(&section), "{section}");
        }
    }
    // And the defaults are what the layers get with no configuration at all.
    let settings = Settings::from_loaded(&loaded).unwrap();
    assert_eq!(
        (settings.bus.host.as_str(), settings.bus.port),
        ("127.0.0.1", 1884)
    );
    assert_eq!(settings.bus.name, "dropbot");
    assert!(settings.behaviour.auto_hv);
    assert_eq!(
        settings.behaviour.failsafe,
        Some(std::time::Duration::from_secs(5))
    );
    assert!(settings.view.is_none() && settings.selector.is_none());
}

#[test]
fn a_flag_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "name = \"from-file\"\n[broker]\naddress = \"10.1.2.3:1999\"\n[safety]\nauto_hv = false\n",
    );
    let flags = vec![
        Flag::new("name", "from-flag"),
        Flag::parse("limits.payload.\"microdrop/x/#\"=4096").unwrap(),
    ];
    let loaded = config::load(&sources(Some(&file), flags)).unwrap();
    assert_eq!(loaded.config.name, "from-flag");
    assert_eq!(loaded.config.broker.address, "10.1.2.3:1999");
    assert!(!loaded.config.safety.auto_hv);
    assert_eq!(loaded.source_of("name"), "command line");
    assert_eq!(
        loaded.source_of("broker.address"),
        file.display().to_string()
    );
    assert_eq!(loaded.source_of("broker.keep_alive_s"), "default");
    let settings = Settings::from_loaded(&loaded).unwrap();
    assert!(settings
        .bus
        .payload_limits
        .contains(&("microdrop/x/#".to_owned(), 4096)));
    assert!(!settings.behaviour.auto_hv);
}

#[test]
fn bad_values_name_the_file_the_key_the_value_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[safety]\nfailsafe_timeout_ms = 30\n",
            "safety.failsafe_timeout_ms",
            "30",
            "1000 to 60000",
        ),
        (
            "[safety]\nauto_hv = \"yes\"\n",
            "safety.auto_hv",
            "\"yes\"",
            "boolean",
        ),
        (
            "[broker]\naddress = \"nohost\"\n",
            "broker.address",
            "\"nohost\"",
            "HOST:PORT",
        ),
        (
            "[broker]\nadress = \"x:1\"\n",
            "broker.adress",
            "\"x:1\"",
            "address",
        ),
        (
            "[limits]\nmax_in_flight = 0\n",
            "limits.max_in_flight",
            "0",
            "1 to 65536",
        ),
        (
            "[limits.payload]\n\"a/#/b\" = 10\n",
            "limits.payload",
            "10",
            "MQTT filter",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "log.format",
            "\"xml\"",
            "text, json",
        ),
        (
            "[board]\nport = \"what\"\n",
            "board.port",
            "\"what\"",
            "uuid:",
        ),
        ("name = \"a/b\"\n", "name", "\"a/b\"", "without `/`"),
        (
            "[view]\nlisten = \"here\"\n",
            "view.listen",
            "\"here\"",
            "PORT",
        ),
    ];
    for (toml, key, value, allowed) in cases {
        let file = write(&dir, toml);
        let error = config::load(&sources(Some(&file), Vec::new()))
            .err()
            .unwrap_or_else(|| panic!("{toml} was taken"));
        let message = error.to_string();
        assert!(
            matches!(error, ConfigError::Invalid { .. }),
            "{toml}: {message}"
        );
        for part in [file.display().to_string().as_str(), key, value, allowed] {
            assert!(
                message.contains(part),
                "{toml}: `{part}` missing in: {message}"
            );
        }
    }
    let missing = config::load(&sources(Some(&dir.path().join("none.toml")), Vec::new()));
    assert!(matches!(missing, Err(ConfigError::File { .. })));
}

#[test]
fn the_environment_sits_between_the_file_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "name = \"file\"\n[broker]\naddress = \"10.0.0.1:1\"\nkeep_alive_s = 7\n",
    );
    let file = file.display().to_string();
    let env = [
        ("DROPBOT_BROKER__ADDRESS", "10.0.0.2:2"),
        ("DROPBOT_NAME", "env"),
        // Not ours (the launcher's own): left alone, not an error.
        ("DROPBOT_PLUGIN_ARGS", "--anything"),
    ];
    let out = binary(
        dir.path(),
        &["--print", "--config", &file, "--name", "flag"],
        &env,
    );
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("name = \"flag\""), "{printed}");
    assert!(printed.contains("address = \"10.0.0.2:2\""), "{printed}");
    assert!(printed.contains("keep_alive_s = 7"), "{printed}");
    assert!(printed.contains("name: from command line"), "{printed}");
    assert!(
        printed.contains("broker.address: from environment variable DROPBOT_BROKER__ADDRESS"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("broker.keep_alive_s: from {file}")),
        "{printed}"
    );

    let out = binary(
        dir.path(),
        &[],
        &[("DROPBOT_SAFETY__APPLY_TIMEOUT_MS", "5")],
    );
    let printed = text(&out);
    assert!(!out.status.success());
    assert!(
        printed.contains("environment variable DROPBOT_SAFETY__APPLY_TIMEOUT_MS")
            && printed.contains("`safety.apply_timeout_ms` = 5")
            && printed.contains("100 to 600000"),
        "{printed}"
    );
}

#[test]
fn the_file_is_found_on_the_search_path_and_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("dropbot-plugin");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), "name = \"from-home\"\n").unwrap();
    let out = binary(dir.path(), &["--print"], &[]);
    assert!(
        text(&out).contains("name = \"from-home\""),
        "{}",
        text(&out)
    );
    // ./dropbot-plugin.toml comes first.
    std::fs::write(
        dir.path().join("dropbot-plugin.toml"),
        "name = \"from-cwd\"\n",
    )
    .unwrap();
    let out = binary(dir.path(), &["--print"], &[]);
    assert!(text(&out).contains("name = \"from-cwd\""), "{}", text(&out));
    // DROPBOT_CONFIG names one; a named file that is missing is an error.
    let named = dir.path().join("named.toml");
    std::fs::write(&named, "name = \"named\"\n").unwrap();
    let named = named.display().to_string();
    let out = binary(dir.path(), &["--print"], &[("DROPBOT_CONFIG", &named)]);
    assert!(text(&out).contains("name = \"named\""), "{}", text(&out));
    let out = binary(dir.path(), &[], &[("DROPBOT_CONFIG", "/nonexistent.toml")]);
    assert!(!out.status.success() && text(&out).contains("/nonexistent.toml"));
}

#[test]
fn print_hides_the_password_wherever_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-Pa55word";
    let file = write(
        &dir,
        &format!("[broker]\nusername = \"lab\"\npassword = \"{secret}\"\n"),
    );
    let file = file.display().to_string();
    for (args, env) in [
        (vec!["--print", "--config", file.as_str()], vec![]),
        (
            vec!["--print", "--username", "lab"],
            vec![("DROPBOT_BROKER__PASSWORD", secret)],
        ),
        (
            vec!["--print", "--username", "lab"],
            vec![("DROPBOT_MQTT_PASSWORD", secret)],
        ),
        (
            vec!["--print", "--username", "lab", "--password", secret],
            vec![],
        ),
    ] {
        let out = binary(dir.path(), &args, &env);
        let printed = text(&out);
        assert!(out.status.success(), "{printed}");
        assert!(printed.contains("password = \"<hidden>\""), "{printed}");
        assert!(!printed.contains(secret), "{printed}");
    }
    // A bad password setting does not show the password either.
    let out = binary(dir.path(), &[], &[("DROPBOT_BROKER__PASSWORD", secret)]);
    let printed = text(&out);
    assert!(!out.status.success(), "a password without a user name");
    assert!(
        printed.contains("broker.password") && !printed.contains(secret),
        "{printed}"
    );
}
