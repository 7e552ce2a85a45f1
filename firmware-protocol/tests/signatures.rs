//! Every typed command's request under the real 1.73 table (firmware 1.73.0 to 1.74.1),
//! against bytes written by hand from the layout rules (README section 5): code u16 LE, then
//! the scalars in place and an 8-byte `{u32 count, u32 offset}` slot per array, offsets
//! counted from the byte after the code, the arrays' bytes last. And one hand-built reply per
//! reply type.

use firmware_protocol::commands::*;
use firmware_protocol::{CommandName, Request, TableSet, WireValue};

fn hex(s: &str) -> Vec<u8> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(digits).expect("test hex")
}

/// (request, hand-built payload). Comments: code in decimal, then the layout.
fn cases() -> Vec<(Request, &'static str)> {
    let blob = vec![0x18, 0x01]; // protobuf: field 3 (hv_output_enabled) = true
    vec![
        (BaseNodeSoftwareVersion {}.into(), "0000"),
        (PackageName {}.into(), "0100"),
        (DisplayName {}.into(), "0200"),
        (Manufacturer {}.into(), "0300"),
        (SoftwareVersion {}.into(), "0400"),
        (Url {}.into(), "0500"),
        (Microseconds {}.into(), "0600"),
        (Milliseconds {}.into(), "0700"),
        // 12: pin u8 22
        (DigitalRead { pin: 22 }.into(), "0c00 16"),
        // 18: slot {2, 8}, then two u32
        (
            EchoArray {
                array: vec![1, 0xAABBCCDD],
            }
            .into(),
            "1200 02000000 08000000 01000000 ddccbbaa",
        ),
        // 19: slot {3, 8}, then the bytes
        (
            StrEcho {
                msg: b"abc".to_vec(),
            }
            .into(),
            "1300 03000000 08000000 616263",
        ),
        (SaveConfig {}.into(), "fc04"),
        (SerializeConfig {}.into(), "fe04"),
        // 1279: slot {2, 8}, blob
        (
            UpdateConfig {
                serialized: blob.clone(),
            }
            .into(),
            "ff04 02000000 08000000 1801",
        ),
        (SerializeState {}.into(), "fb05"),
        // 1532
        (
            UpdateState { serialized: blob }.into(),
            "fc05 02000000 08000000 1801",
        ),
        (MeasureTemperature {}.into(), "fc06"),
        (HighVoltage {}.into(), "0107"),
        (OutputCurrentRms {}.into(), "0207"),
        (OutputCurrent {}.into(), "0307"),
        (InputCurrentRms {}.into(), "0407"),
        (InputCurrent {}.into(), "0507"),
        (NumberOfChannels {}.into(), "0a07"),
        (HardwareVersion {}.into(), "0b07"),
        (Uuid {}.into(), "0c07"),
        // 1806: delay_ms u8 5
        (DetectShorts { delay_ms: 5 }.into(), "0e07 05"),
        (MinWaveformVoltage {}.into(), "1007"),
        (InitializeSwitchingBoards {}.into(), "1207"),
        // 1919: n_samples u16 50
        (Capacitance { n_samples: 50 }.into(), "7f07 3200"),
        // 1925: value bool
        (WatchdogAutoRefresh { value: false }.into(), "8507 00"),
        // 1928: prescaler u8 then timeout u32, packed (no padding)
        (
            WatchdogEnable {
                prescaler: 15,
                timeout: 0x0001_2345,
            }
            .into(),
            "8807 0f 45230100",
        ),
        (WatchdogDisable {}.into(), "8907"),
        (WatchdogRefresh {}.into(), "8a07"),
        (Reboot {}.into(), "8b07"),
        // 1918 (0x077e): i8 index -1 (every test capacitor off)
        (SelectOnBoardTestCapacitor { index: -1 }.into(), "7e07 ff"),
        // 1943: slot {3, 8}, u8 channels 0, 1, 119
        (
            ChannelCapacitances {
                channels: vec![0, 1, 119],
            }
            .into(),
            "9707 03000000 08000000 000177",
        ),
        (StateOfChannels {}.into(), "9a07"),
        // 1947: slot {15, 8}, channels 5 and 17 of 120 disabled
        (
            SetDisabledChannelsMask {
                disabled_channels_mask: hex("200002000000000000000000000000"),
            }
            .into(),
            "9b07 0f000000 08000000 200002000000000000000000000000",
        ),
        (DisabledChannelsMask {}.into(), "9c07"),
        // 1949: slot {15, 8}, channels 0, 1, 9, 63, 119
        (
            SetStateOfChannels {
                channel_states: hex("030200000000008000000000000080"),
            }
            .into(),
            "9d07 0f000000 08000000 030200000000008000000000000080",
        ),
        // 1958: wall_time f64 1.7e9 = 0x41D954FC40000000
        (
            SyncTime { wall_time: 1.7e9 }.into(),
            "a607 00000040fc54d941",
        ),
        (WallTime {}.into(), "a707"),
        (TurnOffAllChannels {}.into(), "a807"),
        (Halt {}.into(), "aa07"),
    ]
}

#[test]
fn every_signature_encodes_to_its_hand_built_bytes() {
    let set = TableSet::builtin();
    let table = set.for_version("1.73.6").expect("built-in table");
    let cases = cases();
    let mut covered: Vec<CommandName> = cases.iter().map(|(r, _)| r.name()).collect();
    covered.sort();
    covered.dedup();
    assert_eq!(
        covered.len(),
        CommandName::ALL.len(),
        "every command has a case"
    );
    for (request, expected) in cases {
        let bytes = request.encode(table).expect("in the table");
        assert_eq!(
            hex::encode(&bytes),
            hex::encode(hex(expected)),
            "{}",
            request.name()
        );
        // The board's side reads it back.
        assert_eq!(Request::decode(&bytes, table), Ok(request));
    }
}

#[test]
fn replies_decode_from_hand_built_bytes() {
    assert_eq!(WatchdogEnable::decode_reply(&[0xFF]), Ok(-1));
    assert_eq!(WatchdogEnable::decode_reply(&[0x00]), Ok(0));
    assert_eq!(UpdateState::decode_reply(&[0x01]), Ok(1));
    assert_eq!(SetDisabledChannelsMask::decode_reply(&[]), Ok(()));
    assert!(SetDisabledChannelsMask::decode_reply(&[1]).is_err());
    assert_eq!(SyncTime::decode_reply(&hex("e8030000")), Ok(1000));
    assert_eq!(WallTime::decode_reply(&hex("00000040fc54d941")), Ok(1.7e9));
    assert_eq!(NumberOfChannels::decode_reply(&hex("7800")), Ok(120));
    assert_eq!(
        ChannelCapacitances::decode_reply(&hex("0000803f 00000040")),
        Ok(vec![1.0, 2.0])
    );
    assert_eq!(
        EchoArray::decode_reply(&hex("01000000 ddccbbaa")),
        Ok(vec![1, 0xAABBCCDD])
    );
    assert_eq!(
        SoftwareVersion::decode_reply(b"1.73.6"),
        Ok("1.73.6".to_owned())
    );
    assert_eq!(DigitalRead::decode_reply(&[1]), Ok(1));
    assert_eq!(WatchdogAutoRefresh::decode_reply(&[1]), Ok(true));
    assert_eq!(<f32>::decode_reply(&hex("0000c842")), Ok(100.0));
}
