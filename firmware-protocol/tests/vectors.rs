//! Checks this crate against the shared test vectors in `tests/vectors/` (format in
//! `tests/vectors/README.md`), encoding AND decoding every one, plus a few byte strings worked
//! out by hand so the vectors do not only agree with the code that wrote them.

use firmware_protocol::{
    crc16, Decoder, EncodeError, Packet, PacketType, Request, State, TableSet,
};
use serde_json::Value;

const CRC: &str = include_str!("vectors/crc.json");
const PACKETS: &str = include_str!("vectors/packets.json");
const STREAM: &str = include_str!("vectors/stream.json");
const CALLS: &str = include_str!("vectors/calls.json");

#[path = "vector_checks/messages.rs"]
mod messages;

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().expect("a list")
}

fn packet_type(name: &str) -> PacketType {
    let byte = match name {
        "DATA" => b'd',
        "STREAM" => b's',
        "ID_REQUEST" => b'i',
        "ID_RESPONSE" => b'I',
        "ACK" => b'a',
        "NACK" => b'n',
        other => panic!("unknown packet type {other}"),
    };
    PacketType::from_byte(byte).expect("known type byte")
}

fn packet(v: &Value) -> Packet {
    let t = packet_type(v["type"].as_str().expect("type"));
    if let Some(b) = v["type_byte"].as_str() {
        assert_eq!(b.as_bytes(), [t.byte()]);
    }
    let id = v["id"].as_u64().expect("id") as u16;
    let payload = v.get("payload_hex").map(unhex).unwrap_or_default();
    let length = v["length"].as_u64().unwrap_or(0) as u16;
    Packet::from_parts(t, id, payload, length)
}

fn decode_in_chunks(bytes: &[u8], chunk: usize) -> (Vec<Packet>, Vec<Packet>) {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        decoder.feed(c, |p| out.push(p));
    }
    let mut idle = Vec::new();
    decoder.flush(|p| idle.push(p));
    (out, idle)
}

#[test]
fn crc_vectors() {
    let file = load(CRC);
    assert_eq!(file["algorithm"]["check"], "bb3d");
    for v in list(&file["vectors"]) {
        let crc = format!("{:04x}", crc16(&unhex(&v["input_hex"])));
        assert_eq!(crc, v["crc_hex"].as_str().expect("crc"), "{}", v["name"]);
    }
}

#[test]
fn packet_vectors_encode_and_decode() {
    let file = load(PACKETS);
    let mut all_wire = Vec::new();
    let mut all = Vec::new();
    for v in list(&file["packets"]) {
        let p = packet(v);
        let wire = unhex(&v["wire_hex"]);
        assert_eq!(p.to_bytes().expect("encodes"), wire, "{}", v["name"]);
        for chunk in [1, 5, wire.len()] {
            assert_eq!(decode_in_chunks(&wire, chunk), (vec![p.clone()], vec![]));
        }
        all_wire.extend_from_slice(&wire);
        all.push(p);
    }
    assert_eq!(decode_in_chunks(&all_wire, 3).0, all);
    for v in list(&file["refused"]) {
        let err = packet(v).to_bytes().expect_err("refused");
        match v["error"].as_str() {
            Some("reserved_id") => assert!(matches!(err, EncodeError::ReservedId(_))),
            Some("payload_too_large") => {
                assert!(matches!(err, EncodeError::PayloadTooLarge { .. }))
            }
            other => panic!("unknown error {other:?}"),
        }
    }
}

#[test]
fn stream_vectors_decode_in_any_chunking() {
    for s in list(&load(STREAM)["streams"]) {
        let stream = unhex(&s["stream_hex"]);
        let joined: Vec<u8> = list(&s["segments"])
            .iter()
            .flat_map(|g| unhex(&g["hex"]))
            .collect();
        assert_eq!(joined, stream);
        let expected: Vec<Packet> = list(&s["packets"]).iter().map(packet).collect();
        let idle: Vec<Packet> = list(&s["packets_when_idle"]).iter().map(packet).collect();
        for p in expected.iter().chain(&idle) {
            assert!(stream.windows(3).any(|w| w == b"|||"));
            assert!(p.to_bytes().is_ok());
        }
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let got = decode_in_chunks(&stream, chunk);
            assert_eq!(got, (expected.clone(), idle.clone()), "{}", s["name"]);
        }
    }
}

/// Bytes worked out by hand (CRC bit by bit on paper; packing from the layout rules), which
/// the vector files must also contain.
#[test]
fn hand_checked_bytes_match_the_vectors() {
    assert_eq!(crc16(b"123456789"), 0xBB3D);
    assert_eq!(crc16(b"hi"), 0xEEEF);
    let ack = "7c7c7c000561"; // '|||', id 5, 'a'
    let data = "7c7c7c0102640002" /* '|||', id 0x0102, 'd', length 2 */
        .to_owned()
        + "6869eeef";
    let nack = "7c7c7c00016e012c"; // id 1, 'n', length 300
    for wire in [ack, &data, nack] {
        assert!(
            PACKETS.contains(&format!("\"wire_hex\": \"{wire}\"")),
            "{wire}"
        );
    }
    assert_eq!(
        Packet::Ack { id: 5 }.to_bytes().expect("encodes"),
        hex::decode(ack).expect("hex")
    );

    // Under firmware 1.73.x. set_state_of_channels (code 1949 = 0x079D) with channels 0, 1, 9,
    // 63, 119 of 120: the struct is one slot {15 elements, offset 8}, then the 15 bytes.
    let states = "0302000000000080" /* bytes 0-7 */.to_owned() + "00000000000080" /* 8-14 */;
    let request = "9d07".to_owned() + "0f000000" + "08000000" + &states;
    // channel_capacitances (1943 = 0x0797): slot {3 elements, offset 8}, then the u8 channels
    // 0, 1, 119.
    let caps = "9707".to_owned() + "03000000" + "08000000" + "000177";
    // update_state (1532 = 0x05FC): protobuf voltage=90.0 (key 0x0D, f32 LE) and
    // hv_output_enabled=true (key 0x18), in a slot {7, offset 8}.
    let blob = "0d0000b442".to_owned() + "1801";
    let update = "fc05".to_owned() + "07000000" + "08000000" + &blob;
    for hex in [&request, &caps, &update] {
        assert!(
            CALLS.contains(&format!("\"request_hex\": \"{hex}\"")),
            "{hex}"
        );
    }
    let tables = TableSet::builtin();
    let table = tables.for_version("1.73.6").expect("built-in table");
    let typed = Request::decode(&hex::decode(&request).expect("hex"), table).expect("decodes");
    let channels = firmware_protocol::channels::pack([0, 1, 9, 63, 119], 120).expect("packs");
    assert_eq!(
        typed,
        firmware_protocol::commands::SetStateOfChannels {
            channel_states: channels
        }
        .into()
    );
    let state = State::from_bytes(&hex::decode(&blob).expect("hex")).expect("decodes");
    assert_eq!(
        (state.voltage, state.hv_output_enabled),
        (Some(90.0), Some(true))
    );
}
