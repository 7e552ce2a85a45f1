//! What the view knows, all of it learned from the bus (plus the simulator's droplets): the
//! chip, the plugin's retained state, the active-electrodes list, recent errors and signals,
//! and the capacitance readings. Pure: no I/O, so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::chip::{Chip, ToggleError};
use super::droplets::DropletMark;
use super::samples::Samples;

/// The plugin's retained state topics the page shows as they are.
pub const SHOWN_STATES: [&str; 8] = [
    "status",
    "hv-output-enabled",
    "voltage",
    "frequency",
    "chip-inserted",
    "halted",
    "capacitance-update-interval-ms",
    "measured-voltage",
];

/// Lines of errors, signals and failed replies kept for the page.
pub const LOG_LINES: usize = 8;
/// Longest log line, characters.
const LOG_CHARS: usize = 300;
/// Our own `active-electrodes` publications awaiting their echo, at most.
const OWN_ECHOES: usize = 32;

/// Why a click was not turned into a publication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClickError {
    /// No device on the bus yet (or the last one could not be read).
    #[error("no device on the bus yet: nothing to click")]
    NoDevice,
    /// The chip refused the click.
    #[error(transparent)]
    Toggle(#[from] ToggleError),
}

/// The view's picture of the plugin and the chip.
#[derive(Debug, Default)]
pub struct Picture {
    chip: Option<Arc<Chip>>,
    device_problem: Option<String>,
    device_version: u64,
    states: BTreeMap<&'static str, Value>,
    actuated: BTreeSet<u16>,
    requested: Option<Vec<String>>,
    own: VecDeque<Vec<String>>,
    droplets: Vec<DropletMark>,
    log: VecDeque<Value>,
    bus: Option<String>,
    samples: Samples,
    stream_asked: bool,
}

impl Picture {
    /// An empty picture: no device, no plugin state, not connected.
    pub fn new() -> Self {
        Picture {
            bus: Some("connecting".into()),
            ..Picture::default()
        }
    }

    /// `device-model/state/three-object`: the value, or why there is none (`None`: cleared).
    pub fn on_device(&mut self, value: Option<Result<Value, String>>) {
        self.on_chip(
            value.map(|v| v.and_then(|v| Chip::from_three_object(&v).map_err(|e| e.to_string()))),
        );
    }

    /// The chip built from `three-object` (outside any lock: a device can be megabytes), or
    /// why there is none.
    pub fn on_chip(&mut self, chip: Option<Result<Chip, String>>) {
        self.device_version += 1;
        (self.chip, self.device_problem) = match chip {
            None => (None, None),
            Some(Ok(chip)) => (Some(Arc::new(chip)), None),
            Some(Err(why)) => (
                None,
                Some(format!("the device on the bus cannot be drawn: {why}")),
            ),
        };
    }

    /// Counts device changes (the page redraws the chip when it moves).
    pub fn device_version(&self) -> u64 {
        self.device_version
    }

    /// The page's description of the chip, if there is one.
    pub fn device_page(&self) -> Option<Arc<str>> {
        self.chip.as_ref().map(|c| c.page_json())
    }

    /// `electrodes-model/state/active-electrodes`. Echoes of our own publications are
    /// recognised in order and do not undo a newer click; anyone else's list wins.
    pub fn on_active_electrodes(&mut self, value: Result<Value, String>) {
        let list = match value.and_then(id_list) {
            Ok(list) => list,
            Err(why) => return self.note("active-electrodes", &why),
        };
        if self.own.front() == Some(&list) {
            self.own.pop_front();
            return;
        }
        self.own.clear();
        self.requested = Some(list);
    }

    /// `microdrop/<plugin>/state/<property>`.
    pub fn on_state(&mut self, property: &str, value: Result<Value, String>) {
        let value = match value {
            Ok(v) => v,
            Err(why) => return self.note(&format!("state {property}"), &why),
        };
        match property {
            "actuated-channels" => {
                // `null` (no board) and nonsense alike: nothing we can show as on.
                self.actuated = serde_json::from_value(value).unwrap_or_default();
            }
            "capacitance" => {
                let number = |k: &str| value.get(k).and_then(Value::as_f64);
                if let (Some(t), Some(f)) = (number("host_time_ms"), number("value")) {
                    self.samples.push(t, f);
                }
            }
            _ => {
                if let Some(&name) = SHOWN_STATES.iter().find(|s| **s == property) {
                    self.states.insert(name, value);
                }
            }
        }
    }

    /// An error, signal or failed reply worth a line on the page (stamped with the host's
    /// time, ms since the Unix epoch).
    pub fn note(&mut self, what: &str, detail: &str) {
        let mut text = format!("{what}: {detail}");
        if let Some((cut, _)) = text.char_indices().nth(LOG_CHARS) {
            text.truncate(cut);
            text.push('…');
        }
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        self.log.push_back(json!({"t": t.round(), "text": text}));
    }

    /// The view's own connection to the broker: `None` when connected, else why not.
    pub fn on_bus(&mut self, problem: Option<String>) {
        self.bus = problem;
    }

    /// The simulator's droplets; whether they changed.
    pub fn set_droplets(&mut self, droplets: Vec<DropletMark>) -> bool {
        if self.droplets == droplets {
            return false;
        }
        self.droplets = droplets;
        true
    }

    /// The capacitance readings.
    pub fn samples(&self) -> &Samples {
        &self.samples
    }

    /// The `active-electrodes` list a click on `id` asks for (see [`Chip::toggle`]).
    pub fn click(&self, id: &str) -> Result<Vec<String>, ClickError> {
        let chip = self.chip.as_ref().ok_or(ClickError::NoDevice)?;
        let active = self.requested.as_deref().unwrap_or_default();
        Ok(chip.toggle(active, id)?)
    }

    /// We published `list`: it is the request now, and its echo is expected.
    pub fn published(&mut self, list: Vec<String>) {
        if self.own.len() == OWN_ECHOES {
            self.own.pop_front();
        }
        self.own.push_back(list.clone());
        self.requested = Some(list);
    }

    /// Whether to ask the plugin for a capacitance stream of `wanted` ms now: once per board
    /// connection, when the board's period is known and differs. A user's later change is
    /// left alone until the next connection.
    pub fn stream_put_due(&mut self, wanted: Option<u32>) -> Option<u32> {
        let wanted = wanted?;
        let connected = self
            .states
            .get("status")
            .is_some_and(|s| s["board"] == "connected" && s["bus"] == "online");
        if !connected {
            self.stream_asked = false;
            return None;
        }
        let period = self
            .states
            .get("capacitance-update-interval-ms")
            .and_then(Value::as_u64)?;
        if self.stream_asked {
            return None;
        }
        self.stream_asked = true;
        (period != u64::from(wanted)).then_some(wanted)
    }

    /// Everything but the chip and the capacitance readings, as the page's `live` event.
    pub fn live(&self) -> Value {
        let state = |name: &str| self.states.get(name).cloned().unwrap_or(Value::Null);
        let (actuated, stray) = match &self.chip {
            Some(chip) => chip.electrodes_on(&self.actuated),
            None => (Vec::new(), self.actuated.iter().copied().collect()),
        };
        json!({
            "bus": self.bus,
            "status": state("status"),
            "hv": state("hv-output-enabled"),
            "voltage": state("voltage"),
            "frequency": state("frequency"),
            "chip_inserted": state("chip-inserted"),
            "halted": state("halted"),
            "stream_ms": state("capacitance-update-interval-ms"),
            "measured_voltage": state("measured-voltage"),
            "actuated": actuated,
            "stray_channels": stray,
            "requested": self.requested,
            "droplets": self.droplets,
            "device_problem": self.device_problem,
            "log": self.log,
        })
    }
}

fn id_list(value: Value) -> Result<Vec<String>, String> {
    serde_json::from_value(value).map_err(|_| "expected an array of electrode id strings".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MICRODROP3_DEFAULT_THREE_OBJECT;

    fn with_default_chip() -> Picture {
        let mut p = Picture::new();
        let value: Value = serde_json::from_str(MICRODROP3_DEFAULT_THREE_OBJECT).unwrap();
        p.on_device(Some(Ok(value)));
        p
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn our_own_echoes_do_not_undo_a_newer_click() {
        let mut p = with_default_chip();
        let first = p.click("electrode031").unwrap();
        p.published(first.clone());
        let second = p.click("electrode032").unwrap();
        assert_eq!(second, list(&["electrode031", "electrode032"]));
        p.published(second.clone());
        // The first echo arrives after the second click: the picture keeps the newest.
        p.on_active_electrodes(Ok(json!(first)));
        assert_eq!(p.live()["requested"], json!(second));
        p.on_active_electrodes(Ok(json!(second)));
        assert_eq!(p.live()["requested"], json!(second));
        // Someone else (MicroDrop, a route) wins, and the next click starts from their list.
        p.on_active_electrodes(Ok(json!(["electrode000"])));
        assert_eq!(
            p.click("electrode031").unwrap(),
            list(&["electrode000", "electrode031"])
        );
    }

    #[test]
    fn clicks_need_a_device_and_a_known_electrode() {
        let p = Picture::new();
        assert_eq!(p.click("electrode031"), Err(ClickError::NoDevice));
        let p = with_default_chip();
        assert!(matches!(
            p.click("electrode999"),
            Err(ClickError::Toggle(ToggleError::Unknown(_)))
        ));
    }

    #[test]
    fn actuated_channels_are_shown_as_electrodes() {
        let mut p = with_default_chip();
        let device = crate::device::Device::microdrop3_default().unwrap();
        let first = device.electrodes()[0].channels[0];
        let unused = (0..120).find(|c| !device.channels().contains(c)).unwrap();
        p.on_state("actuated-channels", Ok(json!([first, unused])));
        let live = p.live();
        assert!(
            live["actuated"]
                .as_array()
                .unwrap()
                .contains(&json!("electrode000")),
            "{live}"
        );
        assert_eq!(live["stray_channels"], json!([unused]));
        p.on_state("actuated-channels", Ok(Value::Null));
        assert_eq!(p.live()["actuated"], json!([]));
    }

    #[test]
    fn shown_states_pass_through_and_others_are_ignored() {
        let mut p = Picture::new();
        p.on_state("hv-output-enabled", Ok(json!(true)));
        p.on_state("voltage", Ok(json!(100.0)));
        p.on_state("schema", Ok(json!({"big": "thing"})));
        let live = p.live();
        assert_eq!(live["hv"], json!(true));
        assert_eq!(live["voltage"], json!(100.0));
        assert!(!live.to_string().contains("big"));
    }

    #[test]
    fn bad_payloads_become_log_lines_and_the_log_is_bounded() {
        let mut p = with_default_chip();
        p.on_active_electrodes(Ok(json!({"not": "a list"})));
        p.on_device(Some(Ok(json!("nonsense"))));
        let live = p.live();
        let first = live["log"][0]["text"].as_str().unwrap();
        assert!(first.contains("active-electrodes"), "{live}");
        assert!(live["log"][0]["t"].as_f64().unwrap() > 1.7e12, "{live}");
        assert!(
            live["device_problem"].as_str().unwrap().contains("array"),
            "{live}"
        );
        assert!(p.device_page().is_none());
        for i in 0..100 {
            p.note("signal", &"x".repeat(i * 10));
        }
        let log = p.live()["log"].as_array().unwrap().clone();
        assert_eq!(log.len(), LOG_LINES);
        let longest = log
            .iter()
            .map(|l| l["text"].as_str().unwrap().chars().count())
            .max();
        assert_eq!(longest, Some(LOG_CHARS + 1));
    }

    #[test]
    fn capacitance_readings_go_to_the_trace() {
        let mut p = Picture::new();
        p.on_state(
            "capacitance",
            Ok(json!({"value": 2e-12, "host_time_ms": 1000.0})),
        );
        p.on_state(
            "capacitance",
            Ok(json!({"value": null, "host_time_ms": 1100.0})),
        );
        assert_eq!(p.samples().since(0).0, vec![[1000.0, 2e-12]]);
    }

    #[test]
    fn the_stream_is_asked_for_once_per_connection() {
        let mut p = Picture::new();
        let connected = json!({"bus": "online", "board": "connected"});
        assert_eq!(p.stream_put_due(Some(100)), None, "no status yet");
        p.on_state("status", Ok(connected.clone()));
        assert_eq!(p.stream_put_due(Some(100)), None, "period not known yet");
        p.on_state("capacitance-update-interval-ms", Ok(json!(0)));
        assert_eq!(p.stream_put_due(None), None, "not wanted");
        assert_eq!(p.stream_put_due(Some(100)), Some(100));
        assert_eq!(p.stream_put_due(Some(100)), None, "asked already");
        // The user turns it off: left alone.
        p.on_state("capacitance-update-interval-ms", Ok(json!(0)));
        assert_eq!(p.stream_put_due(Some(100)), None);
        // A new connection asks again, unless the board streams at that period already.
        p.on_state("status", Ok(json!({"bus": "online", "board": "searching"})));
        assert_eq!(p.stream_put_due(Some(100)), None);
        p.on_state("status", Ok(connected));
        assert_eq!(p.stream_put_due(Some(100)), Some(100));
        p.on_state("status", Ok(json!({"bus": "offline", "board": "unknown"})));
        p.stream_put_due(Some(100));
        p.on_state("status", Ok(json!({"bus": "online", "board": "connected"})));
        p.on_state("capacitance-update-interval-ms", Ok(json!(100)));
        assert_eq!(p.stream_put_due(Some(100)), None);
    }
}
