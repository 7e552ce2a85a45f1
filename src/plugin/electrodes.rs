//! State-driven actuation: MicroDrop's device model and electrodes model tell us what the chip
//! looks like, which electrodes must be on, and a protocol step's voltage and frequency; the step
//! runner's `execute` applies a step.
//!
//! Stored `active-electrodes` (delivered when we subscribe or resubscribe, told apart by the bus
//! on every broker, see [`BusMessage::stored`]) are remembered for `execute` but not acted upon:
//! they are yesterday's request, and nothing is actuated that a user did not ask for now. Live
//! updates are applied newest-wins through the actuation engine. Electrode ids the device does not have
//! (a step or route saved with another device) are left out and reported: the known ones are
//! applied, so no earlier set stays on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::properties::{self, describe, InputError, Property};
use super::requests::Answer;
use crate::actuation::{Ordered, Phase, Program, Response};
use crate::bus::{BusError, BusMessage};

/// Error topic of electrode problems.
const ACTIVE_ELECTRODES: &str = "active-electrodes";

/// `microdrop/device-model/state/three-object`: the chip. The channel map always follows it;
/// it is parsed off the main loop (see [`super::devices`]).
pub fn on_device(ctx: &Arc<Ctx>, msg: &BusMessage) {
    match msg.envelope() {
        Ok(envelope) => super::devices::load(ctx, envelope.value, msg.stored),
        Err(BusError::EmptyPayload) => super::devices::clear(ctx),
        Err(e) => ctx.report_error("three-object", &e),
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
    // No retained state says it: nothing to publish.
    ctx.model().active_electrodes = Some(ids.clone());
    if msg.stored {
        tracing::debug!(count = ids.len(), "stored active-electrodes not applied");
        return;
    }
    apply(ctx, &ids, true);
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
    let (voltage, frequency) = match property {
        Property::Voltage => (Some(value), None),
        _ => (None, Some(value)),
    };
    ctx.update(|m| m.remember_settings(voltage, frequency));
    if ctx.has_board() {
        // Submitted here, in message order; only the wait is spawned.
        match ctx.submit(Ordered::Waveform { voltage, frequency }) {
            Ok(pending) => {
                let waiter = ctx.clone();
                let name = property.name();
                spawn_wait(ctx, name, async move {
                    let timeout = Some(waiter.behaviour.apply_timeout);
                    if let Err(e) = waiter.answer(pending, timeout).await {
                        waiter.report_error(name, &e);
                    }
                });
            }
            Err(e) => ctx.report_error(property.name(), &e),
        }
    }
}

/// `microdrop/electrodes-model/state/min-duration`: how long a protocol step holds its
/// electrodes (ms); `execute` keeps them on that long on the engine's clock.
pub fn on_step_duration(ctx: &Arc<Ctx>, msg: &BusMessage) {
    let value = match msg.envelope() {
        Ok(envelope) => envelope.value,
        Err(BusError::EmptyPayload) => return ctx.update(|m| m.step_duration = None),
        Err(e) => return ctx.report_error("min-duration", &e),
    };
    let ms = value
        .as_f64()
        .filter(|ms| ms.is_finite() && (0.0..=MAX_STEP_MS).contains(ms));
    match ms {
        Some(ms) => ctx.update(|m| m.step_duration = Some(Duration::from_secs_f64(ms / 1e3))),
        None => ctx.report_error(
            "min-duration",
            &InputError::new(
                "min-duration",
                format!("got {}", describe(&value)),
                format!("a number of milliseconds from 0 to {MAX_STEP_MS}"),
            ),
        ),
    }
}

/// Longest step hold taken from `min-duration`, ms (a day).
const MAX_STEP_MS: f64 = 86_400_000.0;

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
                    crate::ratelimit::log_limited!(warn, error = %e, "could not publish wait-for-board");
                }
            }
        }
        Err(e) => ctx.report_error(property.name(), &e),
    }
}

/// The step runner's `execute`: apply the step's electrodes, voltage and frequency (sent to us
/// as electrodes-model state) and hold them for the step's duration (the electrodes model's
/// `min-duration`) on the engine's clock; when the step's `wait-for-board` says so, answer once
/// that is over, else at once. Electrode ids the device lacks are left out and named in a
/// warning; the step still succeeds. With no board the step answers too, with a warning, so
/// protocols can be run without hardware.
pub fn execute(ctx: &Arc<Ctx>) -> Answer {
    if let Err(e) = ctx.board() {
        let warning = json!({"applied": false, "warning": format!("{e}: step not applied")});
        return Answer::Now(Ok(warning));
    }
    let (ids, voltage, frequency, wait, duration, actuated) = {
        let m = ctx.model();
        (
            m.active_electrodes.clone(),
            m.voltage_setting,
            m.frequency_setting,
            m.wait_for_board,
            m.step_duration,
            m.actuated.clone(),
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
    let phase = Phase {
        voltage,
        frequency,
        label: Some("step".into()),
        ..Phase::timed(
            mapped.map_or(actuated, |m| m.channels),
            duration.unwrap_or(Duration::ZERO),
        )
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
    let warning = (!unknown.is_empty()).then(|| {
        format!(
            "electrodes not on this device, left out: {}",
            unknown.join(", ")
        )
    });
    let waiter = ctx.clone();
    let hold = async move {
        let ctx = waiter;
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
            "unknown_electrodes": unknown,
            "warning": warning,
            "channels": m.actuated,
            "voltage": m.voltage,
            "frequency": m.frequency,
            "hv_output_enabled": m.hv_output_enabled,
            "capacitance": report.phases.first().and_then(|p| p.capacitance),
        }))
    };
    if !wait {
        // The model takes the board's picture when it comes; failures reach the error topic.
        spawn_wait(ctx, "execute", async move {
            if let Err(e) = hold.await {
                crate::ratelimit::log_limited!(warn, error = %e, "step not applied");
            }
        });
        return Answer::Now(Ok(json!({"applied": "pending"})));
    }
    Answer::Later(Box::pin(hold))
}

/// Submit the channels of `ids` now, in message order; `live` requests may turn HV on by the
/// auto-HV rule. Unknown ids and failures go to the `active-electrodes` error topic.
pub(super) fn apply(ctx: &Arc<Ctx>, ids: &[String], live: bool) {
    let mapped = channels_for(ctx, ids);
    if let Some(problem) = mapped.problem() {
        ctx.report_error(ACTIVE_ELECTRODES, &problem);
    }
    match ctx.submit_level(mapped.channels, live) {
        Ok(generation) => confirm_later(ctx.clone(), ACTIVE_ELECTRODES, generation),
        Err(e) => ctx.report_error(ACTIVE_ELECTRODES, &e),
    }
}

/// Wait for the board in the background; a failure goes to `error/<property>`.
fn confirm_later(ctx: Arc<Ctx>, property: &'static str, generation: u64) {
    let waiter = ctx.clone();
    spawn_wait(&ctx, property, async move {
        if let Err(e) = waiter.confirm_level(generation).await {
            waiter.report_error(property, &e);
        }
    });
}

/// Runs a background wait for the board's answer to something already submitted, while
/// fewer than `max_in_flight` tasks hold the context's permits; beyond that only this wait
/// (and the report of its failure) is left out, so a flood of messages cannot pile up tasks.
fn spawn_wait(
    ctx: &Arc<Ctx>,
    what: &'static str,
    wait: impl std::future::Future<Output = ()> + Send + 'static,
) {
    match ctx.in_flight.clone().try_acquire_owned() {
        Ok(permit) => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                wait.await;
                drop(permit);
                ctx.settle_if_idle();
            });
        }
        Err(_) => tracing::debug!(what, "too many waits in flight: this one is not followed"),
    }
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
