//! Puts and triggers: validate, carry out, answer with a notify (and an error topic on failure).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::model::Halt;
use super::properties::{self, schema, InputError, Property, PropertyValue};
use super::routes::{Action, Route};
use crate::actuation::Target;
use crate::bus::{BusMessage, ReplyStatus};

/// Longest settle time per channel accepted by `detect-shorts`, ms (the firmware takes a u8).
const MAX_SHORTS_DELAY_MS: u64 = 255;

/// Handle one put or trigger and answer it.
pub async fn handle(ctx: Arc<Ctx>, route: Route, msg: BusMessage) {
    let name = route.name();
    let envelope = match msg.envelope() {
        Ok(envelope) => envelope,
        Err(e) => {
            // Without a readable payload there is no reply address: the error topic tells.
            ctx.report_error(name, &format!("unreadable request: {e}"));
            return;
        }
    };
    if msg.payload.len() > ctx.behaviour.max_request_payload {
        let error = InputError::new(
            name,
            format!("payload of {} bytes is too large", msg.payload.len()),
            format!("at most {} bytes", ctx.behaviour.max_request_payload),
        );
        ctx.report_error(name, &error);
        let _ = ctx.bus.reply(&envelope, name, ReplyStatus::Failed, json!(error.to_string()));
        return;
    }
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
}

async fn put(ctx: &Ctx, property: Property, value: &Value) -> Result<Value, RequestError> {
    let limits = ctx.model().limits;
    let parsed = property.parse(value, &limits)?;
    match parsed {
        PropertyValue::Voltage(v) => {
            ctx.update(|m| m.voltage_setting = Some(v));
            let c = ctx.actuate(Target { voltage: Some(v), ..Target::default() }).await?;
            Ok(json!(c.voltage))
        }
        PropertyValue::Frequency(f) => {
            ctx.update(|m| m.frequency_setting = Some(f));
            let c = ctx.actuate(Target { frequency: Some(f), ..Target::default() }).await?;
            Ok(json!(c.frequency))
        }
        PropertyValue::HvOutputEnabled(on) => {
            if on {
                // An explicit request to turn HV on is how a user resumes after a halt.
                ctx.update(|m| m.halted = None);
            }
            let c = ctx
                .actuate(Target { hv_output_enabled: Some(on), ..Target::default() })
                .await?;
            Ok(json!(c.hv_output_enabled))
        }
        PropertyValue::Channels(channels) => {
            let c = ctx.actuate(Target { channels: Some(channels), ..Target::default() }).await?;
            Ok(json!(c.channels))
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
    }
}

async fn trigger(ctx: &Ctx, action: Action, value: &Value) -> Result<Value, RequestError> {
    match action {
        Action::Ping => Ok(json!("pong")),
        Action::GetSchema => Ok(schema(&ctx.name, &ctx.model().limits)),
        Action::GetSubscriptions => Ok(json!(ctx.bus.subscriptions())),
        Action::UpdateVersion => Ok(value.get("state").cloned().unwrap_or_else(|| json!({}))),
        Action::Exit => {
            // The reply goes out before the main loop starts shutting down.
            let _ = ctx.exit.try_send(());
            Ok(json!("exiting: HV and channels off"))
        }
        Action::ConnectDropbot => match ctx.board() {
            Ok(_) => Ok(ctx.model().status()),
            Err(e) => Err(e),
        },
        Action::MeasureCapacitance => {
            let farads = ctx.board()?.capacitance(0).await?;
            let reading = super::telemetry::publish_capacitance(ctx, f64::from(farads), None);
            Ok(reading)
        }
        Action::MeasureVoltage => {
            let volts = ctx.board()?.measured_voltage().await?;
            Ok(super::telemetry::publish_measured_voltage(ctx, f64::from(volts)))
        }
        Action::PutVoltageFrequency => {
            let limits = ctx.model().limits;
            let field = |key: &str| value.get(key).ok_or_else(|| {
                InputError::new("put-voltage-frequency", format!("missing `{key}`"), "{\"voltage\": V, \"frequency\": Hz}")
            });
            let v = properties::voltage(field("voltage")?, &limits)?;
            let f = properties::frequency(field("frequency")?, &limits)?;
            ctx.update(|m| {
                m.voltage_setting = Some(v);
                m.frequency_setting = Some(f);
            });
            let c = ctx
                .actuate(Target { voltage: Some(v), frequency: Some(f), ..Target::default() })
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
                    .ok_or_else(|| InputError::new("detect-shorts", format!("delay_ms {d} is not usable"), &allowed))?,
            } as u8;
            let board = ctx.board()?;
            let shorts = board.detect_shorts(delay).await?;
            let disabled = board.disabled_channels().await?;
            ctx.update(|m| m.disabled = disabled);
            let _ = ctx.bus.signal("shorts-detected", &json!({"channels": shorts}));
            Ok(json!(shorts))
        }
        Action::Halt => {
            let board = ctx.board()?;
            ctx.actuator.clear(crate::actuation::ActuationError::Superseded);
            board.halt().await?;
            ctx.update(|m| m.on_halt(Halt { reason: "requested".into(), detail: json!("halt trigger") }));
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
