//! Events of the simulated DropBot through a real pty, as the firmware sends them (dropbot.py
//! `src/Node.h`): gating, the chip interlock and the short detection it runs, the capacitance
//! stream on its 25 ms timer, board-initiated halts, the fork's `capacitance_saturated`, drops.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::sim::{PhysicsParams, SimOptions, Timing, TraceEntry};
use dropbot_testkit::sim_host::{connect, SimHostError};
use firmware_protocol::commands::DisabledChannelsMask;
use firmware_protocol::events::{HaltReason, EVENT_CHANNELS_UPDATED, EVENT_ENABLE};
use firmware_protocol::{Event, State};

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
const QUIET: Duration = Duration::from_millis(150);
const WAIT: Duration = Duration::from_secs(10);

fn virtual_clock(timing: Timing) -> SimOptions {
    SimOptions {
        timing,
        virtual_clock: true,
        ..SimOptions::default()
    }
}

fn hv_on() -> State {
    State {
        hv_output_enabled: Some(true),
        ..State::default()
    }
}

#[tokio::test]
async fn channels_updated_needs_bits_30_and_0() -> R {
    let (sim, mut host) = connect(virtual_clock(Timing::Realistic)).await?;
    // Default mask 0xFFFFFFFE: bit 0 clear, so the event is gated off.
    assert!(host.set_channels(&[1]).await?);
    assert!(matches!(
        host.next_event(QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    let only_30 = State {
        event_mask: Some(EVENT_CHANNELS_UPDATED),
        ..State::default()
    };
    assert!(host.update_state(only_30).await?);
    assert!(host.set_channels(&[2]).await?);
    assert!(matches!(
        host.next_event(QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    let both = State {
        event_mask: Some(EVENT_CHANNELS_UPDATED | EVENT_ENABLE),
        ..State::default()
    };
    assert!(host.update_state(both).await?);
    assert!(host.set_channels(&[3, 4]).await?);
    match host.next_event(WAIT).await? {
        Event::ChannelsUpdated {
            actuated,
            start,
            end,
            n,
        } => {
            assert_eq!(actuated, vec![3, 4]);
            assert_eq!(n, 2);
            assert_eq!(end - start, 5000, "three boards take 5 ms");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The trace shows the suppressed ones too.
    let sent: Vec<bool> = sim
        .trace()
        .into_iter()
        .filter_map(|r| match r.entry {
            TraceEntry::Event { name, sent, .. } if name == "channels-updated" => Some(sent),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![false, false, true]);
    sim.shutdown().await;
    Ok(())
}

/// `InputDebounce::process` (stable for more than 1000 ms) then `OutputEnableDebounce`: HV
/// toggled if enabled, `output_enabled`, `detect_shorts(5)` (whose mask replaces the user's).
#[tokio::test]
async fn chip_events_after_the_debounce_and_short_detection_on_insertion() -> R {
    let opts = SimOptions {
        shorted: vec![9],
        ..virtual_clock(Timing::Realistic)
    };
    let (sim, mut host) = connect(opts).await?;
    let all_events = State {
        event_mask: Some(u32::MAX),
        ..hv_on()
    };
    assert!(host.update_state(all_events).await?);
    let user_disabled = firmware_protocol::channels::pack([40, 41], 120)?;
    host.call(firmware_protocol::commands::SetDisabledChannelsMask {
        disabled_channels_mask: user_disabled,
    })
    .await?;
    sim.insert_chip(false);
    // The interlock cuts HV at once; the event waits until the pin was stable > 1000 ms.
    assert!(!sim.snapshot().hv_on);
    sim.advance(1000 * MS);
    assert!(matches!(
        host.next_event(QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    sim.advance(MS);
    assert_eq!(host.next_event(WAIT).await?, Event::OutputDisabled);
    assert_eq!(
        host.state().await?.hv_output_enabled,
        Some(true),
        "the setting stays"
    );
    sim.insert_chip(true);
    let inserted_at = sim.now();
    sim.advance(1001 * MS);
    assert_eq!(host.next_event(WAIT).await?, Event::OutputEnabled);
    assert_eq!(
        host.next_event(WAIT).await?,
        Event::ShortsDetected { values: vec![9] }
    );
    // HV re-enabled (200 ms) then 120 channels tested at 5 ms + one channel update each.
    let busy = sim.now() - inserted_at - 1001 * MS;
    assert!(busy >= 1400 * MS, "{busy:?}");
    let mask = host.call(DisabledChannelsMask {}).await?;
    assert_eq!(
        firmware_protocol::channels::unpack(&mask),
        BTreeSet::from([9]),
        "40 and 41 enabled again"
    );
    assert!(sim.snapshot().hv_on, "HV back on");
    sim.shutdown().await;
    Ok(())
}

/// The capacitance callback runs on the 25 ms timer; the periodic event fires when
/// `interval < millis() - last`, so an interval of 100 ms gives an event every 125 ms.
#[tokio::test]
async fn capacitance_stream_on_the_firmware_timer_and_target() -> R {
    let (sim, mut host) = connect(virtual_clock(Timing::Realistic)).await?;
    sim.add_droplet("electrode033", sim.unit_volume("electrode033")?)?;
    assert!(host.set_channels(&[33]).await?);
    let update = State {
        capacitance_update_interval_ms: Some(100),
        target_capacitance: Some(5e-12),
        target_count: Some(3.0),
        ..hv_on()
    };
    assert!(host.update_state(update).await?);
    sim.advance(990 * MS);
    let mut updates = Vec::new();
    let mut exceeded = Vec::new();
    while let Ok(e) = host.next_event(QUIET).await {
        match e {
            Event::CapacitanceUpdated {
                new_value,
                time_us,
                n_samples,
                v_a,
            } => {
                assert_eq!(n_samples, 50);
                updates.push((time_us, new_value, v_a));
            }
            Event::CapacitanceExceeded { count, target, .. } => exceeded.push((count, target)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(updates.len(), 8, "{updates:?}");
    assert!(
        updates.windows(2).all(|w| w[1].0 - w[0].0 == 125_000),
        "{updates:?}"
    );
    let (_, c, v) = updates[5];
    assert!((c - 5.76e-12).abs() < 0.1e-12 && v == 100.0, "{c} {v}");
    assert_eq!(exceeded.len(), 1, "fires once, then the target resets");
    assert!((exceeded[0].0, exceeded[0].1 as f32) == (3, 5e-12));
    assert_eq!(host.state().await?.target_capacitance, Some(0.0));
    sim.shutdown().await;
    Ok(())
}

/// The 1 s current check halts the board: `halt()` (mask all ones), then `halted` with the
/// measured current.
#[tokio::test]
async fn a_shorted_channel_raises_the_current_until_the_board_halts() -> R {
    let opts = SimOptions {
        shorted: vec![7],
        ..virtual_clock(Timing::Realistic)
    };
    let (sim, mut host) = connect(opts).await?;
    assert!(host.update_state(hv_on()).await?);
    assert!(host.set_channels(&[6, 7]).await?);
    sim.advance(300 * MS);
    assert!(sim.snapshot().output_current > 0.025);
    sim.advance(1000 * MS);
    match host.next_event(WAIT).await? {
        Event::Halted {
            error: HaltReason::OutputCurrentExceeded { output_current },
            wall_time,
        } => {
            assert!(output_current.unwrap_or(0.0) > 0.025, "{output_current:?}");
            assert!(
                (1.0..1.3).contains(&wall_time),
                "seconds since boot: {wall_time}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(host.state().await?.hv_output_enabled, Some(false));
    assert!(host.channels().await?.is_empty());
    assert_eq!(
        sim.snapshot().disabled.len(),
        120,
        "halt disables every channel"
    );
    sim.shutdown().await;
    Ok(())
}

fn saturating() -> PhysicsParams {
    PhysicsParams {
        saturation_f: 5e-12,
        ..PhysicsParams::default()
    }
}

/// sci-bots firmware always halts on chip-load saturation.
#[tokio::test]
async fn chip_load_saturation_halts() -> R {
    let opts = SimOptions {
        physics: saturating(),
        ..virtual_clock(Timing::Fast)
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode050", sim.unit_volume("electrode050")?)?;
    assert!(host.update_state(hv_on()).await?);
    assert!(host.set_channels(&[50]).await?);
    sim.advance(100 * MS);
    let halted = host
        .wait_event(WAIT, |e| matches!(e, Event::Halted { .. }))
        .await?;
    assert!(matches!(
        halted,
        Event::Halted {
            error: HaltReason::ChipLoadSaturated {
                margin: Some(_),
                ..
            },
            ..
        }
    ));
    assert!(!sim.snapshot().hv_on);
    sim.shutdown().await;
    Ok(())
}

/// The Blue-Ocean fork halts only while `halt_on_chip_load_saturated`; otherwise it reports
/// `capacitance_saturated` on every 25 ms check.
#[tokio::test]
async fn the_fork_reports_saturation_without_halting_when_asked() -> R {
    let opts = SimOptions {
        physics: saturating(),
        firmware_id: "dropbot::1.74.3".into(),
        ..virtual_clock(Timing::Realistic)
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode050", sim.unit_volume("electrode050")?)?;
    let no_halt = State {
        halt_on_chip_load_saturated: Some(false),
        ..hv_on()
    };
    assert!(host.update_state(no_halt).await?);
    assert!(host.set_channels(&[50]).await?);
    sim.advance(100 * MS);
    let mut saturated = 0;
    while let Ok(e) = host.next_event(QUIET).await {
        assert!(matches!(e, Event::CapacitanceSaturated { .. }), "{e:?}");
        saturated += 1;
    }
    assert!((3..=5).contains(&saturated), "every 25 ms: {saturated}");
    assert!(sim.snapshot().hv_on, "not halted");
    sim.shutdown().await;
    Ok(())
}

/// `refresh_drops`: every channel measured alone; without a neighbour table each channel over
/// 3 pF is a drop of its own.
#[tokio::test]
async fn drops_detected_one_drop_per_covered_channel() -> R {
    let (sim, mut host) = connect(virtual_clock(Timing::Fast)).await?;
    sim.add_droplet("electrode044", sim.unit_volume("electrode044")?)?;
    let mask = EVENT_ENABLE | firmware_protocol::events::EVENT_DROPS_DETECTED;
    let update = State {
        drops_update_interval_ms: Some(200),
        event_mask: Some(mask),
        ..hv_on()
    };
    assert!(host.update_state(update).await?);
    sim.advance(201 * MS);
    match host.next_event(WAIT).await? {
        Event::DropsDetected { drops, .. } => {
            assert_eq!(drops.channels, vec![vec![44]]);
            assert!(
                (drops.capacitances[0][0] - 5.76e-12).abs() < 0.1e-12,
                "{drops:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    sim.shutdown().await;
    Ok(())
}
