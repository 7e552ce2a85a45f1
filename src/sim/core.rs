//! The board between the wire and the firmware: the firmware's packet parser, the main loop's
//! schedule (one pass at a time, the firmware busy while a pass takes time), the USB transmit
//! path, injected faults and MCU resets. No I/O here: the server moves bytes in and out.
//!
//! While the firmware is busy, bytes from the host are parsed at once if the work waits in
//! `delay()` (Teensy `delay` calls `yield`, which calls `serialEvent`; PaulStoffregen/cores
//! `teensy3/pins_teensy.c`, `yield.cpp`), otherwise they wait in the USB buffers (the server
//! does not read them) until the pass ends. After a command, `process_packet` resets the
//! parser, so whatever arrived during that command is lost. With a virtual clock a pass moves
//! the clock by the time it takes.

use std::time::{Duration, Instant};

use firmware_protocol::Packet;

use super::clock::SimClock;
use super::faults::FaultInjector;
use super::firmware::{Firmware, Pass};
use super::framing::{write_packet, FirmwareParser};
use super::options::{Faults, TimingParams};
use super::snapshot::SimSnapshot;
use super::trace::TraceEntry;
use super::usb::UsbTx;

/// Passes run in one go at most (a guard against a schedule that does not move on).
const MAX_PASSES: usize = 100_000;

/// The firmware is busy until `until`.
#[derive(Debug, Clone, Copy)]
struct Busy {
    until: Duration,
    yields: bool,
    /// A command: the parser is reset when it ends.
    command: bool,
}

/// The simulated board's whole state, shared by the I/O task and the handle.
#[derive(Debug)]
pub(crate) struct SimCore {
    pub fw: Firmware,
    pub clock: SimClock,
    params: TimingParams,
    parser: FirmwareParser,
    faults: FaultInjector,
    usb: UsbTx,
    busy: Option<Busy>,
    /// When the firmware is free (the end of its last pass).
    free_at: Duration,
    /// Powered (USB plugged in).
    powered: bool,
    /// The MCU reset: the USB device must go and come back after this delay.
    reenumerate: Option<Duration>,
}

impl SimCore {
    pub fn new(fw: Firmware, clock: SimClock, params: TimingParams, faults: FaultInjector) -> Self {
        let usb = UsbTx::new(params.usb_split, clock.epoch());
        let free_at = clock.now();
        let mut core = Self {
            fw,
            clock,
            params,
            parser: FirmwareParser::default(),
            faults,
            usb,
            busy: None,
            free_at,
            powered: true,
            reenumerate: None,
        };
        let id = core.faults.faults().firmware_id.clone();
        core.fw.set_id_override(id);
        core
    }

    /// Bytes from the host (`serialEvent`).
    pub fn receive(&mut self, bytes: &[u8]) {
        let now = self.clock.now();
        if !self.powered || self.stalled(now, || format!("{} bytes ignored", bytes.len())) {
            return;
        }
        self.pump();
        let was_dead = self.parser.is_dead();
        let fed = self.parser.feed(bytes);
        let now = self.clock.now();
        if fed.overwritten > 0 {
            let detail = format!(
                "{} request(s) overwritten by the next one before the firmware processed them \
                 (one packet buffer)",
                fed.overwritten
            );
            self.fw.record(now, TraceEntry::Lost { detail });
        }
        if fed.died && !was_dead {
            let detail = "a byte outside the packet grammar: the firmware's parser is stuck in \
                          its error state and ignores all input until the board restarts"
                .to_owned();
            self.fw.record(now, TraceEntry::Lost { detail });
        }
        self.pump();
    }

    /// Whether the firmware reads bytes now (false while it is busy without yielding).
    pub fn accepting(&self) -> bool {
        self.busy.is_none_or(|b| b.yields)
    }

    /// Run every pass due by now.
    pub fn pump(&mut self) {
        if !self.powered {
            return;
        }
        for _ in 0..MAX_PASSES {
            let now = self.clock.now();
            if let Some(busy) = self.busy {
                if busy.until > now {
                    return;
                }
                self.busy = None;
                if busy.command {
                    self.end_command();
                }
            }
            if let Some(packet) = self.parser.ready() {
                let start = now.max(self.free_at);
                let pass = self.fw.run_command(packet, start);
                self.after(pass, start, true);
                continue;
            }
            let due = self.fw.next_deadline(now);
            if due > now {
                return;
            }
            let start = due.max(self.free_at);
            let pass = self.fw.run_loop(start);
            self.after(pass, start, false);
        }
        tracing::warn!("simulator: the firmware's schedule did not settle; check its timers");
    }

    /// When the next pass is due, as an instant (real clock).
    pub fn next_wakeup(&self) -> Instant {
        let now = self.clock.now();
        let at = match self.busy {
            Some(b) => b.until,
            None => self.fw.next_deadline(now),
        };
        self.clock.instant_of(at)
    }

    /// Move a virtual clock forward by `by`, running every pass due on the way (passes that
    /// take time move it further).
    pub fn advance(&mut self, by: Duration) {
        if !self.clock.is_virtual() {
            return;
        }
        let end = self.clock.now() + by;
        for _ in 0..MAX_PASSES {
            self.pump();
            let now = self.clock.now();
            let next = if self.powered {
                self.fw.next_deadline(now).max(now)
            } else {
                end
            };
            if next >= end {
                self.clock.advance_to(end);
                self.pump();
                return;
            }
            self.clock.advance_to(next);
        }
    }

    /// Restart the MCU now (as the `reboot` command does): the USB device re-enumerates.
    pub fn reboot(&mut self, cause: &str) {
        let now = self.clock.now();
        self.fw.reset(now, cause);
        self.after_reset(now);
    }

    /// The USB cable is pulled: no power, HV and channels off, nothing sent or read.
    pub fn power_off(&mut self) {
        let now = self.clock.now();
        self.fw.power_off(now);
        self.powered = false;
        self.parser.reset();
        self.usb.clear();
        self.busy = None;
    }

    /// The USB cable is back: the firmware boots.
    pub fn power_on(&mut self, cause: &str) {
        let now = self.clock.now();
        self.powered = true;
        self.fw.reset(now, cause);
        self.parser.reset();
        self.free_at = now;
        self.pump();
    }

    /// The MCU reset since the last call: re-enumerate after this delay.
    pub fn take_reenumeration(&mut self) -> Option<Duration> {
        self.reenumerate.take()
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

    /// The board's `micros()` counter now.
    pub fn board_micros(&mut self) -> u32 {
        let now = self.clock.now();
        self.fw.board_us(now)
    }

    /// The board now.
    pub fn snapshot(&mut self) -> SimSnapshot {
        let now = self.clock.now();
        self.fw.snapshot(now)
    }

    /// The next bytes to write if their time has come, else when the next ones are due.
    pub fn pop_outgoing(&mut self, now: Instant) -> Result<Vec<u8>, Option<Instant>> {
        self.usb.pop(now)
    }

    /// Forget everything not yet written (nobody is listening).
    pub fn discard_outgoing(&mut self) -> usize {
        self.usb.clear()
    }

    /// A pass ended: its output goes to the USB path; the firmware is busy until its end.
    fn after(&mut self, pass: Pass, start: Duration, command: bool) {
        if self.clock.is_virtual() {
            // A virtual clock moves with the firmware's work, so its output is due now.
            let end = pass.reset.as_ref().map_or(pass.end, |r| r.at);
            self.clock.advance_to(end);
        }
        for (t, packet) in &pass.out {
            self.write(*t, packet);
        }
        self.free_at = pass.end;
        if let Some(reset) = pass.reset {
            self.after_reset(reset.at);
            return;
        }
        if pass.end > start && !self.clock.is_virtual() {
            self.busy = Some(Busy {
                until: pass.end,
                yields: pass.yields,
                command,
            });
        } else if command {
            self.end_command();
        }
    }

    /// `packet_reset()` after a command: whatever was parsed meanwhile is lost.
    fn end_command(&mut self) {
        if !self.parser.is_idle() && !self.parser.is_dead() {
            let now = self.clock.now();
            let detail = "bytes parsed while a command was running, discarded by \
                          packet_reset() after it"
                .to_owned();
            self.fw.record(now, TraceEntry::Lost { detail });
        }
        if !self.parser.is_dead() {
            self.parser.reset();
        }
    }

    fn after_reset(&mut self, at: Duration) {
        self.parser.reset();
        self.usb.clear();
        self.busy = None;
        self.free_at = at;
        if self.clock.is_virtual() {
            self.clock.advance_to(at);
        }
        self.reenumerate = Some(self.params.reenumeration);
    }

    /// Write `packet` at firmware time `t`, through the faults and the USB path.
    fn write(&mut self, t: Duration, packet: &Packet) {
        let now = self.clock.now();
        if self.stalled(now, || "a packet not sent".to_owned()) {
            return;
        }
        let mut bytes = Vec::new();
        write_packet(packet, &mut bytes);
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
        let at = self.clock.instant_of(t) + self.faults.faults().reply_delay;
        self.usb.write(&bytes, at);
    }

    /// Whether the board is stalled (a fault); if so the trace says what it ignored.
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
}
