//! The sample task: every capacitance sample the engine tags goes to the batched signal
//! `capacitance-updated`, the newest to the rate-limited retained `capacitance`, and each one
//! to the open run records. It runs on its own task so a fast stream never holds up the
//! plugin's main loop; it ends when the engine does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::limiter::Batch;
use super::{unix_ms, ChipContext, Telemetry};
use crate::actuation::Sample;
use crate::runlog::Row;

/// Samples taken from the queue at once.
const CHUNK: usize = 256;

/// Start the sample task on the current runtime.
pub fn spawn(telemetry: Arc<Telemetry>, samples: mpsc::Receiver<Sample>) {
    tokio::spawn(run(telemetry, samples));
}

async fn run(telemetry: Arc<Telemetry>, mut samples: mpsc::Receiver<Sample>) {
    let options = telemetry.options.clone();
    let mut batch = Batch::new(options.batch_max, options.batch_interval);
    let mut areas = AreaCache::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut sent = 0u64;
    loop {
        let due = [batch.due(), telemetry.retained_due()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            n = samples.recv_many(&mut chunk, CHUNK) => {
                if n == 0 {
                    break;
                }
                let chip = telemetry.chip();
                let now = Instant::now();
                let mut newest = None;
                for sample in chunk.drain(..) {
                    let item = sample_json(&sample, &chip, &mut areas);
                    if let Some(recorder) = telemetry.recorder.as_ref().filter(|r| r.is_recording()) {
                        recorder.row(row(&sample, &item, chip.frequency));
                    }
                    if let Some(full) = batch.push(now, item.clone()) {
                        publish_batch(&telemetry, full, &mut sent);
                    }
                    newest = Some((item, sample.voltage));
                }
                if let Some((item, volts)) = newest {
                    telemetry.retained("capacitance", retained_json(item, &chip, volts));
                }
            }
            () = sleep_until(due) => {}
            () = telemetry.wake.notified() => {}
        }
        let now = Instant::now();
        if let Some(old) = batch.poll(now) {
            publish_batch(&telemetry, old, &mut sent);
        }
        telemetry.flush_retained(now);
    }
    let rest = batch.take();
    if !rest.is_empty() {
        publish_batch(&telemetry, rest, &mut sent);
    }
    telemetry.flush_retained(Instant::now() + telemetry.options.retained_interval);
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// One message on `capacitance-updated`: `{"samples": [...], "count": n, "seq": k}` (`seq`
/// numbers the batches, so a reader sees one it missed).
fn publish_batch(telemetry: &Telemetry, samples: Vec<Value>, sent: &mut u64) {
    *sent += 1;
    let message = json!({"count": samples.len(), "seq": *sent, "unit": "F", "samples": samples});
    if let Err(e) = telemetry.bus().signal("capacitance-updated", &message) {
        tracing::debug!(error = %e, "could not publish a capacitance batch");
    }
}

/// A sample as it appears in a batch.
fn sample_json(s: &Sample, chip: &ChipContext, areas: &mut AreaCache) -> Value {
    let coverage = chip.specific.and_then(|specific| {
        let area = areas.area(chip, &s.actuated)?;
        Some(specific.coverage(s.farads, area)).filter(|c| c.is_finite())
    });
    json!({
        "value": s.farads,
        "board_time_us": s.board_us,
        "host_time_ms": unix_ms(s.received_wall),
        "n_samples": s.n_samples,
        "voltage": s.voltage,
        "phase": s.phase,
        "label": s.label,
        "actuated": *s.actuated,
        "coverage": coverage,
    })
}

/// The retained `capacitance`: the newest sample, with its unit and, on a calibrated chip,
/// the electrowetting force per unit length at its voltage.
fn retained_json(mut item: Value, chip: &ChipContext, volts: f64) -> Value {
    if let Value::Object(m) = &mut item {
        m.insert("unit".into(), json!("F"));
        let force = chip.specific.map(|s| s.force_n_per_mm(volts));
        m.insert("force_n_per_mm".into(), json!(force));
    }
    item
}

fn row(s: &Sample, item: &Value, frequency: Option<f32>) -> Row {
    let actuated = s
        .actuated
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    Row {
        host_time_ms: unix_ms(s.received_wall),
        board_time_us: s.board_us,
        phase: s.phase,
        label: s.label.clone(),
        actuated,
        capacitance_f: s.farads,
        coverage: item["coverage"].as_f64(),
        voltage_v: s.voltage,
        frequency_hz: frequency,
    }
}

/// Area of the electrodes on a channel set, mm², for the set last asked (sets change only
/// at phase boundaries, samples come in hundreds).
#[derive(Default)]
struct AreaCache {
    set: Option<Arc<BTreeSet<u16>>>,
    device: Option<usize>,
    area: Option<f64>,
}

impl AreaCache {
    fn area(&mut self, chip: &ChipContext, set: &Arc<BTreeSet<u16>>) -> Option<f64> {
        let device = chip.device.as_ref()?;
        let device_id = Arc::as_ptr(device) as usize;
        let same = self.device == Some(device_id)
            && self
                .set
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, set) || s == set);
        if !same {
            let mut seen = BTreeSet::new();
            let area: f64 = set
                .iter()
                .flat_map(|&c| device.electrodes_on_channel(c))
                .filter(|e| seen.insert(e.id.as_str()))
                .map(|e| e.area_mm2)
                .sum();
            self.set = Some(set.clone());
            self.device = Some(device_id);
            self.area = (area > 0.0).then_some(area);
        }
        self.area
    }
}
