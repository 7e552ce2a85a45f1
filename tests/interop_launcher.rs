//! MicroDrop 3 starts its process plugins through its launcher, yac: in the plugin's package
//! folder it runs `source activate ./yac_environment && <package.json main>` (sci-bots/yac
//! `packages/exec/index.js`), and stops the process by its id. This test runs the shipped wrapper
//! package (`microdrop/`) exactly that way, on MicroDrop's broker (mosca), and sees the plugin
//! come up, answer, and go offline when stopped.
//!
//! Stand-ins, for what a MicroDrop installation has: the package is copied as npm installs it;
//! the binary sits in its `bin/` (`cargo install --root <folder>`); `yac install` made an empty
//! conda environment (`yac_environment/conda-meta`); conda's `activate` is a small script that
//! does what matters here (refuses a folder that is not an environment, puts its `bin` on PATH).
//! yac's command is written for a shell with `source` (bash, macOS's /bin/sh); Debian's /bin/sh
//! (dash) has none, so there yac cannot start any plugin (see the README).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dropbot_testkit::{BrokerKind, TestBroker, TestClient};
use serde_json::{json, Value};

/// conda's `activate`, as far as yac's command needs it.
const ACTIVATE: &str = r#"# Stand-in for conda's activate script (sourced).
prefix=${1:-}
if [ ! -d "$prefix/conda-meta" ]; then
    echo "Could not find conda environment: $prefix" >&2
    return 1
fi
PATH="$(cd "$prefix" && pwd)/bin:$PATH"
export PATH
"#;

/// Kills the launched process group when the test ends, however it ends.
struct Launched(Child);

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = signal_group(&self.0, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

fn signal_group(child: &Child, signal: i32) -> std::io::Result<()> {
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) on the process group our own child leads.
    if unsafe { libc::kill(-pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The wrapper package installed in `dir` as MicroDrop's installation would have it.
fn install(dir: &Path) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("microdrop");
    for entry in fs::read_dir(&source).expect("the wrapper package") {
        let entry = entry.expect("a file");
        fs::copy(entry.path(), dir.join(entry.file_name())).expect("copied");
    }
    fs::create_dir(dir.join("bin")).expect("bin");
    symlink(
        env!("CARGO_BIN_EXE_dropbot-plugin"),
        dir.join("bin/dropbot-plugin"),
    )
    .expect("link");
    let env = dir.join("yac_environment/conda-meta");
    fs::create_dir_all(&env).expect("environment");
    fs::write(env.join("history"), "").expect("history");
    let conda = dir.join("condabin");
    fs::create_dir(&conda).expect("condabin");
    fs::write(conda.join("activate"), ACTIVATE).expect("activate");
    fs::set_permissions(conda.join("activate"), fs::Permissions::from_mode(0o755)).expect("mode");
    let package: Value =
        serde_json::from_slice(&fs::read(dir.join("package.json")).expect("package.json"))
            .expect("package.json is JSON");
    let keywords = package["keywords"].as_array().cloned().unwrap_or_default();
    assert!(
        keywords.contains(&json!("yac-project")) && keywords.contains(&json!("microdrop")),
        "yac tracks and MicroDrop lists only packages with these keywords: {package}"
    );
    assert!(
        dir.join("environment.yml").is_file(),
        "yac tracks only with environment.yml"
    );
    package["main"].as_str().expect("a main").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_launcher_starts_the_plugin_from_the_wrapper_package() {
    let broker = TestBroker::start(BrokerKind::Mosca).expect("mosca starts");
    let dir = tempfile::tempdir().expect("a temporary folder");
    let main = install(dir.path());
    let path = format!(
        "{}:{}",
        dir.path().join("condabin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!("source activate ./yac_environment && {main}"))
        .current_dir(dir.path())
        .env("PATH", path)
        .env(
            "DROPBOT_PLUGIN_BROKER",
            format!("127.0.0.1:{}", broker.port()),
        )
        .env("DROPBOT_PLUGIN_ARGS", "--simulate --sim-timing fast")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let launched = Launched(child);

    let mut ui = TestClient::connect(broker.host(), broker.port())
        .await
        .expect("a client");
    ui.set_timeout(Duration::from_secs(20));
    let status = ui
        .wait_retained_where("microdrop/dropbot/state/status", |s| {
            s["bus"] == "online" && s["board"] == "connected"
        })
        .await
        .expect("the plugin comes up with its (simulated) board");
    assert_eq!(status["bus"], "online");
    let pong = ui
        .trigger("dropbot", "ping", &json!({}))
        .await
        .expect("a reply");
    assert_eq!(pong.response, json!("pong"));

    // yac stops a plugin by its process id.
    signal_group(&launched.0, libc::SIGTERM).expect("signalled");
    let status = ui
        .wait_retained_where("microdrop/dropbot/state/status", |s| s["bus"] == "offline")
        .await
        .expect("the plugin says it went offline");
    assert_eq!(status["bus"], "offline");
}
