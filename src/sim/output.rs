//! What the simulated firmware writes and traces: packets, events (gated by the event mask as
//! `Node::event_enabled` gates them), HV and droplet records.

use std::time::Duration;

use firmware_protocol::{Event, Packet};

use super::firmware::Firmware;
use super::trace::{hex, packet_kind, TraceEntry};

impl Firmware {
    /// Trace the droplets as they are now.
    pub fn record_droplets(&mut self, now: Duration) {
        let droplets = self.physics.droplets();
        self.record(now, TraceEntry::Droplets { droplets });
    }

    pub(super) fn record_hv(&mut self, now: Duration) {
        let hv = self.physics.hv();
        let entry = TraceEntry::Hv {
            enabled: self.state.hv_output_enabled(),
            on: hv.is_on(),
            voltage: f64::from(self.state.voltage()),
            frequency: f64::from(self.state.frequency()),
        };
        self.record(now, entry);
    }

    /// Write `event` if the event mask lets it out (ungated events always go); trace it either
    /// way.
    pub(super) fn event(&mut self, event: Event) {
        let sent = event.is_enabled(self.state.event_mask());
        let payload = event.to_payload();
        let json = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        let name = event.name().to_owned();
        let now = self.now();
        self.record(
            now,
            TraceEntry::Event {
                name,
                sent,
                payload: json,
            },
        );
        if sent {
            self.emit(Packet::Stream { id: 0, payload });
        }
    }

    pub(super) fn note(&mut self, message: String) {
        let now = self.now();
        self.record(now, TraceEntry::Note { message });
    }

    /// Write `packet` now.
    pub(super) fn emit(&mut self, packet: Packet) {
        let kind = packet_kind(packet.packet_type());
        let entry = TraceEntry::Tx {
            packet: kind.to_owned(),
            id: packet.id(),
            payload: hex(packet.payload()),
        };
        let now = self.now();
        self.record(now, entry);
        self.push_out(packet);
    }

    /// The firmware is busy for `d` doing `cause` (traced when it is noticeable).
    pub(super) fn busy(&mut self, cause: &str, d: Duration, yields: bool) {
        if d >= Duration::from_millis(50) {
            let now = self.now();
            self.record(
                now,
                TraceEntry::Busy {
                    cause: cause.to_owned(),
                    duration_us: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
                },
            );
        }
        self.spend(d, yields);
    }

    pub(super) fn record_rx(
        &mut self,
        kind: &str,
        id: u16,
        command: Option<String>,
        payload: &[u8],
    ) {
        let entry = TraceEntry::Rx {
            packet: kind.to_owned(),
            id,
            command,
            payload: hex(payload),
        };
        let now = self.now();
        self.record(now, entry);
    }
}
