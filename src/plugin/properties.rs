//! The plugin's settable properties as data: one description per property serves the JSON
//! schema (`state/schema`), the validation of puts, and the error messages that say what is
//! allowed.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use thiserror::Error;

/// Ranges that depend on the connected board (its config), with DropBot defaults otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Lowest settable RMS voltage, V.
    pub min_voltage: f64,
    /// Highest settable RMS voltage, V (config `max_voltage`).
    pub max_voltage: f64,
    /// Lowest waveform frequency, Hz (config `min_frequency`; 0 = DC is always allowed).
    pub min_frequency: f64,
    /// Highest waveform frequency, Hz (config `max_frequency`).
    pub max_frequency: f64,
    /// Number of channels.
    pub channel_count: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_voltage: 0.0,
            max_voltage: 150.0,
            min_frequency: 100.0,
            max_frequency: 10_000.0,
            channel_count: 120,
        }
    }
}

/// A value a client sent that we cannot take.
#[derive(Debug, Error, Clone, PartialEq)]
#[error("{property}: {problem}; allowed: {allowed}")]
pub struct InputError {
    /// The property or action.
    pub property: String,
    /// What was wrong with the value.
    pub problem: String,
    /// What is allowed.
    pub allowed: String,
}

impl InputError {
    /// An error for `property`.
    pub fn new(property: &str, problem: impl Into<String>, allowed: impl Into<String>) -> Self {
        InputError {
            property: property.to_owned(),
            problem: problem.into(),
            allowed: allowed.into(),
        }
    }
}

/// Every property a client may put.
///
/// Only [`Property::WaitForBoard`] is stored per protocol step. A step's voltage and frequency
/// are the electrodes model's (`electrodes-model/state/voltage|frequency`, which the plugin
/// follows), as in MicroDrop 3 with its 2018 DropBot plugin: one source of truth, whatever order
/// MicroDrop's step loader writes plugins in. Ours are global: a put sets the board now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property {
    /// RMS actuation voltage, V (global; steps keep the electrodes model's).
    Voltage,
    /// Waveform frequency, Hz (global; steps keep the electrodes model's).
    Frequency,
    /// HV output on or off (global).
    HvOutputEnabled,
    /// Actuated channels, by channel number (global; steps store electrodes instead).
    Channels,
    /// Capacitance stream period, ms (0 = off; global).
    CapacitanceUpdateIntervalMs,
    /// Channels the board must never actuate (global).
    DisabledChannels,
    /// Whether a protocol step waits until the board has applied it (per step). Makes the
    /// plugin one of MicroDrop's step plugins, whose `execute` the step runner calls.
    WaitForBoard,
}

/// A validated property value.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// Volts.
    Voltage(f32),
    /// Hz.
    Frequency(f32),
    /// On or off.
    HvOutputEnabled(bool),
    /// Channels to actuate.
    Channels(BTreeSet<u16>),
    /// Milliseconds.
    CapacitanceUpdateIntervalMs(u32),
    /// Channels to disable.
    DisabledChannels(BTreeSet<u16>),
    /// Wait for the board in `execute`.
    WaitForBoard(bool),
}

/// Longest capacitance stream period accepted, ms.
const MAX_INTERVAL_MS: u64 = 3_600_000;

impl Property {
    /// All properties, in schema order.
    pub const ALL: [Property; 7] = [
        Property::Voltage,
        Property::Frequency,
        Property::HvOutputEnabled,
        Property::Channels,
        Property::CapacitanceUpdateIntervalMs,
        Property::DisabledChannels,
        Property::WaitForBoard,
    ];

    /// The property's name in topics.
    pub fn name(self) -> &'static str {
        match self {
            Property::Voltage => "voltage",
            Property::Frequency => "frequency",
            Property::HvOutputEnabled => "hv-output-enabled",
            Property::Channels => "channels",
            Property::CapacitanceUpdateIntervalMs => "capacitance-update-interval-ms",
            Property::DisabledChannels => "disabled-channels",
            Property::WaitForBoard => "wait-for-board",
        }
    }

    /// The property with this topic name.
    pub fn from_name(name: &str) -> Option<Property> {
        Property::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether MicroDrop's step editor stores it per protocol step.
    pub fn per_step(self) -> bool {
        matches!(self, Property::WaitForBoard)
    }

    /// Its JSON schema, with MicroDrop's `per_step` hint.
    pub fn schema(self, limits: &Limits) -> Value {
        let channel = json!({"type": "integer", "minimum": 0, "maximum": limits.channel_count.saturating_sub(1)});
        let mut schema = match self {
            Property::Voltage => json!({
                "type": "number", "minimum": limits.min_voltage, "maximum": limits.max_voltage,
                "default": 100, "unit": "V",
                "description": "RMS actuation voltage now; protocol steps set theirs in the electrodes model",
            }),
            Property::Frequency => json!({
                "type": "number", "minimum": 0, "maximum": limits.max_frequency,
                "default": 1000, "unit": "Hz",
                "description": format!("Waveform frequency now: 0 (DC) or {} to {} Hz; protocol steps set theirs in the electrodes model", limits.min_frequency, limits.max_frequency),
            }),
            Property::HvOutputEnabled => json!({
                "type": "boolean", "default": false, "description": "High-voltage output on",
            }),
            Property::Channels => json!({
                "type": "array", "items": channel, "uniqueItems": true, "hidden": true,
                "description": "Actuated channels (numbers); steps store electrodes instead",
            }),
            Property::CapacitanceUpdateIntervalMs => json!({
                "type": "integer", "minimum": 0, "maximum": MAX_INTERVAL_MS, "default": 0, "unit": "ms",
                "description": "Capacitance stream period; 0 turns the stream off",
            }),
            Property::DisabledChannels => json!({
                "type": "array", "items": channel, "uniqueItems": true,
                "description": "Channels the board must never actuate",
            }),
            Property::WaitForBoard => json!({
                "type": "boolean", "default": true,
                "description": "The step waits until the DropBot has applied its electrodes, voltage and frequency",
            }),
        };
        super::set_field(&mut schema, "per_step", json!(self.per_step()));
        schema
    }

    /// Validate a put's (unwrapped) value.
    pub fn parse(self, value: &Value, limits: &Limits) -> Result<PropertyValue, InputError> {
        let name = self.name();
        Ok(match self {
            Property::Voltage => PropertyValue::Voltage(voltage(value, limits)?),
            Property::Frequency => PropertyValue::Frequency(frequency(value, limits)?),
            Property::HvOutputEnabled => PropertyValue::HvOutputEnabled(boolean(name, value)?),
            Property::Channels => {
                PropertyValue::Channels(channel_set(name, value, limits.channel_count)?)
            }
            Property::CapacitanceUpdateIntervalMs => {
                let allowed =
                    format!("a whole number of milliseconds from 0 (off) to {MAX_INTERVAL_MS}");
                match value.as_u64().filter(|ms| *ms <= MAX_INTERVAL_MS) {
                    Some(ms) => PropertyValue::CapacitanceUpdateIntervalMs(ms as u32),
                    None => {
                        return Err(InputError::new(
                            name,
                            format!("got {}", describe(value)),
                            allowed,
                        ))
                    }
                }
            }
            Property::DisabledChannels => {
                PropertyValue::DisabledChannels(channel_set(name, value, limits.channel_count)?)
            }
            Property::WaitForBoard => PropertyValue::WaitForBoard(boolean(name, value)?),
        })
    }
}

/// `true` or `false`.
pub fn boolean(property: &str, value: &Value) -> Result<bool, InputError> {
    value.as_bool().ok_or_else(|| {
        InputError::new(
            property,
            format!("got {}", describe(value)),
            "true or false",
        )
    })
}

/// A voltage (number or `"100 V"`) within the board's limits.
pub fn voltage(value: &Value, limits: &Limits) -> Result<f32, InputError> {
    let allowed = format!(
        "a number from {} to {} (V)",
        limits.min_voltage, limits.max_voltage
    );
    let v = number("voltage", value, &allowed)?;
    in_range(
        "voltage",
        v,
        limits.min_voltage,
        limits.max_voltage,
        &allowed,
    )?;
    Ok(v as f32)
}

/// A frequency (number or `"1000 Hz"`): 0 for DC or within the board's limits.
pub fn frequency(value: &Value, limits: &Limits) -> Result<f32, InputError> {
    let allowed = format!(
        "0 (DC) or a number from {} to {} (Hz)",
        limits.min_frequency, limits.max_frequency
    );
    let f = number("frequency", value, &allowed)?;
    if f != 0.0 {
        in_range(
            "frequency",
            f,
            limits.min_frequency,
            limits.max_frequency,
            &allowed,
        )?;
    }
    Ok(f as f32)
}

/// A set of channel numbers that exist on the board.
pub fn channels(
    property: &str,
    value: &Value,
    limits: &Limits,
) -> Result<BTreeSet<u16>, InputError> {
    channel_set(property, value, limits.channel_count)
}

/// The whole schema published on `state/schema` and answered by `get-schema`.
pub fn schema(plugin_name: &str, limits: &Limits) -> Value {
    let properties: serde_json::Map<String, Value> = Property::ALL
        .into_iter()
        .map(|p| (p.name().to_owned(), p.schema(limits)))
        .collect();
    json!({
        "type": "object",
        "title": plugin_name,
        "description": "DropBot digital-microfluidics control board",
        "properties": properties,
    })
}

/// A number, or a MicroDrop unit string such as `"100 V"` or `"1000 Hz"`.
pub fn number(property: &str, value: &Value, allowed: &str) -> Result<f64, InputError> {
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_quantity(s),
        _ => None,
    };
    n.filter(|n| n.is_finite())
        .ok_or_else(|| InputError::new(property, format!("got {}", describe(value)), allowed))
}

/// The number in `"100 V"`, `"1 kHz"`, `"1000"`; SI prefixes k and m are understood.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(text.len());
    // "1e3 V" parses, but so would the 'e' of a unit; back off to the last digit if needed.
    let (number, unit) = text.split_at(end);
    let value: f64 = number.trim().parse().ok()?;
    let unit = unit.trim();
    let scale = match unit.chars().next() {
        Some('k') if unit.len() > 1 => 1e3,
        Some('M') if unit.len() > 1 => 1e6,
        Some('m') if unit.len() > 1 => 1e-3,
        _ => 1.0,
    };
    Some(value * scale)
}

fn in_range(property: &str, v: f64, min: f64, max: f64, allowed: &str) -> Result<(), InputError> {
    if v >= min && v <= max {
        Ok(())
    } else {
        Err(InputError::new(
            property,
            format!("{v} is out of range"),
            allowed,
        ))
    }
}

fn channel_set(
    property: &str,
    value: &Value,
    channel_count: u16,
) -> Result<BTreeSet<u16>, InputError> {
    let allowed = format!(
        "an array of channel numbers from 0 to {}",
        channel_count.saturating_sub(1)
    );
    let Value::Array(items) = value else {
        return Err(InputError::new(
            property,
            format!("got {}", describe(value)),
            allowed,
        ));
    };
    items
        .iter()
        .map(|item| {
            item.as_u64()
                .filter(|c| *c < u64::from(channel_count))
                .map(|c| c as u16)
                .ok_or_else(|| {
                    InputError::new(property, format!("channel {item} does not exist"), &allowed)
                })
        })
        .collect()
}

/// A short description of a JSON value for error messages.
pub fn describe(value: &Value) -> String {
    let text = value.to_string();
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => format!("a boolean ({text})"),
        Value::Number(_) => format!("the number {text}"),
        Value::String(_) if text.len() <= 40 => format!("the string {text}"),
        Value::String(_) => "a long string".into(),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
#[path = "properties_tests.rs"]
mod tests;
