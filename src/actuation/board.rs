//! The board as the actuation engine sees it: a small trait of blocking calls, made only from
//! the engine's own thread, so that any DMF control board can sit behind the engine. The
//! DropBot implements it in [`super::dropbot`]; a call a board cannot make answers
//! [`BoardError::Unsupported`] by default.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::board::{BoardError, EventSink};

/// When a command went out and when the board confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The write of the frame was issued (the call that hands it to the port began).
    pub issued: Instant,
    /// The frame's last byte was handed to the port (that call returned).
    pub written: Instant,
    /// The board's reply was decoded.
    pub confirmed: Instant,
    /// Board time (unwrapped microseconds) at `written`, when the clock is known.
    pub board_us: Option<u64>,
}

/// What the engine needs to know of a board it drives.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardSummary {
    /// Electrode channels (0 to `channel_count - 1`).
    pub channel_count: u16,
    /// Identity for logs, e.g. `dropbot::1.73.6`.
    pub identity: String,
    /// What tells this board from others (a DropBot's uuid).
    pub serial: String,
    /// How long the board has been running (from its clock; a 32-bit microsecond counter
    /// wraps every ~71.6 min), when known.
    pub uptime: Option<Duration>,
}

/// What a keep-alive learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepAlive {
    /// The board restarted since the last keep-alive (e.g. its watchdog fired): whatever it
    /// had been told is gone.
    pub board_reset: bool,
}

/// A capacitance reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Farads.
    pub farads: f64,
    /// When it was asked and answered.
    pub stamp: Stamp,
}

/// The board's health readings; a field the board cannot read is `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Monitor {
    /// Measured RMS output voltage, V.
    pub measured_voltage: Option<f32>,
    /// RMS output (HV) current, A.
    pub output_current: Option<f32>,
    /// RMS input (supply) current, A.
    pub input_current: Option<f32>,
    /// Temperature of the board's MCU, °C.
    pub temperature_c: Option<f32>,
    /// Whether a chip is in, as the interlock pin reads now.
    pub chip_inserted: Option<bool>,
    /// When the readings were asked.
    pub at: Instant,
    /// Board time (unwrapped microseconds) at `at`, when the clock is known.
    pub board_us: Option<u64>,
}

/// A DMF control board, driven by blocking calls from the engine's thread. Only the first
/// five are required (channels, waveform, HV, halt, summary).
pub trait DmfBoard: Send {
    /// Channel count and identity.
    fn summary(&self) -> BoardSummary;

    /// Board-specific setup when the engine takes the board (e.g. which events it sends).
    fn prepare(&mut self) -> Result<(), BoardError> {
        Ok(())
    }

    /// Actuate exactly `channels`, all others off: one frame.
    fn set_channels(&mut self, channels: &BTreeSet<u16>) -> Result<Stamp, BoardError>;

    /// [`DmfBoard::set_channels`] with the frame written no earlier than `at` and as soon
    /// after it as possible: a board that can prepares the frame first and leaves only the
    /// write for the deadline. By default: wait for `at`, then `set_channels`.
    fn set_channels_at(
        &mut self,
        channels: &BTreeSet<u16>,
        at: Instant,
    ) -> Result<Stamp, BoardError> {
        crate::board::spin_until(at);
        self.set_channels(channels)
    }

    /// Set the RMS voltage (V) and/or frequency (Hz); `None` leaves it.
    fn set_waveform(
        &mut self,
        voltage: Option<f32>,
        frequency: Option<f32>,
    ) -> Result<Stamp, BoardError>;

    /// Switch the high-voltage output.
    fn set_hv(&mut self, on: bool) -> Result<Stamp, BoardError>;

    /// Stop at once: HV off and every channel off, as the board's own halt does.
    fn halt(&mut self) -> Result<(), BoardError>;

    /// HV off, then every channel off; both are attempted, the first error is returned.
    fn safe_state(&mut self) -> Result<(), BoardError> {
        let hv = self.set_hv(false);
        let channels = self.set_channels(&BTreeSet::new());
        hv.and(channels).map(|_| ())
    }

    /// Tell the board the host is alive (and keep the clock in sync); called at least every
    /// third of the failsafe timeout. `room`: false when squeezed between a sequence's phases
    /// (it was overdue), where only what the failsafe needs should be done.
    fn keepalive(&mut self, room: bool) -> Result<KeepAlive, BoardError> {
        let _ = room;
        Ok(KeepAlive::default())
    }

    /// Make the board turn HV and channels off by itself if the host stays silent for
    /// `timeout`. Returns whether the board has such a failsafe.
    fn arm_failsafe(&mut self, timeout: Duration) -> Result<bool, BoardError> {
        let _ = timeout;
        Ok(false)
    }

    /// Hand the board back its own behaviour on a clean exit.
    fn disarm_failsafe(&mut self) -> Result<(), BoardError> {
        Ok(())
    }

    /// Channels the board will not drive.
    fn disabled_channels(&mut self) -> Result<BTreeSet<u16>, BoardError> {
        Ok(BTreeSet::new())
    }

    /// Set the channels the board must not drive.
    fn set_disabled_channels(&mut self, channels: &BTreeSet<u16>) -> Result<(), BoardError> {
        let _ = channels;
        Err(unsupported("set_disabled_channels"))
    }

    /// Find shorted channels, testing each for `delay_ms` (the board disables them).
    fn detect_shorts(&mut self, delay_ms: u8) -> Result<Vec<u16>, BoardError> {
        let _ = delay_ms;
        Err(unsupported("detect_shorts"))
    }

    /// Capacitance of each listed channel actuated alone, farads.
    fn channel_capacitances(&mut self, channels: &[u16]) -> Result<Vec<f32>, BoardError> {
        let _ = channels;
        Err(unsupported("channel_capacitances"))
    }

    /// Capacitance of the actuated electrodes.
    fn capacitance(&mut self) -> Result<Reading, BoardError> {
        Err(unsupported("capacitance"))
    }

    /// Measured RMS output voltage, V.
    fn measured_voltage(&mut self) -> Result<f32, BoardError> {
        Err(unsupported("measured_voltage"))
    }

    /// Period of the board's capacitance stream, ms (0 stops it).
    fn set_capacitance_stream(&mut self, interval_ms: u32) -> Result<(), BoardError> {
        let _ = interval_ms;
        Err(unsupported("capacitance stream"))
    }

    /// Ask the board to report when the capacitance reaches `farads` (0 cancels). Returns
    /// whether the board can; the engine also watches the stream itself.
    fn set_capacitance_target(&mut self, farads: f32) -> Result<bool, BoardError> {
        let _ = farads;
        Ok(false)
    }

    /// Health readings: measured HV, currents, temperature, chip interlock.
    fn monitor(&mut self) -> Result<Monitor, BoardError> {
        Err(unsupported("monitor"))
    }

    /// Connect on-board test capacitor `index` (`None`: none) to the output; the nominal
    /// capacitance now connected, farads.
    fn select_test_capacitor(&mut self, index: Option<u8>) -> Result<f64, BoardError> {
        let _ = index;
        Err(unsupported("select_on_board_test_capacitor"))
    }

    /// The feedback capacitor the board computes capacitance with, farads.
    fn feedback_capacitor(&mut self) -> Result<f64, BoardError> {
        Err(unsupported("feedback capacitor"))
    }

    /// Set the feedback capacitor the board computes capacitance with, farads (kept until
    /// the board restarts).
    fn set_feedback_capacitor(&mut self, farads: f64) -> Result<(), BoardError> {
        let _ = farads;
        Err(unsupported("feedback capacitor"))
    }

    /// Board time of a host instant, when the clock is known.
    fn board_time(&self, at: Instant) -> Option<u64> {
        let _ = at;
        None
    }

    /// Hand every board event to `sink` (a path that never drops), or stop (`None`).
    fn set_event_sink(&mut self, sink: Option<EventSink>);
}

fn unsupported(command: &'static str) -> BoardError {
    BoardError::Unsupported {
        command,
        detail: "this board cannot do it".into(),
    }
}
