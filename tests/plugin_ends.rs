//! Truthful retained state at every end, with the real binary, on mosquitto and on MicroDrop's
//! mosca: after SIGKILL with HV on (the wills), after SIGTERM (the clean exit), after the board
//! is lost and after it restarted (as when its watchdog fires), no retained topic says HV is on
//! or channels are actuated.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{spawn_at_link, SimHandle, SimOptions, Timing};
use dropbot_testkit::{BrokerKind, TestBroker, TestClient, ACTIVE_ELECTRODES_TOPIC};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");

/// The plugin binary on a private broker of one kind, with a simulated board behind a link
/// that follows replugs.
struct Plugin {
    kind: BrokerKind,
    dir: tempfile::TempDir,
    _broker: TestBroker,
    client: TestClient,
    sim: SimHandle,
    child: Child,
}

impl Plugin {
    async fn start(kind: BrokerKind) -> Plugin {
        let dir = tempfile::tempdir().unwrap();
        let broker = tokio::task::spawn_blocking(move || TestBroker::start(kind))
            .await
            .unwrap()
            .unwrap();
        let mut client = TestClient::connect(broker.host(), broker.port())
            .await
            .unwrap();
        client.set_timeout(Duration::from_secs(20));
        client.publish_default_device().await.unwrap();
        let link = dir.path().join("dropbot");
        let options = SimOptions {
            timing: Timing::Fast,
            device: Some(Device::microdrop3_default().unwrap()),
            ..SimOptions::default()
        };
        let sim = spawn_at_link(options, &link).await.unwrap();
        let broker_addr = format!("127.0.0.1:{}", broker.port());
        let log = File::create(dir.path().join("plugin.log")).unwrap();
        let child = Command::new(BINARY)
            .args(["run", "--broker", &broker_addr, "--port"])
            .arg(&link)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let plugin = Plugin {
            kind,
            dir,
            _broker: broker,
            client,
            sim,
            child,
        };
        let status = plugin
            .state_where("status", |s| s["board"] == "connected")
            .await;
        assert!(status.is_ok(), "{kind}: {status:?}\n{}", plugin.log());
        plugin
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("plugin.log")
    }

    async fn state_where(
        &self,
        property: &str,
        accept: impl FnMut(&Value) -> bool,
    ) -> Result<Value, dropbot_testkit::TestError> {
        let topic = format!("microdrop/dropbot/state/{property}");
        self.client.wait_retained_where(&topic, accept).await
    }

    /// Two electrodes on with HV (a live click, as MicroDrop's UI sends it), confirmed by the
    /// board and by every retained topic that says so.
    async fn energise(&mut self) {
        self.client
            .subscribe(ACTIVE_ELECTRODES_TOPIC)
            .await
            .unwrap();
        let click = br#"["electrode030","electrode031"]"#.to_vec();
        self.client
            .publish_raw(ACTIVE_ELECTRODES_TOPIC, click, false)
            .await
            .unwrap();
        self.client
            .next_message(ACTIVE_ELECTRODES_TOPIC)
            .await
            .unwrap();
        for (property, on) in [
            ("hv-output-enabled", json!(true)),
            ("info", json!(true)),
            ("actuated-channels", json!(2)),
            ("channels", json!(2)),
        ] {
            let seen = self
                .state_where(property, |v| match property {
                    "info" => v["hv_output_enabled"] == on,
                    "hv-output-enabled" => *v == on,
                    _ => v.as_array().map(Vec::len) == on.as_u64().map(|n| n as usize),
                })
                .await;
            assert!(seen.is_ok(), "{property}: {seen:?}\n{}", self.log());
        }
        let snap = self.sim.snapshot();
        assert!(snap.hv_enabled && snap.actuated.len() == 2, "{snap:?}");
        // A health reading of the board with HV on (the monitor reads it every second).
        let reading = self.state_where("measured-voltage", Value::is_object).await;
        assert!(reading.is_ok(), "{reading:?}\n{}", self.log());
    }

    /// No retained reading describes a board that is gone (not guarded by a will: a crash
    /// leaves the last reading, with its time).
    async fn no_readings(&self) {
        let seen = self.state_where("measured-voltage", Value::is_null).await;
        assert!(seen.is_ok(), "{}: {seen:?}\n{}", self.kind, self.log());
    }

    /// Every retained topic that could say something is on says nothing is, and `status`
    /// says `bus` (online or offline) and `board`.
    async fn nothing_on(&self, bus: &str, board: &[&str]) {
        type Check = fn(&Value) -> bool;
        let checks: [(&str, Check); 5] = [
            ("hv-output-enabled", Value::is_null),
            ("actuated-channels", Value::is_null),
            ("channels", |v| *v == json!([])),
            ("info", Value::is_null),
            ("sequence", |v| v["state"] == "idle"),
        ];
        for (property, ok) in checks {
            let seen = self.state_where(property, ok).await;
            assert!(
                seen.is_ok(),
                "{}: {property}: {seen:?}\n{}",
                self.kind,
                self.log()
            );
        }
        let status = self
            .state_where("status", |s| {
                s["bus"] == bus && board.iter().any(|b| s["board"] == *b)
            })
            .await;
        assert!(status.is_ok(), "status: {status:?}\n{}", self.log());
    }

    /// A run record started by hand, and the retained state that says so.
    async fn start_recording(&self) {
        let label = json!({"label": "ends"});
        let reply = self.client.trigger("dropbot", "start-recording", &label);
        let reply = reply.await.unwrap();
        assert!(reply.is_success(), "{reply:?}\n{}", self.log());
        self.recording(true).await;
    }

    async fn recording(&self, on: bool) {
        let seen = self
            .state_where("recording", |v| v["recording"] == on)
            .await;
        assert!(seen.is_ok(), "{}: {seen:?}\n{}", self.kind, self.log());
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_hv_on_leaves_no_retained_topic_saying_it_is_on() {
    for kind in BrokerKind::ALL {
        let mut plugin = Plugin::start(kind).await;
        plugin.energise().await;
        plugin.child.kill().unwrap();
        plugin.wait_exit().await;
        // The wills: `status` on the main connection, the rest on one connection each.
        plugin.nothing_on("offline", &["unknown"]).await;
        // And the board itself goes off: nobody refreshes its watchdog any more.
        let deadline = Instant::now() + Duration::from_secs(30);
        while plugin.sim.snapshot().hv_enabled {
            assert!(Instant::now() < deadline, "{:?}", plugin.sim.snapshot());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_hv_on_ends_with_the_same_state_as_a_crash() {
    for kind in BrokerKind::ALL {
        let mut plugin = Plugin::start(kind).await;
        plugin.energise().await;
        plugin.start_recording().await;
        let pid = i32::try_from(plugin.child.id()).unwrap();
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let exit = plugin.wait_exit().await;
        assert_eq!(exit.code(), Some(0), "{kind}:\n{}", plugin.log());
        let snap = plugin.sim.snapshot();
        assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
        plugin.nothing_on("offline", &["unknown"]).await;
        plugin.no_readings().await;
        // The record ended with the process.
        plugin.recording(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_restarted_board_leaves_no_retained_topic_saying_it_is_on() {
    for kind in BrokerKind::ALL {
        let mut plugin = Plugin::start(kind).await;
        plugin.energise().await;
        plugin.start_recording().await;
        plugin.sim.unplug().await;
        plugin
            .nothing_on("online", &["disconnected", "searching"])
            .await;
        plugin.no_readings().await;
        // The board's readings are gone, the record (started by hand) goes on.
        plugin.recording(true).await;
        // Unplugged while energised, the board lost power: it comes back halted, and only a
        // user's "HV on" resumes.
        plugin.sim.replug().await.unwrap();
        plugin
            .state_where("status", |s| s["board"] == "halted")
            .await
            .unwrap();
        let resume = plugin
            .client
            .put("dropbot", "hv-output-enabled", &json!(true))
            .await
            .unwrap();
        assert!(resume.is_success(), "{resume:?}");
        plugin.energise().await;
        // As when the board's watchdog fires: it restarts with everything off.
        plugin.sim.reboot().await.unwrap();
        let halted = plugin
            .state_where("status", |s| s["board"] == "halted")
            .await;
        assert!(halted.is_ok(), "{kind}: {halted:?}\n{}", plugin.log());
        assert_eq!(
            plugin.state_where("hv-output-enabled", |_| true).await.ok(),
            Some(json!(false))
        );
        assert_eq!(
            plugin.state_where("actuated-channels", |_| true).await.ok(),
            Some(json!([]))
        );
    }
}
