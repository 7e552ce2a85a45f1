//! [`PluginHarness`]: the whole plugin on real parts for end-to-end tests and benchmarks: a
//! private broker (mosquitto with its defaults, or MicroDrop's mosca), a simulated DropBot on a
//! pty (realistic timing, a real firmware id, MicroDrop 3's default device, a trace file; the
//! plugin opens it through a symlink that follows replugs), and
//! [`plugin::run`](dropbot_plugin::plugin::run) in a task with a shutdown switch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use firmware_protocol::commands::{SaveConfig, UpdateConfig};
use firmware_protocol::{Config, TableSet};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::sim_host::SimHost;
use super::{BrokerKind, Reply, TestBroker, TestClient, TestError};
use dropbot_plugin::board::{
    DiscoveryError, PortInfo, PortLister, Probe, Selector, SupervisorOptions,
};
use dropbot_plugin::bus::BusOptions;
use dropbot_plugin::device::{Device, MICRODROP3_DEFAULT_THREE_OBJECT};
use dropbot_plugin::plugin::{self, Behaviour, PluginError};
use dropbot_plugin::sim::{spawn_at_link, SimHandle, SimOptions, Timing};

/// Topic of MicroDrop's device model.
pub const DEVICE_TOPIC: &str = "microdrop/device-model/state/three-object";
/// Topic of MicroDrop's electrodes model (live updates actuate).
pub const ACTIVE_ELECTRODES_TOPIC: &str = "microdrop/electrodes-model/state/active-electrodes";

/// How the harness is set up.
#[derive(Debug, Clone)]
pub struct PluginOptions {
    /// The plugin's bus name.
    pub name: String,
    /// The plugin's behaviour settings.
    pub behaviour: Behaviour,
    /// The simulated board; `device: None` means MicroDrop 3's default device, and a trace
    /// file is added if none is set.
    pub sim: SimOptions,
    /// Retained messages (topic, payload) published before the plugin starts, as when
    /// MicroDrop is already running; by default MicroDrop 3's default device on
    /// [`DEVICE_TOPIC`].
    pub retained: Vec<(String, Vec<u8>)>,
    /// Configuration written to the board (and saved) before the plugin connects, e.g.
    /// other voltage and frequency limits.
    pub board_config: Option<Config>,
    /// The broker to run on.
    pub broker: BrokerKind,
    /// Changes to the plugin's bus options (the broker's address is set already).
    pub bus: fn(&mut BusOptions),
}

impl Default for PluginOptions {
    fn default() -> Self {
        PluginOptions {
            name: "dropbot".into(),
            behaviour: Behaviour::default(),
            sim: SimOptions {
                timing: Timing::Realistic,
                ..SimOptions::default()
            },
            retained: vec![(
                DEVICE_TOPIC.to_owned(),
                MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec(),
            )],
            board_config: None,
            broker: BrokerKind::default(),
            bus: |_| {},
        }
    }
}

/// No USB ports: the harness names the pty by path.
struct NoPorts;

impl PortLister for NoPorts {
    fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
        Ok(Vec::new())
    }
}

/// The plugin running against a private broker and a simulated board.
pub struct PluginHarness {
    /// A MicroDrop-like client on the broker.
    pub client: TestClient,
    /// The simulated board.
    pub sim: SimHandle,
    /// The broker (kill and restart it for resilience tests).
    pub broker: TestBroker,
    /// The plugin's bus name.
    pub name: String,
    trace: PathBuf,
    link: PathBuf,
    behaviour: Behaviour,
    bus: fn(&mut BusOptions),
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<PluginTask>,
    _dir: tempfile::TempDir,
}

impl PluginHarness {
    /// Starts broker, board and plugin, and waits (up to 10 s) until the plugin's retained
    /// status says the board is connected.
    pub async fn start(options: PluginOptions) -> Result<PluginHarness, TestError> {
        let dir = tempfile::Builder::new()
            .prefix("dropbot-plugin-")
            .tempdir()?;
        let broker = TestBroker::start(options.broker)?;
        let mut client = TestClient::connect(broker.host(), broker.port()).await?;
        for (topic, payload) in options.retained {
            client.publish_raw(&topic, payload, true).await?;
            // The broker must hold it before the plugin subscribes.
            client.wait_retained(&topic).await?;
        }
        let mut sim_options = options.sim;
        if sim_options.device.is_none() {
            sim_options.device = Some(Device::microdrop3_default().map_err(sim_error)?);
        }
        let trace = sim_options
            .trace
            .get_or_insert_with(|| dir.path().join("trace.jsonl"))
            .clone();
        // The plugin opens a link that follows replugs, as udev's by-id names do.
        let link = dir.path().join("dropbot");
        let sim = spawn_at_link(sim_options, &link).await.map_err(sim_error)?;
        if let Some(config) = options.board_config {
            configure(&sim.path(), config).await?;
        }

        let (shutdown, task) = spawn_plugin(
            &broker,
            &options.name,
            &link,
            &options.behaviour,
            options.bus,
        );
        let harness = PluginHarness {
            client: {
                client.set_timeout(Duration::from_secs(10));
                client
            },
            sim,
            broker,
            name: options.name,
            trace,
            link,
            behaviour: options.behaviour,
            bus: options.bus,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        };
        harness.wait_board("connected").await?;
        Ok(harness)
    }

    /// Stops the plugin (as `exit` or SIGTERM would: HV and channels off, retained status
    /// offline) and starts it again on the same broker and board; waits (up to 10 s) until the
    /// new one says the board is connected.
    pub async fn restart_plugin(&mut self) -> Result<(), TestError> {
        self.stop()
            .await?
            .map_err(|e| TestError::Mqtt(format!("plugin: {e}")))?;
        let (shutdown, task) = spawn_plugin(
            &self.broker,
            &self.name,
            &self.link,
            &self.behaviour,
            self.bus,
        );
        self.shutdown = Some(shutdown);
        self.task = Some(task);
        self.wait_board("connected").await.map(drop)
    }

    /// The text of the next `microdrop/<name>/error/<topic>` message (the client must be
    /// subscribed to it).
    pub async fn next_error(&mut self, topic: &str) -> Result<String, TestError> {
        let topic = self.topic("error", topic);
        let message = self.client.next_message(&topic).await?;
        Ok(message.value()?["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// `microdrop/<name>/state/<property>`.
    pub fn state_topic(&self, property: &str) -> String {
        format!("microdrop/{}/state/{property}", self.name)
    }

    /// `microdrop/<name>/<kind>/<topic>`, e.g. `signal/halted` or `error/voltage`.
    pub fn topic(&self, kind: &str, topic: &str) -> String {
        format!("microdrop/{}/{kind}/{topic}", self.name)
    }

    /// Waits until the retained status says `board` (`connected`, `halted`, ...); returns it.
    pub async fn wait_board(&self, board: &str) -> Result<Value, TestError> {
        self.client
            .wait_retained_where(&self.state_topic("status"), |s| s["board"] == board)
            .await
    }

    /// A put to the plugin as MicroDrop's client sends it; the notify reply.
    pub async fn put(&self, property: &str, value: Value) -> Result<Reply, TestError> {
        self.client.put(&self.name, property, &value).await
    }

    /// A trigger to the plugin as MicroDrop's client sends it; the notify reply.
    pub async fn trigger(&self, action: &str, value: Value) -> Result<Reply, TestError> {
        self.client.trigger(&self.name, action, &value).await
    }

    /// The retained value of our `state/<property>` once it satisfies `accept` (up to 10 s).
    pub async fn state_where(
        &self,
        property: &str,
        accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value, TestError> {
        self.client
            .wait_retained_where(&self.state_topic(property), accept)
            .await
    }

    /// Publishes a live (not retained) `active-electrodes` state, a bare array of ids, and
    /// waits until the broker has passed it on (see [`PluginHarness::publish_seen`]).
    pub async fn set_active_electrodes(&mut self, ids: &[&str]) -> Result<(), TestError> {
        let payload = serde_json::to_vec(ids)?;
        self.publish_seen(ACTIVE_ELECTRODES_TOPIC, payload, false)
            .await
    }

    /// Publishes from the observing client and waits until it comes back to it: the broker
    /// has then handed it to every subscriber, so a request sent afterwards (from another
    /// connection) reaches the plugin after it.
    pub async fn publish_seen(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), TestError> {
        self.client.subscribe(topic).await?;
        self.client
            .publish_raw(topic, payload.clone(), retain)
            .await?;
        loop {
            let m = self.client.next_message(topic).await?;
            if !m.retain && m.payload == payload {
                return Ok(());
            }
        }
    }

    /// The simulator's trace file (JSON lines).
    pub fn trace_path(&self) -> &Path {
        &self.trace
    }

    /// Whether the plugin task has ended (e.g. after the `exit` trigger).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits up to `timeout` for the plugin to end by itself; its outcome.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Result<Result<(), PluginError>, TestError> {
        let Some(task) = self.task.as_mut() else {
            return Err(TestError::Timeout(
                "a plugin that was already collected".into(),
            ));
        };
        let joined = tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| TestError::Timeout("the plugin to exit".into()))?;
        self.task = None;
        joined.map_err(|e| TestError::Io(std::io::Error::other(format!("plugin task: {e}"))))
    }

    /// Asks the plugin to shut down and waits (up to 10 s) for its outcome.
    pub async fn stop(&mut self) -> Result<Result<(), PluginError>, TestError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.wait_exit(Duration::from_secs(10)).await
    }
}

impl Drop for PluginHarness {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

type PluginTask = JoinHandle<Result<(), PluginError>>;

/// The plugin on `broker` with the board at `link`, in a task; its shutdown switch.
fn spawn_plugin(
    broker: &TestBroker,
    name: &str,
    link: &Path,
    behaviour: &Behaviour,
    tune: fn(&mut BusOptions),
) -> (oneshot::Sender<()>, PluginTask) {
    let probe = Probe::new(Arc::new(TableSet::builtin()));
    let selector = Selector::Path(link.display().to_string());
    let supervisor = SupervisorOptions::new(selector, Arc::new(NoPorts), probe);
    let mut bus = broker.bus_options(name);
    tune(&mut bus);
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(plugin::run(bus, supervisor, behaviour.clone(), async {
        let _ = stop.await;
    }));
    (shutdown, task)
}

/// Writes and saves `config` on the board at `path` (through the real open path).
async fn configure(path: &Path, config: Config) -> Result<(), TestError> {
    let mut host = SimHost::open(path).await.map_err(sim_error)?;
    let accepted = host
        .call(UpdateConfig {
            serialized: config.to_bytes(),
        })
        .await
        .map_err(sim_error)?;
    if accepted == 0 {
        return Err(sim_error("the board refused the configuration"));
    }
    host.call(SaveConfig {}).await.map_err(sim_error)?;
    Ok(())
}

fn sim_error(e: impl std::fmt::Display) -> TestError {
    TestError::Io(std::io::Error::other(format!("simulator: {e}")))
}
