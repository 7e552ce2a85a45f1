//! The typed DropBot API: one method per thing the plugin needs, each a [`Command`] of the
//! firmware-protocol crate. Arguments are checked against the board (channel count, the
//! configuration's voltage and frequency limits) before anything is sent.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::commands::{
    Capacitance, ChannelCapacitances, DetectShorts, DisabledChannelsMask, Halt, HighVoltage,
    MinWaveformVoltage, SerializeState, SetDisabledChannelsMask, SetStateOfChannels,
    StateOfChannels, TurnOffAllChannels, UpdateState,
};
use firmware_protocol::state::StateError;
use firmware_protocol::{ChannelError, Command, State};

use super::dropbot::{CallTiming, DropBot, Kind};
use super::error::BoardError;

mod system;

/// Under this feedback capacitor (farads) the chip-load saturation check false-triggers.
pub const SMALL_C16_F: f32 = 0.3e-6;
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
        let request = self.channels_request(channels)?;
        let (ok, timing) = self
            .call_timed(&request, Kind::Write, self.timeout())
            .await?;
        self.channels_taken(ok, channels)?;
        Ok(timing)
    }

    /// [`DropBot::set_channels`] from a plain thread (the actuation engine's), written no
    /// earlier than `at` and as soon after it as the port takes it: the frame is ready and
    /// the port taken before `at`.
    pub fn set_channels_blocking(
        &self,
        channels: &BTreeSet<u16>,
        at: Option<Instant>,
    ) -> Result<CallTiming, BoardError> {
        let request = self.channels_request(channels)?;
        let (ok, timing) = self.call_blocking(&request, Kind::Write, self.timeout(), at)?;
        self.channels_taken(ok, channels)?;
        Ok(timing)
    }

    fn channels_request(&self, channels: &BTreeSet<u16>) -> Result<SetStateOfChannels, BoardError> {
        Ok(SetStateOfChannels {
            channel_states: self.pack(channels.iter().copied())?,
        })
    }

    fn channels_taken(&self, ok: bool, channels: &BTreeSet<u16>) -> Result<(), BoardError> {
        self.accepted::<SetStateOfChannels>(ok, || {
            format!(
                "{} of {} channels asked for (some may be disabled)",
                channels.len(),
                self.info().channel_count
            )
        })
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

    /// Set the disabled channels (the firmware answers nothing: read the mask back to check).
    pub async fn set_disabled_channels(&self, channels: &BTreeSet<u16>) -> Result<(), BoardError> {
        let disabled_channels_mask = self.pack(channels.iter().copied())?;
        self.call(
            &SetDisabledChannelsMask {
                disabled_channels_mask,
            },
            Kind::Write,
            self.timeout(),
        )
        .await
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
    /// the board's configuration (nothing is sent if one is out of range), and confirm by
    /// reading the state back.
    pub async fn update_state(&self, update: &State) -> Result<CallTiming, BoardError> {
        let (update, request, timeout) = self.state_request(update)?;
        let (decoded, timing) = self.call_timed(&request, Kind::Write, timeout).await?;
        self.accepted::<UpdateState>(decoded != 0, || describe_update(&update))?;
        let (after, _) = self
            .call_timed(&SerializeState {}, Kind::Read, self.timeout())
            .await?;
        self.taken(&update, &after)?;
        Ok(timing)
    }

    /// [`DropBot::update_state`] from a plain thread (the actuation engine's), read back too.
    pub fn update_state_blocking(&self, update: &State) -> Result<CallTiming, BoardError> {
        let (update, request, timeout) = self.state_request(update)?;
        let (decoded, timing) = self.call_blocking(&request, Kind::Write, timeout, None)?;
        self.accepted::<UpdateState>(decoded != 0, || describe_update(&update))?;
        let (after, _) =
            self.call_blocking(&SerializeState {}, Kind::Read, self.timeout(), None)?;
        self.taken(&update, &after)?;
        Ok(timing)
    }

    /// [`DropBot::update_state`] from a plain thread, without the read-back: for settings
    /// whose refusal harms nothing (e.g. a capacitance target the host also watches itself).
    pub fn update_state_unconfirmed_blocking(
        &self,
        update: &State,
    ) -> Result<CallTiming, BoardError> {
        let (update, request, timeout) = self.state_request(update)?;
        let (decoded, timing) = self.call_blocking(&request, Kind::Write, timeout, None)?;
        self.accepted::<UpdateState>(decoded != 0, || describe_update(&update))?;
        Ok(timing)
    }

    /// The firmware answers an update with whether the message decoded (nanopb
    /// `update_state`), and skips a field its callback refuses (dropbot.py `Node.h`
    /// `on_state_*_changed`): only the state read back (`after`) says what it took.
    fn taken(&self, update: &State, after: &[u8]) -> Result<(), BoardError> {
        let after = State::from_bytes(after).map_err(|e| BoardError::BadMessage {
            command: SerializeState::NAME.as_str(),
            detail: e.to_string(),
        })?;
        let not_taken = update.not_taken(&after);
        self.accepted::<UpdateState>(not_taken.is_empty(), || {
            format!("it did not take {}", not_taken.join(", "))
        })
    }

    /// The checked update, its request and its timeout.
    fn state_request(&self, update: &State) -> Result<(State, UpdateState, Duration), BoardError> {
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
        let request = UpdateState {
            serialized: update.to_bytes(),
        };
        Ok((update, request, timeout))
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

    /// What a host sets when it takes the board, as the vendor's host code does
    /// (MicroDrop's DropBot plugin on connection): which gated events to send, and, with a
    /// feedback capacitor under 300 nF (`SMALL_C16_F`), the chip-load saturation check off (a
    /// negative margin; the firmware skips the check then, `Node.h` since 1.70), because
    /// there it halts the board for nothing.
    pub async fn take_for_host(&self, event_mask: u32) -> Result<CallTiming, BoardError> {
        let small_c16 = self.info().config.c16() < SMALL_C16_F;
        self.update_state(&State {
            event_mask: Some(event_mask),
            chip_load_range_margin: small_c16.then_some(-1.0),
            ..State::default()
        })
        .await
    }

    /// Measured RMS output voltage, volts (`high_voltage`). With HV off the supply voltage
    /// passes through: under 5 V then means the board has no power (dropbot.py `proxy.py`).
    pub async fn high_voltage(&self) -> Result<f32, BoardError> {
        self.call(&HighVoltage {}, Kind::Read, self.timeout()).await
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

    /// Capacitance of each channel actuated alone, farads, in the order given, each averaged
    /// over the configuration's `capacitance_n_samples`. The board switches HV on for the scan
    /// if it was off, and back off afterwards.
    pub async fn channel_capacitances(&self, channels: &[u16]) -> Result<Vec<f32>, BoardError> {
        self.pack(channels.iter().copied())?; // range check
        let channels: Vec<u8> = channels
            .iter()
            .map(|&c| {
                u8::try_from(c).map_err(|_| BoardError::OutOfRange {
                    what: "channel of a capacitance scan".into(),
                    value: f64::from(c),
                    allowed: "0 to 255 (the firmware takes 8-bit channel numbers)".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let timeout =
            self.timeout() + 2 * HV_SWITCH_TIME + SCAN_TIME_PER_CHANNEL * len_u32(channels.len());
        let count = channels.len();
        let values = self
            .call(&ChannelCapacitances { channels }, Kind::Read, timeout)
            .await?;
        if values.len() != count {
            return Err(BoardError::BadMessage {
                command: ChannelCapacitances::NAME.as_str(),
                detail: format!("{} values for {count} channels", values.len()),
            });
        }
        Ok(values)
    }

    /// Test every channel for shorts (each for `delay_ms`); the disabled mask becomes exactly
    /// the shorted channels, which are returned.
    pub async fn detect_shorts(&self, delay_ms: u8) -> Result<Vec<u16>, BoardError> {
        let per_channel = SHORTS_TIME_PER_CHANNEL + Duration::from_millis(u64::from(delay_ms));
        let timeout = self.timeout() + per_channel * u32::from(self.info().channel_count);
        let shorts = self
            .call(&DetectShorts { delay_ms }, Kind::Write, timeout)
            .await?;
        // The firmware scans the channels it has but reports over all 120 it could have: the
        // ones without a switching board read 0 V and come back "shorted" (dropbot.py
        // `channels.cpp` `short_detection_voltages`). They are not channels.
        let count = self.info().channel_count;
        Ok(shorts
            .into_iter()
            .map(u16::from)
            .filter(|c| *c < count)
            .collect())
    }

    /// HV off and every channel disabled, by the board itself.
    pub async fn halt(&self) -> Result<(), BoardError> {
        self.call(&Halt {}, Kind::Write, self.timeout() + HV_SWITCH_TIME)
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

    pub(super) fn accepted<C: Command>(
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
