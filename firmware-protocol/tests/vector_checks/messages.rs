//! Checks of the message vectors: remote calls, State/Config blobs, events.

use firmware_protocol::rpc::{CallBuilder, CallReader};
use firmware_protocol::{
    CommandName, Config, Decoder, Event, Packet, Request, RequestError, State, TableSet, WireValue,
};
use serde_json::{json, Value};

use super::{list, load, unhex, CALLS};

const STATE: &str = include_str!("../vectors/state.json");
const EVENTS: &str = include_str!("../vectors/events.json");

/// Pack an argument from its JSON description, the way any implementation would.
fn put_arg(call: &mut CallBuilder, ty: &str, value: &Value) {
    let n = || value.as_u64().expect("integer");
    match ty {
        "u8" => call.scalar(&[n() as u8]),
        "u16" => call.scalar(&(n() as u16).to_le_bytes()),
        "u32" => call.scalar(&(n() as u32).to_le_bytes()),
        "u8[]" => {
            let bytes = unhex(value);
            call.array(bytes.len() as u32, bytes)
        }
        "u16[]" => {
            let words: Vec<u16> = list(value)
                .iter()
                .map(|w| w.as_u64().expect("u16") as u16)
                .collect();
            call.array(
                words.len() as u32,
                words.iter().flat_map(|w| w.to_le_bytes()).collect(),
            )
        }
        other => panic!("unknown argument type {other}"),
    };
}

fn get_arg(reader: &mut CallReader<'_>, ty: &str) -> Value {
    match ty {
        "u8" => json!(u8::read_arg(reader, "a").expect("u8")),
        "u16" => json!(u16::read_arg(reader, "a").expect("u16")),
        "u32" => json!(u32::read_arg(reader, "a").expect("u32")),
        "u8[]" => json!(hex::encode(Vec::<u8>::read_arg(reader, "a").expect("u8[]"))),
        "u16[]" => json!(Vec::<u16>::read_arg(reader, "a").expect("u16[]")),
        other => panic!("unknown argument type {other}"),
    }
}

fn f32_of(v: &Value) -> f32 {
    v.as_f64().expect("number") as f32
}

/// (encoded reply, reply decoded back to JSON)
fn reply(ty: &str, value: &Value, bytes: &[u8]) -> (Vec<u8>, Value) {
    match ty {
        "void" => (
            ().encode_reply(),
            <()>::decode_reply(bytes)
                .map(|_| Value::Null)
                .expect("void"),
        ),
        "bool" => (
            value.as_bool().expect("bool").encode_reply(),
            json!(bool::decode_reply(bytes).expect("bool")),
        ),
        "u8" => (
            (value.as_u64().expect("u8") as u8).encode_reply(),
            json!(u8::decode_reply(bytes).expect("u8")),
        ),
        "i8" => (
            (value.as_i64().expect("i8") as i8).encode_reply(),
            json!(i8::decode_reply(bytes).expect("i8")),
        ),
        "u16" => (
            (value.as_u64().expect("u16") as u16).encode_reply(),
            json!(u16::decode_reply(bytes).expect("u16")),
        ),
        "u32" => (
            (value.as_u64().expect("u32") as u32).encode_reply(),
            json!(u32::decode_reply(bytes).expect("u32")),
        ),
        "f32" => {
            let back = f32::decode_reply(bytes).expect("f32");
            assert_eq!(back, f32_of(value));
            (f32_of(value).encode_reply(), value.clone())
        }
        "f32[]" => {
            let floats: Vec<f32> = list(value).iter().map(f32_of).collect();
            assert_eq!(Vec::<f32>::decode_reply(bytes).expect("f32[]"), floats);
            (floats.encode_reply(), value.clone())
        }
        "string" => (
            value.as_str().expect("text").to_owned().encode_reply(),
            json!(String::decode_reply(bytes).expect("UTF-8")),
        ),
        "u8[]" => (
            unhex(value),
            json!(hex::encode(Vec::<u8>::decode_reply(bytes).expect("bytes"))),
        ),
        other => panic!("unknown reply type {other}"),
    }
}

#[test]
fn call_vectors_encode_and_decode() {
    let file = load(CALLS);
    let tables = TableSet::builtin();
    let table = tables
        .for_version(file["table"]["firmware_version"].as_str().expect("version"))
        .expect("built-in table");
    let codes = file["table"]["codes"].as_object().expect("codes");
    assert_eq!(codes.len(), CommandName::ALL.len());
    for (name, code) in codes {
        let name: CommandName = name.parse().expect("known command");
        assert_eq!(
            u64::from(table.code(name).expect("in table")),
            code.as_u64().expect("code")
        );
    }
    for c in list(&file["calls"]) {
        let request = unhex(&c["request_hex"]);
        let code = c["code"].as_u64().expect("code") as u16;
        let mut call = CallBuilder::new(code);
        for a in list(&c["args"]) {
            put_arg(&mut call, a["type"].as_str().expect("type"), &a["value"]);
        }
        assert_eq!(call.finish(), request, "{}", c["name"]);

        let (read_code, mut reader) = CallReader::new(&request).expect("has a code");
        assert_eq!(read_code, code);
        for a in list(&c["args"]) {
            assert_eq!(
                get_arg(&mut reader, a["type"].as_str().expect("type")),
                a["value"]
            );
        }
        reader.finish().expect("nothing left over");

        let typed = Request::decode(&request, table).expect("decodes");
        assert_eq!(
            typed.name().as_str(),
            c["command"].as_str().expect("command")
        );
        assert_eq!(typed.encode(table).expect("encodes"), request);

        let packet = Packet::Data {
            id: c["packet_id"].as_u64().expect("id") as u16,
            payload: request,
        };
        let wire = unhex(&c["packet_hex"]);
        assert_eq!(packet.to_bytes().expect("encodes"), wire);
        assert_eq!(Decoder::new().decode(&wire), vec![packet]);

        let bytes = unhex(&c["reply_hex"]);
        let (encoded, decoded) =
            reply(c["reply_type"].as_str().expect("type"), &c["reply"], &bytes);
        assert_eq!(encoded, bytes, "{}", c["name"]);
        assert_eq!(decoded, c["reply"], "{}", c["name"]);
    }
    let unknown = list(&file["unknown_commands"]);
    assert_eq!(
        Request::decode(&unhex(&unknown[0]["request_hex"]), table),
        Err(RequestError::UnknownCode(0xFFFF))
    );
    // An empty reply to a call that returns a value: the firmware lacks the command.
    for u in unknown {
        assert!(unhex(&u["reply_hex"]).is_empty());
        assert!(bool::decode_reply(&[]).is_err());
    }
}

fn state_of(fields: &Value) -> State {
    let mut s = State::default();
    for f in list(fields) {
        let v = &f["value"];
        let (u, b) = (v.as_u64().map(|n| n as u32), v.as_bool());
        match f["name"].as_str().expect("name") {
            "voltage" => s.voltage = Some(f32_of(v)),
            "frequency" => s.frequency = Some(f32_of(v)),
            "hv_output_enabled" => s.hv_output_enabled = b,
            "hv_output_selected" => s.hv_output_selected = b,
            "channel_count" => s.channel_count = v.as_i64().map(|n| n as i32),
            "capacitance_update_interval_ms" => s.capacitance_update_interval_ms = u,
            "target_capacitance" => s.target_capacitance = Some(f32_of(v)),
            "target_count" => s.target_count = Some(f32_of(v)),
            "event_mask" => s.event_mask = u,
            "drops_update_interval_ms" => s.drops_update_interval_ms = u,
            "output_current_limit" => s.output_current_limit = Some(f32_of(v)),
            "chip_load_range_margin" => s.chip_load_range_margin = Some(f32_of(v)),
            "halt_on_chip_load_saturated" => s.halt_on_chip_load_saturated = b,
            other => panic!("unknown State field {other}"),
        }
    }
    s
}

fn config_of(fields: &Value) -> Config {
    let mut c = Config::default();
    for f in list(fields) {
        let v = &f["value"];
        let u = v.as_u64().map(|n| n as u32);
        match f["name"].as_str().expect("name") {
            "i2c_address" => c.i2c_address = u,
            "switching_board_i2c_address" => c.switching_board_i2c_address = u,
            "R7" => c.r7 = Some(f32_of(v)),
            "pot_max" => c.pot_max = Some(f32_of(v)),
            "max_voltage" => c.max_voltage = Some(f32_of(v)),
            "min_frequency" => c.min_frequency = Some(f32_of(v)),
            "max_frequency" => c.max_frequency = Some(f32_of(v)),
            "id" => c.id = v.as_str().map(str::to_owned),
            "capacitance_n_samples" => c.capacitance_n_samples = u,
            "C16" => c.c16 = Some(f32_of(v)),
            "watchdog_enabled" => c.watchdog_enabled = v.as_bool(),
            other => panic!("unknown Config field {other}"),
        }
    }
    c
}

#[test]
fn state_vectors_encode_and_decode() {
    let file = load(STATE);
    let mut states = std::collections::HashMap::new();
    for m in list(&file["messages"]) {
        let bytes = unhex(&m["hex"]);
        match m["message"].as_str() {
            Some("State") => {
                let s = state_of(&m["fields"]);
                assert_eq!(s.to_bytes(), bytes, "{}", m["name"]);
                assert_eq!(State::from_bytes(&bytes).expect("decodes"), s);
                states.insert(m["name"].as_str().expect("name").to_owned(), s);
            }
            Some("Config") => {
                let c = config_of(&m["fields"]);
                assert_eq!(c.to_bytes(), bytes, "{}", m["name"]);
                assert_eq!(Config::from_bytes(&bytes).expect("decodes"), c);
            }
            other => panic!("unknown message {other:?}"),
        }
    }
    assert_eq!(
        states["State defaults, 120 channels"],
        State::with_defaults(120)
    );
    let mut merged = states["State defaults, 120 channels"].clone();
    merged.apply(&states["State partial update"]);
    assert_eq!(merged, states["State defaults after the partial update"]);
    for r in list(&file["refused_under_default_config"]) {
        let s = State::from_bytes(&unhex(&r["hex"])).expect("decodes");
        assert_eq!(s, state_of(&r["fields"]));
        let err = s
            .validate_update(&Config::with_defaults())
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains(r["refused_field"].as_str().expect("field")),
            "{err}"
        );
    }
}

#[test]
fn event_vectors_encode_and_decode() {
    let file = load(EVENTS);
    for e in list(&file["events"]) {
        let json = e["json"].as_str().expect("json");
        let event = Event::parse(json.as_bytes()).expect("parses");
        assert_eq!(event.name(), e["event"].as_str().expect("name"));
        assert_eq!(event.to_payload(), json.as_bytes());
        assert_eq!(
            event.gate_bit().map(u32::trailing_zeros).map(u64::from),
            e["gate_bit"].as_u64()
        );
        let packet = Packet::Stream {
            id: 0,
            payload: json.as_bytes().to_vec(),
        };
        let wire = unhex(&e["packet_hex"]);
        assert_eq!(packet.to_bytes().expect("encodes"), wire);
        assert_eq!(Decoder::new().decode(&wire), vec![packet]);
    }
    for g in list(&file["gating"]) {
        let name = g["event"].as_str().expect("event");
        let event = list(&file["events"])
            .iter()
            .find(|e| e["event"] == name)
            .and_then(|e| Event::parse(e["json"].as_str()?.as_bytes()).ok())
            .expect("the event is listed");
        let mask = u32::from_str_radix(g["event_mask"].as_str().expect("mask"), 16).expect("hex");
        assert_eq!(
            event.is_enabled(mask),
            g["sent"].as_bool().expect("sent"),
            "{name} {mask:#x}"
        );
    }
}
