//! The `run-sequence` payload parsed to a [`Program`]:
//! `{"phases": [phase, ...], "repeats": n}`, a phase being
//! `{"channels": [...] | "electrodes": [...], "duration_ms": d}` with optional `voltage`,
//! `frequency` and `label`, or a feedback phase whose `duration_ms` is replaced by
//! `"until": {"capacitance_f": c} | {"coverage": fraction}, "timeout_ms": t`.
//!
//! Everything is checked before anything moves, and every refusal says which phase, what
//! was wrong and what is allowed. Sizes are bounded (phases, repeats, durations, the whole
//! run), so a request cannot make the engine hold more than a few megabytes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::properties::{self, describe, InputError, Limits};
use crate::actuation::{Phase, Program};
use crate::device::Device;

/// Most phases in one `phases` list.
pub const MAX_PHASES: usize = 1000;
/// Most `repeats`.
pub const MAX_REPEATS: u64 = 10_000;
/// Most phases in a whole run (repeats unrolled; routes too): one result each in the reply.
pub const MAX_RUN_PHASES: usize = 10_000;
/// Longest run.
pub const MAX_RUN: Duration = Duration::from_secs(24 * 3600);
/// Shortest and longest phase (or feedback timeout), ms.
pub const PHASE_MS: (f64, f64) = (1.0, 3_600_000.0);
/// Largest feedback target, farads: a chip's whole load is nanofarads, so more than this is
/// a unit mistake (picofarads given as farads).
pub const MAX_TARGET_F: f64 = 1e-6;
/// Longest phase label, characters.
const MAX_LABEL: usize = 200;

const NAME: &str = "run-sequence";
const PHASE_KEYS: [&str; 8] = [
    "channels",
    "electrodes",
    "duration_ms",
    "voltage",
    "frequency",
    "label",
    "until",
    "timeout_ms",
];
const PAYLOAD_ALLOWED: &str = "{\"phases\": [phase, ...], \"repeats\": n}, a phase being \
    {\"channels\": [...] or \"electrodes\": [...], \"duration_ms\": d} with optional voltage, \
    frequency, label; or a feedback phase with \"until\": {\"capacitance_f\": farads} or \
    {\"coverage\": fraction} and \"timeout_ms\" instead of duration_ms";

/// Capacitance per area of electrode covered by liquid and by filler (air or oil): what a
/// coverage target needs. Measured per chip and liquid by a calibration (not built yet).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Farads per mm² under liquid.
    pub liquid_f_per_mm2: f64,
    /// Farads per mm² under filler.
    pub filler_f_per_mm2: f64,
}

impl Calibration {
    /// The capacitance of electrodes of `area_mm2` covered to `fraction` (0..=1) by liquid:
    /// area · (filler + fraction · (liquid − filler)).
    pub fn coverage_farads(&self, area_mm2: f64, fraction: f64) -> f64 {
        let per_mm2 =
            self.filler_f_per_mm2 + fraction * (self.liquid_f_per_mm2 - self.filler_f_per_mm2);
        area_mm2 * per_mm2
    }
}

/// What parsing needs: the chip (for electrode ids), the board's ranges, a calibration.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The loaded device, if any.
    pub device: Option<&'a Device>,
    /// The board's ranges (channels, voltage, frequency).
    pub limits: Limits,
    /// For coverage targets.
    pub calibration: Option<Calibration>,
}

fn refuse(problem: impl Into<String>, allowed: impl Into<String>) -> InputError {
    InputError::new(NAME, problem, allowed)
}

/// Parse a `run-sequence` payload (see the module docs).
pub fn parse_sequence(value: &Value, env: &Env<'_>) -> Result<Program, InputError> {
    let Value::Object(map) = value else {
        return Err(refuse(format!("got {}", describe(value)), PAYLOAD_ALLOWED));
    };
    if let Some(key) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "phases" | "repeats"))
    {
        return Err(refuse(format!("unknown field `{key}`"), PAYLOAD_ALLOWED));
    }
    let list = match map.get("phases") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_PHASES => list,
        Some(Value::Array(list)) => {
            let problem = format!("`phases` has {} phases", list.len());
            return Err(refuse(problem, format!("1 to {MAX_PHASES} phases")));
        }
        Some(other) => {
            let problem = format!("`phases` is {}", describe(other));
            return Err(refuse(problem, PAYLOAD_ALLOWED));
        }
        None => return Err(refuse("no `phases`", PAYLOAD_ALLOWED)),
    };
    let repeats = match map.get("repeats") {
        None => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_REPEATS).contains(n))
            .ok_or_else(|| {
                refuse(
                    format!("repeats is {v}"),
                    format!("an integer from 1 to {MAX_REPEATS}"),
                )
            })?,
    };
    let phases = list
        .iter()
        .enumerate()
        .map(|(i, p)| parse_phase(i, p, env))
        .collect::<Result<Vec<_>, _>>()?;
    let total = phases.len() as u64 * repeats;
    if total > MAX_RUN_PHASES as u64 {
        return Err(refuse(
            format!(
                "{} phases repeated {repeats} times make {total}",
                phases.len()
            ),
            format!("at most {MAX_RUN_PHASES} phases in a run"),
        ));
    }
    let once: Duration = phases.iter().map(|p| p.duration).sum();
    let lasts = once.saturating_mul(u32::try_from(repeats).unwrap_or(u32::MAX));
    if lasts > MAX_RUN {
        return Err(refuse(
            format!("the run may last {:.0} s", lasts.as_secs_f64()),
            format!("runs of at most {} s", MAX_RUN.as_secs()),
        ));
    }
    Ok(Program {
        repeats: u32::try_from(repeats).unwrap_or(1),
        ..Program::new(phases)
    })
}

fn parse_phase(i: usize, value: &Value, env: &Env<'_>) -> Result<Phase, InputError> {
    let at = |field: &str| format!("phases[{i}].{field}");
    let Value::Object(map) = value else {
        return Err(refuse(
            format!("phases[{i}] is {}", describe(value)),
            PAYLOAD_ALLOWED,
        ));
    };
    if let Some(key) = map.keys().find(|k| !PHASE_KEYS.contains(&k.as_str())) {
        return Err(refuse(
            format!("phases[{i}] has an unknown field `{key}`"),
            format!("the fields {}", PHASE_KEYS.join(", ")),
        ));
    }
    let (channels, area) = match (map.get("channels"), map.get("electrodes")) {
        (Some(_), Some(_)) => {
            let problem = format!("phases[{i}] has both channels and electrodes");
            return Err(refuse(problem, "one of them"));
        }
        (Some(list), None) => {
            let channels = properties::channels(NAME, list, &env.limits)
                .map_err(|e| refuse(format!("{}: {}", at("channels"), e.problem), e.allowed))?;
            (channels, ChannelArea::Channels)
        }
        (None, Some(list)) => electrodes(&at("electrodes"), list, env)?,
        (None, None) => {
            let problem = format!("phases[{i}] has neither channels nor electrodes");
            return Err(refuse(
                problem,
                "\"channels\": [numbers] or \"electrodes\": [ids]",
            ));
        }
    };
    let until = match map.get("until") {
        None => None,
        Some(u) => Some(target(&at("until"), u, &channels, area, env)?),
    };
    let (field, other) = match until {
        None => ("duration_ms", "timeout_ms"),
        Some(_) => ("timeout_ms", "duration_ms"),
    };
    if map.contains_key(other) {
        let problem = match until {
            None => format!("phases[{i}] has timeout_ms but no until"),
            Some(_) => format!("phases[{i}] waits for `until` but has duration_ms"),
        };
        let allowed = "duration_ms for a timed phase; until and timeout_ms for a feedback phase";
        return Err(refuse(problem, allowed));
    }
    let duration = milliseconds(&at(field), map.get(field))?;
    let setting = |field: &str, parse: fn(&Value, &Limits) -> Result<f32, InputError>| {
        map.get(field)
            .map(|v| parse(v, &env.limits))
            .transpose()
            .map_err(|e| refuse(format!("{}: {}", at(field), e.problem), e.allowed))
    };
    let label = match map.get("label") {
        None => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_LABEL => Some(s.clone()),
        Some(v) => {
            let problem = format!("{} is {}", at("label"), describe(v));
            return Err(refuse(
                problem,
                format!("a text of at most {MAX_LABEL} characters"),
            ));
        }
    };
    Ok(Phase {
        channels,
        duration,
        voltage: setting("voltage", properties::voltage)?,
        frequency: setting("frequency", properties::frequency)?,
        until_farads: until,
        label,
    })
}

/// How a phase named its electrodes: what a coverage target's area is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ChannelArea {
    /// By channel: the area of every electrode on them.
    Channels,
    /// By electrode: their area, mm².
    Electrodes(f64),
}

/// Electrode ids through the device to channels the board has.
fn electrodes(
    field: &str,
    list: &Value,
    env: &Env<'_>,
) -> Result<(BTreeSet<u16>, ChannelArea), InputError> {
    let allowed = "electrode ids of the loaded device (microdrop/device-model/state/three-object)";
    let Some(device) = env.device else {
        return Err(refuse(format!("{field}: no device is loaded yet"), allowed));
    };
    let ids = match list {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("item {v} is not a string"))
            })
            .collect::<Result<Vec<&str>, _>>(),
        other => Err(format!("got {}", describe(other))),
    }
    .map_err(|problem| refuse(format!("{field}: {problem}"), allowed))?;
    let channels = device
        .channels_for(&ids)
        .map_err(|e| refuse(format!("{field}: {e}"), allowed))?;
    let count = env.limits.channel_count;
    if let Some(&c) = channels.iter().find(|c| **c >= count) {
        return Err(refuse(
            format!("{field}: the device puts one of them on channel {c}"),
            format!(
                "electrodes on channels 0 to {} on this board",
                count.saturating_sub(1)
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let area = ids
        .iter()
        .filter(|id| seen.insert(**id))
        .filter_map(|id| device.by_id(id))
        .map(|e| e.area_mm2)
        .sum();
    Ok((channels, ChannelArea::Electrodes(area)))
}

/// A feedback target in farads.
fn target(
    field: &str,
    value: &Value,
    channels: &BTreeSet<u16>,
    area: ChannelArea,
    env: &Env<'_>,
) -> Result<f64, InputError> {
    let allowed = format!(
        "{{\"capacitance_f\": farads above 0, at most {MAX_TARGET_F}}} or \
         {{\"coverage\": a fraction above 0, at most 1}}"
    );
    let (key, v) = match value {
        Value::Object(m) if m.len() == 1 => one(m),
        other => return Err(refuse(format!("{field} is {}", describe(other)), allowed)),
    };
    let number = v.as_f64().filter(|n| n.is_finite() && *n > 0.0);
    match key {
        "capacitance_f" => number
            .filter(|c| *c <= MAX_TARGET_F)
            .ok_or_else(|| refuse(format!("{field}.capacitance_f is {v}"), allowed)),
        "coverage" => {
            let fraction = number
                .filter(|f| *f <= 1.0)
                .ok_or_else(|| refuse(format!("{field}.coverage is {v}"), allowed))?;
            let Some(calibration) = env.calibration else {
                return Err(refuse(
                    format!(
                        "{field}.coverage needs a capacitance calibration (farads per mm² of \
                         liquid and of filler on this chip), and none has been made"
                    ),
                    "until.capacitance_f (farads) until the chip is calibrated",
                ));
            };
            let area = match area {
                ChannelArea::Electrodes(a) => a,
                ChannelArea::Channels => channels_area(field, channels, env)?,
            };
            Ok(calibration.coverage_farads(area, fraction))
        }
        other => Err(refuse(format!("{field} has `{other}`"), allowed)),
    }
}

fn one(m: &Map<String, Value>) -> (&str, &Value) {
    m.iter()
        .next()
        .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v))
}

/// Area of the electrodes on `channels`, each counted once, mm².
fn channels_area(field: &str, channels: &BTreeSet<u16>, env: &Env<'_>) -> Result<f64, InputError> {
    let Some(device) = env.device else {
        let allowed = "a loaded device (its electrode areas give the coverage's capacitance)";
        return Err(refuse(
            format!("{field}.coverage: no device is loaded"),
            allowed,
        ));
    };
    let mut seen = BTreeSet::new();
    Ok(channels
        .iter()
        .flat_map(|&c| device.electrodes_on_channel(c))
        .filter(|e| seen.insert(e.id.as_str()))
        .map(|e| e.area_mm2)
        .sum())
}

fn milliseconds(field: &str, value: Option<&Value>) -> Result<Duration, InputError> {
    let (min, max) = PHASE_MS;
    let allowed = format!("a number of milliseconds from {min} to {max}");
    let Some(v) = value else {
        return Err(refuse(format!("{field} is missing"), allowed));
    };
    v.as_f64()
        .filter(|ms| (min..=max).contains(ms))
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .ok_or_else(|| refuse(format!("{field} is {v}"), allowed))
}

#[cfg(test)]
#[path = "sequences_tests.rs"]
mod tests;
