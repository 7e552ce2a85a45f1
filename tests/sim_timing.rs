//! The simulated board's timing in real time, through a real pty: replies leave in 64-byte USB
//! packets with the last partial one after the Teensy's transmit flush timer, the firmware
//! stalls on chip insertion and while HV comes up, and its one packet buffer keeps only the
//! last request that arrived meanwhile (or none, after a command).

use std::time::{Duration, Instant};

use dropbot_plugin::sim::{SimHandle, SimOptions, TraceEntry, TraceRecord};
use dropbot_testkit::sim_host::{connect, SimHost, SimHostError};
use firmware_protocol::commands::{Microseconds, StrEcho, UpdateState};
use firmware_protocol::{Command, Decoder, Event, Packet, State};
use prost::Message;
use tokio::sync::broadcast;

type R = Result<(), SimHostError>;

const WAIT: Duration = Duration::from_secs(10);
/// The flush timer fires at the fifth 1 ms frame boundary after a write: at least 4 ms.
const FLUSH_MIN: Duration = Duration::from_millis(4);
/// Long enough to be sure a reply is not coming (the simulator answers in milliseconds).
const QUIET: Duration = Duration::from_millis(500);

/// Send `command` with a nonzero id, without waiting for anything.
async fn send<C: Command>(host: &mut SimHost, command: &C) -> R {
    let payload = command.encode(host.table())?;
    let id = host.fresh_id();
    host.send(&Packet::Data { id, payload }).await
}

/// The next DATA packet and when it arrived, skipping events.
async fn next_reply(
    host: &mut SimHost,
    within: Duration,
) -> Result<(Vec<u8>, Instant), SimHostError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match host.next_packet(left).await? {
            Packet::Data { payload, .. } => return Ok((payload, Instant::now())),
            _ => continue,
        }
    }
}

/// Wait for a trace record accepted by `want`.
async fn traced(
    trace: &mut broadcast::Receiver<TraceRecord>,
    want: impl Fn(&TraceEntry) -> bool,
) -> Result<TraceRecord, SimHostError> {
    tokio::time::timeout(WAIT, async {
        loop {
            match trace.recv().await {
                Ok(r) if want(&r.entry) => return Ok(r),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(SimHostError::Eof),
            }
        }
    })
    .await
    .map_err(|_| SimHostError::Timeout(WAIT, "a trace record"))?
}

fn lost(sim: &SimHandle, what: &str) -> usize {
    sim.trace()
        .into_iter()
        .filter(|r| matches!(&r.entry, TraceEntry::Lost { detail } if detail.contains(what)))
        .count()
}

/// PaulStoffregen/cores `usb_serial.c`: every full 64-byte packet goes at once, the partial
/// last one when the flush timer runs out, 4-5 ms after the write. So no reply comes sooner
/// than 4 ms after its request, and a long one arrives in pieces.
#[tokio::test]
async fn replies_leave_in_64_byte_packets_and_the_tail_after_the_flush_timer() -> R {
    let (sim, mut host) = connect(SimOptions::default()).await?;
    for _ in 0..5 {
        let sent = Instant::now();
        let (reply, at) = {
            send(&mut host, &Microseconds {}).await?;
            next_reply(&mut host, WAIT).await?
        };
        assert_eq!(reply.len(), 4);
        assert!(
            at - sent >= FLUSH_MIN,
            "a short reply waits for the timer: {:?}",
            at - sent
        );
    }
    // 150 payload bytes: a 160-byte packet = 64 + 64 + 32.
    let msg: Vec<u8> = (0..150u8).collect();
    let mut split_seen = false;
    for _ in 0..10 {
        let sent = Instant::now();
        send(&mut host, &StrEcho { msg: msg.clone() }).await?;
        let mut reads = Vec::new();
        let mut bytes = Vec::new();
        while bytes.len() < 160 {
            let chunk = host.read_raw(WAIT).await?;
            if chunk.is_empty() {
                return Err(SimHostError::Eof);
            }
            reads.push((chunk.len(), Instant::now()));
            bytes.extend(chunk);
        }
        let last = reads.last().map_or(sent, |r| r.1);
        assert!(last - sent >= FLUSH_MIN, "{:?}", last - sent);
        split_seen |= reads.len() > 1 && reads[0].0 % 64 == 0;
        let mut decoder = Decoder::new();
        let mut packets = Vec::new();
        decoder.feed(&bytes, |p| packets.push(p));
        assert_eq!(
            packets,
            vec![Packet::Data {
                id: 0,
                payload: msg.clone()
            }]
        );
    }
    assert!(split_seen, "the full packets arrive before the tail");
    sim.shutdown().await;
    Ok(())
}

/// dropbot.py `Node.h`: on insertion `detect_shorts(5)` blocks the loop for ~1.2 s. Requests
/// sent meanwhile are parsed during its `delay()` calls into the firmware's one packet buffer
/// (nadamq `packet.rl`): the later overwrites the earlier, and only the last is answered.
#[tokio::test]
async fn chip_insertion_stalls_and_only_the_last_request_sent_meanwhile_is_answered() -> R {
    let opts = SimOptions {
        chip_inserted: false,
        ..SimOptions::default()
    };
    let (sim, mut host) = connect(opts).await?;
    sim.insert_chip(true);
    let event = host
        .wait_event(WAIT, |e| *e == Event::OutputEnabled)
        .await?;
    assert_eq!(event, Event::OutputEnabled);
    let enabled_at = Instant::now();
    send(&mut host, &StrEcho { msg: b"A".to_vec() }).await?;
    send(&mut host, &StrEcho { msg: b"B".to_vec() }).await?;
    let (reply, at) = next_reply(&mut host, WAIT).await?;
    assert_eq!(reply, b"B", "the later request overwrote the earlier");
    assert!(
        at - enabled_at >= Duration::from_secs(1),
        "answered only after the stall: {:?}",
        at - enabled_at
    );
    assert!(matches!(
        next_reply(&mut host, QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    assert_eq!(lost(&sim, "overwritten"), 1);
    let stalled = sim
        .trace()
        .into_iter()
        .any(|r| matches!(&r.entry, TraceEntry::Busy { cause, duration_us } if cause == "detect_shorts" && *duration_us >= 1_200_000));
    assert!(stalled);
    sim.shutdown().await;
    Ok(())
}

/// `update_state` with `hv_output_enabled: true` blocks 200 ms in `delay()`
/// (`voltage_source.h` `enable_high_voltage_output`); a request parsed meanwhile is thrown
/// away by `packet_reset()` after the command (base-node-rpc `BaseHandler.h`).
#[tokio::test]
async fn hv_enable_blocks_200_ms_and_a_request_sent_meanwhile_is_lost() -> R {
    let (sim, mut host) = connect(SimOptions::default()).await?;
    let mut trace = sim.subscribe_trace();
    let on = State {
        hv_output_enabled: Some(true),
        ..State::default()
    };
    let sent = Instant::now();
    send(
        &mut host,
        &UpdateState {
            serialized: on.encode_to_vec(),
        },
    )
    .await?;
    traced(
        &mut trace,
        |e| matches!(e, TraceEntry::Busy { cause, .. } if cause.contains("HV enable")),
    )
    .await?;
    send(&mut host, &StrEcho { msg: b"B".to_vec() }).await?;
    let (reply, at) = next_reply(&mut host, WAIT).await?;
    assert_eq!(reply, vec![1], "update_state decoded");
    assert!(at - sent >= Duration::from_millis(200), "{:?}", at - sent);
    assert!(matches!(
        next_reply(&mut host, QUIET).await,
        Err(SimHostError::Timeout(..))
    ));
    assert_eq!(lost(&sim, "packet_reset"), 1);
    // The board answers normally afterwards.
    assert_eq!(host.call(StrEcho { msg: b"C".to_vec() }).await?, b"C");
    sim.shutdown().await;
    Ok(())
}
