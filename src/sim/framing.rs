//! The firmware's side of the framing: the packet parser as base-node-rpc drives nadamq's
//! grammar, and the packet writer.
//!
//! Parser (sci-bots/nadamq `src/packet.rl` + `src/packet_actions.rl`, driven by
//! sci-bots/base-node-rpc `BaseHandler.h` `Handler`/`Receiver` and `SerialHandler.h`
//! `SerialReceiver::operator()`):
//! - one packet buffer (`Handler::packet_`): the start flag of the next packet clears
//!   `message_completed_` (`startflag_received`) and its bytes overwrite the buffer, so a packet
//!   that completed but was not processed yet is lost when another one follows;
//! - `main := Hub*` with the `$!error` action commented out: a byte the grammar does not allow
//!   (anything but `|` where a packet starts, an unknown type byte) sends the machine to ragel's
//!   error state, where it stays: the board ignores all input until it restarts;
//! - a length over the 1024-byte buffer (`length_received`) or a CRC mismatch (`crc_received`)
//!   sets `parse_error_`; the next `packet_ready()` check resets the parser (that packet and
//!   anything parsed after it in the same read is lost);
//! - after a packet is processed, `process_packet` calls `packet_reset()`.
//!
//! Writer (base-node-rpc `SerialHandler.h` `serial_write_packet`): `|||`, id (u16 BE), type,
//! then for DATA, STREAM and ID_RESPONSE length (u16 BE), payload, CRC (u16 BE). Replies are
//! built in the firmware's 8 KiB buffer, so unlike requests they may exceed 1024 bytes.

use firmware_protocol::{crc16, Packet, PacketType};

/// The firmware's packet buffer (`PACKET_SIZE=1024`, dropbot.py `build_flags.py`).
pub const PACKET_BUFFER: usize = 1024;

/// Where the parser is in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Expecting `|` number `n + 1` of the start flag.
    Flag(u8),
    /// Expecting id byte `n`.
    Id(u8),
    Type,
    /// Expecting length byte `n` (of a packet with a payload).
    Length(u8),
    Payload,
    /// Expecting CRC byte `n`.
    Crc(u8),
    /// Expecting NACK length byte `n`.
    NackLength(u8),
    /// Ragel's error state: no way out but a reset.
    Dead,
}

/// What a fed byte did, for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// A completed packet that had not been processed was overwritten by the next one.
    pub overwritten: u32,
    /// The parser entered its error state on this feed.
    pub died: bool,
}

/// The firmware's packet parser; see the module docs.
#[derive(Debug, Clone)]
pub struct FirmwareParser {
    at: At,
    id: u16,
    kind: u8,
    expected: usize,
    received: usize,
    payload: Vec<u8>,
    crc: u16,
    completed: bool,
    error: bool,
}

impl Default for FirmwareParser {
    fn default() -> Self {
        Self {
            at: At::Flag(0),
            id: 0,
            kind: 0,
            expected: 0,
            received: 0,
            payload: Vec::new(),
            crc: 0,
            completed: false,
            error: false,
        }
    }
}

impl FirmwareParser {
    /// `packet_reset()`: back to the start, nothing completed, no error.
    pub fn reset(&mut self) {
        *self = Self {
            payload: std::mem::take(&mut self.payload),
            ..Self::default()
        };
        self.payload.clear();
    }

    /// Whether the parser holds nothing: no packet started, none completed.
    pub fn is_idle(&self) -> bool {
        self.at == At::Flag(0) && !self.completed && !self.error
    }

    /// Whether the parser is stuck in its error state.
    pub fn is_dead(&self) -> bool {
        self.at == At::Dead
    }

    /// `serialEvent`: parse every available byte.
    pub fn feed(&mut self, bytes: &[u8]) -> Fed {
        let mut fed = Fed::default();
        for &b in bytes {
            if self.at == At::Dead {
                break;
            }
            let completed_before = self.completed;
            self.byte(b);
            if completed_before && !self.completed {
                fed.overwritten += 1;
            }
            if self.at == At::Dead {
                fed.died = true;
            }
        }
        fed
    }

    /// `packet_ready()`: a parse error resets the parser (nothing is ready); otherwise the
    /// completed packet, left in place until [`FirmwareParser::reset`].
    pub fn ready(&mut self) -> Option<Packet> {
        if self.error {
            self.reset();
            return None;
        }
        if !self.completed {
            return None;
        }
        let kind = PacketType::from_byte(self.kind)?;
        let length = u16::try_from(self.expected).unwrap_or(u16::MAX);
        Some(Packet::from_parts(
            kind,
            self.id,
            self.payload.clone(),
            length,
        ))
    }

    fn byte(&mut self, b: u8) {
        self.at = match self.at {
            At::Flag(n) if b == b'|' => {
                if n == 2 {
                    self.completed = false;
                    self.id = 0;
                    At::Id(0)
                } else {
                    At::Flag(n + 1)
                }
            }
            At::Flag(_) | At::Dead => At::Dead,
            At::Id(n) => {
                self.id = (self.id << 8) | u16::from(b);
                if n == 0 {
                    At::Id(1)
                } else {
                    At::Type
                }
            }
            At::Type => self.on_type(b),
            At::Length(n) => {
                self.expected = (self.expected << 8) | usize::from(b);
                if n == 0 {
                    At::Length(1)
                } else {
                    if self.expected > PACKET_BUFFER {
                        self.error = true;
                    }
                    self.payload.clear();
                    self.received = 0;
                    if self.expected == 0 {
                        At::Crc(0)
                    } else {
                        At::Payload
                    }
                }
            }
            At::Payload => {
                // Past the buffer the firmware writes out of bounds; here the bytes are only
                // counted (the packet is in error anyway).
                if self.payload.len() < PACKET_BUFFER {
                    self.payload.push(b);
                }
                self.received += 1;
                if self.received >= self.expected {
                    At::Crc(0)
                } else {
                    At::Payload
                }
            }
            At::Crc(n) => {
                self.crc = (self.crc << 8) | u16::from(b);
                if n == 0 {
                    At::Crc(1)
                } else {
                    if self.crc == crc16(&self.payload) {
                        self.completed = true;
                    } else {
                        self.error = true;
                    }
                    At::Flag(0)
                }
            }
            At::NackLength(n) => {
                self.expected = (self.expected << 8) | usize::from(b);
                if n == 0 {
                    At::NackLength(1)
                } else {
                    self.completed = true;
                    At::Flag(0)
                }
            }
        };
    }

    fn on_type(&mut self, b: u8) -> At {
        self.kind = b;
        self.expected = 0;
        self.crc = 0;
        match b {
            b'a' | b'i' => {
                self.payload.clear();
                self.completed = true;
                At::Flag(0)
            }
            b'n' => At::NackLength(0),
            b'd' | b's' | b'I' => At::Length(0),
            _ => At::Dead,
        }
    }
}

/// The wire bytes of `packet` as the firmware writes them (no length limit; see the module
/// docs).
pub fn write_packet(packet: &Packet, out: &mut Vec<u8>) {
    let payload = packet.payload();
    out.extend_from_slice(b"|||");
    out.extend_from_slice(&packet.id().to_be_bytes());
    let kind = packet.packet_type();
    out.push(kind.byte());
    if kind.has_payload() {
        // The firmware's buffer is 8 KiB: the length always fits.
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc16(payload).to_be_bytes());
    } else if let Packet::Nack { length, .. } = packet {
        out.extend_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(p: &Packet) -> Vec<u8> {
        let mut out = Vec::new();
        write_packet(p, &mut out);
        out
    }

    fn data(id: u16, payload: &[u8]) -> Packet {
        Packet::Data {
            id,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn parses_what_the_host_crate_writes() {
        let mut parser = FirmwareParser::default();
        for p in [
            data(7, b"\x7c\x7c\x7cabc"),
            data(0x7b00, b""),
            Packet::IdRequest { id: 3 },
            Packet::Ack { id: 1 },
            Packet::Nack { id: 2, length: 9 },
        ] {
            let fed = parser.feed(&p.to_bytes().unwrap());
            assert_eq!(fed, Fed::default());
            assert_eq!(parser.ready(), Some(p.clone()));
            parser.reset();
        }
        assert_eq!(bytes(&data(7, b"xy")), data(7, b"xy").to_bytes().unwrap());
    }

    #[test]
    fn one_buffer_the_next_packet_overwrites_an_unprocessed_one() {
        let mut parser = FirmwareParser::default();
        let mut two = bytes(&data(1, b"first"));
        two.extend(bytes(&data(2, b"second")));
        assert_eq!(parser.feed(&two).overwritten, 1);
        assert_eq!(parser.ready(), Some(data(2, b"second")));
        // A completed packet followed by the start of another: nothing is ready.
        parser.reset();
        let mut partial = bytes(&data(1, b"first"));
        partial.extend(b"|||\x00");
        parser.feed(&partial);
        assert_eq!(parser.ready(), None);
    }

    #[test]
    fn a_stray_byte_kills_the_parser_until_reset() {
        let mut parser = FirmwareParser::default();
        assert!(parser.feed(b"x").died);
        assert!(parser.is_dead());
        parser.feed(&bytes(&data(1, b"ok")));
        assert_eq!(parser.ready(), None);
        parser.reset();
        assert!(parser.feed(b"|||\x00\x01q").died, "unknown type byte");
        parser.reset();
        parser.feed(&bytes(&data(1, b"ok")));
        assert_eq!(parser.ready(), Some(data(1, b"ok")));
    }

    #[test]
    fn crc_and_length_errors_reset_at_the_ready_check() {
        let mut parser = FirmwareParser::default();
        let mut bad = bytes(&data(1, b"payload"));
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        bad.extend(bytes(&data(2, b"lost too")));
        parser.feed(&bad);
        assert_eq!(parser.ready(), None, "the error outlives the next packet");
        parser.feed(&bytes(&data(3, b"fine")));
        assert_eq!(parser.ready(), Some(data(3, b"fine")));
        parser.reset();
        let mut long = b"|||\x00\x01d".to_vec();
        long.extend((PACKET_BUFFER as u16 + 1).to_be_bytes());
        long.extend(vec![0u8; PACKET_BUFFER + 3]);
        parser.feed(&long);
        assert_eq!(parser.ready(), None);
        assert!(!parser.is_dead());
    }
}
