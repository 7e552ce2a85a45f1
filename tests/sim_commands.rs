//! The simulated firmware's commands through a real pty: every command of its table gets a
//! well-formed reply with id 0, identity and clocks, every byte value both ways, unknown codes.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::sim::{SimOptions, TraceEntry};
use dropbot_testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::commands::*;
use firmware_protocol::{CommandName, Packet, Request};

/// A uuid with the bytes a tty would mangle if it were not raw.
const UUID: [u8; 16] = [
    0x00, 0x0A, 0x0D, 0x03, 0x04, 0x11, 0x13, 0x1A, 0x7F, 0xFF, 0x7C, 0x7C, 0x7C, 0x1C, 0x15, 0x80,
];

type R = Result<(), SimHostError>;

/// One request of every command (but `reboot`, which does not reply); each reply must decode
/// as the command's reply type.
#[tokio::test]
async fn every_command_of_the_table_gets_a_well_formed_reply() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let requests: Vec<Request> = vec![
        BaseNodeSoftwareVersion {}.into(),
        PackageName {}.into(),
        DisplayName {}.into(),
        Manufacturer {}.into(),
        SoftwareVersion {}.into(),
        Url {}.into(),
        Microseconds {}.into(),
        Milliseconds {}.into(),
        DigitalRead { pin: 22 }.into(),
        EchoArray { array: vec![1, 2] }.into(),
        StrEcho { msg: vec![3] }.into(),
        SerializeConfig {}.into(),
        UpdateConfig { serialized: vec![] }.into(),
        SaveConfig {}.into(),
        SerializeState {}.into(),
        UpdateState { serialized: vec![] }.into(),
        MeasureTemperature {}.into(),
        HighVoltage {}.into(),
        OutputCurrentRms {}.into(),
        OutputCurrent {}.into(),
        InputCurrentRms {}.into(),
        InputCurrent {}.into(),
        NumberOfChannels {}.into(),
        HardwareVersion {}.into(),
        Uuid {}.into(),
        DetectShorts { delay_ms: 1 }.into(),
        MinWaveformVoltage {}.into(),
        InitializeSwitchingBoards {}.into(),
        Capacitance { n_samples: 10 }.into(),
        WatchdogAutoRefresh { value: false }.into(),
        WatchdogEnable {
            prescaler: 0,
            timeout: 1000,
        }
        .into(),
        WatchdogDisable {}.into(),
        WatchdogRefresh {}.into(),
        ChannelCapacitances {
            channels: vec![1, 2],
        }
        .into(),
        StateOfChannels {}.into(),
        SetDisabledChannelsMask {
            disabled_channels_mask: vec![0; 15],
        }
        .into(),
        DisabledChannelsMask {}.into(),
        SetStateOfChannels {
            channel_states: vec![0; 15],
        }
        .into(),
        SyncTime { wall_time: 1.5e9 }.into(),
        WallTime {}.into(),
        TurnOffAllChannels {}.into(),
        Halt {}.into(),
        SelectOnBoardTestCapacitor { index: 1 }.into(),
        SelectOnBoardTestCapacitor { index: -1 }.into(),
    ];
    let mut covered: BTreeSet<CommandName> = requests.iter().map(Request::name).collect();
    covered.insert(CommandName::Reboot);
    assert_eq!(
        covered,
        CommandName::ALL.iter().copied().collect(),
        "a command is not tested"
    );
    for request in requests {
        let payload = request.encode(host.table()).map_err(SimHostError::Table)?;
        let reply = host.call_raw(payload).await?;
        let ok = request.check_reply(&reply).is_ok()
            && match &request {
                Request::Uuid(_) => reply.len() == 16,
                Request::StateOfChannels(_) | Request::DisabledChannelsMask(_) => reply.len() == 15,
                Request::SetStateOfChannels(_) => reply == [1],
                Request::UpdateState(_) | Request::UpdateConfig(_) => reply == [1],
                Request::ChannelCapacitances(_) => reply.len() == 2 * 4,
                Request::EchoArray(_) => reply == [1, 0, 0, 0, 2, 0, 0, 0],
                Request::StrEcho(_) => reply == [3],
                Request::WatchdogEnable(_) => reply == [0],
                _ => true,
            };
        assert!(ok, "{:?}: reply {reply:?}", request.name());
    }
    sim.shutdown().await;
    Ok(())
}

/// base-node-rpc `SerialHandler.h`: every reply, the ID response included, carries id 0.
#[tokio::test]
async fn replies_carry_id_0_whatever_the_request_id() -> R {
    let (sim, mut host) = connect(SimOptions::default()).await?;
    host.send(&Packet::IdRequest { id: 0x1234 }).await?;
    let reply = host.next_packet(Duration::from_secs(10)).await?;
    assert_eq!(
        reply,
        Packet::IdResponse {
            id: 0,
            payload: b"dropbot::1.73.6".to_vec()
        }
    );
    let payload = Microseconds {}
        .encode(host.table())
        .map_err(SimHostError::Table)?;
    host.send(&Packet::Data {
        id: 0x4321,
        payload,
    })
    .await?;
    match host.next_packet(Duration::from_secs(10)).await? {
        Packet::Data { id, payload } => assert_eq!((id, payload.len()), (0, 4)),
        other => panic!("unexpected {other:?}"),
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn identity_strings_clocks_echo_and_raw_bytes() -> R {
    let opts = SimOptions {
        uuid: Some(UUID),
        ..fast_virtual()
    };
    let (sim, mut host) = connect(opts).await?;
    assert_eq!(host.call(SoftwareVersion {}).await?, "1.73.6");
    assert_eq!(host.call(HardwareVersion {}).await?, "3.6");
    assert_eq!(host.call(Uuid {}).await?, UUID.to_vec());
    // sci-bots/dropbot.py `pavement.py` PROPERTIES.
    assert_eq!(host.call(PackageName {}).await?, "dropbot");
    assert_eq!(host.call(DisplayName {}).await?, "DropBot");
    assert_eq!(host.call(Manufacturer {}).await?, "Sci-Bots Inc.");
    assert_eq!(
        host.call(Url {}).await?,
        "http://gitlab.com/sci-bots/dropbot.py.git"
    );
    assert_eq!(host.call(BaseNodeSoftwareVersion {}).await?, "0.51.8");
    let (t0, m0) = (
        host.call(Microseconds {}).await?,
        host.call(Milliseconds {}).await?,
    );
    sim.advance(Duration::from_micros(1500));
    let (t1, m1) = (
        host.call(Microseconds {}).await?,
        host.call(Milliseconds {}).await?,
    );
    assert_eq!(t1.wrapping_sub(t0), 1500);
    assert!((1..=2).contains(&m1.wrapping_sub(m0)), "{m0} {m1}");
    let words = vec![0, 1, 0x7C7C_7C7C, u32::MAX];
    assert_eq!(
        host.call(EchoArray {
            array: words.clone()
        })
        .await?,
        words
    );
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(host.call(StrEcho { msg: all.clone() }).await?, all);
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
