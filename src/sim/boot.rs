//! Power-on and resets of the simulated firmware: `setup()` and `Node::begin()` (sci-bots/
//! dropbot.py `src/dropbot.ino`, `src/Node.cpp`), MCU resets and lost USB power.

use std::time::Duration;

use firmware_protocol::{Config, State};

use super::firmware::{Firmware, Reset};
use super::ticks::Interlock;
use super::trace::TraceEntry;
use super::watchdog::McuWatchdog;

/// The `voltage_source` limits `_set_voltage` and `set_frequency` check. sci-bots firmware
/// starts them at the compiled-in defaults whatever the EEPROM holds (`Node::begin` loads the
/// config without running its callbacks); `update_config` sets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Limits {
    pub max_voltage: f32,
    pub min_frequency: f32,
    pub max_frequency: f32,
    pub r7: f32,
    pub pot_max: f32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&Config::default())
    }
}

impl Limits {
    fn from_config(c: &Config) -> Self {
        Self {
            max_voltage: c.max_voltage(),
            min_frequency: c.min_frequency(),
            max_frequency: c.max_frequency(),
            r7: c.r7(),
            pot_max: c.pot_max(),
        }
    }
}

impl Firmware {
    /// Power on or reset at `now` (`setup()` and `Node::begin()`): RAM state back to
    /// defaults, config from EEPROM, switching boards scanned if the config has an I2C
    /// address, HV and channels off, watchdog enabled, the interlock not yet debounced.
    pub(super) fn boot(&mut self, now: Duration) {
        self.config = self.eeprom.clone();
        // The fork's `begin()` copies the saved limits to `voltage_source`; sci-bots' does not.
        self.limits = if self.is_fork() {
            Limits::from_config(&self.config)
        } else {
            Limits::default()
        };
        self.state = boot_state();
        self.boards.power_on();
        if self.config.i2c_address() > 0 {
            let count = self.boards.scan();
            self.state.channel_count = Some(i32::from(count));
        }
        self.boot_at = now;
        // sci-bots `setup()` always enables it; the fork only while config field 62 says so.
        let watchdog = !self.is_fork() || self.config.watchdog_enabled();
        self.watchdog = McuWatchdog::boot(watchdog, now);
        self.wall = (0.0, 0);
        self.sample_timer = now;
        self.current_timer = now;
        self.capacitance_stamp_ms = 0;
        self.drops_stamp_ms = 0;
        self.target_count = 0;
        self.interlock = Interlock::default();
        self.physics.advance_to(now);
        // `Node::begin`: the test-capacitor pins start high (all disconnected).
        self.physics.select_test_capacitor(-1);
        let minimum = self.min_waveform_voltage();
        let hv = self.physics.hv_mut(now);
        hv.disable();
        hv.set_target(f64::from(boot_state().voltage()));
        hv.select(true, minimum, now);
        self.apply_channels(now);
        self.record_hv(now);
    }

    /// Reset the MCU at `at` (watchdog, `reboot`, lost power): as at power-on. The
    /// caller drops the USB link (the Teensy re-enumerates).
    pub fn reset(&mut self, at: Duration, cause: impl Into<String>) {
        let cause = cause.into();
        self.record(
            at,
            TraceEntry::Reset {
                cause: cause.clone(),
            },
        );
        self.out.retain(|(t, _)| *t <= at);
        self.boot(at);
        self.t = at;
        self.reset = Some(Reset { at, cause });
    }

    /// USB power lost at `now`: the MCU stops; HV and the boards' outputs go off.
    pub fn power_off(&mut self, now: Duration) {
        self.physics.advance_to(now);
        self.physics.hv_mut(now).disable();
        self.state.hv_output_enabled = Some(false);
        self.boards.turn_off_all();
        self.apply_channels(now);
        self.record_hv(now);
    }
}

/// The state after `Node::begin()`: the fields it marks present (`has_*`) at their defaults;
/// the others are absent from `serialize_state` until set.
fn boot_state() -> State {
    let d = State::default();
    State {
        voltage: Some(d.voltage()),
        frequency: Some(d.frequency()),
        hv_output_enabled: Some(false),
        hv_output_selected: Some(true),
        event_mask: Some(d.event_mask()),
        output_current_limit: Some(d.output_current_limit()),
        chip_load_range_margin: Some(d.chip_load_range_margin()),
        ..State::default()
    }
}

/// A board of firmware `version` as it leaves the bench: the defaults, with the I2C address
/// set (the vendor's notebooks set 10; the driver refuses a board with none,
/// `I2cAddressNotSet`) and the build's own C16 (150 nF on sci-bots builds, `channels.h`
/// "C16: 0.15 uF"; 330 nF from the fork's 1.74.2).
pub(super) fn factory_config(version: &str) -> Config {
    Config {
        i2c_address: Some(10),
        c16: Some(Config::firmware_default_c16(version)),
        ..Config::with_defaults()
    }
}
