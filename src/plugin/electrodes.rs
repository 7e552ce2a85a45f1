//! State-driven actuation: MicroDrop's device model and electrodes model tell us what the chip
//! looks like, which electrodes must be on, and a protocol step's voltage and frequency; the step
//! runner's `execute` applies a step.
//!
//! Stored `active-electrodes` (delivered when we subscribe or resubscribe, told apart by the bus
//! on every broker, see [`BusMessage::stored`]) are remembered for `execute` but not acted upon:
//! they are yesterday's request, and nothing is actuated that a user did not ask for now. Live
//! updates are applied newest-wins through the actuator. Electrode ids the device does not have
//! (a step or route saved with another device) are left out and reported: the known ones are
//! applied, so no earlier set stays on.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::properties::{self, describe, InputError, Property};
use crate::actuation::Target;
use crate::bus::{BusError, BusMessage};
use crate::device::Device;

/// Error topic of electrode problems.
const ACTIVE_ELECTRODES: &str = "active-electrodes";

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
        let follow = !msg.stored && !m.actuated.is_empty();
        let ids = m.active_electrodes.clone().filter(|_| follow);
        ids.map(|ids| (ids, m.hv_output_enabled))
    });
    if let Some((ids, hv)) = remap {
        apply(ctx, &ids, Some(hv));
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
                ACTIVE_ELECTRODES,
                problem,
                "an array of electrode id strings",
            );
            return ctx.report_error(ACTIVE_ELECTRODES, &error);
        }
    };
    ctx.update(|m| m.active_electrodes = Some(ids.clone()));
    if msg.stored {
        tracing::debug!(count = ids.len(), "stored active-electrodes not applied");
        return;
    }
    apply(ctx, &ids, None);
}

/// `microdrop/electrodes-model/state/voltage` or `.../frequency` (`"100 V"`, `"1000 Hz"`): a
/// protocol step's setting, live or stored (the loaded step's). Remembered, and applied when a
/// board is connected (this never turns HV on).
pub fn on_step_setting(ctx: &Arc<Ctx>, msg: &BusMessage, property: Property) {
    let value = match msg.envelope() {
        Ok(envelope) => envelope.value,
        Err(e) => return ctx.report_error(property.name(), &e),
    };
    let limits = ctx.model().limits;
    let parsed = match property {
        Property::Voltage => properties::voltage(&value, &limits),
        _ => properties::frequency(&value, &limits),
    };
    let value = match parsed {
        Ok(v) => v,
        Err(e) => return ctx.report_error(property.name(), &e),
    };
    let target = match property {
        Property::Voltage => Target {
            voltage: Some(value),
            ..Target::default()
        },
        _ => Target {
            frequency: Some(value),
            ..Target::default()
        },
    };
    ctx.update(|m| m.remember_settings(&target));
    if ctx.current_board().is_some() {
        // Submitted here, in message order; only the wait is spawned.
        match ctx.submit(target) {
            Ok(generation) => confirm_later(ctx.clone(), property.name(), generation),
            Err(e) => ctx.report_error(property.name(), &e),
        }
    }
}

/// `microdrop/<self>/state/wait-for-board`, our per-step property: MicroDrop's step loader writes
/// it when a step is loaded (and the broker hands it to us at subscription); taken as the loaded
/// step's, and published as ours, so that a reconnection restores the step's value rather than
/// our older one.
pub fn on_own_state(ctx: &Arc<Ctx>, msg: &BusMessage, property: Property) {
    let value = match msg.envelope() {
        Ok(envelope) => envelope.value,
        // Cleared: the step has no value; the default applies.
        Err(BusError::EmptyPayload) => Value::Bool(true),
        Err(e) => return ctx.report_error(property.name(), &e),
    };
    match properties::boolean(property.name(), &value) {
        Ok(wait) => {
            ctx.update(|m| m.wait_for_board = wait);
            if !msg.stored {
                if let Err(e) = ctx.bus.publish_state(property.name(), &json!(wait)) {
                    tracing::warn!(error = %e, "could not publish wait-for-board");
                }
            }
        }
        Err(e) => ctx.report_error(property.name(), &e),
    }
}

/// The step runner's `execute`: apply the step's electrodes, voltage and frequency (sent to us
/// as electrodes-model state) and, when the step's `wait-for-board` says so, answer once the
/// board has them. Electrode ids the device lacks are left out and named in a warning; the step
/// still succeeds. With no board the step answers too, with a warning, so protocols can be run
/// without hardware.
pub async fn execute(ctx: &Ctx) -> Result<Value, RequestError> {
    if let Err(e) = ctx.board() {
        return Ok(json!({"applied": false, "warning": format!("{e}: step not applied")}));
    }
    let (ids, voltage, frequency, wait) = {
        let m = ctx.model();
        (
            m.active_electrodes.clone(),
            m.voltage_setting,
            m.frequency_setting,
            m.wait_for_board,
        )
    };
    let mapped = ids.as_deref().map(|ids| channels_for(ctx, ids));
    let unknown = mapped
        .as_ref()
        .map(|m| m.unknown.clone())
        .unwrap_or_default();
    if let Some(problem) = mapped.as_ref().and_then(Mapped::problem) {
        ctx.report_error(ACTIVE_ELECTRODES, &problem);
    }
    let generation = ctx.submit(Target {
        channels: mapped.map(|m| m.channels),
        voltage,
        frequency,
        ..Target::default()
    })?;
    let warning = (!unknown.is_empty()).then(|| {
        format!(
            "electrodes not on this device, left out: {}",
            unknown.join(", ")
        )
    });
    if !wait {
        // The main loop takes the board's confirmation into the model when it comes.
        return Ok(json!({"applied": "pending", "electrodes": ids, "warning": warning}));
    }
    let confirmed = ctx.confirm(generation).await?;
    let capacitance = match ctx.board() {
        Ok(board) => board.capacitance(0).await.ok().map(f64::from),
        Err(_) => None,
    };
    if let Some(farads) = capacitance {
        super::telemetry::publish_capacitance(ctx, farads, None);
    }
    Ok(json!({
        "applied": true,
        "electrodes": ids,
        "unknown_electrodes": unknown,
        "warning": warning,
        "channels": ctx.model().actuated.clone(),
        "voltage": confirmed.voltage,
        "frequency": confirmed.frequency,
        "hv_output_enabled": confirmed.hv_output_enabled,
        "capacitance": capacitance,
    }))
}

/// Submit the channels of `ids` now, in message order, with HV as given or by the auto-HV
/// rule; unknown ids and failures go to the `active-electrodes` error topic.
fn apply(ctx: &Arc<Ctx>, ids: &[String], hv_output_enabled: Option<bool>) {
    let mapped = channels_for(ctx, ids);
    if let Some(problem) = mapped.problem() {
        ctx.report_error(ACTIVE_ELECTRODES, &problem);
    }
    let submitted = ctx.submit(Target {
        channels: Some(mapped.channels),
        hv_output_enabled,
        ..Target::default()
    });
    match submitted {
        Ok(generation) => confirm_later(ctx.clone(), ACTIVE_ELECTRODES, generation),
        Err(e) => ctx.report_error(ACTIVE_ELECTRODES, &e),
    }
}

/// Wait for the board in the background; a failure goes to `error/<property>`.
fn confirm_later(ctx: Arc<Ctx>, property: &'static str, generation: u64) {
    tokio::spawn(async move {
        if let Err(e) = ctx.confirm(generation).await {
            ctx.report_error(property, &e);
        }
    });
}

/// Electrode ids mapped to the board's channels.
#[derive(Debug, Clone, Default)]
pub struct Mapped {
    /// Channels of the ids the device has, on channels the board has.
    pub channels: BTreeSet<u16>,
    /// Ids left out: not on the device (or no device yet), or on a channel the board lacks.
    pub unknown: Vec<String>,
    /// Why there was no device to map with, if so.
    no_device: bool,
    /// The board's channel count, for the message.
    channel_count: u16,
}

impl Mapped {
    /// What was wrong, for the error topic; `None` if every id was mapped.
    pub fn problem(&self) -> Option<InputError> {
        if self.unknown.is_empty() {
            return None;
        }
        let (problem, allowed) = if self.no_device {
            (
                format!(
                    "no device is loaded yet; left out: {}",
                    self.unknown.join(", ")
                ),
                "electrode ids after microdrop/device-model/state/three-object was published"
                    .to_owned(),
            )
        } else {
            (
                format!("not on this device, left out: {}", self.unknown.join(", ")),
                format!(
                    "ids of the loaded device's electrodes on channels 0 to {}",
                    self.channel_count.saturating_sub(1)
                ),
            )
        };
        Some(InputError::new(ACTIVE_ELECTRODES, problem, allowed))
    }
}

/// Channels of electrode ids through the current device. Ids the device lacks, or that it maps
/// to a channel the board does not have, are left out and listed.
pub fn channels_for(ctx: &Ctx, ids: &[String]) -> Mapped {
    let (device, limits) = {
        let m = ctx.model();
        (m.device.clone(), m.limits)
    };
    let mut mapped = Mapped {
        no_device: device.is_none(),
        channel_count: limits.channel_count,
        ..Mapped::default()
    };
    for id in ids {
        let channels = device
            .as_deref()
            .and_then(|d| d.by_id(id))
            .map(|e| &e.channels);
        match channels {
            Some(c) if c.iter().all(|c| *c < limits.channel_count) => {
                mapped.channels.extend(c.iter().copied());
            }
            _ if !mapped.unknown.contains(id) => mapped.unknown.push(id.clone()),
            _ => {}
        }
    }
    mapped
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
