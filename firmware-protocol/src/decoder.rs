//! Incremental, resynchronising packet decoder.
//!
//! Fed arbitrary chunks, it yields whole packets. A candidate that turns out false (unknown
//! type, length over the limit, bad CRC) is dropped and the bytes after its first `'|'` are
//! scanned again, so a real packet hidden behind a false start is still found. A run of more
//! than three `'|'` aligns on its last three (ids with a `'|'` high byte are reserved). Memory
//! is bounded by one maximum-size packet. A candidate still open when the line goes idle is
//! given up with [`Decoder::flush`], which releases a real packet a false start was holding.

use crate::packet::{
    crc16, Packet, PacketType, HEADER_LEN, MAX_REPLY_PAYLOAD, MAX_REQUEST_PAYLOAD,
};

/// Counters of what the decoder saw besides good packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Packets decoded.
    pub packets: u64,
    /// Candidates dropped for a CRC mismatch.
    pub crc_errors: u64,
    /// Candidates dropped for an unknown type byte.
    pub bad_types: u64,
    /// Candidates dropped for a length over the limit.
    pub oversized: u64,
    /// Bytes skipped while looking for a start marker.
    pub discarded_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Counting `'|'` bytes of a start marker.
    Seek(u8),
    IdHi,
    IdLo,
    Type,
    LenHi,
    LenLo,
    Payload,
    CrcHi,
    CrcLo,
}

/// The decoder; see the module docs.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_payload: usize,
    step: Step,
    id: u16,
    packet_type: PacketType,
    len: usize,
    crc: u16,
    /// Bytes of the current candidate from its first `'|'`.
    candidate: Vec<u8>,
    /// Bytes to scan again before new input, after a false start.
    replay: Vec<u8>,
    stats: DecoderStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A host's decoder: payloads up to [`MAX_REPLY_PAYLOAD`], the largest reply or event a
    /// board sends.
    pub fn new() -> Self {
        Self::with_max_payload(MAX_REPLY_PAYLOAD)
    }

    /// A board's decoder: payloads up to [`MAX_REQUEST_PAYLOAD`], the firmware's receive
    /// buffer (a longer request is dropped as a false start, as the firmware drops it).
    pub fn board() -> Self {
        Self::with_max_payload(MAX_REQUEST_PAYLOAD)
    }

    /// A decoder accepting payloads up to `max_payload` bytes (capped at `u16::MAX`).
    pub fn with_max_payload(max_payload: usize) -> Self {
        let max_payload = max_payload.min(usize::from(u16::MAX));
        Self {
            max_payload,
            step: Step::Seek(0),
            id: 0,
            packet_type: PacketType::Data,
            len: 0,
            crc: 0,
            candidate: Vec::with_capacity(HEADER_LEN + max_payload + 2),
            replay: Vec::new(),
            stats: DecoderStats::default(),
        }
    }

    /// What the decoder has seen so far.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }

    /// Bytes held for a packet not yet complete (at most one maximum-size packet).
    pub fn buffered(&self) -> usize {
        self.candidate.len() + self.replay.len()
    }

    /// Forget any partial packet (e.g. after the link was reopened).
    pub fn reset(&mut self) {
        self.step = Step::Seek(0);
        self.candidate.clear();
        self.replay.clear();
    }

    /// Feed a chunk of bytes; `sink` receives every packet completed by it, in order.
    pub fn feed(&mut self, mut input: &[u8], mut sink: impl FnMut(Packet)) {
        loop {
            while !self.replay.is_empty() {
                let replay = std::mem::take(&mut self.replay);
                let used = self.scan(&replay, &mut sink);
                // A false start inside the replay: its tail goes after the new replay.
                self.replay
                    .extend_from_slice(replay.get(used..).unwrap_or_default());
            }
            if input.is_empty() {
                return;
            }
            let used = self.scan(input, &mut sink);
            input = input.get(used..).unwrap_or_default();
        }
    }

    /// The line went quiet in the middle of a candidate: treat every buffered byte as final.
    ///
    /// A false start (a stray `|||` and header) claims the bytes after it as its payload, so
    /// a real packet right behind it is only returned once enough bytes have arrived to prove
    /// the candidate wrong, and on a request/reply link they may never come. A real board
    /// sends a packet in one go (well under 2 ms for 1 KiB over USB), so a candidate still open
    /// after the line has been idle for some milliseconds is a false start: call this then
    /// (when [`Decoder::buffered`] is not 0). It drops each pending candidate as a false start
    /// and rescans its bytes after its first `'|'`, giving `sink` the packets found; the
    /// decoder holds nothing afterwards. A real packet cut off by a stalled link is dropped.
    pub fn flush(&mut self, mut sink: impl FnMut(Packet)) {
        while self.step != Step::Seek(0) {
            self.fail(0);
            self.feed(&[], &mut sink);
        }
        self.candidate.clear();
    }

    /// Convenience: feed a chunk and collect the packets it completes.
    pub fn decode(&mut self, input: &[u8]) -> Vec<Packet> {
        let mut out = Vec::new();
        self.feed(input, |p| out.push(p));
        out
    }

    /// Scan `bytes` until they are used up or a candidate fails; returns how many were used.
    /// On failure `self.replay` holds the candidate's bytes after its first `'|'`.
    fn scan(&mut self, bytes: &[u8], sink: &mut impl FnMut(Packet)) -> usize {
        let mut i = 0;
        while let Some(&byte) = bytes.get(i) {
            match self.step {
                Step::Seek(0) => match bytes
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| b == b'|')
                {
                    Some(at) => {
                        self.stats.discarded_bytes += at as u64;
                        self.candidate.clear();
                        self.candidate.push(b'|');
                        self.step = Step::Seek(1);
                        i += at + 1;
                        continue;
                    }
                    None => {
                        self.stats.discarded_bytes += (bytes.len() - i) as u64;
                        return bytes.len();
                    }
                },
                Step::Seek(n) => {
                    if byte == b'|' {
                        self.candidate.push(byte);
                        self.step = if n == 2 {
                            Step::IdHi
                        } else {
                            Step::Seek(n + 1)
                        };
                    } else {
                        self.stats.discarded_bytes += u64::from(n) + 1;
                        self.candidate.clear();
                        self.step = Step::Seek(0);
                    }
                }
                Step::IdHi if byte == b'|' => {
                    // A longer run of '|': the marker is its last three bytes.
                    self.stats.discarded_bytes += 1;
                }
                Step::IdHi => {
                    self.candidate.push(byte);
                    self.id = u16::from(byte) << 8;
                    self.step = Step::IdLo;
                }
                Step::IdLo => {
                    self.candidate.push(byte);
                    self.id |= u16::from(byte);
                    self.step = Step::Type;
                }
                Step::Type => {
                    self.candidate.push(byte);
                    let Some(packet_type) = PacketType::from_byte(byte) else {
                        self.stats.bad_types += 1;
                        return self.fail(i);
                    };
                    self.packet_type = packet_type;
                    if packet_type.has_payload() || packet_type == PacketType::Nack {
                        self.step = Step::LenHi;
                    } else {
                        self.emit(Vec::new(), 0, sink);
                    }
                }
                Step::LenHi => {
                    self.candidate.push(byte);
                    self.len = usize::from(byte) << 8;
                    self.step = Step::LenLo;
                }
                Step::LenLo => {
                    self.candidate.push(byte);
                    self.len |= usize::from(byte);
                    if self.len > self.max_payload {
                        self.stats.oversized += 1;
                        return self.fail(i);
                    }
                    if self.packet_type == PacketType::Nack {
                        self.emit(Vec::new(), self.len as u16, sink);
                    } else if self.len == 0 {
                        self.step = Step::CrcHi;
                    } else {
                        self.step = Step::Payload;
                    }
                }
                Step::Payload => {
                    let have = self.candidate.len() - HEADER_LEN;
                    let take = (self.len - have).min(bytes.len() - i);
                    let chunk = bytes.get(i..i + take).unwrap_or_default();
                    self.candidate.extend_from_slice(chunk);
                    if have + take == self.len {
                        self.step = Step::CrcHi;
                    }
                    i += take;
                    continue;
                }
                Step::CrcHi => {
                    self.candidate.push(byte);
                    self.crc = u16::from(byte) << 8;
                    self.step = Step::CrcLo;
                }
                Step::CrcLo => {
                    self.candidate.push(byte);
                    self.crc |= u16::from(byte);
                    let payload = self
                        .candidate
                        .get(HEADER_LEN..HEADER_LEN + self.len)
                        .unwrap_or_default();
                    if crc16(payload) != self.crc {
                        self.stats.crc_errors += 1;
                        return self.fail(i);
                    }
                    let payload = payload.to_vec();
                    self.emit(payload, 0, sink);
                }
            }
            i += 1;
        }
        bytes.len()
    }

    fn emit(&mut self, payload: Vec<u8>, length: u16, sink: &mut impl FnMut(Packet)) {
        self.stats.packets += 1;
        self.candidate.clear();
        self.step = Step::Seek(0);
        sink(Packet::from_parts(
            self.packet_type,
            self.id,
            payload,
            length,
        ));
    }

    /// Drop the candidate whose last byte was `bytes[i]`; scan its bytes after the first
    /// `'|'` again.
    fn fail(&mut self, i: usize) -> usize {
        self.stats.discarded_bytes += 1;
        self.replay.clear();
        self.replay
            .extend_from_slice(self.candidate.get(1..).unwrap_or_default());
        self.candidate.clear();
        self.step = Step::Seek(0);
        i + 1
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
