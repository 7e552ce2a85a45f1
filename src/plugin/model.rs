//! The plugin's model of the board: what the board confirmed, plus what MicroDrop's models told
//! us (device, active electrodes, voltage and frequency settings). Every retained state topic is
//! derived from here, in one place ([`Model::states`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Value};

use super::properties::{schema, Limits};
use crate::actuation::{Picture, SequenceState};
use crate::board::{BoardInfo, BoardStatus};
use crate::device::Device;

/// Where the board connection stands, as the `status` topic says it.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Looking for the board.
    Searching { detail: Option<String> },
    /// Connected and safe.
    Connected(Arc<BoardInfo>),
    /// Lost; looking again.
    Disconnected { reason: String },
}

pub use crate::actuation::Halt;

/// The model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Our bus name.
    pub name: String,
    /// The board connection.
    pub link: Link,
    /// Ranges from the board's config (defaults when none).
    pub limits: Limits,
    /// Channels the board confirmed actuated.
    pub actuated: BTreeSet<u16>,
    /// HV output as the board took it.
    pub hv_output_enabled: bool,
    /// Voltage the board took, V.
    pub voltage: Option<f32>,
    /// Frequency the board took, Hz.
    pub frequency: Option<f32>,
    /// Capacitance stream period the board took, ms.
    pub capacitance_update_interval_ms: Option<u32>,
    /// Disabled channels as the board reported them.
    pub disabled: BTreeSet<u16>,
    /// Chip interlock, once the board has told us.
    pub chip_inserted: Option<bool>,
    /// The board's target capacitance once the engine set one (farads, 0: none).
    pub capacitance_target: Option<f32>,
    /// Set while the board is halted; cleared when the user resumes.
    pub halted: Option<Halt>,
    /// The latest MicroDrop device.
    pub device: Option<Arc<Device>>,
    /// The latest active-electrodes list (ids) of the electrodes model, live or stored: what
    /// `execute` applies, and what a device change remaps while it is actuated.
    pub active_electrodes: Option<Vec<String>>,
    /// Voltage asked by MicroDrop's models or puts, applied on every (re)connection.
    pub voltage_setting: Option<f32>,
    /// Frequency asked by MicroDrop's models or puts, applied on every (re)connection.
    pub frequency_setting: Option<f32>,
    /// The loaded step's `wait-for-board` (our only per-step property).
    pub wait_for_board: bool,
    /// How long a protocol step holds its electrodes (the electrodes model's `min-duration`).
    pub step_duration: Option<std::time::Duration>,
    /// The sequence the engine runs.
    pub sequence: SequenceState,
    /// Which board connection this describes.
    connection: Option<u64>,
    /// Revision of the newest engine picture taken.
    picture_revision: u64,
    /// The schema for `limits`, made once per change of limits (every update publishes from
    /// the model, so it is read on every request).
    schema: (Limits, Arc<Value>),
    /// `info` as last made, and what it was made from: remade only when that changes (it is
    /// the largest state, and every update compares it with what was published).
    info: RefCell<Option<(InfoInputs, Arc<Value>)>>,
}

/// What the `info` state is made from.
#[derive(Debug, Clone)]
struct InfoInputs {
    board: Option<Arc<BoardInfo>>,
    voltage: Option<f32>,
    frequency: Option<f32>,
    hv_output_enabled: bool,
    capacitance_update_interval_ms: Option<u32>,
    capacitance_target: Option<f32>,
}

impl PartialEq for InfoInputs {
    fn eq(&self, other: &Self) -> bool {
        let same_board = match (&self.board, &other.board) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_board
            && self.voltage == other.voltage
            && self.frequency == other.frequency
            && self.hv_output_enabled == other.hv_output_enabled
            && self.capacitance_update_interval_ms == other.capacitance_update_interval_ms
            && self.capacitance_target == other.capacitance_target
    }
}

impl Model {
    /// A model with no board yet.
    pub fn new(name: &str) -> Self {
        Model {
            name: name.to_owned(),
            link: Link::Searching { detail: None },
            limits: Limits::default(),
            actuated: BTreeSet::new(),
            hv_output_enabled: false,
            voltage: None,
            frequency: None,
            capacitance_update_interval_ms: None,
            disabled: BTreeSet::new(),
            chip_inserted: None,
            capacitance_target: None,
            halted: None,
            device: None,
            active_electrodes: None,
            voltage_setting: None,
            frequency_setting: None,
            wait_for_board: true,
            step_duration: None,
            sequence: SequenceState::Idle,
            connection: None,
            picture_revision: 0,
            schema: (
                Limits::default(),
                Arc::new(schema(name, &Limits::default())),
            ),
            info: RefCell::new(None),
        }
    }

    /// Which connection the model follows (the engine's pictures of others are ignored).
    pub fn connection(&self) -> Option<u64> {
        self.connection
    }

    /// The connected board's info.
    pub fn board(&self) -> Option<&Arc<BoardInfo>> {
        match &self.link {
            Link::Connected(info) => Some(info),
            _ => None,
        }
    }

    /// Follow a supervisor transition (`connection` numbers a new board). A new connection
    /// starts from the safe state the supervisor put the board in; a lost one forgets
    /// everything the board had confirmed. A halt is kept either way (the engine keeps it).
    pub fn on_status(&mut self, status: &BoardStatus, connection: Option<u64>) {
        self.connection = connection;
        self.link = match status {
            BoardStatus::Connected(info) => Link::Connected(info.clone()),
            BoardStatus::Searching { last_error, .. } => Link::Searching {
                detail: last_error.clone(),
            },
            BoardStatus::Disconnected { reason } => Link::Disconnected {
                reason: reason.clone(),
            },
            BoardStatus::Stopped => Link::Disconnected {
                reason: "stopped".into(),
            },
        };
        self.actuated.clear();
        self.hv_output_enabled = false;
        // A halt outlives the link: only the user's `hv-output-enabled: true` clears it.
        self.chip_inserted = None;
        self.capacitance_target = None;
        match self.board().cloned() {
            Some(info) => {
                // Read at connection; the engine's events and monitor keep it from then on.
                self.chip_inserted = info.chip_inserted;
                let state = &info.state_at_connect;
                let config = &info.config;
                self.voltage = Some(state.voltage());
                self.frequency = Some(state.frequency());
                self.capacitance_update_interval_ms = Some(state.capacitance_update_interval_ms());
                self.limits = Limits {
                    min_voltage: 0.0,
                    max_voltage: f64::from(config.max_voltage()),
                    min_frequency: f64::from(config.min_frequency()),
                    max_frequency: f64::from(config.max_frequency()),
                    channel_count: info.channel_count,
                };
                if self.schema.0 != self.limits {
                    self.schema = (self.limits, Arc::new(schema(&self.name, &self.limits)));
                }
            }
            None => {
                self.voltage = None;
                self.frequency = None;
                self.capacitance_update_interval_ms = None;
                self.disabled.clear();
            }
        }
    }

    /// The JSON schema for the current limits.
    pub fn schema(&self) -> Value {
        Value::clone(&self.shared_schema())
    }

    fn shared_schema(&self) -> Arc<Value> {
        if self.schema.0 == self.limits {
            return self.schema.1.clone();
        }
        Arc::new(schema(&self.name, &self.limits))
    }

    /// [`Model::info`], remade only when what it is made from changed.
    fn shared_info(&self) -> Arc<Value> {
        let inputs = InfoInputs {
            board: self.board().cloned(),
            voltage: self.voltage,
            frequency: self.frequency,
            hv_output_enabled: self.hv_output_enabled,
            capacitance_update_interval_ms: self.capacitance_update_interval_ms,
            capacitance_target: self.capacitance_target,
        };
        let mut memo = self.info.borrow_mut();
        match memo.as_ref() {
            Some((made_from, info)) if *made_from == inputs => info.clone(),
            _ => {
                let info = Arc::new(self.info());
                *memo = Some((inputs, info.clone()));
                info
            }
        }
    }

    /// Take the engine's picture of the board (one of another connection, or older than one
    /// taken already, is ignored).
    pub fn on_picture(&mut self, p: &Picture) {
        if p.revision < self.picture_revision {
            return;
        }
        self.picture_revision = p.revision;
        self.halted = p.halted.clone();
        self.sequence = p.sequence.clone();
        if p.connection.is_none() || p.connection != self.connection {
            return;
        }
        self.actuated = p.actuated.clone();
        self.hv_output_enabled = p.hv_output_enabled;
        self.disabled = p.disabled.clone();
        if p.voltage.is_some() {
            self.voltage = p.voltage;
        }
        if p.frequency.is_some() {
            self.frequency = p.frequency;
        }
        if p.capacitance_update_interval_ms.is_some() {
            self.capacitance_update_interval_ms = p.capacitance_update_interval_ms;
        }
        if p.chip_inserted.is_some() {
            self.chip_inserted = p.chip_inserted;
        }
        if p.capacitance_target.is_some() {
            self.capacitance_target = p.capacitance_target;
        }
    }

    /// Remember a voltage and/or frequency as MicroDrop's settings (applied again on every
    /// reconnection).
    pub fn remember_settings(&mut self, voltage: Option<f32>, frequency: Option<f32>) {
        if voltage.is_some() {
            self.voltage_setting = voltage;
        }
        if frequency.is_some() {
            self.frequency_setting = frequency;
        }
    }

    /// The `status` value.
    pub fn status(&self) -> Value {
        let (board, detail) = match &self.link {
            Link::Connected(_) => match &self.halted {
                Some(h) => ("halted", Some(h.reason.clone())),
                None => ("connected", None),
            },
            Link::Searching { detail } => ("searching", detail.clone()),
            Link::Disconnected { reason } => ("disconnected", Some(reason.clone())),
        };
        let info = self.board();
        json!({
            "bus": "online",
            "board": board,
            "detail": detail,
            "port": info.and_then(|i| i.port.clone()),
            "firmware": info.map(|i| i.identity.clone()),
            "uuid": info.map(|i| i.uuid.clone()),
            "channel_count": info.map(|i| i.channel_count),
        })
    }

    /// The flat `info` object of the 2018 plugin: config, state and identity.
    pub fn info(&self) -> Value {
        let Some(info) = self.board() else {
            return Value::Null;
        };
        let c = &info.config;
        let s = &info.state_at_connect;
        let b = &info.build;
        json!({
            "voltage": self.voltage,
            "frequency": self.frequency,
            "hv_output_enabled": self.hv_output_enabled,
            "hv_output_selected": s.hv_output_selected(),
            "channel_count": info.channel_count,
            "capacitance_update_interval_ms": self.capacitance_update_interval_ms,
            "target_capacitance": self.capacitance_target.unwrap_or(s.target_capacitance()),
            // The engine sets one sample when it sets a target.
            "target_count": match self.capacitance_target {
                Some(_) => 1.0,
                None => s.target_count(),
            },
            // The plugin sets its own mask when the engine takes the board.
            "event_mask": super::service::EVENT_MASK,
            "output_current_limit": s.output_current_limit(),
            "chip_load_range_margin": s.chip_load_range_margin(),
            "halt_on_chip_load_saturated": s.halt_on_chip_load_saturated(),
            "max_voltage": c.max_voltage(),
            "min_frequency": c.min_frequency(),
            "max_frequency": c.max_frequency(),
            "i2c_address": c.i2c_address(),
            "switching_board_i2c_address": c.switching_board_i2c_address(),
            "R7": c.r7(),
            "pot_max": c.pot_max(),
            "C16": c.c16(),
            "capacitance_n_samples": c.capacitance_n_samples(),
            "watchdog_enabled": c.watchdog_enabled(),
            "id": c.id(),
            "software_version": info.software_version,
            "hardware_version": info.hardware_version,
            // The firmware's descriptive properties, as MicroDrop's DropBot panel lists them,
            // read at connection (null where the board did not answer; the handshake names
            // the package).
            "base_node_software_version": b.base_node_software_version,
            "package_name": b.package_name.as_deref().or(info.identity.split("::").next()),
            "display_name": b.display_name,
            "manufacturer": b.manufacturer,
            "url": b.url,
            "firmware": info.identity,
            "uuid": info.uuid,
            "port": info.port,
        })
    }

    /// Every retained state topic (property -> value) derived from the model. `voltage` and
    /// `frequency` are never null (MicroDrop's step loader would write a null into the loaded
    /// step): with no board they say the last setting, and with none known they are left out,
    /// so the broker keeps the last value published.
    /// `info` and `schema` are shared with the previous call while unchanged (compared by
    /// pointer first, they cost nothing to compare).
    pub fn states(&self) -> BTreeMap<&'static str, Arc<Value>> {
        let connected = self.board().is_some();
        let when = |v: Value| if connected { v } else { Value::Null };
        let setting = |board: Option<f32>, setting: Option<f32>| {
            let value = if connected { board } else { setting };
            value.map(|v| json!(v))
        };
        let mut states: BTreeMap<&'static str, Arc<Value>> = [
            ("status", self.status()),
            ("actuated-channels", when(json!(self.actuated))),
            // The `channels` property as the editors read it: what is on (nothing without a board).
            ("channels", json!(self.actuated)),
            ("hv-output-enabled", when(json!(self.hv_output_enabled))),
            (
                "capacitance-update-interval-ms",
                when(json!(self.capacitance_update_interval_ms)),
            ),
            ("disabled-channels", when(json!(self.disabled))),
            ("chip-inserted", when(json!(self.chip_inserted))),
            (
                "halted",
                self.halted.as_ref().map_or(Value::Null, |h| json!(h)),
            ),
            ("sequence", json!(self.sequence)),
        ]
        .into_iter()
        .map(|(property, value)| (property, Arc::new(value)))
        .collect();
        states.insert("info", self.shared_info());
        states.insert("schema", self.shared_schema());
        if let Some(v) = setting(self.voltage, self.voltage_setting) {
            states.insert("voltage", Arc::new(v));
        }
        if let Some(f) = setting(self.frequency, self.frequency_setting) {
            states.insert("frequency", Arc::new(f));
        }
        states
    }
}

/// The retained status the broker publishes for us if we vanish (our last will), and the one
/// we publish on the way out.
pub fn offline_status() -> Value {
    json!({"bus": "offline", "board": "unknown"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voltage_and_frequency_are_never_null() {
        let mut m = Model::new("dropbot");
        // Nothing known: left out, so the broker keeps the last value published.
        let states = m.states();
        assert!(!states.contains_key("voltage") && !states.contains_key("frequency"));
        // No board: the last setting.
        m.remember_settings(Some(120.0), Some(5000.0));
        let states = m.states();
        assert_eq!(*states["voltage"], json!(120.0));
        assert_eq!(*states["frequency"], json!(5000.0));
        // The editors read `state/channels`: nothing is on without a board.
        assert_eq!(*states["channels"], json!([]));
    }

    fn board_info(chip_inserted: Option<bool>) -> BoardInfo {
        BoardInfo {
            identity: "dropbot::1.74.3".into(),
            firmware_version: "1.74.3".into(),
            software_version: "1.74.3".into(),
            hardware_version: "3.1".into(),
            uuid: "uuid".into(),
            channel_count: 120,
            build: crate::board::BuildInfo {
                manufacturer: Some("Sci-Bots Inc.".into()),
                ..Default::default()
            },
            supply_voltage: Some(7.0),
            no_power: false,
            chip_inserted,
            clock_set_at_ms: None,
            connect_warnings: Vec::new(),
            config: Default::default(),
            state_at_connect: Default::default(),
            port: None,
        }
    }

    #[test]
    fn info_and_schema_are_remade_only_when_what_they_say_changed() {
        let mut m = Model::new("dropbot");
        m.on_status(&BoardStatus::Connected(Arc::new(board_info(None))), Some(1));
        let (a, b) = (m.states(), m.states());
        assert!(Arc::ptr_eq(&a["info"], &b["info"]));
        assert!(Arc::ptr_eq(&a["schema"], &b["schema"]));
        m.voltage = Some(120.0);
        let c = m.states();
        assert!(!Arc::ptr_eq(&b["info"], &c["info"]));
        assert_eq!(c["info"]["voltage"], json!(120.0));
        // Another board with the same content is another board.
        m.on_status(&BoardStatus::Connected(Arc::new(board_info(None))), Some(2));
        m.voltage = Some(120.0);
        assert!(!Arc::ptr_eq(&c["info"], &m.states()["info"]));
    }

    #[test]
    fn a_connection_describes_what_was_read_at_connect_until_the_engine_says_more() {
        let mut m = Model::new("dropbot");
        m.on_status(
            &BoardStatus::Connected(Arc::new(board_info(Some(true)))),
            Some(1),
        );
        let states = m.states();
        // The interlock read at connection, before any event or monitor tick.
        assert_eq!(*states["chip-inserted"], json!(true));
        assert_eq!(states["info"]["manufacturer"], json!("Sci-Bots Inc."));
        assert_eq!(states["info"]["package_name"], json!("dropbot"));
        assert_eq!(states["info"]["target_capacitance"], json!(0.0));
        // A feedback phase set a target: info says what the board holds now.
        m.on_picture(&Picture {
            connection: Some(1),
            revision: 1,
            capacitance_target: Some(2e-12),
            ..Picture::default()
        });
        assert_eq!(m.states()["info"]["target_capacitance"], json!(2e-12_f32));
        assert_eq!(m.states()["info"]["target_count"], json!(1.0));
        // A lost board forgets both.
        m.on_status(
            &BoardStatus::Disconnected {
                reason: "unplugged".into(),
            },
            None,
        );
        assert_eq!(*m.states()["chip-inserted"], Value::Null);
    }
}
