//! Conformance of the simulated DropBot to the real firmware, through a real pty with the
//! firmware-protocol crate as the host: channels and the disabled mask, capacitance, `halt`,
//! `detect_shorts`, `update_state`/`update_config` and HV as the firmware runs them.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::sim::{SimOptions, Timing};
use dropbot_testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::commands::*;
use firmware_protocol::{Config, State};
use prost::Message;

type R = Result<(), SimHostError>;

const MS: Duration = Duration::from_millis(1);
fn hv(on: bool) -> State {
    State {
        hv_output_enabled: Some(on),
        ..State::default()
    }
}

fn mask(channels: &[u16]) -> Result<Vec<u8>, SimHostError> {
    Ok(pack(channels.iter().copied(), 120)?)
}

/// `channels.h`/`Node.h`: exact byte count, the mask copies as many bytes as given, state is
/// read back from the boards (so a disabled channel is forgotten as requested).
#[tokio::test]
async fn channels_and_the_disabled_mask_as_the_firmware_keeps_them() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert_eq!(host.call(NumberOfChannels {}).await?, 120);
    assert!(host.set_channels(&[0, 7, 8, 119]).await?);
    assert_eq!(host.channels().await?, vec![0, 7, 8, 119]);
    for len in [14, 16, 0] {
        let call = SetStateOfChannels {
            channel_states: vec![0xFF; len],
        };
        assert!(!host.call(call).await?, "{len} bytes refused");
    }
    assert_eq!(host.channels().await?, vec![0, 7, 8, 119]);
    let disable = SetDisabledChannelsMask {
        disabled_channels_mask: mask(&[7, 9, 100])?,
    };
    host.call(disable).await?;
    assert_eq!(
        host.call(DisabledChannelsMask {}).await?,
        mask(&[7, 9, 100])?
    );
    assert_eq!(host.channels().await?, vec![0, 8, 119]);
    assert!(host.set_channels(&[7, 9, 10]).await?);
    assert_eq!(sim.snapshot().actuated, vec![10]);
    // Three bytes: channels 0-23 are rewritten, 100 stays disabled.
    let partial = SetDisabledChannelsMask {
        disabled_channels_mask: vec![0; 3],
    };
    host.call(partial).await?;
    assert_eq!(host.call(DisabledChannelsMask {}).await?, mask(&[100])?);
    assert_eq!(sim.snapshot().actuated, vec![7, 9, 10]);
    // Reading the state back stores what is driven: a disabled channel is not requested any
    // more once read, and enabling it again does not drive it.
    host.call(disable_mask(&[9])?).await?;
    assert_eq!(host.channels().await?, vec![7, 10]);
    host.call(disable_mask(&[])?).await?;
    assert_eq!(sim.snapshot().actuated, vec![7, 10]);
    host.call(TurnOffAllChannels {}).await?;
    assert!(host.channels().await?.is_empty());
    sim.shutdown().await;
    Ok(())
}

fn disable_mask(channels: &[u16]) -> Result<SetDisabledChannelsMask, SimHostError> {
    Ok(SetDisabledChannelsMask {
        disabled_channels_mask: mask(channels)?,
    })
}

#[tokio::test]
async fn capacitance_sees_a_droplet_under_actuated_electrodes_only() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let unit = sim.unit_volume("electrode010")?;
    sim.add_droplet("electrode010", unit)?;
    // channel_capacitances switches HV on for the scan and off again (Node.h).
    let scan = ChannelCapacitances {
        channels: vec![10, 12, 200],
    };
    let per_channel = host.call(scan.clone()).await?;
    assert_eq!(per_channel.len(), 3);
    assert!(
        (per_channel[0] - 5.76e-12).abs() < 0.1e-12,
        "{per_channel:?}"
    );
    assert!(
        per_channel[1] < 0.3e-12 && per_channel[2] == 0.0,
        "{per_channel:?}"
    );
    assert!(!sim.snapshot().hv_on, "HV restored to off");
    assert!(host.update_state(hv(true)).await?);
    assert!(host.set_channels(&[10]).await?);
    let covered = host.call(Capacitance { n_samples: 50 }).await?;
    // A 2.4 mm electrode fully covered: 5.76 pF.
    assert!((covered - 5.76e-12).abs() < 0.1e-12, "{covered}");
    assert!(host.set_channels(&[12]).await?);
    let empty = host.call(Capacitance { n_samples: 0 }).await?;
    assert!(empty < 0.3e-12, "{empty}");
    // A disabled channel is not measured.
    host.call(disable_mask(&[10])?).await?;
    assert_eq!(host.call(scan).await?[0], 0.0);
    // Without HV nothing is measured.
    assert!(host.update_state(hv(false)).await?);
    assert!(host.set_channels(&[10]).await?);
    assert_eq!(host.call(Capacitance { n_samples: 50 }).await?, 0.0);
    sim.shutdown().await;
    Ok(())
}

/// `channels.cpp` `detect_shorts`: the mask becomes exactly the shorted channels; channels the
/// user disabled are enabled again.
#[tokio::test]
async fn detect_shorts_replaces_the_whole_mask() -> R {
    let opts = SimOptions {
        shorted: vec![3, 17],
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    host.call(disable_mask(&[5, 60])?).await?;
    assert_eq!(host.call(DetectShorts { delay_ms: 5 }).await?, vec![3, 17]);
    let disabled = unpack(&host.call(DisabledChannelsMask {}).await?);
    assert_eq!(disabled, BTreeSet::from([3, 17]), "5 and 60 enabled again");
    assert!(host.set_channels(&[3, 4, 5, 17]).await?);
    assert_eq!(sim.snapshot().actuated, vec![4, 5]);
    sim.set_shorted(vec![]);
    assert!(host.call(DetectShorts { delay_ms: 5 }).await?.is_empty());
    assert!(unpack(&host.call(DisabledChannelsMask {}).await?).is_empty());
    sim.shutdown().await;
    Ok(())
}

/// `Node.h` `halt()`: HV off and `disable_all_channels()`; `set_state_of_channels` still
/// answers true but nothing is driven until the mask is cleared (e.g. by `detect_shorts`).
#[tokio::test]
async fn halt_disables_every_channel() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    assert!(host.update_state(hv(true)).await?);
    assert!(host.set_channels(&[1, 2]).await?);
    assert_eq!(host.call(HighVoltage {}).await?, 100.0);
    host.call(Halt {}).await?;
    assert_eq!(host.state().await?.hv_output_enabled, Some(false));
    assert_eq!(host.call(DisabledChannelsMask {}).await?, vec![0xFF; 15]);
    assert!(host.update_state(hv(true)).await?);
    assert!(host.set_channels(&[1, 2]).await?, "still answers true");
    assert!(sim.snapshot().actuated.is_empty(), "but drives nothing");
    assert!(host.channels().await?.is_empty());
    assert!(host.call(DetectShorts { delay_ms: 5 }).await?.is_empty());
    assert!(host.set_channels(&[1, 2]).await?);
    assert_eq!(sim.snapshot().actuated, vec![1, 2], "driven again");
    sim.shutdown().await;
    Ok(())
}

/// nanopb-helpers `pb_cpp_api.h`/`pb_validate.h`: the reply says whether the message decoded;
/// a field refused by its callback is skipped, fields without a callback are copied as sent.
#[tokio::test]
async fn update_state_answers_whether_it_decoded_and_skips_refused_fields() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let before = host.state().await?;
    // `Node::begin` marks these fields present; the others are absent until set.
    assert_eq!(before.voltage, Some(100.0));
    assert_eq!(before.channel_count, Some(120));
    assert_eq!(before.capacitance_update_interval_ms, None);
    assert_eq!(before.target_count, None);
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
            channel_count: Some(8),
            ..State::default()
        },
    ] {
        assert!(host.update_state(refused.clone()).await?, "{refused:?}");
        assert_eq!(host.state().await?, before, "{refused:?} left no trace");
    }
    let garbage = UpdateState {
        serialized: vec![0xFF, 0xFF, 0xFF],
    };
    assert_eq!(host.call(garbage).await?, 0, "does not decode");
    // No callback: copied whatever the value.
    let unchecked = State {
        output_current_limit: Some(0.6),
        target_count: Some(0.0),
        voltage: Some(90.0),
        frequency: Some(0.0),
        ..State::default()
    };
    assert!(host.update_state(unchecked).await?);
    let after = host.state().await?;
    assert_eq!(after.output_current_limit, Some(0.6));
    assert_eq!(after.target_count, Some(0.0));
    assert_eq!((after.voltage, after.frequency), (Some(90.0), Some(0.0)));
    assert_eq!(sim.snapshot().voltage_target, 90.0);
    // Field 13 exists only in the Blue-Ocean fork: sci-bots firmware skips it.
    let fork_only = State {
        halt_on_chip_load_saturated: Some(false),
        ..State::default()
    };
    assert!(host.update_state(fork_only).await?);
    assert_eq!(host.state().await?.halt_on_chip_load_saturated, None);
    sim.shutdown().await;
    Ok(())
}

/// `update_config` accepts anything that decodes; sci-bots firmware applies the voltage and
/// frequency limits of an update at once but starts every boot with the compiled-in ones.
#[tokio::test]
async fn config_updates_limits_and_the_eeprom() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let config =
        Config::from_bytes(&host.call(SerializeConfig {}).await?).map_err(SimHostError::State)?;
    assert_eq!(
        config.i2c_address,
        Some(10),
        "a board configured at the bench"
    );
    let update = Config {
        max_voltage: Some(120.0),
        id: Some("bench-3".into()),
        ..Config::default()
    };
    let serialized = update.encode_to_vec();
    assert_eq!(host.call(UpdateConfig { serialized }).await?, 1);
    let crossed = Config {
        min_frequency: Some(20_000.0),
        ..Config::default()
    };
    let serialized = crossed.encode_to_vec();
    assert_eq!(host.call(UpdateConfig { serialized }).await?, 1, "no check");
    assert_eq!(
        host.call(UpdateConfig {
            serialized: vec![0xFF]
        })
        .await?,
        0
    );
    let config =
        Config::from_bytes(&host.call(SerializeConfig {}).await?).map_err(SimHostError::State)?;
    assert_eq!(config.max_voltage, Some(120.0));
    assert_eq!(config.id.as_deref(), Some("bench-3"));
    let v130 = State {
        voltage: Some(130.0),
        ..State::default()
    };
    assert!(host.update_state(v130.clone()).await?);
    assert_eq!(
        host.state().await?.voltage,
        Some(100.0),
        "over the new limit"
    );
    host.call(SaveConfig {}).await?;
    // After a restart the saved limit is in the config but not applied.
    let path = sim.reboot().await?;
    let mut host = dropbot_testkit::sim_host::SimHost::open(&path).await?;
    let config =
        Config::from_bytes(&host.call(SerializeConfig {}).await?).map_err(SimHostError::State)?;
    assert_eq!(config.max_voltage, Some(120.0));
    assert!(host.update_state(v130).await?);
    assert_eq!(host.state().await?.voltage, Some(130.0));
    sim.shutdown().await;
    Ok(())
}

/// `voltage_source.h`: measured HV reads half the supply while off; `enable_high_voltage_output`
/// takes 200 ms (a virtual clock moves by it); the minimum waveform voltage follows the config.
#[tokio::test]
async fn hv_sequence_measured_voltage_currents_and_temperature() -> R {
    let opts = SimOptions {
        virtual_clock: true,
        timing: Timing::Realistic,
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(MinWaveformVoltage {}).await?, 25.75);
    let off = host.call(HighVoltage {}).await?;
    assert!(off > 5.0 && off < 6.0, "supply through the diode: {off}");
    let idle_input = host.call(InputCurrent {}).await?;
    assert!(idle_input > 0.0 && idle_input < 1.0, "{idle_input}");
    let t0 = sim.now();
    assert!(host.update_state(hv(true)).await?);
    assert!(sim.now() - t0 >= 200 * MS, "{:?}", sim.now() - t0);
    assert_eq!(host.call(HighVoltage {}).await?, 100.0);
    // A voltage under the minimum waveform voltage: the digipot clamps.
    let low = State {
        voltage: Some(10.0),
        ..State::default()
    };
    assert!(host.update_state(low).await?);
    assert_eq!(host.call(HighVoltage {}).await?, 25.75);
    assert!(host.set_channels(&[5]).await?);
    let out = host.call(OutputCurrentRms {}).await?;
    assert!(out > 0.0 && out < 0.025, "{out}");
    let t = host.call(MeasureTemperature {}).await?;
    assert!((20.0..60.0).contains(&t), "{t}");
    sim.shutdown().await;
    Ok(())
}
