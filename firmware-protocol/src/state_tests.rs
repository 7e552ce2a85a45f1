//! Tests of `state.rs`: defaults, field numbers, validation, merging.
use super::*;

#[test]
fn defaults_match_the_firmware() {
    let s = State::with_defaults(120);
    assert_eq!(s.voltage, Some(100.0));
    assert_eq!(s.frequency, Some(10_000.0));
    assert_eq!(s.event_mask, Some(0xFFFF_FFFE));
    assert_eq!(s.output_current_limit, Some(0.025));
    let c = Config::with_defaults();
    assert_eq!(c.max_voltage, Some(150.0));
    assert_eq!(c.c16, Some(330e-9));
    assert_eq!(c.switching_board_i2c_address, Some(32));
}

#[test]
fn an_absent_c16_is_the_default_of_the_board_s_build() {
    assert_eq!(Config::firmware_default_c16("1.73.6"), 150e-9);
    assert_eq!(Config::firmware_default_c16("1.74.1"), 150e-9);
    assert_eq!(Config::firmware_default_c16("1.74.2"), 330e-9);
    assert_eq!(Config::firmware_default_c16("1.74.3+4.g856c7fa"), 330e-9);
    assert_eq!(Config::firmware_default_c16("not a version"), 330e-9);
}

#[test]
fn field_numbers_on_the_wire() {
    // voltage = 1 (float, wire type 5): key 0x0D; event_mask = 9 (varint): key 0x48.
    let s = State {
        voltage: Some(1.0),
        ..State::default()
    };
    assert_eq!(s.encode_to_vec(), vec![0x0D, 0, 0, 0x80, 0x3F]);
    let s = State {
        event_mask: Some(1),
        ..State::default()
    };
    assert_eq!(s.encode_to_vec(), vec![0x48, 1]);
    let c = Config {
        watchdog_enabled: Some(true),
        ..Config::default()
    };
    // field 62, varint: key = 62 << 3 = 496 -> 0xF0 0x03
    assert_eq!(c.encode_to_vec(), vec![0xF0, 0x03, 1]);
}

#[test]
fn validation_names_the_field_and_range() {
    let config = Config::with_defaults();
    let bad = State {
        voltage: Some(200.0),
        ..State::default()
    };
    let err = bad.validate_update(&config).unwrap_err().to_string();
    assert!(err.contains("voltage") && err.contains("150"), "{err}");
    let dc = State {
        frequency: Some(0.0),
        ..State::default()
    };
    assert!(dc.validate_update(&config).is_ok());
    let low = State {
        frequency: Some(50.0),
        ..State::default()
    };
    assert!(low.validate_update(&config).is_err());
    let nan = State {
        voltage: Some(f32::NAN),
        ..State::default()
    };
    assert!(nan.validate_update(&config).is_err());
}

#[test]
fn apply_merges_present_fields_only() {
    let mut s = State::with_defaults(120);
    s.apply(&State {
        voltage: Some(90.0),
        channel_count: Some(7),
        ..State::default()
    });
    assert_eq!(s.voltage, Some(90.0));
    assert_eq!(s.channel_count, Some(120));
    let update = State {
        voltage: Some(90.0),
        hv_output_enabled: Some(true),
        ..State::default()
    };
    assert_eq!(update.describe(), "voltage = 90, hv_output_enabled = true");
    assert_eq!(s.frequency, Some(10_000.0));
}

#[test]
fn bytes_round_trip_and_config_limits() {
    let s = State::with_defaults(120);
    assert_eq!(State::from_bytes(&s.to_bytes()).unwrap(), s);
    let c = Config::with_defaults();
    assert_eq!(Config::from_bytes(&c.to_bytes()).unwrap(), c);
    assert!(matches!(
        State::from_bytes(&[0x0D, 0]),
        Err(StateError::Decode(_))
    ));
    let inverted = Config {
        min_frequency: Some(20_000.0),
        ..Config::default()
    };
    assert!(inverted.validate_update(&c).is_err());
    let lower = Config {
        max_voltage: Some(120.0),
        ..Config::default()
    };
    assert!(lower.validate_update(&c).is_ok());
}
