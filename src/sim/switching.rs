//! The HV switching boards and the firmware's channel arrays, as sci-bots/dropbot.py
//! `src/channels.h` / `src/channels.cpp` (`Channels`) and `src/Node.cpp`
//! (`initialize_switching_boards`) keep them.
//!
//! - Arrays are sized for `MAX_NUMBER_OF_CHANNELS` = 120: the requested states
//!   (`state_of_channels_`) and the disabled mask (`disabled_channels_mask_`).
//! - `channel_count_` is what the last scan of the I2C bus found (8 per port that answers, 40
//!   per board); the scan runs at boot only if the config's `i2c_address` is set, and again
//!   on `initialize_switching_boards()`. Boards that were not answering at the scan (e.g.
//!   powered after the control board) stay unknown: 0 channels.
//! - `_update_channels()` writes `state & !disabled` to the `channel_count_ / 40` boards
//!   found; the others are not written.
//! - `state_of_channels()` reads the boards' output registers back, so it answers what is
//!   driven (disabled channels read off) and stores that as the requested state.
//! - `detect_shorts()` tests every channel found and then rewrites the whole 120-channel mask:
//!   shorted channels disabled, all others enabled (user-disabled ones too). Channels past
//!   `channel_count_` are never tested; their reading stays 0, so they count as shorted.
//! - `disable_all_channels()` (used by `halt()`) sets the whole mask.

use std::collections::BTreeSet;

/// `MAX_NUMBER_OF_CHANNELS` (`channels.h`).
pub const MAX_CHANNELS: u16 = 120;
/// Channels per switching board (5 PCA9505 ports of 8).
pub const CHANNELS_PER_BOARD: u16 = 40;
/// Ports per switching board.
pub const PORTS_PER_BOARD: u32 = 5;

/// The switching boards and the firmware's view of them; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switching {
    /// Channels the boards physically have.
    present: u16,
    /// Whether the boards answer on I2C.
    answering: bool,
    /// `channel_count_`: what the last scan found.
    count: u16,
    /// `state_of_channels_`.
    requested: BTreeSet<u16>,
    /// `disabled_channels_mask_`.
    disabled: BTreeSet<u16>,
}

impl Switching {
    /// Boards with `present` channels, not scanned yet.
    pub fn new(present: u16, answering: bool) -> Self {
        Self {
            present: present.min(MAX_CHANNELS),
            answering,
            count: 0,
            requested: BTreeSet::new(),
            disabled: BTreeSet::new(),
        }
    }

    /// The power-on state of the firmware's arrays (RAM cleared); the boards keep answering.
    pub fn power_on(&mut self) {
        *self = Self::new(self.present, self.answering);
    }

    /// Whether the boards answer on I2C from now on.
    pub fn set_answering(&mut self, answering: bool) {
        self.answering = answering;
    }

    /// `initialize_switching_boards()`: scan; the channel count found.
    pub fn scan(&mut self) -> u16 {
        self.count = if self.answering { self.present } else { 0 };
        self.count
    }

    /// `channel_count_`.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Switching boards found by the last scan.
    pub fn boards(&self) -> u32 {
        u32::from(self.count / CHANNELS_PER_BOARD)
    }

    /// Channels driven now: requested, not disabled, on a board that is written.
    pub fn driven(&self) -> BTreeSet<u16> {
        let written = self.written();
        self.requested
            .iter()
            .copied()
            .filter(|ch| *ch < written && !self.disabled.contains(ch))
            .collect()
    }

    /// `set_state_of_channels`: the new requested states (already checked for length).
    pub fn set_requested(&mut self, channels: BTreeSet<u16>) {
        self.requested = channels;
    }

    /// `turn_off_all_channels`.
    pub fn turn_off_all(&mut self) {
        self.requested.clear();
    }

    /// `state_of_channels()`: reads the driven states back and keeps them as requested.
    pub fn read_back(&mut self) -> BTreeSet<u16> {
        let driven = self.driven();
        let written = self.written();
        self.requested.retain(|ch| *ch >= written);
        self.requested.extend(driven.iter().copied());
        driven
    }

    /// `disabled_channels_mask_`.
    pub fn disabled(&self) -> &BTreeSet<u16> {
        &self.disabled
    }

    /// `set_disabled_channels_mask`: copies as many mask bytes as given (at most 15).
    pub fn set_disabled_bytes(&mut self, mask: &[u8]) {
        for (byte_i, &byte) in mask.iter().take(usize::from(MAX_CHANNELS / 8)).enumerate() {
            for bit in 0..8u16 {
                // Fits: byte_i < 15.
                let ch = byte_i as u16 * 8 + bit;
                if byte & (1 << bit) != 0 {
                    self.disabled.insert(ch);
                } else {
                    self.disabled.remove(&ch);
                }
            }
        }
    }

    /// `disable_all_channels`.
    pub fn disable_all(&mut self) {
        self.disabled = (0..MAX_CHANNELS).collect();
    }

    /// `detect_shorts`: `shorted_on_chip` are the channels shorted to ground; the channels
    /// reported shorted (see the module docs), which become the whole disabled mask.
    pub fn detect_shorts(&mut self, shorted_on_chip: &BTreeSet<u16>) -> Vec<u16> {
        let count = self.count;
        let shorts: Vec<u16> = (0..MAX_CHANNELS)
            .filter(|ch| *ch >= count || shorted_on_chip.contains(ch))
            .collect();
        self.disabled = shorts.iter().copied().collect();
        shorts
    }

    /// Channels below this are on a board `_update_channels` writes.
    fn written(&self) -> u16 {
        (self.count / CHANNELS_PER_BOARD) * CHANNELS_PER_BOARD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_mask_then_short_detection_rewrites_it() {
        let mut s = Switching::new(120, true);
        assert_eq!(s.scan(), 120);
        s.set_requested([1, 2, 3].into());
        s.set_disabled_bytes(&[0b100]);
        assert_eq!(s.driven(), [1, 3].into());
        s.disable_all();
        assert!(s.driven().is_empty());
        assert_eq!(s.detect_shorts(&[3].into()), vec![3]);
        assert_eq!(s.driven(), [1, 2].into(), "user-disabled 2 re-enabled");
        assert_eq!(s.read_back(), [1, 2].into());
        s.set_disabled_bytes(&[]);
        assert_eq!(s.driven(), [1, 2].into(), "read back forgot 3");
    }

    #[test]
    fn unscanned_boards_have_no_channels_and_count_as_shorted() {
        let mut s = Switching::new(120, false);
        assert_eq!(s.scan(), 0);
        s.set_requested([1].into());
        assert!(s.driven().is_empty());
        assert_eq!(s.detect_shorts(&BTreeSet::new()).len(), 120);
        s.set_answering(true);
        assert_eq!(s.scan(), 120);
        s.power_on();
        assert_eq!(s.count(), 0, "RAM cleared until the next scan");
        let mut two = Switching::new(80, true);
        two.scan();
        assert_eq!(
            two.detect_shorts(&BTreeSet::new()),
            (80..120).collect::<Vec<_>>()
        );
    }
}
