//! The typed DropBot API: one method per thing the plugin needs, each a [`Command`] of the
//! firmware-protocol crate. Arguments are checked against the board (channel count, the
//! configuration's voltage and frequency limits) before anything is sent.

use std::collections::BTreeSet;
use std::time::Duration;

use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::commands::{
    Capacitance, ChannelCapacitances, DetectShorts, DisabledChannelsMask, Halt, InputCurrent,
    MeasureVoltage, MinWaveformVoltage, OutputCurrent, SerializeState, SetDisabledChannelsMask,
    SetHostWatchdog, SetStateOfChannels, StateOfChannels, Temperature, TurnOffAllChannels,
    UpdateState, WatchdogDisable, WatchdogEnable, WatchdogReset,
};
use firmware_protocol::state::StateError;
use firmware_protocol::{ChannelError, Command, RpcError, State};

use super::dropbot::{CallTiming, DropBot, Kind};
use super::error::BoardError;

/// Extra time for a call that switches the HV converter (its enable sequence takes ~200 ms).
const HV_SWITCH_TIME: Duration = Duration::from_millis(500);
/// Time per channel of a per-channel capacitance scan (~5.5 ms on the real board).
const SCAN_TIME_PER_CHANNEL: Duration = Duration::from_millis(20);
/// Time per channel of short detection, on top of its delay.
const SHORTS_TIME_PER_CHANNEL: Duration = Duration::from_millis(15);

impl DropBot {
    /// Actuate exactly `channels` (all others off); when it was written and confirmed. A
    /// board answering false -> `Refused`.
    pub async fn set_channels(&self, channels: &BTreeSet<u16>) -> Result<CallTiming, BoardError> {
        let states = self.pack(channels.iter().copied())?;
        let (ok, timing) = self
            .call_timed(&SetStateOfChannels { states }, Kind::Write, self.timeout())
            .await?;
        self.accepted::<SetStateOfChannels>(ok, || {
            format!(
                "{} of {} channels asked for (some may be disabled)",
                channels.len(),
                self.info().channel_count
            )
        })?;
        Ok(timing)
    }

    /// The actuated channels.
    pub async fn channels(&self) -> Result<BTreeSet<u16>, BoardError> {
        let bytes = self
            .call(&StateOfChannels {}, Kind::Read, self.timeout())
            .await?;
        Ok(unpack(&bytes))
    }

    /// The disabled channels (the board never actuates them).
    pub async fn disabled_channels(&self) -> Result<BTreeSet<u16>, BoardError> {
        let bytes = self
            .call(&DisabledChannelsMask {}, Kind::Read, self.timeout())
            .await?;
        Ok(unpack(&bytes))
    }

    /// Set the disabled channels.
    pub async fn set_disabled_channels(&self, channels: &BTreeSet<u16>) -> Result<(), BoardError> {
        let mask = self.pack(channels.iter().copied())?;
        let ok = self
            .call(
                &SetDisabledChannelsMask { mask },
                Kind::Write,
                self.timeout(),
            )
            .await?;
        self.accepted::<SetDisabledChannelsMask>(ok, || {
            format!("disabled mask of {} channels", channels.len())
        })
    }

    /// Turn every channel off.
    pub async fn all_off(&self) -> Result<(), BoardError> {
        self.call(&TurnOffAllChannels {}, Kind::Write, self.timeout())
            .await
    }

    /// The board state.
    pub async fn state(&self) -> Result<State, BoardError> {
        let bytes = self
            .call(&SerializeState {}, Kind::Read, self.timeout())
            .await?;
        State::from_bytes(&bytes).map_err(|e| BoardError::BadMessage {
            command: SerializeState::NAME.as_str(),
            detail: e.to_string(),
        })
    }

    /// Merge the fields present in `update` into the board state, after checking them against
    /// the board's configuration (nothing is sent if one is out of range).
    pub async fn update_state(&self, update: &State) -> Result<CallTiming, BoardError> {
        let mut update = update.clone();
        update.channel_count = None; // read only on the board
        update
            .validate_update(&self.info().config)
            .map_err(|e| match e {
                StateError::OutOfRange {
                    field,
                    value,
                    allowed,
                } => BoardError::OutOfRange {
                    what: field.to_owned(),
                    value,
                    allowed,
                },
                StateError::Decode(detail) => BoardError::BadMessage {
                    command: UpdateState::NAME.as_str(),
                    detail,
                },
            })?;
        let timeout = if update.hv_output_enabled.is_some() {
            self.timeout() + HV_SWITCH_TIME
        } else {
            self.timeout()
        };
        let state = update.to_bytes();
        let (ok, timing) = self
            .call_timed(&UpdateState { state }, Kind::Write, timeout)
            .await?;
        self.accepted::<UpdateState>(ok, || describe_update(&update))?;
        Ok(timing)
    }

    /// Target RMS voltage, volts (0 to the configuration's `max_voltage`).
    pub async fn set_voltage(&self, volts: f32) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            voltage: Some(volts),
            ..State::default()
        })
        .await
    }

    /// Waveform frequency, Hz (the configuration's range, or 0 for DC).
    pub async fn set_frequency(&self, hz: f32) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            frequency: Some(hz),
            ..State::default()
        })
        .await
    }

    /// Switch the HV converter on or off.
    pub async fn set_hv_output_enabled(&self, enabled: bool) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            hv_output_enabled: Some(enabled),
            ..State::default()
        })
        .await
    }

    /// Select the HV output (true) or the 3.3 V test output (false).
    pub async fn set_hv_output_selected(&self, selected: bool) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            hv_output_selected: Some(selected),
            ..State::default()
        })
        .await
    }

    /// Capacitance that fires `capacitance-exceeded`, farads (0 disables).
    pub async fn set_target_capacitance(&self, farads: f32) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            target_capacitance: Some(farads),
            ..State::default()
        })
        .await
    }

    /// Period of the `capacitance-updated` stream, ms (0 stops it).
    pub async fn set_capacitance_update_interval_ms(
        &self,
        ms: u32,
    ) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            capacitance_update_interval_ms: Some(ms),
            ..State::default()
        })
        .await
    }

    /// Which gated events the board sends (bit 0 is their master enable).
    pub async fn set_event_mask(&self, mask: u32) -> Result<CallTiming, BoardError> {
        self.update_state(&State {
            event_mask: Some(mask),
            ..State::default()
        })
        .await
    }

    /// Measured RMS output voltage, volts.
    pub async fn measured_voltage(&self) -> Result<f32, BoardError> {
        self.call(&MeasureVoltage {}, Kind::Read, self.timeout())
            .await
    }

    /// Lowest RMS voltage the waveform can produce, volts.
    pub async fn min_waveform_voltage(&self) -> Result<f32, BoardError> {
        self.call(&MinWaveformVoltage {}, Kind::Read, self.timeout())
            .await
    }

    /// Capacitance of the actuated electrodes, farads, over `n_samples` (0: the config's).
    pub async fn capacitance(&self, n_samples: u16) -> Result<f32, BoardError> {
        let timeout = self.timeout() + Duration::from_micros(100) * u32::from(n_samples);
        self.call(&Capacitance { n_samples }, Kind::Read, timeout)
            .await
    }

    /// Capacitance of each channel actuated alone, farads, in the order given.
    pub async fn channel_capacitances(&self, channels: &[u16]) -> Result<Vec<f32>, BoardError> {
        self.pack(channels.iter().copied())?; // range check
        let timeout = self.timeout() + SCAN_TIME_PER_CHANNEL * len_u32(channels.len());
        let command = ChannelCapacitances {
            channels: channels.to_vec(),
            n_samples: 0,
        };
        let values = self.call(&command, Kind::Read, timeout).await?;
        if values.len() != channels.len() {
            return Err(BoardError::BadMessage {
                command: ChannelCapacitances::NAME.as_str(),
                detail: format!("{} values for {} channels", values.len(), channels.len()),
            });
        }
        Ok(values)
    }

    /// Test every channel for shorts (each for `delay_ms`); the shorted ones are added to the
    /// disabled mask and returned.
    pub async fn detect_shorts(&self, delay_ms: u8) -> Result<Vec<u16>, BoardError> {
        let per_channel = SHORTS_TIME_PER_CHANNEL + Duration::from_millis(u64::from(delay_ms));
        let timeout = self.timeout() + per_channel * u32::from(self.info().channel_count);
        let shorts = self
            .call(&DetectShorts { delay_ms }, Kind::Write, timeout)
            .await?;
        Ok(shorts.into_iter().map(u16::from).collect())
    }

    /// HV off and every channel disabled, by the board itself.
    pub async fn halt(&self) -> Result<(), BoardError> {
        self.call(&Halt {}, Kind::Write, self.timeout() + HV_SWITCH_TIME)
            .await
    }

    /// RMS output current, amperes.
    pub async fn output_current(&self) -> Result<f32, BoardError> {
        self.call(&OutputCurrent {}, Kind::Read, self.timeout())
            .await
    }

    /// Input supply current, amperes.
    pub async fn input_current(&self) -> Result<f32, BoardError> {
        self.call(&InputCurrent {}, Kind::Read, self.timeout())
            .await
    }

    /// MCU temperature, degrees Celsius.
    pub async fn temperature(&self) -> Result<f32, BoardError> {
        self.call(&Temperature {}, Kind::Read, self.timeout()).await
    }

    /// Ask the board to cut HV and channels by itself when the host is silent for `timeout`
    /// (zero disables). Firmware without this feature -> `Unsupported`.
    pub async fn set_host_watchdog(&self, timeout: Duration) -> Result<(), BoardError> {
        let name = SetHostWatchdog::NAME.as_str();
        let timeout_ms =
            u32::try_from(timeout.as_millis()).map_err(|_| BoardError::OutOfRange {
                what: "host watchdog timeout (ms)".into(),
                value: timeout.as_millis() as f64,
                allowed: format!("0 to {} ms", u32::MAX),
            })?;
        let unsupported = |detail: &str| BoardError::Unsupported {
            command: name,
            detail: detail.to_owned(),
        };
        if !self.table().has(SetHostWatchdog::NAME) {
            return Err(unsupported("its command table has no such command"));
        }
        match self
            .call(&SetHostWatchdog { timeout_ms }, Kind::Write, self.timeout())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(unsupported("the board answered false")),
            Err(BoardError::InvalidReply {
                source: RpcError::ReplyLength { got: 0, .. },
                ..
            }) => Err(unsupported("the board sent an empty reply")),
            Err(e) => Err(e),
        }
    }

    /// Enable the MCU hang watchdog.
    pub async fn watchdog_enable(&self) -> Result<(), BoardError> {
        self.call(&WatchdogEnable {}, Kind::Write, self.timeout())
            .await
    }

    /// Disable the MCU hang watchdog.
    pub async fn watchdog_disable(&self) -> Result<(), BoardError> {
        self.call(&WatchdogDisable {}, Kind::Write, self.timeout())
            .await
    }

    /// Refresh the MCU hang watchdog.
    pub async fn watchdog_reset(&self) -> Result<(), BoardError> {
        self.call(&WatchdogReset {}, Kind::Write, self.timeout())
            .await
    }

    /// HV off, then every channel off. Best effort: both are attempted; the first error is
    /// returned.
    pub async fn safe_state(&self) -> Result<(), BoardError> {
        let hv = self.set_hv_output_enabled(false).await;
        let channels = self.all_off().await;
        hv.and(channels)
    }

    fn pack(&self, channels: impl IntoIterator<Item = u16>) -> Result<Vec<u8>, BoardError> {
        let count = self.info().channel_count;
        pack(channels, count).map_err(|e| match e {
            ChannelError::OutOfRange { channel, .. } => BoardError::OutOfRange {
                what: "channel".into(),
                value: f64::from(channel),
                allowed: format!(
                    "0 to {} (the board has {count} channels)",
                    count.saturating_sub(1)
                ),
            },
            ChannelError::BadCount(n) => BoardError::BadMessage {
                command: "number_of_channels",
                detail: format!("channel count {n} is not a multiple of 8"),
            },
        })
    }

    fn accepted<C: Command>(
        &self,
        ok: bool,
        detail: impl FnOnce() -> String,
    ) -> Result<(), BoardError> {
        if ok {
            Ok(())
        } else {
            Err(BoardError::Refused {
                command: C::NAME.as_str(),
                detail: detail(),
            })
        }
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The fields an update sets, e.g. `state update {voltage = 90, hv_output_enabled = true}`.
fn describe_update(s: &State) -> String {
    format!("state update {{{}}}", s.describe())
}
