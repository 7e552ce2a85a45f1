//! What the simulated firmware does for each command of its table.

use std::time::Duration;

use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::{Config, Event, Request, State, WireValue};
use prost::Message;

use super::firmware::Firmware;

/// Lowest RMS voltage of the waveform at the default potentiometer settings.
const MIN_WAVEFORM_V: f32 = 26.0;
/// Samples whose cost is [`super::options::TimingParams::capacitance_reading`].
const SAMPLES_PER_READING: u32 = 50;

impl Firmware {
    /// Execute a decoded request; returns the reply payload and queues events.
    pub(super) fn execute(
        &mut self,
        request: Request,
        now: Duration,
        events: &mut Vec<Event>,
    ) -> Vec<u8> {
        let count = self.opts.channels;
        match request {
            Request::SoftwareVersion(_) => self.version().encode_reply(),
            Request::HardwareVersion(_) => "3.1".to_owned().encode_reply(),
            Request::Uuid(_) => self.opts.uuid.to_vec().encode_reply(),
            Request::Microseconds(_) => self.board_us(now).encode_reply(),
            Request::NumberOfChannels(_) => count.encode_reply(),
            Request::StateOfChannels(_) => self.packed(self.actuated.iter().copied()),
            Request::SetStateOfChannels(c) => {
                if c.channel_states.len() != usize::from(count / 8) {
                    return false.encode_reply();
                }
                self.actuated = unpack(&c.channel_states);
                self.apply_channels(now);
                let cost = self.opts.timing.channel_update;
                self.busy += cost;
                let actuated: Vec<u16> = self.actuated.iter().copied().collect();
                events.push(Event::ChannelsUpdated {
                    n: actuated.len() as u32,
                    actuated,
                    start: u64::from(self.board_us(now)),
                    end: u64::from(self.board_us(now + cost)),
                });
                true.encode_reply()
            }
            Request::DisabledChannelsMask(_) => self.packed(self.disabled.iter().copied()),
            Request::SetDisabledChannelsMask(c) => {
                if c.disabled_channels_mask.len() == usize::from(count / 8) {
                    self.disabled = unpack(&c.disabled_channels_mask);
                    self.apply_channels(now);
                }
                ().encode_reply()
            }
            Request::TurnOffAllChannels(_) => {
                self.actuated.clear();
                self.apply_channels(now);
                ().encode_reply()
            }
            Request::HighVoltage(_) => (self.physics.hv().measured(now) as f32).encode_reply(),
            Request::MinWaveformVoltage(_) => MIN_WAVEFORM_V.encode_reply(),
            Request::Capacitance(c) => {
                let n = self.samples(u32::from(c.n_samples));
                self.busy += self.opts.timing.capacitance_reading * n / SAMPLES_PER_READING;
                (self.read_capacitance(now, n) as f32).encode_reply()
            }
            Request::ChannelCapacitances(c) => {
                let n = self.samples(0);
                let per = self.opts.timing.per_channel_capacitance;
                self.busy += per * u32::try_from(c.channels.len()).unwrap_or(u32::MAX);
                let values: Vec<f32> = c
                    .channels
                    .iter()
                    .map(|&ch| {
                        if u16::from(ch) < count {
                            self.physics.sample_channel(u16::from(ch), n) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                values.encode_reply()
            }
            Request::DetectShorts(_) => {
                let shorted = self.physics.shorted(count);
                self.busy += self.opts.timing.per_channel_short_test * u32::from(count);
                self.disable_shorted(now, &shorted, events);
                let values: Vec<u8> = shorted
                    .iter()
                    .filter_map(|&ch| u8::try_from(ch).ok())
                    .collect();
                values.encode_reply()
            }
            Request::Halt(_) => {
                self.all_off(now);
                ().encode_reply()
            }
            Request::OutputCurrent(_) => (self.output_current(now) as f32).encode_reply(),
            Request::InputCurrent(_) => (self.input_current(now) as f32).encode_reply(),
            Request::MeasureTemperature(_) => {
                let t = 36.0 + 0.1 * self.physics.gaussian();
                (t as f32).encode_reply()
            }
            Request::WatchdogEnable(c) => {
                if c.prescaler > 15 {
                    return (-1i8).encode_reply();
                }
                self.mcu_watchdog = true;
                0i8.encode_reply()
            }
            Request::WatchdogDisable(_) => {
                self.mcu_watchdog = false;
                ().encode_reply()
            }
            Request::WatchdogRefresh(_) => ().encode_reply(),
            // Handled before execution: the firmware restarts without replying.
            Request::Reboot(_) => Vec::new(),
            Request::SerializeState(_) => self.state.encode_to_vec().encode_reply(),
            Request::UpdateState(c) => {
                u8::from(self.update_state(&c.serialized, now)).encode_reply()
            }
            Request::SerializeConfig(_) => self.config.encode_to_vec().encode_reply(),
            Request::UpdateConfig(c) => {
                let accepted = match Config::from_bytes(&c.serialized) {
                    Ok(update) => match update.validate_update(&self.config) {
                        Ok(()) => {
                            self.config.apply(&update);
                            true
                        }
                        Err(e) => {
                            self.note(now, format!("update_config refused: {e}"));
                            false
                        }
                    },
                    Err(e) => {
                        self.note(now, format!("update_config refused: {e}"));
                        false
                    }
                };
                u8::from(accepted).encode_reply()
            }
            Request::SaveConfig(_) => {
                self.eeprom = self.config.clone();
                ().encode_reply()
            }
            // Commands of the firmware's set not modelled further yet: plain answers.
            Request::BaseNodeSoftwareVersion(_) => String::new().encode_reply(),
            Request::PackageName(_) => "dropbot".to_owned().encode_reply(),
            Request::DisplayName(_) => "DropBot".to_owned().encode_reply(),
            Request::Manufacturer(_) => "Sci-Bots Inc.".to_owned().encode_reply(),
            Request::Url(_) => String::new().encode_reply(),
            Request::Milliseconds(_) => self.board_ms(now).encode_reply(),
            // Pin 22 is the chip interlock, low while a chip is in; other pins read low.
            Request::DigitalRead(c) => {
                u8::from(c.pin == 22 && !self.physics.hv().chip()).encode_reply()
            }
            Request::EchoArray(c) => c.array.encode_reply(),
            Request::StrEcho(c) => c.msg.encode_reply(),
            Request::OutputCurrentRms(_) => (self.output_current(now) as f32).encode_reply(),
            Request::InputCurrentRms(_) => (self.input_current(now) as f32).encode_reply(),
            Request::WatchdogAutoRefresh(_) => false.encode_reply(),
            Request::InitializeSwitchingBoards(_) => count.encode_reply(),
            Request::SyncTime(_) => self.board_ms(now).encode_reply(),
            Request::WallTime(_) => (now.saturating_sub(self.boot_at).as_secs_f64()).encode_reply(),
        }
    }

    fn packed(&self, channels: impl IntoIterator<Item = u16>) -> Vec<u8> {
        // Channels are kept below the channel count, so packing cannot fail.
        pack(channels, self.opts.channels).unwrap_or_default()
    }

    fn samples(&self, n: u32) -> u32 {
        if n == 0 {
            self.config.capacitance_n_samples().max(1)
        } else {
            n
        }
    }

    /// Board milliseconds (a 32-bit counter from boot).
    fn board_ms(&self, now: Duration) -> u32 {
        // Truncation is the point: the counter wraps like the firmware's.
        now.saturating_sub(self.boot_at).as_millis() as u32
    }

    /// Logic supply plus the HV converter's input at 12 V and 85 % efficiency.
    fn input_current(&self, now: Duration) -> f64 {
        let hv = self.physics.hv();
        let base = if hv.is_on() { 0.1 } else { 0.08 };
        base + self.output_current(now) * hv.measured(now) / 12.0 / 0.85
    }

    pub(super) fn output_current(&self, now: Duration) -> f64 {
        self.physics
            .output_current(now, f64::from(self.state.frequency()))
    }

    fn update_state(&mut self, bytes: &[u8], now: Duration) -> bool {
        let update = match State::from_bytes(bytes) {
            Ok(update) => update,
            Err(e) => {
                self.note(now, format!("update_state refused: {e}"));
                return false;
            }
        };
        if let Err(e) = update.validate_update(&self.config) {
            self.note(now, format!("update_state refused: {e}"));
            return false;
        }
        let before = self.state.clone();
        self.state.apply(&update);
        if self.state.hv_output_enabled != before.hv_output_enabled
            || self.state.hv_output_selected != before.hv_output_selected
            || self.state.voltage != before.voltage
            || self.state.frequency != before.frequency
        {
            self.apply_hv(now);
        }
        if self.state.capacitance_update_interval_ms != before.capacitance_update_interval_ms {
            self.next_capacitance = (self.state.capacitance_update_interval_ms() > 0)
                .then(|| now + self.capacitance_period());
        }
        if self.state.drops_update_interval_ms != before.drops_update_interval_ms {
            let ms = self.state.drops_update_interval_ms();
            self.next_drops = (ms > 0).then(|| now + Duration::from_millis(u64::from(ms)));
        }
        if update.target_capacitance.is_some() {
            self.exceeded_count = 0;
        }
        true
    }
}
