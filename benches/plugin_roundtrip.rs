//! End-to-end round trips through the plugin, beside the round trips they are made of and a
//! MicroDrop 3 plugin that does nothing, on each broker users run (mosquitto with its default
//! configuration, MicroDrop 3's mosca), all measured in the same loop of the same run:
//!
//! - bare MQTT request/reply through the same broker (a tiny rumqttc echo client);
//! - bare pty echo of a board-sized packet;
//! - the floor of the plugin's design: MQTT in, a hand-over to a thread of its own that makes
//!   one or two bare pty round trips itself, MQTT out (what the plugin cannot go below: its
//!   engine owns the board on a thread of its own, and a `put voltage` needs two round trips);
//! - a JavaScript echo plugin written with `@micropede/client` 0.0.39 (MicroDrop's own library,
//!   `tests/interop/node/echo_plugin.js`): `put voltage` -> notify, and `active-electrodes` ->
//!   its `actuated-channels` state, answered without any work;
//! - the plugin: `put voltage` -> notify (MQTT in, one board call, MQTT out), and live
//!   `active-electrodes` -> `actuated-channels`, published once the board confirmed the
//!   channels (MQTT in, board calls, MQTT out);
//! - the plugin, a step-load burst: an `active-electrodes` that changes nothing (so nothing
//!   answers it), from the electrodes model's connection, right before a `put voltage` ->
//!   notify from the measuring one (from one connection the measuring client's own Nagle would
//!   hold the second message for the broker's delayed ACK).
//!
//! Prints hdrhistogram p50/p99/max in microseconds and the bars: the plugin's p50 and p99 no
//! worse than the JavaScript echo plugin's, and within 1.5 x (bare MQTT + bare pty).
//!
//! `cargo bench --bench plugin_roundtrip` (N per row: `PLUGIN_BENCH_N`, default 2000; the
//! simulated board's timing: `PLUGIN_BENCH_TIMING=fast` (default) or `realistic`).

use std::error::Error;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dropbot_plugin::sim::{SimOptions, Timing};
use dropbot_testkit::bench::{echo_pty, echo_pty_blocking, micros, row};
use dropbot_testkit::node::{interop_dir, npm_ci};
use dropbot_testkit::{
    async_client_name, BrokerKind, PluginHarness, PluginOptions, TestClient,
    ACTIVE_ELECTRODES_TOPIC,
};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const WARMUP: usize = 200;
/// A DATA packet of `set_state_of_channels` for 120 channels is 35 bytes on the wire.
const PTY_PACKET: usize = 35;
/// The JavaScript echo plugin's name and the model it follows (not the plugin's, so each
/// request reaches one of them only).
const JS: &str = "js-echo";
const JS_MODEL: &str = "bench-electrodes-model";

/// A client that answers every message on `bench/echo/request` on `bench/echo/reply`.
async fn mqtt_echo(port: u16) -> Result<()> {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("bench-echo", "127.0.0.1", port), 64);
    client
        .subscribe("bench/echo/request", QoS::AtMostOnce)
        .await?;
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ =
                        client.try_publish("bench/echo/reply", QoS::AtMostOnce, false, p.payload);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Ok(())
}

/// The floor of the plugin's design, from bare parts: a client whose poll task hands each
/// message on `bench/floor/request/{trips}` to a thread of its own (as the plugin hands a
/// request to the actuation engine's thread), which makes `trips` round trips through an echo
/// pty with blocking I/O of its own (no reader thread, no simulator: the least a board call
/// costs) and publishes the payload back on `bench/floor/reply` (no retained states first).
async fn floor_echo(port: u16) -> Result<()> {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("bench-floor", "127.0.0.1", port), 64);
    // As the plugin's bus does: a reply written from another thread while the broker's last
    // packet is unacknowledged would wait for its delayed ACK with Nagle on.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    client
        .subscribe("bench/floor/request/+", QoS::AtMostOnce)
        .await?;
    let mut pty = echo_pty_blocking()?;
    let (tx, rx) = std::sync::mpsc::channel::<(usize, bytes::Bytes)>();
    let replies = client.clone();
    std::thread::spawn(move || {
        let packet = [0x5Au8; PTY_PACKET];
        let mut back = [0u8; PTY_PACKET];
        while let Ok((trips, payload)) = rx.recv() {
            for _ in 0..trips {
                if std::io::Write::write_all(&mut pty, &packet)
                    .and_then(|()| std::io::Read::read_exact(&mut pty, &mut back))
                    .is_err()
                {
                    return;
                }
            }
            let _ = replies.try_publish("bench/floor/reply", QoS::AtMostOnce, false, payload);
        }
    });
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let trips = p.topic.rsplit('/').next().and_then(|t| t.parse().ok());
                    if let Some(trips) = trips {
                        let _ = tx.send((trips, p.payload));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    Ok(())
}

/// The JavaScript echo plugin on `port`, once it says it listens.
async fn js_echo(port: u16) -> Result<Child> {
    let dir = interop_dir("node");
    npm_ci(&dir)?;
    let mut child = Command::new("node")
        .arg("echo_plugin.js")
        .args([
            "--port",
            &port.to_string(),
            "--name",
            JS,
            "--model",
            JS_MODEL,
        ])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    if ready.as_deref() != Some("ready") {
        return Err(format!("echo plugin said {ready:?}").into());
    }
    Ok(child)
}

const ROWS: [&str; 9] = [
    "bare MQTT request/reply (echo client)",
    "bare pty echo, 35 B",
    "floor: MQTT -> a thread, 1 pty round trip -> MQTT",
    "floor: MQTT -> a thread, 2 pty round trips -> MQTT",
    "JS echo plugin: put voltage -> notify",
    "JS echo plugin: active-electrodes -> state",
    "plugin: put voltage -> notify",
    "plugin: active-electrodes -> actuated-channels",
    "plugin: unanswered update, then put voltage -> notify",
];
const MQTT: usize = 0;
const PTY: usize = 1;
const FLOOR_1: usize = 2;
const FLOOR_2: usize = 3;
const JS_PUT: usize = 4;
const JS_EL: usize = 5;
const PUT: usize = 6;
const EL: usize = 7;
const BURST: usize = 8;

/// One request published from `observer` (after `before` from another client, if any) and
/// the time until the message on `reply` whose payload contains `expect` comes back (older ones
/// are skipped).
async fn round_trip(
    observer: &mut TestClient,
    before: Option<(&TestClient, &str, Vec<u8>)>,
    request: (&str, Vec<u8>),
    reply: &str,
    expect: &str,
) -> Result<Duration> {
    // Whatever came late from earlier rounds cannot answer this one.
    observer.clear();
    let t = Instant::now();
    if let Some((client, topic, payload)) = before {
        client.publish_raw(topic, payload, false).await?;
    }
    observer.publish_raw(request.0, request.1, false).await?;
    loop {
        let m = observer.next_message(reply).await?;
        if m.payload
            .windows(expect.len())
            .any(|w| w == expect.as_bytes())
        {
            return Ok(t.elapsed());
        }
    }
}

fn put(asker: &str, volts: usize) -> Vec<u8> {
    format!(
        r#"{{"voltage": {volts}, "__head__": {{"plugin_name": "{asker}", "version": "0.0.39"}}}}"#
    )
    .into_bytes()
}

async fn measure(h: &mut PluginHarness, n: usize) -> Result<Vec<Histogram<u64>>> {
    let port = h.broker.port();
    mqtt_echo(port).await?;
    floor_echo(port).await?;
    let _js = js_echo(port).await?;
    let mut pty = echo_pty()?;
    let mut observer = TestClient::connect("127.0.0.1", port).await?;
    observer.set_timeout(Duration::from_secs(10));
    let model = TestClient::connect("127.0.0.1", port).await?;
    let asker = async_client_name();
    let notify = format!("microdrop/dropbot/notify/{asker}/voltage");
    let js_notify = format!("microdrop/{JS}/notify/{asker}/voltage");
    let actuated = h.state_topic("actuated-channels");
    let js_actuated = format!("microdrop/{JS}/state/actuated-channels");
    let js_model = format!("microdrop/{JS_MODEL}/state/active-electrodes");
    for filter in [
        "bench/echo/reply",
        "bench/floor/reply",
        &notify,
        &actuated,
        &js_notify,
        &js_actuated,
    ] {
        observer.subscribe(filter).await?;
    }
    // Auto-HV turns HV on with the first electrodes; every later update only moves channels.
    h.set_active_electrodes(&["electrode031"]).await?;
    h.state_where("actuated-channels", |v| *v == serde_json::json!([36]))
        .await?;
    observer.clear();

    let mut rows = (0..ROWS.len())
        .map(|_| Histogram::<u64>::new_with_bounds(1, 60_000_000, 3))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let packet = [0x5Au8; PTY_PACKET];
    let mut back = [0u8; PTY_PACKET];
    for i in 0..WARMUP + n {
        let mut t = [Duration::ZERO; ROWS.len()];
        let echo = format!(r#"{{"voltage":{i}}}"#);
        let request = ("bench/echo/request", echo.clone().into_bytes());
        t[MQTT] = round_trip(&mut observer, None, request, "bench/echo/reply", &echo).await?;
        t[PTY] = {
            let t = Instant::now();
            pty.write_all(&packet).await?;
            pty.read_exact(&mut back).await?;
            t.elapsed()
        };
        for (row, trips) in [(FLOOR_1, 1), (FLOOR_2, 2)] {
            let request = (
                format!("bench/floor/request/{trips}"),
                echo.clone().into_bytes(),
            );
            let request = (request.0.as_str(), request.1);
            t[row] = round_trip(&mut observer, None, request, "bench/floor/reply", &echo).await?;
        }
        let volts = 100 + (i % 2);
        let answer = format!(r#""response":{volts}"#);
        let request = ("microdrop/put/js-echo/voltage", put(&asker, volts));
        t[JS_PUT] = round_trip(&mut observer, None, request, &js_notify, &answer).await?;
        let (id, channel) = if i % 2 == 0 {
            ("electrode030", "[26]")
        } else {
            ("electrode031", "[36]")
        };
        let ids = format!(r#"["{id}"]"#);
        let request = (js_model.as_str(), ids.clone().into_bytes());
        t[JS_EL] = round_trip(&mut observer, None, request, &js_actuated, &ids).await?;
        let request = ("microdrop/put/dropbot/voltage", put(&asker, volts));
        t[PUT] = round_trip(&mut observer, None, request, &notify, &answer).await?;
        let request = (ACTIVE_ELECTRODES_TOPIC, ids.clone().into_bytes());
        t[EL] = round_trip(&mut observer, None, request, &actuated, channel).await?;
        // The same electrodes again: nothing changes, so the plugin has nothing to publish.
        let same = (&model, ACTIVE_ELECTRODES_TOPIC, ids.into_bytes());
        let volts = 102 + (i % 2);
        let answer = format!(r#""response":{volts}"#);
        let request = ("microdrop/put/dropbot/voltage", put(&asker, volts));
        t[BURST] = round_trip(&mut observer, Some(same), request, &notify, &answer).await?;
        if i >= WARMUP {
            for (histogram, d) in rows.iter_mut().zip(t) {
                histogram.record(micros(d))?;
            }
        }
    }
    Ok(rows)
}

/// Whether `a`'s p50 and p99 are at most `factor` times `b`'s.
fn within(a: &Histogram<u64>, b: [u64; 2], factor: f64) -> (f64, f64, bool) {
    let p50 = a.value_at_quantile(0.5) as f64 / b[0] as f64;
    let p99 = a.value_at_quantile(0.99) as f64 / b[1] as f64;
    (p50, p99, p50 <= factor && p99 <= factor)
}

fn report(kind: BrokerKind, rows: &[Histogram<u64>]) {
    println!("\n### {kind}\n");
    println!("| round trip | n | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    for (name, h) in ROWS.iter().zip(rows) {
        println!("{}", row(name, h));
    }
    let q = |i: usize, q: f64| rows.get(i).map_or(1, |h| h.value_at_quantile(q).max(1));
    let bare = [q(MQTT, 0.5) + q(PTY, 0.5), q(MQTT, 0.99) + q(PTY, 0.99)];
    for (name, plugin, js, floor) in [
        ("put voltage", PUT, JS_PUT, FLOOR_2),
        ("active-electrodes", EL, JS_EL, FLOOR_1),
    ] {
        let Some(p) = rows.get(plugin) else {
            continue;
        };
        let (r50, r99, met) = within(p, [q(js, 0.5), q(js, 0.99)], 1.0);
        let verdict = if met { "met" } else { "MISSED" };
        println!(
            "{kind} {name}: plugin / JS echo plugin: p50 {r50:.2}, p99 {r99:.2} (bar 1: {verdict})"
        );
        let (r50, r99, met) = within(p, bare, 1.5);
        let verdict = if met { "met" } else { "MISSED" };
        println!(
            "{kind} {name}: plugin / (bare MQTT + bare pty): p50 {r50:.2}, p99 {r99:.2} (bar 1.5: {verdict})"
        );
        if let Some(f) = rows.get(floor) {
            let (r50, r99, met) = within(f, bare, 1.5);
            let verdict = if met { "met" } else { "MISSED" };
            println!(
                "{kind} {name}: floor / (bare MQTT + bare pty): p50 {r50:.2}, p99 {r99:.2} (the floor itself, bar 1.5: {verdict})"
            );
            let (r50, r99, _) = within(p, [q(floor, 0.5), q(floor, 0.99)], 1.0);
            println!("{kind} {name}: plugin / floor: p50 {r50:.2}, p99 {r99:.2}");
        }
    }
}

fn main() -> Result<()> {
    let n = std::env::var("PLUGIN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    // The plugin (with its simulated board) runs on threads of its own, as a plugin process
    // would (one runtime worker, as `main` builds it); the measuring clients on others. The
    // JavaScript plugin is a process of its own.
    let runtime = |w: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(w)
            .enable_all()
            .build()
    };
    let timing = match std::env::var("PLUGIN_BENCH_TIMING").as_deref() {
        Ok("realistic") => Timing::Realistic,
        _ => Timing::Fast,
    };
    println!("simulated board timing: {timing:?}");
    let (plugin_side, client_side) = (runtime(1)?, runtime(2)?);
    for kind in BrokerKind::ALL {
        // By default the simulated board answers at once (fast timing): the rows compare what
        // the host costs with the bare pty echo; the real board's own ~5-10 ms are not the
        // plugin's. Realistic timing shows what a user waits for with a real board.
        let defaults = PluginOptions::default();
        let options = PluginOptions {
            broker: kind,
            sim: SimOptions {
                timing,
                ..defaults.sim.clone()
            },
            ..defaults
        };
        let mut h = plugin_side.block_on(PluginHarness::start(options))?;
        let rows = client_side.block_on(measure(&mut h, n))?;
        plugin_side.block_on(h.stop())??;
        report(kind, &rows);
    }
    Ok(())
}
