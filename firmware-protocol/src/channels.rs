//! Bit-packed channel sets: channel n is bit n%8 of byte n/8, LSB first, exactly
//! `channel_count / 8` bytes (as `state_of_channels` and the disabled mask use them).

use std::collections::BTreeSet;

use thiserror::Error;

/// A channel set that does not fit the board.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// A channel number at or above the channel count.
    #[error("channel {channel} does not exist: the board has channels 0 to {max}", max = .channel_count.saturating_sub(1))]
    OutOfRange { channel: u16, channel_count: u16 },
    /// A channel count that is not a whole number of bytes.
    #[error("channel count {0} is not a multiple of 8")]
    BadCount(u16),
}

/// Pack `channels` into `channel_count / 8` bytes.
pub fn pack(
    channels: impl IntoIterator<Item = u16>,
    channel_count: u16,
) -> Result<Vec<u8>, ChannelError> {
    if channel_count % 8 != 0 {
        return Err(ChannelError::BadCount(channel_count));
    }
    let mut bytes = vec![0u8; usize::from(channel_count / 8)];
    for channel in channels {
        let byte = bytes
            .get_mut(usize::from(channel / 8))
            .filter(|_| channel < channel_count)
            .ok_or(ChannelError::OutOfRange {
                channel,
                channel_count,
            })?;
        *byte |= 1 << (channel % 8);
    }
    Ok(bytes)
}

/// Bytes that hold every channel a `u16` can number.
const MAX_BYTES: usize = (u16::MAX as usize + 1) / 8;

/// The channels whose bits are set (bytes past the 8192nd, beyond any `u16` channel number,
/// are ignored).
pub fn unpack(bytes: &[u8]) -> BTreeSet<u16> {
    (0u16..)
        .zip(bytes.iter().take(MAX_BYTES))
        .flat_map(|(i, byte)| {
            (0..8u16)
                .filter(move |bit| byte & (1 << bit) != 0)
                .map(move |bit| i * 8 + bit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_lsb_first() {
        assert_eq!(
            pack([0, 9, 15], 16).unwrap(),
            vec![0b0000_0001, 0b1000_0010]
        );
        assert_eq!(
            unpack(&[0b0000_0001, 0b1000_0010]),
            BTreeSet::from([0, 9, 15])
        );
        assert_eq!(pack([], 120).unwrap().len(), 15);
    }

    #[test]
    fn rejects_out_of_range() {
        assert_eq!(
            pack([16], 16),
            Err(ChannelError::OutOfRange {
                channel: 16,
                channel_count: 16
            })
        );
        assert_eq!(pack([], 12), Err(ChannelError::BadCount(12)));
        assert!(pack([16], 16).unwrap_err().to_string().contains("0 to 15"));
    }

    #[test]
    fn round_trips_120_channels() {
        let channels = BTreeSet::from([0, 7, 8, 63, 64, 119]);
        let bytes = pack(channels.iter().copied(), 120).unwrap();
        assert_eq!(bytes.len(), 15);
        assert_eq!(bytes[0], 0b1000_0001);
        assert_eq!(bytes[14], 0b1000_0000);
        assert_eq!(unpack(&bytes), channels);
    }

    #[test]
    fn unpack_of_huge_input_stops_at_the_last_u16_channel() {
        let bytes = vec![0xFF; MAX_BYTES + 10];
        let channels = unpack(&bytes);
        assert_eq!(channels.len(), usize::from(u16::MAX) + 1);
        assert_eq!(channels.last(), Some(&u16::MAX));
    }
}
