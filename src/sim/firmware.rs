//! The simulated firmware: a pure state machine run one pass of its main loop at a time, at a
//! simulation time given by the caller. What each behaviour follows in the real firmware is
//! listed in `src/sim/FIRMWARE.md`.
//!
//! A pass is what the firmware's `loop()` does once (sci-bots/dropbot.py `src/dropbot.ino`):
//! refresh the watchdog if auto-refresh is on, process the one packet the parser holds
//! ([`Firmware::run_command`]), then `Node::loop()` ([`Firmware::run_loop`]: chip interlock,
//! timers, drop detection). Work takes simulated time: replies and events
//! carry the time they are written, and [`Pass::end`] says when the firmware is free again.
//! Every reply carries id 0 (sci-bots/base-node-rpc `SerialHandler.h` `serial_write_packet`
//! defaults `iuid` to 0; request ids are never echoed).

use std::time::Duration;

use firmware_protocol::{parse_identity, CommandTable, Config, Packet, Request, State};

use super::boot::{factory_config, Limits};
use super::options::{table_for_id, TimingParams, DEFAULT_FIRMWARE_VERSION};
use super::physics::Physics;
use super::switching::{Switching, PORTS_PER_BOARD};
use super::ticks::Interlock;
use super::trace::{packet_kind, TraceEntry, Tracer};
use super::watchdog::McuWatchdog;

/// How often to step physics in real time while droplets may move.
const PHYSICS_TICK: Duration = Duration::from_millis(5);

/// Identity and timing of the simulated board.
#[derive(Debug, Clone)]
pub struct FirmwareOptions {
    /// Handshake answer, `dropbot::<version>`.
    pub firmware_id: String,
    /// The board's uuid.
    pub uuid: [u8; 16],
    /// Hardware time costs.
    pub timing: TimingParams,
}

/// An MCU reset during a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Reset {
    /// When.
    pub at: Duration,
    /// Why (reboot command, watchdog, ...).
    pub cause: String,
}

/// What one pass of the firmware did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Packets written, each with the time it was written.
    pub out: Vec<(Duration, Packet)>,
    /// When the firmware is free again.
    pub end: Duration,
    /// Whether the work waited in `delay()`, which parses incoming bytes meanwhile (Teensy
    /// `delay` calls `yield`, which calls `serialEvent`).
    pub yields: bool,
    /// The MCU reset during the pass (outputs after it were not written).
    pub reset: Option<Reset>,
}

/// The simulated firmware; see the module docs.
#[derive(Debug)]
pub struct Firmware {
    pub(super) table: CommandTable,
    pub(super) opts: FirmwareOptions,
    pub(super) id_override: Option<String>,
    pub(super) state: State,
    pub(super) config: Config,
    pub(super) eeprom: Config,
    pub(super) limits: Limits,
    pub(super) boards: Switching,
    pub(super) boot_at: Duration,
    pub(super) watchdog: McuWatchdog,
    /// `time::time_sync_`: wall time and the board's milliseconds when it was set.
    pub(super) wall: (f64, u32),
    /// `start_` of the 25 ms sampling timer and of the 1 s current-check timer.
    pub(super) sample_timer: Duration,
    pub(super) current_timer: Duration,
    pub(super) capacitance_stamp_ms: u32,
    pub(super) drops_stamp_ms: u32,
    pub(super) target_count: u32,
    pub(super) interlock: Interlock,
    pub(super) physics: Physics,
    pub(super) trace: Tracer,
    /// The pass being run: its time, whether it waited in `delay()`, what it wrote, whether
    /// the MCU reset.
    pub(super) t: Duration,
    pub(super) yields: bool,
    pub(super) out: Vec<(Duration, Packet)>,
    pub(super) reset: Option<Reset>,
}

impl Firmware {
    /// A board at `now` whose firmware has been running for a while (the chip interlock has
    /// settled, so no insertion is reported for a chip already in).
    pub fn new(
        opts: FirmwareOptions,
        physics: Physics,
        boards: Switching,
        trace: Tracer,
        now: Duration,
    ) -> Self {
        let mut fw = Self {
            table: table_for_id(&opts.firmware_id),
            state: State::default(),
            config: Config::default(),
            eeprom: Config::default(),
            limits: Limits::default(),
            boards,
            opts,
            id_override: None,
            boot_at: now,
            watchdog: McuWatchdog::boot(false, now),
            wall: (0.0, 0),
            sample_timer: now,
            current_timer: now,
            capacitance_stamp_ms: 0,
            drops_stamp_ms: 0,
            target_count: 0,
            interlock: Interlock::default(),
            physics,
            trace,
            t: now,
            yields: false,
            out: Vec::new(),
            reset: None,
        };
        fw.eeprom = factory_config(&fw.version());
        fw.boot(now);
        fw.interlock = Interlock::settled(fw.physics.hv().chip());
        fw
    }

    /// The answer to the ID handshake (a wrong-id fault may override it).
    pub fn set_id_override(&mut self, id: Option<String>) {
        self.id_override = id;
    }

    /// One pass that processes `packet` (the parser's completed packet) at `start`.
    pub fn run_command(&mut self, packet: Packet, start: Duration) -> Pass {
        self.begin(start);
        match packet {
            Packet::IdRequest { id } => {
                self.record_rx("id_request", id, None, &[]);
                let text = self
                    .id_override
                    .clone()
                    .unwrap_or_else(|| self.opts.firmware_id.clone());
                self.emit(Packet::IdResponse {
                    id: 0,
                    payload: text.into_bytes(),
                });
            }
            Packet::Data { id, payload } => {
                let decoded = Request::decode(&payload, &self.table);
                let name = decoded.as_ref().ok().map(|r| r.name().as_str().to_owned());
                self.record_rx("data", id, name, &payload);
                match decoded {
                    Ok(Request::Reboot(_)) => {
                        // CPU_RESTART: no reply.
                        let at = self.t;
                        self.reset(at, "reboot command (CPU_RESTART)");
                    }
                    Ok(request) => {
                        let reply = self.execute(request);
                        self.emit(Packet::Data {
                            id: 0,
                            payload: reply,
                        });
                    }
                    Err(e) => {
                        self.note(format!("request not executed: {e}"));
                        self.emit(Packet::Data {
                            id: 0,
                            payload: Vec::new(),
                        });
                    }
                }
            }
            other => {
                let kind = packet_kind(other.packet_type());
                self.record_rx(kind, other.id(), None, other.payload());
            }
        }
        self.finish(start)
    }

    /// One pass of `Node::loop()` at `start`: chip interlock, timers, drop detection.
    pub fn run_loop(&mut self, start: Duration) -> Pass {
        self.begin(start);
        if self.watchdog.deadline().is_some_and(|d| d <= start) {
            let at = self.watchdog.deadline().unwrap_or(start);
            self.reset(at, "MCU watchdog: not refreshed in time");
            return self.finish(start);
        }
        self.loop_work();
        self.finish(start)
    }

    /// When [`Firmware::run_loop`] next has work (never later than the current check; it
    /// may be in the past).
    pub fn next_deadline(&self, now: Duration) -> Duration {
        let mut next = self.loop_deadline();
        let (_, _, auto) = self.watchdog.settings();
        if let Some(d) = self.watchdog.deadline().filter(|_| !auto) {
            next = next.min(d);
        }
        if self.physics.may_move() || self.physics.hv().ramp_end(now).is_some() {
            next = next.min(now + PHYSICS_TICK);
        }
        next
    }

    /// The physical chip and HV supply.
    pub fn physics(&self) -> &Physics {
        &self.physics
    }

    /// The physical chip, for changes from outside (droplets, shorts).
    pub fn physics_mut(&mut self) -> &mut Physics {
        &mut self.physics
    }

    /// The switching boards.
    pub fn boards_mut(&mut self) -> &mut Switching {
        &mut self.boards
    }

    /// The trace.
    pub fn tracer(&self) -> &Tracer {
        &self.trace
    }

    /// Push buffered trace lines to the file.
    pub fn flush_trace(&mut self) {
        self.trace.flush();
    }

    /// Record a trace line.
    pub fn record(&mut self, now: Duration, entry: TraceEntry) {
        self.trace.record(now, entry);
    }

    /// Insert or remove the chip at `now`: the interlock acts on the HV at once; the firmware
    /// notices it on its next pass and reports it after the debounce.
    pub fn insert_chip(&mut self, inserted: bool, now: Duration) {
        self.physics.advance_to(now);
        self.physics.hv_mut(now).set_chip(inserted);
        self.record(now, TraceEntry::Chip { inserted });
        self.record_hv(now);
    }

    /// The firmware's time in the pass being run.
    pub(super) fn now(&self) -> Duration {
        self.t
    }

    /// The work in progress takes `d`; `yields` if it waits in `delay()`.
    pub(super) fn spend(&mut self, d: Duration, yields: bool) {
        if d.is_zero() {
            return;
        }
        self.t += d;
        self.yields |= yields;
        self.advance_physics(self.t);
    }

    /// One `_update_channels()` over the boards found.
    pub(super) fn channel_update_cost(&self) -> Duration {
        // `channel_update` is for three boards; each board is 5 of its 15 I2C writes.
        self.opts.timing.channel_update * self.boards.boards() * PORTS_PER_BOARD
            / (3 * PORTS_PER_BOARD)
    }

    /// Board microseconds (a 32-bit counter from boot).
    pub(super) fn board_us(&self, now: Duration) -> u32 {
        // Truncation is the point: the counter wraps like the firmware's.
        now.saturating_sub(self.boot_at).as_micros() as u32
    }

    /// Board milliseconds (`millis()`).
    pub(super) fn board_ms(&self, now: Duration) -> u32 {
        now.saturating_sub(self.boot_at).as_millis() as u32
    }

    /// The firmware version, from the configured id.
    pub(super) fn version(&self) -> String {
        parse_identity(&self.opts.firmware_id)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|_| DEFAULT_FIRMWARE_VERSION.to_owned())
    }

    /// `voltage_source::min_waveform_voltage()`: 1.5 / 2 * (R6 / (pot_max + R7) + 1).
    pub(super) fn min_waveform_voltage(&self) -> f64 {
        const R6: f64 = 2e6;
        let l = self.limits;
        1.5 / 2.0 * (R6 / (f64::from(l.pot_max) + f64::from(l.r7)) + 1.0)
    }

    /// Step the physics to `now`, tracing droplets at the moment they change.
    pub(super) fn advance_physics(&mut self, now: Duration) {
        while let Some(t) = self.physics.next_step(now) {
            if self.physics.advance_to(t) {
                self.record_droplets(t);
            }
        }
    }

    /// Drive the channels the boards drive now and trace them.
    pub(super) fn apply_channels(&mut self, now: Duration) {
        let driven = self.boards.driven();
        self.physics.set_channels(&driven, now);
        let entry = TraceEntry::Channels {
            actuated: driven.into_iter().collect(),
            disabled: self.boards.disabled().iter().copied().collect(),
        };
        self.record(now, entry);
    }

    /// Packets written so far in this pass.
    pub(super) fn push_out(&mut self, packet: Packet) {
        self.out.push((self.t, packet));
    }

    fn begin(&mut self, start: Duration) {
        self.t = start;
        self.yields = false;
        self.out.clear();
        self.reset = None;
        self.advance_physics(start);
        self.watchdog.loop_pass(start);
        self.idle_timers(start);
    }

    fn finish(&mut self, start: Duration) -> Pass {
        // A pass that outlasts the watchdog resets the MCU in the middle of it.
        if self.reset.is_none() {
            if let Some(deadline) = self.watchdog.deadline().filter(|d| *d < self.t) {
                let at = deadline.max(start);
                self.reset(at, "MCU watchdog: a pass of the main loop took too long");
            }
        }
        self.trace.flush();
        Pass {
            out: std::mem::take(&mut self.out),
            end: self.t,
            yields: self.yields,
            reset: self.reset.take(),
        }
    }
}
