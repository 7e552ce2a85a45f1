//! The bus client against a real mosquitto: round trips, reconnection, last will, large
//! payloads, backoff.

use std::time::Duration;

use dropbot_plugin::bus::{
    BusClient, BusError, BusMessage, BusOptions, ConnectionState, Farewell, ReplyStatus, Topic,
    Will,
};
use dropbot_testkit::{Mosquitto, TestClient};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const WAIT: Duration = Duration::from_secs(10);
const STATUS: &str = "microdrop/dropbot/state/status";

async fn connected(options: BusOptions) -> Result<BusClient, BusError> {
    let client = BusClient::start(options)?;
    client.wait_connected(WAIT).await?;
    Ok(client)
}

async fn recv(client: &mut BusClient) -> Result<BusMessage, BoxError> {
    Ok(tokio::time::timeout(WAIT, client.recv())
        .await?
        .ok_or("client closed")?)
}

async fn observer(broker: &Mosquitto) -> Result<TestClient, BoxError> {
    Ok(TestClient::connect(broker.host(), broker.port()).await?)
}

/// Answers every put/trigger: the unwrapped value back, or `failed` for `bad`.
async fn serve_one(client: &mut BusClient) -> TestResult {
    let msg = recv(client).await?;
    let handle = client.handle();
    let env = msg.envelope()?;
    let (about, value) = match msg.parsed_topic()? {
        Topic::Put { property, .. } => (property.clone(), env.put_value(&property).clone()),
        Topic::Trigger { action, .. } => (action, env.trigger_value().clone()),
        other => return Err(format!("unexpected {other}").into()),
    };
    let status = if about == "bad" {
        ReplyStatus::Failed
    } else {
        ReplyStatus::Success
    };
    assert!(handle.reply(&env, &about, status, value)?);
    Ok(())
}

#[tokio::test]
async fn put_and_trigger_round_trip_with_notify_replies() -> TestResult {
    let broker = Mosquitto::start()?;
    let mut client = connected(broker.bus_options("dropbot")).await?;
    let handle = client.handle();
    handle.subscribe("microdrop/put/dropbot/+")?;
    handle.subscribe("microdrop/trigger/dropbot/+")?;
    let ui = observer(&broker).await?;
    handle.sync(WAIT).await?;

    let server = tokio::spawn(async move {
        for _ in 0..4 {
            serve_one(&mut client).await?;
        }
        Ok::<_, BoxError>(client)
    });
    let reply = ui.put("dropbot", "voltage", &json!(120)).await?;
    assert!(reply.is_success(), "{reply:?}");
    assert_eq!(reply.response, json!(120));
    assert_eq!(reply.head["plugin_name"], "dropbot");
    assert!(reply
        .topic
        .starts_with("microdrop/dropbot/notify/micropede-async-"));

    let reply = ui
        .put("dropbot", "frequency", &json!({"frequency": 1000}))
        .await?;
    assert_eq!(reply.response, json!(1000));

    let reply = ui.trigger("dropbot", "ping", &json!(null)).await?;
    assert_eq!(
        (reply.status.as_str(), reply.response),
        ("success", Value::Null)
    );

    let reply = ui
        .trigger("dropbot", "bad", &json!({"voltage": 1, "frequency": 2}))
        .await?;
    assert_eq!(reply.status, "failed");
    assert_eq!(reply.response, json!({"voltage": 1, "frequency": 2}));

    let client = server.await??;
    assert_eq!(
        handle.subscriptions(),
        ["microdrop/put/dropbot/+", "microdrop/trigger/dropbot/+"]
    );
    drop(client);
    Ok(())
}

#[tokio::test]
async fn state_signal_and_unix_socket() -> TestResult {
    let broker = Mosquitto::start()?;
    let client = connected(broker.unix_bus_options("dropbot")).await?;
    let handle = client.handle();
    let mut ui = observer(&broker).await?;
    ui.subscribe("microdrop/dropbot/signal/+").await?;

    handle.publish_state("info", &json!({"voltage": 100, "channel_count": 120}))?;
    handle.publish_state("active-channels", &json!([1, 2, 3]))?;
    handle.signal("halted", &json!({"reason": "overcurrent"}))?;

    let sig = ui.next_message("microdrop/dropbot/signal/+").await?;
    assert_eq!(sig.topic, "microdrop/dropbot/signal/halted");
    assert_eq!(sig.value()?, json!({"reason": "overcurrent"}));
    assert_eq!(sig.json()?["__head__"]["plugin_name"], "dropbot");

    let info = ui.wait_retained("microdrop/dropbot/state/info").await?;
    assert_eq!(info, json!({"voltage": 100, "channel_count": 120}));
    let arr = ui
        .wait_retained("microdrop/dropbot/state/active-channels")
        .await?;
    assert_eq!(arr, json!([1, 2, 3]), "arrays go bare");

    handle.clear_retained("microdrop/dropbot/state/info")?;
    handle.sync(WAIT).await?;
    let cleared = ui
        .retained("microdrop/dropbot/state/info", Duration::from_millis(300))
        .await?;
    assert!(
        cleared.is_none(),
        "cleared retained value still there: {cleared:?}"
    );
    Ok(())
}

/// A queue full of other messages drops plain messages, never a reply: replies wait, in
/// order, for room (a flood of other traffic must not cost a waiting asker its answer).
#[tokio::test]
async fn replies_wait_for_room_where_other_messages_are_dropped() -> TestResult {
    let broker = Mosquitto::start()?;
    let mut options = broker.bus_options("dropbot");
    options.request_capacity = 4;
    let client = connected(options).await?;
    let handle = client.handle();
    let mut ui = observer(&broker).await?;
    ui.subscribe("microdrop/dropbot/notify/ui/#").await?;

    // All in one turn of this task: the poll task drains nothing meanwhile.
    let mut dropped = 0;
    for i in 0..200 {
        let noise = handle.signal("noise", &json!(i));
        dropped += usize::from(matches!(noise, Err(BusError::QueueFull(_))));
        let status = match i % 2 {
            0 => ReplyStatus::Success,
            _ => ReplyStatus::Failed,
        };
        handle.notify("ui", "answer", status, json!(i))?;
    }
    assert!(
        dropped > 0,
        "the queue never filled: the test shows nothing"
    );

    let mut answers = Vec::new();
    while answers.len() < 200 {
        let m = ui
            .next_message("microdrop/dropbot/notify/ui/answer")
            .await?;
        answers.push(m.value()?["response"].clone());
    }
    let expected: Vec<Value> = (0..200).map(|i| json!(i)).collect();
    assert_eq!(answers, expected, "every reply, in order");
    Ok(())
}

// The fixture's restart blocks its thread: the client keeps running on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_restores_subscriptions_and_retained_state() -> TestResult {
    let mut broker = Mosquitto::start()?;
    let mut client = connected(broker.bus_options("dropbot")).await?;
    let handle = client.handle();
    let mut state = handle.connection();
    handle.subscribe("microdrop/put/dropbot/+")?;
    handle.publish_state("status", &json!("online"))?;
    handle.publish_state("voltage", &json!(100))?;
    handle.publish_state("stale", &json!(1))?;
    handle.clear_retained("microdrop/dropbot/state/stale")?;
    let ui = observer(&broker).await?;
    ui.wait_retained_where(STATUS, |v| v == "online").await?;

    broker.kill()?;
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await??;
    // Changed while the broker is down: the latest value must win after the restart.
    handle.publish_state("voltage", &json!(90))?;
    broker.restart()?;
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| *s == ConnectionState::Connected { session: 2 }),
    )
    .await??;

    // The restarted broker has no persistence: these can only come from our republish.
    assert_eq!(
        ui.wait_retained_where(STATUS, |v| v == "online").await?,
        "online"
    );
    let voltage = ui
        .wait_retained_where("microdrop/dropbot/state/voltage", |v| v == 90)
        .await?;
    assert_eq!(voltage, 90);
    let stale = ui
        .retained("microdrop/dropbot/state/stale", Duration::from_millis(300))
        .await?;
    assert!(stale.is_none(), "a cleared value came back: {stale:?}");

    // The subscription is back: a put reaches us again.
    handle.sync(WAIT).await?;
    ui.publish(
        "microdrop/put/dropbot/voltage",
        &json!({"voltage": 80}),
        false,
    )
    .await?;
    let msg = recv(&mut client).await?;
    assert_eq!(msg.envelope()?.put_value("voltage"), &json!(80));
    assert!(handle.stats().connections >= 2);
    Ok(())
}

#[tokio::test]
async fn last_will_marks_us_offline_on_a_crash_but_not_on_disconnect() -> TestResult {
    let broker = Mosquitto::start()?;
    let ui = observer(&broker).await?;
    let with_will = |name: &str| {
        let mut o = broker.bus_options(name);
        o.will = Some(Will {
            topic: STATUS.into(),
            value: json!("crashed"),
        });
        o
    };

    let client = connected(with_will("dropbot")).await?;
    client.handle().publish_state("status", &json!("online"))?;
    ui.wait_retained_where(STATUS, |v| v == "online").await?;
    drop(client); // aborts the tasks: the socket closes without DISCONNECT
    assert_eq!(
        ui.wait_retained_where(STATUS, |v| v == "crashed").await?,
        "crashed"
    );

    let client = connected(with_will("dropbot")).await?;
    client.handle().publish_state("status", &json!("online"))?;
    ui.wait_retained_where(STATUS, |v| v == "online").await?;
    let farewell = [Farewell {
        topic: STATUS.into(),
        value: json!("offline"),
        retain: true,
    }];
    client.disconnect(&farewell, WAIT).await?;
    ui.wait_retained_where(STATUS, |v| v == "offline").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = ui
        .retained(STATUS, Duration::from_secs(1))
        .await?
        .ok_or("no status")?;
    assert_eq!(
        after.value()?,
        "offline",
        "the will fired after a clean disconnect"
    );
    Ok(())
}

#[tokio::test]
async fn three_megabyte_payloads_pass_and_oversize_is_refused() -> TestResult {
    let broker = Mosquitto::start()?;
    let mut options = broker.bus_options("dropbot");
    options.max_payload = 4 * 1024 * 1024;
    let mut client = connected(options).await?;
    let handle = client.handle();
    handle.subscribe("microdrop/device-model/state/+")?;
    let ui = observer(&broker).await?;
    handle.sync(WAIT).await?;

    let electrodes: Vec<Value> = (0..30_000)
        .map(|i| json!({"id": format!("electrode{i:05}"), "channel": "1", "area": 1.5, "pad": "x".repeat(60)}))
        .collect();
    let big = Value::Array(electrodes);
    let size = serde_json::to_vec(&big)?.len();
    assert!(size > 3_000_000, "{size}");
    ui.publish("microdrop/device-model/state/three-object", &big, true)
        .await?;
    let msg = recv(&mut client).await?;
    assert_eq!(msg.payload.len(), size);
    assert_eq!(msg.envelope()?.value, big);

    handle.publish_state("device", &big)?;
    let back = ui.wait_retained("microdrop/dropbot/state/device").await?;
    assert_eq!(back, big);

    // Over max_payload: refused on both sides, and the connection stays up.
    let huge = json!("y".repeat(5 * 1024 * 1024));
    assert!(matches!(
        handle.publish_state("huge", &huge),
        Err(BusError::TooLarge { .. })
    ));
    ui.publish("microdrop/device-model/state/huge", &huge, false)
        .await?;
    let msg = recv(&mut client).await?;
    assert!(msg.is_oversized() && msg.payload.is_empty());
    assert!(matches!(
        msg.envelope(),
        Err(BusError::Oversized { ref topic, .. }) if topic == "microdrop/device-model/state/huge"
    ));
    ui.publish_raw("microdrop/device-model/state/bad", vec![0xff, 0xfe], false)
        .await?;
    let msg = recv(&mut client).await?;
    assert!(matches!(msg.envelope(), Err(BusError::NotUtf8(_))));
    assert!(handle.is_connected());
    assert_eq!(handle.stats().connections, 1);
    Ok(())
}

// The fixture's restart blocks its thread: the client keeps running on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_keeps_reconnection_attempts_few() -> TestResult {
    let mut broker = Mosquitto::start()?;
    let client = connected(broker.bus_options("dropbot")).await?;
    let handle = client.handle();
    broker.kill()?;
    let mut state = handle.connection();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
    )
    .await??;
    let before = handle.stats().connection_attempts;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attempts = handle.stats().connection_attempts - before;
    // Without backoff rumqttc retries ~11,000 times a second; 50 ms doubling gives ~5.
    assert!(attempts < 50, "{attempts} attempts in 1 s");
    assert!(attempts >= 2, "the client stopped retrying ({attempts})");

    // Plain messages are dropped and counted when the queue is full; nothing blocks.
    let mut full = 0;
    for i in 0..1000 {
        if let Err(BusError::QueueFull(_)) = handle.signal("tick", &json!(i)) {
            full += 1;
        }
    }
    assert!(full > 0);
    assert_eq!(handle.stats().dropped_outgoing, full);
    // Retained state is never dropped: the latest value arrives once the broker is back.
    handle.publish_state("status", &json!("still-here"))?;
    broker.restart()?;
    let ui = observer(&broker).await?;
    ui.wait_retained_where(STATUS, |v| v == "still-here")
        .await?;
    Ok(())
}

#[tokio::test]
async fn no_broker_at_all_means_retries_not_errors() -> TestResult {
    let broker = Mosquitto::start()?;
    let options = broker.bus_options("dropbot");
    // Nobody listens on the port the dropped broker had.
    drop(broker);
    let client = BusClient::start(options)?;
    let err = client.wait_connected(Duration::from_millis(500)).await;
    assert!(matches!(err, Err(BusError::Timeout(..))), "{err:?}");
    let handle = client.handle();
    assert!(!handle.is_connected());
    assert!(matches!(
        *handle.connection().borrow(),
        ConnectionState::Disconnected { .. }
    ));
    let attempts = handle.stats().connection_attempts;
    assert!((1..50).contains(&attempts), "{attempts}");
    // A graceful disconnect with no broker gives up at its deadline instead of hanging.
    let res = client.disconnect(&[], Duration::from_millis(300)).await;
    assert!(matches!(res, Err(BusError::Timeout(..))), "{res:?}");
    Ok(())
}
