//! `check`, the bring-up report, against the simulator through a real pty: what it reports,
//! that it turns nothing on unless asked (read in the simulator's trace, not in the report),
//! and that `--actuate` drives exactly one channel and leaves everything off. Also the
//! binary's `check` subcommand, end to end.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use dropbot_plugin::board::check::{check, CheckOptions, Item};
use dropbot_plugin::board::{DropBot, LinkOptions};
use dropbot_plugin::sim::trace::TraceEntry;
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing};
use firmware_protocol::TableSet;

/// Commands that change the board: none may reach it during a plain check.
const WRITES: [&str; 6] = [
    "set_state_of_channels",
    "update_state",
    "set_disabled_channels_mask",
    "turn_off_all_channels",
    "detect_shorts",
    "halt",
];

async fn board() -> (SimHandle, DropBot) {
    let opts = SimOptions {
        timing: Timing::Fast,
        ..SimOptions::default()
    };
    let sim = sim::spawn_pty(opts).await.expect("simulator");
    let path = sim.path().display().to_string();
    let bot = DropBot::open(&path, &TableSet::builtin(), LinkOptions::default())
        .await
        .expect("connect");
    (sim, bot)
}

fn commands_received(sim: &SimHandle) -> Vec<String> {
    sim.trace()
        .into_iter()
        .filter_map(|r| match r.entry {
            TraceEntry::Rx { command, .. } => command,
            _ => None,
        })
        .collect()
}

fn hv_went_on(sim: &SimHandle) -> bool {
    sim.trace()
        .iter()
        .any(|r| matches!(r.entry, TraceEntry::Hv { enabled: true, .. }))
}

#[tokio::test]
async fn reports_the_board_and_changes_nothing() {
    let (sim, bot) = board().await;
    let options = CheckOptions {
        samples: 5,
        ..CheckOptions::default()
    };
    let report = check(&bot, &options).await;
    let info = bot.info();
    assert_eq!(report.identity, info.identity);
    assert_eq!(report.uuid, info.uuid);
    assert_eq!(report.channel_count, 120);
    let table = TableSet::builtin();
    let expected = table.for_version(&info.firmware_version).expect("a table");
    assert_eq!(report.table, expected.description());
    assert_eq!(report.chip_inserted, Item::Ok(true));
    assert!(matches!(report.temperature_c, Item::Ok(t) if t.is_finite()));
    assert_eq!(report.disabled_channels, Item::Ok(vec![]));
    assert_eq!(report.actuated_channels, Item::Ok(vec![]));
    assert!(matches!(report.capacitance_f, Item::Ok(_)));
    assert!(!report.hv_on_at_start);
    // "No power" exactly when HV is off and the reading is under 5 V.
    let volts = *report.high_voltage_v.ok().expect("measured");
    assert_eq!(
        report.power.starts_with("no power"),
        volts < 5.0,
        "{report:?}"
    );
    assert_eq!(report.timings.len(), 2);
    for t in &report.timings {
        assert_eq!(t.samples, 5, "{t:?}");
        assert!(t.p50_us <= t.max_us && t.max_us > 0, "{t:?}");
        assert!(t.failed.is_none());
    }
    assert!(report.actuation.is_none());
    let received = commands_received(&sim);
    assert!(received.iter().any(|c| c == "digital_read"), "{received:?}");
    for write in WRITES {
        assert!(!received.iter().any(|c| c == write), "check sent {write}");
    }
    assert!(!hv_went_on(&sim));
    let text = report.to_text();
    for line in [
        "identity",
        "command table",
        "chip",
        "disabled channels",
        "round trip microseconds",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert_eq!(json["channel_count"], 120);
    assert_eq!(json["chip_inserted"]["ok"], true);
    bot.disconnect().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn lists_the_disabled_channels() {
    let (sim, bot) = board().await;
    bot.set_disabled_channels(&BTreeSet::from([5, 17]))
        .await
        .expect("mask set");
    let report = check(&bot, &CheckOptions::default()).await;
    assert_eq!(report.disabled_channels, Item::Ok(vec![5, 17]));
    assert!(report.to_text().contains("5, 17 (2)"));
    bot.disconnect().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn actuate_drives_one_channel_then_everything_off() {
    let (sim, bot) = board().await;
    let options = CheckOptions {
        samples: 2,
        actuate: Some(7),
        actuate_for: Duration::from_millis(50),
    };
    let report = check(&bot, &options).await;
    let run = report.actuation.expect("actuated");
    assert_eq!(run.error, None);
    assert_eq!(run.all_off_after, Item::Ok(true));
    assert!(
        matches!(run.high_voltage_v, Item::Ok(v) if v > 5.0),
        "{run:?}"
    );
    // The board's own record: channel 7 alone was driven with HV on, and both went off.
    let trace = sim.trace();
    let driven: Vec<&Vec<u16>> = trace
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Channels { actuated, .. } if !actuated.is_empty() => Some(actuated),
            _ => None,
        })
        .collect();
    assert_eq!(driven, [&vec![7]]);
    assert!(hv_went_on(&sim));
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    bot.disconnect().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn actuate_refuses_a_disabled_or_missing_channel_without_hv() {
    let (sim, bot) = board().await;
    bot.set_disabled_channels(&BTreeSet::from([9]))
        .await
        .expect("mask set");
    for (channel, says) in [(9, "disabled"), (500, "out of range")] {
        let options = CheckOptions {
            samples: 1,
            actuate: Some(channel),
            actuate_for: Duration::from_millis(10),
        };
        let run = check(&bot, &options).await.actuation.expect("tried");
        let error = run.error.expect("refused");
        assert!(error.contains(says), "{channel}: {error}");
        assert_eq!(run.all_off_after, Item::Ok(true));
    }
    assert!(!hv_went_on(&sim));
    bot.disconnect().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_subcommand_prints_a_report_and_says_what_was_wrong() {
    let opts = SimOptions {
        timing: Timing::Fast,
        ..SimOptions::default()
    };
    let sim = sim::spawn_pty(opts).await.expect("simulator");
    let path = sim.path().display().to_string();
    let binary = env!("CARGO_BIN_EXE_dropbot-plugin");
    let run = |args: &[&str]| {
        let mut command = Command::new(binary);
        command
            .args(["check", "--port", &path, "--samples", "3"])
            .args(args);
        tokio::task::spawn_blocking(move || command.output().expect("runs"))
    };
    let out = run(&["--json"]).await.expect("joined");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json["port"], path.as_str());
    assert_eq!(json["channel_count"], 120);
    assert_eq!(json["timings"][0]["samples"], 3);
    let out = run(&["--actuate", "500"]).await.expect("joined");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--actuate 500") && stderr.contains("out of range"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("all off after") && stdout.contains("yes"),
        "{stdout}"
    );
    sim.shutdown().await;
}
