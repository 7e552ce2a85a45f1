//! Generated serial byte streams, as a board with a bad cable or a confused firmware could send
//! them: noise, runs of `'|'`, false start markers and headers that claim the bytes after them,
//! packets cut short or with a byte flipped, events with odd JSON, packets nobody asked for.
//! Never a whole DATA packet (that would be a reply, indistinguishable from the real one).

use firmware_protocol::{Packet, MAX_REPLY_PAYLOAD};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{SBoxedStrategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const EVENT_NAMES: [&str; 8] = [
    "halted",
    "capacitance-updated",
    "shorts-detected",
    "drops-detected",
    "output_enabled",
    "output_disabled",
    "capacitance_saturated",
    "x",
];

/// STREAM payloads: event JSON near what the firmware sends, or anything.
fn event_payload() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just(r#""new_value": 1e-12"#.to_owned()),
        Just(r#""time_us": 4294967295"#.to_owned()),
        Just(r#""wall_time": -1e308"#.to_owned()),
        Just(r#""n_samples": 0"#.to_owned()),
        Just(r#""error": {"name": "output-current-exceeded"}"#.to_owned()),
        Just(r#""drops": {"channels": [[1, 2], [900]], "capacitances": [[1e-12]]}"#.to_owned()),
        Just(r#""channels": [0, 65535, -1]"#.to_owned()),
        "\"[a-z_]{1,10}\": ?(-?[0-9.e]{1,8}|null|\"[a-z]{0,8}\")",
    ];
    prop_oneof![
        3 => (prop::sample::select(EVENT_NAMES.to_vec()), vec(field, 0..5)).prop_map(|(n, f)| {
            let mut text = format!(r#"{{"event": "{n}""#);
            for f in f {
                text += ", ";
                text += &f;
            }
            text += "}";
            text.into_bytes()
        }),
        1 => vec(any::<u8>(), 0..64),
    ]
}

/// An id an encoder accepts (a `'|'` high byte is reserved).
fn id() -> impl Strategy<Value = u16> {
    any::<u16>().prop_map(|id| if id >> 8 == 0x7C { id ^ 0x0100 } else { id })
}

/// Any packet, DATA included (cut or corrupted only).
fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        (id(), vec(any::<u8>(), 0..48)).prop_map(|(id, payload)| Packet::Data { id, payload }),
        (id(), event_payload()).prop_map(|(id, payload)| Packet::Stream { id, payload }),
        (id(), vec(any::<u8>(), 0..24))
            .prop_map(|(id, payload)| Packet::IdResponse { id, payload }),
        id().prop_map(|id| Packet::Ack { id }),
        id().prop_map(|id| Packet::IdRequest { id }),
        (id(), 0..=MAX_REPLY_PAYLOAD as u16).prop_map(|(id, length)| Packet::Nack { id, length }),
    ]
}

/// A whole packet that is not DATA.
fn whole_not_data() -> impl Strategy<Value = Vec<u8>> {
    packet()
        .prop_filter("DATA would be a reply", |p| {
            !matches!(p, Packet::Data { .. })
        })
        .prop_map(|p| p.to_bytes().unwrap_or_default())
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..64),
        2 => vec(prop_oneof![3 => Just(b'|'), 1 => any::<u8>()], 0..12),
        2 => vec(any::<u8>(), 0..8).prop_map(|h| [b"|||".to_vec(), h].concat()),
        2 => (id(), prop::sample::select(b"dsInai".to_vec()), 0..=MAX_REPLY_PAYLOAD as u16,
              vec(any::<u8>(), 0..32))
            .prop_map(|(id, t, len, tail)| {
                [b"|||".as_slice(), &id.to_be_bytes(), &[t], &len.to_be_bytes(), &tail].concat()
            }),
        2 => (packet(), any::<prop::sample::Index>()).prop_map(|(p, cut)| {
            let bytes = p.to_bytes().unwrap_or_default();
            bytes[..cut.index(bytes.len().max(1))].to_vec()
        }),
        2 => (packet(), any::<prop::sample::Index>(), 1..=255u8).prop_map(|(p, at, x)| {
            let mut bytes = p.to_bytes().unwrap_or_default();
            let from = firmware_protocol::packet::HEADER_LEN.min(bytes.len());
            let at = from + at.index(bytes.len().saturating_sub(from).max(1));
            if let Some(b) = bytes.get_mut(at) {
                *b ^= x;
            }
            bytes
        }),
        3 => whole_not_data(),
    ]
}

/// Draws streams from a runner seeded with `seed`.
pub struct Streams {
    runner: TestRunner,
    streams: SBoxedStrategy<Vec<u8>>,
}

impl Streams {
    /// A generator seeded with `seed` (the same seed, the same streams).
    pub fn new(seed: u64) -> Streams {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        Streams {
            runner: TestRunner::new_with_rng(Config::default(), rng),
            streams: stream().sboxed(),
        }
    }

    /// The next stream.
    pub fn next(&mut self) -> Vec<u8> {
        self.streams
            .new_tree(&mut self.runner)
            .expect("the strategy always generates")
            .current()
    }

    /// A number from the same generator, below `n` (at least 1).
    pub fn below(&mut self, n: usize) -> usize {
        (0..n.max(1))
            .new_tree(&mut self.runner)
            .expect("a range always generates")
            .current()
    }
}
