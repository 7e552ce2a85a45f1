//! The chip's calibration in the plugin: which chip and board are in use, their saved
//! calibrations (loaded at each connection and each device change, from the data directory),
//! the retained `calibration` state, and the triggers that make new ones ([`triggers`]).
//!
//! A saved feedback correction is set on the board at every connection: the firmware keeps
//! its feedback capacitor in RAM (it is not saved to EEPROM, as dropbot.py's `calibrate_C16`
//! does not), so a restarted board has its own value again.

pub mod triggers;

use std::sync::Arc;

use serde_json::{json, Value};

use super::context::Ctx;
use super::telemetry::{lock, Telemetry};
use crate::actuation::Ordered;
use crate::calibration::{
    layout_hash, CalibrationStore, ChipCalibration, Detection, FeedbackCalibration,
};

/// Calibrations known for the chip and board in use.
#[derive(Debug, Default)]
pub struct CalibrationState {
    store: Option<CalibrationStore>,
    /// The board connection and uuid they were loaded for.
    board: Option<(u64, String)>,
    /// The chip (layout hash) they were loaded for.
    chip_hash: Option<String>,
    /// The chip's capacitance per mm² on this board.
    pub chip: Option<ChipCalibration>,
    /// The board's feedback correction.
    pub feedback: Option<FeedbackCalibration>,
    /// The last droplet detection.
    pub droplets: Option<Detection>,
}

impl CalibrationState {
    /// No calibration yet; saved ones live in `dir` (`None`: nowhere).
    pub fn new(dir: Option<std::path::PathBuf>) -> Self {
        CalibrationState {
            store: dir.map(CalibrationStore::new),
            ..CalibrationState::default()
        }
    }

    /// Where calibrations are saved, if anywhere.
    pub fn store(&self) -> Option<&CalibrationStore> {
        self.store.as_ref()
    }

    /// The board uuid and chip hash in use, if both are known.
    pub fn key(&self) -> Option<(String, String)> {
        Some((self.board.as_ref()?.1.clone(), self.chip_hash.clone()?))
    }

    /// The retained `calibration` value.
    pub fn to_json(&self) -> Value {
        let chip = self.chip.as_ref().map(|c| {
            json!({
                "liquid_f_per_mm2": c.fit.liquid_f_per_mm2,
                "filler_f_per_mm2": c.fit.filler_f_per_mm2,
                "relative_rms": c.fit.relative_rms,
                "residuals_f": c.fit.residuals_f,
                "sets": c.sets.len(),
                "voltage": c.voltage,
                "frequency": c.frequency,
                "made_ms": c.made_ms,
            })
        });
        let feedback = self.feedback.as_ref().map(|f| {
            json!({
                "gain": f.fit.gain,
                "offset_f": f.fit.offset_f,
                "ratios": f.fit.ratios,
                "feedback_before_f": f.feedback_before_f,
                "feedback_f": f.feedback_f,
                "made_ms": f.made_ms,
            })
        });
        json!({
            "board": self.board.as_ref().map(|(_, uuid)| uuid),
            "chip": self.chip_hash,
            "capacitance": chip,
            "feedback": feedback,
            "saved_in": self.store.as_ref().map(|s| s.dir().display().to_string()),
        })
    }
}

/// Follow the model: a new board connection or a new device loads their saved calibrations
/// (and sets the board's saved feedback correction); the readings learn the device, the
/// calibration and the frequency. Cheap when nothing changed: call it after every change.
pub fn follow(ctx: &Ctx) {
    let (connection, uuid, device, frequency) = {
        let m = ctx.model();
        let uuid = m.board().map(|i| i.uuid.clone());
        (m.connection(), uuid, m.device.clone(), m.frequency)
    };
    let telemetry = &ctx.telemetry;
    let device_changed = {
        let mut chip = lock(&telemetry.chip);
        chip.frequency = frequency;
        let same = match (&chip.device, &device) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        chip.device = device.clone();
        !same
    };
    let board = connection.zip(uuid);
    let mut state = lock(&telemetry.calibration);
    let board_changed = state.board != board;
    if !board_changed && !device_changed {
        return;
    }
    let hash = device.as_deref().map(layout_hash);
    let chip_changed = board_changed || hash != state.chip_hash;
    state.board = board.clone();
    state.chip_hash = hash;
    if board_changed {
        state.feedback = None;
        let loaded = board.as_ref().and_then(|(_, uuid)| {
            let store = state.store.as_ref()?;
            store
                .load_feedback(uuid)
                .inspect_err(|e| tracing::warn!(error = %e, "feedback correction not loaded"))
                .ok()?
        });
        if let Some(f) = &loaded {
            tracing::info!(
                feedback_f = f.feedback_f,
                "setting the board's saved feedback correction"
            );
            // Submitted now, before anything that measures: the engine keeps the order.
            let pending = ctx
                .actuator
                .submit(Ordered::SetFeedbackCapacitor(f.feedback_f));
            tokio::spawn(async move {
                if let Err(e) = pending.wait(None).await {
                    tracing::warn!(error = %e, "the saved feedback correction was not set");
                }
            });
        }
        state.feedback = loaded;
    }
    if chip_changed {
        state.droplets = None;
        state.chip = state.key().and_then(|(uuid, hash)| {
            let store = state.store.as_ref()?;
            store
                .load_chip(&hash, &uuid)
                .inspect_err(|e| tracing::warn!(error = %e, "chip calibration not loaded"))
                .ok()?
        });
        if state.chip.is_some() {
            tracing::info!(chip = ?state.chip_hash, "chip calibration loaded");
        }
    }
    publish(telemetry, &state);
}

/// Publish the retained `calibration` (and tell the readings the chip's calibration).
pub(crate) fn publish(telemetry: &Telemetry, state: &CalibrationState) {
    lock(&telemetry.chip).specific = state.chip.as_ref().map(ChipCalibration::specific);
    if let Err(e) = telemetry
        .bus()
        .publish_state("calibration", &state.to_json())
    {
        tracing::warn!(error = %e, "could not publish the calibration");
    }
}
