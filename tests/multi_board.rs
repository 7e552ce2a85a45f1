//! Two boards on one broker: two plugin processes (one configured by a file, one by flags),
//! each with its own name and its own simulated board, side by side on mosquitto and on
//! MicroDrop's mosca. Requests to one never reach the other's board, and each one's state
//! topics stay its own.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::{spawn_pty, SimHandle, SimOptions, Timing};
use dropbot_testkit::{BrokerKind, TestBroker, TestClient};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_dropbot-plugin");

struct Plugin {
    child: Child,
    sim: SimHandle,
    name: &'static str,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sim() -> SimHandle {
    spawn_pty(SimOptions {
        timing: Timing::Fast,
        device: Some(Device::microdrop3_default().unwrap()),
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

fn spawn(args: &[&str], log: &Path) -> Child {
    Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("DROPBOT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn state(name: &str, property: &str) -> String {
    format!("microdrop/{name}/state/{property}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plugins_with_two_boards_on_one_broker_do_not_cross_talk() {
    for kind in BrokerKind::ALL {
        let broker = tokio::task::spawn_blocking(move || TestBroker::start(kind))
            .await
            .unwrap()
            .unwrap();
        let address = format!("127.0.0.1:{}", broker.port());
        let mut ui = TestClient::connect(broker.host(), broker.port())
            .await
            .unwrap();
        ui.set_timeout(Duration::from_secs(20));
        ui.publish_default_device().await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let sim_a = sim().await;
        let config = dir.path().join("left.toml");
        let text = format!(
            "name = \"dropbot-left\"\n[broker]\naddress = \"{address}\"\n[board]\nport = \"{}\"\n",
            sim_a.path().display()
        );
        std::fs::write(&config, text).unwrap();
        let left = Plugin {
            child: spawn(
                &["run", "--config", &config.display().to_string()],
                &dir.path().join("left.log"),
            ),
            sim: sim_a,
            name: "dropbot-left",
        };
        let sim_b = sim().await;
        let port_b = sim_b.path().display().to_string();
        let right = Plugin {
            child: spawn(
                &[
                    "run",
                    "--broker",
                    &address,
                    "--name",
                    "dropbot-right",
                    "--port",
                    &port_b,
                ],
                &dir.path().join("right.log"),
            ),
            sim: sim_b,
            name: "dropbot-right",
        };
        for p in [&left, &right] {
            let up = ui
                .wait_retained_where(&state(p.name, "status"), |s| s["board"] == "connected")
                .await;
            let log = std::fs::read_to_string(
                dir.path()
                    .join(format!("{}.log", p.name.trim_start_matches("dropbot-"))),
            );
            assert!(up.is_ok(), "{kind} {}: {up:?}\n{log:?}", p.name);
        }

        // A request to the left one reaches its board only.
        let reply = ui.put(left.name, "channels", &json!([3, 4])).await.unwrap();
        assert!(reply.is_success(), "{kind}: {reply:?}");
        assert_eq!(left.sim.snapshot().actuated, vec![3, 4], "{kind}");
        ui.wait_retained_where(&state(left.name, "hv-output-enabled"), |v| {
            *v == json!(true)
        })
        .await
        .unwrap();
        // The right one answers a later request, so it has seen everything before it.
        let ping = ui.trigger(right.name, "ping", &json!({})).await.unwrap();
        assert!(ping.is_success(), "{kind}: {ping:?}");
        let snap = right.sim.snapshot();
        assert!(
            snap.actuated.is_empty() && !snap.hv_enabled,
            "{kind}: {snap:?}"
        );
        let hv = ui
            .wait_retained(&state(right.name, "hv-output-enabled"))
            .await
            .unwrap();
        assert_eq!(hv, json!(false), "{kind}");

        // Halting the right one leaves the left one as it was.
        let halt = ui.trigger(right.name, "halt", &json!({})).await.unwrap();
        assert!(halt.is_success(), "{kind}: {halt:?}");
        ui.wait_retained_where(&state(right.name, "status"), |s| s["board"] == "halted")
            .await
            .unwrap();
        let voltage = ui.put(left.name, "voltage", &json!(90)).await.unwrap();
        assert!(voltage.is_success(), "{kind}: {voltage:?}");
        let left_status = ui.wait_retained(&state(left.name, "status")).await.unwrap();
        assert_eq!(left_status["board"], json!("connected"), "{kind}");
        assert_eq!(left.sim.snapshot().actuated, vec![3, 4], "{kind}");
        assert!(left.sim.snapshot().hv_enabled, "{kind}");
        assert_eq!(left.sim.snapshot().voltage_target, 90.0, "{kind}");
        assert_eq!(right.sim.snapshot().voltage_target, 100.0, "{kind}");

        // Each lists only its own endpoints, and each one's status names its own board.
        for (p, other) in [(&left, &right), (&right, &left)] {
            let subs = ui
                .trigger(p.name, "get-subscriptions", &json!({}))
                .await
                .unwrap();
            let topics: Vec<String> = subs
                .response
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                topics.iter().any(|t| t.contains(&format!("/{}/", p.name))),
                "{kind}: {topics:?}"
            );
            assert!(
                !topics
                    .iter()
                    .any(|t| t.contains(&format!("/{}/", other.name))),
                "{kind}: {topics:?}"
            );
            let status = ui.wait_retained(&state(p.name, "status")).await.unwrap();
            assert_eq!(
                status["port"],
                json!(p.sim.path().display().to_string()),
                "{kind}"
            );
        }
    }
}
