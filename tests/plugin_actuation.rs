//! State-driven actuation end to end, with MicroDrop 3's real default device (92 electrodes,
//! 93 KB in one retained message): live `active-electrodes` states move a droplet on the
//! simulated board; retained ones never actuate; the channel map follows the device; HV
//! follows the auto-HV rule.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::device::{Device, MICRODROP3_DEFAULT_THREE_OBJECT};
use dropbot_plugin::plugin::Behaviour;
use dropbot_plugin::sim::{TraceEntry, TraceRecord};
use dropbot_testkit::{PluginHarness, PluginOptions, ACTIVE_ELECTRODES_TOPIC, DEVICE_TOPIC};
use serde_json::{json, Value};

fn device() -> Device {
    Device::microdrop3_default().expect("the default device parses")
}

fn channels_of(ids: &[&str]) -> Vec<u16> {
    device()
        .channels_for(ids)
        .expect("known ids")
        .into_iter()
        .collect()
}

/// A walk of `steps` neighbouring electrodes whose channels are their own (no sharing).
fn path(steps: usize) -> Vec<String> {
    let d = device();
    let own_channel = |i: usize| {
        d.electrode(i).is_some_and(|e| {
            e.channels.len() == 1
                && e.channels
                    .iter()
                    .all(|&c| d.electrodes_on_channel(c).len() == 1)
        })
    };
    for start in 0..d.len() {
        let mut walk = vec![start];
        while walk.len() <= steps {
            let here = walk.last().copied().unwrap_or(start);
            let next = d
                .neighbours(here)
                .iter()
                .copied()
                .find(|n| own_channel(*n) && !walk.contains(n));
            match next {
                Some(n) => walk.push(n),
                None => break,
            }
        }
        if walk.len() > steps && own_channel(start) {
            return walk
                .iter()
                .filter_map(|&i| d.electrode(i).map(|e| e.id.clone()))
                .collect();
        }
    }
    panic!("no walk of {steps} steps on the default device");
}

/// Waits until the snapshot satisfies `done` (10 s at most).
async fn until(
    h: &PluginHarness,
    what: &str,
    done: impl Fn(&dropbot_plugin::sim::SimSnapshot) -> bool,
) {
    for _ in 0..1000 {
        if done(&h.sim.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached; board: {:?}", h.sim.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_moves_a_droplet_along_a_path_of_active_electrodes() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .unwrap();
    let walk = path(4);
    let start = walk[0].as_str();
    h.sim
        .add_droplet(start, h.sim.unit_volume(start).unwrap())
        .unwrap();
    for next in &walk[1..] {
        h.set_active_electrodes(&[next]).await.unwrap();
        until(&h, &format!("droplet on {next}"), |s| {
            s.droplets.len() == 1 && s.droplets[0].electrode == *next && s.droplets[0].to.is_none()
        })
        .await;
        assert_eq!(h.sim.snapshot().actuated, channels_of(&[next]));
    }
    let expected: Vec<u64> = channels_of(&[walk.last().unwrap()])
        .into_iter()
        .map(u64::from)
        .collect();
    h.state_where("actuated-channels", |v| *v == json!(expected))
        .await
        .unwrap();
    h.state_where("hv-output-enabled", |v| *v == json!(true))
        .await
        .unwrap();

    // The trace tells the same story: channels driven in order, the droplet on each electrode.
    let trace = h.sim.trace();
    let driven: Vec<Vec<u16>> = trace
        .iter()
        .filter_map(|r| match &r.entry {
            TraceEntry::Channels { actuated, .. } if !actuated.is_empty() => Some(actuated.clone()),
            _ => None,
        })
        .collect();
    let wanted: Vec<Vec<u16>> = walk[1..].iter().map(|id| channels_of(&[id])).collect();
    let mut dedup = driven.clone();
    dedup.dedup();
    assert_eq!(dedup, wanted, "channels in the trace");
    let visited = rested_on(&trace);
    assert_eq!(visited, walk, "electrodes the droplet rested on");
    assert!(h.trace_path().exists());
}

/// Electrodes a droplet came to rest on, in order, from the trace.
fn rested_on(trace: &[TraceRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in trace {
        if let TraceEntry::Droplets { droplets } = &r.entry {
            for d in droplets.iter().filter(|d| d.to.is_none()) {
                if out.last() != Some(&d.electrode) {
                    out.push(d.electrode.clone());
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_never_actuates_retained_active_electrodes() {
    let mut options = PluginOptions::default();
    options.retained.push((
        ACTIVE_ELECTRODES_TOPIC.to_owned(),
        br#"["electrode030","electrode031"]"#.to_vec(),
    ));
    let mut h = PluginHarness::start(options).await.unwrap();
    // The retained message reached the plugin before the status did; had it been submitted,
    // the engine would have taken it before this measurement (it keeps arrival order).
    engine_barrier(&h).await;
    let snap = h.sim.snapshot();
    assert!(
        snap.actuated.is_empty() && !snap.hv_enabled,
        "yesterday's request was applied: {snap:?}"
    );
    assert_eq!(
        h.state_where("actuated-channels", Value::is_array)
            .await
            .unwrap(),
        json!([])
    );

    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    until(&h, "a live update actuates", |s| {
        s.actuated == channels_of(&["electrode030"]) && s.hv_enabled
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_follows_the_device_model_and_takes_it_live() {
    let mut h = PluginHarness::start(PluginOptions {
        retained: Vec::new(),
        ..PluginOptions::default()
    })
    .await
    .unwrap();
    let errors = h.topic("error", "active-electrodes");
    h.client.subscribe(&errors).await.unwrap();
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    let e = h
        .client
        .next_message(&errors)
        .await
        .unwrap()
        .value()
        .unwrap();
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no device"),
        "{e}"
    );
    assert!(h.sim.snapshot().actuated.is_empty());

    // MicroDrop publishes its 93 KB device live; the next click uses it.
    assert!(MICRODROP3_DEFAULT_THREE_OBJECT.len() > 90_000);
    h.publish_seen(
        DEVICE_TOPIC,
        MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec(),
        true,
    )
    .await
    .unwrap();
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    until(&h, "actuated through the device", |s| {
        s.actuated == channels_of(&["electrode030"])
    })
    .await;

    // A new device maps electrode030 to channel 5 (and 6): the active electrodes follow it.
    let mut three: Value = serde_json::from_str(MICRODROP3_DEFAULT_THREE_OBJECT).unwrap();
    for e in three.as_array_mut().unwrap() {
        if e["id"] == "electrode030" {
            e["channel"] = json!("5, 6");
        }
    }
    h.publish_seen(DEVICE_TOPIC, serde_json::to_vec(&three).unwrap(), true)
        .await
        .unwrap();
    until(&h, "remapped to channels 5 and 6", |s| {
        s.actuated == vec![5, 6]
    })
    .await;
    h.state_where("actuated-channels", |v| *v == json!([5, 6]))
        .await
        .unwrap();

    // With everything off, loading a device again must not switch anything on.
    assert!(h.trigger("all-off", json!({})).await.unwrap().is_success());
    h.publish_seen(
        DEVICE_TOPIC,
        MICRODROP3_DEFAULT_THREE_OBJECT.as_bytes().to_vec(),
        true,
    )
    .await
    .unwrap();
    engine_barrier(&h).await;
    let snap = h.sim.snapshot();
    assert!(
        snap.actuated.is_empty() && !snap.hv_enabled,
        "a device load actuated: {snap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_applies_the_newest_of_many_quick_updates() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .unwrap();
    let walk = path(30);
    for id in &walk[..walk.len() - 1] {
        let payload = serde_json::to_vec(&[id]).unwrap();
        h.client
            .publish_raw(ACTIVE_ELECTRODES_TOPIC, payload, false)
            .await
            .unwrap();
    }
    let last = walk.last().unwrap();
    h.set_active_electrodes(&[last]).await.unwrap();
    let want = channels_of(&[last]);
    until(&h, "the newest update applied", |s| s.actuated == want).await;
    let expected: Vec<u64> = want.iter().map(|&c| u64::from(c)).collect();
    h.state_where("actuated-channels", |v| *v == json!(expected))
        .await
        .unwrap();
    let sets = h
        .sim
        .trace()
        .iter()
        .filter(|r| matches!(&r.entry, TraceEntry::Rx { command: Some(c), .. } if c == "set_state_of_channels"))
        .count();
    assert!(
        (1..=walk.len()).contains(&sets),
        "{sets} channel updates for {} requests",
        walk.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_step_settings_apply_without_turning_hv_on() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .unwrap();
    let topic = "microdrop/electrodes-model/state/voltage";
    h.publish_seen(topic, br#""85 V""#.to_vec(), true)
        .await
        .unwrap();
    until(&h, "voltage from the step", |s| s.voltage_target == 85.0).await;
    let topic = "microdrop/electrodes-model/state/frequency";
    h.publish_seen(topic, br#""1 kHz""#.to_vec(), true)
        .await
        .unwrap();
    until(&h, "frequency from the step", |s| s.frequency == 1000.0).await;
    assert!(!h.sim.snapshot().hv_enabled);
    h.state_where("voltage", |v| v.as_f64() == Some(85.0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_without_auto_hv_leaves_hv_to_the_user() {
    let behaviour = Behaviour {
        auto_hv: false,
        ..Behaviour::default()
    };
    let mut h = PluginHarness::start(PluginOptions {
        behaviour,
        ..PluginOptions::default()
    })
    .await
    .unwrap();
    h.set_active_electrodes(&["electrode030"]).await.unwrap();
    until(&h, "channels on", |s| !s.actuated.is_empty()).await;
    assert!(!h.sim.snapshot().hv_enabled);
    assert!(h
        .put("hv-output-enabled", json!(true))
        .await
        .unwrap()
        .is_success());
    assert!(h.sim.snapshot().hv_enabled);
    let on: BTreeSet<u16> = h.sim.snapshot().actuated.into_iter().collect();
    assert_eq!(on, channels_of(&["electrode030"]).into_iter().collect());
}

/// A step's voltage and frequency are the electrodes model's (one source, whatever order
/// MicroDrop's step loader writes plugins in): a write to our own `state/voltage` (a step saved
/// while it was per step) is not applied, and never undoes the electrodes model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_voltage_comes_from_the_electrodes_model_only() {
    let mut h = PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts");
    for order in [
        ["dropbot", "electrodes-model"],
        ["electrodes-model", "dropbot"],
    ] {
        for plugin in order {
            let (topic, payload) = match plugin {
                "dropbot" => (h.state_topic("voltage"), b"130".to_vec()),
                _ => (
                    "microdrop/electrodes-model/state/voltage".to_owned(),
                    br#""120 V""#.to_vec(),
                ),
            };
            h.publish_seen(&topic, payload, true).await.unwrap();
        }
        // A put goes through the actuator after everything submitted before it.
        let reply = h.put("frequency", json!(1000)).await.unwrap();
        assert!(reply.is_success(), "{reply:?}");
        assert_eq!(h.sim.snapshot().voltage_target, 120.0, "{order:?}");
        // Back to another value for the next order.
        h.publish_seen(
            "microdrop/electrodes-model/state/voltage",
            br#""100 V""#.to_vec(),
            true,
        )
        .await
        .unwrap();
        let reply = h.put("frequency", json!(1000)).await.unwrap();
        assert!(reply.is_success(), "{reply:?}");
        assert_eq!(h.sim.snapshot().voltage_target, 100.0, "{order:?}");
    }
}

/// Disabled channels are never reported actuated: the board takes the bits but does not
/// drive them, and `actuated-channels` says what is really on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_channels_are_not_reported_actuated() {
    let h = PluginHarness::start(PluginOptions::default())
        .await
        .expect("harness starts");
    assert!(h
        .put("disabled-channels", json!([1]))
        .await
        .unwrap()
        .is_success());
    let reply = h.put("channels", json!([1, 2])).await.unwrap();
    assert!(reply.is_success());
    assert_eq!(reply.response, json!([2]));
    h.state_where("actuated-channels", |v| *v == json!([2]))
        .await
        .unwrap();
    assert_eq!(h.sim.snapshot().actuated, vec![2]);
}

/// Returns once the engine has dealt with everything submitted before: it takes requests in
/// arrival order, and a measurement is an ordered request.
async fn engine_barrier(h: &PluginHarness) {
    let r = h.trigger("measure-voltage", json!({})).await.unwrap();
    assert!(r.is_success(), "{r:?}");
}

/// An update that changes nothing gets no answer, so the plugin acknowledges it at the TCP
/// level at once (an empty packet on its ack topic) rather than after the bus's grace: a
/// broker with Nagle's algorithm on (mosquitto's default) holds its next message, the step
/// loader's next put say, until that acknowledgement. Here the grace is an hour, so only the
/// plugin's word that it is done can send the packet in time; and no health readings are
/// taken, whose publication would carry the acknowledgement instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_nothing_is_acknowledged_at_once() {
    let mut behaviour = Behaviour::default();
    behaviour.readings.monitor_interval = None;
    let mut h = PluginHarness::start(PluginOptions {
        bus: |bus| bus.ack_grace = Duration::from_secs(3600),
        behaviour,
        ..PluginOptions::default()
    })
    .await
    .unwrap();
    let ack_topic = "microdrop-bus-sync/dropbot/ack";
    let mut acks = dropbot_testkit::TestClient::connect(h.broker.host(), h.broker.port())
        .await
        .unwrap();
    acks.set_timeout(Duration::from_secs(20));
    acks.subscribe(ack_topic).await.unwrap();
    let id = "electrode031";
    h.set_active_electrodes(&[id]).await.unwrap();
    let want: Vec<u64> = channels_of(&[id]).iter().map(|&c| u64::from(c)).collect();
    h.state_where("actuated-channels", |v| *v == json!(want))
        .await
        .unwrap();
    // The echoes of the states just published are acknowledged as they come back; a request
    // answered after them means they are in, and what is left on the ack topic is theirs.
    let ping = h.trigger("ping", Value::Null).await.unwrap();
    assert!(ping.is_success(), "{ping:?}");
    acks.collect_for(ack_topic, Duration::from_millis(500))
        .await
        .unwrap();

    h.set_active_electrodes(&[id]).await.unwrap();
    let ack = acks.next_message(ack_topic).await;
    assert!(
        ack.is_ok(),
        "no acknowledgement of an update that changed nothing: {ack:?}"
    );
}
