//! Run records: every sample of a run (or of a recording started by hand) as a CSV row, and a
//! JSON summary beside it (board, firmware, settings, calibration, device, outcome).
//!
//! Files are written by one thread ([`Recorder`]) fed through a bounded queue, so nothing on
//! the async runtime waits for a disk. Rows are flushed to the operating system at least once
//! a second while they come (a crash loses at most the last second); the summary is written
//! when a record opens (so a crash leaves one) and again when it closes, with the outcome.
//! A full queue drops rows rather than stall the readings; the summary counts them.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use writer::Recorder;

/// Why a record could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum RunlogError {
    /// The writer thread is gone.
    #[error("the run record writer has stopped")]
    Stopped,
    /// The writer's queue is full (it writes each summary to disk and syncs it): a record
    /// opened now would wait for the disk, and so would its asker.
    #[error("the run record writer is behind (its queue is full); try again")]
    Behind,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A CSV file could not be read.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: csv::Error,
    },
}

/// One sample as a row of the CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Host wall-clock time it arrived, ms since the Unix epoch.
    pub host_time_ms: f64,
    /// Board time, unwrapped microseconds.
    pub board_time_us: Option<u64>,
    /// Sequence phase it was taken in (index in the run), if any.
    pub phase: Option<usize>,
    /// The phase's label.
    pub label: Option<String>,
    /// Actuated channels, space-separated.
    pub actuated: String,
    /// Capacitance, farads.
    pub capacitance_f: f64,
    /// Fraction of the actuated electrodes' area under liquid, when the chip is calibrated.
    pub coverage: Option<f64>,
    /// Actuation voltage the board measured with the sample, V RMS.
    pub voltage_v: f64,
    /// Waveform frequency, Hz.
    pub frequency_hz: Option<f32>,
}

/// Where one record's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordFiles {
    /// The rows.
    pub csv: PathBuf,
    /// The summary.
    pub json: PathBuf,
}

impl RecordFiles {
    /// The files of a record of `kind` numbered `n`, opened at `at`, in `dir`:
    /// `<UTC time>-<kind>-<n>.csv` and `.json`.
    pub fn new(dir: &Path, kind: &str, n: u64, at: SystemTime) -> Self {
        let stamp = humantime::format_rfc3339_seconds(at)
            .to_string()
            .replace(':', "");
        let kind: String = kind
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let base = format!("{stamp}-{kind}-{n}");
        RecordFiles {
            csv: dir.join(format!("{base}.csv")),
            json: dir.join(format!("{base}.json")),
        }
    }
}

/// Counters shared by the recorder's handles and its thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records open now.
    pub open: AtomicUsize,
    /// Rows dropped because the queue was full, since start.
    pub dropped: AtomicU64,
    /// Rows written, since start.
    pub written: AtomicU64,
    /// Records numbered so far.
    pub numbered: AtomicU64,
}

impl Counters {
    fn next_number(&self) -> u64 {
        self.numbered.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A record that is open; close it with [`Recorder::close`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordId {
    /// Its number (unique in this process).
    pub n: u64,
    /// Its files.
    pub files: RecordFiles,
}

/// Read a record's rows back (for plots and checks).
pub fn read_rows(path: &Path) -> Result<Vec<Row>, RunlogError> {
    let csv_error = |source| RunlogError::Csv {
        path: path.display().to_string(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
    reader
        .deserialize()
        .collect::<Result<Vec<Row>, _>>()
        .map_err(csv_error)
}

/// Merge `update`'s fields into `summary` (both objects; anything else replaces it).
pub(crate) fn merge(summary: &mut Value, update: Value) {
    match (summary, update) {
        (Value::Object(s), Value::Object(u)) => s.extend(u),
        (s, u) => *s = u,
    }
}

/// Shared handle type of the counters.
pub(crate) type SharedCounters = Arc<Counters>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_say_when_and_what() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let f = RecordFiles::new(Path::new("/r"), "run sequence", 3, at);
        assert_eq!(f.csv, Path::new("/r/1970-01-02T000000Z-run-sequence-3.csv"));
        assert_eq!(f.json.extension().unwrap(), "json");
    }
}
