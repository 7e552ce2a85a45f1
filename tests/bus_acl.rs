//! The documented mosquitto access rules (`docs/mosquitto.acl`) against a real mosquitto, with
//! the real binary logged in as its plugin name: the plugin works (requests, state, the step
//! loader's per-step state, its wills), nobody else can write its state or send it requests
//! the rules do not allow, anonymous clients are refused, and its password is in no log line.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{spawn_pty, SimOptions, Timing};
use dropbot_testkit::{Mosquitto, TestClient};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");
const ACL: &str = include_str!("../docs/mosquitto.acl");
const PLUGIN_PASSWORD: &str = "pl4gin-Secret-9137";
const WAIT: Duration = Duration::from_secs(20);
const HV: &str = "microdrop/dropbot/state/hv-output-enabled";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Publishes `topic` from `from`, then an allowed message from the same connection that
/// `observer` waits for: mosquitto handles a connection's packets in order, so the first one
/// has been handled (stored, or refused) by then.
async fn publish_then_barrier(
    from: &TestClient,
    observer: &mut TestClient,
    topic: &str,
    own: &str,
) {
    from.publish_raw(topic, b"false".to_vec(), true)
        .await
        .unwrap();
    let marker = json!(uuid_like());
    from.publish(own, &marker, false).await.unwrap();
    loop {
        let m = observer.next_message(own).await.unwrap();
        if m.value().unwrap() == marker {
            return;
        }
    }
}

fn uuid_like() -> String {
    format!("{:?}", Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_acl_lets_the_plugin_work_and_nobody_else_write_its_topics() {
    // The test's own observer is MicroDrop's account plus its subscription markers.
    let acl = ACL.replace(
        "user microdrop\n",
        "user microdrop\ntopic readwrite dropbot-test-sync/#\n",
    );
    let users = [
        ("dropbot", PLUGIN_PASSWORD),
        ("other-plugin", "other-pw"),
        ("microdrop", "microdrop-pw"),
    ];
    let broker = tokio::task::spawn_blocking(move || Mosquitto::start_with_access(&users, &acl))
        .await
        .unwrap()
        .unwrap();
    let (host, port) = (broker.host(), broker.port());
    let mut ui = TestClient::connect_as(host, port, "microdrop", "microdrop-pw")
        .await
        .unwrap();
    ui.set_timeout(WAIT);
    ui.publish_default_device().await.unwrap();
    assert!(
        TestClient::connect(host, port).await.is_err(),
        "an anonymous client got in"
    );

    let sim = spawn_pty(SimOptions {
        timing: Timing::Fast,
        device: Some(Device::microdrop3_default().unwrap()),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("plugin.log");
    let child = Command::new(BINARY)
        .args([
            "run",
            "--broker",
            &format!("{host}:{port}"),
            "--username",
            "dropbot",
        ])
        .arg("--port")
        .arg(sim.path())
        .env("DROPBOT_BROKER__PASSWORD", PLUGIN_PASSWORD)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut plugin = Killed(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let connected = ui
        .wait_retained_where("microdrop/dropbot/state/status", |s| {
            s["board"] == "connected"
        })
        .await;
    assert!(
        connected.is_ok(),
        "{connected:?}\n{}\n{}",
        log(),
        broker.log()
    );

    // The plugin works: a request from MicroDrop, its state, the step loader's write.
    let reply = ui.put("dropbot", "channels", &json!([3])).await.unwrap();
    assert!(reply.is_success(), "{reply:?}");
    ui.wait_retained_where(HV, |v| *v == json!(true))
        .await
        .unwrap();
    ui.publish_raw(
        "microdrop/dropbot/state/wait-for-board",
        b"false".to_vec(),
        true,
    )
    .await
    .unwrap();
    let execute = ui.trigger("dropbot", "execute", &json!({})).await.unwrap();
    assert!(execute.is_success(), "{execute:?}");
    assert_eq!(execute.response["applied"], json!("pending"), "{execute:?}");

    // MicroDrop's account cannot write the plugin's energy state...
    let barrier = "microdrop/step-ui/state/barrier";
    let mut observer = TestClient::connect_as(host, port, "microdrop", "microdrop-pw")
        .await
        .unwrap();
    observer.set_timeout(WAIT);
    observer.subscribe(barrier).await.unwrap();
    publish_then_barrier(&ui, &mut observer, HV, barrier).await;
    assert_eq!(ui.wait_retained(HV).await.unwrap(), json!(true));
    // ... nor can another plugin write it, or send it a request.
    let other = TestClient::connect_as(host, port, "other-plugin", "other-pw")
        .await
        .unwrap();
    let own = "microdrop/other-plugin/state/barrier";
    observer.subscribe(own).await.unwrap();
    publish_then_barrier(&other, &mut observer, HV, own).await;
    let put = json!({"hv-output-enabled": false, "__head__": {"plugin_name": "other-plugin"}});
    other
        .publish("microdrop/put/dropbot/hv-output-enabled", &put, false)
        .await
        .unwrap();
    publish_then_barrier(
        &other,
        &mut observer,
        "microdrop/dropbot/state/channels",
        own,
    )
    .await;
    assert_eq!(ui.wait_retained(HV).await.unwrap(), json!(true));
    assert!(sim.snapshot().hv_enabled, "{:?}", sim.snapshot());
    assert_eq!(sim.snapshot().actuated, vec![3]);

    // The wills are allowed too: killed, the plugin leaves nothing saying HV is on.
    plugin.0.kill().unwrap();
    let _ = plugin.0.wait();
    let gone = ui.wait_retained_where(HV, Value::is_null).await;
    assert!(gone.is_ok(), "{gone:?}\n{}", broker.log());
    ui.wait_retained_where("microdrop/dropbot/state/status", |s| s["bus"] == "offline")
        .await
        .unwrap();

    // Nothing logged the password, at the most verbose level; and no foreign value ever
    // reached a guarded state (the plugin would have put its own back, and said so).
    let text = log();
    assert!(
        !text.contains("putting it back"),
        "a write got through: {text}"
    );
    assert!(text.contains("connected to the MQTT broker"), "{text}");
    assert!(
        !text.contains(PLUGIN_PASSWORD),
        "the password is in the log"
    );
    let deadline = Instant::now() + WAIT;
    while sim.snapshot().hv_enabled {
        assert!(
            Instant::now() < deadline,
            "the board's failsafe did not trip"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
