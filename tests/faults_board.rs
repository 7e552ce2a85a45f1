//! The board unplugged and plugged back again and again, energised or not, with requests
//! arriving as it goes. Each time: the state topics say the board is gone (nothing claims HV or
//! channels), requests get a clear "no DropBot" while it is away, and on its return the board is
//! safe, nothing is re-enabled and no request sent to the old board reaches the new one. An
//! unplug is a power cut for the board: one lost while energised comes back halted
//! (`board-reset`) until a user puts HV on again (intended). Checked on the simulator's trace.
//!
//! Short form (CI) and full form (`DROPBOT_FAULTS_FULL=1`): 10 cycles; the full form 30.

mod faults_support;

use std::time::{Duration, Instant};

use dropbot_plugin::sim::{TraceEntry, TraceRecord};
use dropbot_testkit::{PluginHarness, PluginOptions, TestClient};
use faults_support::{figure, scale, stop_cleanly, until};
use serde_json::{json, Value};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(30);

/// How the board is left when the cable is pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Energised {
    /// Connected, nothing on.
    No,
    /// A click: electrode030 (channel 26) with HV on.
    Click,
    /// A sequence switching channels 1 to 3.
    Sequence,
}

async fn energise(h: &mut PluginHarness, how: Energised) {
    if how != Energised::No {
        let on = h
            .put("hv-output-enabled", json!(true))
            .await
            .expect("reply");
        assert!(on.is_success(), "{on:?}");
    }
    match how {
        Energised::No => {}
        Energised::Click => {
            h.set_active_electrodes(&["electrode030"])
                .await
                .expect("click");
            until("the click on the board", WAIT, || {
                let s = h.sim.snapshot();
                (s.hv_enabled && s.actuated == vec![26]).then_some(())
            })
            .await;
        }
        Energised::Sequence => {
            let mut client = TestClient::connect(h.broker.host(), h.broker.port())
                .await
                .expect("a client");
            client.set_timeout(Duration::from_secs(120));
            let name = h.name.clone();
            let phases: Vec<Value> = (1..=3)
                .map(|c| json!({"channels": [c], "duration_ms": 100}))
                .collect();
            tokio::spawn(async move {
                let run = json!({"phases": phases, "repeats": 500});
                let _ = client.trigger(&name, "run-sequence", &run).await;
            });
            h.state_where("sequence", |v| v["state"] == "running")
                .await
                .expect("the sequence running");
        }
    }
}

/// Every energising record in `trace` (HV enabled, or channels on) received so far.
fn energising(trace: &mut broadcast::Receiver<TraceRecord>) -> Vec<TraceEntry> {
    let mut found = Vec::new();
    loop {
        match trace.try_recv() {
            Ok(r) => match &r.entry {
                TraceEntry::Hv { enabled: true, .. } => found.push(r.entry),
                TraceEntry::Channels { actuated, .. } if !actuated.is_empty() => {
                    found.push(r.entry)
                }
                _ => {}
            },
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                panic!("the trace lagged by {n}: records were not checked")
            }
            Err(_) => return found,
        }
    }
}

/// One unplug and replug with the board left as `how`; how long until it was usable again.
async fn cycle(h: &mut PluginHarness, cycle: usize, how: Energised) -> Duration {
    energise(h, how).await;
    if how != Energised::No {
        // Requests still on their way as the cable goes: applied to the old board or failed,
        // never kept for the next one.
        for value in [json!([40, 41]), json!([42])] {
            let topic = format!("microdrop/put/{}/channels", h.name);
            h.client
                .publish(&topic, &value, false)
                .await
                .expect("publish");
        }
    }
    h.sim.unplug().await;
    // Requests racing the loss: they belong to the old board, if to any.
    for (property, value) in [("channels", json!([7])), ("hv-output-enabled", json!(true))] {
        let topic = format!("microdrop/put/{}/{property}", h.name);
        h.client
            .publish(&topic, &value, false)
            .await
            .expect("publish");
    }
    h.set_active_electrodes(&["electrode031"])
        .await
        .expect("a click");
    h.state_where("status", |s| {
        s["board"] != "connected" && s["board"] != "halted"
    })
    .await
    .expect("the status says the board is gone");
    for property in ["actuated-channels", "hv-output-enabled"] {
        h.state_where(property, Value::is_null)
            .await
            .expect("nothing claims to be on without a board");
    }
    let refused = h.put("channels", json!([8])).await.expect("a reply");
    let text = refused.response.as_str().unwrap_or_default().to_owned();
    assert!(
        !refused.is_success() && text.contains("no DropBot"),
        "{refused:?}"
    );
    let pong = h.trigger("ping", json!({})).await.expect("a reply");
    assert_eq!(pong.response, json!("pong"));

    let mut trace = h.sim.subscribe_trace();
    let replugged = Instant::now();
    h.sim.replug().await.expect("replug");
    let expected = if how == Energised::No {
        "connected"
    } else {
        "halted"
    };
    let status = h.wait_board(expected).await.expect("the board back");
    let usable = replugged.elapsed();
    if how != Energised::No {
        assert_eq!(status["detail"], "board-reset", "cycle {cycle}: {status}");
        h.state_where("sequence", |v| v["state"] == "idle")
            .await
            .expect("no sequence on the new board");
    }
    h.state_where("hv-output-enabled", |v| *v == json!(false))
        .await
        .expect("HV off in the state");
    h.state_where("actuated-channels", |v| *v == json!([]))
        .await
        .expect("nothing on in the state");
    // A ping answered after the connection: whatever the plugin would still send has gone.
    assert_eq!(h.trigger("ping", json!({})).await.unwrap().response, "pong");
    let snap = h.sim.snapshot();
    assert!(
        !snap.hv_enabled && snap.actuated.is_empty(),
        "cycle {cycle}: {snap:?}"
    );
    let stale = energising(&mut trace);
    assert!(
        stale.is_empty(),
        "cycle {cycle}: the new board got {stale:?}"
    );
    if how != Energised::No {
        // A click is refused until the user resumes.
        h.set_active_electrodes(&["electrode030"])
            .await
            .expect("click");
        let refused = h.put("channels", json!([9])).await.expect("a reply");
        assert!(!refused.is_success(), "{refused:?}");
        let resume = h
            .put("hv-output-enabled", json!(true))
            .await
            .expect("reply");
        assert!(resume.is_success(), "{resume:?}");
        h.wait_board("connected").await.expect("resumed");
        let snap = h.sim.snapshot();
        assert!(snap.actuated.is_empty(), "nothing comes back: {snap:?}");
        let off = h.trigger("all-off", json!({})).await.expect("reply");
        assert!(off.is_success(), "{off:?}");
    }
    usable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_unplugged_and_replugged_comes_back_safe_every_time() {
    let cycles = scale(10, 30);
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts");
    h.client.set_timeout(WAIT);
    let mut slowest = Duration::ZERO;
    for c in 0..cycles {
        let how = [Energised::Click, Energised::Sequence, Energised::No][c % 3];
        slowest = slowest.max(cycle(&mut h, c, how).await);
    }
    figure(
        "unplug/replug",
        format!("{cycles} cycles; replug to status back, slowest {slowest:.1?}"),
    );
    // Usable at the end: a click goes through with HV.
    h.set_active_electrodes(&["electrode030"])
        .await
        .expect("click");
    h.state_where("actuated-channels", |v| *v == json!([26]))
        .await
        .expect("the click applied");
    assert_eq!(h.sim.snapshot().actuated, vec![26]);
    stop_cleanly(&mut h).await;
}
