//! The board triggers: one function per action, each checking its options, submitting to the
//! engine and saying what its answer is once the board has it (see `requests` for the rest of
//! a request's way: permits, the reply, the error topic).

use std::sync::Arc;

use serde_json::{json, Value};

use super::context::Ctx;
use super::properties::{self, InputError};
use super::requests::{board_answer, options, waveform, Answer};
use crate::actuation::{Halt, Ordered, Response};

/// Longest settle time per channel accepted by `detect-shorts`, ms (the firmware takes a u8).
const MAX_SHORTS_DELAY_MS: u64 = 255;

/// A bare number (farads), as the 2018 plugin answered and MicroDrop's DropBot panel shows it;
/// the retained `capacitance` state carries unit and times.
pub(super) fn measure_capacitance(ctx: &Arc<Ctx>) -> Answer {
    let pending = ctx.submit(Ordered::Capacitance);
    board_answer(ctx, pending, |ctx, r| match r {
        Response::Capacitance(reading) => {
            super::telemetry::publish_capacitance(ctx, reading.farads, reading.stamp.board_us);
            json!(reading.farads)
        }
        _ => Value::Null,
    })
}

/// A bare number (volts), as [`measure_capacitance`]; the retained `measured-voltage` state
/// carries unit and times.
pub(super) fn measure_voltage(ctx: &Arc<Ctx>) -> Answer {
    let pending = ctx.submit(Ordered::MeasuredVoltage);
    board_answer(ctx, pending, |ctx, r| match r {
        Response::Voltage(v) => {
            let volts = f64::from(v);
            super::telemetry::publish_measured_voltage(ctx, volts);
            json!(volts)
        }
        _ => Value::Null,
    })
}

/// `{"voltage": V, "frequency": Hz}`, both required, applied as one waveform.
pub(super) fn put_voltage_frequency(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let limits = ctx.model().limits;
    let field = |key: &str| {
        value.get(key).ok_or_else(|| {
            InputError::new(
                "put-voltage-frequency",
                format!("missing `{key}`"),
                "{\"voltage\": V, \"frequency\": Hz}",
            )
        })
    };
    let parsed = field("voltage")
        .and_then(|v| properties::voltage(v, &limits))
        .and_then(|v| Ok((v, properties::frequency(field("frequency")?, &limits)?)));
    match parsed {
        Ok((v, f)) => waveform(
            ctx,
            Some(v),
            Some(f),
            |m| json!({"voltage": m.voltage, "frequency": m.frequency}),
        ),
        Err(e) => Answer::Now(Err(e.into())),
    }
}

/// `{"delay_ms": 0 to 255}` or nothing (5 ms): the shorted channels, also signalled and kept
/// as the retained `shorts`.
pub(super) fn detect_shorts(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let allowed = format!("{{\"delay_ms\": 0 to {MAX_SHORTS_DELAY_MS}}} or nothing");
    if let Err(e) = options("detect-shorts", value, &["delay_ms"], &allowed) {
        return Answer::Now(Err(e.into()));
    }
    let delay = match value.get("delay_ms") {
        None => 5,
        Some(d) => match d.as_u64().filter(|d| *d <= MAX_SHORTS_DELAY_MS) {
            Some(d) => d as u8,
            None => {
                let e = InputError::new(
                    "detect-shorts",
                    format!("delay_ms {d} is not usable"),
                    &allowed,
                );
                return Answer::Now(Err(e.into()));
            }
        },
    };
    let pending = ctx.submit(Ordered::DetectShorts { delay_ms: delay });
    board_answer(ctx, pending, |ctx, r| {
        let shorts = match r {
            Response::Shorts(shorts, _) => shorts,
            _ => Vec::new(),
        };
        let _ = ctx
            .bus
            .signal("shorts-detected", &json!({"channels": shorts}));
        super::telemetry::publish_shorts(ctx, &shorts);
        json!(shorts)
    })
}

/// HV and every channel off, halted until a user resumes.
pub(super) fn halt(ctx: &Arc<Ctx>) -> Answer {
    let halt = Halt::new("requested", json!("halt trigger"));
    let pending = ctx.board().map(|()| ctx.actuator.halt(halt));
    board_answer(ctx, pending, |_, _| {
        json!("halted: HV off, all channels off")
    })
}

/// Every channel and HV off (not halted).
pub(super) fn all_off(ctx: &Arc<Ctx>) -> Answer {
    let pending = ctx.board().map(|()| ctx.actuator.all_off());
    board_answer(ctx, pending, |ctx, _| {
        let m = ctx.model();
        json!({"channels": m.actuated, "hv_output_enabled": m.hv_output_enabled})
    })
}

/// `{"channels": [channel, ...]}` or nothing (every channel): farads per channel.
pub(super) fn scan_capacitances(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let allowed = "{\"channels\": [channel, ...]} or nothing (every channel)";
    if let Err(e) = options("scan-capacitances", value, &["channels"], allowed) {
        return Answer::Now(Err(e.into()));
    }
    let limits = ctx.model().limits;
    let channels: Vec<u16> = match value.get("channels") {
        Some(list) => match properties::channels("scan-capacitances", list, &limits) {
            Ok(set) => set.into_iter().collect(),
            Err(e) => return Answer::Now(Err(e.into())),
        },
        None => (0..limits.channel_count).collect(),
    };
    let pending = ctx.submit(Ordered::Scan(channels));
    board_answer(ctx, pending, |_, r| match r {
        Response::Scan(values) => Value::Object(
            values
                .into_iter()
                .map(|(c, f)| (c.to_string(), json!(f)))
                .collect(),
        ),
        _ => Value::Null,
    })
}

/// `calibrate-capacitance`, its options checked first.
pub(super) fn calibrate_capacitance(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let allowed = "{\"sets\": [[electrode ids], ...], \"repeats\": n, \"settle_ms\": ms} (each optional) or nothing";
    let keys = ["sets", "repeats", "settle_ms"];
    if let Err(e) = options("calibrate-capacitance", value, &keys, allowed) {
        return Answer::Now(Err(e.into()));
    }
    super::calibration::triggers::calibrate_capacitance(ctx, value)
}

/// `calibrate-feedback`, its options checked first.
pub(super) fn calibrate_feedback(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let allowed = "{\"repeats\": n} or nothing";
    if let Err(e) = options("calibrate-feedback", value, &["repeats"], allowed) {
        return Answer::Now(Err(e.into()));
    }
    super::calibration::triggers::calibrate_feedback(ctx, value)
}

/// `detect-droplets`, its options checked first.
pub(super) fn detect_droplets(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let allowed =
        "{\"channels\": [channel numbers], \"threshold\": fraction} (each optional) or nothing";
    let keys = ["channels", "threshold"];
    if let Err(e) = options("detect-droplets", value, &keys, allowed) {
        return Answer::Now(Err(e.into()));
    }
    super::calibration::triggers::detect_droplets(ctx, value)
}
