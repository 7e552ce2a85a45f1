//! The Teensy 3's USB CDC transmit path, as PaulStoffregen/cores `teensy3/usb_serial.c` and
//! `teensy3/usb_dev.c` have it:
//! - `usb_serial_write` copies bytes into the current 64-byte packet (`CDC_TX_SIZE`); a packet
//!   that fills is handed to the USB hardware at once (`usb_tx`);
//! - every write sets `usb_cdc_transmit_flush_timer = TRANSMIT_FLUSH_TIMEOUT` (5);
//! - the start-of-frame interrupt (`usb_isr`, `USB_ISTAT_SOFTOK`, once per 1 ms USB frame)
//!   counts it down and at zero `usb_serial_flush_callback` sends the partial packet.
//!
//! So a reply or event over 64 bytes leaves in pieces: every full 64-byte packet at once, the
//! rest 4 to 5 ms later (at the fifth frame boundary after the last write); bytes written
//! before that join the partial packet and restart the timer. The firmware never calls
//! `Serial.flush()`.
//!
//! This runs on host instants, not simulation time: with a virtual clock the firmware's time
//! stands still between `advance` calls, but the USB hardware keeps its 1 ms frames, so split
//! packets still reach the host.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes in one USB full-speed bulk packet (`CDC_TX_SIZE`).
pub const USB_PACKET: usize = 64;
/// `TRANSMIT_FLUSH_TIMEOUT`, in 1 ms start-of-frame ticks.
pub const FLUSH_FRAMES: u32 = 5;
const FRAME: Duration = Duration::from_millis(1);

/// Bytes ready for the host from an instant on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// When the USB hardware sends them.
    pub at: Instant,
    /// The bytes (one or more 64-byte packets, or a partial one).
    pub bytes: Vec<u8>,
}

/// The transmit side; see the module docs. With `split` off (fast timing) every write is sent
/// whole at once.
#[derive(Debug)]
pub struct UsbTx {
    split: bool,
    /// Start of USB frame 0 (frames are 1 ms apart from here).
    epoch: Instant,
    ready: VecDeque<Chunk>,
    partial: Vec<u8>,
    flush_at: Option<Instant>,
}

impl UsbTx {
    /// A transmit path whose frames start at `epoch`.
    pub fn new(split: bool, epoch: Instant) -> Self {
        Self {
            split,
            epoch,
            ready: VecDeque::new(),
            partial: Vec::with_capacity(USB_PACKET),
            flush_at: None,
        }
    }

    /// `Serial.write(bytes)` at `at`. Writes must come in time order.
    pub fn write(&mut self, bytes: &[u8], at: Instant) {
        if bytes.is_empty() {
            return;
        }
        if !self.split {
            self.ready.push_back(Chunk {
                at,
                bytes: bytes.to_vec(),
            });
            return;
        }
        self.flush_due(at);
        let mut full = Vec::new();
        for &b in bytes {
            self.partial.push(b);
            if self.partial.len() == USB_PACKET {
                full.append(&mut self.partial);
            }
        }
        if !full.is_empty() {
            self.ready.push_back(Chunk { at, bytes: full });
        }
        self.flush_at = (!self.partial.is_empty()).then(|| self.flush_deadline(at));
    }

    /// The next bytes due at `now`, or when the next ones are due (`None`: nothing waits).
    pub fn pop(&mut self, now: Instant) -> Result<Vec<u8>, Option<Instant>> {
        self.flush_due(now);
        match self.ready.front() {
            Some(c) if c.at <= now => {
                Ok(self.ready.pop_front().map(|c| c.bytes).unwrap_or_default())
            }
            Some(c) => Err(Some(c.at)),
            None => Err(self.flush_at),
        }
    }

    /// Bytes not yet sent (counted), forgotten: the host is gone or the board restarted.
    pub fn clear(&mut self) -> usize {
        let n = self.ready.iter().map(|c| c.bytes.len()).sum::<usize>() + self.partial.len();
        self.ready.clear();
        self.partial.clear();
        self.flush_at = None;
        n
    }

    /// Move the partial packet to the ready queue if its timer ran out by `now`.
    fn flush_due(&mut self, now: Instant) {
        if let Some(at) = self.flush_at.filter(|&at| at <= now) {
            let bytes = std::mem::take(&mut self.partial);
            self.ready.push_back(Chunk { at, bytes });
            self.flush_at = None;
        }
    }

    /// The fifth frame boundary after `at`.
    fn flush_deadline(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.epoch);
        let frame = since.as_nanos() / FRAME.as_nanos();
        let frame = u32::try_from(frame).unwrap_or(u32::MAX - FLUSH_FRAMES);
        self.epoch + FRAME * (frame + FLUSH_FRAMES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn full_packets_go_at_once_and_the_tail_after_the_flush_timer() {
        let epoch = Instant::now();
        let mut usb = UsbTx::new(true, epoch);
        let t = epoch + MS * 10 + Duration::from_micros(300);
        usb.write(&[1u8; 150], t);
        assert_eq!(usb.pop(t).unwrap().len(), 128);
        // The tail waits for the fifth frame boundary: 4.7 ms later.
        let tail_at = epoch + MS * 15;
        assert_eq!(usb.pop(t), Err(Some(tail_at)));
        assert_eq!(
            usb.pop(tail_at - Duration::from_micros(1)),
            Err(Some(tail_at))
        );
        assert_eq!(usb.pop(tail_at).unwrap().len(), 22);
        assert_eq!(usb.pop(tail_at), Err(None));
    }

    #[test]
    fn later_writes_join_the_partial_packet_and_restart_the_timer() {
        let epoch = Instant::now();
        let mut usb = UsbTx::new(true, epoch);
        usb.write(&[1u8; 20], epoch);
        usb.write(&[2u8; 20], epoch + MS * 3);
        assert_eq!(usb.pop(epoch + MS * 5), Err(Some(epoch + MS * 8)));
        let both = usb.pop(epoch + MS * 8).unwrap();
        assert_eq!(both.len(), 40);
        // After the flush, a write starts a new packet.
        usb.write(&[3u8; 70], epoch + MS * 9);
        assert_eq!(usb.pop(epoch + MS * 9).unwrap(), vec![3u8; 64]);
        assert_eq!(usb.clear(), 6);
    }

    #[test]
    fn without_split_writes_go_whole() {
        let epoch = Instant::now();
        let mut usb = UsbTx::new(false, epoch);
        usb.write(&[1u8; 150], epoch);
        assert_eq!(usb.pop(epoch).unwrap().len(), 150);
    }
}
