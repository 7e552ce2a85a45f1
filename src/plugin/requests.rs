//! Puts and triggers: validate, carry out, answer with a notify (and an error topic on failure).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::model::Halt;
use super::properties::{self, InputError, Property, PropertyValue};
use super::routes::{Action, Route};
use crate::actuation::{ActuationError, Target};
use crate::bus::{BusMessage, ReplyStatus};

/// Longest settle time per channel accepted by `detect-shorts`, ms (the firmware takes a u8).
const MAX_SHORTS_DELAY_MS: u64 = 255;

/// Handle one put or trigger and answer it.
pub async fn handle(ctx: Arc<Ctx>, route: Route, msg: BusMessage) {
    let name = route.name();
    let limit = ctx.behaviour.max_request_payload;
    let envelope = if msg.payload.len() > limit {
        let size = msg.payload.len();
        Err(InputError::new(
            name,
            format!("payload of {size} bytes is too large"),
            format!("at most {limit} bytes"),
        ))
    } else {
        msg.envelope().map_err(|e| {
            let allowed = "a JSON object with __head__.plugin_name, as MicroDrop's clients send";
            InputError::new(name, format!("unreadable request: {e}"), allowed)
        })
    };
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(error) => {
            ctx.report_error(name, &error);
            // The payload could not be read, but its sender may still be named in it.
            if let Some(receiver) = reply_address(&msg.payload) {
                let response = json!(error.to_string());
                let _ = ctx
                    .bus
                    .notify(&receiver, name, ReplyStatus::Failed, response);
            }
            return;
        }
    };
    let result = match route {
        Route::Put(property) => put(&ctx, property, envelope.put_value(property.name())).await,
        Route::Trigger(action) => trigger(&ctx, action, envelope.trigger_value()).await,
        _ => return,
    };
    let (status, response) = match result {
        Ok(response) => (ReplyStatus::Success, response),
        Err(e) => {
            ctx.report_error(name, &e);
            (ReplyStatus::Failed, json!(e.to_string()))
        }
    };
    if let Err(e) = ctx.bus.reply(&envelope, name, status, response) {
        tracing::warn!(name, error = %e, "could not send the reply");
    }
    if route == Route::Trigger(Action::Exit) {
        // Queued after the reply, so the reply leaves before our goodbye and DISCONNECT.
        let _ = ctx.exit.try_send(());
    }
}

async fn put(ctx: &Ctx, property: Property, value: &Value) -> Result<Value, RequestError> {
    let limits = ctx.model().limits;
    let parsed = property.parse(value, &limits)?;
    match parsed {
        PropertyValue::Voltage(v) => {
            let c = setting(
                ctx,
                Target {
                    voltage: Some(v),
                    ..Target::default()
                },
            )
            .await?;
            Ok(json!(c.voltage))
        }
        PropertyValue::Frequency(f) => {
            let c = setting(
                ctx,
                Target {
                    frequency: Some(f),
                    ..Target::default()
                },
            )
            .await?;
            Ok(json!(c.frequency))
        }
        PropertyValue::HvOutputEnabled(on) => {
            if on {
                // An explicit request to turn HV on is how a user resumes after a halt.
                ctx.update(|m| m.halted = None);
            }
            let c = ctx
                .actuate(Target {
                    hv_output_enabled: Some(on),
                    ..Target::default()
                })
                .await?;
            Ok(json!(c.hv_output_enabled))
        }
        PropertyValue::Channels(channels) => {
            ctx.actuate(Target {
                channels: Some(channels),
                ..Target::default()
            })
            .await?;
            // What is really on: the model leaves out the disabled channels.
            Ok(json!(ctx.model().actuated))
        }
        PropertyValue::CapacitanceUpdateIntervalMs(ms) => {
            let board = ctx.board()?;
            board.set_capacitance_update_interval_ms(ms).await?;
            ctx.update(|m| m.capacitance_update_interval_ms = Some(ms));
            Ok(json!(ms))
        }
        PropertyValue::DisabledChannels(channels) => {
            let board = ctx.board()?;
            board.set_disabled_channels(&channels).await?;
            let disabled = board.disabled_channels().await?;
            ctx.update(|m| m.disabled = disabled.clone());
            Ok(json!(disabled))
        }
        PropertyValue::WaitForBoard(wait) => {
            // Per step: the retained state is what MicroDrop's step editor records in the
            // loaded step (published on a put only, so a restart cannot overwrite a step's).
            ctx.update(|m| m.wait_for_board = wait);
            ctx.bus.publish_state(property.name(), &json!(wait))?;
            Ok(json!(wait))
        }
    }
}

/// Voltage and/or frequency: remembered as MicroDrop's settings, then applied.
async fn setting(ctx: &Ctx, target: Target) -> Result<crate::actuation::Confirmed, RequestError> {
    ctx.update(|m| m.remember_settings(&target));
    ctx.actuate(target).await
}

async fn trigger(ctx: &Ctx, action: Action, value: &Value) -> Result<Value, RequestError> {
    match action {
        Action::Ping => Ok(json!("pong")),
        Action::GetSchema => Ok(ctx.model().schema()),
        Action::GetSubscriptions => Ok(json!(ctx.bus.subscriptions())),
        Action::UpdateVersion => Ok(value.get("state").cloned().unwrap_or_else(|| json!({}))),
        // The main loop is told after the reply is queued (see `handle`).
        Action::Exit => Ok(json!("exiting: HV and channels off")),
        Action::ConnectDropbot => match ctx.board() {
            Ok(_) => Ok(ctx.model().status()),
            Err(e) => Err(e),
        },
        // Bare numbers, as the 2018 plugin answered and MicroDrop's DropBot panel shows them;
        // the retained `capacitance` and `measured-voltage` states carry unit and times.
        Action::MeasureCapacitance => {
            let farads = f64::from(ctx.board()?.capacitance(0).await?);
            super::telemetry::publish_capacitance(ctx, farads, None);
            Ok(json!(farads))
        }
        Action::MeasureVoltage => {
            let volts = f64::from(ctx.board()?.measured_voltage().await?);
            super::telemetry::publish_measured_voltage(ctx, volts);
            Ok(json!(volts))
        }
        Action::PutVoltageFrequency => {
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
            let v = properties::voltage(field("voltage")?, &limits)?;
            let f = properties::frequency(field("frequency")?, &limits)?;
            let c = setting(
                ctx,
                Target {
                    voltage: Some(v),
                    frequency: Some(f),
                    ..Target::default()
                },
            )
            .await?;
            Ok(json!({"voltage": c.voltage, "frequency": c.frequency}))
        }
        Action::DetectShorts => {
            let allowed = format!("{{\"delay_ms\": 0 to {MAX_SHORTS_DELAY_MS}}} or nothing");
            let delay = match value.get("delay_ms") {
                None => 5,
                Some(d) => d
                    .as_u64()
                    .filter(|d| *d <= MAX_SHORTS_DELAY_MS)
                    .ok_or_else(|| {
                        InputError::new(
                            "detect-shorts",
                            format!("delay_ms {d} is not usable"),
                            &allowed,
                        )
                    })?,
            } as u8;
            let board = ctx.board()?;
            let shorts = board.detect_shorts(delay).await?;
            let disabled = board.disabled_channels().await?;
            ctx.update(|m| m.disabled = disabled);
            let _ = ctx
                .bus
                .signal("shorts-detected", &json!({"channels": shorts}));
            Ok(json!(shorts))
        }
        Action::Halt => {
            let board = ctx.board()?;
            let halt = Halt {
                reason: "requested".into(),
                detail: json!("halt trigger"),
            };
            // Marked before anything else: from here on no target with channels is taken.
            ctx.update(|m| m.halted = Some(halt.clone()));
            let reason = ActuationError::Board("board halted: requested".into());
            ctx.actuator.exclusive(reason, board.halt()).await?;
            ctx.update(|m| m.on_halt(halt));
            let _ = ctx.bus.signal("halted", &json!({"reason": "requested"}));
            Ok(json!("halted: HV off, all channels off"))
        }
        Action::AllOff => {
            let c = ctx
                .actuate(Target {
                    channels: Some(BTreeSet::new()),
                    hv_output_enabled: Some(false),
                    ..Target::default()
                })
                .await?;
            Ok(json!({"channels": c.channels, "hv_output_enabled": c.hv_output_enabled}))
        }
        Action::ScanCapacitances => {
            let board = ctx.board()?;
            let count = board.info().channel_count;
            let channels: Vec<u16> = match value.get("channels") {
                Some(list) => properties::channels("scan-capacitances", list, &ctx.model().limits)?
                    .into_iter()
                    .collect(),
                None => (0..count).collect(),
            };
            let values = board.channel_capacitances(&channels).await?;
            let map: serde_json::Map<String, Value> = channels
                .iter()
                .zip(values)
                .map(|(c, f)| (c.to_string(), json!(f)))
                .collect();
            Ok(Value::Object(map))
        }
        Action::Execute => super::electrodes::execute(ctx).await,
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
