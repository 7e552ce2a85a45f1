//! Health readings, read periodically through the engine (an ordered request: the engine
//! takes it only where it delays no sequence phase, its `room_for` rule): measured HV,
//! output and input currents, MCU temperature, and the chip interlock pin. One request at a
//! time: a tick while one is out is skipped.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{unix_ms, Telemetry};
use crate::actuation::{ActuationError, Monitor, Ordered, Response};
use crate::board::BoardError;
use crate::plugin::context::Ctx;

/// A tick of the monitor period: ask the engine for the readings, publish them when they
/// come.
pub fn tick(ctx: &Ctx) {
    let in_flight = &ctx.telemetry.monitor_in_flight;
    if !ctx.has_board() || in_flight.swap(true, Ordering::AcqRel) {
        return;
    }
    let pending = ctx.actuator.submit(Ordered::Monitor);
    let telemetry = ctx.telemetry.clone();
    let timeout = ctx.behaviour.apply_timeout;
    tokio::spawn(async move {
        let answer = pending.wait(Some(timeout)).await;
        telemetry.monitor_in_flight.store(false, Ordering::Release);
        match answer {
            Ok(Response::Monitor(m)) => publish(&telemetry, &m),
            Ok(_) => {}
            // A board without these readings says so once per connection at most.
            Err(ActuationError::Board(BoardError::Unsupported { .. })) => {
                tracing::debug!("this board has no health readings");
            }
            Err(e) => tracing::debug!(error = %e, "health readings not taken"),
        }
    });
}

/// The retained `measured-voltage`, `currents`, `temperature` and `chip`.
pub fn publish(telemetry: &Telemetry, m: &Monitor) {
    let at = SystemTime::now()
        .checked_sub(m.at.elapsed())
        .unwrap_or_else(SystemTime::now);
    let times = |mut v: Value| {
        if let Value::Object(map) = &mut v {
            map.insert("board_time_us".into(), json!(m.board_us));
            map.insert("host_time_ms".into(), json!(unix_ms(at)));
        }
        v
    };
    if let Some(v) = m.measured_voltage {
        let value = voltage_json(telemetry, f64::from(v), m.board_us, at);
        telemetry.retained("measured-voltage", value);
    }
    if m.output_current.is_some() || m.input_current.is_some() {
        let value = json!({"output_a": m.output_current, "input_a": m.input_current,
            "unit": "A", "kind": "rms"});
        telemetry.retained("currents", times(value));
    }
    if let Some(t) = m.temperature_c {
        telemetry.retained("temperature", times(json!({"value": t, "unit": "°C"})));
    }
    if let Some(inserted) = m.chip_inserted {
        let value = json!({"inserted": inserted, "source": "interlock pin"});
        telemetry.retained("chip", times(value));
    }
}

/// A measured RMS voltage, with the electrowetting force per unit length it gives on a
/// calibrated chip.
pub fn voltage_json(
    telemetry: &Telemetry,
    volts: f64,
    board_us: Option<u64>,
    at: SystemTime,
) -> Value {
    let force = telemetry.chip().specific.map(|s| s.force_n_per_mm(volts));
    json!({
        "value": volts,
        "unit": "V",
        "board_time_us": board_us,
        "host_time_ms": unix_ms(at),
        "force_n_per_mm": force,
    })
}
