//! Board state (RAM) and configuration (EEPROM) as protobuf (proto2) messages, with the
//! field numbers, defaults and validation rules of the DropBot firmware.
//!
//! Every field is optional on the wire: an update carries only the fields it changes.

use prost::Message;
use thiserror::Error;

/// Board state, `update_state` / `serialize_state`.
#[derive(Clone, PartialEq, Message)]
pub struct State {
    /// Target RMS volts.
    #[prost(float, optional, tag = "1", default = "100")]
    pub voltage: Option<f32>,
    /// Waveform frequency in Hz; 0 means DC.
    #[prost(float, optional, tag = "2", default = "10000")]
    pub frequency: Option<f32>,
    /// HV converter on.
    #[prost(bool, optional, tag = "3", default = "false")]
    pub hv_output_enabled: Option<bool>,
    /// HV rather than the 3.3 V test output.
    #[prost(bool, optional, tag = "4", default = "true")]
    pub hv_output_selected: Option<bool>,
    /// Number of channels (read only: ignored in updates).
    #[prost(int32, optional, tag = "5", default = "0")]
    pub channel_count: Option<i32>,
    /// Capacitance stream period in ms; 0 = no stream.
    #[prost(uint32, optional, tag = "6", default = "0")]
    pub capacitance_update_interval_ms: Option<u32>,
    /// Farads; `capacitance-exceeded` fires when reached (then resets to 0).
    #[prost(float, optional, tag = "7", default = "0")]
    pub target_capacitance: Option<f32>,
    /// Consecutive samples at or above target (a float on the wire, sic).
    #[prost(float, optional, tag = "8", default = "10")]
    pub target_count: Option<f32>,
    /// Bit 0 = master enable for gated events; see [`crate::events`].
    #[prost(uint32, optional, tag = "9", default = "4294967294")]
    pub event_mask: Option<u32>,
    /// Drop detection stream period in ms; 0 = off.
    #[prost(uint32, optional, tag = "10", default = "0")]
    pub drops_update_interval_ms: Option<u32>,
    /// Output current limit in amperes, in (0, 0.5].
    #[prost(float, optional, tag = "11", default = "0.025")]
    pub output_current_limit: Option<f32>,
    /// Fraction of the ADC range; < 0 disables the chip-load check.
    #[prost(float, optional, tag = "12", default = "0.03")]
    pub chip_load_range_margin: Option<f32>,
    /// Halt when the chip load saturates the capacitance front end.
    #[prost(bool, optional, tag = "13", default = "true")]
    pub halt_on_chip_load_saturated: Option<bool>,
}

/// Board configuration, `update_config` / `serialize_config` (fields 1 and 2 are retired).
#[derive(Clone, PartialEq, Message)]
pub struct Config {
    /// The board's own I2C address.
    #[prost(uint32, optional, tag = "3", default = "0")]
    pub i2c_address: Option<u32>,
    /// First switching board's I2C address.
    #[prost(uint32, optional, tag = "53", default = "32")]
    pub switching_board_i2c_address: Option<u32>,
    /// Feedback resistor R7 in ohms.
    #[prost(float, optional, tag = "54", default = "10000")]
    pub r7: Option<f32>,
    /// Digital potentiometer maximum in ohms.
    #[prost(float, optional, tag = "55", default = "50000")]
    pub pot_max: Option<f32>,
    /// Highest RMS voltage allowed, volts.
    #[prost(float, optional, tag = "56", default = "150")]
    pub max_voltage: Option<f32>,
    /// Lowest waveform frequency allowed, Hz (0 = DC is always allowed).
    #[prost(float, optional, tag = "57", default = "100")]
    pub min_frequency: Option<f32>,
    /// Highest waveform frequency allowed, Hz.
    #[prost(float, optional, tag = "58", default = "10000")]
    pub max_frequency: Option<f32>,
    /// Free-text board id set by the user.
    #[prost(string, optional, tag = "59", default = "")]
    pub id: Option<String>,
    /// Samples per capacitance reading.
    #[prost(uint32, optional, tag = "60", default = "50")]
    pub capacitance_n_samples: Option<u32>,
    /// Capacitance reference C16 in farads.
    #[prost(float, optional, tag = "61", default = "3.3e-7")]
    pub c16: Option<f32>,
    /// MCU hang watchdog enabled.
    #[prost(bool, optional, tag = "62", default = "true")]
    pub watchdog_enabled: Option<bool>,
}

/// A state or config value the firmware refuses.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum StateError {
    /// A value outside its allowed range.
    #[error("{field} = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        allowed: String,
    },
    /// Bytes that are not a protobuf message of this kind.
    #[error("not a valid protobuf message: {0}")]
    Decode(String),
}

/// Calls `$m!(field, ...)` with every settable [`State`] field, so the list is written once.
macro_rules! settable_state_fields {
    ($m:ident) => {
        $m!(
            voltage,
            frequency,
            hv_output_enabled,
            hv_output_selected,
            capacitance_update_interval_ms,
            target_capacitance,
            target_count,
            event_mask,
            drops_update_interval_ms,
            output_current_limit,
            chip_load_range_margin,
            halt_on_chip_load_saturated
        )
    };
}

impl State {
    /// The state of a board just powered on, every field present.
    pub fn with_defaults(channel_count: i32) -> Self {
        let d = State::default();
        State {
            voltage: Some(d.voltage()),
            frequency: Some(d.frequency()),
            hv_output_enabled: Some(d.hv_output_enabled()),
            hv_output_selected: Some(d.hv_output_selected()),
            channel_count: Some(channel_count),
            capacitance_update_interval_ms: Some(d.capacitance_update_interval_ms()),
            target_capacitance: Some(d.target_capacitance()),
            target_count: Some(d.target_count()),
            event_mask: Some(d.event_mask()),
            drops_update_interval_ms: Some(d.drops_update_interval_ms()),
            output_current_limit: Some(d.output_current_limit()),
            chip_load_range_margin: Some(d.chip_load_range_margin()),
            halt_on_chip_load_saturated: Some(d.halt_on_chip_load_saturated()),
        }
    }

    /// Decode a state message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        Self::decode(bytes).map_err(|e| StateError::Decode(e.to_string()))
    }

    /// Encode as a protobuf message (the fields present, in field-number order).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Check an update against the firmware's rules under `config`.
    pub fn validate_update(&self, config: &Config) -> Result<(), StateError> {
        if let Some(v) = self.voltage {
            check("voltage", v, 0.0, config.max_voltage(), "V")?;
        }
        if let Some(f) = self.frequency {
            if f != 0.0 {
                check(
                    "frequency",
                    f,
                    config.min_frequency(),
                    config.max_frequency(),
                    "Hz (or 0 for DC)",
                )?;
            }
        }
        if let Some(limit) = self.output_current_limit {
            if !(limit > 0.0 && limit <= 0.5) {
                return Err(StateError::OutOfRange {
                    field: "output_current_limit",
                    value: f64::from(limit),
                    allowed: "(0, 0.5] A".into(),
                });
            }
        }
        if let Some(t) = self.target_capacitance {
            check("target_capacitance", t, 0.0, f32::MAX, "F")?;
        }
        if let Some(n) = self.target_count {
            check("target_count", n, 1.0, f32::MAX, "samples")?;
        }
        if let Some(m) = self.chip_load_range_margin {
            check(
                "chip_load_range_margin",
                m,
                f32::MIN,
                0.5,
                "(fraction; < 0 disables)",
            )?;
        }
        Ok(())
    }

    /// Apply the fields present in `update` (channel_count is read only).
    pub fn apply(&mut self, update: &State) {
        macro_rules! take {
            ($($f:ident),*) => {$(if update.$f.is_some() { self.$f = update.$f; })*};
        }
        settable_state_fields!(take);
    }

    /// The settable fields present, e.g. `voltage = 90, hv_output_enabled = true`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        macro_rules! field {
            ($($f:ident),*) => {$(if let Some(v) = &self.$f {
                parts.push(format!("{} = {v}", stringify!($f)));
            })*};
        }
        settable_state_fields!(field);
        parts.join(", ")
    }

    /// The fields of this update that `after` (the state read back) does not hold, e.g.
    /// `voltage = 120 (the board kept 100)`. The firmware answers an update with "decoded" and
    /// silently skips a field it refuses, so reading back is the only confirmation.
    pub fn not_taken(&self, after: &State) -> Vec<String> {
        let mut parts = Vec::new();
        macro_rules! field {
            ($($f:ident),*) => {$(if let Some(v) = &self.$f {
                if after.$f.as_ref() != Some(v) {
                    let kept = after.$f.as_ref().map_or("nothing".to_owned(), |k| k.to_string());
                    parts.push(format!("{} = {v} (the board kept {kept})", stringify!($f)));
                }
            })*};
        }
        settable_state_fields!(field);
        parts
    }
}

impl Config {
    /// The C16 a firmware uses when its stored configuration has none (the message then
    /// leaves field 61 out, and a decoder would take this crate's default, which is the
    /// newest build's): 150 nF up to 1.74.1 (sci-bots `config.proto` and `channels.cpp`),
    /// 330 nF from 1.74.2 on (the Blue-Ocean fork's "0.33 uF capacitor used", first in its
    /// v1.74.2). A version that does not parse gets the newest builds' value.
    pub fn firmware_default_c16(version: &str) -> f32 {
        match crate::table_set::numeric(version) {
            Some(v) if v < [1, 74, 2] => 150e-9,
            _ => Config::default().c16(),
        }
    }

    /// The configuration of a new board, every field present.
    pub fn with_defaults() -> Self {
        let d = Config::default();
        Config {
            i2c_address: Some(d.i2c_address()),
            switching_board_i2c_address: Some(d.switching_board_i2c_address()),
            r7: Some(d.r7()),
            pot_max: Some(d.pot_max()),
            max_voltage: Some(d.max_voltage()),
            min_frequency: Some(d.min_frequency()),
            max_frequency: Some(d.max_frequency()),
            id: Some(d.id().to_owned()),
            capacitance_n_samples: Some(d.capacitance_n_samples()),
            c16: Some(d.c16()),
            watchdog_enabled: Some(d.watchdog_enabled()),
        }
    }

    /// Decode a config message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        Self::decode(bytes).map_err(|e| StateError::Decode(e.to_string()))
    }

    /// Encode as a protobuf message (the fields present, in field-number order).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Check an update: limits must stay ordered and physical.
    pub fn validate_update(&self, current: &Config) -> Result<(), StateError> {
        let min_f = self.min_frequency.unwrap_or(current.min_frequency());
        let max_f = self.max_frequency.unwrap_or(current.max_frequency());
        check(
            "max_voltage",
            self.max_voltage.unwrap_or(current.max_voltage()),
            0.0,
            300.0,
            "V",
        )?;
        check(
            "min_frequency",
            min_f,
            0.0,
            max_f,
            "Hz (at most max_frequency)",
        )?;
        check(
            "max_frequency",
            max_f,
            min_f,
            1e6,
            "Hz (at least min_frequency)",
        )?;
        let n = self
            .capacitance_n_samples
            .unwrap_or(current.capacitance_n_samples());
        check("capacitance_n_samples", n as f32, 1.0, 1000.0, "samples")?;
        Ok(())
    }

    /// Apply the fields present in `update`.
    pub fn apply(&mut self, update: &Config) {
        macro_rules! take {
            ($($f:ident),*) => {$(if update.$f.is_some() { self.$f = update.$f.clone(); })*};
        }
        take!(
            i2c_address,
            switching_board_i2c_address,
            r7,
            pot_max,
            max_voltage,
            min_frequency,
            max_frequency,
            id,
            capacitance_n_samples,
            c16,
            watchdog_enabled
        );
    }
}

fn check(
    field: &'static str,
    value: f32,
    min: f32,
    max: f32,
    unit: &str,
) -> Result<(), StateError> {
    if value.is_finite() && value >= min && value <= max {
        return Ok(());
    }
    Err(StateError::OutOfRange {
        field,
        value: f64::from(value),
        allowed: format!("{min} to {max} {unit}"),
    })
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
