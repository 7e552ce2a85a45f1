//! The typed DropBot API against the simulator over a real pty: the handshake with the right
//! and wrong firmware ids, every call, checks before sending, refusals, events, a stalled
//! board and corrupted bytes.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::board::{BoardError, DropBot, LinkError, LinkOptions};
use dropbot_plugin::sim::DEFAULT_FIRMWARE_VERSION;
use dropbot_plugin::sim::{self, Faults, SimHandle, SimOptions, Timing};
use firmware_protocol::commands::UpdateConfig;
use firmware_protocol::events::{EVENT_CHANNELS_UPDATED, EVENT_ENABLE};
use firmware_protocol::{Command, Config, Event, State, TableSet};

const UUID: [u8; 16] = [
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
];

fn sim_options() -> SimOptions {
    SimOptions {
        timing: Timing::Fast,
        uuid: Some(UUID),
        ..SimOptions::default()
    }
}

fn link_options() -> LinkOptions {
    LinkOptions {
        request_timeout: Duration::from_millis(300),
        ..LinkOptions::default()
    }
}

async fn open(sim: &SimHandle, options: LinkOptions) -> Result<DropBot, BoardError> {
    let path = sim.path().display().to_string();
    DropBot::open(&path, &TableSet::builtin(), options).await
}

async fn board() -> (SimHandle, DropBot) {
    let sim = sim::spawn_pty(sim_options()).await.expect("simulator");
    let bot = open(&sim, link_options()).await.expect("connect");
    (sim, bot)
}

#[tokio::test]
async fn handshake_reads_identity_versions_and_limits() {
    let (sim, bot) = board().await;
    let info = bot.info();
    assert_eq!(
        info.identity,
        format!("dropbot::{DEFAULT_FIRMWARE_VERSION}")
    );
    assert_eq!(info.firmware_version, DEFAULT_FIRMWARE_VERSION);
    assert_eq!(info.uuid, "12345678-9abc-def0-0102-030405060708");
    assert_eq!(info.channel_count, 120);
    assert!(!info.software_version.is_empty() && !info.hardware_version.is_empty());
    assert_eq!(info.config.max_voltage, Some(150.0));
    assert_eq!(info.state_at_connect.hv_output_enabled, Some(false));
    assert_eq!(
        info.port.as_deref(),
        Some(&*sim.path().display().to_string())
    );
    // The clock is synchronised: board time now is known and moves forward.
    let t0 = bot.board_time_now().expect("synchronised");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t1 = bot.sync_time().await.unwrap();
    assert!(t1 > t0, "{t0} -> {t1}");
}

#[tokio::test]
async fn a_device_that_is_not_a_dropbot_is_refused_by_name() {
    let sim = sim::spawn_pty(SimOptions {
        firmware_id: "blinky::2.0".into(),
        ..sim_options()
    })
    .await
    .unwrap();
    match open(&sim, link_options()).await {
        Err(BoardError::WrongFirmware { identity }) => assert_eq!(identity, "blinky::2.0"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_firmware_without_a_table_is_named_with_the_way_out() {
    let sim = sim::spawn_pty(sim_options()).await.unwrap();
    sim.set_faults(Faults {
        firmware_id: Some("dropbot::2.1.0".into()),
        ..Faults::default()
    });
    let err = open(&sim, link_options()).await.unwrap_err();
    assert!(matches!(err, BoardError::NoTable(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("2.1.0") && text.contains("--command-table"),
        "{text}"
    );
}

#[tokio::test]
async fn channels_round_trip_and_reach_the_board() {
    let (sim, bot) = board().await;
    let want = BTreeSet::from([0, 7, 8, 63, 119]);
    bot.set_channels(&want).await.unwrap();
    assert_eq!(bot.channels().await.unwrap(), want);
    assert_eq!(
        sim.snapshot().actuated,
        want.iter().copied().collect::<Vec<_>>()
    );
    let disabled = BTreeSet::from([3, 4]);
    bot.set_disabled_channels(&disabled).await.unwrap();
    assert_eq!(bot.disabled_channels().await.unwrap(), disabled);
    bot.all_off().await.unwrap();
    assert!(bot.channels().await.unwrap().is_empty());
    assert!(sim.snapshot().actuated.is_empty());
    // Out of range: refused here, nothing sent.
    let sent = bot.stats().requests;
    let err = bot.set_channels(&BTreeSet::from([120])).await.unwrap_err();
    assert!(matches!(err, BoardError::OutOfRange { .. }), "{err:?}");
    assert!(err.to_string().contains("0 to 119"), "{err}");
    assert!(bot.channel_capacitances(&[200]).await.is_err());
    assert_eq!(bot.stats().requests, sent);
}

#[tokio::test]
async fn state_voltage_frequency_and_hv() {
    let (sim, bot) = board().await;
    bot.set_voltage(90.0).await.unwrap();
    bot.set_frequency(5_000.0).await.unwrap();
    bot.set_hv_output_selected(true).await.unwrap();
    bot.set_hv_output_enabled(true).await.unwrap();
    let state = bot.state().await.unwrap();
    assert_eq!(state.voltage, Some(90.0));
    assert_eq!(state.frequency, Some(5_000.0));
    assert_eq!(state.hv_output_enabled, Some(true));
    let snap = sim.snapshot();
    assert!(snap.hv_enabled && (snap.voltage_target - 90.0).abs() < 1e-3);
    let measured = bot.high_voltage().await.unwrap();
    assert!(measured.is_finite() && measured >= 0.0, "{measured}");
    assert!(bot.min_waveform_voltage().await.unwrap() > 0.0);
    bot.update_state(&State {
        target_count: Some(3.0),
        ..State::default()
    })
    .await
    .unwrap();
    assert_eq!(bot.state().await.unwrap().target_count, Some(3.0));
    // Beyond the config's limits: refused before sending, naming field, value and range.
    let sent = bot.stats().requests;
    let err = bot.set_voltage(200.0).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("voltage") && text.contains("200") && text.contains("150"),
        "{text}"
    );
    assert!(bot.set_frequency(50.0).await.is_err());
    assert_eq!(bot.stats().requests, sent);
    bot.safe_state().await.unwrap();
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty());
}

#[tokio::test]
async fn the_board_saying_no_is_a_refusal() {
    let (_sim, bot) = board().await;
    // Lower the board's limit behind this handle's back (its cached config still says 150 V).
    let update = Config {
        max_voltage: Some(50.0),
        ..Config::default()
    };
    let payload = UpdateConfig {
        serialized: update.to_bytes(),
    }
    .encode(bot.table())
    .unwrap();
    let ok = bot
        .link()
        .request("update_config", &payload, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(ok, [1]);
    match bot.set_voltage(120.0).await {
        // The firmware answers "decoded" and skips the field; the read-back tells.
        Err(BoardError::Refused { command, detail }) => {
            assert_eq!(command, "update_state");
            assert!(detail.contains("voltage = 120"), "{detail}");
            assert!(detail.contains("kept 100"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn measurements_shorts_halt_and_watchdogs() {
    let (sim, bot) = board().await;
    sim.set_shorted(vec![5, 17]);
    assert!(bot.capacitance(0).await.unwrap().is_finite());
    assert!(bot.capacitance(10).await.unwrap().is_finite());
    let caps = bot.channel_capacitances(&[0, 1, 2]).await.unwrap();
    assert_eq!(caps.len(), 3);
    assert_eq!(bot.detect_shorts(1).await.unwrap(), vec![5, 17]);
    assert!(bot
        .disabled_channels()
        .await
        .unwrap()
        .is_superset(&BTreeSet::from([5, 17])));
    assert!(bot.output_current().await.unwrap() >= 0.0);
    assert!(bot.input_current().await.unwrap() > 0.0);
    assert!(bot.measure_temperature().await.unwrap().is_finite());
    bot.set_target_capacitance(1e-9).await.unwrap();
    bot.set_capacitance_update_interval_ms(50).await.unwrap();
    bot.set_event_mask(EVENT_ENABLE).await.unwrap();
    let state = bot.state().await.unwrap();
    assert_eq!(state.target_capacitance, Some(1e-9));
    assert_eq!(state.capacitance_update_interval_ms, Some(50));
    assert_eq!(state.event_mask, Some(EVENT_ENABLE));
    bot.watchdog_enable(0, 1000).await.unwrap();
    assert!(matches!(
        bot.watchdog_enable(16, 1000).await,
        Err(BoardError::OutOfRange { .. })
    ));
    bot.watchdog_refresh().await.unwrap();
    bot.watchdog_disable().await.unwrap();
    bot.set_channels(&BTreeSet::from([1, 2])).await.unwrap();
    bot.set_hv_output_enabled(true).await.unwrap();
    bot.halt().await.unwrap();
    let snap = sim.snapshot();
    assert!(!snap.hv_on && snap.actuated.is_empty(), "{snap:?}");
}

/// As the vendor's host code does on connection: with a feedback capacitor under 300 nF the
/// chip-load saturation check (which halts for nothing there) is turned off.
#[tokio::test]
async fn the_host_turns_the_chip_load_check_off_only_with_a_small_feedback_capacitor() {
    // A sci-bots build keeps its 150 nF capacitor.
    let (_sim, bot) = board().await;
    assert_eq!(bot.info().config.c16, Some(150e-9));
    bot.take_for_host(EVENT_ENABLE).await.unwrap();
    let state = bot.state().await.unwrap();
    assert_eq!(state.event_mask, Some(EVENT_ENABLE));
    assert_eq!(state.chip_load_range_margin, Some(-1.0));
    // A board fitted with 330 nF (the fork's from 1.74.2) keeps the check.
    let (sim, bot) = board().await;
    let c16 = Config {
        c16: Some(330e-9),
        ..Config::default()
    };
    bot.update_config(&c16).await.unwrap();
    bot.disconnect().await;
    let bot = open(&sim, link_options()).await.unwrap();
    assert_eq!(bot.info().config.c16, Some(330e-9));
    bot.take_for_host(EVENT_ENABLE).await.unwrap();
    let state = bot.state().await.unwrap();
    assert_eq!(state.chip_load_range_margin, Some(0.03), "left as it was");
}

#[tokio::test]
async fn events_carry_unwrapped_board_time() {
    let (_sim, bot) = board().await;
    let mut events = bot.events();
    bot.set_event_mask(EVENT_ENABLE | EVENT_CHANNELS_UPDATED)
        .await
        .unwrap();
    bot.set_channels(&BTreeSet::from([10, 11])).await.unwrap();
    let now = bot.board_time_now().unwrap();
    let e = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let e = events.recv().await.unwrap();
            if matches!(e.event, Event::ChannelsUpdated { .. }) {
                break e;
            }
        }
    })
    .await
    .unwrap();
    match &e.event {
        Event::ChannelsUpdated { actuated, .. } => assert_eq!(actuated, &[10, 11]),
        other => panic!("{other:?}"),
    }
    let t = e.board_time_us.expect("board time");
    // Stamped by the board before it answered, so before "now" and within a second of it.
    assert!(
        t <= now + 1_000 && now.abs_diff(t) < 1_000_000,
        "event {t}, now {now}"
    );
    assert!(e.board_time_host.is_some());
}

#[tokio::test]
async fn a_stalled_board_times_out_reads_retry_once_writes_never() {
    let (sim, bot) = board().await;
    sim.set_faults(Faults {
        stall: true,
        ..Faults::default()
    });
    let before = bot.stats();
    let err = bot.measure_temperature().await.unwrap_err();
    assert!(
        matches!(
            err,
            BoardError::Link(LinkError::Timeout {
                command: "measure_temperature",
                ..
            })
        ),
        "{err:?}"
    );
    let after_read = bot.stats();
    assert_eq!(
        after_read.requests - before.requests,
        2,
        "a read is retried once"
    );
    let err = bot.set_channels(&BTreeSet::from([1])).await.unwrap_err();
    assert!(err.is_link() && !err.is_gone(), "{err:?}");
    assert_eq!(
        bot.stats().requests - after_read.requests,
        1,
        "a write is not"
    );
    // The default gives up after 3 timeouts in a row: the link now counts as gone.
    assert!(!bot.is_connected());
    assert!(bot.measure_temperature().await.unwrap_err().is_gone());
    // A new connection works once the board answers again.
    sim.set_faults(Faults::default());
    bot.disconnect().await;
    let bot = open(&sim, link_options()).await.unwrap();
    assert!(bot.measure_temperature().await.is_ok());
}

#[tokio::test]
async fn corrupted_bytes_never_become_wrong_answers() {
    let (sim, bot) = board().await;
    let bot = {
        bot.disconnect().await;
        open(
            &sim,
            LinkOptions {
                request_timeout: Duration::from_millis(50),
                dead_after_timeouts: 0,
                ..link_options()
            },
        )
        .await
        .unwrap()
    };
    let want = BTreeSet::from([2, 40, 99]);
    bot.set_channels(&want).await.unwrap();
    sim.set_faults(Faults {
        corrupt_fraction: 0.01,
        ..Faults::default()
    });
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..150 {
        match bot.channels().await {
            Ok(got) => {
                assert_eq!(got, want);
                ok += 1;
            }
            Err(BoardError::Link(LinkError::Timeout { .. })) => failed += 1,
            Err(e) => panic!("corruption must show as a timeout, not {e:?}"),
        }
    }
    let stats = bot.stats();
    assert!(ok > 75, "ok {ok}, failed {failed}, {stats:?}");
    assert!(stats.crc_errors + stats.bad_headers > 0, "{stats:?}");
    sim.set_faults(Faults::default());
    assert_eq!(bot.channels().await.unwrap(), want);
}

#[tokio::test]
async fn a_request_across_the_chip_insertion_stall_is_answered_on_the_same_link() {
    // Realistic timing: on insertion the firmware's loop blocks ~1 s of debounce, then
    // ~1.2 s of short detection; the request timeout is longer than that.
    let sim = sim::spawn_pty(SimOptions {
        timing: Timing::Realistic,
        chip_inserted: false,
        uuid: Some(UUID),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let bot = open(&sim, LinkOptions::default()).await.unwrap();
    let mut events = bot.events();
    sim.insert_chip(true);
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("output_enabled")
            .unwrap();
        if e.event == Event::OutputEnabled {
            break;
        }
    }
    // The firmware is inside detect_shorts(5) now.
    let t = bot.sync_time().await;
    assert!(t.is_ok(), "{t:?}");
    assert!(bot.is_connected());
    assert_eq!(bot.stats().timeouts, 0);
    let busy = sim.trace().into_iter().any(
        |r| matches!(&r.entry, sim::TraceEntry::Busy { cause, .. } if cause == "detect_shorts"),
    );
    assert!(busy, "the firmware did not stall");
}

/// Board time as the host maps it matches the board's counter: on the realistic simulator a
/// reply is held 4 to 5 ms for the Teensy's USB flush, which the mapping must not take for
/// transit time (the middle of such a round trip is ~2.5 ms after the board read its counter).
#[tokio::test]
async fn board_time_maps_to_the_board_s_counter_despite_the_held_replies() {
    let sim = sim::spawn_pty(SimOptions {
        timing: Timing::Realistic,
        uuid: Some(UUID),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let bot = open(&sim, LinkOptions::default()).await.unwrap();
    for _ in 0..8 {
        bot.sync_time().await.unwrap();
    }
    let truth = sim.board_micros();
    let mapped = bot.board_time_now().expect("synchronised");
    // Compared as the 32-bit counter the board keeps.
    let error = i64::from((mapped as u32).wrapping_sub(truth) as i32).unsigned_abs();
    assert!(
        error < 1_500,
        "mapped {mapped} µs, the board's counter {truth} µs: {error} µs apart"
    );
}
