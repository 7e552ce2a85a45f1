//! [`World`]: a private broker (a child process), a simulated DropBot on a pty in this process
//! (realistic timing, MicroDrop 3's default chip, linked at a path that follows replugs), and
//! the plugin binary as its own process (`run --port <link>`), so its memory, threads and
//! descriptors can be read from `/proc` and it can be killed like a user's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{spawn_at_link, SimHandle, SimOptions, Timing};
use dropbot_testkit::{BrokerKind, Reply, TestBroker, TestClient, DEVICE_TOPIC};
use serde_json::Value;

use super::{proc_stats, until, ProcStats};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");

/// The plugin's bus name in a [`World`].
pub const NAME: &str = "dropbot";

/// The plugin binary running as a child process; killed on drop.
pub struct PluginProcess {
    child: Child,
    log: PathBuf,
}

impl PluginProcess {
    /// `dropbot-plugin run --broker 127.0.0.1:<port> --port <board>` plus `extra`, its stderr
    /// in `log`.
    pub fn spawn(broker_port: u16, board: &Path, log: &Path, extra: &[&str]) -> PluginProcess {
        let broker = format!("127.0.0.1:{broker_port}");
        let board = board.display().to_string();
        let mut args = vec!["run", "--broker", &broker, "--port", &board, "--name", NAME];
        args.extend_from_slice(extra);
        let stderr = File::create(log).expect("a log file in the test's directory");
        let child = Command::new(BINARY)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the plugin binary starts");
        PluginProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Memory, threads and descriptors now (panics if the process is gone: a crash).
    pub fn stats(&mut self) -> ProcStats {
        self.assert_running();
        proc_stats(self.pid()).expect("the plugin's /proc entry")
    }

    /// Panics, with its log, if the process has ended.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the plugin ended ({status}); log:\n{}", self.log_tail());
        }
    }

    /// The last 8 KiB of its log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    /// Its log lines that contain none of `skip` (for failure messages).
    pub fn log_without(&self, skip: &[&str]) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !skip.iter().any(|s| l.contains(s)))
            .collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Lines of its log containing `pattern`.
    pub fn log_count(&self, pattern: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains(pattern)).count()
    }

    /// Size of its log so far, bytes.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }

    /// Sends `signal` (SIGTERM, SIGKILL, ...).
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.pid()).expect("a pid fits in i32");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its `Child`).
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits (up to `timeout`) for the process to end; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        until("the plugin to exit", timeout, || {
            child.try_wait().expect("waitpid on our child")
        })
        .await
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a [`World`] is made.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// The broker users run: mosquitto (default configuration) or MicroDrop's mosca.
    pub broker: BrokerKind,
    /// The simulated board (`device: None` means MicroDrop 3's default chip).
    pub sim: SimOptions,
    /// More arguments of `run`.
    pub args: Vec<String>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            broker: BrokerKind::Mosquitto,
            sim: SimOptions {
                timing: Timing::Realistic,
                ..SimOptions::default()
            },
            args: Vec::new(),
        }
    }
}

/// Broker, board and the plugin process; see the module docs.
pub struct World {
    /// The broker (kill and restart it to make it fail).
    pub broker: TestBroker,
    /// A MicroDrop-like client of the broker (waits 30 s).
    pub client: TestClient,
    /// The simulated board.
    pub sim: SimHandle,
    /// The plugin process.
    pub plugin: PluginProcess,
    args: Vec<String>,
    link: PathBuf,
    dir: tempfile::TempDir,
    plugins_started: usize,
}

impl World {
    /// Starts everything and waits until the plugin says the board is connected.
    pub async fn start(options: WorldOptions) -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let broker = TestBroker::start(options.broker).expect("a private broker");
        let mut client = TestClient::connect(broker.host(), broker.port())
            .await
            .expect("a client of the broker");
        client.set_timeout(Duration::from_secs(30));
        // MicroDrop is running: its device model is retained before the plugin starts.
        client
            .publish_default_device()
            .await
            .expect("publish the device");
        client.wait_retained(DEVICE_TOPIC).await.expect("retained");
        let mut sim_options = options.sim;
        if sim_options.device.is_none() {
            sim_options.device = Some(Device::microdrop3_default().expect("the default chip"));
        }
        let link = dir.path().join("dropbot");
        let sim = spawn_at_link(sim_options, &link)
            .await
            .expect("a simulated board");
        let args = options.args;
        let plugin = spawn_plugin(&broker, &link, dir.path(), 1, &args);
        let world = World {
            broker,
            client,
            sim,
            plugin,
            args,
            link,
            dir,
            plugins_started: 1,
        };
        world.wait_board("connected").await;
        world
    }

    /// Starts a new plugin process in place of the old one (which must have ended or be
    /// killed by dropping it here).
    pub fn respawn_plugin(&mut self) {
        self.plugins_started += 1;
        self.plugin = spawn_plugin(
            &self.broker,
            &self.link,
            self.dir.path(),
            self.plugins_started,
            &self.args,
        );
    }

    /// `microdrop/dropbot/state/<property>`.
    pub fn state_topic(&self, property: &str) -> String {
        format!("microdrop/{NAME}/state/{property}")
    }

    /// Waits (30 s) for a retained `state/<property>` accepted by `accept`.
    pub async fn state_where(&self, property: &str, accept: impl FnMut(&Value) -> bool) -> Value {
        let topic = self.state_topic(property);
        match self.client.wait_retained_where(&topic, accept).await {
            Ok(v) => v,
            Err(e) => panic!("{e}; plugin log:\n{}", self.plugin.log_tail()),
        }
    }

    /// Waits (30 s) until the retained status says `board`; the status.
    pub async fn wait_board(&self, board: &str) -> Value {
        self.state_where("status", |s| s["board"] == board).await
    }

    /// A put as MicroDrop's client sends it; the reply (panics on a timeout).
    pub async fn put(&self, property: &str, value: Value) -> Reply {
        match self.client.put(NAME, property, &value).await {
            Ok(r) => r,
            Err(e) => panic!(
                "put {property}: {e}; plugin log:\n{}",
                self.plugin.log_tail()
            ),
        }
    }

    /// A trigger as MicroDrop's client sends it; the reply (panics on a timeout).
    pub async fn trigger(&self, action: &str, value: Value) -> Reply {
        match self.client.trigger(NAME, action, &value).await {
            Ok(r) => r,
            Err(e) => panic!(
                "trigger {action}: {e}; plugin log:\n{}",
                self.plugin.log_without(&["request failed", "fuzz/"])
            ),
        }
    }
}

fn spawn_plugin(
    broker: &TestBroker,
    link: &Path,
    dir: &Path,
    n: usize,
    args: &[String],
) -> PluginProcess {
    let log = dir.join(format!("plugin-{n}.log"));
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    PluginProcess::spawn(broker.port(), link, &log, &extra)
}
