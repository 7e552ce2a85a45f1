//! A running sequence meets the safety rules, end to end on the simulated DropBot: `stop`
//! turns its electrodes off, `pause` holds it, a halt wins and nothing is energised after it,
//! HV on / HV off / all off sent without waiting end with HV off, clicks never slip into it,
//! and a broker that dies mid-sequence makes the board safe and keeps it halted until a user
//! resumes. Every check reads the simulator, not the plugin's own account.

use std::time::Duration;

use dropbot_plugin::plugin::Behaviour;
use dropbot_plugin::sim::{SimOptions, SimSnapshot, Timing, TraceEntry, TraceRecord};
use dropbot_testkit::{
    PluginHarness, PluginOptions, Reply, TestClient, TestError, ACTIVE_ELECTRODES_TOPIC,
};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

async fn harness(behaviour: Behaviour) -> PluginHarness {
    let mut h = PluginHarness::start(PluginOptions {
        behaviour,
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    h.client.set_timeout(Duration::from_secs(30));
    h
}

/// A trigger sent from its own client in a task (a run answers only when it ends).
async fn spawn_trigger(
    h: &PluginHarness,
    action: &'static str,
    value: Value,
) -> JoinHandle<Result<Reply, TestError>> {
    let mut client = TestClient::connect(h.broker.host(), h.broker.port())
        .await
        .expect("a client");
    client.set_timeout(Duration::from_secs(60));
    let name = h.name.clone();
    tokio::spawn(async move { client.trigger(&name, action, &value).await })
}

/// Phases of one channel each: 1, 2, ... for `ms` each.
fn phases(count: u16, ms: u64) -> Value {
    let phases: Vec<Value> = (1..=count)
        .map(|c| json!({"channels": [c], "duration_ms": ms}))
        .collect();
    json!({ "phases": phases })
}

/// Waits until the snapshot satisfies `done` (30 s at most).
async fn until(h: &PluginHarness, what: &str, done: impl Fn(&SimSnapshot) -> bool) {
    for _ in 0..3000 {
        if done(&h.sim.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached; board: {:?}", h.sim.snapshot());
}

fn reasons(response: &Value) -> Vec<String> {
    response["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .map(|p| p["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn channel_frames(trace: &[TraceRecord]) -> Vec<Vec<u16>> {
    let mut out: Vec<Vec<u16>> = trace
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Channels { actuated, .. } => Some(actuated.clone()),
            _ => None,
        })
        .collect();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_mid_sequence_turns_its_electrodes_off() {
    let h = harness(Behaviour::default()).await;
    let run = spawn_trigger(&h, "run-sequence", phases(2, 20_000)).await;
    until(&h, "the first phase on", |s| s.actuated == vec![1]).await;
    h.state_where("sequence", |v| v["state"] == "running" && v["phase"] == 0)
        .await
        .unwrap();
    let stop = h.trigger("stop", json!({})).await.unwrap();
    assert!(stop.is_success(), "{stop:?}");
    assert_eq!(stop.response["sequence"]["state"], "idle");
    assert_eq!(stop.response["actuated-channels"], json!([]));
    let reply = run.await.unwrap().unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reply.response["outcome"], "stopped");
    assert_eq!(reasons(&reply.response), vec!["stopped"]);
    let snap = h.sim.snapshot();
    assert!(snap.actuated.is_empty(), "{snap:?}");
    let frames = channel_frames(&h.sim.trace());
    assert!(frames.ends_with(&[vec![1], vec![]]), "{frames:?}");
    assert!(!frames.contains(&vec![2]), "{frames:?}");
    // Stopping with nothing running is no error.
    assert!(h.trigger("stop", json!({})).await.unwrap().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_phase_and_resume_shifts_the_schedule() {
    let h = harness(Behaviour::default()).await;
    let run = spawn_trigger(&h, "run-sequence", phases(2, 1000)).await;
    until(&h, "the first phase on", |s| s.actuated == vec![1]).await;
    let pause = h.trigger("pause", json!({})).await.unwrap();
    assert!(pause.is_success(), "{pause:?}");
    assert_eq!(pause.response["sequence"]["state"], "paused");
    assert_eq!(pause.response["sequence"]["phase"], 0);
    h.state_where("sequence", |v| v["state"] == "paused")
        .await
        .unwrap();
    // Held well past the end of the whole sequence: the phase stays on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(h.sim.snapshot().actuated, vec![1]);
    let resume = h.trigger("resume", json!({})).await.unwrap();
    assert!(resume.is_success(), "{resume:?}");
    let reply = run.await.unwrap().unwrap();
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reasons(&reply.response), vec!["duration", "duration"]);
    let second = reply.response["phases"][1]["planned_start_ms"]
        .as_f64()
        .unwrap();
    assert!(
        second >= 2200.0,
        "the pause did not move the schedule: {second}"
    );
    assert_eq!(h.sim.snapshot().actuated, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_during_a_sequence_wins_and_nothing_is_energised_after_it() {
    let h = harness(Behaviour::default()).await;
    let run = spawn_trigger(&h, "run-sequence", phases(20, 200)).await;
    until(&h, "phase 3 on", |s| s.actuated == vec![3]).await;
    let halt = h.trigger("halt", json!({})).await.unwrap();
    assert!(halt.is_success(), "{halt:?}");
    let reply = run.await.unwrap().unwrap();
    assert_eq!(reply.status, "failed", "{reply:?}");
    assert_eq!(reply.response["outcome"], "halted");
    assert_eq!(reply.response["error"], "requested");
    let reasons = reasons(&reply.response);
    assert!(reasons.len() < 20 && reasons.last().is_some_and(|r| r == "halted"));
    // After the board took the halt: no channel frame, no HV on.
    let trace = h.sim.trace();
    let at = trace
        .iter()
        .rposition(|r| matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. } if c == "halt"))
        .expect("the board got the halt");
    for r in &trace[at..] {
        match &r.entry {
            TraceEntry::Rx {
                command: Some(c), ..
            } => assert_ne!(c, "set_state_of_channels", "{r:?}"),
            TraceEntry::Hv { enabled, .. } => assert!(!enabled, "{r:?}"),
            _ => {}
        }
    }
    // Refused until a user switches HV on again.
    let again = h.trigger("run-sequence", phases(1, 50)).await.unwrap();
    assert_eq!(again.status, "failed", "{again:?}");
    assert!(again
        .response
        .as_str()
        .unwrap_or_default()
        .contains("halted"));
    assert!(!h.sim.snapshot().hv_enabled);
    let on = h.put("hv-output-enabled", json!(true)).await.unwrap();
    assert!(on.is_success(), "{on:?}");
    let again = h.trigger("run-sequence", phases(1, 50)).await.unwrap();
    assert!(again.is_success(), "{again:?}");
    assert_eq!(h.sim.snapshot().actuated, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hv_on_hv_off_and_all_off_sent_without_waiting_end_with_hv_off() {
    let mut h = harness(Behaviour::default()).await;
    let run = spawn_trigger(&h, "run-sequence", phases(1, 20_000)).await;
    until(&h, "the sequence on", |s| {
        s.actuated == vec![1] && s.hv_enabled
    })
    .await;
    let replies = "microdrop/dropbot/notify/test-client/+";
    h.client.subscribe(replies).await.unwrap();
    // One connection, so the broker keeps their order; no reply is awaited in between.
    let put = "microdrop/put/dropbot/hv-output-enabled";
    h.client
        .publish(put, &json!({"hv-output-enabled": true}), false)
        .await
        .unwrap();
    h.client
        .publish(put, &json!({"hv-output-enabled": false}), false)
        .await
        .unwrap();
    h.client
        .publish("microdrop/trigger/dropbot/all-off", &json!({}), false)
        .await
        .unwrap();
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let m = h.client.next_message(replies).await.unwrap();
        answered.push((m.topic.clone(), m.value().unwrap()));
    }
    let all_off = answered
        .iter()
        .find(|(t, _)| t.ends_with("/all-off"))
        .expect("all-off answered");
    assert_eq!(all_off.1["status"], "success", "{answered:?}");
    let reply = run.await.unwrap().unwrap();
    assert_eq!(reply.response["outcome"], "stopped", "{reply:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    let last_hv = h.sim.trace().into_iter().rev().find_map(|r| match r.entry {
        TraceEntry::Hv { enabled, .. } => Some(enabled),
        _ => None,
    });
    assert_eq!(last_hv, Some(false));
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_never_slip_into_a_sequence_and_a_flood_after_it_ends_at_the_newest() {
    let mut h = harness(Behaviour::default()).await;
    let errors = h.topic("error", "active-electrodes");
    h.client.subscribe(&errors).await.unwrap();
    let run = spawn_trigger(&h, "run-sequence", phases(1, 3000)).await;
    until(&h, "the sequence on", |s| s.actuated == vec![1]).await;
    for id in ["electrode091", "electrode084", "electrode083"] {
        let payload = serde_json::to_vec(&[id]).unwrap();
        h.client
            .publish_raw(ACTIVE_ELECTRODES_TOPIC, payload, false)
            .await
            .unwrap();
    }
    let refused = h.next_error("active-electrodes").await.unwrap();
    assert!(refused.contains("sequence"), "{refused}");
    let reply = run.await.unwrap().unwrap();
    assert_eq!(reasons(&reply.response), vec!["duration"]);
    // The clicks made during the sequence are not applied after it either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.sim.snapshot().actuated, vec![1]);
    let frames = channel_frames(&h.sim.trace());
    assert_eq!(frames.last(), Some(&vec![1]), "{frames:?}");

    // A flood once it is over: the newest wins.
    let walk = [
        "electrode091",
        "electrode084",
        "electrode083",
        "electrode082",
    ];
    for _ in 0..10 {
        for id in walk {
            let payload = serde_json::to_vec(&[id]).unwrap();
            h.client
                .publish_raw(ACTIVE_ELECTRODES_TOPIC, payload, false)
                .await
                .unwrap();
        }
    }
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    until(&h, "the newest click", |s| s.actuated == vec![26]).await;
    h.state_where("actuated-channels", |v| *v == json!([26]))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_mid_sequence_makes_the_board_safe_and_keeps_it_halted() {
    let behaviour = Behaviour {
        safe_after_bus_loss: Duration::from_millis(500),
        ..Behaviour::default()
    };
    let mut h = harness(behaviour).await;
    let run = spawn_trigger(&h, "run-sequence", phases(3, 20_000)).await;
    until(&h, "the sequence on", |s| {
        s.actuated == vec![1] && s.hv_enabled
    })
    .await;
    h.broker.kill().unwrap();
    until(&h, "the board safe without the broker", |s| {
        !s.hv_enabled && s.actuated.is_empty()
    })
    .await;
    run.abort();
    h.broker.restart().unwrap();
    let status = h.wait_board("halted").await.unwrap();
    assert_eq!(status["detail"], "bus-lost", "{status}");
    h.state_where("halted", |v| v["reason"] == "bus-lost")
        .await
        .unwrap();
    h.state_where("sequence", |v| v["state"] == "idle")
        .await
        .unwrap();
    // Its state can reach the broker before its subscriptions do (rumqttc sends what waited
    // during the outage first): a ping answered says it hears requests again.
    h.client.set_timeout(Duration::from_secs(1));
    let mut heard = false;
    for _ in 0..30 {
        if h.trigger("ping", json!({}))
            .await
            .is_ok_and(|r| r.is_success())
        {
            heard = true;
            break;
        }
    }
    assert!(
        heard,
        "the plugin did not answer after the broker came back"
    );
    h.client.set_timeout(Duration::from_secs(5));
    // Nothing moves until a user resumes.
    let refused = h.trigger("run-sequence", phases(1, 50)).await.unwrap();
    assert_eq!(refused.status, "failed", "{refused:?}");
    let refused = h.put("channels", json!([5])).await.unwrap();
    assert_eq!(refused.status, "failed", "{refused:?}");
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    assert!(h
        .put("hv-output-enabled", json!(true))
        .await
        .unwrap()
        .is_success());
    let again = h.trigger("run-sequence", phases(1, 50)).await.unwrap();
    assert!(again.is_success(), "{again:?}");
    assert_eq!(h.sim.snapshot().actuated, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_lost_mid_sequence_fails_the_run_and_the_next_board_stays_off() {
    let h = harness(Behaviour::default()).await;
    let run = spawn_trigger(&h, "run-sequence", phases(3, 20_000)).await;
    until(&h, "the sequence on", |s| s.actuated == vec![1]).await;
    // Confirmed by the board (the state says running only after its answer).
    h.state_where("sequence", |v| v["state"] == "running")
        .await
        .unwrap();
    h.sim.unplug().await;
    let reply = run.await.unwrap().unwrap();
    assert_eq!(reply.status, "failed", "{reply:?}");
    assert_eq!(reply.response["outcome"], "failed");
    assert!(reply.response["error"].is_string(), "{reply:?}");
    assert_eq!(reasons(&reply.response), vec!["failed"]);
    h.sim.replug().await.unwrap();
    // The board lost power while energised: it comes back halted until a user resumes.
    h.wait_board("halted").await.unwrap();
    h.state_where("halted", |v| v["reason"] == "board-reset")
        .await
        .unwrap();
    h.state_where("sequence", |v| v["state"] == "idle")
        .await
        .unwrap();
    // The sequence does not go on on the new board.
    let snap = h.sim.snapshot();
    assert!(!snap.hv_enabled && snap.actuated.is_empty(), "{snap:?}");
    let frames = channel_frames(&h.sim.trace());
    assert!(!frames.contains(&vec![2]), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_refused_at_once_and_a_stop_cancels_a_queued_one() {
    let h = harness(Behaviour::default()).await;
    let first = spawn_trigger(&h, "run-sequence", phases(1, 20_000)).await;
    until(&h, "the sequence on", |s| s.actuated == vec![1]).await;
    let second = h.trigger("run-sequence", phases(2, 50)).await.unwrap();
    assert_eq!(second.status, "failed", "{second:?}");
    assert!(second
        .response
        .as_str()
        .unwrap_or_default()
        .contains("sequence is running"));
    assert!(!first.is_finished());
    assert!(h.trigger("stop", json!({})).await.unwrap().is_success());
    assert_eq!(first.await.unwrap().unwrap().response["outcome"], "stopped");

    drop(h);

    // A run queued behind a scan (about 0.7 s on a realistic board), then a stop: the stop
    // covers it, and it never starts.
    let mut h = PluginHarness::start(PluginOptions {
        sim: SimOptions {
            timing: Timing::Realistic,
            ..SimOptions::default()
        },
        ..PluginOptions::default()
    })
    .await
    .expect("harness starts");
    h.client.set_timeout(Duration::from_secs(30));
    let replies = "microdrop/dropbot/notify/test-client/+";
    h.client.subscribe(replies).await.unwrap();
    for (topic, value) in [
        ("scan-capacitances", json!({})),
        ("run-sequence", phases(1, 50)),
        ("stop", json!({})),
    ] {
        let topic = format!("microdrop/trigger/dropbot/{topic}");
        h.client.publish(&topic, &value, false).await.unwrap();
    }
    let mut run = None;
    while run.is_none() {
        let m = h.client.next_message(replies).await.unwrap();
        if m.topic.ends_with("/run-sequence") {
            run = Some(m.value().unwrap());
        }
    }
    let run = run.unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["response"]
            .as_str()
            .unwrap_or_default()
            .contains("stop"),
        "{run}"
    );
    let frames = channel_frames(&h.sim.trace());
    assert!(!frames.contains(&vec![1]), "{frames:?}");
}
