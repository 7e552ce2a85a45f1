//! Sequence triggers: `run-sequence` and `run-routes` hand a [`Program`] to the engine and
//! answer when it ends, with one result per phase; `stop`, `pause` and `resume` act on the
//! running one at once (they overtake everything queued).
//!
//! The reply of a run: `{"outcome": "completed" | "stopped" | "halted" | "failed",
//! "phases": [...], "error": ...}` (plus `"routes"` for `run-routes`), each phase with its
//! planned and actual start relative to the first phase's planned start (ms), the board's
//! clock at its start, why it ended and the capacitance it ended with. A halted or failed run
//! answers `failed` with that same object.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::properties::InputError;
use super::recording;
use super::requests::Answer;
use super::sequences::{self, Env, MAX_RUN, MAX_RUN_PHASES};
use crate::actuation::routes::{self, Bounds, RouteError};
use crate::actuation::{
    ActuationError, EndReason, Ordered, Pending, PhaseResult, Program, Response, SequenceReport,
};

/// `run-sequence`: parse, run, answer at the end.
pub fn run_sequence(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let (device, limits) = {
        let m = ctx.model();
        (m.device.clone(), m.limits)
    };
    // Coverage targets use the chip's calibration on this board (refused without one).
    let calibration = ctx
        .telemetry
        .chip()
        .specific
        .map(|s| sequences::Calibration {
            liquid_f_per_mm2: s.liquid_f_per_mm2,
            filler_f_per_mm2: s.filler_f_per_mm2,
        });
    let env = Env {
        device: device.as_deref(),
        limits,
        calibration,
    };
    match sequences::parse_sequence(value, &env) {
        Ok(program) => run(ctx, program, None, ("run-sequence", value)),
        Err(e) => Answer::Now(Err(e.into())),
    }
}

/// `run-routes`: MicroDrop 3's routes compiled on the loaded device, run, answered at the end.
/// The electrodes on when it arrives and on no route stay on, as MicroDrop's routes model
/// keeps them.
pub fn run_routes(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let (device, limits, actuated) = {
        let m = ctx.model();
        (m.device.clone(), m.limits, m.actuated.clone())
    };
    let refused = |e: RouteError| Answer::Now(Err(route_error(&e).into()));
    let routes = match routes::routes_from_value(value) {
        Ok(routes) => routes,
        Err(e) => return refused(e),
    };
    let Some(device) = device else {
        let e = InputError::new(
            "run-routes",
            "no device is loaded yet",
            "routes after microdrop/device-model/state/three-object was published",
        );
        return Answer::Now(Err(e.into()));
    };
    let bounds = Bounds {
        max_phases: MAX_RUN_PHASES,
        max_duration: MAX_RUN,
        channel_count: limits.channel_count,
    };
    let compiled = match routes::compile(&routes, &device, &actuated, &bounds) {
        Ok(compiled) => compiled,
        Err(e) => return refused(e),
    };
    let walks: Vec<Value> = compiled
        .walks
        .iter()
        .map(|w| json!({"ids": w.ids, "closed": w.closed, "repeats": w.repeats}))
        .collect();
    run(
        ctx,
        compiled.program,
        Some(("routes", Value::Array(walks))),
        ("run-routes", value),
    )
}

fn route_error(e: &RouteError) -> InputError {
    InputError::new("run-routes", e.to_string(), e.allowed())
}

/// Submit `program` now (in message order), with its run record; answer with its report
/// when it ends.
fn run(
    ctx: &Arc<Ctx>,
    program: Program,
    extra: Option<(&'static str, Value)>,
    (kind, request): (&str, &Value),
) -> Answer {
    let of = program.len();
    if let Err(e) = ctx.board() {
        return Answer::Now(Err(e));
    }
    // Opened (and the stream turned on) before the run is submitted: the engine keeps order.
    let record = recording::begin(ctx, kind, request.clone());
    let pending = match ctx.submit(Ordered::Run(program)) {
        Ok(p) => p,
        Err(e) => {
            if let Some(r) = record {
                let ctx = ctx.clone();
                let why = json!({"outcome": "refused", "error": e.to_string()});
                tokio::spawn(async move { recording::end(&ctx, r, why).await });
            }
            return Answer::Now(Err(e));
        }
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let answer = ctx.answer(pending, None).await;
        let report = match answer {
            Ok(Response::Sequence(report)) => report,
            other => {
                let e = match other {
                    Err(e) => e,
                    Ok(other) => {
                        ActuationError::Invalid(format!("the engine answered {other:?}")).into()
                    }
                };
                if let Some(r) = record {
                    let why = json!({"outcome": "failed", "error": e.to_string()});
                    recording::end(&ctx, r, why).await;
                }
                return Err(e);
            }
        };
        let mut value = report_json(&report);
        if let (Some((key, extra)), Value::Object(map)) = (extra, &mut value) {
            map.insert(key.into(), extra);
        }
        if let Some(r) = record {
            let files = json!({"csv": r.files().csv, "json": r.files().json});
            recording::end(
                &ctx,
                r,
                json!({"outcome": value.get("outcome"), "report": value}),
            )
            .await;
            if let Value::Object(map) = &mut value {
                map.insert("record".into(), files);
            }
        }
        match report.outcome {
            EndReason::Halted | EndReason::Failed => Err(RequestError::SequenceEnded {
                message: failure(&report, of),
                report: value,
            }),
            _ => Ok(value),
        }
    }))
}

/// Why a run did not complete, in words.
fn failure(report: &SequenceReport, of: usize) -> String {
    let at = match report.phases.len() {
        0 => "before its first phase".to_owned(),
        n => format!("in phase #{} (of {of})", n - 1),
    };
    let why = report.error.as_deref().unwrap_or("no detail");
    match report.outcome {
        EndReason::Halted => {
            format!("the sequence was halted ({why}) {at}: put hv-output-enabled true to resume")
        }
        _ => format!("the sequence failed {at}: {why}"),
    }
}

/// A sequence report as the reply's JSON.
pub fn report_json(report: &SequenceReport) -> Value {
    let outcome = match report.outcome {
        EndReason::Duration => json!("completed"),
        other => json!(other),
    };
    let phases: Vec<Value> = report
        .phases
        .iter()
        .map(|p| phase_json(p, report.started))
        .collect();
    json!({"outcome": outcome, "phases": phases, "error": report.error})
}

fn phase_json(p: &PhaseResult, origin: Instant) -> Value {
    // Milliseconds since the run's planned start, to the microsecond.
    let ms = |t: Instant| (t.saturating_duration_since(origin).as_micros() as f64) / 1e3;
    json!({
        "phase": p.index,
        "label": p.label,
        "planned_start_ms": ms(p.planned_start),
        "start_ms": ms(p.started),
        "confirmed_ms": ms(p.confirmed),
        "end_ms": ms(p.ended),
        "board_time_us": p.started_board_us,
        "reason": p.reason,
        "capacitance": p.capacitance,
    })
}

/// `stop`: the running sequence ends (its electrodes off); nothing running is not an error.
pub fn stop(ctx: &Arc<Ctx>) -> Answer {
    settle(ctx, ctx.actuator.stop(), "stop")
}

/// `pause`: the running sequence holds its current phase (electrodes on, clock stopped).
pub fn pause(ctx: &Arc<Ctx>) -> Answer {
    settle(ctx, ctx.actuator.pause(), "pause")
}

/// `resume`: a paused sequence goes on where it was.
pub fn resume(ctx: &Arc<Ctx>) -> Answer {
    settle(ctx, ctx.actuator.resume(), "resume")
}

/// Wait for a control request; answer with the sequence state after it.
fn settle(ctx: &Arc<Ctx>, pending: Pending, action: &'static str) -> Answer {
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        match ctx.answer(pending, Some(ctx.behaviour.apply_timeout)).await {
            Ok(_) => {
                let m = ctx.model();
                Ok(json!({
                    "sequence": m.sequence,
                    "actuated-channels": m.actuated,
                    "hv-output-enabled": m.hv_output_enabled,
                }))
            }
            Err(RequestError::Actuation(ActuationError::NotRunning)) => {
                let e = InputError::new(
                    action,
                    "no sequence is running",
                    "pause and resume while run-sequence or run-routes runs (a halt is \
                     resumed by putting hv-output-enabled true)",
                );
                Err(e.into())
            }
            Err(e) => Err(e),
        }
    }))
}
