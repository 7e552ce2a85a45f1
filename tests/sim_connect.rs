//! What a host relies on at connection, in the simulator and in the board layer's handshake:
//! switching boards scanned only at boot (and by `initialize_switching_boards`), the supply
//! read through `high_voltage` while HV is off ("no power" under 5 V), the chip interlock pin,
//! the board's wall clock (dropbot.py `proxy_py2.py` `ProxyMixin.__init__`, `monitor.py`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dropbot_plugin::board::{DropBot, LinkOptions};
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing};
use dropbot_testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::commands::{
    DetectShorts, DigitalRead, HighVoltage, InitializeSwitchingBoards, NumberOfChannels,
    SetStateOfChannels, SyncTime, WallTime,
};
use firmware_protocol::{State, TableSet};

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);

fn hv_on() -> State {
    State {
        hv_output_enabled: Some(true),
        ..State::default()
    }
}

/// `Node.cpp`: the boards are scanned in `begin()`; boards that were not answering then stay
/// unknown (0 channels, and `detect_shorts` counts every untested channel as shorted) until
/// `initialize_switching_boards()` scans again.
#[tokio::test]
async fn late_switching_boards_report_no_channels_until_rescanned() -> R {
    let opts = SimOptions {
        switching_boards_late: true,
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(NumberOfChannels {}).await?, 0);
    assert_eq!(host.state().await?.channel_count, Some(0));
    let fifteen = SetStateOfChannels {
        channel_states: vec![1; 15],
    };
    assert!(
        !host.call(fifteen.clone()).await?,
        "0 channels: 0 bytes expected"
    );
    let none = SetStateOfChannels {
        channel_states: vec![],
    };
    assert!(host.call(none).await?);
    assert_eq!(host.call(DetectShorts { delay_ms: 5 }).await?.len(), 120);
    assert_eq!(host.call(InitializeSwitchingBoards {}).await?, 120);
    assert_eq!(host.call(NumberOfChannels {}).await?, 120);
    assert_eq!(host.state().await?.channel_count, Some(120));
    assert!(host.call(fifteen).await?);
    sim.shutdown().await;
    Ok(())
}

/// `analog.cpp` `high_voltage`: with the converter off the supply passes through its diode;
/// with no supply it reads 0 and HV never comes up.
#[tokio::test]
async fn high_voltage_reads_the_supply_while_off() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let off = host.call(HighVoltage {}).await?;
    assert!((5.0..6.5).contains(&off), "12 V supply: {off}");
    sim.shutdown().await;
    let no_power = SimOptions {
        supply_v: 0.0,
        ..fast_virtual()
    };
    let (sim, mut host) = connect(no_power).await?;
    assert_eq!(host.call(HighVoltage {}).await?, 0.0);
    assert!(host.update_state(hv_on()).await?);
    assert_eq!(host.call(HighVoltage {}).await?, 0.0, "nothing to boost");
    assert!(!sim.snapshot().hv_on);
    sim.shutdown().await;
    Ok(())
}

/// The interlock pin (22) is low while a chip is in, at once (the events wait for the
/// debounce); the converter's shutdown pin (10) is high while HV is off.
#[tokio::test]
async fn pins_show_the_chip_and_the_converter() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert_eq!(host.call(DigitalRead { pin: 22 }).await?, 0);
    assert_eq!(host.call(DigitalRead { pin: 10 }).await?, 1);
    sim.insert_chip(false);
    assert_eq!(host.call(DigitalRead { pin: 22 }).await?, 1);
    sim.insert_chip(true);
    assert!(host.update_state(hv_on()).await?);
    assert_eq!(host.call(DigitalRead { pin: 10 }).await?, 0);
    sim.shutdown().await;
    Ok(())
}

/// `Time.cpp`: `sync_time` stores the wall time and the board's `millis()`; `wall_time` adds
/// the seconds since.
#[tokio::test]
async fn sync_time_sets_the_boards_wall_clock() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    sim.advance(2000 * MS);
    let since_boot = host.call(WallTime {}).await?;
    assert!((since_boot - 2.0).abs() < 0.01, "{since_boot}");
    let ms = host.call(SyncTime { wall_time: 1.8e9 }).await?;
    assert_eq!(ms, 2000);
    sim.advance(500 * MS);
    let wall = host.call(WallTime {}).await?;
    assert!((wall - (1.8e9 + 0.5)).abs() < 0.01, "{wall}");
    sim.shutdown().await;
    Ok(())
}

async fn open(sim: &SimHandle) -> DropBot {
    let path = sim.path().display().to_string();
    DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .expect("connect")
}

/// The board layer's handshake does what the vendor's driver does at connection.
#[tokio::test]
async fn the_handshake_rescans_reads_strings_power_chip_and_sets_the_clock() {
    let sim = sim::spawn_pty(SimOptions {
        timing: Timing::Fast,
        switching_boards_late: true,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    let bot = open(&sim).await;
    let info = bot.info();
    assert_eq!(info.channel_count, 120, "rescanned at connection");
    assert_eq!(info.state_at_connect.channel_count, Some(120));
    assert_eq!(info.build.package_name.as_deref(), Some("dropbot"));
    assert_eq!(info.build.display_name.as_deref(), Some("DropBot"));
    assert_eq!(info.build.manufacturer.as_deref(), Some("Sci-Bots Inc."));
    assert!(info
        .build
        .url
        .as_deref()
        .is_some_and(|u| u.contains("dropbot")));
    assert!(info.build.base_node_software_version.is_some());
    assert!(
        info.supply_voltage.is_some_and(|v| v > 5.0),
        "{:?}",
        info.supply_voltage
    );
    assert!(!info.no_power);
    assert_eq!(info.chip_inserted, Some(true));
    assert!(info.clock_set_at_ms.is_some());
    assert!(
        info.connect_warnings.is_empty(),
        "{:?}",
        info.connect_warnings
    );
    let host_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let board_now = bot.wall_time().await.expect("wall time");
    assert!(
        (board_now - host_now).abs() < 60.0,
        "{board_now} vs {host_now}"
    );
    bot.disconnect().await;
    sim.shutdown().await;
}

/// No power and no chip are facts to report, not connection errors.
#[tokio::test]
async fn the_handshake_reports_no_power_and_no_chip() {
    let sim = sim::spawn_pty(SimOptions {
        timing: Timing::Fast,
        supply_v: 0.0,
        chip_inserted: false,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    let bot = open(&sim).await;
    let info = bot.info();
    assert!(info.no_power);
    assert_eq!(info.supply_voltage, Some(0.0));
    assert_eq!(info.chip_inserted, Some(false));
    assert_eq!(info.channel_count, 120);
    bot.disconnect().await;
    sim.shutdown().await;
}
