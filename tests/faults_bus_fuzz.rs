//! Generated bad MQTT payloads against every topic the plugin listens to (each put, each
//! trigger, each subscribed state topic), published as fast as mosquitto takes them, at the
//! plugin binary running as its own process next to a simulated board. After each round the
//! plugin must answer a `ping` and a valid `put voltage` (checked on the board); at the end it
//! must still run, have logged no panic, and hold its memory, threads and descriptors within
//! bounds.
//!
//! Short form (CI): 2 rounds of 10,000. Full form (`DROPBOT_FAULTS_FULL=1`): 10 rounds of
//! 100,000. Figures are printed as `FIGURE` lines (`-- --nocapture`).

mod faults_support;

use std::time::{Duration, Instant};

use dropbot_plugin::plugin::routes;
use dropbot_testkit::{BrokerKind, Reply};
use faults_support::mqtt::{Counter, Publisher};
use faults_support::payloads::{oversized, Payloads, ASKER, OVERSIZED_EVERY};
use faults_support::world::{World, WorldOptions, NAME};
use faults_support::{figure, scale};
use serde_json::{json, Value};

/// Resident memory the plugin may reach under the flood, KiB. Its idle size is about 10 MB;
/// this bounds what a flood of bad input can make it hold.
const MAX_RSS_KB: u64 = 64 * 1024;

/// Every topic the plugin subscribes to, from its own routing table.
fn topics() -> Vec<String> {
    routes::router(NAME)
        .expect("the plugin's routes")
        .filters()
        .into_iter()
        .filter(|f| !f.contains(['+', '#']))
        .collect()
}

/// Triggers that act on the board and ignore their value: every readable payload is a valid
/// request to them.
fn takes_any_value(topic: &str) -> bool {
    let action = topic.strip_prefix(&format!("microdrop/trigger/{NAME}/"));
    action.is_some_and(|a| {
        [
            "exit",
            "halt",
            "all-off",
            "stop",
            "pause",
            "resume",
            "measure-capacitance",
            "measure-voltage",
            "execute",
        ]
        .contains(&a)
    }) || topic == "microdrop/trigger/routes-model/stop"
}

/// Whether `payload` to `topic` could be a valid request that keeps the board busy for seconds
/// (conservative: some invalid ones are counted in).
fn maybe_long(topic: &str, payload: &Value) -> bool {
    let Some(action) = topic.strip_prefix(&format!("microdrop/trigger/{NAME}/")) else {
        return false;
    };
    // The trigger's value as the plugin reads it: `__head__` removed, a lone `data` unwrapped.
    let mut value = payload.clone();
    if let Value::Object(map) = &mut value {
        map.remove("__head__");
        if map.len() == 1 {
            if let Some(data) = map.remove("data") {
                value = data;
            }
        }
    }
    let only = |keys: &[&str]| match &value {
        Value::Null => true,
        Value::Object(m) => m.keys().all(|k| keys.contains(&k.as_str())),
        _ => false,
    };
    match action {
        "detect-shorts" => only(&["delay_ms"]),
        "scan-capacitances" => only(&["channels"]),
        "run-sequence" => value.get("phases").is_some(),
        "run-routes" => value.is_array() || value.get("routes").is_some(),
        _ => false,
    }
}

/// How long a ping after a round waits for its answer, and how often it is asked.
const PING_WAIT: Duration = Duration::from_secs(5);
const PING_TRIES: usize = 12;

/// A "busy, try again" answer.
fn is_busy(reply: &Reply) -> bool {
    reply.status == "failed"
        && reply
            .response
            .as_str()
            .is_some_and(|r| r.starts_with("busy"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_payloads_on_every_endpoint_leave_the_plugin_answering() {
    let rounds = scale(2, 10);
    let per_round = scale(10_000, 100_000);
    let mut world = World::start(WorldOptions::default()).await;
    let port = world.broker.port();
    let topics = topics();
    assert!(topics.len() >= 30, "{topics:?}");
    let replies = format!("microdrop/{NAME}/notify/{ASKER}/#");
    let errors = format!("microdrop/{NAME}/error/#");
    let counter = Counter::start("faults-counter", port, &[&replies, &errors]).await;
    let publisher = Publisher::connect("faults-fuzz", port).await;
    let mut payloads = Payloads::new(13);

    let idle = world.plugin.stats();
    figure("bus fuzz: plugin at start", format!("{idle:?}"));
    let log_start = world.plugin.log_bytes();
    let mut sent = 0u64;
    let mut lost_pings = 0;
    let mut bytes = 0u64;
    let started = Instant::now();
    for round in 0..rounds {
        let t0 = Instant::now();
        for i in 0..per_round {
            let topic = &topics[i % topics.len()];
            // MicroDrop wraps a trigger's non-object value as `data`, a put's as the property.
            let key = match topic.starts_with("microdrop/trigger/") {
                true => "data",
                false => topic.rsplit('/').next().unwrap_or_default(),
            };
            let payload = if (i + 1) % OVERSIZED_EVERY == 0 {
                oversized(key)
            } else {
                payloads.next(key)
            };
            // Triggers that ignore their value take any readable payload as a valid request
            // (`exit` ends the plugin, `halt` halts it): a flood of those is a flood of work,
            // not of bad input. They get the unreadable payloads only.
            // Likewise a request that may be valid and keep the board busy for seconds (a
            // shorts detection at 200 ms a channel, a scan, a run) is work, not bad input.
            let value = serde_json::from_slice::<Value>(&payload).ok();
            let mut topic = topic;
            let mut next = i;
            while value
                .as_ref()
                .is_some_and(|v| takes_any_value(topic) || maybe_long(topic, v))
            {
                next += 1;
                topic = &topics[next % topics.len()];
            }
            bytes += payload.len() as u64;
            publisher.publish(topic, payload).await;
            sent += 1;
        }
        assert!(
            publisher.sync(Duration::from_secs(120)).await,
            "mosquitto did not take round {round}"
        );
        let published = t0.elapsed();
        // The ping comes after the whole round in the plugin's queue.
        let t1 = Instant::now();
        // A flood faster than the plugin reads makes mosquitto drop QoS 0 messages to it past
        // its queue (`max_queued_messages`, 1000 by default): the ping may be one of them,
        // never answered by anyone. A user asks again; so does this test (for up to a
        // minute), and counts. Once a ping is answered, everything before it was read.
        world.client.set_timeout(PING_WAIT);
        let mut asked = 1;
        let mut pong = world.client.trigger(NAME, "ping", &json!({})).await;
        while pong.is_err() && asked < PING_TRIES {
            asked += 1;
            pong = world.client.trigger(NAME, "ping", &json!({})).await;
        }
        world.client.set_timeout(Duration::from_secs(30));
        lost_pings += asked - 1;
        let pong = pong.unwrap_or_else(|e| {
            panic!(
                "round {round}: {asked} pings unanswered ({e}); plugin log:\n{}",
                world.plugin.log_tail()
            )
        });
        assert_eq!(
            pong.response,
            json!("pong"),
            "round {round}: {pong:?}; answers so far: {:?}",
            counter.answers()
        );
        let drained = t1.elapsed();
        let volts = if round % 2 == 0 { 105.0 } else { 100.0 };
        // Every put is answered (a reply that never comes panics in `put`). While valid
        // requests of the flood still hold every permit (board work: recordings, scans), the
        // answer is "busy, try again", and a user's client tries again.
        let mut put = world.put("voltage", json!(volts)).await;
        let mut busy = 0;
        while is_busy(&put) && busy < 600 {
            busy += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            put = world.put("voltage", json!(volts)).await;
        }

        assert!(
            put.is_success(),
            "round {round}: {put:?}; answers so far: {:?}; log:\n{}",
            counter.answers(),
            world
                .plugin
                .log_without(&["request failed", "could not publish", "halt reason"])
        );

        assert_eq!(put.response, json!(volts), "round {round}: {put:?}");
        assert_eq!(world.sim.snapshot().voltage_target, volts, "round {round}");
        let stats = world.plugin.stats();
        figure(
            &format!("bus fuzz: round {round}"),
            format!(
                "{per_round} payloads published in {published:.1?}, ping answered {drained:.1?} \
                 after, put voltage answered busy {busy} times first, {stats:?}"
            ),
        );
    }
    let end = world.plugin.stats();
    let log_bytes = world.plugin.log_bytes() - log_start;
    figure(
        "bus fuzz: total",
        format!(
            "{sent} payloads ({} MB) in {:.1?} over {} topics; {} answers to `{ASKER}`, {} error \
             reports; log grew {} KB",
            bytes / 1_000_000,
            started.elapsed(),
            topics.len(),
            counter.count(&replies),
            counter.count(&errors),
            log_bytes / 1000,
        ),
    );
    figure("bus fuzz: plugin at end", format!("{end:?}"));
    let broker_drops = world.broker.log().matches("are being dropped").count();
    figure(
        "bus fuzz: pings lost (asked again)",
        format!(
            "{lost_pings}; the broker said it dropped messages to a client {broker_drops} times"
        ),
    );
    figure(
        "bus fuzz: messages the plugin dropped (its MQTT queue full)",
        world.plugin.log_count("request queue full"),
    );
    let failed_lines = world.plugin.log_count("request failed");
    figure("bus fuzz: `request failed` log lines", failed_lines);
    // A warning a flood repeats is logged at most 10 times per 10 s from each call site (the
    // count of those left out goes with the next): not once per message.
    let windows = started.elapsed().as_secs() / 10 + 2;
    assert!(
        failed_lines as u64 <= 10 * windows,
        "{failed_lines} `request failed` lines in {:.0?}",
        started.elapsed()
    );
    let log = world.plugin.log_tail();
    assert!(!log.contains("panicked"), "a panic:\n{log}");
    // A lost ping is the broker's doing (it says so), never the plugin's.
    let said = matches!(world.broker.kind(), BrokerKind::Mosca) || broker_drops > 0;
    assert!(
        lost_pings == 0 || said,
        "{lost_pings} pings lost, and the broker dropped nothing"
    );
    assert!(counter.count(&replies) > 0, "no answers were counted");
    assert!(
        end.peak_kb <= MAX_RSS_KB,
        "peak resident memory {} KiB over {MAX_RSS_KB} KiB",
        end.peak_kb
    );
    assert!(
        end.threads <= idle.threads + 2,
        "threads {idle:?} -> {end:?}"
    );
    assert!(end.fds <= idle.fds + 2, "descriptors {idle:?} -> {end:?}");
}
