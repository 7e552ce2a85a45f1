//! Remote-call encoding: a request is the command code (u16 LE) followed by the arguments as a
//! packed little-endian C struct; an array argument takes a `{u32 length, u32 offset}` slot
//! (length in elements, offset in bytes from the struct's start) and its bytes follow the
//! struct, in argument order. A reply is the raw little-endian return value.

use thiserror::Error;

/// A call or reply that does not decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The request is shorter than a command code.
    #[error("request of {0} bytes has no command code")]
    NoCommandCode(usize),
    /// An argument runs past the end of the request.
    #[error("argument `{name}` runs past the end of the request ({len} bytes)")]
    Truncated { name: &'static str, len: usize },
    /// An array slot points outside the request.
    #[error(
        "array argument `{name}` ({count} elements at offset {offset}) lies outside the request"
    )]
    BadArray {
        name: &'static str,
        count: u32,
        offset: u32,
    },
    /// A reply of the wrong size for its type (an empty reply: the board does not know the
    /// command, so the command table does not match the firmware).
    #[error("reply of {got} bytes does not fit {ty} ({expected} bytes expected)")]
    ReplyLength {
        ty: &'static str,
        expected: usize,
        got: usize,
    },
    /// An array reply whose size is not a whole number of elements.
    #[error("reply of {got} bytes is not a whole number of {elem_size}-byte elements")]
    ArrayLength { elem_size: usize, got: usize },
    /// Text that is not UTF-8.
    #[error("reply is not UTF-8 text")]
    NotUtf8,
    /// Bytes left over after the last argument.
    #[error("{0} unexpected bytes after the last argument")]
    TrailingBytes(usize),
}

/// Builds a request: command code, struct, then the arrays.
#[derive(Debug, Clone, Default)]
pub struct CallBuilder {
    structure: Vec<u8>,
    /// (position of the slot in `structure`, element count, raw bytes)
    arrays: Vec<(usize, u32, Vec<u8>)>,
    code: u16,
}

impl CallBuilder {
    /// Start a call of command `code`.
    pub fn new(code: u16) -> Self {
        Self {
            code,
            ..Self::default()
        }
    }

    /// Append a scalar's little-endian bytes to the struct.
    pub fn scalar(&mut self, bytes: &[u8]) -> &mut Self {
        self.structure.extend_from_slice(bytes);
        self
    }

    /// Append an array slot of `count` elements whose raw bytes are `bytes`.
    pub fn array(&mut self, count: u32, bytes: Vec<u8>) -> &mut Self {
        self.arrays.push((self.structure.len(), count, bytes));
        self.structure.extend_from_slice(&[0; 8]);
        self
    }

    /// The finished request payload.
    pub fn finish(mut self) -> Vec<u8> {
        let mut offset = self.structure.len();
        let mut tail = Vec::new();
        for (slot, count, bytes) in &self.arrays {
            // Each slot was reserved (8 bytes) by `array`.
            if let Some(dst) = self.structure.get_mut(*slot..*slot + 8) {
                let (n, at) = dst.split_at_mut(4);
                n.copy_from_slice(&count.to_le_bytes());
                at.copy_from_slice(&(offset as u32).to_le_bytes());
            }
            offset += bytes.len();
            tail.extend_from_slice(bytes);
        }
        let mut out = Vec::with_capacity(2 + self.structure.len() + tail.len());
        out.extend_from_slice(&self.code.to_le_bytes());
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&tail);
        out
    }
}

/// Reads a request's arguments in declaration order (the board's side of a call).
#[derive(Debug, Clone)]
pub struct CallReader<'a> {
    /// The struct and arrays, after the command code.
    body: &'a [u8],
    pos: usize,
    /// End of the struct: the first byte after the last slot read.
    arrays_end: usize,
}

impl<'a> CallReader<'a> {
    /// Split a request into its command code and a reader of its arguments.
    pub fn new(request: &'a [u8]) -> Result<(u16, Self), RpcError> {
        let (code, body) = request
            .split_first_chunk::<2>()
            .ok_or(RpcError::NoCommandCode(request.len()))?;
        let reader = Self {
            body,
            pos: 0,
            arrays_end: 0,
        };
        Ok((u16::from_le_bytes(*code), reader))
    }

    /// The next `N` struct bytes.
    pub fn scalar<const N: usize>(&mut self, name: &'static str) -> Result<[u8; N], RpcError> {
        let bytes = self
            .body
            .get(self.pos..self.pos + N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(RpcError::Truncated {
                name,
                len: self.body.len(),
            })?;
        self.pos += N;
        Ok(bytes)
    }

    /// The next array slot's raw bytes, `elem_size` bytes per element.
    pub fn array(&mut self, name: &'static str, elem_size: usize) -> Result<&'a [u8], RpcError> {
        let count = u32::from_le_bytes(self.scalar::<4>(name)?);
        let offset = u32::from_le_bytes(self.scalar::<4>(name)?);
        let bad = RpcError::BadArray {
            name,
            count,
            offset,
        };
        let start = offset as usize;
        let len = (count as usize).checked_mul(elem_size).ok_or(bad.clone())?;
        let end = start.checked_add(len).ok_or(bad.clone())?;
        let bytes = self.body.get(start..end).ok_or(bad)?;
        self.arrays_end = self.arrays_end.max(end);
        Ok(bytes)
    }

    /// Check that nothing follows the struct and the arrays.
    pub fn finish(self) -> Result<(), RpcError> {
        let used = self.pos.max(self.arrays_end);
        match self.body.len().saturating_sub(used) {
            0 => Ok(()),
            extra => Err(RpcError::TrailingBytes(extra)),
        }
    }
}

/// A value that travels on the wire: an argument, or a whole reply.
pub trait WireValue: Sized {
    /// Append this value as a call argument.
    fn write_arg(&self, call: &mut CallBuilder);
    /// Read this value as the next call argument.
    fn read_arg(reader: &mut CallReader<'_>, name: &'static str) -> Result<Self, RpcError>;
    /// This value as a whole reply.
    fn encode_reply(&self) -> Vec<u8>;
    /// Decode a whole reply.
    fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError>;
}

macro_rules! scalar_wire_value {
    ($($ty:ty),*) => {$(
        impl WireValue for $ty {
            fn write_arg(&self, call: &mut CallBuilder) {
                call.scalar(&self.to_le_bytes());
            }
            fn read_arg(reader: &mut CallReader<'_>, name: &'static str) -> Result<Self, RpcError> {
                Ok(<$ty>::from_le_bytes(reader.scalar(name)?))
            }
            fn encode_reply(&self) -> Vec<u8> {
                self.to_le_bytes().to_vec()
            }
            fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError> {
                bytes.try_into().map(<$ty>::from_le_bytes).map_err(|_| RpcError::ReplyLength {
                    ty: stringify!($ty),
                    expected: size_of::<$ty>(),
                    got: bytes.len(),
                })
            }
        }

        impl WireValue for Vec<$ty> {
            fn write_arg(&self, call: &mut CallBuilder) {
                let bytes = self.iter().flat_map(|v| v.to_le_bytes()).collect();
                call.array(self.len() as u32, bytes);
            }
            fn read_arg(reader: &mut CallReader<'_>, name: &'static str) -> Result<Self, RpcError> {
                let bytes = reader.array(name, size_of::<$ty>())?;
                Self::decode_reply(bytes)
            }
            fn encode_reply(&self) -> Vec<u8> {
                self.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError> {
                let chunks = bytes.chunks_exact(size_of::<$ty>());
                if !chunks.remainder().is_empty() {
                    return Err(RpcError::ArrayLength {
                        elem_size: size_of::<$ty>(),
                        got: bytes.len(),
                    });
                }
                Ok(chunks
                    .filter_map(|c| c.try_into().ok().map(<$ty>::from_le_bytes))
                    .collect())
            }
        }
    )*};
}

scalar_wire_value!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

impl WireValue for bool {
    fn write_arg(&self, call: &mut CallBuilder) {
        call.scalar(&[u8::from(*self)]);
    }
    fn read_arg(reader: &mut CallReader<'_>, name: &'static str) -> Result<Self, RpcError> {
        Ok(reader.scalar::<1>(name)?[0] != 0)
    }
    fn encode_reply(&self) -> Vec<u8> {
        vec![u8::from(*self)]
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError> {
        match bytes {
            [b] => Ok(*b != 0),
            _ => Err(RpcError::ReplyLength {
                ty: "bool",
                expected: 1,
                got: bytes.len(),
            }),
        }
    }
}

/// No value: a void reply, or a command without arguments.
impl WireValue for () {
    fn write_arg(&self, _: &mut CallBuilder) {}
    fn read_arg(_: &mut CallReader<'_>, _: &'static str) -> Result<Self, RpcError> {
        Ok(())
    }
    fn encode_reply(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError> {
        match bytes.len() {
            0 => Ok(()),
            got => Err(RpcError::ReplyLength {
                ty: "void",
                expected: 0,
                got,
            }),
        }
    }
}

/// Text: an array of `u8` holding UTF-8.
impl WireValue for String {
    fn write_arg(&self, call: &mut CallBuilder) {
        call.array(self.len() as u32, self.as_bytes().to_vec());
    }
    fn read_arg(reader: &mut CallReader<'_>, name: &'static str) -> Result<Self, RpcError> {
        Self::decode_reply(reader.array(name, 1)?)
    }
    fn encode_reply(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self, RpcError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| RpcError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_scalars_then_arrays_with_offsets() {
        let mut call = CallBuilder::new(0x0102);
        7u8.write_arg(&mut call);
        vec![1u16, 2, 3].write_arg(&mut call);
        vec![9u8].write_arg(&mut call);
        let bytes = call.finish();
        // code, u8, slot{3, 17}, slot{1, 23}, arrays
        let expected = [
            vec![0x02, 0x01, 7],
            3u32.to_le_bytes().to_vec(),
            17u32.to_le_bytes().to_vec(),
            1u32.to_le_bytes().to_vec(),
            23u32.to_le_bytes().to_vec(),
            vec![1, 0, 2, 0, 3, 0, 9],
        ]
        .concat();
        assert_eq!(bytes, expected);

        let (code, mut r) = CallReader::new(&bytes).unwrap();
        assert_eq!(code, 0x0102);
        assert_eq!(u8::read_arg(&mut r, "a").unwrap(), 7);
        assert_eq!(Vec::<u16>::read_arg(&mut r, "b").unwrap(), vec![1, 2, 3]);
        assert_eq!(Vec::<u8>::read_arg(&mut r, "c").unwrap(), vec![9]);
        r.finish().unwrap();
    }

    #[test]
    fn rejects_arrays_outside_the_request() {
        let mut bytes = vec![0, 0];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let (_, mut r) = CallReader::new(&bytes).unwrap();
        assert!(matches!(
            Vec::<u32>::read_arg(&mut r, "x"),
            Err(RpcError::BadArray { .. })
        ));
    }

    #[test]
    fn reply_lengths_are_checked() {
        assert_eq!(f32::decode_reply(&1.5f32.to_le_bytes()).unwrap(), 1.5);
        assert!(u16::decode_reply(&[]).is_err());
        assert!(Vec::<u16>::decode_reply(&[1, 2, 3]).is_err());
        assert!(bool::decode_reply(&[1]).unwrap());
        assert!(<()>::decode_reply(&[1]).is_err());
        assert!(CallReader::new(&[1]).is_err());
    }

    #[test]
    fn text_arguments_and_trailing_bytes() {
        let mut call = CallBuilder::new(9);
        "dropbot".to_owned().write_arg(&mut call);
        1u32.write_arg(&mut call);
        let mut bytes = call.finish();
        // code, slot {7 elements, offset 12: after the slot and the u32}, u32, the text
        assert_eq!(bytes[2..14], [7, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[14..], b"dropbot");
        bytes.push(0);
        let (_, mut r) = CallReader::new(&bytes).unwrap();
        assert_eq!(String::read_arg(&mut r, "t").unwrap(), "dropbot");
        assert_eq!(u32::read_arg(&mut r, "n").unwrap(), 1);
        let (_, mut short) = CallReader::new(&bytes[..8]).unwrap();
        assert!(matches!(
            String::read_arg(&mut short, "x"),
            Err(RpcError::Truncated { name: "x", .. })
        ));
        assert_eq!(r.finish(), Err(RpcError::TrailingBytes(1)));
        assert_eq!(String::decode_reply(&[0xFF]), Err(RpcError::NotUtf8));
    }
}
