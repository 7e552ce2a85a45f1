//! The real binary: `run` against a simulator in this process (SIGTERM leaves HV off and the
//! status offline, exit code 0), and `demo` answering a MicroDrop client (on free ports).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{spawn_pty, SimOptions, Timing};
use dropbot_testkit::{Mosquitto, TestClient, ACTIVE_ELECTRODES_TOPIC};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");

/// The binary with `args`, its stderr in `log` (read it when a test fails).
fn spawn(args: &[&str], log: &Path) -> Child {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log file"))
        .spawn()
        .expect("the binary starts")
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

async fn wait_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    panic!(
        "the plugin did not exit; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The plugin binary running against a simulator in this process, with two electrodes
/// actuated and HV on.
struct Running {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    _mosquitto: Mosquitto,
    client: TestClient,
    sim: dropbot_plugin::sim::SimHandle,
    child: Child,
}

async fn running_with_hv_on() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plugin.log");
    let mosquitto = Mosquitto::start().unwrap();
    let mut client = TestClient::connect(mosquitto.host(), mosquitto.port())
        .await
        .unwrap();
    client.set_timeout(Duration::from_secs(10));
    client.publish_default_device().await.unwrap();
    let sim = spawn_pty(SimOptions {
        timing: Timing::Fast,
        device: Some(Device::microdrop3_default().unwrap()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let broker = format!("127.0.0.1:{}", mosquitto.port());
    let port = sim.path().display().to_string();
    let child = spawn(&["run", "--broker", &broker, "--port", &port], &log);

    let status = client
        .wait_retained_where("microdrop/dropbot/state/status", |s| {
            s["board"] == "connected"
        })
        .await;
    assert!(
        status.is_ok(),
        "{status:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    client.subscribe(ACTIVE_ELECTRODES_TOPIC).await.unwrap();
    client
        .publish_raw(
            ACTIVE_ELECTRODES_TOPIC,
            br#"["electrode030","electrode031"]"#.to_vec(),
            false,
        )
        .await
        .unwrap();
    client.next_message(ACTIVE_ELECTRODES_TOPIC).await.unwrap();
    client
        .wait_retained_where("microdrop/dropbot/state/hv-output-enabled", |v| {
            *v == json!(true)
        })
        .await
        .unwrap();
    let snap = sim.snapshot();
    assert!(snap.hv_enabled && snap.actuated.len() == 2, "{snap:?}");

    Running {
        _dir: dir,
        log,
        _mosquitto: mosquitto,
        client,
        sim,
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_binary_leaves_hv_off_on_sigterm() {
    let Running {
        _dir,
        log,
        _mosquitto,
        client,
        sim,
        mut child,
    } = running_with_hv_on().await;
    sigterm(&child);
    let exit = wait_exit(&mut child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.code(), Some(0), "log:\n{text}");
    let snap = sim.snapshot();
    assert!(
        !snap.hv_enabled && !snap.hv_on && snap.actuated.is_empty(),
        "{snap:?}"
    );
    let status = client
        .wait_retained_where("microdrop/dropbot/state/status", |s| s["bus"] == "offline")
        .await;
    assert!(status.is_ok(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sequence_leaves_hv_off_without_a_panic() {
    let Running {
        _dir,
        log,
        _mosquitto,
        client,
        sim,
        mut child,
    } = running_with_hv_on().await;
    let mut runner = TestClient::connect(_mosquitto.host(), _mosquitto.port())
        .await
        .unwrap();
    runner.set_timeout(Duration::from_secs(30));
    let run = tokio::spawn(async move {
        runner
            .trigger("dropbot", "run-sequence", &long_sequence())
            .await
    });
    client
        .wait_retained_where("microdrop/dropbot/state/sequence", |v| {
            v["state"] == "running"
        })
        .await
        .unwrap();
    sigterm(&child);
    let exit = wait_exit(&mut child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit.code(), Some(0), "log:\n{text}");
    assert!(!text.contains("panicked"), "log:\n{text}");
    let snap = sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    // The run's asker got an answer before the plugin left (MicroDrop's step runner waits
    // for one without a timeout).
    let reply = run.await.unwrap().expect("an answer to the run");
    assert_eq!(reply.response["outcome"], "stopped", "{reply:?}");
}

/// A port that was free a moment ago (the demo is started again if someone takes it first).
fn free_port() -> String {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

/// `demo` with its broker on free ports and no live view; a client connected to it.
async fn demo(log: &Path) -> (Child, TestClient) {
    for _ in 0..5 {
        let (mqtt, ws) = (free_port(), free_port());
        let args = [
            "demo",
            "--seconds",
            "60",
            "--mqtt-port",
            &mqtt,
            "--ws-port",
            &ws,
            "--no-view",
        ];
        let mut child = spawn(&args, log);
        let deadline = Instant::now() + Duration::from_secs(20);
        let port: u16 = mqtt.parse().unwrap();
        while Instant::now() < deadline {
            if let Ok(client) = TestClient::connect("127.0.0.1", port).await {
                return (child, client);
            }
            if child.try_wait().unwrap().is_some() {
                break; // the port was taken meanwhile: again, on other ports
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "the demo's broker never answered; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_demo_answers_a_ping() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let (child, mut client) = demo(&log).await;
    client.set_timeout(Duration::from_secs(20));
    // The demo's plugin is up once its retained status says the board is connected.
    let up = client
        .wait_retained_where("microdrop/dropbot/state/status", |s| {
            s["board"] == "connected"
        })
        .await;
    assert!(
        up.is_ok(),
        "{up:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let pong = client.trigger("dropbot", "ping", &json!({})).await.unwrap();
    assert!(pong.is_success(), "{pong:?}");
    assert_eq!(pong.response, json!("pong"));
    let mut child = child;
    sigterm(&child);
    let exit = wait_exit(&mut child, &log).await;
    assert_eq!(
        exit.code(),
        Some(0),
        "log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Kill cycles of the SIGKILL test: 1, or 10 with `DROPBOT_FAULTS_FULL=1` (the fault suite's
/// full form, see docs/reliability.md).
fn kill_cycles() -> usize {
    match std::env::var("DROPBOT_FAULTS_FULL").as_deref() {
        Ok("1") => 10,
        _ => 1,
    }
}

/// A sequence that keeps channels 1 to 3 switching for minutes.
fn long_sequence() -> serde_json::Value {
    let phases: Vec<_> = (1..=3)
        .map(|c| json!({"channels": [c], "duration_ms": 100}))
        .collect();
    json!({"phases": phases, "repeats": 1000})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_leaves_hv_to_the_boards_watchdog_and_its_will() {
    let Running {
        _dir: dir,
        log: _,
        _mosquitto,
        client,
        sim,
        mut child,
    } = running_with_hv_on().await;
    let broker = format!("127.0.0.1:{}", _mosquitto.port());
    for cycle in 0..kill_cycles() {
        if cycle > 0 {
            // HV on by a running sequence this time: the board is switching when killed.
            let mut runner = TestClient::connect(_mosquitto.host(), _mosquitto.port())
                .await
                .unwrap();
            runner.set_timeout(Duration::from_secs(600));
            tokio::spawn(async move {
                let _ = runner
                    .trigger("dropbot", "run-sequence", &long_sequence())
                    .await;
            });
            client
                .wait_retained_where("microdrop/dropbot/state/sequence", |v| {
                    v["state"] == "running"
                })
                .await
                .unwrap();
        }
        assert!(
            sim.snapshot().hv_enabled,
            "cycle {cycle}: {:?}",
            sim.snapshot()
        );
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let status = client
            .wait_retained_where("microdrop/dropbot/state/status", |s| s["bus"] == "offline")
            .await;
        assert!(
            status.is_ok(),
            "the last will did not mark us offline: {status:?}"
        );
        let hv = client
            .retained("microdrop/dropbot/state/hv-output-enabled", Duration::ZERO)
            .await
            .unwrap();
        eprintln!(
            "FIGURE killed plugin: retained hv-output-enabled after the will: {:?}",
            hv.map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        );
        // Nobody refreshes the board's watchdog any more (the plugin turned its automatic
        // refresh off): within its 5 s the board restarts, and a restarted board has HV and
        // channels off.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sim.snapshot().hv_enabled || !sim.snapshot().actuated.is_empty() {
            assert!(std::time::Instant::now() < deadline, "{:?}", sim.snapshot());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let resets = sim
            .trace()
            .iter()
            .filter(|r| {
                matches!(&r.entry, dropbot_plugin::sim::TraceEntry::Reset { cause } if cause.contains("watchdog"))
            })
            .count();
        assert!(
            resets > cycle,
            "HV went off, but not by the board's watchdog"
        );

        // A new plugin on the restarted board (a new USB device, a new path) starts clean: it
        // switches nothing on and its state says so.
        let mut trace = sim.subscribe_trace();
        let port = sim.path().display().to_string();
        let next_log = dir.path().join(format!("plugin-{}.log", cycle + 2));
        child = spawn(&["run", "--broker", &broker, "--port", &port], &next_log);
        let status = client
            .wait_retained_where("microdrop/dropbot/state/status", |s| {
                s["bus"] == "online" && s["board"] == "connected"
            })
            .await;
        assert!(
            status.is_ok(),
            "{status:?}; log:\n{}",
            std::fs::read_to_string(&next_log).unwrap_or_default()
        );
        for (topic, off) in [
            ("hv-output-enabled", json!(false)),
            ("actuated-channels", json!([])),
        ] {
            client
                .wait_retained_where(&format!("microdrop/dropbot/state/{topic}"), |v| *v == off)
                .await
                .unwrap();
        }
        let snap = sim.snapshot();
        assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
        loop {
            let r = match trace.try_recv() {
                Ok(r) => r,
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                Err(e) => panic!("the trace: {e}"),
            };
            let on = match &r.entry {
                dropbot_plugin::sim::TraceEntry::Hv { enabled, .. } => *enabled,
                dropbot_plugin::sim::TraceEntry::Channels { actuated, .. } => !actuated.is_empty(),
                _ => false,
            };
            assert!(
                !on,
                "cycle {cycle}: the new plugin switched on {:?}",
                r.entry
            );
        }
        // Usable: a click switches the electrodes and HV on again.
        client
            .publish_raw(
                ACTIVE_ELECTRODES_TOPIC,
                br#"["electrode030","electrode031"]"#.to_vec(),
                false,
            )
            .await
            .unwrap();
        client
            .wait_retained_where("microdrop/dropbot/state/hv-output-enabled", |v| {
                *v == json!(true)
            })
            .await
            .unwrap();
    }
    // The last plugin is not the test's to leave running (a dropped `Child` keeps running).
    sigterm(&child);
    let _ = child.wait();
}
