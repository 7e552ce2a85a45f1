//! The calibration triggers:
//!
//! - `calibrate-capacitance` `{"sets": [{"electrodes": [ids], "liquid": [ids]}, ...],
//!   "repeats": n, "settle_ms": t}`: each set actuated alone (HV on for it), its capacitance
//!   read `repeats` times; liquid and filler capacitance per mm² fitted to the medians.
//!   `liquid` names the set's electrodes that are fully under liquid (none: a dry set).
//! - `calibrate-feedback` `{"repeats": n}`: the board's on-board test capacitors read, its
//!   feedback capacitor corrected.
//! - `detect-droplets` `{"channels": [...], "threshold": f}`: a per-channel scan against the
//!   calibration.
//! - `measure-force`: the electrowetting force per unit length at the measured voltage.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{publish, CalibrationState};
use crate::actuation::{Ordered, Response};
use crate::calibration::fit::median;
use crate::calibration::store::SetRecord;
use crate::calibration::{
    detect, fit_capacitance, fit_feedback, AreaReading, ChipCalibration, FeedbackCalibration,
    Specific,
};
use crate::device::Device;
use crate::plugin::context::{Ctx, RequestError};
use crate::plugin::properties::{self, describe, InputError};
use crate::plugin::requests::Answer;
use crate::plugin::telemetry::{lock, unix_ms};

/// Most electrode sets in one calibration.
const MAX_SETS: usize = 64;
/// Most readings per set or test capacitor.
const MAX_REPEATS: u64 = 100;
/// Longest settle time per set, ms.
const MAX_SETTLE_MS: u64 = 5_000;
/// Coverage at or above which a channel holds liquid, by default.
const DEFAULT_THRESHOLD: f64 = 0.5;

const SETS_ALLOWED: &str = "{\"sets\": [{\"electrodes\": [ids], \"liquid\": [ids of those \
    fully under liquid]}, ...] (2 to 64 sets, some wet and some dry), optional \"repeats\" \
    (1 to 100) and \"settle_ms\" (0 to 5000)";

fn refuse(name: &str, problem: impl Into<String>, allowed: impl Into<String>) -> RequestError {
    InputError::new(name, problem, allowed).into()
}

/// `calibrate-capacitance`.
pub fn calibrate_capacitance(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let name = "calibrate-capacitance";
    let parsed = (|| {
        let device =
            ctx.model().device.clone().ok_or_else(|| {
                refuse(name, "no device is loaded", "a device (three-object) first")
            })?;
        let key = lock(&ctx.telemetry.calibration).key();
        let (board, chip) = key.ok_or_else(|| {
            refuse(
                name,
                "no board is connected",
                "a connected board and a loaded device",
            )
        })?;
        let sets = parse_sets(name, value, &device, ctx.model().limits.channel_count)?;
        let repeats = count(name, value, "repeats", 5, 1..=MAX_REPEATS)?;
        let settle = count(name, value, "settle_ms", 50, 0..=MAX_SETTLE_MS)?;
        Ok::<_, RequestError>((board, chip, sets, repeats, settle))
    })();
    let (board, chip, sets, repeats, settle) = match parsed {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let request = Ordered::Measure {
        sets: sets.iter().map(|s| s.channels.clone()).collect(),
        repeats: u32::try_from(repeats).unwrap_or(1),
        settle: Duration::from_millis(settle),
    };
    let pending = match ctx.submit(request) {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let Response::Measured(readings) = ctx.answer(pending, None).await? else {
            return Err(RequestError::Busy(
                "unexpected answer from the engine".into(),
            ));
        };
        let records: Vec<SetRecord> = sets
            .into_iter()
            .zip(readings)
            .map(|(s, r)| SetRecord {
                electrodes: s.electrodes,
                liquid: s.liquid,
                reading: AreaReading {
                    farads: median(&r).unwrap_or(f64::NAN),
                    ..s.areas
                },
                readings_f: r,
            })
            .collect();
        let points: Vec<AreaReading> = records.iter().map(|r| r.reading).collect();
        let fit = fit_capacitance(&points)?;
        let (voltage, frequency) = {
            let m = ctx.model();
            (m.voltage, m.frequency)
        };
        let calibration = ChipCalibration {
            chip,
            board,
            made_ms: unix_ms(SystemTime::now()),
            voltage,
            frequency,
            fit,
            sets: records,
        };
        let mut state = lock(&ctx.telemetry.calibration);
        let file = save(&state, |s| s.save_chip(&calibration))?;
        let mut answer = serde_json::to_value(&calibration).unwrap_or(Value::Null);
        crate::plugin::set_field(&mut answer, "file", json!(file));
        state.chip = Some(calibration);
        publish(&ctx.telemetry, &state);
        Ok(answer)
    }))
}

/// `calibrate-feedback`.
pub fn calibrate_feedback(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let name = "calibrate-feedback";
    let repeats = match count(name, value, "repeats", 10, 1..=MAX_REPEATS) {
        Ok(r) => u32::try_from(r).unwrap_or(10),
        Err(e) => return Answer::Now(Err(e)),
    };
    let Some((_, board)) = lock(&ctx.telemetry.calibration).board.clone() else {
        return Answer::Now(Err(refuse(
            name,
            "no board is connected",
            "a connected board",
        )));
    };
    let pending = match ctx.submit(Ordered::TestCapacitors { repeats }) {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let Response::TestCapacitors(t) = ctx.answer(pending, None).await? else {
            return Err(RequestError::Busy(
                "unexpected answer from the engine".into(),
            ));
        };
        let fit = fit_feedback(&t.nominal_f, &t.readings)?;
        let corrected = fit.corrected(t.feedback_f);
        let set = ctx.submit(Ordered::SetFeedbackCapacitor(corrected))?;
        ctx.answer(set, Some(ctx.behaviour.apply_timeout)).await?;
        let feedback = FeedbackCalibration {
            board,
            made_ms: unix_ms(SystemTime::now()),
            feedback_before_f: t.feedback_f,
            feedback_f: corrected,
            fit,
            nominal_f: t.nominal_f,
            readings_f: t.readings,
        };
        let mut state = lock(&ctx.telemetry.calibration);
        // Readings now come out divided by the gain: so does a chip calibrated before.
        let gain = feedback.fit.gain;
        if let Some(mut chip) = state.chip.take() {
            chip.fit.liquid_f_per_mm2 /= gain;
            chip.fit.filler_f_per_mm2 /= gain;
            chip.fit.residuals_f.iter_mut().for_each(|r| *r /= gain);
            save(&state, |s| s.save_chip(&chip))?;
            state.chip = Some(chip);
        }
        let file = save(&state, |s| s.save_feedback(&feedback))?;
        let mut answer = serde_json::to_value(&feedback).unwrap_or(Value::Null);
        crate::plugin::set_field(&mut answer, "file", json!(file));
        state.feedback = Some(feedback);
        publish(&ctx.telemetry, &state);
        Ok(answer)
    }))
}

/// `detect-droplets`.
pub fn detect_droplets(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let name = "detect-droplets";
    let (device, limits) = {
        let m = ctx.model();
        (m.device.clone(), m.limits)
    };
    let specific = ctx.telemetry.chip().specific;
    let (Some(device), Some(specific)) = (device, specific) else {
        return Answer::Now(Err(refuse(
            name,
            "the chip is not calibrated (or no device is loaded)",
            "calibrate-capacitance on this chip and board first",
        )));
    };
    let channels: Vec<u16> = match value.get("channels") {
        Some(list) => match properties::channels(name, list, &limits) {
            Ok(set) => set.into_iter().collect(),
            Err(e) => return Answer::Now(Err(e.into())),
        },
        None => device
            .channels()
            .into_iter()
            .filter(|c| *c < limits.channel_count)
            .collect(),
    };
    let threshold = match value.get("threshold") {
        None => DEFAULT_THRESHOLD,
        Some(v) => match v.as_f64().filter(|t| *t > 0.0 && *t <= 1.0) {
            Some(t) => t,
            None => {
                let problem = format!("threshold is {}", describe(v));
                return Answer::Now(Err(refuse(name, problem, "a fraction above 0, at most 1")));
            }
        },
    };
    let pending = match ctx.submit(Ordered::Scan(channels)) {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let Response::Scan(values) = ctx.answer(pending, None).await? else {
            return Err(RequestError::Busy(
                "unexpected answer from the engine".into(),
            ));
        };
        let readings: Vec<(u16, f64)> =
            values.into_iter().map(|(c, f)| (c, f64::from(f))).collect();
        let found = detect(&readings, &device, &specific, threshold);
        let mut answer = serde_json::to_value(&found).unwrap_or(Value::Null);
        crate::plugin::set_field(
            &mut answer,
            "host_time_ms",
            json!(unix_ms(SystemTime::now())),
        );
        ctx.telemetry.retained("droplets", answer.clone());
        lock(&ctx.telemetry.calibration).droplets = Some(found);
        Ok(answer)
    }))
}

/// `measure-force`.
pub fn measure_force(ctx: &Arc<Ctx>) -> Answer {
    let Some(specific) = ctx.telemetry.chip().specific else {
        return Answer::Now(Err(refuse(
            "measure-force",
            "the chip is not calibrated",
            "calibrate-capacitance on this chip and board first",
        )));
    };
    let pending = match ctx.submit(Ordered::MeasuredVoltage) {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let Response::Voltage(v) = ctx
            .answer(pending, Some(ctx.behaviour.apply_timeout))
            .await?
        else {
            return Err(RequestError::Busy(
                "unexpected answer from the engine".into(),
            ));
        };
        Ok(force_json(&specific, f64::from(v)))
    }))
}

fn force_json(s: &Specific, volts: f64) -> Value {
    json!({
        "force_n_per_mm": s.force_n_per_mm(volts),
        "voltage": volts,
        "liquid_f_per_mm2": s.liquid_f_per_mm2,
        "formula": "1e3 · ½ · c_liquid [F/mm²] · V² [V RMS]",
    })
}

/// Save through the store, if one is configured; the file.
fn save(
    state: &CalibrationState,
    save: impl FnOnce(
        &crate::calibration::CalibrationStore,
    ) -> Result<std::path::PathBuf, crate::calibration::CalibrationError>,
) -> Result<Option<String>, RequestError> {
    match state.store() {
        Some(store) => Ok(Some(save(store)?.display().to_string())),
        None => Ok(None),
    }
}

/// One electrode set, checked.
struct Set {
    electrodes: Vec<String>,
    liquid: Vec<String>,
    channels: BTreeSet<u16>,
    /// Areas actuated (every electrode on the set's channels), farads still unknown.
    areas: AreaReading,
}

fn parse_sets(
    name: &str,
    value: &Value,
    device: &Device,
    channel_count: u16,
) -> Result<Vec<Set>, RequestError> {
    let list = match value.get("sets") {
        Some(Value::Array(list)) if (2..=MAX_SETS).contains(&list.len()) => list,
        Some(other) => {
            return Err(refuse(
                name,
                format!("sets is {}", describe(other)),
                SETS_ALLOWED,
            ))
        }
        None => return Err(refuse(name, "no `sets`", SETS_ALLOWED)),
    };
    list.iter()
        .enumerate()
        .map(|(i, set)| {
            let ids = |key: &str| -> Result<Vec<String>, RequestError> {
                match set.get(key) {
                    None if key == "liquid" => Ok(Vec::new()),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            refuse(
                                name,
                                format!("sets[{i}].{key} has a non-string"),
                                SETS_ALLOWED,
                            )
                        }),
                    other => Err(refuse(
                        name,
                        format!(
                            "sets[{i}].{key} is {}",
                            other.map_or("missing".into(), describe)
                        ),
                        SETS_ALLOWED,
                    )),
                }
            };
            let electrodes = ids("electrodes")?;
            let liquid = ids("liquid")?;
            if electrodes.is_empty() {
                return Err(refuse(
                    name,
                    format!("sets[{i}] has no electrodes"),
                    SETS_ALLOWED,
                ));
            }
            if let Some(l) = liquid.iter().find(|l| !electrodes.contains(l)) {
                return Err(refuse(
                    name,
                    format!("sets[{i}].liquid names {l}, which is not in its electrodes"),
                    SETS_ALLOWED,
                ));
            }
            let channels = device
                .channels_for(&electrodes)
                .map_err(|e| refuse(name, format!("sets[{i}]: {e}"), SETS_ALLOWED))?;
            if let Some(c) = channels.iter().find(|c| **c >= channel_count) {
                return Err(refuse(
                    name,
                    format!("sets[{i}] uses channel {c}"),
                    format!("channels below {channel_count}"),
                ));
            }
            // The board drives every electrode on those channels.
            let mut seen = BTreeSet::new();
            let total: f64 = channels
                .iter()
                .flat_map(|&c| device.electrodes_on_channel(c))
                .filter(|e| seen.insert(e.id.clone()))
                .map(|e| e.area_mm2)
                .sum();
            let liquid_mm2: f64 = liquid
                .iter()
                .filter_map(|id| device.by_id(id))
                .map(|e| e.area_mm2)
                .sum();
            Ok(Set {
                electrodes,
                liquid,
                channels,
                areas: AreaReading {
                    liquid_mm2,
                    filler_mm2: (total - liquid_mm2).max(0.0),
                    farads: 0.0,
                },
            })
        })
        .collect()
}

/// An optional whole number `key` of `value`, within `range`.
fn count(
    name: &str,
    value: &Value,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, RequestError> {
    match value.get(key) {
        None => Ok(default),
        Some(v) => v.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
            refuse(
                name,
                format!("{key} is {v}"),
                format!("a whole number from {} to {}", range.start(), range.end()),
            )
        }),
    }
}
