//! State-driven actuation: MicroDrop's device model and electrodes model tell us what the chip
//! looks like and which electrodes must be on; the step runner's `execute` applies a step.
//!
//! Retained `active-electrodes` messages (delivered when we subscribe or resubscribe) are not
//! acted upon: they are yesterday's request, and nothing is actuated that a user did not ask
//! for now. Live updates are applied newest-wins through the actuator.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::properties::{self, describe, InputError, Property};
use super::requests::Answer;
use crate::actuation::{Ordered, Phase, Program, Response};
use crate::bus::{BusError, BusMessage};
use crate::device::Device;

/// `microdrop/device-model/state/three-object`: the chip. The channel map always follows it.
pub fn on_device(ctx: &Arc<Ctx>, msg: &BusMessage) {
    let envelope = match msg.envelope() {
        Ok(envelope) => envelope,
        Err(BusError::EmptyPayload) => {
            ctx.update(|m| m.device = None);
            return;
        }
        Err(e) => return ctx.report_error("three-object", &e),
    };
    let device = match Device::from_three_object_value(&envelope.value) {
        Ok(device) => Arc::new(device),
        Err(e) => return ctx.report_error("three-object", &e),
    };
    tracing::info!(
        electrodes = device.len(),
        channels = device.channels().len(),
        "device loaded"
    );
    let remap = ctx.update(|m| {
        m.device = Some(device);
        // A new device may map the active electrodes to other channels: follow it, but only
        // while they are actuated (a device load never switches anything on), only for a
        // live message, and with HV as it is.
        let follow = !msg.retain && !m.actuated.is_empty();
        m.active_electrodes.clone().filter(|_| follow)
    });
    if let Some(ids) = remap {
        // Not live: HV stays as it is.
        apply(ctx, &ids, false);
    }
}

/// `microdrop/electrodes-model/state/active-electrodes`: a bare array of electrode ids.
pub fn on_active_electrodes(ctx: &Arc<Ctx>, msg: &BusMessage) {
    let ids = match msg
        .envelope()
        .map_err(|e| e.to_string())
        .and_then(|e| ids(&e.value))
    {
        Ok(ids) => ids,
        Err(problem) => {
            let error = InputError::new(
                "active-electrodes",
                problem,
                "an array of electrode id strings",
            );
            return ctx.report_error("active-electrodes", &error);
        }
    };
    if msg.retain {
        tracing::debug!(count = ids.len(), "retained active-electrodes not applied");
        return;
    }
    ctx.update(|m| m.active_electrodes = Some(ids.clone()));
    apply(ctx, &ids, true);
}

/// `microdrop/electrodes-model/state/voltage` or `.../frequency` (`"100 V"`, `"1000 Hz"`):
/// remembered, and applied when a board is connected (this never turns HV on).
pub fn on_step_setting(ctx: &Arc<Ctx>, msg: &BusMessage, property: Property) {
    let value = match msg.envelope() {
        Ok(envelope) => envelope.value,
        Err(e) => return ctx.report_error(property.name(), &e),
    };
    apply_setting(ctx, property, &value);
}

/// `microdrop/<self>/state/voltage` or `.../frequency` written by someone else: MicroDrop's step
/// loader sets a step's per-step properties this way. Our own publications come back on the same
/// topics and are recognised (in order) and ignored; retained deliveries are old news.
pub fn on_own_state(ctx: &Arc<Ctx>, msg: &BusMessage, property: Property) {
    if msg.retain {
        return;
    }
    let Ok(envelope) = msg.envelope() else {
        // Not ours to judge: put the truth back.
        return ctx.republish(property.name());
    };
    if ctx.is_own_echo(property.name(), &envelope.value) || envelope.value.is_null() {
        return;
    }
    if !apply_setting(ctx, property, &envelope.value) {
        ctx.republish(property.name());
    }
}

/// Remember a voltage or frequency setting and apply it when a board is connected (this never
/// turns HV on). Returns whether the value was acceptable.
fn apply_setting(ctx: &Arc<Ctx>, property: Property, value: &Value) -> bool {
    let limits = ctx.model().limits;
    let parsed = match property {
        Property::Voltage => properties::voltage(value, &limits),
        _ => properties::frequency(value, &limits),
    };
    let value = match parsed {
        Ok(v) => v,
        Err(e) => {
            ctx.report_error(property.name(), &e);
            return false;
        }
    };
    let (voltage, frequency) = match property {
        Property::Voltage => (Some(value), None),
        _ => (None, Some(value)),
    };
    ctx.update(|m| m.remember_settings(voltage, frequency));
    if ctx.has_board() {
        // Submitted here, in message order; only the wait is spawned.
        match ctx.submit(Ordered::Waveform { voltage, frequency }) {
            Ok(pending) => {
                let ctx = ctx.clone();
                let name = property.name();
                tokio::spawn(async move {
                    if let Err(e) = ctx.answer(pending, Some(ctx.behaviour.apply_timeout)).await {
                        ctx.report_error(name, &e);
                    }
                });
            }
            Err(e) => ctx.report_error(property.name(), &e),
        }
    }
    true
}

/// The step runner's `execute`: apply the step's electrodes, voltage and frequency (already
/// sent to us as electrodes-model state), hold them for the step's duration (the electrodes
/// model's `min-duration`) on the engine's clock, and answer when it is over. With no board
/// the step still answers, with a warning, so protocols can be run without hardware.
pub fn execute(ctx: &Arc<Ctx>) -> Answer {
    if let Err(e) = ctx.board() {
        let warning = json!({"applied": false, "warning": format!("{e}: step not applied")});
        return Answer::Now(Ok(warning));
    }
    let (ids, voltage, frequency, duration, actuated) = {
        let m = ctx.model();
        (
            m.active_electrodes.clone(),
            m.voltage_setting,
            m.frequency_setting,
            m.step_duration,
            m.actuated.clone(),
        )
    };
    let channels = match ids.as_deref().map(|ids| channels_for(ctx, ids)).transpose() {
        Ok(channels) => channels.unwrap_or(actuated),
        Err(e) => return Answer::Now(Err(e)),
    };
    let phase = Phase {
        voltage,
        frequency,
        label: Some("step".into()),
        ..Phase::timed(channels, duration.unwrap_or(Duration::ZERO))
    };
    let program = Program {
        needs_hv: false,
        ..Program::new(vec![phase])
    };
    // A protocol's steps make one run record (opened with its first step).
    super::recording::step_begin(ctx);
    let pending = match ctx.submit(Ordered::Run(program)) {
        Ok(p) => p,
        Err(e) => {
            super::recording::step_end(ctx);
            return Answer::Now(Err(e));
        }
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        let answer = ctx.answer(pending, None).await;
        super::recording::step_end(&ctx);
        let report = match answer? {
            Response::Sequence(report) => report,
            _ => return Err(RequestError::Busy("unexpected answer".into())),
        };
        if let Some(error) = &report.error {
            return Err(RequestError::Busy(error.clone()));
        }
        let m = ctx.model();
        Ok(json!({
            "applied": true,
            "electrodes": ids,
            "channels": m.actuated,
            "voltage": m.voltage,
            "frequency": m.frequency,
            "hv_output_enabled": m.hv_output_enabled,
            "capacitance": report.phases.first().and_then(|p| p.capacitance),
        }))
    }))
}

/// Submit the channels of `ids` now, in message order; `live` requests may turn HV on by
/// the auto-HV rule. Errors go to the `active-electrodes` error topic.
fn apply(ctx: &Arc<Ctx>, ids: &[String], live: bool) {
    let submitted = channels_for(ctx, ids).and_then(|channels| ctx.submit_level(channels, live));
    match submitted {
        Ok(generation) => confirm_later(ctx.clone(), "active-electrodes", generation),
        Err(e) => ctx.report_error("active-electrodes", &e),
    }
}

/// Wait for the board in the background; a failure goes to `error/<property>`.
fn confirm_later(ctx: Arc<Ctx>, property: &'static str, generation: u64) {
    tokio::spawn(async move {
        if let Err(e) = ctx.confirm_level(generation).await {
            ctx.report_error(property, &e);
        }
    });
}

/// Channels of electrode ids through the current device; unknown ids refuse the whole set.
pub fn channels_for(ctx: &Ctx, ids: &[String]) -> Result<BTreeSet<u16>, RequestError> {
    let (device, limits) = {
        let m = ctx.model();
        (m.device.clone(), m.limits)
    };
    let device = device.ok_or_else(|| {
        InputError::new(
            "active-electrodes",
            "no device is loaded yet",
            "electrode ids after microdrop/device-model/state/three-object was published",
        )
    })?;
    let channels = device
        .channels_for(ids)
        .map_err(crate::device::DeviceError::from)?;
    if let Some(&too_high) = channels.iter().find(|c| **c >= limits.channel_count) {
        return Err(InputError::new(
            "active-electrodes",
            format!("the device maps an electrode to channel {too_high}"),
            format!(
                "channels 0 to {} on this board",
                limits.channel_count.saturating_sub(1)
            ),
        )
        .into());
    }
    Ok(channels)
}

fn ids(value: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err(format!("got {}", describe(value)));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("item {item} is not a string"))
        })
        .collect()
}
