//! The MCU watchdog as the firmware drives it (dropbot.py `src/dropbot.ino` `setup`/`loop`,
//! `src/Node.h` `watchdog_*`): on at boot and refreshed by the main loop; with the loop's
//! refresh off and no `watchdog_refresh` in time, or a command longer than the timeout, the MCU
//! resets: HV and channels off, state back to its defaults, and the USB device re-enumerates.

use std::time::Duration;

use dropbot_plugin::sim::{SimHandle, SimOptions, Timing, TraceEntry};
use dropbot_testkit::sim_host::{connect, fast_virtual, SimHost, SimHostError};
use firmware_protocol::commands::{
    DetectShorts, SaveConfig, UpdateConfig, WatchdogAutoRefresh, WatchdogDisable, WatchdogEnable,
    WatchdogRefresh,
};
use firmware_protocol::{Config, State};
use prost::Message;

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(10);

fn realistic_virtual() -> SimOptions {
    SimOptions {
        timing: Timing::Realistic,
        virtual_clock: true,
        ..SimOptions::default()
    }
}

fn resets(sim: &SimHandle) -> Vec<String> {
    sim.trace()
        .into_iter()
        .filter_map(|r| match r.entry {
            TraceEntry::Reset { cause } => Some(cause),
            _ => None,
        })
        .collect()
}

/// Wait until the board is back as a new pty after a reset, and open it.
async fn reopen(
    sim: &SimHandle,
    mut changes: tokio::sync::watch::Receiver<std::path::PathBuf>,
) -> Result<SimHost, SimHostError> {
    tokio::time::timeout(WAIT, changes.changed())
        .await
        .map_err(|_| SimHostError::Timeout(WAIT, "the USB device to come back"))?
        .map_err(|_| SimHostError::Eof)?;
    SimHost::open(&sim.path()).await
}

#[tokio::test]
async fn on_at_boot_and_refreshed_by_the_main_loop() -> R {
    let (sim, mut host) = connect(realistic_virtual()).await?;
    let snap = sim.snapshot();
    assert_eq!(snap.mcu_watchdog, Some(Duration::from_secs(10)));
    assert!(snap.watchdog_auto_refresh);
    sim.advance(60_000 * MS);
    assert!(resets(&sim).is_empty());
    assert!(
        !host.call(WatchdogAutoRefresh { value: true }).await?,
        "unchanged"
    );
    assert_eq!(
        host.call(WatchdogEnable {
            prescaler: 16,
            timeout: 500
        })
        .await?,
        -1
    );
    assert_eq!(sim.snapshot().mcu_watchdog, Some(Duration::from_secs(10)));
    host.call(WatchdogDisable {}).await?;
    let snap = sim.snapshot();
    assert_eq!(
        (snap.mcu_watchdog, snap.watchdog_auto_refresh),
        (None, false)
    );
    sim.shutdown().await;
    Ok(())
}

/// The host as the failsafe: auto-refresh off, `watchdog_refresh` in time keeps the board
/// alive; silence resets it, which turns HV and channels off.
#[tokio::test]
async fn without_a_refresh_in_time_the_mcu_resets_and_re_enumerates() -> R {
    let (sim, mut host) = connect(realistic_virtual()).await?;
    let on = State {
        hv_output_enabled: Some(true),
        ..State::default()
    };
    assert!(host.update_state(on).await?);
    assert!(host.set_channels(&[3, 4]).await?);
    assert_eq!(
        host.call(WatchdogEnable {
            prescaler: 0,
            timeout: 500
        })
        .await?,
        0
    );
    assert!(host.call(WatchdogAutoRefresh { value: false }).await?);
    sim.advance(400 * MS);
    host.call(WatchdogRefresh {}).await?;
    sim.advance(400 * MS);
    assert!(resets(&sim).is_empty(), "refreshed in time");
    assert!(sim.snapshot().hv_on);
    let changes = sim.path_changes();
    sim.advance(200 * MS);
    let causes = resets(&sim);
    assert_eq!(causes.len(), 1);
    assert!(causes[0].contains("watchdog"), "{causes:?}");
    let snap = sim.snapshot();
    assert!(!snap.hv_on && snap.actuated.is_empty(), "{snap:?}");
    // The old port is gone; the board is back as a new device, freshly booted.
    match host.read_raw(WAIT).await {
        Ok(bytes) => assert!(bytes.is_empty(), "EOF expected, got {bytes:?}"),
        Err(SimHostError::Io(_)) => {}
        Err(e) => panic!("EOF or an I/O error expected, got {e}"),
    }
    let mut host = reopen(&sim, changes).await?;
    assert_eq!(host.state().await?.hv_output_enabled, Some(false));
    assert!(host.channels().await?.is_empty());
    let snap = sim.snapshot();
    assert_eq!(snap.mcu_watchdog, Some(Duration::from_secs(10)));
    assert!(snap.watchdog_auto_refresh, "setup() turns it back on");
    sim.shutdown().await;
    Ok(())
}

/// Auto-refresh happens between commands only: a command longer than the timeout (here
/// `detect_shorts`, ~1.2 s) resets the MCU before it answers.
#[tokio::test]
async fn a_command_longer_than_the_timeout_resets_the_board() -> R {
    let (sim, mut host) = connect(realistic_virtual()).await?;
    assert_eq!(
        host.call(WatchdogEnable {
            prescaler: 0,
            timeout: 500
        })
        .await?,
        0
    );
    let changes = sim.path_changes();
    host.timeout = Duration::from_millis(300);
    let answered = host.call(DetectShorts { delay_ms: 5 }).await;
    assert!(answered.is_err(), "no reply: {answered:?}");
    let mut host = reopen(&sim, changes).await?;
    assert_eq!(resets(&sim).len(), 1);
    assert_eq!(host.state().await?.voltage, Some(100.0));
    sim.shutdown().await;
    Ok(())
}

/// The Blue-Ocean fork enables it at boot only while config field 62 says so.
#[tokio::test]
async fn the_fork_boots_without_it_when_the_config_says_so() -> R {
    let opts = SimOptions {
        firmware_id: "dropbot::1.74.3".into(),
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    let off = Config {
        watchdog_enabled: Some(false),
        ..Config::default()
    };
    assert_eq!(
        host.call(UpdateConfig {
            serialized: off.encode_to_vec()
        })
        .await?,
        1
    );
    host.call(SaveConfig {}).await?;
    assert_eq!(
        sim.snapshot().mcu_watchdog,
        Some(Duration::from_secs(10)),
        "until reboot"
    );
    let path = sim.reboot().await?;
    let mut host = SimHost::open(&path).await?;
    assert_eq!(host.state().await?.voltage, Some(100.0));
    assert_eq!(sim.snapshot().mcu_watchdog, None);
    sim.shutdown().await;
    Ok(())
}
