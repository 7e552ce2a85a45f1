//! The broker killed (SIGKILL) and restarted again and again while a sequence runs on the
//! simulated board. A short outage leaves the board alone: the sequence keeps switching, and
//! once the plugin is back it answers, says the truth and takes requests. An outage longer than
//! `safe_after_bus_loss` (5 s, the default) makes the board safe on the plugin's own side, and
//! it stays halted after the broker returns until a user puts HV on again. Every check reads
//! the simulator, not only the plugin's account.
//!
//! Short form (CI): 10 cycles on mosquitto (every fifth one long) and 3 on MicroDrop's mosca
//! (the last one long). Full form (`DROPBOT_FAULTS_FULL=1`): 10 cycles on each.

mod faults_support;

use std::time::{Duration, Instant};

use dropbot_plugin::sim::{TraceEntry, TraceRecord};
use dropbot_testkit::{BrokerKind, PluginHarness, PluginOptions, TestClient};
use faults_support::{figure, full, stop_cleanly, until, until_async};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

const CYCLES: usize = 10;
const LONG_EVERY: usize = 5;
/// Generous for a loaded 2-core machine: nothing here is a speed check.
const WAIT: Duration = Duration::from_secs(30);

/// A sequence that runs for minutes: channels 1 to 8 in turn, 150 ms each.
fn long_sequence() -> Value {
    let phases: Vec<Value> = (1..=8)
        .map(|c| json!({"channels": [c], "duration_ms": 150}))
        .collect();
    json!({"phases": phases, "repeats": 1000})
}

/// `run-sequence` from its own client, in a task (a run answers when it ends; here it never
/// does: its client loses the broker).
async fn start_sequence(h: &PluginHarness) -> JoinHandle<()> {
    let mut client = TestClient::connect(h.broker.host(), h.broker.port())
        .await
        .expect("a client");
    client.set_timeout(Duration::from_secs(600));
    let name = h.name.clone();
    let run = tokio::spawn(async move {
        let _ = client
            .trigger(&name, "run-sequence", &long_sequence())
            .await;
    });
    until("the sequence switching with HV on", WAIT, || {
        let s = h.sim.snapshot();
        (s.hv_enabled && s.actuated.len() == 1).then_some(())
    })
    .await;
    h.state_where("sequence", |v| v["state"] == "running")
        .await
        .expect("sequence state running");
    run
}

/// Pings from fresh connections until the plugin answers (it may still be reconnecting).
async fn until_answering(h: &PluginHarness) {
    until_async("the plugin answering a ping", WAIT, || async {
        let mut quick = TestClient::connect(h.broker.host(), h.broker.port())
            .await
            .ok()?;
        quick.set_timeout(Duration::from_secs(2));
        let pong = quick.trigger(&h.name, "ping", &json!({})).await.ok()?;
        (pong.response == json!("pong")).then_some(())
    })
    .await;
}

/// Waits for the board's next channel frame in the trace (the sequence still switching).
async fn next_channel_frame(trace: &mut broadcast::Receiver<TraceRecord>) -> Vec<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record = tokio::time::timeout_at(deadline, trace.recv())
            .await
            .expect("a channel frame within 30 s");
        match record {
            Ok(TraceRecord {
                entry: TraceEntry::Channels { actuated, .. },
                ..
            }) => return actuated,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => panic!("the simulator ended"),
        }
    }
}

/// What one kind of broker went through.
#[derive(Debug, Default)]
struct Tally {
    short: usize,
    long: usize,
    /// Short outages that still outlasted `safe_after_bus_loss` (a slow reconnection).
    short_became_long: usize,
    kill_to_safe: Vec<Duration>,
    restart_to_answer: Vec<Duration>,
}

/// After an outage that outlasted `safe_after_bus_loss`: the truth on the bus, nothing moves
/// until a user resumes, then a new sequence runs.
async fn check_halted_then_resume(h: &PluginHarness) -> JoinHandle<()> {
    let status = h.wait_board("halted").await.expect("status halted");
    assert_eq!(status["detail"], "bus-lost", "{status}");
    assert_eq!(status["bus"], "online", "{status}");
    h.state_where("halted", |v| v["reason"] == "bus-lost")
        .await
        .expect("halted state");
    h.state_where("sequence", |v| v["state"] == "idle")
        .await
        .expect("sequence idle");
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .expect("HV off in the state");
    h.state_where("actuated-channels", |v| *v == json!([]))
        .await
        .expect("no channels in the state");
    let refused = h.put("channels", json!([5])).await.expect("a reply");
    assert_eq!(refused.status, "failed", "{refused:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    let resume = h
        .put("hv-output-enabled", json!(true))
        .await
        .expect("reply");
    assert!(resume.is_success(), "{resume:?}");
    h.wait_board("connected").await.expect("connected again");
    // The old sequence does not come back by itself.
    assert!(
        h.sim.snapshot().actuated.is_empty(),
        "{:?}",
        h.sim.snapshot()
    );
    start_sequence(h).await
}

/// `cycles` outages, the last of every [`LONG_EVERY`] (and the last one) long.
async fn kill_and_restart(kind: BrokerKind, cycles: usize) -> Tally {
    let mut h = PluginHarness::start(PluginOptions {
        broker: kind,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    h.client.set_timeout(WAIT);
    let mut run = start_sequence(&h).await;
    let mut tally = Tally::default();
    for cycle in 0..cycles {
        let long = cycle % LONG_EVERY == LONG_EVERY - 1 || cycle + 1 == cycles;
        let volts = if cycle % 2 == 0 { 105.0 } else { 95.0 };
        h.broker.kill().expect("SIGKILL the broker");
        let killed = Instant::now();
        if long {
            // Nobody could switch the board off from the bus: the plugin does it itself.
            until("the board safe without the broker", WAIT, || {
                let s = h.sim.snapshot();
                (!s.hv_enabled && s.actuated.is_empty()).then_some(())
            })
            .await;
            tally.kill_to_safe.push(killed.elapsed());
        }
        let mut trace = h.sim.subscribe_trace();
        h.broker.restart().expect("restart the broker");
        let restarted = Instant::now();
        until_answering(&h).await;
        tally.restart_to_answer.push(restarted.elapsed());
        let status = h
            .state_where("status", |s| {
                s["board"] == "connected" || s["board"] == "halted"
            })
            .await
            .expect("a status");
        if long || status["board"] == "halted" {
            if !long {
                tally.short_became_long += 1;
            }
            run.abort();
            run = check_halted_then_resume(&h).await;
        } else {
            assert_eq!(status["bus"], "online", "{status}");
            h.state_where("sequence", |v| v["state"] == "running")
                .await
                .expect("the sequence still running");
            h.state_where("hv-output-enabled", |v| *v == json!(true))
                .await
                .expect("HV on, as it is");
            // The board never stopped switching.
            let frame = next_channel_frame(&mut trace).await;
            assert_eq!(frame.len(), 1, "{frame:?}");
        }
        if long {
            tally.long += 1;
        } else {
            tally.short += 1;
        }
        // Usable: a setting goes through to the board while the sequence runs.
        let put = h.put("voltage", json!(volts)).await.expect("a reply");
        assert!(put.is_success(), "cycle {cycle}: {put:?}");
        assert_eq!(h.sim.snapshot().voltage_target, volts, "cycle {cycle}");
    }
    run.abort();
    let stop = h.trigger("stop", json!({})).await.expect("a reply");
    assert!(stop.is_success(), "{stop:?}");
    assert!(h.sim.snapshot().actuated.is_empty());
    stop_cleanly(&mut h).await;
    tally
}

fn report(kind: BrokerKind, tally: &Tally) {
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    figure(
        &format!("broker restarts ({kind})"),
        format!(
            "{} short and {} long outages ({} short ones outlasted safe_after_bus_loss); kill to \
             board safe max {:.1?}; restart to first answer max {:.1?}",
            tally.short,
            tally.long,
            tally.short_became_long,
            max(&tally.kill_to_safe),
            max(&tally.restart_to_answer),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_during_a_sequence_on_mosquitto() {
    let tally = kill_and_restart(BrokerKind::Mosquitto, CYCLES).await;
    report(BrokerKind::Mosquitto, &tally);
    assert_eq!(tally.short + tally.long, CYCLES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_during_a_sequence_on_mosca() {
    let cycles = if full() { CYCLES } else { 3 };
    let tally = kill_and_restart(BrokerKind::Mosca, cycles).await;
    report(BrokerKind::Mosca, &tally);
    assert_eq!(tally.short + tally.long, cycles);
}
