//! Events of the simulated DropBot through a real pty: gating, chip interlock, capacitance
//! stream and target, board-initiated halts, drops, and the host watchdog.

use std::time::Duration;

use dropbot_plugin::sim::{PhysicsParams, SimOptions, Timing, TraceEntry};
use dropbot_plugin::testkit::sim_host::{connect, SimHostError};
use firmware_protocol::events::{HaltReason, EVENT_CHANNELS_UPDATED, EVENT_ENABLE};
use firmware_protocol::{Event, State};

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
const QUIET: Duration = Duration::from_millis(150);
const WAIT: Duration = Duration::from_secs(2);

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
    assert!(
        host.update_state(State {
            event_mask: Some(EVENT_CHANNELS_UPDATED),
            ..State::default()
        })
        .await?
    );
    assert!(host.set_channels(&[2]).await?);
    assert!(matches!(
        host.next_event(QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    let mask = EVENT_CHANNELS_UPDATED | EVENT_ENABLE;
    assert!(
        host.update_state(State {
            event_mask: Some(mask),
            ..State::default()
        })
        .await?
    );
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
            assert_eq!(end - start, 5000, "a realistic channel update takes 5 ms");
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

#[tokio::test]
async fn chip_removal_and_insertion_send_events_after_the_debounce() -> R {
    let opts = SimOptions {
        shorted: vec![9],
        ..virtual_clock(Timing::Realistic)
    };
    let (sim, mut host) = connect(opts).await?;
    assert!(
        host.update_state(State {
            event_mask: Some(u32::MAX),
            ..hv_on()
        })
        .await?
    );
    sim.advance(300 * MS);
    assert_eq!(sim.snapshot().voltage_measured, 100.0);
    sim.insert_chip(false);
    // The interlock cuts HV at once; the event waits for the 1 s debounce.
    assert!(!sim.snapshot().hv_on);
    sim.advance(999 * MS);
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
    sim.advance(1000 * MS);
    assert_eq!(host.next_event(WAIT).await?, Event::OutputEnabled);
    // Insertion runs short detection.
    assert_eq!(
        host.next_event(WAIT).await?,
        Event::ShortsDetected { values: vec![9] }
    );
    assert_eq!(sim.snapshot().disabled, vec![9]);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn capacitance_stream_and_target() -> R {
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
    sim.advance(1000 * MS);
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
    assert_eq!(updates.len(), 10, "{updates:?}");
    assert!(updates.windows(2).all(|w| w[1].0 - w[0].0 == 100_000));
    // Past the 200 ms ramp the droplet reads 5.76 pF at 100 V.
    let (_, c, v) = updates[5];
    assert!((c - 5.76e-12).abs() < 0.1e-12 && v == 100.0, "{c} {v}");
    assert_eq!(exceeded.len(), 1, "fires once, then the target resets");
    assert!((exceeded[0].0, exceeded[0].1 as f32) == (3, 5e-12));
    assert_eq!(host.state().await?.target_capacitance, Some(0.0));
    sim.shutdown().await;
    Ok(())
}

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
            assert!(output_current.unwrap_or(0.0) > 0.025);
            assert!(
                (wall_time - 1.0).abs() < 1e-9,
                "checked every second: {wall_time}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(host.state().await?.hv_output_enabled, Some(false));
    assert!(host.channels().await?.is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn chip_load_saturation_halts_when_asked_to() -> R {
    let physics = PhysicsParams {
        saturation_f: 5e-12,
        ..PhysicsParams::default()
    };
    let opts = SimOptions {
        physics,
        ..virtual_clock(Timing::Fast)
    };
    let (sim, mut host) = connect(opts).await?;
    sim.add_droplet("electrode050", sim.unit_volume("electrode050")?)?;
    let update = State {
        capacitance_update_interval_ms: Some(50),
        halt_on_chip_load_saturated: Some(false),
        ..hv_on()
    };
    assert!(host.update_state(update).await?);
    assert!(host.set_channels(&[50]).await?);
    sim.advance(200 * MS);
    assert!(sim.snapshot().hv_on, "not halted while halting is off");
    assert!(
        host.update_state(State {
            halt_on_chip_load_saturated: Some(true),
            ..State::default()
        })
        .await?
    );
    sim.advance(100 * MS);
    let halted = host
        .wait_event(WAIT, |e| matches!(e, Event::Halted { .. }))
        .await?;
    assert!(matches!(
        halted,
        Event::Halted {
            error: HaltReason::ChipLoadSaturated { .. },
            ..
        }
    ));
    assert!(!sim.snapshot().hv_on);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn drops_detected_reports_the_droplets_channels() -> R {
    let (sim, mut host) = connect(virtual_clock(Timing::Fast)).await?;
    sim.add_droplet("electrode044", sim.unit_volume("electrode044")?)?;
    let mask = EVENT_ENABLE | firmware_protocol::events::EVENT_DROPS_DETECTED;
    let update = State {
        drops_update_interval_ms: Some(200),
        event_mask: Some(mask),
        ..hv_on()
    };
    assert!(host.update_state(update).await?);
    sim.advance(200 * MS);
    match host.next_event(WAIT).await? {
        Event::DropsDetected { drops, .. } => {
            assert_eq!(drops.channels, vec![vec![44]]);
            assert!((drops.capacitances[0][0] - 5.76e-12).abs() < 1e-15);
        }
        other => panic!("unexpected {other:?}"),
    }
    sim.shutdown().await;
    Ok(())
}
