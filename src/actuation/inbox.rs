//! What reaches the engine's thread, and in which lane.
//!
//! - **Control** (attach, detach, halt, HV off, all off, stop, pause, resume, shutdown): taken
//!   before anything else, between any two board requests.
//! - **Ordered** requests (waveform, HV on, disabled channels, scans, sequences): in arrival
//!   order, each with its own reply.
//! - **Level** requests (electrodes from clicks and states): one slot, newest wins; the
//!   superseded ones never reach the board.
//! - **Board events**: samples in a bounded queue (the oldest goes when it is full), every other
//!   event (halts, interlock, shorts) in a queue that never drops.
//!
//! Every request gets a sequence number when it is submitted, so that "arrival order" between
//! the ordered queue and the level slot means the order in which the plugin received them.
//! The lanes are plain locked queues plus a doorbell the thread sleeps on.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use firmware_protocol::Event;
use tokio::sync::oneshot;

use super::board::{DmfBoard, Monitor, Reading};
use super::picture::{Halt, Picture};
use super::program::{Program, SequenceReport};
use super::ActuationError;
use crate::board::BoardEvent;

/// What an ordered or control request answers.
#[derive(Debug, Clone)]
pub enum Response {
    /// Done; the picture right after.
    Picture(Picture),
    /// Shorted channels found (the board disabled them); the picture right after.
    Shorts(Vec<u16>, Picture),
    /// Capacitance of each channel alone, farads.
    Scan(Vec<(u16, f32)>),
    /// A capacitance reading.
    Capacitance(Reading),
    /// Measured RMS voltage, V.
    Voltage(f32),
    /// A sequence ended.
    Sequence(SequenceReport),
    /// Health readings.
    Monitor(Monitor),
    /// Capacitance readings of each measured set, farads, `repeats` per set.
    Measured(Vec<Vec<f64>>),
    /// Readings of the on-board test capacitors.
    TestCapacitors(TestCapacitorReadings),
}

/// What the on-board test capacitors read, with the feedback capacitor then in use.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCapacitorReadings {
    /// The feedback capacitor the board computed with, farads.
    pub feedback_f: f64,
    /// Nominal capacitance connected for each list of readings (0 first: none connected).
    pub nominal_f: Vec<f64>,
    /// Readings with each, farads.
    pub readings: Vec<Vec<f64>>,
}

/// Where an answer goes.
pub type Responder = oneshot::Sender<Result<Response, ActuationError>>;

/// Requests that overtake everything queued.
pub(super) enum Control {
    Attach {
        board: Box<dyn DmfBoard>,
        connection: u64,
    },
    Detach {
        connection: u64,
    },
    Halt {
        halt: Halt,
        reply: Option<Responder>,
    },
    HvOff {
        seq: u64,
        reply: Responder,
    },
    AllOff {
        seq: u64,
        reply: Responder,
    },
    Stop {
        seq: u64,
        reply: Responder,
    },
    Pause(Responder),
    Resume(Responder),
    Shutdown(Responder),
}

/// Requests taken in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    /// Voltage and/or frequency.
    Waveform {
        /// RMS volts.
        voltage: Option<f32>,
        /// Hz.
        frequency: Option<f32>,
    },
    /// HV on: a user's explicit request, which also resumes after a halt.
    HvOn,
    /// The channels the user wants disabled.
    Disabled(BTreeSet<u16>),
    /// Find and disable shorted channels, testing each for `delay_ms`.
    DetectShorts {
        /// Settle time per channel, ms.
        delay_ms: u8,
    },
    /// Capacitance of each listed channel alone.
    Scan(Vec<u16>),
    /// One capacitance reading of the actuated electrodes.
    Capacitance,
    /// One measured voltage.
    MeasuredVoltage,
    /// Capacitance stream period, ms.
    Stream(u32),
    /// Run a sequence; the answer comes when it ends.
    Run(Program),
    /// Health readings (measured HV, currents, temperature, chip pin).
    Monitor,
    /// Actuate each set alone (HV on for it), wait `settle`, read the capacitance `repeats`
    /// times; then the channels and HV as they were. Refused while halted.
    Measure {
        /// The channel sets, in order.
        sets: Vec<BTreeSet<u16>>,
        /// Readings per set.
        repeats: u32,
        /// Wait after each set is on.
        settle: Duration,
    },
    /// Read the capacitance with no channel on and with each on-board test capacitor,
    /// `repeats` times each; then the channels and HV as they were. Refused while halted.
    TestCapacitors {
        /// Readings per capacitor.
        repeats: u32,
    },
    /// Set the feedback capacitor the board computes capacitance with, farads.
    SetFeedbackCapacitor(f64),
}

impl Ordered {
    /// Whether a later "HV off" or "all off" cancels it while it waits.
    pub(super) fn energises(&self) -> bool {
        matches!(self, Ordered::HvOn | Ordered::Run(_))
    }
}

/// Electrodes to actuate (all others off).
#[derive(Debug, Clone, PartialEq)]
pub struct LevelTarget {
    /// The channels.
    pub channels: BTreeSet<u16>,
    /// A live request (a click, a step, a route frame): auto-HV may apply.
    pub live: bool,
}

/// The outcome of the newest level request applied (or refused).
#[derive(Debug, Clone)]
pub struct LevelOutcome {
    /// The newest level request folded into this outcome.
    pub generation: u64,
    /// The picture after it, or why it was not applied.
    pub result: Result<Picture, ActuationError>,
}

pub(super) struct LevelSlot {
    pub pending: Option<(u64, u64, LevelTarget)>,
    pub generation: u64,
}

/// Samples kept when the engine falls behind (the oldest go first).
const SAMPLE_CAPACITY: usize = 4096;
/// Other board events kept; beyond this the board is flooding and the oldest go.
const EVENT_CAPACITY: usize = 65_536;

/// The lanes; see the module docs.
pub(super) struct Inbox {
    seq: AtomicU64,
    ring_tx: Sender<()>,
    ring_rx: Receiver<()>,
    pub control: Mutex<VecDeque<Control>>,
    pub ordered: Mutex<VecDeque<(u64, Ordered, Responder)>>,
    pub level: Mutex<LevelSlot>,
    pub events: Mutex<VecDeque<BoardEvent>>,
    pub samples: Mutex<VecDeque<BoardEvent>>,
    pub dropped_samples: AtomicU64,
}

pub(super) use crate::sync::lock;

impl Inbox {
    pub fn new() -> Self {
        let (ring_tx, ring_rx) = crossbeam_channel::bounded(1);
        Inbox {
            seq: AtomicU64::new(0),
            ring_tx,
            ring_rx,
            control: Mutex::new(VecDeque::new()),
            ordered: Mutex::new(VecDeque::new()),
            level: Mutex::new(LevelSlot {
                pending: None,
                generation: 0,
            }),
            events: Mutex::new(VecDeque::new()),
            samples: Mutex::new(VecDeque::new()),
            dropped_samples: AtomicU64::new(0),
        }
    }

    /// The next arrival number.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Wake the thread (never blocks; one pending ring is enough).
    pub fn ring(&self) {
        let _ = self.ring_tx.try_send(());
    }

    /// Sleep until rung or until `deadline`.
    pub fn wait(&self, deadline: Option<Instant>) {
        match deadline {
            Some(deadline) => match self.ring_rx.recv_deadline(deadline) {
                Ok(()) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            },
            None => {
                let _ = self.ring_rx.recv();
            }
        }
    }

    /// Busy-wait until rung or `deadline`, whichever comes first (a parked thread wakes tens
    /// of microseconds after its ring; this one within a few).
    pub fn spin(&self, deadline: Instant) {
        while Instant::now() < deadline {
            if self.ring_rx.try_recv().is_ok() {
                return;
            }
            std::hint::spin_loop();
        }
    }

    pub fn push_control(&self, control: Control) {
        lock(&self.control).push_back(control);
        self.ring();
    }

    pub fn push_ordered(&self, ordered: Ordered, reply: Responder) {
        let seq = self.next_seq();
        lock(&self.ordered).push_back((seq, ordered, reply));
        self.ring();
    }

    /// Replace the pending level request; its generation.
    pub fn push_level(&self, target: LevelTarget) -> u64 {
        let seq = self.next_seq();
        let generation = {
            let mut slot = lock(&self.level);
            slot.generation += 1;
            slot.pending = Some((seq, slot.generation, target));
            slot.generation
        };
        self.ring();
        generation
    }

    /// From the link's reader: never blocks, never drops anything but old samples.
    pub fn push_event(&self, event: &BoardEvent) {
        let (queue, capacity) = match event.event {
            Event::CapacitanceUpdated { .. } => (&self.samples, SAMPLE_CAPACITY),
            _ => (&self.events, EVENT_CAPACITY),
        };
        {
            let mut q = lock(queue);
            if q.len() >= capacity {
                q.pop_front();
                self.dropped_samples.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(event.clone());
        }
        self.ring();
    }
}
