//! The engine's notices and samples to the bus: readings as retained JSON with board and host
//! time, interlock, faults and sequence progress as signals. The state behind them (halt,
//! chip, disabled channels) reaches the model through the engine's picture, not from here.

use std::time::{SystemTime, UNIX_EPOCH};

use firmware_protocol::Event;
use serde_json::{json, Value};

use super::context::Ctx;
use crate::actuation::{Notice, PhaseResult, Sample};
use crate::board::BoardEvent;

/// A notice from the engine, as signals.
pub fn on_notice(ctx: &Ctx, notice: Notice) {
    match notice {
        Notice::Board(e) => on_board_event(ctx, e),
        Notice::Halted(h) => signal(
            ctx,
            "halted",
            json!({"reason": h.reason, "detail": h.detail}),
        ),
        Notice::PhaseStarted {
            index,
            of,
            label,
            board_us,
            ..
        } => signal(
            ctx,
            "sequence-progress",
            json!({"event": "phase-started", "phase": index, "of": of, "label": label,
                "board_time_us": board_us, "host_time_ms": unix_ms(SystemTime::now())}),
        ),
        Notice::PhaseEnded(result) => signal(ctx, "sequence-progress", phase_json(&result)),
    }
}

fn on_board_event(ctx: &Ctx, e: BoardEvent) {
    match e.event {
        Event::OutputEnabled => signal(ctx, "chip-inserted", json!({})),
        Event::OutputDisabled => signal(ctx, "chip-removed", json!({})),
        Event::CapacitanceExceeded {
            new_value,
            target,
            count,
            ..
        } => signal(
            ctx,
            "capacitance-exceeded",
            json!({"value": new_value, "target": target, "count": count, "board_time_us": e.board_time_us}),
        ),
        Event::ShortsDetected { values } => {
            signal(ctx, "shorts-detected", json!({"channels": values}))
        }
        Event::DropsDetected { drops, .. } => signal(ctx, "drops-detected", json!(drops)),
        Event::CapacitanceSaturated { error, .. } => {
            // The fork's report of a saturation it did not halt for.
            signal(ctx, "capacitance-saturated", json!({"error": error}))
        }
        // Halts come as their own notice; channel updates are the engine's business.
        Event::Halted { .. } | Event::ChannelsUpdated { .. } | Event::CapacitanceUpdated { .. } => {
        }
    }
}

/// A phase's result as JSON (times relative to its planned start, in ms).
pub fn phase_json(r: &PhaseResult) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    json!({
        "event": "phase-ended",
        "phase": r.index,
        "label": r.label,
        "reason": r.reason,
        "late_ms": ms(r.started.saturating_duration_since(r.planned_start)),
        "confirmed_after_ms": ms(r.confirmed.saturating_duration_since(r.started)),
        "duration_ms": ms(r.ended.saturating_duration_since(r.started)),
        "started_board_us": r.started_board_us,
        "capacitance": r.capacitance,
    })
}

/// A capacitance sample from the stream: the retained `capacitance` state.
pub fn on_sample(ctx: &Ctx, s: &Sample) {
    let reading = json!({
        "value": s.farads,
        "unit": "F",
        "board_time_us": s.board_us,
        "host_time_ms": unix_ms(s.received_wall),
        "n_samples": s.n_samples,
        "voltage": s.voltage,
        "phase": s.phase,
        "actuated": *s.actuated,
    });
    if let Err(e) = ctx.bus.publish_state("capacitance", &reading) {
        tracing::debug!(error = %e, "could not publish capacitance");
    }
}

fn signal(ctx: &Ctx, topic: &str, value: Value) {
    if let Err(err) = ctx.bus.signal(topic, &value) {
        tracing::warn!(topic, error = %err, "could not signal");
    }
}

/// Publish a capacitance reading made on request (retained `capacitance`) and return it.
pub fn publish_capacitance(ctx: &Ctx, farads: f64, board_us: Option<u64>) -> Value {
    let reading = json!({
        "value": farads,
        "unit": "F",
        "board_time_us": board_us,
        "host_time_ms": unix_ms(SystemTime::now()),
    });
    if let Err(e) = ctx.bus.publish_state("capacitance", &reading) {
        tracing::warn!(error = %e, "could not publish capacitance");
    }
    reading
}

/// Publish a measured RMS voltage (retained `measured-voltage`) and return it.
pub fn publish_measured_voltage(ctx: &Ctx, volts: f64) -> Value {
    let reading = json!({
        "value": volts,
        "unit": "V",
        "host_time_ms": unix_ms(SystemTime::now()),
    });
    if let Err(e) = ctx.bus.publish_state("measured-voltage", &reading) {
        tracing::warn!(error = %e, "could not publish measured voltage");
    }
    reading
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
