//! Tests of the resynchronising decoder.

use super::*;

fn data(id: u16, payload: &[u8]) -> Packet {
    Packet::Data {
        id,
        payload: payload.to_vec(),
    }
}

#[test]
fn decodes_byte_by_byte() {
    let p = data(3, b"a|||b");
    let bytes = p.to_bytes().unwrap();
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for b in &bytes {
        d.feed(std::slice::from_ref(b), |p| out.push(p));
    }
    assert_eq!(out, vec![p]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn drops_bad_crc_and_finds_next() {
    let mut bad = data(1, b"xyz").to_bytes().unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let good = data(2, b"ok").to_bytes().unwrap();
    let mut d = Decoder::new();
    let out = d.decode(&[bad, good].concat());
    assert_eq!(out, vec![data(2, b"ok")]);
    assert_eq!(d.stats().crc_errors, 1);
}

#[test]
fn false_start_swallowing_a_packet_is_rescanned() {
    // A false DATA header whose length covers the real packet that follows.
    let mut stream = b"|||\x00\x01d\x00\x20".to_vec();
    let good = data(9, b"payload").to_bytes().unwrap();
    stream.extend_from_slice(&good);
    stream.extend_from_slice(&[0u8; 40]);
    let mut d = Decoder::new();
    assert_eq!(d.decode(&stream), vec![data(9, b"payload")]);
}

#[test]
fn pipe_runs_align_on_last_three() {
    let mut stream = b"||||||".to_vec();
    stream.extend_from_slice(&Packet::Ack { id: 5 }.to_bytes().unwrap());
    assert_eq!(Decoder::new().decode(&stream), vec![Packet::Ack { id: 5 }]);
}

#[test]
fn flush_releases_a_packet_held_by_a_false_start() {
    // A stray header claiming 124 bytes holds the reply behind it until the line idles.
    let mut stream = b"|||\x00\x00d\x00\x7c".to_vec();
    stream.extend_from_slice(&data(1, b"reply").to_bytes().unwrap());
    stream.extend_from_slice(b"||");
    let mut d = Decoder::new();
    assert!(d.decode(&stream).is_empty());
    assert!(d.buffered() > 0);
    let mut out = Vec::new();
    d.flush(|p| out.push(p));
    assert_eq!(out, vec![data(1, b"reply")]);
    assert_eq!(d.buffered(), 0);
    assert_eq!(
        d.decode(&Packet::Ack { id: 2 }.to_bytes().unwrap()).len(),
        1
    );
}

#[test]
fn oversized_length_is_rejected() {
    let mut stream = b"|||\x00\x00d\xff\xff".to_vec();
    stream.extend_from_slice(&data(1, b"z").to_bytes().unwrap());
    let mut d = Decoder::new();
    assert_eq!(d.decode(&stream), vec![data(1, b"z")]);
    assert_eq!(d.stats().oversized, 1);
    assert!(d.buffered() <= HEADER_LEN + MAX_REPLY_PAYLOAD + 2);
}

#[test]
fn host_takes_8k_replies_and_a_board_only_1k_requests() {
    let reply = data(0, &vec![7; MAX_REPLY_PAYLOAD]);
    let wire = reply.to_bytes().unwrap();
    assert_eq!(Decoder::new().decode(&wire), vec![reply]);
    let mut board = Decoder::board();
    assert!(board.decode(&wire).is_empty());
    assert_eq!(board.stats().oversized, 1);
    let request = data(1, &vec![7; MAX_REQUEST_PAYLOAD]);
    assert_eq!(
        board.decode(&request.to_bytes().unwrap()),
        vec![request.clone()]
    );
    let too_long = data(2, &vec![7; MAX_REQUEST_PAYLOAD + 1]);
    let mut board = Decoder::board();
    assert!(board.decode(&too_long.to_bytes().unwrap()).is_empty());
    assert!(board.buffered() <= HEADER_LEN + MAX_REQUEST_PAYLOAD + 2);
}

#[test]
fn nack_and_id_packets() {
    let packets = vec![
        Packet::Nack { id: 1, length: 12 },
        Packet::IdRequest { id: 2 },
        Packet::IdResponse {
            id: 3,
            payload: b"dropbot::1.0.0-sim".to_vec(),
        },
        Packet::Stream {
            id: 0,
            payload: br#"{"event":"halted"}"#.to_vec(),
        },
        data(4, b""),
    ];
    let bytes: Vec<u8> = packets.iter().flat_map(|p| p.to_bytes().unwrap()).collect();
    assert_eq!(Decoder::new().decode(&bytes), packets);
}
