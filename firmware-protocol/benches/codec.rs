//! Codec throughput: encoding and decoding 16-byte and 1 KiB DATA packets, and decoding a
//! stream of 16-byte packets with 10% garbage between them. Criterion reports packets/s and
//! bytes/s; the bar is 5 million 16-byte packets/s decoded on one core.
//!
//! `cargo bench -p firmware-protocol`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use firmware_protocol::{Decoder, Packet};

/// Packets per iteration.
const PACKETS: usize = 1000;

/// A small deterministic generator (xorshift64), so every run sees the same bytes.
struct Noise(u64);

impl Noise {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

fn packets(payload_len: usize) -> Vec<Packet> {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    (0..PACKETS)
        .map(|i| Packet::Data {
            id: (i % 0x7000) as u16,
            payload: (0..payload_len).map(|_| noise.byte()).collect(),
        })
        .collect()
}

fn wire(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        p.encode_into(&mut out).expect("bench packets encode");
    }
    out
}

/// 16-byte packets with garbage making up 10% of the bytes: noise, stray `'|'`s and false
/// starts (a start marker and a header that fails).
fn garbage_stream() -> Vec<u8> {
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);
    let mut out = Vec::new();
    let mut garbage = 0usize;
    for p in packets(16) {
        p.encode_into(&mut out).expect("bench packets encode");
        // Each packet is 27 bytes; 3 bytes of garbage per packet is 10% of the stream.
        while garbage * 9 < out.len() - garbage {
            let pick = noise.byte();
            let bytes: Vec<u8> = match pick % 8 {
                0 => vec![b'|', b'|', b'|', noise.byte(), noise.byte(), b'x'],
                1 => vec![b'|', noise.byte()],
                _ => vec![noise.byte() & 0x7B],
            };
            garbage += bytes.len();
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn throughput(packets: usize, bytes: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: packets as u64,
        bytes: bytes as u64,
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, len) in [("16B", 16), ("1KiB", 1024)] {
        let bytes = wire(&packets(len));
        group.throughput(throughput(PACKETS, bytes.len()));
        let mut decoder = Decoder::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                decoder.feed(black_box(&bytes), |p| n += black_box(p).payload().len());
                n
            })
        });
    }
    let stream = garbage_stream();
    let mut check = Decoder::new();
    assert_eq!(check.decode(&stream).len(), PACKETS, "garbage hid a packet");
    group.throughput(throughput(PACKETS, stream.len()));
    let mut decoder = Decoder::new();
    group.bench_function("16B_10pct_garbage", |b| {
        b.iter(|| {
            let mut n = 0usize;
            decoder.feed(black_box(&stream), |p| n += black_box(p).payload().len());
            n
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, len) in [("16B", 16), ("1KiB", 1024)] {
        let packets = packets(len);
        let mut out = Vec::with_capacity(wire(&packets).len());
        group.throughput(throughput(PACKETS, out.capacity()));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for p in black_box(&packets) {
                    // Bench packets are valid: an error cannot happen.
                    let _ = p.encode_into(&mut out);
                }
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
