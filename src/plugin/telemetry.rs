//! Board events to the bus: readings as retained JSON with board and host time, interlock and
//! faults as state plus signals.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use firmware_protocol::events::HaltReason;
use firmware_protocol::Event;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::context::Ctx;
use super::model::Halt;
use crate::actuation::ActuationError;
use crate::board::{BoardEvent, DropBot};

/// Forward one board's events until its link closes.
pub fn spawn_board_events(ctx: Arc<Ctx>, board: &DropBot) -> JoinHandle<()> {
    let mut events = board.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => on_event(&ctx, event),
                Err(RecvError::Lagged(n)) => tracing::warn!(lost = n, "board events lagged"),
                Err(RecvError::Closed) => break,
            }
        }
    })
}

fn on_event(ctx: &Arc<Ctx>, e: BoardEvent) {
    let signal = |topic: &str, value: Value| {
        if let Err(err) = ctx.bus.signal(topic, &value) {
            tracing::warn!(topic, error = %err, "could not signal");
        }
    };
    match e.event {
        Event::OutputEnabled => {
            ctx.update(|m| m.chip_inserted = Some(true));
            signal("chip-inserted", json!({}));
        }
        Event::OutputDisabled => {
            ctx.update(|m| m.chip_inserted = Some(false));
            signal("chip-removed", json!({}));
        }
        Event::CapacitanceUpdated {
            new_value,
            n_samples,
            v_a,
            ..
        } => {
            publish_capacitance(ctx, new_value, Some((&e, n_samples, v_a)));
        }
        Event::CapacitanceExceeded {
            new_value,
            target,
            count,
            ..
        } => signal(
            "capacitance-exceeded",
            json!({"value": new_value, "target": target, "count": count, "board_time_us": e.board_time_us}),
        ),
        Event::Halted { wall_time, error } => {
            let reason = match &error {
                HaltReason::OutputCurrentExceeded { .. } => "output-current-exceeded",
                HaltReason::ChipLoadSaturated { .. } => "chip-load-saturated",
            }
            .to_owned();
            let detail = json!({"error": error, "wall_time": wall_time});
            ctx.update(|m| {
                m.on_halt(Halt {
                    reason: reason.clone(),
                    detail: detail.clone(),
                })
            });
            // An apply in flight may have sent more after the board halted: stop it, and
            // make "everything off" the last word on the board.
            let why = ActuationError::Board(format!("board halted: {reason}"));
            if let Some(board) = ctx.current_board() {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = ctx.actuator.exclusive(why, board.safe_state()).await {
                        tracing::warn!(error = %e, "could not confirm the safe state after a halt");
                    }
                });
            } else {
                ctx.actuator.clear(why);
            }
            signal("halted", json!({"reason": reason, "detail": detail}));
        }
        Event::CapacitanceSaturated { error, .. } => {
            // The fork's report of a saturation it did not halt for.
            tracing::warn!(?error, "chip load saturated (the board did not halt)");
        }
        Event::ShortsDetected { values } => {
            signal("shorts-detected", json!({"channels": values}));
        }
        Event::ChannelsUpdated { actuated, .. } => {
            // The board's own account of what it actuated is the truth.
            ctx.update(|m| m.actuated = actuated.into_iter().collect());
        }
        Event::DropsDetected { drops, .. } => signal("drops-detected", json!(drops)),
    }
}

/// Publish a capacitance reading (retained `capacitance`) and return it.
pub fn publish_capacitance(
    ctx: &Ctx,
    farads: f64,
    stream: Option<(&BoardEvent, u32, f64)>,
) -> Value {
    let reading = json!({
        "value": farads,
        "unit": "F",
        "board_time_us": stream.and_then(|(e, _, _)| e.board_time_us),
        "host_time_ms": unix_ms(stream.map_or_else(SystemTime::now, |(e, _, _)| e.received_wall)),
        "n_samples": stream.map(|(_, n, _)| n),
        "voltage": stream.map(|(_, _, v)| v),
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
        "board_time_us": ctx.current_board().and_then(|b| b.board_time_now()),
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
