//! Sustained capacitance samples through the plugin's readings path: a board streaming at a
//! set rate (faster than any DropBot: its firmware samples every 25 ms) -> the actuation
//! engine (tags) -> the sample task (batches on `capacitance-updated`, the rate-limited
//! retained `capacitance`, a row per sample to an open run record) -> a real mosquitto -> a
//! subscriber in this process that parses every batch.
//!
//! Prints, per offered rate: samples sent, received on the bus and written to the record per
//! second, bus messages per second, CPU time of the whole process (getrusage: engine, sample
//! task, record writer, MQTT client *and* the subscriber) per 1,000 samples, and the latency
//! from a sample's arrival at the host to the subscriber (p50/p99/max, ms).
//!
//! `cargo bench --bench telemetry` (seconds per rate: `TELEMETRY_BENCH_SECONDS`, default 5).

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dropbot_plugin::actuation::{Actuator, EngineOptions};
use dropbot_plugin::bus::BusClient;
use dropbot_plugin::plugin::telemetry::{stream, ReadingsOptions, Telemetry};
use dropbot_testkit::stream_board::StreamBoard;
use dropbot_testkit::Mosquitto;
use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// User plus system CPU time of this process, seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

struct Seen {
    samples: AtomicU64,
    messages: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

/// A subscriber that counts every sample of every batch.
async fn subscriber(port: u16, name: &str, seen: Arc<Seen>) -> Result<AsyncClient> {
    let mut o = MqttOptions::new(format!("bench-sub-{name}"), "127.0.0.1", port);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    client
        .subscribe(
            format!("microdrop/{name}/signal/capacitance-updated"),
            QoS::AtMostOnce,
        )
        .await?;
    let (ready, ok) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    let arrived = now_ms();
                    let samples = v["samples"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                    seen.messages.fetch_add(1, Ordering::Relaxed);
                    seen.samples
                        .fetch_add(samples.len() as u64, Ordering::Relaxed);
                    if let Ok(mut h) = seen.latency_us.lock() {
                        for s in samples {
                            if let Some(t) = s["host_time_ms"].as_f64() {
                                let _ = h.record(((arrived - t).max(0.0) * 1e3) as u64);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ok).await??;
    Ok(client)
}

async fn one_rate(mosquitto: &Mosquitto, rate: u32, seconds: u64) -> Result<String> {
    let name = format!("bench{rate}");
    let runs = tempfile::tempdir()?;
    let bus = BusClient::start(mosquitto.bus_options(&name))?;
    bus.wait_connected(Duration::from_secs(20)).await?;
    let seen = Arc::new(Seen {
        samples: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    let _sub = subscriber(mosquitto.port(), &name, seen.clone()).await?;
    let telemetry = Telemetry::new(
        bus.handle(),
        ReadingsOptions {
            runs_dir: Some(runs.path().to_path_buf()),
            ..ReadingsOptions::default()
        },
    );
    let recorder = telemetry.recorder.clone().ok_or("no recorder")?;
    let record = recorder.open("bench", json!({}))?;
    let (actuator, streams) = Actuator::spawn(EngineOptions {
        realtime: false,
        failsafe: None,
        ..EngineOptions::default()
    })?;
    stream::spawn(telemetry.clone(), streams.samples);
    let board = StreamBoard::new(rate);
    let sent = board.counter();
    let stop = board.stopper();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    // As the plugin does when a board connects: its readings may go from now on.
    telemetry.board_attached();
    actuator.attach(Box::new(board), 1);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Release);
    let streamed = t0.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Acquire);
    // Let the tail drain (bounded).
    let drain = Instant::now();
    while seen.samples.load(Ordering::Relaxed) < sent && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_seconds() - cpu0;
    let summary = recorder.close(record.n, json!({})).await?;
    let received = seen.samples.load(Ordering::Relaxed);
    let rows = summary["rows"].as_u64().unwrap_or(0);
    let messages = seen.messages.load(Ordering::Relaxed);
    let h = seen.latency_us.lock().map_err(|_| "poisoned")?.clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let (engine_dropped, _) = actuator.dropped();
    Ok(format!(
        "| {rate} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {} |",
        sent as f64 / streamed,
        received as f64 / streamed,
        rows as f64 / streamed,
        messages as f64 / streamed,
        cpu * 1e3 / (sent.max(1) as f64 / 1e3),
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1e3,
        sent - received.min(sent) + engine_dropped,
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let seconds: u64 = std::env::var("TELEMETRY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mosquitto = Mosquitto::start()?;
    println!("readings path, {seconds} s per rate (CPU: the whole process, subscriber included)");
    println!("| offered /s | sent /s | on the bus /s | in the record /s | bus messages /s | CPU ms per 1000 | latency p50 / p99 / max ms | lost |");
    println!("|---|---|---|---|---|---|---|---|");
    for rate in [1_000, 5_000, 20_000] {
        println!("{}", one_rate(&mosquitto, rate, seconds).await?);
    }
    Ok(())
}
