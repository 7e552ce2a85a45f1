//! Generated serial byte streams against the link, through a real pty: before each reply a
//! fake board writes 1 to 8 generated streams (noise, false starts, cut and corrupted packets,
//! odd events, packets nobody asked for). Every request must get exactly its own reply, the link
//! must never close, and memory must stay put. Most rounds end with filler that closes what the
//! streams left open; 1 in 50 leaves it to the link's idle flush (30 ms of quiet).
//!
//! The decoder alone is covered by the protocol crate's property tests, 10^6 cases in their
//! long form (`cargo test -p firmware-protocol --release --test properties -- --ignored`).
//!
//! Short form (CI): 20,000 streams. Full form (`DROPBOT_FAULTS_FULL=1`): 1,000,000.

mod faults_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dropbot_plugin::board::open_port;
use dropbot_plugin::board::{Link, LinkError, LinkOptions};
use faults_support::streams::Streams;
use faults_support::{figure, proc_stats, scale};
use firmware_protocol::{Decoder, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialStream;

/// Memory the test process may gain over the run, KiB.
const MAX_GROWTH_KB: u64 = 32 * 1024;

#[derive(Default)]
struct Counters {
    streams: AtomicU64,
    bytes: AtomicU64,
    idle_rounds: AtomicU64,
    /// Draws in which the reply could not be found by any decoder (a bodyless false packet,
    /// which has no CRC, took its first byte) or a false DATA packet passed the CRC: drawn
    /// again, but 1 in 20 of the first kind is sent (the request must time out and the link
    /// get back in step).
    redrawn: AtomicU64,
    /// Rounds sent whose reply no decoder can find.
    hidden: AtomicU64,
}

/// One round's bytes: generated streams, the reply, then zero filler until a decoder that read
/// them holds nothing (or, 1 in 50, no filler: the link must flush on idle). Drawn again unless
/// the reply is the only DATA packet a decoder finds in them (see [`Counters::redrawn`]).
fn round(gen: &mut Streams, reply: &Packet, counters: &Counters) -> Vec<u8> {
    let wire = reply.to_bytes().expect("a reply encodes");
    let Packet::Data { payload: want, .. } = reply else {
        unreachable!("replies are DATA packets")
    };
    loop {
        let k = 1 + gen.below(8);
        let mut bytes: Vec<u8> = (0..k).flat_map(|_| gen.next()).collect();
        bytes.extend_from_slice(&wire);
        let mut decoder = Decoder::new();
        let mut data = Vec::new();
        let mut take = |p: Packet| {
            if let Packet::Data { payload, .. } = p {
                data.push(payload);
            }
        };
        decoder.feed(&bytes, &mut take);
        let idle = gen.below(50) == 0;
        if idle {
            decoder.flush(&mut take);
        } else {
            while decoder.buffered() > 0 {
                let filler = [0u8; 64];
                decoder.feed(&filler, &mut take);
                bytes.extend_from_slice(&filler);
            }
        }
        let hidden = data.is_empty();
        if (data.len() == 1 && data[0] == *want) || (hidden && gen.below(20) == 0) {
            if hidden {
                counters.hidden.fetch_add(1, Ordering::Relaxed);
            }
            counters.streams.fetch_add(k as u64, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if idle {
                counters.idle_rounds.fetch_add(1, Ordering::Relaxed);
            }
            return bytes;
        }
        counters.redrawn.fetch_add(1, Ordering::Relaxed);
    }
}

/// The fake board: answers every DATA request with its own payload (id 0, as the firmware
/// does), after a round of generated streams.
fn fake_board(master: SerialStream, counters: Arc<Counters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(master);
        let mut gen = Streams::new(6);
        let mut decoder = Decoder::board();
        let mut buf = [0u8; 4096];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for packet in decoder.decode(&buf[..n]) {
                let Packet::Data { payload, .. } = packet else {
                    continue;
                };
                let bytes = round(&mut gen, &Packet::Data { id: 0, payload }, &counters);
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_serial_streams_never_reach_a_request_or_close_the_link() {
    let target = scale(20_000, 1_000_000) as u64;
    let (master, slave) = SerialStream::pair().expect("a pty");
    let path = tokio_serial::SerialPort::name(&slave).expect("its name");
    let port = open_port(&path).expect("open the pty by path");
    drop(slave);
    let counters = Arc::new(Counters::default());
    let board = fake_board(master, counters.clone());
    let link = Link::spawn_port(
        port,
        LinkOptions {
            // Never give the board up: every lost reply must be recovered from.
            dead_after_timeouts: 0,
            ..LinkOptions::default()
        },
    )
    .expect("a link on the port");
    // An echo of a nonce brings the link back in step after a timeout, as the DropBot's does.
    link.set_resync_probe(Arc::new(|n: u32| {
        (n.to_le_bytes().to_vec(), n.to_le_bytes().to_vec())
    }));
    let me = std::process::id();
    let before = proc_stats(me).expect("/proc/self");
    let started = Instant::now();
    let (mut requests, mut timeouts) = (0u64, 0u64);
    while counters.streams.load(Ordering::Relaxed) < target {
        let payload = (requests | 1 << 63).to_le_bytes();
        match link.request("fuzz", &payload, Duration::from_secs(2)).await {
            Ok(reply) => assert_eq!(reply, payload, "request {requests} got another's reply"),
            Err(LinkError::Timeout { .. }) => timeouts += 1,
            Err(e) => panic!("request {requests}: {e}; {:?}", link.stats()),
        }
        requests += 1;
        assert!(
            !link.is_closed(),
            "the link closed: {:?}",
            link.close_reason()
        );
    }
    let after = proc_stats(me).expect("/proc/self");
    let stats = link.stats();
    let hidden = counters.hidden.load(Ordering::Relaxed);
    figure(
        "serial streams",
        format!(
            "{} streams ({} MB) before {requests} replies in {:.1?}, {} rounds left to the idle \
             flush, {} draws redrawn, {hidden} replies hidden; {timeouts} timeouts; link \
             {stats:?}; test process RSS {} -> {} KiB (peak {})",
            counters.streams.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed) / 1_000_000,
            started.elapsed(),
            counters.idle_rounds.load(Ordering::Relaxed),
            counters.redrawn.load(Ordering::Relaxed),
            before.rss_kb,
            after.rss_kb,
            after.peak_kb,
        ),
    );
    // Every hidden reply times out; beyond those, a reply cut by a descheduled write on a
    // loaded machine may, rarely.
    assert!(
        timeouts >= hidden,
        "{timeouts} timeouts for {hidden} hidden replies"
    );
    assert!(
        (timeouts - hidden) * 1000 <= requests,
        "{timeouts} of {requests} timed out ({hidden} hidden)"
    );
    assert!(stats.crc_errors + stats.bad_headers > 0, "{stats:?}");
    assert!(
        after.rss_kb <= before.rss_kb + MAX_GROWTH_KB,
        "memory grew {} -> {} KiB",
        before.rss_kb,
        after.rss_kb
    );
    board.abort();
}
