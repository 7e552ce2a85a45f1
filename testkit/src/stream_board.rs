//! [`StreamBoard`]: a board behind the engine's trait that streams capacitance samples at a
//! chosen rate from its own thread, faster than any DropBot can (its firmware samples every
//! 25 ms): for tests and benchmarks of what the plugin does with a fast stream.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use firmware_protocol::Event;

use dropbot_plugin::actuation::{BoardSummary, DmfBoard, Stamp};
use dropbot_plugin::board::{BoardError, BoardEvent, EventSink};

/// A board that streams `rate` samples a second once the engine attaches it, until dropped.
pub struct StreamBoard {
    sink: Arc<Mutex<Option<EventSink>>>,
    stop: Arc<AtomicBool>,
    /// Samples sent so far.
    pub sent: Arc<AtomicU64>,
}

impl StreamBoard {
    /// A board streaming `rate` samples a second (sent in bursts of one per millisecond or
    /// more when the rate is higher).
    pub fn new(rate: u32) -> StreamBoard {
        let sink: Arc<Mutex<Option<EventSink>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, st, n) = (sink.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || stream(&s, &st, &n, rate));
        StreamBoard { sink, stop, sent }
    }

    /// The counter of samples sent (shared, readable after the board moved into the engine).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }

    /// A switch that stops the stream.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

fn stream(sink: &Mutex<Option<EventSink>>, stop: &AtomicBool, sent: &AtomicU64, rate: u32) {
    let start = Instant::now();
    let per_ms = f64::from(rate.max(1)) / 1000.0;
    let mut n: u64 = 0;
    let mut last_us = 0u64;
    while !stop.load(Ordering::Acquire) {
        let due = (start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        let sink = sink.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(sink) = sink {
            while n < due {
                // Strictly increasing, as a real board's sampling times are.
                let us = (start.elapsed().as_micros() as u64).max(last_us + 1);
                last_us = us;
                let event = Event::CapacitanceUpdated {
                    new_value: 1e-11 + (n % 100) as f64 * 1e-14,
                    time_us: us,
                    n_samples: 50,
                    v_a: 100.0,
                };
                sink(&BoardEvent {
                    event,
                    received: Instant::now(),
                    received_wall: SystemTime::now(),
                    board_time_us: Some(us),
                    board_time_host: None,
                });
                n += 1;
                sent.store(n, Ordering::Release);
            }
        }
        // A plain sleep: a spinning wait would count in the benchmark's CPU time.
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for StreamBoard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn stamp() -> Stamp {
    let now = Instant::now();
    Stamp {
        issued: now,
        written: now,
        confirmed: now,
        board_us: None,
    }
}

impl DmfBoard for StreamBoard {
    fn summary(&self) -> BoardSummary {
        BoardSummary {
            channel_count: 120,
            identity: "stream-board".into(),
            serial: "stream-board".into(),
            uptime: None,
        }
    }

    fn set_channels(&mut self, _: &BTreeSet<u16>) -> Result<Stamp, BoardError> {
        Ok(stamp())
    }

    fn set_waveform(&mut self, _: Option<f32>, _: Option<f32>) -> Result<Stamp, BoardError> {
        Ok(stamp())
    }

    fn set_hv(&mut self, _: bool) -> Result<Stamp, BoardError> {
        Ok(stamp())
    }

    fn halt(&mut self) -> Result<(), BoardError> {
        Ok(())
    }

    fn set_event_sink(&mut self, sink: Option<EventSink>) {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = sink;
    }
}
