//! Every command of the simulator's table, through a real pty, gets a well-formed reply.

use std::collections::BTreeSet;

use dropbot_plugin::testkit::sim_host::{connect, fast_virtual, SimHostError};
use firmware_protocol::commands::*;
use firmware_protocol::{CommandName, Request, WireValue};

type R = Result<(), SimHostError>;

/// One request of every command (but `reboot`, which does not reply); each reply must decode
/// as the command's reply type.
#[tokio::test]
async fn every_command_of_the_table_gets_a_well_formed_reply() -> R {
    let (sim, mut host) = connect(fast_virtual()).await?;
    let requests: Vec<Request> = vec![
        SoftwareVersion {}.into(),
        HardwareVersion {}.into(),
        Uuid {}.into(),
        Microseconds {}.into(),
        NumberOfChannels {}.into(),
        StateOfChannels {}.into(),
        SetStateOfChannels {
            states: vec![0; 15],
        }
        .into(),
        DisabledChannelsMask {}.into(),
        SetDisabledChannelsMask { mask: vec![0; 15] }.into(),
        TurnOffAllChannels {}.into(),
        MeasureVoltage {}.into(),
        MinWaveformVoltage {}.into(),
        Capacitance { n_samples: 10 }.into(),
        ChannelCapacitances {
            channels: vec![1, 2],
            n_samples: 10,
        }
        .into(),
        DetectShorts { delay_ms: 1 }.into(),
        Halt {}.into(),
        OutputCurrent {}.into(),
        InputCurrent {}.into(),
        Temperature {}.into(),
        WatchdogEnable {}.into(),
        WatchdogDisable {}.into(),
        WatchdogReset {}.into(),
        SetHostWatchdog { timeout_ms: 0 }.into(),
        SerializeState {}.into(),
        UpdateState { state: vec![] }.into(),
        SerializeConfig {}.into(),
        UpdateConfig { config: vec![] }.into(),
        SaveConfig {}.into(),
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
        let ok = match &request {
            Request::SoftwareVersion(_) | Request::HardwareVersion(_) => {
                String::decode_reply(&reply).is_ok()
            }
            Request::Uuid(_) => reply.len() == 16,
            Request::Microseconds(_) => u32::decode_reply(&reply).is_ok(),
            Request::NumberOfChannels(_) => u16::decode_reply(&reply).is_ok(),
            Request::StateOfChannels(_) | Request::DisabledChannelsMask(_) => reply.len() == 15,
            Request::DetectShorts(_) | Request::SerializeState(_) | Request::SerializeConfig(_) => {
                true
            }
            Request::SetStateOfChannels(_)
            | Request::SetDisabledChannelsMask(_)
            | Request::SetHostWatchdog(_)
            | Request::UpdateState(_)
            | Request::UpdateConfig(_) => bool::decode_reply(&reply) == Ok(true),
            Request::TurnOffAllChannels(_)
            | Request::Halt(_)
            | Request::WatchdogEnable(_)
            | Request::WatchdogDisable(_)
            | Request::WatchdogReset(_)
            | Request::SaveConfig(_)
            | Request::Reboot(_) => reply.is_empty(),
            Request::ChannelCapacitances(_) => {
                Vec::<f32>::decode_reply(&reply).map(|v| v.len()) == Ok(2)
            }
            Request::MeasureVoltage(_)
            | Request::MinWaveformVoltage(_)
            | Request::Capacitance(_)
            | Request::OutputCurrent(_)
            | Request::InputCurrent(_)
            | Request::Temperature(_) => f32::decode_reply(&reply).is_ok(),
        };
        assert!(ok, "{:?}: reply {reply:?}", request.name());
    }
    sim.shutdown().await;
    Ok(())
}
