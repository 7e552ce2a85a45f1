//! Packet framing ("NadaMQ" layout) and the CRC.
//!
//! `'|' '|' '|'` · id (u16 BE) · type (u8) · then, for DATA, STREAM and ID_RESPONSE:
//! length (u16 BE) · payload · CRC-16/ARC (u16 BE, over the payload only); NACK carries a
//! length only; ID_REQUEST and ACK carry nothing more.

use crc::{Crc, Table, CRC_16_ARC};
use thiserror::Error;

/// The start marker of every packet.
pub const START: [u8; 3] = *b"|||";

/// Largest request payload a board accepts: the firmware's receive buffer (`PACKET_SIZE`
/// 1024 in dropbot.py `build_flags.py`); its parser drops a packet whose length is larger.
pub const MAX_REQUEST_PAYLOAD: usize = 1024;

/// Largest payload a board sends: replies and events are built in the firmware's 8 KiB buffer
/// (`BUFFER_SIZE` in dropbot.py `src/Node.h`). Also the largest payload this crate encodes.
pub const MAX_REPLY_PAYLOAD: usize = 8192;

/// Bytes before the payload of a packet with a body: start, id, type, length.
pub const HEADER_LEN: usize = 3 + 2 + 1 + 2;

/// Slice-by-16 tables (8 KiB): about four times the byte-wise speed on 1 KiB payloads.
const CRC: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_ARC);

/// CRC-16/ARC (poly 0x8005 reflected, init 0, no final xor) of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC.checksum(bytes)
}

/// The packet type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `d`: a request or its reply.
    Data,
    /// `s`: an asynchronous event from the board.
    Stream,
    /// `i`: asks the board who it is.
    IdRequest,
    /// `I`: the board's identity, e.g. `dropbot::1.0.0-sim`.
    IdResponse,
    /// `a`: acknowledgement.
    Ack,
    /// `n`: negative acknowledgement (carries a length).
    Nack,
}

impl PacketType {
    /// The byte on the wire.
    pub const fn byte(self) -> u8 {
        match self {
            PacketType::Data => b'd',
            PacketType::Stream => b's',
            PacketType::IdRequest => b'i',
            PacketType::IdResponse => b'I',
            PacketType::Ack => b'a',
            PacketType::Nack => b'n',
        }
    }

    /// The type a byte stands for, if any.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'd' => PacketType::Data,
            b's' => PacketType::Stream,
            b'i' => PacketType::IdRequest,
            b'I' => PacketType::IdResponse,
            b'a' => PacketType::Ack,
            b'n' => PacketType::Nack,
            _ => return None,
        })
    }

    /// Whether packets of this type carry length, payload and CRC.
    pub const fn has_payload(self) -> bool {
        matches!(
            self,
            PacketType::Data | PacketType::Stream | PacketType::IdResponse
        )
    }
}

/// One packet of the host link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Packet {
    /// A request (host to board) or its reply (board to host).
    Data { id: u16, payload: Vec<u8> },
    /// An asynchronous event (board to host), a JSON object in practice.
    Stream { id: u16, payload: Vec<u8> },
    /// Identity request.
    IdRequest { id: u16 },
    /// Identity response, e.g. `dropbot::1.0.0-sim`.
    IdResponse { id: u16, payload: Vec<u8> },
    /// Acknowledgement.
    Ack { id: u16 },
    /// Negative acknowledgement with the payload length it refers to (at most
    /// [`MAX_REPLY_PAYLOAD`]).
    Nack { id: u16, length: u16 },
}

/// A packet that cannot be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload (or a NACK's length) is larger than [`MAX_REPLY_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    /// Ids whose high byte is `'|'` are reserved: a decoder aligns a start marker on the last
    /// three bytes of a run of `'|'`, so such an id could not be read back.
    #[error("packet id {0:#06x} is reserved (its high byte is '|', 0x7C)")]
    ReservedId(u16),
}

impl Packet {
    /// The packet id (the original firmware does not echo it).
    pub fn id(&self) -> u16 {
        match self {
            Packet::Data { id, .. }
            | Packet::Stream { id, .. }
            | Packet::IdRequest { id }
            | Packet::IdResponse { id, .. }
            | Packet::Ack { id }
            | Packet::Nack { id, .. } => *id,
        }
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Data { .. } => PacketType::Data,
            Packet::Stream { .. } => PacketType::Stream,
            Packet::IdRequest { .. } => PacketType::IdRequest,
            Packet::IdResponse { .. } => PacketType::IdResponse,
            Packet::Ack { .. } => PacketType::Ack,
            Packet::Nack { .. } => PacketType::Nack,
        }
    }

    /// The payload (empty for types without one).
    pub fn payload(&self) -> &[u8] {
        match self {
            Packet::Data { payload, .. }
            | Packet::Stream { payload, .. }
            | Packet::IdResponse { payload, .. } => payload,
            _ => &[],
        }
    }

    /// Build a packet of `packet_type` from its parts (`length` is used by NACK only).
    pub fn from_parts(packet_type: PacketType, id: u16, payload: Vec<u8>, length: u16) -> Self {
        match packet_type {
            PacketType::Data => Packet::Data { id, payload },
            PacketType::Stream => Packet::Stream { id, payload },
            PacketType::IdRequest => Packet::IdRequest { id },
            PacketType::IdResponse => Packet::IdResponse { id, payload },
            PacketType::Ack => Packet::Ack { id },
            PacketType::Nack => Packet::Nack { id, length },
        }
    }

    /// Append the packet's wire bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let payload = self.payload();
        if self.id() >> 8 == u16::from(b'|') {
            return Err(EncodeError::ReservedId(self.id()));
        }
        // A NACK's length names a payload length, so it obeys the same limit (a decoder
        // drops a NACK whose length is over it, as it would a false start).
        let len = match self {
            Packet::Nack { length, .. } => usize::from(*length),
            _ => payload.len(),
        };
        if len > MAX_REPLY_PAYLOAD {
            return Err(EncodeError::PayloadTooLarge {
                len,
                max: MAX_REPLY_PAYLOAD,
            });
        }
        out.reserve(HEADER_LEN + payload.len() + 2);
        out.extend_from_slice(&START);
        out.extend_from_slice(&self.id().to_be_bytes());
        let packet_type = self.packet_type();
        out.push(packet_type.byte());
        if packet_type.has_payload() {
            // Fits: checked against MAX_REPLY_PAYLOAD above.
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend_from_slice(payload);
            out.extend_from_slice(&crc16(payload).to_be_bytes());
        } else if let Packet::Nack { length, .. } = self {
            out.extend_from_slice(&length.to_be_bytes());
        }
        Ok(())
    }

    /// The packet's wire bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0xBB3D);
    }

    #[test]
    fn encodes_data_packet() {
        let bytes = Packet::Data {
            id: 0x0102,
            payload: vec![0xAA],
        }
        .to_bytes()
        .unwrap();
        let crc = crc16(&[0xAA]).to_be_bytes();
        assert_eq!(
            bytes,
            vec![b'|', b'|', b'|', 1, 2, b'd', 0, 1, 0xAA, crc[0], crc[1]]
        );
    }

    #[test]
    fn encodes_bodyless_and_nack() {
        assert_eq!(
            Packet::IdRequest { id: 0 }.to_bytes().unwrap(),
            b"|||\0\0i".to_vec()
        );
        assert_eq!(
            Packet::Nack { id: 1, length: 300 }.to_bytes().unwrap(),
            vec![b'|', b'|', b'|', 0, 1, b'n', 1, 44]
        );
    }

    #[test]
    fn rejects_oversized_payload() {
        let p = Packet::Stream {
            id: 0,
            payload: vec![0; MAX_REPLY_PAYLOAD + 1],
        };
        assert!(matches!(
            p.to_bytes(),
            Err(EncodeError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn nack_length_obeys_the_payload_limit() {
        let at_limit = Packet::Nack {
            id: 0,
            length: MAX_REPLY_PAYLOAD as u16,
        };
        assert!(at_limit.to_bytes().is_ok());
        assert_eq!(
            Packet::Nack {
                id: 0,
                length: MAX_REPLY_PAYLOAD as u16 + 1
            }
            .to_bytes(),
            Err(EncodeError::PayloadTooLarge {
                len: MAX_REPLY_PAYLOAD + 1,
                max: MAX_REPLY_PAYLOAD
            })
        );
    }

    #[test]
    fn hand_checked_bytes() {
        // CRC-16/ARC of "hi" worked out bit by bit: 0xEEEF.
        let data = Packet::Data {
            id: 0x0102,
            payload: b"hi".to_vec(),
        };
        assert_eq!(
            data.to_bytes().unwrap(),
            b"|||\x01\x02d\x00\x02hi\xee\xef".to_vec()
        );
        // An empty payload has CRC 0.
        let empty = Packet::Stream {
            id: 0,
            payload: Vec::new(),
        };
        assert_eq!(empty.to_bytes().unwrap(), b"|||\0\0s\0\0\0\0".to_vec());
        assert_eq!(
            Packet::Ack { id: 5 }.to_bytes().unwrap(),
            b"|||\0\x05a".to_vec()
        );
    }

    #[test]
    fn accessors_agree_with_from_parts() {
        for t in [b'd', b's', b'i', b'I', b'a', b'n'].map(PacketType::from_byte) {
            let t = t.unwrap();
            let p = Packet::from_parts(t, 9, b"xy".to_vec(), 3);
            assert_eq!(p.packet_type(), t);
            assert_eq!(p.id(), 9);
            let expected: &[u8] = if t.has_payload() { b"xy" } else { b"" };
            assert_eq!(p.payload(), expected);
        }
        assert_eq!(PacketType::from_byte(b'x'), None);
    }

    #[test]
    fn rejects_reserved_id() {
        assert_eq!(
            Packet::Ack { id: 0x7C01 }.to_bytes(),
            Err(EncodeError::ReservedId(0x7C01))
        );
    }

    #[test]
    fn type_bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(t) = PacketType::from_byte(b) {
                assert_eq!(t.byte(), b);
            }
        }
    }
}
