//! End-to-end round trips through the plugin, beside the bare round trips they are made of,
//! all measured in the same run and the same loop (so they see the same machine load):
//!
//! - bare MQTT request/reply through the same mosquitto (a tiny echo client);
//! - bare pty echo of a board-sized packet;
//! - `put voltage` -> notify reply (MQTT in, one board call, MQTT out);
//! - live `active-electrodes` state -> the plugin's `actuated-channels` state, published once
//!   the board confirmed the channels (MQTT in, board calls, MQTT out).
//!
//! Prints hdrhistogram p50/p99/max in microseconds and the ratio to the bar: end-to-end p99
//! <= 1.5 x (bare MQTT p99 + bare pty p99).
//!
//! `cargo bench --bench plugin_roundtrip` (N per row: `PLUGIN_BENCH_N`, default 2000).

use std::error::Error;
use std::time::{Duration, Instant};

use dropbot_plugin::testkit::bench::{echo_pty, micros, row};
use dropbot_plugin::testkit::{
    async_client_name, PluginHarness, PluginOptions, TestClient, ACTIVE_ELECTRODES_TOPIC,
};
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const WARMUP: usize = 200;
/// A DATA packet of `set_state_of_channels` for 120 channels is 35 bytes on the wire.
const PTY_PACKET: usize = 35;

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

/// The four rows of the table.
struct Rows {
    mqtt: Histogram<u64>,
    pty: Histogram<u64>,
    put: Histogram<u64>,
    electrodes: Histogram<u64>,
}

/// One request published from `observer` and the time until the message on `reply` whose
/// payload contains `expect` comes back (older ones met on the way are skipped).
async fn round_trip(
    observer: &mut TestClient,
    topic: &str,
    payload: Vec<u8>,
    reply: &str,
    expect: &str,
) -> Result<Duration> {
    let t = Instant::now();
    observer.publish_raw(topic, payload, false).await?;
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

async fn measure(n: usize) -> Result<Rows> {
    let mut h = PluginHarness::start(PluginOptions::default()).await?;
    let port = h.broker.port();
    mqtt_echo(port).await?;
    let mut pty = echo_pty()?;
    let mut observer = TestClient::connect("127.0.0.1", port).await?;
    let asker = async_client_name();
    let notify = format!("microdrop/dropbot/notify/{asker}/voltage");
    let actuated = h.state_topic("actuated-channels");
    for filter in ["bench/echo/reply", notify.as_str(), actuated.as_str()] {
        observer.subscribe(filter).await?;
    }
    observer.clear();
    // Auto-HV turns HV on with the first electrodes; every later update only moves channels.
    h.set_active_electrodes(&["electrode031"]).await?;
    h.state_where("actuated-channels", |v| *v == serde_json::json!([36]))
        .await?;
    observer.clear();

    let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    let mut rows = Rows {
        mqtt: new()?,
        pty: new()?,
        put: new()?,
        electrodes: new()?,
    };
    let packet = [0x5Au8; PTY_PACKET];
    let mut back = [0u8; PTY_PACKET];
    for i in 0..WARMUP + n {
        let keep = i >= WARMUP;
        let echo = format!(r#"{{"voltage":{i}}}"#);
        let t = round_trip(
            &mut observer,
            "bench/echo/request",
            echo.clone().into_bytes(),
            "bench/echo/reply",
            &echo,
        )
        .await?;
        let t_pty = {
            let t = Instant::now();
            pty.write_all(&packet).await?;
            pty.read_exact(&mut back).await?;
            t.elapsed()
        };
        let volts = 100 + (i % 2);
        let put = format!(
            r#"{{"voltage": {volts}, "__head__": {{"plugin_name": "{asker}", "version": "0.0.39"}}}}"#
        );
        let answer = format!(r#""response":{volts}"#);
        let t_put = round_trip(
            &mut observer,
            "microdrop/put/dropbot/voltage",
            put.into_bytes(),
            &notify,
            &answer,
        )
        .await?;
        let (id, channel) = if i % 2 == 0 {
            ("electrode030", "[26]")
        } else {
            ("electrode031", "[36]")
        };
        let ids = format!(r#"["{id}"]"#).into_bytes();
        let t_el = round_trip(
            &mut observer,
            ACTIVE_ELECTRODES_TOPIC,
            ids,
            &actuated,
            channel,
        )
        .await?;
        if keep {
            rows.mqtt.record(micros(t))?;
            rows.pty.record(micros(t_pty))?;
            rows.put.record(micros(t_put))?;
            rows.electrodes.record(micros(t_el))?;
        }
    }
    h.stop().await??;
    Ok(rows)
}

fn main() -> Result<()> {
    let n = std::env::var("PLUGIN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = runtime.block_on(measure(n))?;
    println!("| round trip | n | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        row(
            "bare MQTT request/reply (mosquitto, echo client)",
            &rows.mqtt
        )
    );
    println!("{}", row("bare pty echo, 35 B", &rows.pty));
    println!("{}", row("put voltage -> notify", &rows.put));
    println!(
        "{}",
        row("active-electrodes -> actuated-channels", &rows.electrodes)
    );
    let bare = rows.mqtt.value_at_quantile(0.99) + rows.pty.value_at_quantile(0.99);
    for (name, h) in [
        ("put voltage", &rows.put),
        ("active-electrodes", &rows.electrodes),
    ] {
        let ratio = h.value_at_quantile(0.99) as f64 / bare as f64;
        let verdict = if ratio <= 1.5 { "met" } else { "MISSED" };
        println!("{name}: p99 / (bare MQTT p99 + bare pty p99) = {ratio:.2} (bar 1.5: {verdict})");
    }
    Ok(())
}
