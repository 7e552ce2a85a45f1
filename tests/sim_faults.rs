//! Fault injection of the simulated DropBot through a real pty: corrupt and dropped bytes,
//! delayed and stalled replies, a wrong firmware id, reboot, unplug and replug.

use std::time::Duration;

use dropbot_plugin::sim::{spawn_at_link, Faults, SimOptions, Timing, TraceEntry};
use dropbot_testkit::sim_host::{connect, SimHost, SimHostError};
use firmware_protocol::commands::{
    Microseconds, NumberOfChannels, Reboot, SaveConfig, UpdateConfig,
};
use firmware_protocol::{parse_identity, Config, Packet, State, TableSet};
use prost::Message;

type R = Result<(), SimHostError>;

const SHORT: Duration = Duration::from_millis(150);

fn fast() -> SimOptions {
    SimOptions {
        timing: Timing::Fast,
        ..SimOptions::default()
    }
}

/// Calls `number_of_channels` `n` times with a short timeout; how many got the right answer.
async fn good_calls(host: &mut SimHost, n: usize) -> usize {
    host.timeout = SHORT;
    let mut good = 0;
    for _ in 0..n {
        if matches!(host.call(NumberOfChannels {}).await, Ok(120)) {
            good += 1;
        }
    }
    host.timeout = Duration::from_secs(2);
    good
}

#[tokio::test]
async fn corrupted_bytes_fail_the_crc_and_the_host_recovers() -> R {
    let faults = Faults {
        corrupt_fraction: 0.05,
        ..Faults::default()
    };
    let (sim, mut host) = connect(SimOptions { faults, ..fast() }).await?;
    let good = good_calls(&mut host, 40).await;
    let crc_errors = host.stats().crc_errors + host.stats().bad_types;
    assert!(crc_errors > 0, "{:?}", host.stats());
    assert!(good < 40, "some calls must fail");
    assert!(good > 0, "most replies survive 5 % corruption");
    sim.set_faults(Faults::default());
    assert_eq!(good_calls(&mut host, 20).await, 20, "recovered");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dropped_bytes_lose_replies_and_the_host_recovers() -> R {
    let faults = Faults {
        drop_fraction: 0.05,
        ..Faults::default()
    };
    let (sim, mut host) = connect(SimOptions { faults, ..fast() }).await?;
    let good = good_calls(&mut host, 40).await;
    assert!(good < 40 && good > 0, "{good}");
    sim.set_faults(Faults::default());
    assert_eq!(good_calls(&mut host, 20).await, 20, "recovered");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn delayed_replies_time_out_then_arrive_late() -> R {
    let faults = Faults {
        reply_delay: Duration::from_millis(400),
        ..Faults::default()
    };
    let (sim, mut host) = connect(SimOptions { faults, ..fast() }).await?;
    host.timeout = SHORT;
    assert!(matches!(
        host.call(NumberOfChannels {}).await,
        Err(SimHostError::Timeout(..))
    ));
    // The late reply still comes, with the id of the request that timed out.
    let late = host.next_packet(Duration::from_secs(2)).await?;
    assert!(matches!(late, Packet::Data { ref payload, .. } if payload == &120u16.to_le_bytes()));
    host.timeout = Duration::from_secs(2);
    assert_eq!(
        host.call(NumberOfChannels {}).await?,
        120,
        "a patient host is served"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_stalled_board_answers_nothing_until_it_recovers() -> R {
    let (sim, mut host) = connect(fast()).await?;
    sim.set_faults(Faults {
        stall: true,
        ..Faults::default()
    });
    host.timeout = SHORT;
    assert!(matches!(
        host.handshake().await,
        Err(SimHostError::Timeout(..))
    ));
    assert!(matches!(
        host.call(NumberOfChannels {}).await,
        Err(SimHostError::Timeout(..))
    ));
    sim.set_faults(Faults::default());
    host.timeout = Duration::from_secs(2);
    assert_eq!(host.handshake().await?, "dropbot::1.73.6");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn wrong_firmware_ids_have_no_command_table() -> R {
    let opts = SimOptions {
        firmware_id: "dropbot::9.9.9".into(),
        ..fast()
    };
    let (sim, mut host) = connect(opts).await?;
    let id = host.handshake().await?;
    assert_eq!(id, "dropbot::9.9.9");
    let (_, version) = parse_identity(&id).map_err(SimHostError::Table)?;
    assert!(TableSet::builtin().for_version(version).is_err());
    sim.set_faults(Faults {
        firmware_id: Some("teensy-bootloader".into()),
        ..Faults::default()
    });
    let id = host.handshake().await?;
    assert!(parse_identity(&id).is_err(), "{id}");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn reboot_restores_defaults_and_keeps_the_saved_config() -> R {
    let (sim, mut host) = connect(fast()).await?;
    let config = Config {
        max_voltage: Some(140.0),
        ..Config::default()
    };
    assert_eq!(
        host.call(UpdateConfig {
            serialized: config.encode_to_vec()
        })
        .await?,
        1
    );
    host.call(SaveConfig {}).await?;
    let unsaved = Config {
        id: Some("not saved".into()),
        ..Config::default()
    };
    assert_eq!(
        host.call(UpdateConfig {
            serialized: unsaved.encode_to_vec()
        })
        .await?,
        1
    );
    let update = State {
        voltage: Some(90.0),
        hv_output_enabled: Some(true),
        ..State::default()
    };
    assert!(host.update_state(update).await?);
    assert!(host.set_channels(&[4]).await?);
    // The reboot command gets no reply: the MCU restarts and its USB device re-enumerates.
    let mut changes = sim.path_changes();
    changes.borrow_and_update();
    host.timeout = SHORT;
    assert!(matches!(
        host.call(Reboot {}).await,
        Err(SimHostError::Timeout(..)) | Err(SimHostError::Eof) | Err(SimHostError::Io(_))
    ));
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .map_err(|_| SimHostError::Timeout(Duration::from_secs(10), "re-enumeration"))?
        .map_err(|_| SimHostError::Eof)?;
    let mut host = SimHost::open(&sim.path()).await?;
    let state = host.state().await?;
    assert_eq!(state.voltage, Some(100.0));
    assert_eq!(state.hv_output_enabled, Some(false));
    assert_eq!(state.channel_count, Some(120), "boards scanned at boot");
    assert!(host.channels().await?.is_empty());
    assert!(
        host.call(Microseconds {}).await? < 1_000_000,
        "the clock restarted"
    );
    let bytes = host
        .call(firmware_protocol::commands::SerializeConfig {})
        .await?;
    let config = Config::from_bytes(&bytes).map_err(SimHostError::State)?;
    assert_eq!(config.max_voltage, Some(140.0));
    assert_eq!(config.id.as_deref(), Some(""));
    // The handle's reboot does the same.
    let v80 = State {
        voltage: Some(80.0),
        ..State::default()
    };
    assert!(host.update_state(v80).await?);
    let path = sim.reboot().await?;
    let mut host = SimHost::open(&path).await?;
    assert_eq!(host.state().await?.voltage, Some(100.0));
    let resets = sim
        .trace()
        .into_iter()
        .filter(|r| matches!(r.entry, TraceEntry::Reset { .. }))
        .count();
    assert_eq!(resets, 2);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unplug_gives_the_host_eof_and_removes_the_port() -> R {
    let (sim, mut host) = connect(fast()).await?;
    assert!(
        host.update_state(State {
            hv_output_enabled: Some(true),
            ..State::default()
        })
        .await?
    );
    let path = sim.path();
    assert!(path.exists());
    sim.unplug().await;
    match host.read_raw(Duration::from_secs(2)).await {
        Ok(bytes) => assert!(bytes.is_empty(), "EOF expected, got {bytes:?}"),
        Err(SimHostError::Io(_)) => {}
        Err(e) => panic!("EOF or an I/O error expected, got {e}"),
    }
    assert!(!path.exists(), "{} still exists", path.display());
    assert!(!sim.snapshot().hv_on, "power lost: HV off");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn replug_serves_a_fresh_board_at_the_same_link() -> R {
    let dir = tempfile::tempdir()?;
    let link = dir.path().join("dropbot");
    let sim = spawn_at_link(fast(), &link).await?;
    let mut host = SimHost::open(&link).await?;
    assert!(
        host.update_state(State {
            voltage: Some(70.0),
            ..State::default()
        })
        .await?
    );
    let first = sim.path();
    assert_eq!(std::fs::read_link(&link)?, first);
    sim.unplug().await;
    assert!(
        link.symlink_metadata().is_err(),
        "the link goes with the port"
    );
    drop(host);
    let second = sim.replug().await?;
    assert_eq!(sim.path(), second);
    assert_eq!(std::fs::read_link(&link)?, second);
    let mut host = SimHost::open(&link).await?;
    assert_eq!(host.handshake().await?, "dropbot::1.73.6");
    assert_eq!(host.state().await?.voltage, Some(100.0), "a fresh boot");
    sim.shutdown().await;
    assert!(
        link.symlink_metadata().is_err(),
        "shutdown removes the link"
    );
    Ok(())
}
