//! What the simulated board did, as JSON lines `{"t_us": .., "kind": .., ...}` stamped with
//! simulation time: packets in and out, channels, HV, droplets, capacitance, events, faults.
//! Written to a file and kept in memory (a bounded ring plus a broadcast for live readers).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::physics::DropletView;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Simulation time, microseconds.
    pub t_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub entry: TraceEntry,
}

/// What a trace line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceEntry {
    /// A packet from the host (`command` for DATA packets that decode).
    Rx {
        /// Packet type, e.g. `data`, `id_request`.
        packet: String,
        /// Packet id.
        id: u16,
        /// Command name, when the payload is a known command.
        command: Option<String>,
        /// Payload bytes, hex.
        payload: String,
    },
    /// A packet to the host (before any injected fault).
    Tx {
        /// Packet type, e.g. `data`, `stream`.
        packet: String,
        /// Packet id.
        id: u16,
        /// Payload bytes, hex.
        payload: String,
    },
    /// The channels driven and the disabled mask changed.
    Channels {
        /// Channels actuated.
        actuated: Vec<u16>,
        /// Channels disabled.
        disabled: Vec<u16>,
    },
    /// The HV settings or output changed.
    Hv {
        /// `hv_output_enabled`.
        enabled: bool,
        /// Output live (enabled and chip inserted).
        on: bool,
        /// Target RMS volts.
        voltage: f64,
        /// Hz.
        frequency: f64,
    },
    /// The chip was inserted or removed (the interlock, before the debounce).
    Chip {
        /// Whether a chip is in.
        inserted: bool,
    },
    /// Droplets started, stopped, split, merged or were added.
    Droplets {
        /// All droplets.
        droplets: Vec<DropletView>,
    },
    /// A capacitance reading (by command or stream).
    Capacitance {
        /// Farads.
        value: f64,
        /// Samples averaged.
        n_samples: u32,
        /// Channels driven at the time.
        actuated: Vec<u16>,
    },
    /// An event sent (or suppressed by the event mask).
    Event {
        /// Event name.
        name: String,
        /// Whether the event mask let it out.
        sent: bool,
        /// The event as JSON.
        payload: serde_json::Value,
    },
    /// A fault injected or acted out (reboot, unplug, stall, ...).
    Fault {
        /// Which fault.
        fault: String,
        /// Details.
        detail: String,
    },
    /// The firmware was busy (blocked in a command or in its loop) from this time on.
    Busy {
        /// What it was doing.
        cause: String,
        /// For how long, microseconds.
        duration_us: u64,
    },
    /// Requests the firmware never answers (its one packet buffer was overwritten or reset,
    /// or its parser is stuck).
    Lost {
        /// What happened.
        detail: String,
    },
    /// The MCU restarted (reboot command, watchdog, power): the USB device re-enumerates.
    Reset {
        /// Why.
        cause: String,
    },
    /// Anything else worth knowing (bad arguments, refused updates).
    Note {
        /// Free text.
        message: String,
    },
}

/// Where trace records go.
#[derive(Debug)]
pub struct Tracer {
    file: Option<BufWriter<File>>,
    ring: VecDeque<TraceRecord>,
    capacity: usize,
    live: broadcast::Sender<TraceRecord>,
}

impl Tracer {
    /// A tracer writing to `path` (created or truncated) if given, keeping `capacity` records.
    pub fn new(path: Option<&Path>, capacity: usize) -> std::io::Result<Self> {
        let file = path.map(File::create).transpose()?.map(BufWriter::new);
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            file,
            ring: VecDeque::new(),
            capacity,
            live,
        })
    }

    /// Record `entry` at simulation time `now`.
    pub fn record(&mut self, now: Duration, entry: TraceEntry) {
        let record = TraceRecord {
            t_us: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
            entry,
        };
        if let Some(file) = self.file.as_mut() {
            let written = serde_json::to_writer(&mut *file, &record)
                .map_err(std::io::Error::from)
                .and_then(|()| file.write_all(b"\n"));
            if let Err(e) = written {
                tracing::warn!("simulator trace file: {e}; no more trace lines are written");
                self.file = None;
            }
        }
        // No live readers is fine.
        let _ = self.live.send(record.clone());
        if self.capacity > 0 {
            if self.ring.len() == self.capacity {
                self.ring.pop_front();
            }
            self.ring.push_back(record);
        }
    }

    /// Push buffered lines to the file.
    pub fn flush(&mut self) {
        if let Some(file) = self.file.as_mut() {
            if let Err(e) = file.flush() {
                tracing::warn!("simulator trace file: {e}");
            }
        }
    }

    /// The records kept in memory, oldest first.
    pub fn records(&self) -> Vec<TraceRecord> {
        self.ring.iter().cloned().collect()
    }

    /// Live records from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TraceRecord> {
        self.live.subscribe()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The trace's name of a packet type: `data`, `stream`, `id_request`, `id_response`, `ack`,
/// `nack`.
pub fn packet_kind(packet_type: firmware_protocol::PacketType) -> &'static str {
    use firmware_protocol::PacketType as T;
    match packet_type {
        T::Data => "data",
        T::Stream => "stream",
        T::IdRequest => "id_request",
        T::IdResponse => "id_response",
        T::Ack => "ack",
        T::Nack => "nack",
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        let mut tracer = Tracer::new(Some(&path), 2).unwrap();
        tracer.record(
            Duration::from_micros(7),
            TraceEntry::Chip { inserted: true },
        );
        tracer.record(
            Duration::from_micros(9),
            TraceEntry::Note {
                message: "x".into(),
            },
        );
        tracer.record(
            Duration::from_micros(11),
            TraceEntry::Fault {
                fault: "reboot".into(),
                detail: String::new(),
            },
        );
        tracer.flush();
        assert_eq!(tracer.records().len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<TraceRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].t_us, 7);
        assert!(text.starts_with(r#"{"t_us":7,"kind":"chip","inserted":true}"#));
        assert_eq!(hex(&[0, 0xAB]), "00ab");
    }
}
