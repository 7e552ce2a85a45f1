//! Readings under a 1 kHz stream: a board that streams 1,000 samples a second (no DropBot
//! can: its firmware samples every 25 ms) through the actuation engine and the plugin's
//! sample task to a real mosquitto. Every sample arrives exactly once, in batches of at most
//! `batch_max`, at most one batch per 50 ms beyond the full ones; the retained `capacitance`
//! stays within its 10 Hz rate and ends on the newest sample.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dropbot_plugin::actuation::{Actuator, EngineOptions};
use dropbot_plugin::bus::BusClient;
use dropbot_plugin::plugin::telemetry::{stream, ReadingsOptions, Telemetry};
use dropbot_testkit::stream_board::StreamBoard;
use dropbot_testkit::{Mosquitto, TestClient};
use serde_json::Value;

const RATE: u32 = 1000;
const SECONDS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1khz_stream_arrives_whole_in_batches_and_the_retained_state_keeps_its_rate() {
    let mosquitto = Mosquitto::start().expect("mosquitto starts");
    let bus = BusClient::start(mosquitto.bus_options("dropbot")).expect("bus client");
    bus.wait_connected(Duration::from_secs(20))
        .await
        .expect("connected");
    let mut observer = TestClient::connect(mosquitto.host(), mosquitto.port())
        .await
        .expect("observer connects");
    observer.set_timeout(Duration::from_secs(20));
    let batches_topic = "microdrop/dropbot/signal/capacitance-updated";
    let retained_topic = "microdrop/dropbot/state/capacitance";
    observer.subscribe(batches_topic).await.unwrap();
    observer.subscribe(retained_topic).await.unwrap();

    let options = ReadingsOptions::default();
    let telemetry = Telemetry::new(bus.handle(), options.clone());
    let (actuator, streams) = Actuator::spawn(EngineOptions {
        realtime: false,
        failsafe: None,
        ..EngineOptions::default()
    })
    .expect("engine starts");
    stream::spawn(telemetry.clone(), streams.samples);
    let board = StreamBoard::new(RATE);
    let sent = board.counter();
    let stop = board.stopper();
    let started = Instant::now();
    // As the plugin does when a board connects: its readings may go from now on.
    telemetry.board_attached();
    actuator.attach(Box::new(board), 1);

    // Collect while it streams, then stop it and collect what is still on its way.
    let mut messages = observer
        .collect_for("microdrop/dropbot/#", Duration::from_secs(SECONDS))
        .await
        .unwrap();
    stop.store(true, Ordering::Release);
    let streamed_for = started.elapsed();
    messages.extend(
        observer
            .collect_for("microdrop/dropbot/#", Duration::from_secs(2))
            .await
            .unwrap(),
    );
    let sent = sent.load(Ordering::Acquire);
    assert!(
        sent >= RATE as u64,
        "the board streamed only {sent} samples"
    );

    let mut batches = 0usize;
    let mut full = 0usize;
    let mut times = Vec::new();
    let mut retained = Vec::new();
    for m in &messages {
        let v: Value = m.value().unwrap();
        if m.topic == batches_topic {
            batches += 1;
            let samples = v["samples"].as_array().expect("samples");
            assert_eq!(v["count"].as_u64(), Some(samples.len() as u64));
            assert!(
                samples.len() <= options.batch_max,
                "a batch of {}",
                samples.len()
            );
            full += usize::from(samples.len() == options.batch_max);
            for s in samples {
                assert!(s["phase"].is_null() && s["actuated"].is_array(), "{s}");
                times.push(s["board_time_us"].as_u64().expect("board time"));
            }
        } else if m.topic == retained_topic {
            retained.push(v);
        }
    }
    // Every sample exactly once, in order.
    assert_eq!(
        times.len() as u64,
        sent,
        "samples on the bus against samples sent"
    );
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );

    // Tens of messages a second, not a thousand: the full ones plus one per 50 ms at most.
    let window = streamed_for + Duration::from_secs(2);
    let timed_out = batches - full;
    let most = (window.as_millis() / options.batch_interval.as_millis()) as usize + 2;
    assert!(
        timed_out <= most,
        "{timed_out} batches sent by time in {window:?}"
    );
    assert!(
        batches * 10 < sent as usize,
        "{batches} batches for {sent} samples"
    );

    // The retained reading: at most 10 a second, and the last is the newest sample.
    let most = (window.as_millis() / options.retained_interval.as_millis()) as usize + 2;
    assert!(
        retained.len() <= most,
        "{} retained publications in {window:?}",
        retained.len()
    );
    assert!(retained.len() >= 2, "the retained reading is published");
    let last = retained.last().unwrap();
    assert_eq!(last["board_time_us"].as_u64(), times.last().copied());
    assert_eq!(last["unit"], "F");
    assert_eq!(actuator.dropped(), (0, 0), "the engine dropped nothing");
}
