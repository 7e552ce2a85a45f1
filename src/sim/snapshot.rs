//! What the simulated board looks like at one moment, for tests and tools.

use std::time::Duration;

use serde::Serialize;

use super::firmware::Firmware;
use super::physics::DropletView;

/// What the board looks like at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimSnapshot {
    /// Simulation time.
    pub time: Duration,
    /// Channels actuated.
    pub actuated: Vec<u16>,
    /// Channels disabled.
    pub disabled: Vec<u16>,
    /// `hv_output_enabled` of the state.
    pub hv_enabled: bool,
    /// HV output live (enabled and chip inserted).
    pub hv_on: bool,
    /// Target RMS volts.
    pub voltage_target: f64,
    /// Measured RMS volts.
    pub voltage_measured: f64,
    /// Waveform frequency, Hz.
    pub frequency: f64,
    /// Chip inserted (the interlock).
    pub chip_inserted: bool,
    /// The MCU watchdog's timeout while it is enabled.
    pub mcu_watchdog: Option<Duration>,
    /// Whether the firmware's loop refreshes the MCU watchdog by itself.
    pub watchdog_auto_refresh: bool,
    /// Channels the firmware knows of (its last switching-board scan).
    pub channel_count: u16,
    /// Noise-free capacitance of the actuated electrodes, farads.
    pub capacitance: f64,
    /// Output current, amperes.
    pub output_current: f64,
    /// Droplets.
    pub droplets: Vec<DropletView>,
}

impl Firmware {
    /// The board at `now`.
    pub fn snapshot(&mut self, now: Duration) -> SimSnapshot {
        self.advance_physics(now);
        let hv = self.physics.hv();
        let (enabled, timeout, auto) = self.watchdog.settings();
        SimSnapshot {
            time: now,
            actuated: self.boards.driven().into_iter().collect(),
            disabled: self.boards.disabled().iter().copied().collect(),
            hv_enabled: self.state.hv_output_enabled(),
            hv_on: hv.is_on(),
            voltage_target: f64::from(self.state.voltage()),
            voltage_measured: hv.measured(now),
            frequency: f64::from(self.state.frequency()),
            chip_inserted: hv.chip(),
            mcu_watchdog: enabled.then_some(timeout),
            watchdog_auto_refresh: auto,
            channel_count: self.boards.count(),
            capacitance: self.physics.load_capacitance(),
            output_current: self
                .physics
                .output_current(now, f64::from(self.state.frequency())),
            droplets: self.physics.droplets(),
        }
    }
}
