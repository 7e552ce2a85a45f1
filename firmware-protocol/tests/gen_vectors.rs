//! The generator of the shared test vectors in `tests/vectors/`. It was run once; the files
//! it wrote are committed and are the truth that `tests/vectors.rs` checks the crate against.
//!
//! Run as an ignored test it only compares what it would write with the committed files:
//! `cargo test -p firmware-protocol --test gen_vectors -- --ignored`. To add vectors, extend
//! it, set `WRITE_VECTORS=1` to rewrite the files, and review the diff by hand: existing
//! vectors must not change.

use firmware_protocol::{crc16, Decoder, Event, Packet, PacketType, SIMULATOR_VERSION};
use serde_json::{json, Value};

#[path = "vector_gen/messages.rs"]
mod messages;

use messages::{call_vectors, event_vectors, state_vectors};

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// An f32 as the shortest decimal that reads back to the same f32.
fn f32v(x: f32) -> Value {
    serde_json::from_str(&format!("{x:?}")).expect("f32 prints as a JSON number")
}

fn type_name(t: PacketType) -> &'static str {
    match t {
        PacketType::Data => "DATA",
        PacketType::Stream => "STREAM",
        PacketType::IdRequest => "ID_REQUEST",
        PacketType::IdResponse => "ID_RESPONSE",
        PacketType::Ack => "ACK",
        PacketType::Nack => "NACK",
    }
}

fn packet_json(name: &str, p: &Packet) -> Value {
    let t = p.packet_type();
    let mut v = json!({ "name": name, "type": type_name(t), "type_byte": (t.byte() as char).to_string(), "id": p.id() });
    if t.has_payload() {
        v["payload_hex"] = json!(hex(p.payload()));
    }
    if let Packet::Nack { length, .. } = p {
        v["length"] = json!(length);
    }
    v["wire_hex"] = json!(hex(&p.to_bytes().expect("vector packets encode")));
    v
}

fn data(id: u16, payload: &[u8]) -> Packet {
    Packet::Data {
        id,
        payload: payload.to_vec(),
    }
}

/// Write a vector file when `WRITE_VECTORS` is set; otherwise check it is unchanged.
fn write(name: &str, value: &Value) {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(value).expect("vectors serialise") + "\n";
    if std::env::var_os("WRITE_VECTORS").is_some() {
        std::fs::write(&path, text).expect("vectors written");
    } else {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{name} differs from what the generator writes"
        );
    }
}

fn crc_vectors() -> Value {
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("check value", b"123456789".to_vec()),
        ("empty", vec![]),
        ("one zero byte", vec![0]),
        ("one 0xFF byte", vec![0xFF]),
        ("hi", b"hi".to_vec()),
        ("start marker", b"|||".to_vec()),
        ("identity", b"dropbot::1.0.0-sim".to_vec()),
        (
            "1024 bytes counting 0..255",
            (0..1024).map(|i| i as u8).collect(),
        ),
    ];
    let vectors: Vec<Value> = inputs
        .iter()
        .map(|(name, input)| json!({ "name": name, "input_hex": hex(input), "crc_hex": format!("{:04x}", crc16(input)) }))
        .collect();
    json!({
        "algorithm": { "name": "CRC-16/ARC", "width": 16, "poly": "8005", "reflected_poly": "a001",
            "init": "0000", "refin": true, "refout": true, "xorout": "0000", "check": "bb3d" },
        "vectors": vectors,
    })
}

fn packet_vectors() -> Value {
    let event = Event::OutputEnabled.to_payload();
    let call = [38u8, 0, 15, 0, 0, 0, 8, 0, 0, 0]
        .iter()
        .copied()
        .chain([0; 15])
        .collect::<Vec<_>>();
    let list = [
        (
            "DATA request (set_state_of_channels, all off)",
            data(1, &call),
        ),
        ("DATA reply true", data(1, &[1])),
        ("DATA hand-checked", data(0x0102, b"hi")),
        ("DATA empty payload (void reply)", data(2, b"")),
        ("DATA payload containing |||", data(3, b"a|||b")),
        ("DATA payload of '|' only", data(4, b"||||||")),
        (
            "DATA maximum request payload (1024 bytes)",
            data(5, &(0..1024).map(|i| i as u8).collect::<Vec<_>>()),
        ),
        (
            "STREAM maximum payload (8192 bytes)",
            Packet::Stream {
                id: 0,
                payload: (0..8192).map(|i| (i % 251) as u8).collect(),
            },
        ),
        (
            "DATA highest id below the reserved range",
            data(0x7BFF, b"x"),
        ),
        (
            "DATA lowest id above the reserved range",
            data(0x7D00, b"x"),
        ),
        ("DATA id 0xFFFF", data(0xFFFF, b"x")),
        (
            "STREAM event",
            Packet::Stream {
                id: 0,
                payload: event,
            },
        ),
        (
            "STREAM empty payload",
            Packet::Stream {
                id: 0,
                payload: vec![],
            },
        ),
        ("ID_REQUEST", Packet::IdRequest { id: 0 }),
        (
            "ID_RESPONSE",
            Packet::IdResponse {
                id: 0,
                payload: format!("dropbot::{SIMULATOR_VERSION}").into_bytes(),
            },
        ),
        ("ACK", Packet::Ack { id: 5 }),
        ("NACK", Packet::Nack { id: 1, length: 300 }),
        ("NACK length 0", Packet::Nack { id: 6, length: 0 }),
    ];
    let packets: Vec<Value> = list.iter().map(|(n, p)| packet_json(n, p)).collect();
    let refused = json!([
        { "name": "reserved id (high byte '|')", "type": "ACK", "id": 0x7C01, "error": "reserved_id" },
        { "name": "reserved id 0x7C7C", "type": "DATA", "id": 0x7C7C, "payload_hex": "00", "error": "reserved_id" },
        { "name": "payload over the maximum", "type": "DATA", "id": 1, "payload_hex": hex(&[0; 8193]), "error": "payload_too_large" },
        { "name": "NACK length over the maximum", "type": "NACK", "id": 1, "length": 8193, "error": "payload_too_large" },
    ]);
    json!({ "max_payload": 8192, "max_request_payload": 1024, "packets": packets, "refused": refused })
}

/// A stream vector: segments (garbage or packets) and the packets a decoder must return, then
/// those it returns when the line goes idle.
fn stream_vector(
    name: &str,
    segments: &[(&str, Vec<u8>, Option<Packet>)],
    idle: &[Packet],
) -> Value {
    let stream: Vec<u8> = segments.iter().flat_map(|s| s.1.clone()).collect();
    let expected: Vec<Packet> = segments.iter().filter_map(|s| s.2.clone()).collect();
    // The intended outcome, checked in every chunking before it is written down.
    for chunk in [1, 2, 7, stream.len()] {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for c in stream.chunks(chunk) {
            decoder.feed(c, |p| out.push(p));
        }
        assert_eq!(out, expected, "{name}, chunks of {chunk}");
        let mut after = Vec::new();
        decoder.flush(|p| after.push(p));
        assert_eq!(after, idle, "{name}, idle");
    }
    let segs: Vec<Value> = segments
        .iter()
        .map(|(note, bytes, p)| json!({ "kind": if p.is_some() { "packet" } else { "garbage" }, "note": note, "hex": hex(bytes) }))
        .collect();
    let pj = |ps: &[Packet]| ps.iter().map(|p| packet_json("", p)).collect::<Vec<_>>();
    json!({ "name": name, "segments": segs, "stream_hex": hex(&stream), "packets": pj(&expected), "packets_when_idle": pj(idle) })
}

fn stream_vectors() -> Value {
    let g = |note, bytes: &[u8]| (note, bytes.to_vec(), None);
    let p = |p: Packet| ("", p.to_bytes().expect("encodes"), Some(p));
    let mut bad_crc = data(3, b"lost").to_bytes().expect("encodes");
    if let Some(last) = bad_crc.last_mut() {
        *last ^= 0x01;
    }
    let truncated = data(8, b"abcd").to_bytes().expect("encodes")[..9].to_vec();
    let mixed = stream_vector(
        "garbage, false starts and packets",
        &[
            g("noise without '|'", b"\x00\x13 hello\r\n"),
            p(Packet::IdResponse {
                id: 0,
                payload: b"dropbot::1.0.0-sim".to_vec(),
            }),
            g("single and double '|'", b"|x||y"),
            p(Packet::Ack { id: 1 }),
            g("start marker, unknown type 'z'", b"|||\x00\x01z"),
            p(data(2, b"a|||b")),
            g("DATA with a bad CRC", &bad_crc),
            p(Packet::Stream {
                id: 0,
                payload: Event::OutputEnabled.to_payload(),
            }),
            g("header with a length over 8192", b"|||\x00\x04d\xff\xff"),
            p(Packet::Nack { id: 4, length: 12 }),
            g(
                "false start whose length (32) covers the next packet",
                b"|||\x00\x05d\x00\x20",
            ),
            p(data(6, b"payload")),
            g("start marker making a run of six '|' with the next", b"|||"),
            p(Packet::IdRequest { id: 7 }),
            g("a packet cut off after 9 bytes", &truncated),
            p(data(9, &(0..40).collect::<Vec<u8>>())),
            p(data(10, b"")),
            g("trailing noise", b"\xff\xfe"),
        ],
        &[],
    );
    let held = stream_vector(
        "false start holding back the last packet until the line is idle",
        &[
            g("header claiming 64 bytes", b"|||\x00\x0ad\x00\x40"),
            (
                "reply, returned only when the line goes idle",
                data(1, b"reply").to_bytes().expect("encodes"),
                None,
            ),
        ],
        &[data(1, b"reply")],
    );
    json!({ "streams": [mixed, held] })
}

#[test]
#[ignore = "generator of tests/vectors/*.json (WRITE_VECTORS=1 rewrites them)"]
fn generate_vectors() {
    write("crc.json", &crc_vectors());
    write("packets.json", &packet_vectors());
    write("stream.json", &stream_vectors());
    write("calls.json", &call_vectors());
    write("state.json", &state_vectors());
    write("events.json", &event_vectors());
}
