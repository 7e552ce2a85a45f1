//! Property tests of the codec: packet and call round trips, the decoder against garbage, and
//! "never panics" on random input for every parser.
//!
//! Each property runs twice: a quick test (proptest's default of 256 cases, or
//! `PROPTEST_CASES`) and an `#[ignore]`d long run of 1,000,000 cases:
//! `cargo test -p firmware-protocol --release --test properties -- --ignored`.

use firmware_protocol::commands::*;
use firmware_protocol::packet::HEADER_LEN;
use firmware_protocol::rpc::CallReader;
use firmware_protocol::{
    channels, parse_identity, CommandName, CommandTable, Config, Decoder, Event, Packet,
    PacketType, Request, State, WireValue, MAX_REPLY_PAYLOAD,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Cases of the `#[ignore]`d long runs.
const LONG_CASES: u32 = 1_000_000;

/// The most a decoder may hold: one maximum-size packet.
const MAX_BUFFERED: usize = HEADER_LEN + MAX_REPLY_PAYLOAD + 2;

const TYPES: [PacketType; 6] = [
    PacketType::Data,
    PacketType::Stream,
    PacketType::IdRequest,
    PacketType::IdResponse,
    PacketType::Ack,
    PacketType::Nack,
];

fn long() -> ProptestConfig {
    ProptestConfig::with_cases(LONG_CASES)
}

/// Any id an encoder accepts (a `'|'` high byte is reserved).
fn any_id() -> impl Strategy<Value = u16> {
    any::<u16>().prop_map(|id| if id >> 8 == 0x7C { id ^ 0x0100 } else { id })
}

/// Mostly short payloads, some rich in `'|'`, now and then up to the maximum.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..=32),
        2 => vec(prop_oneof![Just(b'|'), any::<u8>()], 0..=64),
        1 => vec(any::<u8>(), 0..=MAX_REPLY_PAYLOAD),
    ]
}

fn any_packet() -> impl Strategy<Value = Packet> {
    (
        0..TYPES.len(),
        any_id(),
        payload(),
        0..=MAX_REPLY_PAYLOAD as u16,
    )
        .prop_map(|(t, id, payload, len)| Packet::from_parts(TYPES[t], id, payload, len))
}

/// Chunk sizes to feed a stream in (cycled; none means all at once).
fn chunking() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![4 => 1usize..16, 1 => 1usize..2048], 0..8)
}

/// Bytes that are not a packet, or not one a decoder may return.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Plain noise (which contains a '|' now and then).
        3 => vec(any::<u8>(), 0..16),
        // Runs and pairs of '|'.
        2 => vec(prop_oneof![3 => Just(b'|'), 1 => any::<u8>()], 0..12),
        // A start marker and random header bytes.
        2 => vec(any::<u8>(), 0..8).prop_map(|h| [b"|||".to_vec(), h].concat()),
        // A plausible header whose length swallows what follows.
        2 => (any::<u16>(), prop::sample::select(b"dsIn".to_vec()), any::<u16>())
            .prop_map(|(id, t, len)| {
                let len = len % (MAX_REPLY_PAYLOAD as u16 + 1);
                [b"|||".as_slice(), &id.to_be_bytes(), &[t], &len.to_be_bytes()].concat()
            }),
        // A packet cut short.
        2 => (any_packet(), any::<prop::sample::Index>()).prop_map(|(p, cut)| {
            let bytes = p.to_bytes().unwrap_or_default();
            let cut = cut.index(bytes.len().max(1));
            bytes.get(..cut).unwrap_or_default().to_vec()
        }),
        // A packet with a corrupted byte after its header (bad payload or CRC).
        2 => (any_packet(), any::<prop::sample::Index>(), 1..=255u8).prop_map(|(p, at, x)| {
            let mut bytes = p.to_bytes().unwrap_or_default();
            let at = HEADER_LEN.min(bytes.len()) + at.index(bytes.len().saturating_sub(HEADER_LEN).max(1));
            if let Some(b) = bytes.get_mut(at) {
                *b ^= x;
            }
            bytes
        }),
    ]
}

fn chunks<'a>(bytes: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes.next().copied().unwrap_or(rest.len()).min(rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// Feed `bytes` in `sizes` chunks, checking the memory bound after each; then `flush` if
/// asked.
fn decode_chunked(
    bytes: &[u8],
    sizes: &[usize],
    flush: bool,
) -> Result<Vec<Packet>, TestCaseError> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for chunk in chunks(bytes, sizes) {
        decoder.feed(chunk, |p| out.push(p));
        prop_assert!(decoder.buffered() <= MAX_BUFFERED, "{}", decoder.buffered());
    }
    if flush {
        decoder.flush(|p| out.push(p));
    }
    prop_assert_eq!(decoder.stats().packets, out.len() as u64);
    Ok(out)
}

fn check_round_trip(packets: Vec<Packet>, sizes: Vec<usize>) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    for p in &packets {
        p.encode_into(&mut bytes)?;
    }
    prop_assert_eq!(decode_chunked(&bytes, &sizes, false)?, packets);
    Ok(())
}

/// The guarantee against garbage: every original packet is returned at its place, unless a
/// returned packet that is not an original overlaps it (a false start that passed the CRC,
/// odds about 2^-16 for a false DATA/STREAM/ID_RESPONSE header, or a bodyless false packet).
fn check_garbage(
    segments: Vec<(Vec<u8>, Packet)>,
    tail: Vec<u8>,
    sizes: Vec<usize>,
) -> Result<(), TestCaseError> {
    let mut stream = Vec::new();
    let mut originals = Vec::new(); // (start, end, packet)
    for (noise, packet) in segments {
        stream.extend_from_slice(&noise);
        let start = stream.len();
        packet.encode_into(&mut stream)?;
        originals.push((start, stream.len(), packet));
    }
    stream.extend_from_slice(&tail);

    // Byte by byte, then the line goes idle: `flush` gives up on any open candidate.
    let mut decoder = Decoder::new();
    let mut found = Vec::new();
    for b in &stream {
        decoder.feed(std::slice::from_ref(b), |p| found.push(p));
    }
    decoder.flush(|p| found.push(p));
    prop_assert_eq!(decoder.buffered(), 0);
    // Where each packet came from: the decoder returns the earliest-starting valid packet
    // after the previous one, so that is the first place after it holding the packet's bytes
    // (a decoded packet re-encodes to exactly the bytes it came from).
    let mut decoded: Vec<(usize, usize, Packet)> = Vec::new(); // (start, end, packet)
    for p in found {
        let wire = p.to_bytes()?;
        let from = decoded.last().map_or(0, |d| d.1);
        let at = stream
            .get(from..)
            .and_then(|rest| rest.windows(wire.len()).position(|w| w == wire));
        prop_assert!(at.is_some(), "{:?} is not in the stream after {}", p, from);
        let start = from + at.unwrap_or_default();
        decoded.push((start, start + wire.len(), p));
    }
    // Chunking never changes the outcome.
    let chunked = decode_chunked(&stream, &sizes, true)?;
    prop_assert_eq!(
        &chunked,
        &decoded.iter().map(|d| d.2.clone()).collect::<Vec<_>>()
    );

    let is_original = |d: &(usize, usize, Packet)| originals.contains(d);
    for original in &originals {
        if decoded.contains(original) {
            continue;
        }
        let (start, end, _) = original;
        let excused = decoded
            .iter()
            .any(|d| !is_original(d) && d.0 < *end && *start < d.1);
        prop_assert!(excused, "lost {:?}; decoded {:?}", original, decoded);
    }
    Ok(())
}

/// Arguments from which any command can be built.
#[derive(Debug, Clone)]
struct Args {
    bytes: Vec<u8>,
    longs: Vec<u32>,
    small: u8,
    word: u16,
    long: u32,
    flag: bool,
    double: f64,
}

fn args() -> impl Strategy<Value = Args> {
    (
        vec(any::<u8>(), 0..64),
        vec(any::<u32>(), 0..64),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
        any::<bool>(),
        any::<f64>().prop_filter("NaN never equals itself", |d| !d.is_nan()),
    )
        .prop_map(|(bytes, longs, small, word, long, flag, double)| Args {
            bytes,
            longs,
            small,
            word,
            long,
            flag,
            double,
        })
}

/// One request of every command (the match is exhaustive, so a new command must be added).
fn request(name: CommandName, a: Args) -> Request {
    use CommandName as N;
    match name {
        N::BaseNodeSoftwareVersion => BaseNodeSoftwareVersion {}.into(),
        N::PackageName => PackageName {}.into(),
        N::DisplayName => DisplayName {}.into(),
        N::Manufacturer => Manufacturer {}.into(),
        N::SoftwareVersion => SoftwareVersion {}.into(),
        N::Url => Url {}.into(),
        N::Microseconds => Microseconds {}.into(),
        N::Milliseconds => Milliseconds {}.into(),
        N::DigitalRead => DigitalRead { pin: a.small }.into(),
        N::EchoArray => EchoArray { array: a.longs }.into(),
        N::StrEcho => StrEcho { msg: a.bytes }.into(),
        N::SaveConfig => SaveConfig {}.into(),
        N::SerializeConfig => SerializeConfig {}.into(),
        N::UpdateConfig => UpdateConfig {
            serialized: a.bytes,
        }
        .into(),
        N::SerializeState => SerializeState {}.into(),
        N::UpdateState => UpdateState {
            serialized: a.bytes,
        }
        .into(),
        N::MeasureTemperature => MeasureTemperature {}.into(),
        N::HighVoltage => HighVoltage {}.into(),
        N::OutputCurrentRms => OutputCurrentRms {}.into(),
        N::OutputCurrent => OutputCurrent {}.into(),
        N::InputCurrentRms => InputCurrentRms {}.into(),
        N::InputCurrent => InputCurrent {}.into(),
        N::NumberOfChannels => NumberOfChannels {}.into(),
        N::HardwareVersion => HardwareVersion {}.into(),
        N::Uuid => Uuid {}.into(),
        N::DetectShorts => DetectShorts { delay_ms: a.small }.into(),
        N::MinWaveformVoltage => MinWaveformVoltage {}.into(),
        N::InitializeSwitchingBoards => InitializeSwitchingBoards {}.into(),
        N::Capacitance => Capacitance { n_samples: a.word }.into(),
        N::WatchdogAutoRefresh => WatchdogAutoRefresh { value: a.flag }.into(),
        N::WatchdogEnable => WatchdogEnable {
            prescaler: a.small,
            timeout: a.long,
        }
        .into(),
        N::WatchdogDisable => WatchdogDisable {}.into(),
        N::WatchdogRefresh => WatchdogRefresh {}.into(),
        N::Reboot => Reboot {}.into(),
        N::SelectOnBoardTestCapacitor => SelectOnBoardTestCapacitor {
            index: a.small as i8,
        }
        .into(),
        N::ChannelCapacitances => ChannelCapacitances { channels: a.bytes }.into(),
        N::StateOfChannels => StateOfChannels {}.into(),
        N::SetDisabledChannelsMask => SetDisabledChannelsMask {
            disabled_channels_mask: a.bytes,
        }
        .into(),
        N::DisabledChannelsMask => DisabledChannelsMask {}.into(),
        N::SetStateOfChannels => SetStateOfChannels {
            channel_states: a.bytes,
        }
        .into(),
        N::SyncTime => SyncTime {
            wall_time: a.double,
        }
        .into(),
        N::WallTime => WallTime {}.into(),
        N::TurnOffAllChannels => TurnOffAllChannels {}.into(),
        N::Halt => Halt {}.into(),
    }
}

/// A table giving the commands distinct codes from `base`, in shuffled order.
fn shuffled_table() -> impl Strategy<Value = CommandTable> {
    let n = CommandName::ALL.len();
    (
        Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
        0..=(u16::MAX as usize - n),
    )
        .prop_map(|(order, base)| {
            let mut text = "format = 1\nfirmware_versions = [\"x\"]\n[codes]\n".to_owned();
            for (name, slot) in CommandName::ALL.iter().zip(order) {
                text += &format!("{} = {}\n", name.as_str(), base + slot);
            }
            CommandTable::from_toml(&text).unwrap_or_else(|_| CommandTable::simulator())
        })
}

fn check_call(table: CommandTable, which: usize, a: Args) -> Result<(), TestCaseError> {
    let name = CommandName::ALL[which % CommandName::ALL.len()];
    let request = request(name, a);
    prop_assert_eq!(request.name(), name);
    let payload = request.encode(&table)?;
    let code = table.code(name)?.to_le_bytes();
    prop_assert_eq!(payload.get(..2), Some(code.as_slice()));
    prop_assert_eq!(Request::decode(&payload, &table), Ok(request));
    Ok(())
}

fn check_replies(
    text: String,
    bytes: Vec<u8>,
    floats: Vec<f32>,
    scalars: (u32, u16, bool, f32),
) -> Result<(), TestCaseError> {
    prop_assert_eq!(String::decode_reply(&text.encode_reply()), Ok(text));
    prop_assert_eq!(Vec::<u8>::decode_reply(&bytes.encode_reply()), Ok(bytes));
    let back = Vec::<f32>::decode_reply(&floats.encode_reply())?;
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    prop_assert_eq!(bits(&back), bits(&floats));
    let (a, b, c, d) = scalars;
    prop_assert_eq!(u32::decode_reply(&a.encode_reply()), Ok(a));
    prop_assert_eq!(u16::decode_reply(&b.encode_reply()), Ok(b));
    prop_assert_eq!(bool::decode_reply(&c.encode_reply()), Ok(c));
    prop_assert_eq!(f32::decode_reply(&d.encode_reply())?.to_bits(), d.to_bits());
    Ok(())
}

/// Random input into every parser: errors are fine, panics are not.
fn check_no_panic(bytes: Vec<u8>, text: String, code: usize) -> Result<(), TestCaseError> {
    let table = CommandTable::simulator();
    let _ = Request::decode(&bytes, &table);
    // A known code with random arguments gets past the code lookup.
    let name = CommandName::ALL[code % CommandName::ALL.len()];
    let known = [table.code(name)?.to_le_bytes().as_slice(), &bytes].concat();
    let _ = Request::decode(&known, &table);
    if let Ok((_, mut reader)) = CallReader::new(&bytes) {
        while reader.array("x", 1 + code % 8).is_ok() {}
        let _ = reader.finish();
    }
    let config = Config::from_bytes(&bytes).unwrap_or_default();
    let _ = config.validate_update(&Config::with_defaults());
    if let Ok(state) = State::from_bytes(&bytes) {
        let _ = state.validate_update(&config);
        State::with_defaults(120).apply(&state);
    }
    let _ = Event::parse(&bytes);
    let _ = Event::parse(text.as_bytes());
    let _ = CommandTable::from_toml(&text);
    let _ = parse_identity(&text);
    let _ = channels::unpack(&bytes);
    let _ = channels::pack(bytes.iter().map(|&b| u16::from(b)), code as u16);
    Ok(())
}

/// Text close enough to the real formats to reach deep into the parsers.
fn near_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "format = [0-9]\nfirmware_versions = \\[\"[a-z0-9.-]{0,8}\"\\]\n\\[codes\\]\n([a-z_]{1,24} = -?[0-9]{1,6}\n){0,6}",
        "\\{\"event\": ?\"(halted|shorts-detected|drops-detected|capacitance-updated|x)\"(, ?\"[a-zA-Z_]{1,10}\": ?(-?[0-9.e]{1,8}|\\[[0-9, ]{0,8}\\]|\\{\\}|null|\"[a-z-]{0,20}\"))*\\}",
        "[a-z]{0,8}(::)?[0-9a-z.-]{0,10}",
    ]
}

macro_rules! properties {
    ($($quick:ident / $slow:ident ($($arg:ident in $strategy:expr),+) => $check:ident;)*) => {
        proptest! {
            $(
                #[test]
                fn $quick($($arg in $strategy),+) { $check($($arg),+)?; }
            )*
        }
        proptest! {
            #![proptest_config(long())]
            $(
                #[test]
                #[ignore = "long run: cargo test -p firmware-protocol --release --test properties -- --ignored"]
                fn $slow($($arg in $strategy),+) { $check($($arg),+)?; }
            )*
        }
    };
}

properties! {
    packets_round_trip_in_any_chunking / packets_round_trip_long
        (packets in vec(any_packet(), 1..6), sizes in chunking()) => check_round_trip;
    decoder_returns_untouched_packets_amid_garbage / decoder_amid_garbage_long
        (segments in vec((garbage(), any_packet()), 1..6), tail in garbage(), sizes in chunking())
        => check_garbage;
    calls_round_trip_for_every_command / calls_round_trip_long
        (table in shuffled_table(), which in any::<usize>(), a in args()) => check_call;
    replies_round_trip / replies_round_trip_long
        (text in any::<String>(), bytes in vec(any::<u8>(), 0..64),
         floats in vec(any::<f32>(), 0..16), scalars in any::<(u32, u16, bool, f32)>())
        => check_replies;
    parsers_never_panic / parsers_never_panic_long
        (bytes in vec(any::<u8>(), 0..256), text in near_text(), code in any::<usize>())
        => check_no_panic;
}

#[test]
fn encoder_refuses_what_a_decoder_could_not_read_back() {
    for id in 0x7C00..=0x7CFF {
        assert!(Packet::Ack { id }.to_bytes().is_err());
    }
    let big = Packet::Data {
        id: 0,
        payload: vec![0; MAX_REPLY_PAYLOAD + 1],
    };
    assert!(big.to_bytes().is_err());
}
