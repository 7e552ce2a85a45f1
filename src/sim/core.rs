//! The board between the wire and the firmware: decoder, firmware, clock, faults and the queue
//! of bytes waiting to be written. No I/O here: the server moves bytes in and out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use firmware_protocol::{Decoder, Packet};

use super::clock::SimClock;
use super::faults::FaultInjector;
use super::firmware::Firmware;
use super::options::{Faults, Timing};
use super::snapshot::SimSnapshot;
use super::trace::TraceEntry;

/// Bytes to write, not before an instant.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub bytes: Vec<u8>,
    pub not_before: Instant,
}

/// The simulated board's whole state, shared by the I/O task and the handle.
#[derive(Debug)]
pub(crate) struct SimCore {
    pub fw: Firmware,
    pub clock: SimClock,
    pub timing: Timing,
    decoder: Decoder,
    faults: FaultInjector,
    outbox: VecDeque<Outgoing>,
}

impl SimCore {
    pub fn new(fw: Firmware, clock: SimClock, timing: Timing, faults: FaultInjector) -> Self {
        let mut core = Self {
            fw,
            clock,
            timing,
            decoder: Decoder::board(),
            faults,
            outbox: VecDeque::new(),
        };
        let id = core.faults.faults().firmware_id.clone();
        core.fw.set_id_override(id);
        core
    }

    /// Bytes from the host.
    pub fn receive(&mut self, bytes: &[u8]) {
        let now = self.clock.now();
        if self.stalled(now, || format!("{} bytes ignored", bytes.len())) {
            return;
        }
        let mut packets = Vec::new();
        self.decoder.feed(bytes, |p| packets.push(p));
        for packet in packets {
            let out = self.fw.on_packet(packet, now);
            let busy = self.fw.take_busy();
            self.queue(out, busy);
        }
    }

    /// Time-driven work due now (real clock).
    pub fn tick(&mut self) {
        let now = self.clock.now();
        let out = self.fw.tick(now);
        self.queue(out, Duration::ZERO);
    }

    /// When the next tick is due, as a wall-clock instant (real clock).
    pub fn next_wakeup(&self) -> Instant {
        let now = self.clock.now();
        self.clock.instant_of(self.fw.next_deadline(now))
    }

    /// Move a virtual clock forward by `by`, running every tick due on the way.
    pub fn advance(&mut self, by: Duration) {
        if !self.clock.is_virtual() {
            return;
        }
        let end = self.clock.now() + by;
        loop {
            let now = self.clock.now();
            let next = self.fw.next_deadline(now).min(end);
            self.clock.advance_to(next);
            let out = self.fw.tick(next);
            self.queue(out, Duration::ZERO);
            if next >= end {
                break;
            }
        }
    }

    /// Restart the firmware (bytes half received are lost).
    pub fn reboot(&mut self) {
        let now = self.clock.now();
        self.decoder.reset();
        self.outbox.clear();
        self.fw.reboot(now);
    }

    /// Replace the active faults.
    pub fn set_faults(&mut self, faults: Faults) {
        let now = self.clock.now();
        self.fw.record(
            now,
            TraceEntry::Fault {
                fault: "set".into(),
                detail: format!("{faults:?}"),
            },
        );
        self.fw.set_id_override(faults.firmware_id.clone());
        self.faults.set(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> &Faults {
        self.faults.faults()
    }

    /// The board now.
    pub fn snapshot(&mut self) -> SimSnapshot {
        let now = self.clock.now();
        self.fw.snapshot(now)
    }

    /// The next bytes to write if their time has come, else when it comes.
    pub fn pop_outgoing(&mut self, now: Instant) -> Result<Option<Vec<u8>>, Instant> {
        match self.outbox.front() {
            None => Ok(None),
            Some(o) if o.not_before > now => Err(o.not_before),
            Some(_) => Ok(self.outbox.pop_front().map(|o| o.bytes)),
        }
    }

    /// Forget everything not yet written (nobody is listening).
    pub fn discard_outgoing(&mut self) -> usize {
        let n = self.outbox.iter().map(|o| o.bytes.len()).sum();
        self.outbox.clear();
        n
    }

    /// Whether the board is stalled; if so the trace says what it ignored.
    fn stalled(&mut self, now: Duration, detail: impl FnOnce() -> String) -> bool {
        let stalled = self.faults.faults().stall;
        if stalled {
            let detail = detail();
            self.fw.record(
                now,
                TraceEntry::Fault {
                    fault: "stall".into(),
                    detail,
                },
            );
        }
        stalled
    }

    fn queue(&mut self, packets: Vec<Packet>, busy: Duration) {
        if packets.is_empty() {
            return;
        }
        let now = self.clock.now();
        if self.stalled(now, || format!("{} packets not sent", packets.len())) {
            return;
        }
        let mut bytes = Vec::new();
        for packet in packets {
            if let Err(e) = packet.encode_into(&mut bytes) {
                // A reply too large for a packet: the host gets an empty reply instead.
                self.fw.record(
                    now,
                    TraceEntry::Note {
                        message: format!("reply not sent: {e}"),
                    },
                );
                if let Packet::Data { id, .. } = packet {
                    let empty = Packet::Data {
                        id,
                        payload: Vec::new(),
                    };
                    let _ = empty.encode_into(&mut bytes);
                }
            }
        }
        let mangled = self.faults.mangle(&mut bytes);
        if mangled.corrupted + mangled.dropped > 0 {
            self.fw.record(
                now,
                TraceEntry::Fault {
                    fault: "bytes".into(),
                    detail: format!(
                        "{} corrupted, {} dropped",
                        mangled.corrupted, mangled.dropped
                    ),
                },
            );
        }
        // Realistic hardware costs delay replies in real time only: a virtual clock stands still.
        let busy = if self.timing == Timing::Realistic && !self.clock.is_virtual() {
            busy
        } else {
            Duration::ZERO
        };
        let delay = busy + self.faults.faults().reply_delay;
        let earliest = self.outbox.back().map(|o| o.not_before);
        let not_before = (Instant::now() + delay).max(earliest.unwrap_or_else(Instant::now));
        self.outbox.push_back(Outgoing { bytes, not_before });
    }
}
