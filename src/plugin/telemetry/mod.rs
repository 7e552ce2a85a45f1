//! Readings and events to the bus.
//!
//! - Retained readings under `microdrop/<name>/state/...`, each with board time (unwrapped
//!   microseconds) and host time (ms since the Unix epoch): `capacitance`, `measured-voltage`,
//!   `currents`, `temperature`, `chip`, `shorts` (the `halted` state comes from the model).
//!   Each topic is rate-limited ([`ReadingsOptions::retained_interval`], 10 Hz by default);
//!   the last value published is always the newest. They are null while no board is
//!   connected (after a loss, and after a clean exit).
//! - Every capacitance sample on the signal `capacitance-updated`, in batches ([`stream`]).
//! - Health readings (measured HV, currents, temperature, chip pin) read periodically through
//!   the engine ([`monitor`]), which takes them only where they delay no sequence phase.
//! - Interlock, shorts, halts and sequence progress as signals.
//!
//! No log line per sample: only failures are logged, and they are rare.

pub mod limiter;
pub mod monitor;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firmware_protocol::Event;
use serde_json::{json, Value};
use tokio::sync::Notify;

use self::limiter::Limiters;
use super::context::Ctx;
use crate::actuation::{Notice, PhaseResult};
use crate::board::BoardEvent;
use crate::bus::BusHandle;
use crate::calibration::Specific;
use crate::device::Device;
use crate::runlog::Recorder;

/// How readings reach the bus and the disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingsOptions {
    /// Shortest time between two publications of one retained reading (100 ms: 10 Hz).
    pub retained_interval: Duration,
    /// Longest a sample waits for its `capacitance-updated` batch.
    pub batch_interval: Duration,
    /// Most samples in one batch.
    pub batch_max: usize,
    /// Period of the health readings (`None`: never).
    pub monitor_interval: Option<Duration>,
    /// Where calibrations are kept, one file per chip and board (`None`: in memory only).
    pub data_dir: Option<PathBuf>,
    /// Where run records go (`None`: no records).
    pub runs_dir: Option<PathBuf>,
    /// Capacitance stream period turned on for a record when the stream is off, ms.
    pub record_stream_ms: u32,
    /// A MicroDrop protocol run ends when no step (`execute`) came for this long.
    pub protocol_gap: Duration,
}

impl Default for ReadingsOptions {
    fn default() -> Self {
        ReadingsOptions {
            retained_interval: Duration::from_millis(100),
            batch_interval: Duration::from_millis(50),
            batch_max: 100,
            monitor_interval: Some(Duration::from_secs(1)),
            data_dir: None,
            runs_dir: None,
            // The firmware samples every 25 ms: every sample it takes.
            record_stream_ms: 25,
            protocol_gap: Duration::from_secs(5),
        }
    }
}

/// Rows queued for the run record writer at most.
const RECORD_QUEUE: usize = 65_536;

/// What the readings need to know of the chip and the board, kept current by
/// [`super::calibration::follow`].
#[derive(Debug, Clone, Default)]
pub struct ChipContext {
    /// The loaded device.
    pub device: Option<Arc<Device>>,
    /// Its calibration on this board.
    pub specific: Option<Specific>,
    /// The waveform frequency the board took, Hz.
    pub frequency: Option<f32>,
}

/// The readings' shared state (in [`Ctx`], and held by the sample task).
pub struct Telemetry {
    /// The options.
    pub options: ReadingsOptions,
    bus: BusHandle,
    limiters: Mutex<Limiters>,
    /// Rung when a retained reading waits, so the sample task flushes it on time.
    pub(crate) wake: Notify,
    /// The chip and its calibration.
    pub(crate) chip: Mutex<ChipContext>,
    /// Calibrations, kept and loaded.
    pub(crate) calibration: Mutex<super::calibration::CalibrationState>,
    /// The run record writer, if records are kept.
    pub recorder: Option<Recorder>,
    /// Records open now.
    pub(crate) recordings: Mutex<super::recording::Recordings>,
    /// A health reading request is out (one at a time).
    pub(crate) monitor_in_flight: AtomicBool,
}

pub(crate) use crate::sync::lock;

impl Telemetry {
    /// The readings of the plugin on `bus`.
    pub fn new(bus: BusHandle, options: ReadingsOptions) -> Arc<Telemetry> {
        let recorder = options.runs_dir.as_ref().and_then(|dir| {
            Recorder::spawn(dir, RECORD_QUEUE)
                .inspect_err(|e| tracing::warn!(error = %e, "run records are off"))
                .ok()
        });
        Arc::new(Telemetry {
            limiters: Mutex::new(Limiters::new(options.retained_interval)),
            calibration: Mutex::new(super::calibration::CalibrationState::new(
                options.data_dir.clone(),
            )),
            options,
            bus,
            wake: Notify::new(),
            chip: Mutex::new(ChipContext::default()),
            recorder,
            recordings: Mutex::new(super::recording::Recordings::default()),
            monitor_in_flight: AtomicBool::new(false),
        })
    }

    /// The bus.
    pub fn bus(&self) -> &BusHandle {
        &self.bus
    }

    /// Publish retained `state/<topic>` now, or as soon as its rate limit allows.
    pub fn retained(&self, topic: &'static str, value: Value) {
        let now_value = lock(&self.limiters).offer(topic, Instant::now(), value);
        match now_value {
            Some(v) => self.publish_state(topic, &v),
            None => self.wake.notify_one(),
        }
    }

    /// When a kept retained reading is due.
    pub(crate) fn retained_due(&self) -> Option<Instant> {
        lock(&self.limiters).due()
    }

    /// Publish the kept retained readings that are due.
    pub(crate) fn flush_retained(&self, now: Instant) {
        let due = lock(&self.limiters).poll(now);
        for (topic, value) in due {
            self.publish_state(topic, &value);
        }
    }

    /// A board is attached: its readings may go from now on.
    pub fn board_attached(&self) {
        lock(&self.limiters).board_attached();
    }

    /// The board is gone (lost, or we are leaving): every reading published so far is
    /// replaced by null, and none kept for later or still on its way (a queued sample) goes
    /// out until the next board, so that no retained reading (a measured 120 V, say)
    /// describes a board that is not there. The run record's `recording` state stays.
    pub fn clear_readings(&self) {
        let topics = lock(&self.limiters).board_gone();
        for topic in topics {
            self.publish_state(topic, &Value::Null);
        }
    }

    /// We are leaving: the readings go null as when the board is lost, and a record started
    /// by hand, if one was ever published, reads as stopped (it ends with this process).
    pub fn leaving(&self) {
        self.clear_readings();
        if lock(&self.limiters).forget("recording") {
            self.publish_state("recording", &json!({"recording": false}));
        }
    }

    fn publish_state(&self, topic: &str, value: &Value) {
        if let Err(e) = self.bus.publish_state(topic, value) {
            tracing::debug!(topic, error = %e, "could not publish a reading");
        }
    }

    /// The chip context now.
    pub fn chip(&self) -> ChipContext {
        lock(&self.chip).clone()
    }
}

/// A notice from the engine, as signals (and, for shorts and the interlock, retained state).
pub fn on_notice(ctx: &Ctx, notice: Notice) {
    match notice {
        Notice::Board(e) => on_board_event(ctx, e),
        Notice::Halted(h) => signal(ctx, "halted", json!(h)),
        Notice::PhaseStarted {
            index,
            of,
            label,
            board_us,
            ..
        } => signal(
            ctx,
            "sequence-progress",
            json!({"event": "phase-started", "phase": index, "of": of, "label": label,
                "board_time_us": board_us, "host_time_ms": unix_ms(SystemTime::now())}),
        ),
        Notice::PhaseEnded(result) => signal(ctx, "sequence-progress", phase_json(&result)),
    }
}

fn on_board_event(ctx: &Ctx, e: BoardEvent) {
    let times = |mut v: Value| {
        if let Value::Object(m) = &mut v {
            m.insert("board_time_us".into(), json!(e.board_time_us));
            m.insert("host_time_ms".into(), json!(unix_ms(e.received_wall)));
        }
        v
    };
    match e.event {
        Event::OutputEnabled | Event::OutputDisabled => {
            let inserted = e.event == Event::OutputEnabled;
            let name = if inserted {
                "chip-inserted"
            } else {
                "chip-removed"
            };
            // The signal stays `{}` as before; the retained `chip` carries the times.
            signal(ctx, name, json!({}));
            let chip = times(json!({"inserted": inserted, "source": "interlock event"}));
            ctx.telemetry.retained("chip", chip);
        }
        Event::CapacitanceExceeded {
            new_value,
            target,
            count,
            ..
        } => signal(
            ctx,
            "capacitance-exceeded",
            times(json!({"value": new_value, "target": target, "count": count})),
        ),
        Event::ShortsDetected { values } => {
            let shorts = times(json!({"channels": values, "source": "board"}));
            signal(ctx, "shorts-detected", shorts.clone());
            ctx.telemetry.retained("shorts", shorts);
        }
        Event::DropsDetected { drops, .. } => signal(ctx, "drops-detected", json!(drops)),
        Event::CapacitanceSaturated { error, .. } => {
            // The fork's report of a saturation it did not halt for.
            signal(ctx, "capacitance-saturated", times(json!({"error": error})))
        }
        // Halts come as their own notice; channel updates are the engine's business.
        Event::Halted { .. } | Event::ChannelsUpdated { .. } | Event::CapacitanceUpdated { .. } => {
        }
    }
}

/// A phase's result as JSON (times relative to its planned start, in ms).
pub fn phase_json(r: &PhaseResult) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    json!({
        "event": "phase-ended",
        "phase": r.index,
        "label": r.label,
        "reason": r.reason,
        "late_ms": ms(r.started.saturating_duration_since(r.planned_start)),
        "confirmed_after_ms": ms(r.confirmed.saturating_duration_since(r.started)),
        "duration_ms": ms(r.ended.saturating_duration_since(r.started)),
        "started_board_us": r.started_board_us,
        "capacitance": r.capacitance,
    })
}

fn signal(ctx: &Ctx, topic: &str, value: Value) {
    if let Err(err) = ctx.bus.signal(topic, &value) {
        tracing::warn!(topic, error = %err, "could not signal");
    }
}

/// Publish a capacitance reading made on request (retained `capacitance`) and return it.
pub fn publish_capacitance(ctx: &Ctx, farads: f64, board_us: Option<u64>) -> Value {
    let reading = json!({
        "value": farads,
        "unit": "F",
        "board_time_us": board_us,
        "host_time_ms": unix_ms(SystemTime::now()),
    });
    ctx.telemetry.retained("capacitance", reading.clone());
    reading
}

/// Publish a measured RMS voltage (retained `measured-voltage`) and return it.
pub fn publish_measured_voltage(ctx: &Ctx, volts: f64) -> Value {
    let reading = monitor::voltage_json(&ctx.telemetry, volts, None, SystemTime::now());
    ctx.telemetry.retained("measured-voltage", reading.clone());
    reading
}

/// Shorts found on request (retained `shorts`).
pub fn publish_shorts(ctx: &Ctx, channels: &[u16]) {
    let value = json!({"channels": channels, "source": "detect-shorts",
        "board_time_us": Value::Null, "host_time_ms": unix_ms(SystemTime::now())});
    ctx.telemetry.retained("shorts", value);
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
