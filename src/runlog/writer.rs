//! The writer thread: open records, rows to every open record, flushes at least once a
//! second, summaries at open and close.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{json, Value};

use super::{merge, Counters, RecordFiles, RecordId, Row, RunlogError, SharedCounters};

/// Longest time a row waits in the writer's buffers before it is handed to the OS.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often a close looks again for room in a full queue.
const CLOSE_RETRY: Duration = Duration::from_millis(5);

enum Message {
    Open {
        id: RecordId,
        summary: Value,
    },
    Row(Row),
    Close {
        n: u64,
        update: Value,
        closed: Option<tokio::sync::oneshot::Sender<Value>>,
    },
    Stop,
}

/// The handle of the writer thread (cloneable; the thread ends when the last handle drops).
#[derive(Clone)]
pub struct Recorder {
    dir: PathBuf,
    tx: Sender<Message>,
    counters: SharedCounters,
    _thread: Arc<ThreadGuard>,
}

struct ThreadGuard {
    tx: Sender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
        let thread = crate::sync::lock(&self.thread).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Recorder {
    /// A writer thread for records in `dir` (made when the first record opens), with a queue
    /// of `capacity` rows.
    pub fn spawn(dir: impl Into<PathBuf>, capacity: usize) -> Result<Recorder, RunlogError> {
        let dir = dir.into();
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(16));
        let counters: SharedCounters = Arc::default();
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("run-records".into())
            .spawn(move || Writer::new(thread_counters).run(&rx))
            .map_err(|source| RunlogError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        Ok(Recorder {
            dir,
            tx: tx.clone(),
            counters,
            _thread: Arc::new(ThreadGuard {
                tx,
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    /// The directory records go to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether any record is open (rows are worth sending).
    pub fn is_recording(&self) -> bool {
        self.counters.open.load(Ordering::Acquire) > 0
    }

    /// Rows dropped because the queue was full, since start; rows written.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.dropped.load(Ordering::Relaxed),
            self.counters.written.load(Ordering::Relaxed),
        )
    }

    /// Open a record of `kind` with `summary` (written at once by the thread); rows sent
    /// from now on go to it until it is closed. A file that cannot be made is reported in
    /// the log and in the summary [`Recorder::close`] returns.
    pub fn open(&self, kind: &str, summary: Value) -> Result<RecordId, RunlogError> {
        let n = self.counters.next_number();
        let id = RecordId {
            n,
            files: RecordFiles::new(&self.dir, kind, n, SystemTime::now()),
        };
        // Counted before the writer takes it: rows sent from now on are not skipped.
        self.counters.open.fetch_add(1, Ordering::AcqRel);
        let message = Message::Open {
            id: id.clone(),
            summary,
        };
        // Never waits: it is called from the plugin's main loop.
        if let Err(e) = self.tx.try_send(message) {
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            return Err(match e {
                TrySendError::Full(_) => RunlogError::Behind,
                TrySendError::Disconnected(_) => RunlogError::Stopped,
            });
        }
        Ok(id)
    }

    /// One row for every open record (dropped and counted if the queue is full).
    pub fn row(&self, row: Row) {
        match self.tx.try_send(Message::Row(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Close record `n`, merging `update` into its summary; the final summary.
    pub async fn close(&self, n: u64, update: Value) -> Result<Value, RunlogError> {
        let (closed, answer) = tokio::sync::oneshot::channel();
        let mut message = Message::Close {
            n,
            update,
            closed: Some(closed),
        };
        // A record must close: wait for room, without blocking the runtime's thread.
        loop {
            match self.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) => message = m,
                Err(TrySendError::Disconnected(_)) => return Err(RunlogError::Stopped),
            }
            tokio::time::sleep(CLOSE_RETRY).await;
        }
        answer.await.map_err(|_| RunlogError::Stopped)
    }
}

struct Open {
    files: RecordFiles,
    csv: csv::Writer<BufWriter<File>>,
    summary: Value,
    rows: u64,
    dropped_at_open: u64,
    error: Option<String>,
}

struct Writer {
    counters: SharedCounters,
    open: BTreeMap<u64, Open>,
    /// Records that could not be opened, and why (told at their close).
    failed: BTreeMap<u64, String>,
    /// The oldest row not yet handed to the OS.
    dirty_since: Option<Instant>,
}

impl Writer {
    fn new(counters: Arc<Counters>) -> Self {
        Writer {
            counters,
            open: BTreeMap::new(),
            failed: BTreeMap::new(),
            dirty_since: None,
        }
    }

    fn run(mut self, rx: &Receiver<Message>) {
        loop {
            let message = match self.dirty_since {
                Some(since) => match rx.recv_deadline(since + FLUSH_EVERY) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Message::Stop),
                },
                None => Some(rx.recv().unwrap_or(Message::Stop)),
            };
            match message {
                Some(Message::Stop) => break,
                Some(m) => self.take(m),
                None => {}
            }
            if self.dirty_since.is_some_and(|t| t.elapsed() >= FLUSH_EVERY) {
                self.flush();
            }
        }
        let open: Vec<u64> = self.open.keys().copied().collect();
        for n in open {
            let update = json!({"outcome": "interrupted", "note": "the plugin stopped"});
            self.close(n, update);
        }
    }

    fn take(&mut self, message: Message) {
        match message {
            Message::Open { id, summary } => {
                if let Err(e) = self.open(&id, summary) {
                    tracing::warn!(error = %e, "run record could not be opened");
                    self.failed.insert(id.n, e.to_string());
                    self.counters.open.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Message::Row(row) => self.row(&row),
            Message::Close { n, update, closed } => {
                let summary = self.close(n, update);
                if let Some(closed) = closed {
                    let _ = closed.send(summary);
                }
            }
            Message::Stop => {}
        }
    }

    fn open(&mut self, id: &RecordId, summary: Value) -> Result<(), RunlogError> {
        let io = |path: &std::path::Path, source| RunlogError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = id.files.csv.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let file = File::create(&id.files.csv).map_err(|e| io(&id.files.csv, e))?;
        // The header is written here, even for a record that gets no row; `serialize`
        // must not write it again.
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::new(file));
        csv.write_record([
            "host_time_ms",
            "board_time_us",
            "phase",
            "label",
            "actuated",
            "capacitance_f",
            "coverage",
            "voltage_v",
            "frequency_hz",
        ])
        .and_then(|()| csv.flush().map_err(csv::Error::from))
        .map_err(|e| io(&id.files.csv, std::io::Error::other(e)))?;
        let mut summary = summary;
        merge(
            &mut summary,
            json!({"csv": id.files.csv, "outcome": "running", "rows": 0}),
        );
        write_json(&id.files.json, &summary).map_err(|e| io(&id.files.json, e))?;
        self.open.insert(
            id.n,
            Open {
                files: id.files.clone(),
                csv,
                summary,
                rows: 0,
                dropped_at_open: self.counters.dropped.load(Ordering::Relaxed),
                error: None,
            },
        );
        Ok(())
    }

    fn row(&mut self, row: &Row) {
        for record in self.open.values_mut() {
            if record.error.is_some() {
                continue;
            }
            match record.csv.serialize(row) {
                Ok(()) => record.rows += 1,
                Err(e) => {
                    tracing::warn!(file = %record.files.csv.display(), error = %e,
                        "run record: a row could not be written; no more rows go to it");
                    record.error = Some(e.to_string());
                }
            }
        }
        if !self.open.is_empty() {
            self.counters.written.fetch_add(1, Ordering::Relaxed);
            self.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    fn flush(&mut self) {
        for record in self.open.values_mut() {
            if let Err(e) = record.csv.flush() {
                if record.error.is_none() {
                    tracing::warn!(file = %record.files.csv.display(), error = %e, "run record: flush failed");
                    record.error = Some(e.to_string());
                }
            }
        }
        self.dirty_since = None;
    }

    fn close(&mut self, n: u64, update: Value) -> Value {
        let Some(mut record) = self.open.remove(&n) else {
            let why = self.failed.remove(&n);
            let why = why.unwrap_or_else(|| format!("record {n} is not open"));
            return json!({"write_error": why});
        };
        self.counters.open.fetch_sub(1, Ordering::AcqRel);
        let synced = record
            .csv
            .flush()
            .and_then(|()| record.csv.get_ref().get_ref().sync_data());
        if let (Err(e), None) = (synced, &record.error) {
            record.error = Some(e.to_string());
        }
        let dropped = self.counters.dropped.load(Ordering::Relaxed) - record.dropped_at_open;
        let mut summary = record.summary;
        merge(&mut summary, update);
        merge(
            &mut summary,
            json!({"rows": record.rows, "rows_dropped": dropped, "write_error": record.error}),
        );
        if let Err(e) = write_json(&record.files.json, &summary) {
            tracing::warn!(file = %record.files.json.display(), error = %e, "run record: summary not written");
        }
        summary
    }
}

/// Write `value` as pretty JSON through a temporary file and a rename.
fn write_json(path: &std::path::Path, value: &Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32, phase: Option<usize>) -> Row {
        Row {
            host_time_ms: 1.0e12 + f64::from(i),
            board_time_us: Some(u64::from(i) * 1000),
            phase,
            label: phase.map(|p| format!("p{p}")),
            actuated: "1 2".into(),
            capacitance_f: 1e-12 * f64::from(i),
            coverage: None,
            voltage_v: 100.0,
            frequency_hz: Some(10_000.0),
        }
    }

    #[tokio::test]
    async fn rows_go_to_every_open_record_and_summaries_say_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::spawn(dir.path().join("runs"), 1024).unwrap();
        assert!(!recorder.is_recording());
        let a = recorder.open("manual", json!({"kind": "manual"})).unwrap();
        assert!(recorder.is_recording());
        recorder.row(row(1, None));
        let b = recorder
            .open("run-sequence", json!({"kind": "run"}))
            .unwrap();
        recorder.row(row(2, Some(0)));
        recorder.row(row(3, Some(1)));
        let sb = recorder
            .close(b.n, json!({"outcome": "completed"}))
            .await
            .unwrap();
        let sa = recorder
            .close(a.n, json!({"outcome": "stopped"}))
            .await
            .unwrap();
        assert!(!recorder.is_recording());
        assert_eq!(
            (sa["rows"].as_u64(), sb["rows"].as_u64()),
            (Some(3), Some(2))
        );
        let rows = super::super::read_rows(&b.files.csv).unwrap();
        assert_eq!(rows, vec![row(2, Some(0)), row(3, Some(1))]);
        let on_disk: Value =
            serde_json::from_slice(&std::fs::read(&b.files.json).unwrap()).unwrap();
        assert_eq!(on_disk["outcome"], "completed");
        assert_eq!(on_disk["kind"], "run");
        assert_eq!(on_disk["rows_dropped"], 0);
    }

    #[tokio::test]
    async fn rows_reach_the_file_within_a_second_while_the_record_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::spawn(dir.path(), 1024).unwrap();
        let a = recorder.open("manual", json!({})).unwrap();
        recorder.row(row(1, None));
        // The writer flushes on its own: the row is in the file while the record is open.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = super::super::read_rows(&a.files.csv).unwrap_or_default();
            if rows.len() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the row never reached the file");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        recorder.close(a.n, json!({})).await.unwrap();
    }
}
