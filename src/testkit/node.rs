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
        .join("tests/interop")
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
