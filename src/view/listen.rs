//! The view's own MQTT connection: it subscribes to what MicroDrop and the plugin publish,
//! turns every message into the [`Picture`](super::picture::Picture), and, when asked, plays
//! two parts of MicroDrop for a bus that has no MicroDrop: the device model (publishing the
//! simulated chip when nobody has published one) and a user who turns the capacitance stream on.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::chip::Chip;
use super::hub::Hub;
use crate::bus::{BusClient, BusError, BusMessage, ConnectionState, Router};

/// MicroDrop's device model state: the chip.
pub const DEVICE_TOPIC: &str = "microdrop/device-model/state/three-object";
/// MicroDrop's electrodes model state: the electrodes that must be on.
pub const ACTIVE_ELECTRODES_TOPIC: &str = "microdrop/electrodes-model/state/active-electrodes";
/// Largest payload read on any topic but the device (state values, errors, signals are small).
const MAX_SMALL_PAYLOAD: usize = 64 * 1024;
/// Signals are shown with their first characters only (the state topics hold the details).
const SIGNAL_CHARS: usize = 100;
/// How long to wait for the broker to hand over retained messages before deciding that no
/// device is on the bus.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a clean disconnect may take at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a subscribed topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// MicroDrop's `three-object`.
    Device,
    /// MicroDrop's `active-electrodes`.
    ActiveElectrodes,
    /// `microdrop/<plugin>/state/{property}`.
    State,
    /// `microdrop/<plugin>/error/{property}`.
    Error,
    /// `microdrop/<plugin>/signal/{signal}`.
    Signal,
    /// `microdrop/<plugin>/notify/<view>/{topic}`: answers to our puts.
    Reply,
}

/// The view's subscriptions, for watching plugin `plugin` as client `me`.
pub fn router(plugin: &str, me: &str) -> Result<Router<Route>, BusError> {
    let mut r = Router::new();
    r.add(DEVICE_TOPIC, Route::Device)?;
    r.add(ACTIVE_ELECTRODES_TOPIC, Route::ActiveElectrodes)?;
    r.add(
        &format!("microdrop/{plugin}/state/{{property}}"),
        Route::State,
    )?;
    r.add(
        &format!("microdrop/{plugin}/error/{{property}}"),
        Route::Error,
    )?;
    r.add(
        &format!("microdrop/{plugin}/signal/{{signal}}"),
        Route::Signal,
    )?;
    r.add(
        &format!("microdrop/{plugin}/notify/{me}/{{topic}}"),
        Route::Reply,
    )?;
    Ok(r)
}

/// The bus side of the view.
pub struct Listener {
    /// The connection (subscribed to [`router`]'s filters already).
    pub client: BusClient,
    /// The routes.
    pub router: Router<Route>,
    /// The shared picture.
    pub hub: Arc<Hub>,
    /// The plugin's bus name.
    pub plugin: String,
    /// A chip to publish as MicroDrop's device model state if the bus has none.
    pub stand_in_device: Option<Value>,
    /// The capacitance stream period to ask the plugin for at each board connection.
    pub stream_ms: Option<u32>,
}

impl Listener {
    /// Follows the bus until `stop`, then disconnects cleanly.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut connection = self.client.handle().connection();
        // The connection may have come up before this task started.
        let now = connection.borrow_and_update().clone();
        self.on_connection(now).await;
        loop {
            tokio::select! {
                msg = self.client.recv() => match msg {
                    Some(msg) => self.on_message(&msg),
                    None => break,
                },
                changed = connection.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = connection.borrow_and_update().clone();
                    self.on_connection(state).await;
                }
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.client.disconnect(&[], DISCONNECT_TIMEOUT).await {
            tracing::debug!(error = %e, "view: no clean MQTT disconnect");
        }
    }

    async fn on_connection(&mut self, state: ConnectionState) {
        let problem = match &state {
            ConnectionState::Connected { .. } => None,
            ConnectionState::Connecting => Some("connecting".to_owned()),
            ConnectionState::Disconnected { reason } => Some(reason.clone()),
            ConnectionState::Closed => Some("closed".to_owned()),
        };
        let connected = problem.is_none();
        self.hub.update(|p| p.on_bus(problem));
        if connected && self.stand_in_device.is_some() {
            self.offer_device().await;
        }
    }

    /// Publishes the stand-in chip if, once the broker has handed over every retained message
    /// of our subscriptions, no device has arrived. Done once: a device model that comes later
    /// replaces it.
    async fn offer_device(&mut self) {
        let handle = self.client.handle();
        if let Err(e) = handle.sync(SYNC_TIMEOUT).await {
            tracing::warn!(error = %e, "view: could not check for a device on the bus");
            return;
        }
        let mut early = Vec::new();
        while let Ok(msg) = self.client.messages().try_recv() {
            early.push(msg);
        }
        for msg in &early {
            self.on_message(msg);
        }
        let Some(device) = self.stand_in_device.take() else {
            return;
        };
        if self.hub.read(|p| p.device_version()) > 0 {
            return;
        }
        match handle.publish_retained_once(DEVICE_TOPIC, &device) {
            Ok(()) => tracing::info!("view: no device on the bus; published the simulated chip"),
            Err(e) => tracing::warn!(error = %e, "view: could not publish the simulated chip"),
        }
    }

    fn on_message(&self, msg: &BusMessage) {
        let Some((route, captures)) = self.router.route(&msg.topic) else {
            return;
        };
        let name = captures
            .iter()
            .next()
            .map_or_else(String::new, |(_, v)| v.to_owned());
        let value = || -> Result<Value, String> {
            if msg.payload.len() > MAX_SMALL_PAYLOAD {
                return Err(format!(
                    "a payload of {} bytes, too large to show",
                    msg.payload.len()
                ));
            }
            match msg.envelope() {
                Ok(e) => Ok(e.value),
                Err(BusError::EmptyPayload) => Ok(Value::Null),
                Err(e) => Err(e.to_string()),
            }
        };
        // A device can be megabytes: it is read before the picture is locked.
        let chip = (*route == Route::Device).then(|| match msg.envelope() {
            Ok(e) => Some(Chip::from_three_object(&e.value).map_err(|e| e.to_string())),
            Err(BusError::EmptyPayload) => None,
            Err(e) => Some(Err(e.to_string())),
        });
        let due = self.hub.update(|p| {
            match route {
                Route::Device => p.on_chip(chip.flatten()),
                Route::ActiveElectrodes => {
                    p.on_active_electrodes(value().map(|v| if v.is_null() { json!([]) } else { v }))
                }
                Route::State => p.on_state(&name, value()),
                Route::Error => {
                    let text = value().map_or_else(|e| e, |v| text_of(&v, "error"));
                    p.note(&format!("error {name}"), &text);
                }
                Route::Signal => {
                    let mut text = value().map_or_else(|e| e, |v| v.to_string());
                    if let Some((cut, _)) = text.char_indices().nth(SIGNAL_CHARS) {
                        text.truncate(cut);
                        text.push('…');
                    }
                    p.note(&format!("signal {name}"), &text);
                }
                Route::Reply => match value() {
                    Ok(v) if v.get("status").is_some_and(|s| s == "success") => {}
                    Ok(v) => p.note(&format!("{name} refused"), &text_of(&v, "response")),
                    Err(e) => p.note(&format!("{name} answer"), &e),
                },
            }
            p.stream_put_due(self.stream_ms)
        });
        if let Some(ms) = due {
            self.ask_for_stream(ms);
        }
    }

    fn ask_for_stream(&self, ms: u32) {
        let property = "capacitance-update-interval-ms";
        let topic = format!("microdrop/put/{}/{property}", self.plugin);
        match self
            .client
            .handle()
            .publish_json(&topic, &json!({ property: ms }), false)
        {
            Ok(()) => tracing::info!(ms, "view: asked the plugin for a capacitance stream"),
            Err(e) => tracing::warn!(error = %e, "view: could not ask for a capacitance stream"),
        }
    }
}

/// `value[key]` as text when it is a string, else the whole value as JSON.
fn text_of(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_hears_the_plugin_and_microdrops_models() {
        let r = router("dropbot", "dropbot-view").unwrap();
        let route = |t: &str| {
            r.route(t)
                .map(|(k, c)| (*k, c.iter().next().map(|(_, v)| v.to_owned())))
        };
        assert_eq!(route(DEVICE_TOPIC), Some((Route::Device, None)));
        assert_eq!(
            route("microdrop/dropbot/state/hv-output-enabled"),
            Some((Route::State, Some("hv-output-enabled".into())))
        );
        assert_eq!(
            route("microdrop/dropbot/notify/dropbot-view/capacitance-update-interval-ms")
                .map(|r| r.0),
            Some(Route::Reply)
        );
        assert_eq!(route("microdrop/other/state/voltage"), None);
        assert_eq!(route("microdrop/dropbot/notify/someone-else/ping"), None);
        assert!(r
            .filters()
            .contains(&"microdrop/dropbot/signal/+".to_owned()));
    }

    #[test]
    fn error_text_is_read_from_the_plugins_error_payload() {
        assert_eq!(
            text_of(&json!({"error": "no device"}), "error"),
            "no device"
        );
        assert_eq!(
            text_of(&json!({"response": {"a": 1}}), "response"),
            r#"{"a":1}"#
        );
        assert_eq!(text_of(&json!(3), "error"), "3");
    }
}
