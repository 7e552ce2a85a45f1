//! Calibration: what turns the board's farads into droplets.
//!
//! - [`fit`]: liquid and filler capacitance per mm² by least squares over electrode sets;
//!   the board's feedback correction from its on-board test capacitors.
//! - [`droplets`]: droplet detection from a per-channel scan against the calibration.
//! - [`store`]: what identifies a chip and a board, and the files calibrations are kept in.
//!
//! Areas come from the electrodes' outlines ([`crate::device`]), never from MicroDrop's own
//! `area` field (it is not proportional to them). Everything here but [`store`] is pure.

pub mod droplets;
pub mod fit;
pub mod store;

use serde::{Deserialize, Serialize};

pub use droplets::{detect, ChannelCoverage, Detection, Droplet};
pub use fit::{fit_capacitance, fit_feedback, AreaReading, CapacitanceFit, FeedbackFit};
pub use store::{layout_hash, CalibrationStore, ChipCalibration, FeedbackCalibration};

/// Why a calibration could not be made, loaded or kept.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// Not enough readings.
    #[error("{got} {what}: at least {need} are needed")]
    TooFew {
        /// What is counted.
        what: &'static str,
        /// How many there are.
        got: usize,
        /// How many are needed.
        need: usize,
    },
    /// The readings cannot separate the unknowns.
    #[error("{0}")]
    Degenerate(String),
    /// A reading or a result is not usable.
    #[error("{0}")]
    Invalid(String),
    /// A calibration file could not be read or written.
    #[error("calibration file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A calibration file is not what this program writes.
    #[error("calibration file {path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

/// Capacitance per mm² of a chip under liquid and under filler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Specific {
    /// Farads per mm² under liquid.
    pub liquid_f_per_mm2: f64,
    /// Farads per mm² under filler.
    pub filler_f_per_mm2: f64,
}

impl Specific {
    /// Fraction of `area_mm2` under liquid that reads `farads` (unclamped: noise can take it a
    /// little below 0 or above 1).
    pub fn coverage(&self, farads: f64, area_mm2: f64) -> f64 {
        let span = area_mm2 * (self.liquid_f_per_mm2 - self.filler_f_per_mm2);
        if !(span.is_finite() && span > 0.0) {
            return f64::NAN;
        }
        (farads - area_mm2 * self.filler_f_per_mm2) / span
    }

    /// The electrowetting force per unit length of contact line at `volts` RMS, N/mm:
    /// ½ · c · V² with c the capacitance per area under liquid, as the vendor's MicroDrop 2
    /// plugin reports it (sci-bots/microdrop.dropbot-plugin `pyutilib.py`
    /// `on_device_capacitance_update`: `1e3 * 0.5 * c_liquid * voltage ** 2`, c in F/mm²).
    pub fn force_n_per_mm(&self, volts: f64) -> f64 {
        1e3 * 0.5 * self.liquid_f_per_mm2 * volts * volts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_and_force() {
        let s = Specific {
            liquid_f_per_mm2: 1e-12,
            filler_f_per_mm2: 2e-14,
        };
        assert!((s.coverage(10.0 * 1e-12, 10.0) - 1.0).abs() < 1e-12);
        assert!(s.coverage(10.0 * 2e-14, 10.0).abs() < 1e-12);
        assert!(s.coverage(1.0, 0.0).is_nan());
        // 1 pF/mm² at 100 V: 0.5 · 1e-6 F/m² · 1e4 V² = 5 mN/m = 5 µN/mm.
        assert!((s.force_n_per_mm(100.0) - 5e-6).abs() < 1e-18);
    }
}
