//! What a simulated board is made of: options, timing modes and injected faults.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use firmware_protocol::{parse_identity, CommandTable, TableSet};

use crate::device::Device;

/// The firmware version a simulated board reports by default: sci-bots' last release, v1.73.6
/// (its `src/Node.h` is the same as v1.74.0's), served by a built-in command table.
pub const DEFAULT_FIRMWARE_VERSION: &str = "1.73.6";

/// The command table a board with handshake answer `firmware_id` speaks: the built-in table of
/// its version, or the default version's if there is none (a board always has its own).
pub fn table_for_id(firmware_id: &str) -> CommandTable {
    let tables = TableSet::builtin();
    let version = parse_identity(firmware_id).map_or(DEFAULT_FIRMWARE_VERSION, |(_, v)| v);
    tables
        .for_version(version)
        .or_else(|_| tables.for_version(DEFAULT_FIRMWARE_VERSION))
        .cloned()
        .unwrap_or_else(|_| CommandTable::simulator())
}

/// How long the simulated hardware takes for things (see [`TimingParams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timing {
    /// As the real board: channel update ~5 ms, HV enable sequence 200 ms, short detection
    /// ~1.2 s, replies over 64 bytes in USB pieces ~5 ms apart (see `src/sim/FIRMWARE.md`).
    #[default]
    Realistic,
    /// No artificial delays (benchmarks, quick tests): every firmware action is instant,
    /// packets leave whole, a reset re-enumerates at once; droplets still move at their speed.
    Fast,
}

impl FromStr for Timing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "realistic" => Ok(Timing::Realistic),
            "fast" => Ok(Timing::Fast),
            other => Err(format!(
                "unknown timing `{other}`: expected realistic or fast"
            )),
        }
    }
}

/// The time costs of one [`Timing`] mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingParams {
    /// One `_update_channels()` over three switching boards (15 I2C writes, each followed by
    /// 200 µs); fewer boards take proportionally less.
    pub channel_update: Duration,
    /// Period of the firmware's sampling timer (capacitance, chip load): 25 ms in both modes.
    pub sample_tick: Duration,
    /// Each of the two waits of the HV enable sequence.
    pub hv_step: Duration,
    /// Debounce of the chip interlock before `output_enabled` / `output_disabled`.
    pub chip_debounce: Duration,
    /// Cost of one 50-sample capacitance reading.
    pub capacitance_reading: Duration,
    /// Cost per channel of a per-channel capacitance scan.
    pub per_channel_capacitance: Duration,
    /// Send replies and events in 64-byte USB packets with the ~5 ms flush timer.
    pub usb_split: bool,
    /// From an MCU reset until the USB device is back (the Teensy's startup delays).
    pub reenumeration: Duration,
}

impl Timing {
    /// The costs of this mode.
    pub fn params(self) -> TimingParams {
        match self {
            Timing::Realistic => TimingParams {
                channel_update: Duration::from_millis(5),
                sample_tick: Duration::from_millis(25),
                hv_step: Duration::from_millis(100),
                chip_debounce: Duration::from_secs(1),
                capacitance_reading: Duration::from_millis(1),
                per_channel_capacitance: Duration::from_micros(5500),
                usb_split: true,
                reenumeration: Duration::from_millis(300),
            },
            Timing::Fast => TimingParams {
                channel_update: Duration::ZERO,
                // The firmware's own schedule, not a hardware delay: kept.
                sample_tick: Duration::from_millis(25),
                hv_step: Duration::ZERO,
                chip_debounce: Duration::ZERO,
                capacitance_reading: Duration::ZERO,
                per_channel_capacitance: Duration::ZERO,
                usb_split: false,
                reenumeration: Duration::ZERO,
            },
        }
    }
}

/// Faults injected on the wire; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction (0..=1) of outgoing bytes replaced by a different random byte.
    pub corrupt_fraction: f64,
    /// Fraction (0..=1) of outgoing bytes left out.
    pub drop_fraction: f64,
    /// Extra delay before anything is written.
    pub reply_delay: Duration,
    /// The board hangs: incoming bytes are ignored and nothing is written.
    pub stall: bool,
    /// Answer the ID handshake with this text instead of the configured firmware id.
    pub firmware_id: Option<String>,
}

impl Faults {
    /// Whether any fault is active.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// Physical constants of the simulated chip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhysicsParams {
    /// Gap between the plates (mm): a droplet of V µL covers V / gap mm².
    pub gap_height_mm: f64,
    /// Capacitance of liquid-covered electrode area, farads per mm².
    pub liquid_f_per_mm2: f64,
    /// Capacitance of filler-covered (uncovered) electrode area, farads per mm².
    pub filler_f_per_mm2: f64,
    /// Standard deviation of one capacitance sample, farads (averaging divides it by √n).
    pub noise_f: f64,
    /// Droplet speed at 100 V RMS, mm/s; it grows with V² above the threshold.
    pub speed_mm_s_at_100v: f64,
    /// Below this RMS voltage nothing moves.
    pub threshold_v: f64,
    /// Resistance of a shorted channel to ground, ohms.
    pub short_resistance_ohm: f64,
    /// Chip load (farads) that saturates the capacitance front end.
    pub saturation_f: f64,
    /// The board's real feedback capacitor C16, farads; `None`: exactly the configured one.
    /// The firmware computes C = V_feedback · C16 / V_hv with the *configured* C16, so a real
    /// one that differs scales every reading by configured / real (what the on-board test
    /// capacitors calibrate, dropbot.py `proxy_py2.py` `calibrate_C16`).
    pub feedback_capacitor_f: Option<f64>,
}

impl Default for PhysicsParams {
    fn default() -> Self {
        Self {
            gap_height_mm: 0.2,
            liquid_f_per_mm2: 1.0e-12,
            filler_f_per_mm2: 2.0e-14,
            noise_f: 5.0e-14,
            speed_mm_s_at_100v: 20.0,
            threshold_v: 30.0,
            short_resistance_ohm: 2000.0,
            saturation_f: 1.5e-9,
            feedback_capacitor_f: None,
        }
    }
}

/// Everything a simulated board is made of.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Channels of the switching boards (40 per board, 1 to 3 boards; a DropBot has 120).
    pub channels: u16,
    /// The switching boards came up after the control board booted: the boot-time scan finds
    /// none, so the board reports 0 channels until `initialize_switching_boards` rescans.
    pub switching_boards_late: bool,
    /// The board's input supply, volts (12 V; 0 = no power supply connected).
    pub supply_v: f64,
    /// Realistic or fast hardware timing.
    pub timing: Timing,
    /// Seed of every random choice (noise, faults, the default uuid).
    pub seed: u64,
    /// The chip; `None` is the built-in 120-electrode grid with reservoirs.
    pub device: Option<Device>,
    /// Answer of the ID handshake, `dropbot::<version>`; the board speaks that version's
    /// built-in command table (see [`table_for_id`]).
    pub firmware_id: String,
    /// The board's uuid; `None` derives one from the seed.
    pub uuid: Option<[u8; 16]>,
    /// Write the trace as JSON lines to this file.
    pub trace: Option<PathBuf>,
    /// Whether a chip is in the board at power-on.
    pub chip_inserted: bool,
    /// Channels shorted to ground on the chip.
    pub shorted: Vec<u16>,
    /// Faults active from the start.
    pub faults: Faults,
    /// Time moves only when the handle's `advance` is called (exact, deterministic tests).
    pub virtual_clock: bool,
    /// Physical constants.
    pub physics: PhysicsParams,
    /// Records kept in memory for `SimHandle::trace` (older ones are forgotten).
    pub trace_capacity: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            channels: 120,
            switching_boards_late: false,
            supply_v: super::hv::SUPPLY_V,
            timing: Timing::Realistic,
            seed: 0,
            device: None,
            firmware_id: format!("dropbot::{DEFAULT_FIRMWARE_VERSION}"),
            uuid: None,
            trace: None,
            chip_inserted: true,
            shorted: Vec::new(),
            faults: Faults::default(),
            virtual_clock: false,
            physics: PhysicsParams::default(),
            trace_capacity: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_firmware_and_any_known_one_have_their_built_in_table() {
        let default = table_for_id(&SimOptions::default().firmware_id);
        assert!(default
            .firmware_versions()
            .iter()
            .any(|v| v == DEFAULT_FIRMWARE_VERSION));
        let fork = table_for_id("dropbot::1.74.3");
        assert!(fork.firmware_versions().iter().any(|v| v == "1.74.3"));
        assert_eq!(
            table_for_id("dropbot::9.9.9"),
            default,
            "no table: the default's"
        );
    }
}
