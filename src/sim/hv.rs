//! The high-voltage supply: the measured RMS voltage follows the target through a linear ramp,
//! and the hardware interlock keeps the output off while no chip is inserted.

use std::time::Duration;

/// The HV converter as the physics sees it.
#[derive(Debug, Clone)]
pub struct HvSupply {
    /// `hv_output_enabled` of the board state.
    enabled: bool,
    /// `hv_output_selected` (HV rather than the 3.3 V test output).
    selected: bool,
    /// The interlock: a chip is inserted.
    chip: bool,
    target: f64,
    ramp_from: f64,
    ramp_start: Duration,
    ramp: Duration,
}

impl HvSupply {
    /// A supply that is off, with `ramp` as the time to reach a new target.
    pub fn new(ramp: Duration, chip: bool) -> Self {
        Self {
            enabled: false,
            selected: true,
            chip,
            target: 0.0,
            ramp_from: 0.0,
            ramp_start: Duration::ZERO,
            ramp,
        }
    }

    /// Whether a chip is inserted (the interlock is closed).
    pub fn chip(&self) -> bool {
        self.chip
    }

    /// `hv_output_enabled` as last set.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Target RMS volts as last set.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// Whether the converter's output is live (enabled and a chip inserted).
    pub fn is_on(&self) -> bool {
        self.enabled && self.chip
    }

    /// Measured RMS voltage at `now`.
    pub fn measured(&self, now: Duration) -> f64 {
        if !self.is_on() {
            return 0.0;
        }
        if self.ramp.is_zero() {
            return self.target;
        }
        let elapsed = now.saturating_sub(self.ramp_start).as_secs_f64();
        let fraction = (elapsed / self.ramp.as_secs_f64()).clamp(0.0, 1.0);
        self.ramp_from + (self.target - self.ramp_from) * fraction
    }

    /// RMS voltage on the electrodes (the test output moves nothing).
    pub fn drive(&self, now: Duration) -> f64 {
        if self.selected {
            self.measured(now)
        } else {
            0.0
        }
    }

    /// When the current ramp ends (`None` when nothing is ramping).
    pub fn ramp_end(&self, now: Duration) -> Option<Duration> {
        let end = self.ramp_start + self.ramp;
        (self.is_on() && end > now).then_some(end)
    }

    /// Apply the board state's HV fields at `now`.
    pub fn set(&mut self, enabled: bool, selected: bool, target: f64, now: Duration) {
        let before = self.measured(now);
        let was_on = self.is_on();
        self.enabled = enabled;
        self.selected = selected;
        self.retarget(was_on, before, target, now);
    }

    /// The interlock changed at `now` (the output follows the enable flag again on insertion).
    pub fn set_chip(&mut self, chip: bool, now: Duration) {
        let before = self.measured(now);
        let was_on = self.is_on();
        self.chip = chip;
        let target = self.target;
        self.retarget(was_on, before, target, now);
    }

    fn retarget(&mut self, was_on: bool, before: f64, target: f64, now: Duration) {
        let on = self.is_on();
        if on && (!was_on || target != self.target) {
            self.ramp_from = if was_on { before } else { 0.0 };
            self.ramp_start = now;
        }
        self.target = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ramps_to_target_and_drops_at_once() {
        let mut hv = HvSupply::new(200 * MS, true);
        hv.set(true, true, 100.0, Duration::ZERO);
        assert_eq!(hv.measured(Duration::ZERO), 0.0);
        assert!((hv.measured(100 * MS) - 50.0).abs() < 1e-9);
        assert_eq!(hv.measured(300 * MS), 100.0);
        assert_eq!(hv.ramp_end(100 * MS), Some(200 * MS));
        hv.set(true, true, 120.0, 300 * MS);
        assert!((hv.measured(400 * MS) - 110.0).abs() < 1e-9);
        hv.set(false, true, 120.0, 600 * MS);
        assert_eq!(hv.measured(600 * MS), 0.0);
    }

    #[test]
    fn interlock_blocks_the_output() {
        let mut hv = HvSupply::new(Duration::ZERO, false);
        hv.set(true, true, 100.0, Duration::ZERO);
        assert!(!hv.is_on());
        assert_eq!(hv.measured(MS), 0.0);
        hv.set_chip(true, MS);
        assert_eq!(hv.measured(MS), 100.0);
        hv.set(true, false, 100.0, MS);
        assert_eq!(hv.drive(MS), 0.0);
    }
}
