//! The soak: the plugin binary as its own process, 100 electrode updates a second from a
//! MicroDrop-like client, and every 30 s a round of faults: 1% of the board's bytes corrupted
//! (and some dropped), slow replies, a stalled board, an unplug and replug (the board comes back
//! halted and the user resumes), a broker crash and restart. Sampled every second: resident
//! memory, threads and open descriptors (`/proc/<pid>`). At the end the plugin must answer,
//! apply a click truthfully, and hold no more descriptors than at the start.
//!
//! Short form (CI): one 30 s round. Full form (`DROPBOT_FAULTS_FULL=1`): 10 minutes, or
//! `DROPBOT_SOAK_SECS` seconds.

mod faults_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::Faults;
use dropbot_testkit::{TestClient, ACTIVE_ELECTRODES_TOPIC};
use faults_support::mqtt::Publisher;
use faults_support::world::{World, WorldOptions, NAME};
use faults_support::{figure, scale, until_async, ProcStats};
use serde_json::json;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

const PERIOD: u64 = 30;
const WAIT: Duration = Duration::from_secs(30);
/// Memory the plugin may gain over the soak, KiB.
const MAX_GROWTH_KB: u64 = 16 * 1024;

fn soak_seconds() -> u64 {
    std::env::var("DROPBOT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(scale(PERIOD as usize, 600) as u64)
}

/// 100 `active-electrodes` states a second (pairs of neighbouring electrodes in turn), until
/// aborted; the count sent.
fn updates(
    publisher: Publisher,
    ids: Vec<String>,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for i in 0.. {
            tick.tick().await;
            let pair = [&ids[i % ids.len()], &ids[(i + 1) % ids.len()]];
            let payload = serde_json::to_vec(&pair).unwrap_or_default();
            publisher.publish(ACTIVE_ELECTRODES_TOPIC, payload).await;
            sent.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Pings from a fresh connection until the plugin answers; how long it took.
async fn ping(world: &World) -> Duration {
    let t = Instant::now();
    let (host, port) = (world.broker.host(), world.broker.port());
    until_async("a pong", WAIT, || async {
        let mut c = TestClient::connect(host, port).await.ok()?;
        c.set_timeout(Duration::from_secs(5));
        let pong = c.trigger(NAME, "ping", &json!({})).await.ok()?;
        (pong.response == json!("pong")).then_some(())
    })
    .await;
    t.elapsed()
}

/// Resumes if the board came back halted (as a user would after an unplug). The status read
/// right after a replug may still be the one from before it (the plugin finds the old link
/// gone a moment later): a resume answered "the link ... is gone" is tried again, as a user
/// would, once the status has moved on; anything else is a failure.
async fn resume_if_halted(world: &World) {
    for attempt in 0..5 {
        let status = world
            .state_where("status", |s| {
                s["board"] == "connected" || s["board"] == "halted"
            })
            .await;
        if status["board"] != "halted" {
            return;
        }
        let resume = world.put("hv-output-enabled", json!(true)).await;
        if resume.is_success() {
            return;
        }
        let text = resume.response.as_str().unwrap_or_default();
        assert!(
            attempt < 4 && (text.contains("gone") || text.contains("no DropBot")),
            "{resume:?}"
        );
        eprintln!("resume after the replug, attempt {attempt}: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One second of the fault round.
async fn fault_step(world: &mut World, second: u64) {
    let set = |faults: Faults| world.sim.set_faults(faults);
    match second % PERIOD {
        5 => set(Faults {
            corrupt_fraction: 0.01,
            drop_fraction: 0.002,
            ..Faults::default()
        }),
        12 => set(Faults {
            reply_delay: Duration::from_millis(30),
            ..Faults::default()
        }),
        17 => set(Faults {
            stall: true,
            ..Faults::default()
        }),
        10 | 15 | 18 => set(Faults::default()),
        20 => world.sim.unplug().await,
        21 => {
            world.sim.replug().await.expect("replug");
            resume_if_halted(world).await;
        }
        25 => world.broker.kill().expect("kill the broker"),
        26 => {
            world.broker.restart().expect("restart the broker");
            ping(world).await;
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_faults_at_100_updates_a_second() {
    let seconds = soak_seconds();
    let mut world = World::start(WorldOptions::default()).await;
    let stream = world
        .put("capacitance-update-interval-ms", json!(100))
        .await;
    assert!(stream.is_success(), "{stream:?}");
    let device = Device::microdrop3_default().expect("the default chip");
    let ids: Vec<String> = device.electrodes().iter().map(|e| e.id.clone()).collect();
    let sent = Arc::new(AtomicU64::new(0));
    let publisher = Publisher::connect("faults-soak", world.broker.port()).await;
    let feeder = updates(publisher, ids, sent.clone());
    let start = world.plugin.stats();
    let mut peak = start;
    let mut slowest_ping = Duration::ZERO;
    let t0 = Instant::now();
    for second in 0..seconds {
        sleep_until(t0 + Duration::from_secs(second)).await;
        fault_step(&mut world, second).await;
        let now = world.plugin.stats();
        peak = ProcStats {
            rss_kb: peak.rss_kb.max(now.rss_kb),
            peak_kb: now.peak_kb,
            threads: peak.threads.max(now.threads),
            fds: peak.fds.max(now.fds),
        };
        if second % 5 == 4 {
            slowest_ping = slowest_ping.max(ping(&world).await);
        }
    }
    feeder.abort();
    world.sim.set_faults(Faults::default());
    resume_if_halted(&world).await;
    // The last word is a user's click: applied, and the state says what the board does.
    let click = serde_json::to_vec(&["electrode030"]).expect("JSON");
    world
        .client
        .publish_raw(ACTIVE_ELECTRODES_TOPIC, click, false)
        .await
        .expect("publish");
    world
        .state_where("actuated-channels", |v| *v == json!([26]))
        .await;
    assert_eq!(world.sim.snapshot().actuated, vec![26]);
    let end = world.plugin.stats();
    figure(
        "soak",
        format!(
            "{seconds} s, {} electrode updates; plugin RSS start {} KiB, peak {} KiB, end {} KiB; \
             threads {} -> {} (max {}); descriptors {} -> {} (max {}); slowest ping {:.1?}",
            sent.load(Ordering::Relaxed),
            start.rss_kb,
            end.peak_kb,
            end.rss_kb,
            start.threads,
            end.threads,
            peak.threads,
            start.fds,
            end.fds,
            peak.fds,
            slowest_ping,
        ),
    );
    let log = world.plugin.log_tail();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        end.fds <= start.fds,
        "descriptors leaked: {start:?} -> {end:?}"
    );
    assert!(
        end.threads <= start.threads,
        "threads: {start:?} -> {end:?}"
    );
    assert!(
        end.rss_kb <= start.rss_kb + MAX_GROWTH_KB,
        "memory grew: {start:?} -> {end:?}"
    );
}
