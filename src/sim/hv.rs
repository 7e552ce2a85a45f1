//! The high-voltage supply: a boost converter fed by the 12 V input, its enable sequence, the
//! output selector and the chip interlock, as sci-bots/dropbot.py `src/voltage_source.h` and
//! `src/analog.cpp` drive and measure them.
//!
//! - `enable_high_voltage_output()` sets the digipot to the minimum waveform voltage, waits
//!   100 ms, turns the converter on (`SHDN` low), waits 100 ms and sets the target: the output
//!   is off for the first 100 ms, at the minimum for the next 100 ms, then at the target. It
//!   runs again whenever `hv_output_enabled: true` is in a state update (even if HV is on),
//!   when the HV output is selected while HV is live, and on chip insertion with HV enabled
//!   (`OutputEnableDebounce.cpp` `pressed`). The firmware is blocked meanwhile (`delay`).
//! - `high_voltage()` reads the converter's output through R8 = 2 MΩ / R9 = 20 kΩ and reports
//!   half of `A1 * R8 / R9`. With the converter off a boost converter passes its input through
//!   its diode, so the reading is about half the supply: ≈ 5.7 V on a 12 V supply (the vendor's
//!   driver says "no power" under 5 V, `proxy_py2.py`), ≈ 0 with no supply. The diode drop
//!   (0.4 V) is an assumption of this simulator.
//! - The interlock (`OE_PIN`, `high_voltage_output_enabled()` = `!SHDN && !OE`) keeps the
//!   output off while no chip is in; the simulator treats it as switching the converter off.

use std::time::Duration;

/// The board's input supply, volts (the driver asks for a "12V power supply").
pub const SUPPLY_V: f64 = 12.0;
/// Forward drop of the boost converter's diode, volts (an assumption).
const DIODE_DROP_V: f64 = 0.4;
/// `R8` and `R9` of the HV feedback divider (`analog.cpp` `high_voltage`).
const R8: f64 = 2e6;
const R9: f64 = 20e3;

/// The HV converter as the physics sees it.
#[derive(Debug, Clone)]
pub struct HvSupply {
    /// The firmware turned the converter on (`SHDN` low).
    boost: bool,
    /// `hv_output_selected` (HV rather than the 3.3 V test output).
    selected: bool,
    /// The interlock: a chip is inserted.
    chip: bool,
    /// Target RMS volts (the digipot).
    target: f64,
    /// The minimum waveform voltage the sequence starts at.
    minimum: f64,
    /// Start of the last enable sequence.
    sequence_start: Duration,
    /// Each of the sequence's two waits.
    step: Duration,
    /// Input supply, volts (0: no power).
    supply: f64,
}

impl HvSupply {
    /// A supply that is off, with `step` as each wait of the enable sequence.
    pub fn new(step: Duration, chip: bool, supply: f64) -> Self {
        Self {
            boost: false,
            selected: true,
            chip,
            target: 0.0,
            minimum: 0.0,
            sequence_start: Duration::ZERO,
            step,
            supply,
        }
    }

    /// Whether a chip is inserted (the interlock is closed).
    pub fn chip(&self) -> bool {
        self.chip
    }

    /// Whether the converter is switched on by the firmware.
    pub fn enabled(&self) -> bool {
        self.boost
    }

    /// Whether the HV output (rather than 3.3 V) is selected.
    pub fn selected(&self) -> bool {
        self.selected
    }

    /// Target RMS volts as last set.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// Input supply, volts.
    pub fn supply(&self) -> f64 {
        self.supply
    }

    /// Whether the converter runs (switched on, chip in, powered): `high_voltage_output_enabled`.
    pub fn is_on(&self) -> bool {
        self.boost && self.chip && self.supply > 0.0
    }

    /// RMS volts the converter puts out at `now` (0 while off).
    pub fn output(&self, now: Duration) -> f64 {
        if !self.is_on() {
            return 0.0;
        }
        let t = now.saturating_sub(self.sequence_start);
        if t < self.step {
            0.0
        } else if t < self.step * 2 {
            self.minimum
        } else {
            self.target
        }
    }

    /// What `high_voltage()` reads at `now`: the output, or half the supply through the diode
    /// while the converter is off.
    pub fn measured(&self, now: Duration) -> f64 {
        let out = self.output(now);
        if out > 0.0 {
            return out;
        }
        let passthrough = (self.supply - DIODE_DROP_V).max(0.0);
        0.5 * passthrough * R8 / (R8 + R9)
    }

    /// RMS volts on the electrodes (the 3.3 V test output moves nothing).
    pub fn drive(&self, now: Duration) -> f64 {
        if self.selected {
            self.output(now)
        } else {
            0.0
        }
    }

    /// When the running enable sequence ends (`None` when none runs).
    pub fn ramp_end(&self, now: Duration) -> Option<Duration> {
        let end = self.sequence_start + self.step * 2;
        (self.is_on() && end > now).then_some(end)
    }

    /// `enable_high_voltage_output()` at `now`, from `minimum` volts to the target.
    pub fn enable(&mut self, minimum: f64, now: Duration) {
        self.boost = true;
        self.minimum = minimum;
        self.sequence_start = now;
    }

    /// `disable_high_voltage_output()`.
    pub fn disable(&mut self) {
        self.boost = false;
    }

    /// `select_output()`: selecting HV while the converter runs re-runs the enable sequence
    /// (the firmware's workaround for its issue #23); true if it did.
    pub fn select(&mut self, hv: bool, minimum: f64, now: Duration) -> bool {
        self.selected = hv;
        if hv && self.boost && self.chip {
            self.enable(minimum, now);
            return true;
        }
        false
    }

    /// `_set_voltage()`: the digipot's new target.
    pub fn set_target(&mut self, volts: f64) {
        self.target = volts;
    }

    /// The interlock changed.
    pub fn set_chip(&mut self, chip: bool) {
        self.chip = chip;
    }

    /// The input supply changed (0: unplugged).
    pub fn set_supply(&mut self, volts: f64) {
        self.supply = volts.max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn enable_sequence_off_then_minimum_then_target() {
        let mut hv = HvSupply::new(100 * MS, true, SUPPLY_V);
        hv.set_target(100.0);
        let off = hv.measured(Duration::ZERO);
        assert!((off - 5.742).abs() < 0.01, "{off}");
        hv.enable(25.75, Duration::ZERO);
        assert_eq!(hv.output(50 * MS), 0.0);
        assert_eq!(hv.measured(50 * MS), off, "converter still off");
        assert_eq!(hv.output(150 * MS), 25.75);
        assert_eq!(hv.output(200 * MS), 100.0);
        assert_eq!(hv.ramp_end(10 * MS), Some(200 * MS));
        assert!(
            hv.select(true, 25.75, 300 * MS),
            "re-selecting HV re-runs it"
        );
        assert_eq!(hv.output(350 * MS), 0.0);
        hv.disable();
        assert_eq!(hv.output(600 * MS), 0.0);
    }

    #[test]
    fn interlock_and_supply_block_the_output() {
        let mut hv = HvSupply::new(Duration::ZERO, false, SUPPLY_V);
        hv.set_target(100.0);
        hv.enable(25.0, Duration::ZERO);
        assert!(!hv.is_on());
        hv.set_chip(true);
        assert_eq!(hv.output(MS), 100.0);
        assert!(!hv.select(false, 25.0, MS));
        assert_eq!(hv.drive(MS), 0.0);
        hv.set_supply(0.0);
        assert_eq!(hv.measured(MS), 0.0, "no power");
    }
}
