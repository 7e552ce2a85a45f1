//! Node.js fixtures: the folders under `tests/interop/` that hold a committed `package.json` and
//! `package-lock.json` (MicroDrop's client library, MicroDrop's broker, the launcher wrapper),
//! installed with `npm ci` on first use.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The interop fixture folder `name` (`node`, `mosca`) of this source tree.
pub fn interop_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/interop")
        .join(name)
}

/// Fails with a message saying what to install unless `tool --version` runs.
pub fn require_tool(tool: &str) -> io::Result<()> {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "`{tool}` is needed by the interop tests and benches: install Node.js and npm \
             (e.g. `apt-get install nodejs npm`; `.ci/run` does)"
        ),
    ))
}

/// Serialises installs within this process (the file lock covers other processes).
static INSTALLING: Mutex<()> = Mutex::new(());

/// `npm ci` in `dir` from its committed lock file, unless an earlier run installed it already
/// (`node_modules/.package-lock.json` newer than `package-lock.json`). Safe to call from
/// concurrent tests and test binaries: installs are serialised by a lock on a file in `dir`.
pub fn npm_ci(dir: &Path) -> io::Result<()> {
    require_tool("node")?;
    require_tool("npm")?;
    let _in_process = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let lock = File::create(dir.join("node_modules.lock"))?;
    // SAFETY: flock on a descriptor we own for the duration of the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if installed(dir) {
        return Ok(());
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
    // The file lock is released when `lock` is dropped.
}

/// Whether `node_modules` matches the committed lock file (npm writes its own copy last).
fn installed(dir: &Path) -> bool {
    let modified = |p: PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    }
}

/// The summary a fixture script prints as the last JSON line of its standard output, with
/// its named checks (`{"checks": [{"check", "ok", "detail"}]}`).
#[derive(Debug, Clone)]
pub struct ScriptOutcome {
    /// The parsed summary.
    pub summary: serde_json::Value,
    /// Whether the script exited with status 0.
    pub success: bool,
    /// What it wrote on stderr.
    pub stderr: String,
}

impl ScriptOutcome {
    /// From a finished script's output; an error if it printed no JSON line.
    pub fn from_output(out: &std::process::Output) -> io::Result<ScriptOutcome> {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "no JSON summary; stdout:\n{stdout}\nstderr:\n{stderr}"
                ))
            })?;
        Ok(ScriptOutcome {
            summary,
            success: out.status.success(),
            stderr,
        })
    }

    /// The checks that did not pass.
    pub fn failed_checks(&self) -> Vec<serde_json::Value> {
        self.summary["checks"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["ok"] != true).cloned().collect())
            .unwrap_or_default()
    }

    /// Panics with everything known unless the script passed all its checks.
    pub fn assert_passed(&self) {
        let failed = self.failed_checks();
        assert!(
            failed.is_empty() && self.success,
            "failed checks: {failed:#?}\nsummary: {}\nstderr:\n{}",
            self.summary,
            self.stderr
        );
    }
}
