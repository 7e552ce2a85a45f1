//! Every command of the simulator's table, through a real pty, gets a well-formed reply.

use std::collections::BTreeSet;

use dropbot_plugin::testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::commands::*;
use firmware_protocol::{CommandName, Request};

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
