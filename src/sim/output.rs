//! What the simulated firmware sends and traces: packets, events (gated by the event mask),
//! HV and droplet records.

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
        let entry = TraceEntry::Hv {
            enabled: self.state.hv_output_enabled(),
            on: self.physics.hv().is_on(),
            voltage: f64::from(self.state.voltage()),
            frequency: f64::from(self.state.frequency()),
        };
        self.record(now, entry);
    }

    /// Send `event` if the event mask lets it out; trace it either way.
    pub(super) fn event(&mut self, now: Duration, event: Event, out: &mut Vec<Packet>) {
        let sent = event.is_enabled(self.state.event_mask());
        let payload = event.to_payload();
        let json = serde_json::from_slice(&payload).unwrap_or(serde_json::Value::Null);
        let name = event.name().to_owned();
        self.record(
            now,
            TraceEntry::Event {
                name,
                sent,
                payload: json,
            },
        );
        if sent {
            self.emit(now, Packet::Stream { id: 0, payload }, out);
        }
    }

    pub(super) fn note(&mut self, now: Duration, message: String) {
        self.record(now, TraceEntry::Note { message });
    }

    pub(super) fn emit(&mut self, now: Duration, packet: Packet, out: &mut Vec<Packet>) {
        let kind = packet_kind(packet.packet_type());
        let entry = TraceEntry::Tx {
            packet: kind.to_owned(),
            id: packet.id(),
            payload: hex(packet.payload()),
        };
        self.record(now, entry);
        out.push(packet);
    }

    pub(super) fn record_rx(
        &mut self,
        now: Duration,
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
        self.record(now, entry);
    }
}
