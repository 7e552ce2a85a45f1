//! The real binary: `run` against a simulator in this process (SIGTERM leaves HV off and the
//! status offline, exit code 0), and `demo` answering a MicroDrop client (on free ports).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dropbot_plugin::device::{Device, MICRODROP3_DEFAULT_THREE_OBJECT};
use dropbot_plugin::sim::{spawn_pty, SimOptions, Timing};
use dropbot_testkit::{Mosquitto, TestClient, ACTIVE_ELECTRODES_TOPIC, DEVICE_TOPIC};
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
    client
        .publish_raw(
            DEVICE_TOPIC,
            MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec(),
            true,
        )
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_leaves_hv_to_the_boards_watchdog_and_its_will() {
    let Running {
        _dir,
        _mosquitto,
        client,
        sim,
        mut child,
        ..
    } = running_with_hv_on().await;
    assert!(sim.snapshot().hv_enabled);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let status = client
        .wait_retained_where("microdrop/dropbot/state/status", |s| s["bus"] == "offline")
        .await;
    assert!(
        status.is_ok(),
        "the last will did not mark us offline: {status:?}"
    );
    // Nobody refreshes the board's watchdog any more (the plugin turned its automatic refresh
    // off): within its 5 s the board restarts, and a restarted board has HV and channels off.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.snapshot().hv_enabled || !sim.snapshot().actuated.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", sim.snapshot());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reset = sim.trace().iter().any(|r| {
        matches!(&r.entry, dropbot_plugin::sim::TraceEntry::Reset { cause } if cause.contains("watchdog"))
    });
    assert!(reset, "HV went off, but not by the board's watchdog");
}
