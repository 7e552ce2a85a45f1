//! What the simulated firmware does for each command of its table (sci-bots/dropbot.py
//! `src/Node.h` unless said otherwise; `src/sim/FIRMWARE.md` lists them with their costs).

use std::time::Duration;

use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::{Config, Event, Request, WireValue};
use prost::Message;

use super::firmware::Firmware;
use super::switching::MAX_CHANNELS;
use super::ticks::SAMPLES_PER_READING;

/// `HARDWARE_VERSION_` (`Node.h`).
const HARDWARE_VERSION: &str = "3.6";

impl Firmware {
    /// Execute a decoded request; returns the reply payload (events are written meanwhile).
    pub(super) fn execute(&mut self, request: Request) -> Vec<u8> {
        let strings = self.build_strings();
        match request {
            // BaseNode.
            Request::BaseNodeSoftwareVersion(_) => {
                strings.base_node_software_version.to_owned().encode_reply()
            }
            Request::PackageName(_) => strings.package_name.to_owned().encode_reply(),
            Request::DisplayName(_) => strings.display_name.to_owned().encode_reply(),
            Request::Manufacturer(_) => strings.manufacturer.to_owned().encode_reply(),
            Request::SoftwareVersion(_) => self.version().encode_reply(),
            Request::Url(_) => strings.url.to_owned().encode_reply(),
            Request::Microseconds(_) => self.micros().encode_reply(),
            Request::Milliseconds(_) => self.millis().encode_reply(),
            Request::DigitalRead(c) => self.digital_read(c.pin).encode_reply(),
            Request::EchoArray(c) => c.array.encode_reply(),
            Request::StrEcho(c) => c.msg.encode_reply(),
            // BaseNodeConfig, BaseNodeState.
            Request::SaveConfig(_) => {
                self.eeprom = self.config.clone();
                ().encode_reply()
            }
            Request::SerializeConfig(_) => self.config.encode_to_vec().encode_reply(),
            Request::UpdateConfig(c) => u8::from(self.update_config(&c.serialized)).encode_reply(),
            Request::SerializeState(_) => self.state.encode_to_vec().encode_reply(),
            Request::UpdateState(c) => u8::from(self.update_state(&c.serialized)).encode_reply(),
            // dropbot::Node.
            Request::MeasureTemperature(_) => {
                let t = 36.0 + 0.1 * self.physics.gaussian();
                (t as f32).encode_reply()
            }
            Request::HighVoltage(_) => {
                (self.physics.hv().measured(self.now()) as f32).encode_reply()
            }
            // The simulator has no waveform: peak and RMS are the same.
            Request::OutputCurrentRms(_) | Request::OutputCurrent(_) => {
                (self.output_current() as f32).encode_reply()
            }
            Request::InputCurrentRms(_) | Request::InputCurrent(_) => {
                (self.input_current() as f32).encode_reply()
            }
            Request::NumberOfChannels(_) => self.boards.count().encode_reply(),
            Request::HardwareVersion(_) => HARDWARE_VERSION.to_owned().encode_reply(),
            Request::Uuid(_) => self.opts.uuid.to_vec().encode_reply(),
            Request::DetectShorts(c) => {
                let shorts = self.detect_shorts(c.delay_ms);
                let bytes: Vec<u8> = shorts
                    .iter()
                    .filter_map(|&c| u8::try_from(c).ok())
                    .collect();
                bytes.encode_reply()
            }
            Request::MinWaveformVoltage(_) => (self.min_waveform_voltage() as f32).encode_reply(),
            Request::InitializeSwitchingBoards(_) => {
                self.initialize_switching_boards().encode_reply()
            }
            Request::Capacitance(c) => {
                let n = self.samples(u32::from(c.n_samples));
                let cost = self.opts.timing.capacitance_reading * n / SAMPLES_PER_READING;
                self.spend(cost, false);
                (self.read_capacitance(n) as f32).encode_reply()
            }
            Request::WatchdogAutoRefresh(c) => {
                self.watchdog.set_auto_refresh(c.value).encode_reply()
            }
            Request::WatchdogEnable(c) => {
                let now = self.now();
                self.watchdog
                    .enable(c.prescaler, c.timeout, now)
                    .encode_reply()
            }
            Request::WatchdogDisable(_) => {
                self.watchdog.disable();
                ().encode_reply()
            }
            Request::WatchdogRefresh(_) => {
                let now = self.now();
                self.watchdog.refresh(now);
                ().encode_reply()
            }
            // Handled before execution: the MCU restarts without replying.
            Request::Reboot(_) => Vec::new(),
            Request::SelectOnBoardTestCapacitor(c) => {
                (self.physics.select_test_capacitor(c.index) as f32).encode_reply()
            }
            Request::ChannelCapacitances(c) => {
                let n = self.config.capacitance_n_samples().max(1);
                self.channel_capacitances(&c.channels, n).encode_reply()
            }
            Request::StateOfChannels(_) => {
                // Reads the boards' output registers back (about as long as a write).
                let cost = self.channel_update_cost();
                self.spend(cost, false);
                let driven = self.boards.read_back();
                self.packed(driven)
            }
            Request::SetDisabledChannelsMask(c) => {
                self.boards.set_disabled_bytes(&c.disabled_channels_mask);
                self.update_channels();
                ().encode_reply()
            }
            Request::DisabledChannelsMask(_) => {
                let disabled = self.boards.disabled().clone();
                self.packed(disabled)
            }
            Request::SetStateOfChannels(c) => {
                self.set_state_of_channels(&c.channel_states).encode_reply()
            }
            Request::SyncTime(c) => self.sync_time(c.wall_time).encode_reply(),
            Request::WallTime(_) => self.wall_time().encode_reply(),
            Request::TurnOffAllChannels(_) => {
                self.boards.turn_off_all();
                self.update_channels();
                ().encode_reply()
            }
            Request::Halt(_) => {
                self.halt();
                ().encode_reply()
            }
        }
    }

    /// `initialize_switching_boards()`: scan the I2C bus (each board found takes about two
    /// channel updates of I2C traffic, the first address that does not answer one write).
    fn initialize_switching_boards(&mut self) -> u16 {
        let count = self.boards.scan();
        self.state.channel_count = Some(i32::from(count));
        let cost = self.channel_update_cost() * 2 + self.opts.timing.channel_update / 15;
        self.spend(cost, false);
        count
    }

    /// `set_state_of_channels`: exactly `channel_count_ / 8` bytes or false; the
    /// `channels-updated` event (gated) is written before the reply.
    fn set_state_of_channels(&mut self, states: &[u8]) -> bool {
        let start = u64::from(self.board_us(self.now()));
        if states.len() != usize::from(self.boards.count() / 8) {
            return false;
        }
        self.boards.set_requested(unpack(states));
        self.update_channels();
        let actuated: Vec<u16> = self.boards.driven().into_iter().collect();
        let end = u64::from(self.board_us(self.now()));
        self.event(Event::ChannelsUpdated {
            n: u32::try_from(actuated.len()).unwrap_or(u32::MAX),
            actuated,
            start,
            end,
        });
        true
    }

    /// `_update_channels()`: write the boards (takes the channel-update time).
    pub(super) fn update_channels(&mut self) {
        let cost = self.channel_update_cost();
        self.spend(cost, false);
        let now = self.now();
        self.apply_channels(now);
    }

    /// `halt()`: HV off, then `disable_all_channels()`.
    pub(super) fn halt(&mut self) {
        self.state.hv_output_enabled = Some(false);
        let now = self.now();
        self.physics.hv_mut(now).disable();
        self.record_hv(now);
        self.boards.disable_all();
        self.update_channels();
    }

    /// `enable_high_voltage_output()`: blocks for the two waits of the sequence.
    pub(super) fn enable_hv(&mut self, cause: &str) {
        let now = self.now();
        let minimum = self.min_waveform_voltage();
        self.physics.hv_mut(now).enable(minimum, now);
        self.record_hv(now);
        let wait = self.opts.timing.hv_step * 2;
        self.busy(cause, wait, true);
    }

    /// `select_output(HV or 3.3 V)`: selecting HV while it runs re-runs the enable sequence.
    pub(super) fn select_output(&mut self, hv: bool, cause: &str) {
        let now = self.now();
        let minimum = self.min_waveform_voltage();
        if self.physics.hv_mut(now).select(hv, minimum, now) {
            let wait = self.opts.timing.hv_step * 2;
            self.busy(cause, wait, true);
        }
    }

    /// `detect_shorts(delay_ms)`: every channel found, alone on the 3.3 V output, for
    /// `delay_ms`; the mask is rewritten (see `switching`), the output selection restored, and
    /// `shorts-detected` (gated) written.
    pub(super) fn detect_shorts(&mut self, delay_ms: u8) -> Vec<u16> {
        let was_hv = self.physics.hv().selected();
        let now = self.now();
        let minimum = self.min_waveform_voltage();
        self.physics.hv_mut(now).select(false, minimum, now);
        let per_channel = self.channel_update_cost() + Duration::from_millis(u64::from(delay_ms));
        let cost = per_channel * u32::from(self.boards.count()) + self.channel_update_cost();
        self.busy("detect_shorts", cost, delay_ms > 0);
        let shorted = self.physics.shorted(MAX_CHANNELS).into_iter().collect();
        let shorts = self.boards.detect_shorts(&shorted);
        let now = self.now();
        self.apply_channels(now);
        self.select_output(was_hv, "HV re-selected after detect_shorts");
        self.event(Event::ShortsDetected {
            values: shorts.clone(),
        });
        shorts
    }

    /// `channel_capacitances`: HV on and selected for the scan if needed (and restored, which
    /// re-runs the enable sequence), each enabled channel alone; disabled ones read 0.
    fn channel_capacitances(&mut self, channels: &[u8], n: u32) -> Vec<f32> {
        let restore = !self.physics.hv().enabled() || !self.physics.hv().selected();
        if !self.physics.hv().enabled() {
            self.enable_hv("HV enabled for channel_capacitances");
        }
        if !self.physics.hv().selected() {
            self.select_output(true, "HV selected for channel_capacitances");
        }
        let disabled = self.boards.disabled().clone();
        let mut values = Vec::with_capacity(channels.len());
        for ch in channels.iter().map(|&c| u16::from(c)) {
            if ch >= MAX_CHANNELS || disabled.contains(&ch) {
                values.push(0.0);
                continue;
            }
            let cost = self.opts.timing.per_channel_capacitance;
            self.spend(cost, false);
            let gain = self.feedback_gain();
            values.push((self.physics.sample_channel(ch, n) * gain) as f32);
        }
        self.update_channels();
        if restore {
            let selected = self.state.hv_output_selected();
            self.select_output(selected, "HV output restored after channel_capacitances");
            if !self.state.hv_output_enabled() {
                let now = self.now();
                self.physics.hv_mut(now).disable();
            }
        }
        values
    }

    fn packed(&self, channels: impl IntoIterator<Item = u16>) -> Vec<u8> {
        let count = self.boards.count();
        pack(channels.into_iter().filter(|c| *c < count), count).unwrap_or_default()
    }

    fn samples(&self, n: u32) -> u32 {
        if n == 0 {
            self.config.capacitance_n_samples().max(1)
        } else {
            n
        }
    }

    pub(super) fn output_current(&self) -> f64 {
        self.physics
            .output_current(self.now(), f64::from(self.state.frequency()))
    }

    /// Logic supply plus the HV converter's input at 12 V and 85 % efficiency.
    fn input_current(&self) -> f64 {
        let hv = self.physics.hv();
        let base = if hv.is_on() { 0.1 } else { 0.08 };
        base + self.output_current() * hv.output(self.now()) / 12.0 / 0.85
    }

    /// `update_config`: answers whether the message decoded; every field is copied (the
    /// config callbacks accept all values) and the `voltage_source` limits follow.
    fn update_config(&mut self, bytes: &[u8]) -> bool {
        match Config::from_bytes(bytes) {
            Ok(update) => {
                self.config.apply(&update);
                let l = &mut self.limits;
                let set = |target: &mut f32, v: Option<f32>| {
                    if let Some(v) = v {
                        *target = v;
                    }
                };
                set(&mut l.max_voltage, update.max_voltage);
                set(&mut l.min_frequency, update.min_frequency);
                set(&mut l.max_frequency, update.max_frequency);
                set(&mut l.r7, update.r7);
                set(&mut l.pot_max, update.pot_max);
                true
            }
            Err(e) => {
                self.note(format!("update_config: message does not decode: {e}"));
                false
            }
        }
    }
}
