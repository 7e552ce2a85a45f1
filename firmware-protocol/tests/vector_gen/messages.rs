//! Generator of the message vectors: remote calls, State/Config blobs, events.

use std::collections::BTreeMap;

use firmware_protocol::commands::*;
use firmware_protocol::events::{Drops, HaltReason};
use firmware_protocol::{
    CommandName, CommandTable, Config, Event, Packet, Request, State, TableSet, WireValue,
};
use serde_json::{json, Value};

use super::{data, f32v, hex};

/// The firmware whose table the call vectors use (1.73.0 to 1.74.1 share it).
pub const VECTOR_FIRMWARE: &str = "1.73.6";

fn table() -> CommandTable {
    TableSet::builtin()
        .for_version(VECTOR_FIRMWARE)
        .expect("built-in table")
        .clone()
}

fn arg(name: &str, ty: &str, value: Value) -> Value {
    json!({ "name": name, "type": ty, "value": value })
}

fn call_vector<C: Command + Into<Request>>(
    name: &str,
    call: C,
    args: Vec<Value>,
    reply_type: &str,
    reply: C::Reply,
    reply_value: Value,
) -> Value {
    let table = table();
    let request: Request = call.into();
    let payload = request
        .encode(&table)
        .expect("simulator table has every command");
    assert_eq!(Request::decode(&payload, &table).as_ref(), Ok(&request));
    let reply_bytes = reply.encode_reply();
    json!({
        "name": name, "command": C::NAME.as_str(), "code": table.code(C::NAME).expect("code"),
        "args": args, "request_hex": hex(&payload),
        "packet_id": 1, "packet_hex": hex(&data(1, &payload).to_bytes().expect("encodes")),
        "reply_type": reply_type, "reply": reply_value, "reply_hex": hex(&reply_bytes),
    })
}

pub fn call_vectors() -> Value {
    let table = table();
    let codes: BTreeMap<&str, u16> = CommandName::ALL
        .iter()
        .map(|n| (n.as_str(), table.code(*n).expect("code")))
        .collect();
    let states = firmware_protocol::channels::pack([0, 1, 9, 63, 119], 120).expect("120 channels");
    let update = State {
        voltage: Some(90.0),
        hv_output_enabled: Some(true),
        ..State::default()
    }
    .to_bytes();
    let defaults = State::with_defaults(120).to_bytes();
    let caps = vec![3.0e-12f32, 0.0, 2.5e-12];
    let calls = vec![
        call_vector(
            "software_version",
            SoftwareVersion {},
            vec![],
            "string",
            VECTOR_FIRMWARE.to_owned(),
            json!(VECTOR_FIRMWARE),
        ),
        call_vector(
            "number_of_channels",
            NumberOfChannels {},
            vec![],
            "u16",
            120,
            json!(120),
        ),
        call_vector(
            "microseconds",
            Microseconds {},
            vec![],
            "u32",
            123_456_789,
            json!(123_456_789),
        ),
        call_vector(
            "set_state_of_channels: channels 0, 1, 9, 63, 119 of 120 (15 bytes)",
            SetStateOfChannels {
                channel_states: states.clone(),
            },
            vec![arg("channel_states", "u8[]", json!(hex(&states)))],
            "bool",
            true,
            json!(true),
        ),
        call_vector(
            "state_of_channels",
            StateOfChannels {},
            vec![],
            "u8[]",
            states.clone(),
            json!(hex(&states)),
        ),
        call_vector(
            "capacitance",
            Capacitance { n_samples: 50 },
            vec![arg("n_samples", "u16", json!(50))],
            "f32",
            1.5e-12,
            f32v(1.5e-12),
        ),
        call_vector(
            "channel_capacitances: channels 0, 1, 119 as a u8 array",
            ChannelCapacitances {
                channels: vec![0, 1, 119],
            },
            vec![arg("channels", "u8[]", json!(hex(&[0, 1, 119])))],
            "f32[]",
            caps.clone(),
            Value::Array(caps.iter().map(|c| f32v(*c)).collect()),
        ),
        call_vector(
            "detect_shorts",
            DetectShorts { delay_ms: 5 },
            vec![arg("delay_ms", "u8", json!(5))],
            "u8[]",
            vec![3, 7],
            json!(hex(&[3, 7])),
        ),
        call_vector(
            "update_state: voltage 90, hv_output_enabled true",
            UpdateState {
                serialized: update.clone(),
            },
            vec![arg("serialized", "u8[]", json!(hex(&update)))],
            "u8",
            1,
            json!(1),
        ),
        call_vector(
            "serialize_state: defaults, 120 channels",
            SerializeState {},
            vec![],
            "u8[]",
            defaults.clone(),
            json!(hex(&defaults)),
        ),
        call_vector(
            "watchdog_enable: two scalars, an i8 reply",
            WatchdogEnable {
                prescaler: 0,
                timeout: 1000,
            },
            vec![
                arg("prescaler", "u8", json!(0)),
                arg("timeout", "u32", json!(1000)),
            ],
            "i8",
            0,
            json!(0),
        ),
        call_vector(
            "turn_off_all_channels",
            TurnOffAllChannels {},
            vec![],
            "void",
            (),
            Value::Null,
        ),
    ];
    let unknown = json!([{ "name": "unknown command code 0xFFFF", "request_hex": "ffff", "reply_hex": "" },
        { "name": "code 54, unused in every DropBot build (BaseNode ends at 19, the next class starts at 255), with a u32 argument", "request_hex": hex(&[&[54, 0][..], &500u32.to_le_bytes()].concat()), "reply_hex": "" }]);
    json!({ "table": { "firmware_version": VECTOR_FIRMWARE, "codes": codes }, "calls": calls, "unknown_commands": unknown })
}

/// `{name, number, type, value}` of every field present, in field-number order.
fn present(fields: Vec<(&str, u32, &str, Option<Value>)>) -> Value {
    let list = fields
        .into_iter()
        .filter_map(|(name, number, ty, v)| {
            v.map(|v| json!({ "name": name, "number": number, "type": ty, "value": v }))
        })
        .collect();
    Value::Array(list)
}

fn state_fields(s: &State) -> Value {
    let j = |v: Option<bool>| v.map(|v| json!(v));
    let u = |v: Option<u32>| v.map(|v| json!(v));
    present(vec![
        ("voltage", 1, "float", s.voltage.map(f32v)),
        ("frequency", 2, "float", s.frequency.map(f32v)),
        ("hv_output_enabled", 3, "bool", j(s.hv_output_enabled)),
        ("hv_output_selected", 4, "bool", j(s.hv_output_selected)),
        (
            "channel_count",
            5,
            "int32",
            s.channel_count.map(|v| json!(v)),
        ),
        (
            "capacitance_update_interval_ms",
            6,
            "uint32",
            u(s.capacitance_update_interval_ms),
        ),
        (
            "target_capacitance",
            7,
            "float",
            s.target_capacitance.map(f32v),
        ),
        ("target_count", 8, "float", s.target_count.map(f32v)),
        ("event_mask", 9, "uint32", u(s.event_mask)),
        (
            "drops_update_interval_ms",
            10,
            "uint32",
            u(s.drops_update_interval_ms),
        ),
        (
            "output_current_limit",
            11,
            "float",
            s.output_current_limit.map(f32v),
        ),
        (
            "chip_load_range_margin",
            12,
            "float",
            s.chip_load_range_margin.map(f32v),
        ),
        (
            "halt_on_chip_load_saturated",
            13,
            "bool",
            j(s.halt_on_chip_load_saturated),
        ),
    ])
}

fn config_fields(c: &Config) -> Value {
    let u = |v: Option<u32>| v.map(|v| json!(v));
    present(vec![
        ("i2c_address", 3, "uint32", u(c.i2c_address)),
        (
            "switching_board_i2c_address",
            53,
            "uint32",
            u(c.switching_board_i2c_address),
        ),
        ("R7", 54, "float", c.r7.map(f32v)),
        ("pot_max", 55, "float", c.pot_max.map(f32v)),
        ("max_voltage", 56, "float", c.max_voltage.map(f32v)),
        ("min_frequency", 57, "float", c.min_frequency.map(f32v)),
        ("max_frequency", 58, "float", c.max_frequency.map(f32v)),
        ("id", 59, "string", c.id.clone().map(|v| json!(v))),
        (
            "capacitance_n_samples",
            60,
            "uint32",
            u(c.capacitance_n_samples),
        ),
        ("C16", 61, "float", c.c16.map(f32v)),
        (
            "watchdog_enabled",
            62,
            "bool",
            c.watchdog_enabled.map(|v| json!(v)),
        ),
    ])
}

pub fn state_vectors() -> Value {
    let defaults = State::with_defaults(120);
    let partial = State {
        voltage: Some(90.0),
        hv_output_enabled: Some(true),
        ..State::default()
    };
    let mut merged = defaults.clone();
    merged.apply(&partial);
    let cdefaults = Config::with_defaults();
    let cpartial = Config {
        id: Some("chip-7".into()),
        max_voltage: Some(120.0),
        ..Config::default()
    };
    let s = |name: &str, st: &State| json!({ "name": name, "message": "State", "fields": state_fields(st), "hex": hex(&st.to_bytes()) });
    let c = |name: &str, cf: &Config| json!({ "name": name, "message": "Config", "fields": config_fields(cf), "hex": hex(&cf.to_bytes()) });
    let refused = |name: &str, st: State, field: &str| {
        assert!(st.validate_update(&cdefaults).is_err(), "{name}");
        json!({ "name": name, "message": "State", "fields": state_fields(&st), "hex": hex(&st.to_bytes()), "refused_field": field })
    };
    json!({
        "messages": [
            s("State defaults, 120 channels", &defaults),
            s("State partial update", &partial),
            s("State defaults after the partial update", &merged),
            s("State empty", &State::default()),
            s("State event mask with gated events on", &State { event_mask: Some(0xFFFF_FFFF), ..State::default() }),
            c("Config defaults", &cdefaults),
            c("Config partial update", &cpartial),
        ],
        "refused_under_default_config": [
            refused("voltage over max_voltage", State { voltage: Some(200.0), ..State::default() }, "voltage"),
            refused("frequency under min_frequency", State { frequency: Some(50.0), ..State::default() }, "frequency"),
            refused("output_current_limit over 0.5 A", State { output_current_limit: Some(0.75), ..State::default() }, "output_current_limit"),
            refused("output_current_limit of 0", State { output_current_limit: Some(0.0), ..State::default() }, "output_current_limit"),
        ],
    })
}

pub fn event_vectors() -> Value {
    let events = [
        Event::OutputEnabled,
        Event::OutputDisabled,
        Event::CapacitanceUpdated {
            new_value: 1.5e-12,
            time_us: 1_000_000,
            n_samples: 50,
            v_a: 99.5,
        },
        Event::CapacitanceExceeded {
            new_value: 3.25e-12,
            target: 3e-12,
            time_us: 2_000_000,
            n_samples: 50,
            count: 10,
            v_a: 100.0,
        },
        Event::Halted {
            wall_time: 12.5,
            error: HaltReason::OutputCurrentExceeded {
                output_current: Some(0.03),
            },
        },
        Event::Halted {
            wall_time: 13.0,
            error: HaltReason::ChipLoadSaturated {
                chip_load: Some(32100),
                margin: Some(983),
            },
        },
        Event::CapacitanceSaturated {
            wall_time: 13.5,
            error: HaltReason::ChipLoadSaturated {
                chip_load: Some(-32100),
                margin: Some(983),
            },
        },
        Event::Halted {
            wall_time: 14.0,
            error: HaltReason::OutputCurrentExceeded {
                output_current: None,
            },
        },
        Event::ShortsDetected {
            values: vec![3, 77],
        },
        Event::ChannelsUpdated {
            actuated: vec![0, 1, 9],
            start: 500,
            end: 5500,
            n: 3,
        },
        Event::DropsDetected {
            drops: Drops {
                channels: vec![vec![1, 2], vec![40]],
                capacitances: vec![vec![2.5e-12, 3e-12], vec![1e-12]],
            },
            start: 100,
            end: 9000,
        },
    ];
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            let payload = e.to_payload();
            let packet = Packet::Stream { id: 0, payload: payload.clone() };
            json!({ "event": e.name(), "json": String::from_utf8(payload).expect("JSON is UTF-8"),
                "gate_bit": e.gate_bit().map(u32::trailing_zeros), "packet_hex": hex(&packet.to_bytes().expect("encodes")) })
        })
        .collect();
    let masks = [0xFFFF_FFFEu32, 0xFFFF_FFFF, 1, 1 | 1 << 28, 1 << 28, 0];
    let gating: Vec<Value> = events
        .iter()
        .filter(|e| matches!(e, Event::OutputEnabled | Event::ShortsDetected { .. } | Event::ChannelsUpdated { .. } | Event::DropsDetected { .. }))
        .flat_map(|e| masks.iter().map(move |m| json!({ "event": e.name(), "event_mask": format!("{m:08x}"), "sent": e.is_enabled(*m) })))
        .collect();
    json!({ "events": list, "gating": gating })
}
