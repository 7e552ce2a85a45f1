//! What identifies a chip and a board, and the files their calibrations live in.
//!
//! A chip is its electrode layout: a hash of every electrode's id, channels and outline
//! (to the micrometre), so the same design loaded again is the same chip, and a design with
//! one channel changed is another. Capacitance per mm² belongs to a chip *on a board* (the
//! board's front end reads it): one file per (chip, board uuid). The feedback correction
//! belongs to the board alone: one file per board. Files are JSON, written whole to a
//! temporary file and renamed, so a crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fit::{AreaReading, CapacitanceFit, FeedbackFit};
use super::{CalibrationError, Specific};
use crate::device::Device;

/// Hex digits of the layout hash kept in names (64 bits).
const HASH_HEX: usize = 16;

/// A chip's identity: a hash of its electrode layout.
pub fn layout_hash(device: &Device) -> String {
    let mut h = Sha256::new();
    for e in device.electrodes() {
        h.update(e.id.as_bytes());
        h.update([0]);
        for c in &e.channels {
            h.update(c.to_le_bytes());
        }
        h.update([0]);
        for p in &e.outline {
            // Micrometres: the same design parsed twice hashes the same.
            h.update(((p.x * 1e3).round() as i64).to_le_bytes());
            h.update(((p.y * 1e3).round() as i64).to_le_bytes());
        }
        h.update([0xff]);
    }
    h.finalize()
        .iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One electrode set as it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetRecord {
    /// The electrodes actuated.
    pub electrodes: Vec<String>,
    /// Those of them that were under liquid.
    pub liquid: Vec<String>,
    /// Its areas and the median reading.
    pub reading: AreaReading,
    /// Every reading, farads.
    pub readings_f: Vec<f64>,
}

/// A chip's capacitance per mm², as measured on one board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChipCalibration {
    /// The chip ([`layout_hash`]).
    pub chip: String,
    /// The board's uuid.
    pub board: String,
    /// When it was made, ms since the Unix epoch.
    pub made_ms: f64,
    /// RMS voltage and frequency it was made at.
    pub voltage: Option<f32>,
    /// Hz.
    pub frequency: Option<f32>,
    /// The fit.
    pub fit: CapacitanceFit,
    /// What it was fitted to.
    pub sets: Vec<SetRecord>,
}

impl ChipCalibration {
    /// The capacitance per mm² it found.
    pub fn specific(&self) -> Specific {
        Specific {
            liquid_f_per_mm2: self.fit.liquid_f_per_mm2,
            filler_f_per_mm2: self.fit.filler_f_per_mm2,
        }
    }
}

/// A board's feedback correction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackCalibration {
    /// The board's uuid.
    pub board: String,
    /// When it was made, ms since the Unix epoch.
    pub made_ms: f64,
    /// The feedback capacitor the board computed with before, farads.
    pub feedback_before_f: f64,
    /// The corrected one, set on the board at every connection, farads.
    pub feedback_f: f64,
    /// The fit.
    pub fit: FeedbackFit,
    /// Nominal capacitance of each list of readings (0: none connected), farads.
    pub nominal_f: Vec<f64>,
    /// The readings, farads.
    pub readings_f: Vec<Vec<f64>>,
}

/// The directory calibrations are kept in.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationStore {
    dir: PathBuf,
}

impl CalibrationStore {
    /// Calibrations in `dir` (made when the first one is saved).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CalibrationStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `chip` on `board`.
    pub fn chip_path(&self, chip: &str, board: &str) -> PathBuf {
        self.dir
            .join(format!("chip-{}-board-{}.json", safe(chip), safe(board)))
    }

    /// The file of `board`'s feedback correction.
    pub fn feedback_path(&self, board: &str) -> PathBuf {
        self.dir
            .join(format!("board-{}-feedback.json", safe(board)))
    }

    /// The calibration of `chip` on `board`, if one was saved.
    pub fn load_chip(
        &self,
        chip: &str,
        board: &str,
    ) -> Result<Option<ChipCalibration>, CalibrationError> {
        load(&self.chip_path(chip, board))
    }

    /// Keep `c` (replacing the previous one of its chip and board).
    pub fn save_chip(&self, c: &ChipCalibration) -> Result<PathBuf, CalibrationError> {
        let path = self.chip_path(&c.chip, &c.board);
        save(&path, c)?;
        Ok(path)
    }

    /// The feedback correction of `board`, if one was saved.
    pub fn load_feedback(
        &self,
        board: &str,
    ) -> Result<Option<FeedbackCalibration>, CalibrationError> {
        load(&self.feedback_path(board))
    }

    /// Keep `f` (replacing the previous one of its board).
    pub fn save_feedback(&self, f: &FeedbackCalibration) -> Result<PathBuf, CalibrationError> {
        let path = self.feedback_path(&f.board);
        save(&path, f)?;
        Ok(path)
    }
}

/// A name part made of letters, digits and dashes only.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn io(path: &Path, source: std::io::Error) -> CalibrationError {
    CalibrationError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, CalibrationError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| CalibrationError::Json {
            path: path.display().to_string(),
            source,
        })
}

fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), CalibrationError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let text = serde_json::to_string_pretty(value).map_err(|source| CalibrationError::Json {
        path: path.display().to_string(),
        source,
    })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calibration(chip: &str) -> ChipCalibration {
        ChipCalibration {
            chip: chip.into(),
            board: "0a1b-2c".into(),
            made_ms: 1.0,
            voltage: Some(100.0),
            frequency: None,
            fit: CapacitanceFit {
                liquid_f_per_mm2: 1e-12,
                filler_f_per_mm2: 2e-14,
                residuals_f: vec![0.0],
                relative_rms: 0.0,
            },
            sets: Vec::new(),
        }
    }

    #[test]
    fn the_default_chip_has_a_stable_hash_that_follows_its_channels() {
        let device = Device::microdrop3_default().unwrap();
        let h = layout_hash(&device);
        assert_eq!(h.len(), HASH_HEX);
        assert_eq!(h, layout_hash(&Device::microdrop3_default().unwrap()));
        let mut value = device.to_three_object_value();
        value[0]["channel"] = serde_json::json!("3,4");
        let changed = Device::from_three_object_value(&value).unwrap();
        assert_ne!(h, layout_hash(&changed));
    }

    #[test]
    fn saved_calibrations_load_back_and_missing_ones_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = CalibrationStore::new(dir.path().join("cal"));
        assert!(store.load_chip("abc", "0a1b-2c").unwrap().is_none());
        let c = calibration("abc");
        let path = store.save_chip(&c).unwrap();
        assert!(path.starts_with(store.dir()));
        assert_eq!(store.load_chip("abc", "0a1b-2c").unwrap(), Some(c));
        std::fs::write(store.chip_path("bad", "0a1b-2c"), "{").unwrap();
        assert!(matches!(
            store.load_chip("bad", "0a1b-2c"),
            Err(CalibrationError::Json { .. })
        ));
        assert_eq!(
            store.chip_path("../x", "y/z").file_name().unwrap(),
            "chip-___x-board-y_z.json"
        );
    }
}
