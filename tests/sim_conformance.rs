//! Conformance of the simulated DropBot through a real pty, with the firmware-protocol crate as
//! the host: handshake, every command, validation rules.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::sim::{SimOptions, TraceEntry};
use dropbot_plugin::testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::commands::*;
use firmware_protocol::{parse_identity, CommandName, Config, Packet, State, TableSet};
use prost::Message;

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
/// A uuid with the bytes a tty would mangle if it were not raw.
const UUID: [u8; 16] = [
    0x00, 0x0A, 0x0D, 0x03, 0x04, 0x11, 0x13, 0x1A, 0x7F, 0xFF, 0x7C, 0x7C, 0x7C, 0x1C, 0x15, 0x80,
];

#[tokio::test]
async fn handshake_answers_the_simulator_id_and_echoes_the_request_id() -> R {
    let (sim, mut host) = connect(SimOptions::default()).await?;
    host.send(&Packet::IdRequest { id: 0x1234 }).await?;
    let reply = host.next_packet(Duration::from_secs(2)).await?;
    assert_eq!(
        reply,
        Packet::IdResponse {
            id: 0x1234,
            payload: b"dropbot::1.0.0-sim".to_vec()
        }
    );
    let (name, version) = parse_identity("dropbot::1.0.0-sim").map_err(SimHostError::Table)?;
    assert_eq!(name, "dropbot");
    assert!(TableSet::builtin().for_version(version).is_ok());
    assert_eq!(host.handshake().await?, "dropbot::1.0.0-sim");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_time_and_raw_bytes_pass_unchanged() -> R {
    let opts = SimOptions {
        uuid: Some(UUID),
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(SoftwareVersion {}).await?, "1.0.0-sim");
    assert_eq!(host.call(HardwareVersion {}).await?, "3.1");
    assert_eq!(host.call(Uuid {}).await?, UUID.to_vec());
    let t0 = host.call(Microseconds {}).await?;
    sim.advance(Duration::from_micros(1500));
    let t1 = host.call(Microseconds {}).await?;
    assert_eq!(t1.wrapping_sub(t0), 1500);
    // Every byte value, host to board, inside one packet: it decodes and is traced intact.
    let mut payload = vec![0xFF, 0xFF];
    payload.extend(0..=255u8);
    assert_eq!(host.call_raw(payload.clone()).await?, Vec::<u8>::new());
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let seen = sim
        .trace()
        .into_iter()
        .any(|r| matches!(r.entry, TraceEntry::Rx { ref payload, .. } if *payload == hex));
    assert!(seen, "all 256 byte values arrived unchanged");
    sim.shutdown().await;
    Ok(())
}

/// Every byte value, board to host: sixteen boards whose uuids hold 0..=255 between them.
#[tokio::test]
async fn every_byte_value_reaches_the_host_unchanged() -> R {
    for k in 0..16u8 {
        let uuid: [u8; 16] = std::array::from_fn(|i| k * 16 + i as u8);
        let opts = SimOptions {
            uuid: Some(uuid),
            ..fast_virtual()
        };
        let (sim, mut host) = connect(opts).await?;
        assert_eq!(host.call(Uuid {}).await?, uuid.to_vec());
        sim.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn channels_round_trip_and_disabled_channels_never_actuate() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert_eq!(host.call(NumberOfChannels {}).await?, 120);
    assert!(host.set_channels(&[0, 7, 8, 119]).await?);
    assert_eq!(host.channels().await?, vec![0, 7, 8, 119]);
    // Wrong byte count: refused, state unchanged.
    assert!(
        !host
            .call(SetStateOfChannels {
                channel_states: vec![0xFF; 14]
            })
            .await?
    );
    assert!(
        !host
            .call(SetStateOfChannels {
                channel_states: vec![0xFF; 16]
            })
            .await?
    );
    assert_eq!(host.channels().await?, vec![0, 7, 8, 119]);
    // Disabling a channel turns it off and keeps it off.
    let mask = firmware_protocol::channels::pack([7, 9], 120).map_err(SimHostError::Channels)?;
    host.call(SetDisabledChannelsMask {
        disabled_channels_mask: mask.clone(),
    })
    .await?;
    // The wrong byte count: ignored (the firmware answers nothing either way).
    host.call(SetDisabledChannelsMask {
        disabled_channels_mask: vec![0; 3],
    })
    .await?;
    assert_eq!(host.call(DisabledChannelsMask {}).await?, mask);
    assert_eq!(host.channels().await?, vec![0, 8, 119]);
    assert!(host.set_channels(&[7, 9, 10]).await?);
    assert_eq!(host.channels().await?, vec![10]);
    assert_eq!(sim.snapshot().actuated, vec![10]);
    host.call(TurnOffAllChannels {}).await?;
    assert!(host.channels().await?.is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn capacitance_sees_a_droplet_under_actuated_electrodes_only() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let unit = sim.unit_volume("electrode010")?;
    sim.add_droplet("electrode010", unit)?;
    let hv_on = State {
        hv_output_enabled: Some(true),
        ..State::default()
    };
    assert!(host.update_state(hv_on).await?);
    assert!(host.set_channels(&[10]).await?);
    let covered = host.call(Capacitance { n_samples: 50 }).await?;
    // A 2.4 mm electrode fully covered: 5.76 pF.
    assert!((covered - 5.76e-12).abs() < 0.1e-12, "{covered}");
    assert!(host.set_channels(&[12]).await?);
    let empty = host.call(Capacitance { n_samples: 0 }).await?;
    assert!(empty < 0.3e-12, "{empty}");
    let per_channel = host
        .call(ChannelCapacitances {
            channels: vec![10, 12, 200],
        })
        .await?;
    assert_eq!(per_channel.len(), 3);
    assert!(
        (per_channel[0] - 5.76e-12).abs() < 0.1e-12,
        "{per_channel:?}"
    );
    assert!(
        per_channel[1] < 0.3e-12 && per_channel[2] == 0.0,
        "{per_channel:?}"
    );
    // Without HV nothing is measured.
    assert!(
        host.update_state(State {
            hv_output_enabled: Some(false),
            ..State::default()
        })
        .await?
    );
    assert!(host.set_channels(&[10]).await?);
    assert_eq!(host.call(Capacitance { n_samples: 50 }).await?, 0.0);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn detect_shorts_finds_configured_shorts_and_disables_them() -> R {
    let opts = SimOptions {
        shorted: vec![3, 17],
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(DetectShorts { delay_ms: 5 }).await?, vec![3, 17]);
    let mask = host.call(DisabledChannelsMask {}).await?;
    assert_eq!(
        firmware_protocol::channels::unpack(&mask),
        BTreeSet::from([3, 17])
    );
    assert!(host.set_channels(&[3, 4, 17]).await?);
    assert_eq!(host.channels().await?, vec![4]);
    sim.set_shorted(vec![]);
    assert!(host.call(DetectShorts { delay_ms: 5 }).await?.is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn update_state_follows_the_firmware_validation_rules() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let before = host.state().await?;
    assert_eq!(before, State::with_defaults(120));
    for refused in [
        State {
            voltage: Some(200.0),
            ..State::default()
        },
        State {
            voltage: Some(f32::NAN),
            ..State::default()
        },
        State {
            frequency: Some(50.0),
            ..State::default()
        },
        State {
            output_current_limit: Some(0.6),
            ..State::default()
        },
        State {
            output_current_limit: Some(0.0),
            ..State::default()
        },
        State {
            target_count: Some(0.0),
            voltage: Some(90.0),
            ..State::default()
        },
    ] {
        assert!(!host.update_state(refused.clone()).await?, "{refused:?}");
        assert_eq!(host.state().await?, before, "refused update left a trace");
    }
    // Not a protobuf message at all.
    assert_eq!(
        host.call(UpdateState {
            serialized: vec![0xFF, 0xFF, 0xFF]
        })
        .await?,
        0
    );
    let update = State {
        voltage: Some(90.0),
        frequency: Some(0.0),
        channel_count: Some(8),
        event_mask: Some(1),
        ..State::default()
    };
    assert!(host.update_state(update).await?);
    let after = host.state().await?;
    assert_eq!(after.voltage, Some(90.0));
    assert_eq!(after.frequency, Some(0.0));
    assert_eq!(after.event_mask, Some(1));
    assert_eq!(after.channel_count, Some(120), "channel_count is read only");
    assert_eq!(sim.snapshot().voltage_target, 90.0);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn config_round_trips_and_limits_the_state() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let config =
        Config::from_bytes(&host.call(SerializeConfig {}).await?).map_err(SimHostError::State)?;
    assert_eq!(config, Config::with_defaults());
    let update = Config {
        max_voltage: Some(120.0),
        id: Some("bench-3".into()),
        ..Config::default()
    };
    assert_eq!(
        host.call(UpdateConfig {
            serialized: update.encode_to_vec()
        })
        .await?,
        1
    );
    let config =
        Config::from_bytes(&host.call(SerializeConfig {}).await?).map_err(SimHostError::State)?;
    assert_eq!(config.max_voltage, Some(120.0));
    assert_eq!(config.id.as_deref(), Some("bench-3"));
    assert!(
        !host
            .update_state(State {
                voltage: Some(130.0),
                ..State::default()
            })
            .await?
    );
    assert!(
        host.update_state(State {
            voltage: Some(115.0),
            ..State::default()
        })
        .await?
    );
    let crossed = Config {
        min_frequency: Some(20_000.0),
        ..Config::default()
    };
    assert_eq!(
        host.call(UpdateConfig {
            serialized: crossed.encode_to_vec()
        })
        .await?,
        0
    );
    assert_eq!(
        host.call(UpdateConfig {
            serialized: vec![0xFF]
        })
        .await?,
        0
    );
    host.call(SaveConfig {}).await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn halt_turns_hv_and_channels_off() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert!(
        host.update_state(State {
            hv_output_enabled: Some(true),
            ..State::default()
        })
        .await?
    );
    assert!(host.set_channels(&[1, 2]).await?);
    assert_eq!(host.call(HighVoltage {}).await?, 100.0);
    host.call(Halt {}).await?;
    assert_eq!(host.state().await?.hv_output_enabled, Some(false));
    assert!(host.channels().await?.is_empty());
    assert_eq!(host.call(HighVoltage {}).await?, 0.0);
    let snap = sim.snapshot();
    assert!(!snap.hv_on && snap.actuated.is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn voltage_ramps_currents_and_temperature_are_plausible() -> R {
    let opts = SimOptions {
        virtual_clock: true,
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(MinWaveformVoltage {}).await?, 26.0);
    let idle_input = host.call(InputCurrent {}).await?;
    assert!(idle_input > 0.0 && idle_input < 1.0, "{idle_input}");
    assert!(
        host.update_state(State {
            hv_output_enabled: Some(true),
            ..State::default()
        })
        .await?
    );
    assert_eq!(host.call(HighVoltage {}).await?, 0.0);
    sim.advance(100 * MS);
    let half = host.call(HighVoltage {}).await?;
    assert!((half - 50.0).abs() < 0.5, "{half}");
    sim.advance(150 * MS);
    assert_eq!(host.call(HighVoltage {}).await?, 100.0);
    assert!(host.set_channels(&[5]).await?);
    let out = host.call(OutputCurrent {}).await?;
    assert!(out > 0.0 && out < 0.025, "{out}");
    let t = host.call(MeasureTemperature {}).await?;
    assert!((20.0..60.0).contains(&t), "{t}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_codes_and_bad_arguments_get_an_empty_reply() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert!(host.call_raw(vec![0xFF, 0xFF]).await?.is_empty());
    assert!(host.call_raw(vec![0x01]).await?.is_empty());
    let code = host
        .table()
        .code(CommandName::Capacitance)
        .map_err(SimHostError::Table)?;
    let mut truncated = code.to_le_bytes().to_vec();
    truncated.push(1);
    assert!(host.call_raw(truncated).await?.is_empty());
    let notes = sim
        .trace()
        .into_iter()
        .filter(|r| matches!(&r.entry, TraceEntry::Note { message } if message.contains("not executed")))
        .count();
    assert_eq!(notes, 3);
    // The board still answers properly afterwards.
    assert_eq!(host.call(NumberOfChannels {}).await?, 120);
    sim.shutdown().await;
    Ok(())
}
