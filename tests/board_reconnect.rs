//! Hot-unplug and reconnect against the simulator over real ptys: the link notices an unplug,
//! the supervisor announces every transition, finds the board again when its link path comes
//! back, puts it in a safe state before announcing it, never re-enables anything, and leaves
//! it safe on shutdown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dropbot_plugin::board::{
    BoardStatus, BoardSupervisor, CloseReason, DiscoveryError, DropBot, LinkOptions, PortInfo,
    PortLister, Probe, Selector, SupervisorHandle, SupervisorOptions,
};
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing};
use firmware_protocol::TableSet;
use tokio::sync::broadcast;

/// No USB ports: the supervisor is given a path.
struct NoPorts;

impl PortLister for NoPorts {
    fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
        Ok(Vec::new())
    }
}

fn sim_options() -> SimOptions {
    SimOptions {
        timing: Timing::Fast,
        ..SimOptions::default()
    }
}

fn supervise(path: &str) -> SupervisorHandle {
    let probe = Probe {
        link: LinkOptions {
            request_timeout: Duration::from_millis(300),
            ..LinkOptions::default()
        },
        ..Probe::new(Arc::new(TableSet::builtin()))
    };
    let mut options = SupervisorOptions::new(Selector::Path(path.into()), Arc::new(NoPorts), probe);
    options.backoff_max = Duration::from_millis(400);
    BoardSupervisor::spawn(options)
}

/// The next transition matching `want`, skipping others (e.g. repeated `Searching`).
async fn next(
    rx: &mut broadcast::Receiver<BoardStatus>,
    want: impl Fn(&BoardStatus) -> bool,
) -> BoardStatus {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let status = rx.recv().await.expect("supervisor alive");
            if want(&status) {
                return status;
            }
        }
    })
    .await
    .expect("transition within 10 s")
}

fn connected(s: &BoardStatus) -> bool {
    matches!(s, BoardStatus::Connected(_))
}

async fn energise(sim: &SimHandle) {
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .unwrap();
    bot.set_channels(&BTreeSet::from([1, 2, 3])).await.unwrap();
    bot.set_hv_output_enabled(true).await.unwrap();
    bot.disconnect().await;
    let snap = sim.snapshot();
    assert!(snap.hv_enabled && !snap.actuated.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_is_reported_and_requests_fail_fast() {
    let sim = sim::spawn_pty(sim_options()).await.unwrap();
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .unwrap();
    let closed = tokio::spawn({
        let bot = bot.clone();
        async move { bot.closed().await }
    });
    sim.unplug().await;
    let reason = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("closed is signalled")
        .unwrap();
    assert!(matches!(reason, CloseReason::Gone(_)), "{reason:?}");
    let err = bot.measure_temperature().await.unwrap_err();
    assert!(err.is_gone(), "{err:?}");
    assert!(err.to_string().contains("gone"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_is_made_safe_before_it_is_announced() {
    let sim = sim::spawn_pty(sim_options()).await.unwrap();
    energise(&sim).await;
    let sup = supervise(&sim.path().display().to_string());
    let mut transitions = sup.transitions();
    let mut status = sup.status();
    let info = match next(&mut transitions, connected).await {
        BoardStatus::Connected(info) => info,
        other => panic!("{other:?}"),
    };
    assert_eq!(info.channel_count, 120);
    assert!(matches!(
        *status.borrow_and_update(),
        BoardStatus::Connected(_)
    ));
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    let bot = sup.board().expect("board while connected");
    bot.set_channels(&BTreeSet::from([7])).await.unwrap();
    bot.set_hv_output_enabled(true).await.unwrap();
    // Shutdown leaves the board safe.
    sup.shutdown().await.unwrap();
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    assert!(matches!(*status.borrow_and_update(), BoardStatus::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_and_replug_at_the_same_link_path() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("dropbot");
    let sim = sim::spawn_at_link(sim_options(), &link).await.unwrap();
    let sup = supervise(&link.display().to_string());
    let mut transitions = sup.transitions();
    next(&mut transitions, connected).await;
    let old = sup.board().unwrap();
    old.set_channels(&BTreeSet::from([4, 5])).await.unwrap();

    sim.unplug().await;
    match next(&mut transitions, |s| !connected(s)).await {
        BoardStatus::Disconnected { reason } => assert!(!reason.is_empty()),
        other => panic!("expected Disconnected first, got {other:?}"),
    }
    assert!(sup.board().is_none());
    assert!(old.channels().await.unwrap_err().is_gone());
    // Searching while the link path is missing.
    match next(&mut transitions, |s| {
        matches!(s, BoardStatus::Searching { .. })
    })
    .await
    {
        BoardStatus::Searching { last_error, .. } => assert!(last_error.is_some()),
        other => panic!("{other:?}"),
    }

    sim.replug().await.unwrap();
    next(&mut transitions, connected).await;
    let new = sup.board().expect("reconnected");
    assert_eq!(new.info().uuid, old.info().uuid);
    // Nothing was re-enabled by itself.
    assert!(new.channels().await.unwrap().is_empty());
    assert_eq!(new.state().await.unwrap().hv_output_enabled, Some(false));
    sup.shutdown().await.unwrap();
}
