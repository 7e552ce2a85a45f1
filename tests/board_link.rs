//! The link over a real pty against scripted fake boards that answer with id 0, as the
//! firmware does: late replies after a resync probe and without one, a cancelled request,
//! packets split across USB transfers, corrupted bytes, event fan-out, death by EOF and by
//! silence.

use std::sync::Arc;
use std::time::Duration;

use dropbot_plugin::board::{
    open_port, CloseReason, Link, LinkError, LinkOptions, Port, ResyncProbe,
};
use firmware_protocol::{Decoder, Event, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, Mutex, Notify};
use tokio_serial::SerialStream;

/// What a scripted board does with request number `n` (counting from 0).
#[derive(Clone)]
struct Script {
    /// Reply with the request's id (else id 0, like the original firmware).
    echo_id: bool,
    /// Delay before replying to request `n`.
    delay: Arc<dyn Fn(usize) -> Duration + Send + Sync>,
    /// Answer request `n` at all.
    answer: Arc<dyn Fn(usize) -> bool + Send + Sync>,
    /// Bytes written just before the reply to request `n` (in the same write).
    prefix: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    /// Request `n` is answered only once the test releases it (`hold.0 == n`).
    hold: Option<(usize, Arc<Notify>)>,
    /// Write replies in pieces of this many bytes, this far apart (like a Teensy's USB CDC).
    split: Option<(usize, Duration)>,
}

impl Script {
    fn plain(echo_id: bool) -> Self {
        Self {
            echo_id,
            delay: Arc::new(|_| Duration::ZERO),
            answer: Arc::new(|_| true),
            prefix: Arc::new(|_| Vec::new()),
            hold: None,
            split: None,
        }
    }
}

/// A pty: the link's end opened by path (the real open code), the board's end the master.
fn pty() -> (SerialStream, Port) {
    let (master, slave) = SerialStream::pair().expect("pty pair");
    let path = tokio_serial::SerialPort::name(&slave).expect("pty name");
    let port = open_port(&path).expect("open pty by path");
    drop(slave);
    (master, port)
}

/// A fake board on a pty master.
struct Fake {
    out: Arc<Mutex<tokio::io::WriteHalf<SerialStream>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    /// Write raw bytes to the link.
    async fn inject(&self, bytes: &[u8]) {
        self.out.lock().await.write_all(bytes).await.unwrap();
    }

    /// Close the master: the link's end sees EOF, as when a board is unplugged.
    async fn unplug(self) {
        self.task.abort();
        let _ = self.task.await;
        drop(self.out);
    }
}

/// Run a fake board on `master`: every DATA request is answered with its own payload.
fn fake_board(master: SerialStream, script: Script) -> Fake {
    let (mut rd, wr) = tokio::io::split(master);
    let wr = Arc::new(Mutex::new(wr));
    let out = wr.clone();
    let task = tokio::spawn(async move {
        let mut decoder = Decoder::new();
        let mut buf = [0u8; 2048];
        let mut n = 0usize;
        loop {
            let Ok(len) = rd.read(&mut buf).await else {
                return;
            };
            if len == 0 {
                return;
            }
            for packet in decoder.decode(&buf[..len]) {
                let mut bytes = Vec::new();
                let reply = match packet {
                    Packet::Data { id, payload } => {
                        let k = n;
                        bytes = (script.prefix)(k);
                        n += 1;
                        if !(script.answer)(k) {
                            continue;
                        }
                        tokio::time::sleep((script.delay)(k)).await;
                        if let Some((n, release)) = &script.hold {
                            if *n == k {
                                release.notified().await;
                            }
                        }
                        let id = if script.echo_id { id } else { 0 };
                        Packet::Data { id, payload }
                    }
                    Packet::IdRequest { id } => Packet::IdResponse {
                        id,
                        payload: b"dropbot::fake".to_vec(),
                    },
                    _ => continue,
                };
                bytes.extend(reply.to_bytes().expect("encode"));
                let (piece, gap) = script.split.unwrap_or((bytes.len().max(1), Duration::ZERO));
                for (i, chunk) in bytes.chunks(piece).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    if out.lock().await.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Fake { out: wr, task }
}

fn options(timeout_ms: u64) -> LinkOptions {
    LinkOptions {
        request_timeout: Duration::from_millis(timeout_ms),
        stale_grace: Duration::from_millis(400),
        dead_after_timeouts: 0,
        ..LinkOptions::default()
    }
}

const T: Duration = Duration::from_millis(100);

/// The fake echoes payloads, so a probe's answer is its own payload.
fn echo_probe() -> ResyncProbe {
    Arc::new(|nonce: u32| {
        let payload = nonce.to_le_bytes().to_vec();
        (payload.clone(), payload)
    })
}

/// Request 0 is answered only after it timed out and the test let its reply go.
fn held_first_reply() -> (Script, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let script = Script {
        hold: Some((0, release.clone())),
        ..Script::plain(false)
    };
    (script, release)
}

#[tokio::test]
async fn a_late_reply_is_discarded_by_the_resync_probe() {
    let (master, port) = pty();
    let (script, release) = held_first_reply();
    fake_board(master, script);
    let link = Link::spawn_port(port, options(100)).expect("a link on the port");
    link.set_resync_probe(echo_probe());
    let first = link.request("first", b"one", T).await;
    assert!(
        matches!(
            first,
            Err(LinkError::Timeout {
                command: "first",
                ..
            })
        ),
        "{first:?}"
    );
    // The late "one" goes out now, before the board reads the probe: it must not be taken
    // for the probe's answer, nor for the next request's.
    release.notify_one();
    let long = Duration::from_secs(10);
    assert_eq!(link.request("second", b"two", long).await.unwrap(), b"two");
    assert_eq!(
        link.request("third", b"three", long).await.unwrap(),
        b"three"
    );
    let stats = link.stats();
    assert_eq!((stats.timeouts, stats.stale_replies), (1, 1), "{stats:?}");
    // first, probe, second, third.
    assert_eq!(stats.requests, 4, "{stats:?}");
}

#[tokio::test]
async fn without_a_probe_the_late_reply_is_counted_off() {
    let (master, port) = pty();
    let (script, release) = held_first_reply();
    fake_board(master, script);
    let link = Link::spawn_port(
        port,
        LinkOptions {
            // Long enough for the late reply whatever the load: the test releases it at once.
            stale_grace: Duration::from_secs(10),
            ..options(100)
        },
    )
    .expect("a link on the port");
    assert!(link.request("first", b"one", T).await.is_err());
    release.notify_one();
    let long = Duration::from_secs(10);
    assert_eq!(link.request("second", b"two", long).await.unwrap(), b"two");
    assert_eq!(link.stats().stale_replies, 1);
}

#[tokio::test]
async fn a_packet_split_across_usb_transfers_is_received_whole() {
    let (master, port) = pty();
    // 64-byte pieces with the partial tail 5 ms later, as a Teensy 3 sends them (a 5 ms idle
    // flush, as this link had before, loses them).
    let script = Script {
        split: Some((64, Duration::from_millis(5))),
        ..Script::plain(false)
    };
    fake_board(master, script);
    // The fake's 5 ms gap is a tokio sleep, which a loaded machine stretches: give the link a
    // quiet time well above it here; the default's margin over the Teensy's 5 ms is checked
    // below.
    let link = Link::spawn_port(
        port,
        LinkOptions {
            idle_flush: Duration::from_millis(500),
            ..options(5_000)
        },
    )
    .expect("a link on the port");
    assert!(LinkOptions::default().idle_flush >= Duration::from_millis(20));
    let big: Vec<u8> = (0..300u16).map(|i| (i % 251) as u8).collect();
    for _ in 0..5 {
        assert_eq!(link.request("big", &big, T * 50).await.unwrap(), big);
    }
    let stats = link.stats();
    assert_eq!(
        (stats.replies, stats.bad_headers, stats.crc_errors),
        (5, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_cancelled_request_does_not_confuse_the_next() {
    let (master, port) = pty();
    let script = Script {
        delay: Arc::new(|n| {
            if n == 0 {
                Duration::from_millis(150)
            } else {
                Duration::ZERO
            }
        }),
        ..Script::plain(false)
    };
    fake_board(master, script);
    let link = Link::spawn_port(port, options(1000)).expect("a link on the port");
    // The caller gives up (its future is dropped) before the reply comes.
    link.set_resync_probe(echo_probe());
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        link.request("cancelled", b"old", Duration::from_secs(1)),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(
        link.request("next", b"new", Duration::from_secs(1))
            .await
            .unwrap(),
        b"new"
    );
}

#[tokio::test]
async fn corrupted_bytes_are_counted_and_skipped() {
    let (master, port) = pty();
    let board = fake_board(master, Script::plain(false));
    let link = Link::spawn_port(port, options(500)).expect("a link on the port");
    let mut bad = Packet::Data {
        id: 0,
        payload: b"bad".to_vec(),
    }
    .to_bytes()
    .unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0x5A;
    let mut noise = b"noise|||".to_vec();
    noise.extend_from_slice(&bad);
    board.inject(&noise).await;
    assert_eq!(
        link.request("after", b"good", T * 5).await.unwrap(),
        b"good"
    );
    let stats = link.stats();
    assert!(stats.crc_errors >= 1, "{stats:?}");
    assert!(stats.discarded_bytes >= 5, "{stats:?}");
    // The corrupted reply was dropped, not delivered: nothing stale, nothing unexpected.
    assert_eq!(stats.replies, 1);
}

#[tokio::test]
async fn events_fan_out_and_a_lagging_receiver_never_blocks_the_reader() {
    let (master, port) = pty();
    let board = fake_board(master, Script::plain(true));
    let link = Link::spawn_port(
        port,
        LinkOptions {
            event_capacity: 4,
            ..options(500)
        },
    )
    .expect("a link on the port");
    let mut slow = link.events();
    let mut bytes = Vec::new();
    for i in 0..20u64 {
        let e = Event::ChannelsUpdated {
            actuated: vec![1],
            start: i,
            end: i + 1,
            n: 1,
        };
        bytes.extend(
            Packet::Stream {
                id: 0,
                payload: e.to_payload(),
            }
            .to_bytes()
            .unwrap(),
        );
    }
    bytes.extend(
        Packet::Stream {
            id: 0,
            payload: b"{\"event\":\"nope\"}".to_vec(),
        }
        .to_bytes()
        .unwrap(),
    );
    board.inject(&bytes).await;
    // Requests still work while `slow` is 20 events behind (its buffer holds 4).
    assert_eq!(link.request("ping", b"p", T * 5).await.unwrap(), b"p");
    let first = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match slow.recv().await {
                Ok(e) => break e,
                Err(broadcast::error::RecvError::Lagged(n)) => assert!(n > 0),
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    // It lost the oldest and resumes with the newest four.
    assert!(
        matches!(first.event, Event::ChannelsUpdated { start: 16, .. }),
        "{first:?}"
    );
    assert_eq!(first.board_time_us, Some(16));
    let stats = link.stats();
    assert_eq!((stats.events, stats.bad_events), (20, 1), "{stats:?}");
}

#[tokio::test]
async fn unplug_fails_the_pending_request_and_signals_closed() {
    let (master, port) = pty();
    let script = Script {
        answer: Arc::new(|n| n == 0),
        ..Script::plain(true)
    };
    let board = fake_board(master, script);
    let link = Link::spawn_port(port, options(5_000)).expect("a link on the port");
    assert_eq!(link.request("ok", b"1", T * 5).await.unwrap(), b"1");
    let pending = tokio::spawn({
        let link = link.clone();
        async move { link.request("never", b"2", Duration::from_secs(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    board.unplug().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), link.closed()).await;
    assert!(matches!(closed, Ok(CloseReason::Gone(_))), "{closed:?}");
    let result = pending.await.unwrap();
    assert!(matches!(result, Err(LinkError::Gone { .. })), "{result:?}");
    assert!(matches!(
        link.request("later", b"3", T).await,
        Err(LinkError::Gone { .. })
    ));
}

#[tokio::test]
async fn a_silent_board_counts_as_gone_after_consecutive_timeouts() {
    let (master, port) = pty();
    let _board = fake_board(
        master,
        Script {
            answer: Arc::new(|_| false),
            ..Script::plain(true)
        },
    );
    let link = Link::spawn_port(
        port,
        LinkOptions {
            dead_after_timeouts: 2,
            ..options(50)
        },
    )
    .expect("a link on the port");
    let t = Duration::from_millis(50);
    assert!(matches!(
        link.request("a", b"", t).await,
        Err(LinkError::Timeout { .. })
    ));
    assert!(!link.is_closed());
    assert!(matches!(
        link.request("b", b"", t).await,
        Err(LinkError::Timeout { .. })
    ));
    match link.close_reason() {
        Some(CloseReason::Gone(reason)) => {
            assert!(reason.contains("stopped answering"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        link.request("c", b"", t).await,
        Err(LinkError::Gone { .. })
    ));
}

#[tokio::test]
async fn closing_on_purpose_fails_requests_with_closed() {
    let (master, port) = pty();
    let _board = fake_board(master, Script::plain(true));
    let link = Link::spawn_port(port, options(500)).expect("a link on the port");
    assert_eq!(link.identify(T * 5).await.unwrap(), b"dropbot::fake");
    link.close();
    assert_eq!(link.request("x", b"", T).await, Err(LinkError::Closed));
    assert_eq!(link.closed().await, CloseReason::Host);
}

#[tokio::test]
async fn shutdown_returns_once_the_reader_thread_let_the_port_go() {
    let (master, port) = pty();
    let path = port.path().to_owned();
    let _board = fake_board(master, Script::plain(true));
    assert!(open_port(&path).is_err(), "opened exclusively");
    let link = Link::spawn_port(port, options(500)).expect("a link on the port");
    assert_eq!(link.identify(T * 5).await.unwrap(), b"dropbot::fake");
    link.shutdown().await;
    // The port opens exclusively only once every descriptor on it is closed, the reader
    // thread's duplicate included.
    let again = open_port(&path).expect("the port is free again at once");
    drop((again, link));
}

#[tokio::test]
async fn a_false_start_does_not_swallow_the_reply_behind_it() {
    let (master, port) = pty();
    // A stray header claiming 124 bytes, sent with the reply: the reply is inside its
    // "payload" until the line goes quiet and the decoder rescans.
    let script = Script {
        prefix: Arc::new(|_| b"|||\x00\x00d\x00\x7c".to_vec()),
        ..Script::plain(true)
    };
    let _board = fake_board(master, script);
    let link = Link::spawn_port(port, options(500)).expect("a link on the port");
    assert_eq!(
        link.request("behind", b"real", T * 5).await.unwrap(),
        b"real"
    );
    assert_eq!(link.stats().replies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_thread_gets_its_replies_and_the_resync_too() {
    let (master, port) = pty();
    let (script, release) = held_first_reply();
    fake_board(master, script);
    let link = Link::spawn_port(port, options(100)).expect("a link on the port");
    link.set_resync_probe(echo_probe());
    // From a thread that runs no async tasks, as the actuation engine's: the first request
    // times out, its late reply is discarded by the probe, the next ones get their own.
    let thread_link = link.clone();
    let answers = std::thread::spawn(move || {
        let first = thread_link.request_blocking("first", b"one", T);
        release.notify_one();
        let long = Duration::from_secs(10);
        let second = thread_link.request_blocking("second", b"two", long);
        let third = thread_link.request_blocking("third", b"three", long);
        (first, second, third)
    });
    let (first, second, third) = tokio::task::spawn_blocking(move || answers.join())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            first,
            Err(LinkError::Timeout {
                command: "first",
                ..
            })
        ),
        "{first:?}"
    );
    assert_eq!(second.unwrap().payload, b"two");
    let third = third.unwrap();
    assert_eq!(third.payload, b"three");
    assert!(third.sent <= third.written && third.sent <= third.received);
    let stats = link.stats();
    assert_eq!((stats.timeouts, stats.stale_replies), (1, 1), "{stats:?}");
}
