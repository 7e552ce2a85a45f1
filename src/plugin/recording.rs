//! Which run records are open: one per `run-sequence` and `run-routes`, one per MicroDrop
//! protocol run (consecutive `execute` steps: it ends when no step came for
//! [`ReadingsOptions::protocol_gap`](super::telemetry::ReadingsOptions)), and one started by
//! hand (`start-recording` / `stop-recording`). Records need samples: while one is open and
//! the capacitance stream is off, the stream runs at `record_stream_ms`, and goes back off
//! when the last record closes (unless someone changed it meanwhile).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::context::{Ctx, RequestError};
use super::properties::InputError;
use super::requests::Answer;
use super::telemetry::{lock, unix_ms};
use crate::actuation::Ordered;
use crate::calibration::layout_hash;
use crate::runlog::{RecordFiles, Recorder};

/// An open record.
#[derive(Debug, Clone)]
pub struct Open {
    n: u64,
    files: RecordFiles,
}

#[derive(Debug)]
struct Protocol {
    open: Open,
    steps: u64,
    in_flight: u32,
    last_end: Instant,
}

/// The records open now.
#[derive(Debug, Default)]
pub struct Recordings {
    manual: Option<Open>,
    protocol: Option<Protocol>,
    /// Records that need the stream.
    holders: usize,
    /// The stream period to put back when the last one closes (we turned it on).
    restore: Option<u32>,
}

impl Open {
    /// Its files.
    pub fn files(&self) -> &RecordFiles {
        &self.files
    }
}

/// Open a record of `kind` for `request` (`None` if records are off or it failed).
pub fn begin(ctx: &Ctx, kind: &str, request: Value) -> Option<Open> {
    let recorder = ctx.telemetry.recorder.as_ref()?;
    let summary = summary(ctx, kind, request);
    let id = recorder
        .open(kind, summary)
        .inspect_err(|e| crate::ratelimit::log_limited!(warn, error = %e, "run record not opened"))
        .ok()?;
    let interval = ctx.model().capacitance_update_interval_ms;
    let mut r = lock(&ctx.telemetry.recordings);
    r.holders += 1;
    if r.holders == 1 && interval == Some(0) {
        // Before the run is submitted: the engine keeps the order.
        let ms = ctx.telemetry.options.record_stream_ms;
        if let Ok(pending) = ctx.submit(Ordered::Stream(ms)) {
            r.restore = Some(0);
            tokio::spawn(async move {
                if let Err(e) = pending.wait(None).await {
                    tracing::warn!(error = %e, "the capacitance stream was not turned on for a record");
                }
            });
        }
    }
    Some(Open {
        n: id.n,
        files: id.files,
    })
}

/// Close `open`, merging `update` into its summary; the final summary (from a task).
pub async fn end(ctx: &Ctx, open: Open, update: Value) -> Option<Value> {
    let recorder = ctx.telemetry.recorder.clone()?;
    release_stream(ctx);
    close(recorder, open, update).await
}

async fn close(recorder: Recorder, open: Open, update: Value) -> Option<Value> {
    let mut update = update;
    super::set_field(&mut update, "ended_ms", json!(unix_ms(SystemTime::now())));
    recorder
        .close(open.n, update)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "run record not closed"))
        .ok()
}

fn release_stream(ctx: &Ctx) {
    let mut r = lock(&ctx.telemetry.recordings);
    r.holders = r.holders.saturating_sub(1);
    if r.holders > 0 {
        return;
    }
    let Some(old) = r.restore.take() else { return };
    // Only if nobody changed it meanwhile.
    let ours = ctx.telemetry.options.record_stream_ms;
    if ctx.model().capacitance_update_interval_ms == Some(ours) {
        if let Ok(pending) = ctx.submit(Ordered::Stream(old)) {
            tokio::spawn(async move {
                let _ = pending.wait(None).await;
            });
        }
    }
}

/// `start-recording` `{"label": text}`: record every sample until `stop-recording`.
pub fn start(ctx: &Arc<Ctx>, value: &Value) -> Answer {
    let name = "start-recording";
    if ctx.telemetry.recorder.is_none() {
        return Answer::Now(Err(off(name)));
    }
    if let Some(open) = &lock(&ctx.telemetry.recordings).manual {
        let e = InputError::new(
            name,
            format!("already recording to {}", open.files.csv.display()),
            "stop-recording first",
        );
        return Answer::Now(Err(e.into()));
    }
    let request = json!({"label": value.get("label")});
    match begin(ctx, "recording", request) {
        Some(open) => {
            let answer = json!({"csv": open.files.csv, "json": open.files.json});
            lock(&ctx.telemetry.recordings).manual = Some(open);
            ctx.telemetry
                .retained("recording", json!({"recording": true, "files": answer}));
            Answer::Now(Ok(answer))
        }
        None => Answer::Now(Err(RequestError::Busy(
            "the run record could not be opened (see the plugin's log)".into(),
        ))),
    }
}

/// `stop-recording`: the summary of the record started by hand.
pub fn stop(ctx: &Arc<Ctx>) -> Answer {
    let Some(open) = lock(&ctx.telemetry.recordings).manual.take() else {
        let e = InputError::new(
            "stop-recording",
            "nothing is being recorded",
            "start-recording first",
        );
        return Answer::Now(Err(e.into()));
    };
    let ctx = ctx.clone();
    Answer::Later(Box::pin(async move {
        ctx.telemetry
            .retained("recording", json!({"recording": false}));
        let summary = end(&ctx, open, json!({"outcome": "stopped"})).await;
        Ok(summary.unwrap_or(Value::Null))
    }))
}

fn off(name: &str) -> RequestError {
    InputError::new(
        name,
        "run records are off (no runs directory)",
        "start the plugin with --runs-dir DIR",
    )
    .into()
}

/// A protocol step (`execute`) starts: the protocol's record opens with its first step.
pub fn step_begin(ctx: &Ctx) {
    let open_now = lock(&ctx.telemetry.recordings).protocol.is_none();
    let opened = match open_now {
        true => begin(
            ctx,
            "protocol",
            json!({"source": "MicroDrop protocol (execute steps)"}),
        ),
        false => None,
    };
    let mut r = lock(&ctx.telemetry.recordings);
    if let Some(open) = opened {
        r.protocol = Some(Protocol {
            open,
            steps: 0,
            in_flight: 0,
            last_end: Instant::now(),
        });
    }
    if let Some(p) = r.protocol.as_mut() {
        p.steps += 1;
        p.in_flight += 1;
    }
}

/// A protocol step ended.
pub fn step_end(ctx: &Ctx) {
    if let Some(p) = lock(&ctx.telemetry.recordings).protocol.as_mut() {
        p.in_flight = p.in_flight.saturating_sub(1);
        p.last_end = Instant::now();
    }
}

/// When the protocol's record ends unless another step comes.
pub fn protocol_deadline(ctx: &Ctx) -> Option<Instant> {
    let r = lock(&ctx.telemetry.recordings);
    let p = r.protocol.as_ref().filter(|p| p.in_flight == 0)?;
    Some(p.last_end + ctx.telemetry.options.protocol_gap)
}

/// Close the protocol's record if its gap has passed.
pub fn protocol_expired(ctx: &Ctx) {
    let due = protocol_deadline(ctx).is_some_and(|d| Instant::now() >= d);
    if !due {
        return;
    }
    let Some(p) = lock(&ctx.telemetry.recordings).protocol.take() else {
        return;
    };
    let Some(recorder) = ctx.telemetry.recorder.clone() else {
        return;
    };
    release_stream(ctx);
    let update = json!({"outcome": "ended", "steps": p.steps});
    tokio::spawn(close(recorder, p.open, update));
}

/// The summary written when a record opens.
fn summary(ctx: &Ctx, kind: &str, request: Value) -> Value {
    let m = ctx.model();
    let device = m.device.as_ref().map(|d| {
        let electrodes: Vec<Value> = d
            .electrodes()
            .iter()
            .map(|e| json!({"id": e.id, "channels": e.channels, "area_mm2": e.area_mm2}))
            .collect();
        json!({"layout_hash": layout_hash(d), "electrodes": electrodes})
    });
    json!({
        "kind": kind,
        "started_ms": unix_ms(SystemTime::now()),
        "request": request,
        "plugin": {"name": ctx.name, "version": env!("CARGO_PKG_VERSION")},
        "board": m.info(),
        "status": m.status(),
        "settings": {
            "voltage": m.voltage,
            "frequency": m.frequency,
            "hv_output_enabled": m.hv_output_enabled,
            "capacitance_update_interval_ms": m.capacitance_update_interval_ms,
            "disabled_channels": m.disabled,
            "actuated_channels": m.actuated,
            "record_stream_ms": ctx.telemetry.options.record_stream_ms,
        },
        "calibration": lock(&ctx.telemetry.calibration).to_json(),
        "device": device,
        "columns": {
            "host_time_ms": "ms since the Unix epoch when the host received the sample",
            "board_time_us": "board clock, unwrapped microseconds",
            "phase": "sequence phase (index in the run)",
            "actuated": "channels the board drove, space-separated",
            "capacitance_f": "farads",
            "coverage": "fraction of the actuated area under liquid (calibrated chips)",
            "voltage_v": "actuation voltage the board measured with the sample, V RMS",
            "frequency_hz": "waveform frequency, Hz",
        },
    })
}
