//! Shared pieces of the fault suite (`tests/faults_*.rs`): the short/full switch, the plugin
//! binary as a separate process next to a simulated board and a private broker, what `/proc`
//! says about that process, and polling with generous deadlines.
//!
//! Every file of the suite includes this module; not each uses all of it.
#![allow(dead_code)]

pub mod mqtt;
pub mod payloads;
pub mod streams;
pub mod world;

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

/// Set to `1` to run the full forms (the counts of the issue, minutes each); unset, the short
/// forms run (CI).
pub const FULL_ENV: &str = "DROPBOT_FAULTS_FULL";

/// Whether the full forms run.
pub fn full() -> bool {
    std::env::var(FULL_ENV).is_ok_and(|v| v.trim() == "1")
}

/// `short` in CI, `full` with [`FULL_ENV`].
pub fn scale(short: usize, full_count: usize) -> usize {
    if full() {
        full_count
    } else {
        short
    }
}

/// A figure for `docs/reliability.md`: one greppable line on stderr (run with `--nocapture`).
pub fn figure(name: &str, value: impl std::fmt::Display) {
    eprintln!("FIGURE {name}: {value}");
}

/// What the kernel says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// Resident memory now, KiB.
    pub rss_kb: u64,
    /// Peak resident memory so far, KiB (`VmHWM`).
    pub peak_kb: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors (entries of `/proc/<pid>/fd`).
    pub fds: u64,
}

/// Reads [`ProcStats`] of `pid` from `/proc`.
pub fn proc_stats(pid: u32) -> io::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok(ProcStats {
        rss_kb: field("VmRSS:")?,
        peak_kb: field("VmHWM:")?,
        threads: field("Threads:")?,
        fds,
    })
}

/// Stops an in-process plugin as SIGTERM would, and checks that it ended cleanly (board safe,
/// engine and supervisor done) after whatever the test put it through.
pub async fn stop_cleanly(h: &mut dropbot_testkit::PluginHarness) {
    let outcome = h.stop().await.expect("the plugin stops within 10 s");
    assert!(
        outcome.is_ok(),
        "the plugin did not end cleanly: {outcome:?}"
    );
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
}

/// Polls `check` every 20 ms until it gives a value; panics with `what` (and the last state
/// `check` describes) after `timeout`.
pub async fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `attempt` (each bounded by its own timeout) until it gives `Some`, for at most
/// `timeout`; the value, or a panic naming `what`.
pub async fn until_async<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = attempt().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
