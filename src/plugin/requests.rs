//! Puts and triggers: validated and handed to the engine right away, in the order they
//! arrived (so "HV on" then "HV off" ends with HV off); only the wait for the board's answer
//! and the notify reply run in a task, and at most `max_in_flight` of those at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{json, Value};

use super::actions;
use super::context::{Ctx, RequestError};
use super::properties::{self, InputError, Property, PropertyValue};
use super::routes::{Action, Route};
use crate::actuation::{Ordered, Response};
use crate::bus::{BusMessage, Envelope, ReplyStatus};
use crate::ratelimit::log_limited;

/// A request's answer: now, or once the board has it.
pub enum Answer {
    /// Known at once.
    Now(Result<Value, RequestError>),
    /// After the board.
    Later(Pin<Box<dyn Future<Output = Result<Value, RequestError>> + Send>>),
}

fn later<F>(f: F) -> Answer
where
    F: Future<Output = Result<Value, RequestError>> + Send + 'static,
{
    Answer::Later(Box::pin(f))
}

/// Handle one put or trigger: validate, submit, and answer (now or from a task).
pub fn handle(ctx: &Arc<Ctx>, route: Route, msg: BusMessage) {
    let name = route.name();
    let envelope = match read(ctx, name, &msg) {
        Ok(envelope) => envelope,
        Err(error) => {
            // The payload could not be read, but its sender may still be named in it.
            let room = ctx.report_error_if_room(name, &error);
            if let Some(receiver) = reply_address(&msg.payload).filter(|_| room) {
                let response = json!(error.to_string());
                let _ = ctx
                    .bus
                    .notify(&receiver, name, ReplyStatus::Failed, response);
            }
            return;
        }
    };
    // Permits are taken before anything is submitted: a request refused as busy has not
    // touched the board. A request answered at once holds nothing and needs none; the last
    // permits are kept for requests that make the board safer, so that a flood of other
    // requests never makes a halt "busy".
    let kind = permit_kind(route, &envelope);
    let permit = match kind {
        Permit::None => None,
        kind => {
            let reserve = match kind {
                Permit::Safety => 0,
                _ => SAFETY_RESERVE.min(ctx.behaviour.max_in_flight / 2),
            };
            let permit = (ctx.in_flight.available_permits() > reserve)
                .then(|| ctx.in_flight.clone().try_acquire_owned().ok())
                .flatten();
            if permit.is_none() {
                let busy = RequestError::Busy(format!(
                    "{} requests are being carried out; try again",
                    ctx.behaviour.max_in_flight
                ));
                return reply(ctx, &envelope, route, Err(busy));
            }
            permit
        }
    };
    // One long measurement at a time: a second is refused, not queued behind the first for
    // minutes (with every request after it).
    let long = match kind {
        Permit::Long => match ctx.long_op.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let busy = RequestError::Busy(
                    "a long measurement (shorts, scan, calibration) is being carried out; \
                     wait for its answer"
                        .into(),
                );
                return reply(ctx, &envelope, route, Err(busy));
            }
        },
        _ => None,
    };
    let answer = match route {
        Route::Put(property) => put(ctx, property, envelope.put_value(property.name())),
        Route::Trigger(action) => trigger(ctx, action, envelope.trigger_value()),
        _ => return,
    };
    match answer {
        Answer::Now(result) => reply(ctx, &envelope, route, result),
        Answer::Later(fut) => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let result = fut.await;
                reply(&ctx, &envelope, route, result);
                drop((permit, long));
            });
        }
    }
}

/// Permits of `max_in_flight` that only requests making the board safer may take.
const SAFETY_RESERVE: usize = 32;

/// What a request needs to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permit {
    /// Answered at once, without the board: no permit.
    None,
    /// Makes the board safer (halt, all off, stop, pause, HV off): may take the last permits.
    Safety,
    /// Keeps the board busy for seconds (shorts, scans, calibrations): one at a time.
    Long,
    /// Anything else.
    Ordinary,
}

fn permit_kind(route: Route, envelope: &Envelope) -> Permit {
    match route {
        Route::Trigger(
            Action::Ping
            | Action::GetSchema
            | Action::GetSubscriptions
            | Action::UpdateVersion
            | Action::Exit
            | Action::ConnectDropbot,
        ) => Permit::None,
        Route::Trigger(Action::Halt | Action::AllOff | Action::Stop | Action::Pause) => {
            Permit::Safety
        }
        Route::Trigger(
            Action::DetectShorts
            | Action::ScanCapacitances
            | Action::CalibrateCapacitance
            | Action::CalibrateFeedback
            | Action::DetectDroplets,
        ) => Permit::Long,
        Route::Put(Property::HvOutputEnabled)
            if envelope.put_value(Property::HvOutputEnabled.name()) == &Value::Bool(false) =>
        {
            Permit::Safety
        }
        _ => Permit::Ordinary,
    }
}

fn read(ctx: &Ctx, name: &str, msg: &BusMessage) -> Result<Envelope, InputError> {
    let limit = ctx.behaviour.max_request_payload;
    if msg.payload.len() > limit {
        let size = msg.payload.len();
        return Err(InputError::new(
            name,
            format!("payload of {size} bytes is too large"),
            format!("at most {limit} bytes"),
        ));
    }
    msg.envelope().map_err(|e| {
        let allowed = "a JSON object with __head__.plugin_name, as MicroDrop's clients send";
        InputError::new(name, format!("unreadable request: {e}"), allowed)
    })
}

fn reply(ctx: &Ctx, envelope: &Envelope, route: Route, result: Result<Value, RequestError>) {
    let name = route.name();
    let answer = match result {
        Ok(response) => Some((ReplyStatus::Success, response)),
        // Bad input is answered while there is room for failure reports: a flood of it is shed
        // (see `Ctx::report_error`). A valid request that failed is always answered.
        Err(e) if !ctx.report_error_if_room(name, &e) && e.is_bad_input() => None,
        Err(RequestError::SequenceEnded { report, .. }) => Some((ReplyStatus::Failed, report)),
        Err(e) => Some((ReplyStatus::Failed, json!(e.to_string()))),
    };
    if let Some((status, response)) = answer {
        if let Err(e) = ctx.bus.reply(envelope, name, status, response) {
            log_limited!(warn, name, error = %e, "could not send the reply");
        }
    }
    if route == Route::Trigger(Action::Exit) {
        // Queued after the reply, so the reply leaves before our goodbye and DISCONNECT.
        let _ = ctx.exit.try_send(());
    }
}

fn put(ctx: &Arc<Ctx>, property: Property, value: &Value) -> Answer {
    let limits = ctx.model().limits;
    let parsed = match property.parse(value, &limits) {
        Ok(parsed) => parsed,
        Err(e) => return Answer::Now(Err(e.into())),
    };
    match parsed {
        PropertyValue::Voltage(v) => waveform(ctx, Some(v), None, |m| json!(m.voltage)),
        PropertyValue::Frequency(f) => waveform(ctx, None, Some(f), |m| json!(m.frequency)),
        PropertyValue::HvOutputEnabled(on) => {
            // An explicit request to turn HV on is how a user resumes after a halt.
            let pending = match on {
                true => ctx.submit(Ordered::HvOn),
                false => ctx.board().map(|()| ctx.actuator.hv_off()),
            };
            board_answer(ctx, pending, |ctx, _| json!(ctx.model().hv_output_enabled))
        }
        PropertyValue::Channels(channels) => {
            let generation = match ctx.submit_level(channels, true) {
                Ok(g) => g,
                Err(e) => return Answer::Now(Err(e)),
            };
            let ctx = ctx.clone();
            // What is really on: the board leaves out the disabled channels.
            later(async move { Ok(json!(ctx.confirm_level(generation).await?.actuated)) })
        }
        PropertyValue::CapacitanceUpdateIntervalMs(ms) => {
            let pending = ctx.submit(Ordered::Stream(ms));
            board_answer(ctx, pending, |ctx, _| {
                json!(ctx.model().capacitance_update_interval_ms)
            })
        }
        PropertyValue::DisabledChannels(channels) => {
            let pending = ctx.submit(Ordered::Disabled(channels));
            board_answer(ctx, pending, |ctx, _| json!(ctx.model().disabled))
        }
        PropertyValue::WaitForBoard(wait) => {
            // Per step: the retained state is what MicroDrop's step editor records in the
            // loaded step (published on a put only, so a restart cannot overwrite a step's).
            ctx.update(|m| m.wait_for_board = wait);
            let published = ctx.bus.publish_state(property.name(), &json!(wait));
            Answer::Now(published.map(|()| json!(wait)).map_err(RequestError::from))
        }
    }
}

/// Voltage and/or frequency: remembered as MicroDrop's settings, then applied.
pub(super) fn waveform(
    ctx: &Arc<Ctx>,
    voltage: Option<f32>,
    frequency: Option<f32>,
    answer: fn(&super::model::Model) -> Value,
) -> Answer {
    ctx.update(|m| m.remember_settings(voltage, frequency));
    let pending = ctx.submit(Ordered::Waveform { voltage, frequency });
    board_answer(ctx, pending, move |ctx, _| answer(&ctx.model()))
}

/// Wait for the engine's answer, then answer with `value` (of the model after it).
pub(super) fn board_answer(
    ctx: &Arc<Ctx>,
    pending: Result<crate::actuation::Pending, RequestError>,
    value: impl FnOnce(&Ctx, Response) -> Value + Send + 'static,
) -> Answer {
    let pending = match pending {
        Ok(p) => p,
        Err(e) => return Answer::Now(Err(e)),
    };
    let ctx = ctx.clone();
    later(async move {
        let response = ctx
            .answer(pending, Some(ctx.behaviour.apply_timeout))
            .await?;
        Ok(value(&ctx, response))
    })
}

fn trigger(ctx: &Arc<Ctx>, action: Action, value: &Value) -> Answer {
    let now = |v: Value| Answer::Now(Ok(v));
    match action {
        Action::Ping => now(json!("pong")),
        Action::GetSchema => now(ctx.model().schema()),
        Action::GetSubscriptions => now(json!(ctx.bus.subscriptions())),
        Action::UpdateVersion => now(value.get("state").cloned().unwrap_or_else(|| json!({}))),
        // The main loop is told after the reply is queued (see `reply`).
        Action::Exit => now(json!("exiting: HV and channels off")),
        Action::ConnectDropbot => Answer::Now(ctx.board().map(|()| ctx.model().status())),
        Action::MeasureCapacitance => actions::measure_capacitance(ctx),
        Action::MeasureVoltage => actions::measure_voltage(ctx),
        Action::PutVoltageFrequency => actions::put_voltage_frequency(ctx, value),
        Action::DetectShorts => actions::detect_shorts(ctx, value),
        Action::Halt => actions::halt(ctx),
        Action::AllOff => actions::all_off(ctx),
        Action::ScanCapacitances => actions::scan_capacitances(ctx, value),
        Action::Execute => super::electrodes::execute(ctx),
        Action::RunSequence => super::runs::run_sequence(ctx, value),
        Action::RunRoutes => super::runs::run_routes(ctx, value),
        Action::Stop => super::runs::stop(ctx),
        Action::Pause => super::runs::pause(ctx),
        Action::Resume => super::runs::resume(ctx),
        Action::CalibrateCapacitance => actions::calibrate_capacitance(ctx, value),
        Action::CalibrateFeedback => actions::calibrate_feedback(ctx, value),
        Action::DetectDroplets => actions::detect_droplets(ctx, value),
        Action::MeasureForce => super::calibration::triggers::measure_force(ctx),
        Action::StartRecording => super::recording::start(ctx, value),
        Action::StopRecording => super::recording::stop(ctx),
    }
}

/// The value of a trigger that takes options: nothing, or an object of only `keys`. Anything
/// else is refused rather than taken for "no options": these triggers keep the board busy for
/// seconds.
pub(super) fn options(
    action: &str,
    value: &Value,
    keys: &[&str],
    allowed: &str,
) -> Result<(), InputError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(map) => match map.keys().find(|k| !keys.contains(&k.as_str())) {
            Some(key) => Err(InputError::new(
                action,
                format!("unknown option `{key}`"),
                allowed,
            )),
            None => Ok(()),
        },
        other => Err(InputError::new(
            action,
            format!("got {}", properties::describe(other)),
            allowed,
        )),
    }
}

/// The `"plugin_name": "<name>"` of a payload that is not readable JSON (broken, or too large
/// to parse), found by a plain scan; `None` if there is no such simple string.
fn reply_address(payload: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"plugin_name\"";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)?;
    let rest = payload.get(at + KEY.len()..)?;
    let chunk = rest.get(..rest.len().min(512))?;
    let text = match std::str::from_utf8(chunk) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(chunk.get(..e.valid_up_to())?).ok()?,
    };
    let rest = text
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let name = rest.get(..rest.find('"')?)?;
    (!name.is_empty() && !name.contains('\\')).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::reply_address;

    #[test]
    fn finds_the_sender_of_an_unreadable_request() {
        let broken = br#"{"voltage": 1,, "__head__": {"plugin_name" : "micropede-async-x"}}"#;
        assert_eq!(reply_address(broken).as_deref(), Some("micropede-async-x"));
        assert_eq!(reply_address(b"{\"plugin_name\": 5}"), None);
        assert_eq!(reply_address(b"not json"), None);
        assert_eq!(reply_address(b"\"plugin_name\": \"open"), None);
    }
}
