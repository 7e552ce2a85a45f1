//! The simulated firmware: a pure state machine. Packets in, packets out ([`Firmware::on_packet`]),
//! time-driven work in [`Firmware::tick`] (capacitance stream, current and chip-load checks,
//! host watchdog, chip-interlock debounce), all at a simulation time given by the caller.
//!
//! It behaves as the DropBot firmware does: unknown commands and undecodable arguments get an
//! empty DATA reply; `set_state_of_channels` with the wrong byte count returns false; disabled
//! channels never actuate; HV needs an inserted chip. Replies echo the request id.

use std::collections::BTreeSet;
use std::time::Duration;

use firmware_protocol::events::HaltReason;
use firmware_protocol::{
    parse_identity, CommandTable, Config, Event, Packet, Request, State, SIMULATOR_VERSION,
};

use super::options::TimingParams;
use super::physics::Physics;
use super::trace::{packet_kind, TraceEntry, Tracer};

/// Period of the output-current check.
const CURRENT_CHECK: Duration = Duration::from_secs(1);
/// How often to step physics in real time while droplets may move.
const PHYSICS_TICK: Duration = Duration::from_millis(5);

/// Identity and size of the simulated board.
#[derive(Debug, Clone)]
pub struct FirmwareOptions {
    /// Handshake answer, `dropbot::<version>`.
    pub firmware_id: String,
    /// The board's uuid.
    pub uuid: [u8; 16],
    /// Number of channels (a multiple of 8).
    pub channels: u16,
    /// Hardware time costs.
    pub timing: TimingParams,
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
    pub(super) actuated: BTreeSet<u16>,
    pub(super) disabled: BTreeSet<u16>,
    pub(super) boot_at: Duration,
    pub(super) mcu_watchdog: bool,
    pub(super) host_watchdog: Option<Duration>,
    pub(super) last_rx: Duration,
    pub(super) watchdog_tripped: bool,
    pub(super) next_capacitance: Option<Duration>,
    pub(super) next_drops: Option<Duration>,
    pub(super) next_current_check: Duration,
    pub(super) exceeded_count: u32,
    pub(super) chip_pending: Option<(bool, Duration)>,
    pub(super) physics: Physics,
    pub(super) trace: Tracer,
    pub(super) busy: Duration,
}

impl Firmware {
    /// A board powered on at `now`.
    pub fn new(opts: FirmwareOptions, physics: Physics, trace: Tracer, now: Duration) -> Self {
        let mut fw = Self {
            table: CommandTable::simulator(),
            state: State::with_defaults(i32::from(opts.channels)),
            config: Config::with_defaults(),
            eeprom: Config::with_defaults(),
            opts,
            id_override: None,
            actuated: BTreeSet::new(),
            disabled: BTreeSet::new(),
            boot_at: now,
            mcu_watchdog: false,
            host_watchdog: None,
            last_rx: now,
            watchdog_tripped: false,
            next_capacitance: None,
            next_drops: None,
            next_current_check: now + CURRENT_CHECK,
            exceeded_count: 0,
            chip_pending: None,
            physics,
            trace,
            busy: Duration::ZERO,
        };
        fw.boot(now);
        fw
    }

    /// Restart the firmware at `now`: RAM state back to defaults, config from EEPROM, HV and
    /// channels off. The chip and its droplets are untouched.
    pub fn reboot(&mut self, now: Duration) {
        self.record(
            now,
            TraceEntry::Fault {
                fault: "reboot".into(),
                detail: "firmware restarted".into(),
            },
        );
        self.boot(now);
    }

    fn boot(&mut self, now: Duration) {
        self.state = State::with_defaults(i32::from(self.opts.channels));
        self.config = self.eeprom.clone();
        self.actuated.clear();
        self.disabled.clear();
        self.boot_at = now;
        self.host_watchdog = None;
        self.watchdog_tripped = false;
        self.last_rx = now;
        self.next_capacitance = None;
        self.next_drops = None;
        self.next_current_check = now + CURRENT_CHECK;
        self.exceeded_count = 0;
        self.apply_hv(now);
        self.apply_channels(now);
    }

    /// The answer to the ID handshake (a wrong-id fault may override it).
    pub fn set_id_override(&mut self, id: Option<String>) {
        self.id_override = id;
    }

    /// Handle one packet from the host at `now`; the packets to send back (reply, events).
    pub fn on_packet(&mut self, packet: Packet, now: Duration) -> Vec<Packet> {
        self.advance_physics(now);
        self.last_rx = now;
        self.watchdog_tripped = false;
        let mut out = Vec::new();
        match packet {
            Packet::IdRequest { id } => {
                self.record_rx(now, "id_request", id, None, &[]);
                let text = self
                    .id_override
                    .clone()
                    .unwrap_or_else(|| self.opts.firmware_id.clone());
                self.emit(
                    now,
                    Packet::IdResponse {
                        id,
                        payload: text.into_bytes(),
                    },
                    &mut out,
                );
            }
            Packet::Data { id, payload } => {
                let decoded = Request::decode(&payload, &self.table);
                let name = decoded.as_ref().ok().map(|r| r.name().as_str().to_owned());
                self.record_rx(now, "data", id, name, &payload);
                match decoded {
                    Ok(Request::Reboot(_)) => self.reboot(now),
                    Ok(request) => {
                        let mut events = Vec::new();
                        let reply = self.execute(request, now, &mut events);
                        self.emit(now, Packet::Data { id, payload: reply }, &mut out);
                        for event in events {
                            self.event(now, event, &mut out);
                        }
                    }
                    Err(e) => {
                        self.note(now, format!("request not executed: {e}"));
                        self.emit(
                            now,
                            Packet::Data {
                                id,
                                payload: Vec::new(),
                            },
                            &mut out,
                        );
                    }
                }
            }
            other => {
                let kind = packet_kind(other.packet_type());
                self.record_rx(now, kind, other.id(), None, other.payload());
            }
        }
        out
    }

    /// Time-driven work due at `now`: physics, debounce, watchdog, streams, checks.
    pub fn tick(&mut self, now: Duration) -> Vec<Packet> {
        let mut out = Vec::new();
        self.advance_physics(now);
        if let Some((inserted, at)) = self.chip_pending {
            if now >= at {
                self.chip_pending = None;
                self.chip_settled(inserted, now, &mut out);
            }
        }
        if let Some(timeout) = self.host_watchdog {
            if !self.watchdog_tripped && now >= self.last_rx + timeout {
                self.watchdog_tripped = true;
                self.note(
                    now,
                    format!("host watchdog: silent for {timeout:?}, HV and channels off"),
                );
                self.all_off(now);
            }
        }
        if let Some(at) = self.next_capacitance {
            if now >= at {
                self.next_capacitance = Some(next_after(at, self.capacitance_period(), now));
                self.stream_capacitance(now, &mut out);
            }
        }
        if let Some(at) = self.next_drops {
            if now >= at {
                let period =
                    Duration::from_millis(u64::from(self.state.drops_update_interval_ms()));
                self.next_drops = Some(next_after(at, period, now));
                self.detect_drops(now, &mut out);
            }
        }
        if now >= self.next_current_check {
            self.next_current_check = next_after(self.next_current_check, CURRENT_CHECK, now);
            self.check_current(now, &mut out);
        }
        self.trace.flush();
        out
    }

    /// When [`Firmware::tick`] next has work (never later than one current-check period).
    pub fn next_deadline(&self, now: Duration) -> Duration {
        let mut next = self.next_current_check;
        let mut consider = |t: Option<Duration>| {
            if let Some(t) = t {
                next = next.min(t);
            }
        };
        consider(self.chip_pending.map(|(_, at)| at));
        consider(self.next_capacitance);
        consider(self.next_drops);
        if !self.watchdog_tripped {
            consider(self.host_watchdog.map(|t| self.last_rx + t));
        }
        if self.physics.may_move() || self.physics.hv().ramp_end(now).is_some() {
            consider(Some(now + PHYSICS_TICK));
        }
        next.max(now)
    }

    /// Time the last request kept the board busy (reply delay in realistic timing); resets it.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    /// The physical chip and HV supply.
    pub fn physics(&self) -> &Physics {
        &self.physics
    }

    /// The physical chip, for changes from outside (droplets, shorts).
    pub fn physics_mut(&mut self) -> &mut Physics {
        &mut self.physics
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

    /// Insert or remove the chip at `now`: the interlock acts at once, the event follows
    /// after the debounce.
    pub fn insert_chip(&mut self, inserted: bool, now: Duration) {
        self.physics.set_chip(inserted, now);
        self.record(now, TraceEntry::Chip { inserted });
        self.record_hv(now);
        self.chip_pending = Some((inserted, now + self.opts.timing.chip_debounce));
    }

    /// Board microseconds (a 32-bit counter from boot).
    pub(super) fn board_us(&self, now: Duration) -> u32 {
        // Truncation is the point: the counter wraps like the firmware's.
        now.saturating_sub(self.boot_at).as_micros() as u32
    }

    /// The firmware version, from the configured id.
    pub(super) fn version(&self) -> String {
        parse_identity(&self.opts.firmware_id)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|_| SIMULATOR_VERSION.to_owned())
    }

    /// Step the physics to `now`, tracing droplets at the moment they change.
    pub(super) fn advance_physics(&mut self, now: Duration) {
        while let Some(t) = self.physics.next_step(now) {
            if self.physics.advance_to(t) {
                self.record_droplets(t);
            }
        }
    }

    /// Push the state's HV fields to the supply and trace them.
    pub(super) fn apply_hv(&mut self, now: Duration) {
        let (enabled, selected) = (
            self.state.hv_output_enabled(),
            self.state.hv_output_selected(),
        );
        let voltage = f64::from(self.state.voltage());
        self.physics.set_hv(enabled, selected, voltage, now);
        self.record_hv(now);
    }

    /// Drive the actuated channels (never the disabled ones) and trace them.
    pub(super) fn apply_channels(&mut self, now: Duration) {
        let disabled = &self.disabled;
        self.actuated.retain(|ch| !disabled.contains(ch));
        self.physics.set_channels(&self.actuated, now);
        let entry = TraceEntry::Channels {
            actuated: self.actuated.iter().copied().collect(),
            disabled: self.disabled.iter().copied().collect(),
        };
        self.record(now, entry);
    }

    /// HV off and every channel off.
    pub(super) fn all_off(&mut self, now: Duration) {
        self.state.hv_output_enabled = Some(false);
        self.apply_hv(now);
        self.actuated.clear();
        self.apply_channels(now);
    }

    /// The board halts itself: everything off, then the `halted` event.
    pub(super) fn halt(&mut self, now: Duration, error: HaltReason, out: &mut Vec<Packet>) {
        self.all_off(now);
        let wall_time = now.saturating_sub(self.boot_at).as_secs_f64();
        self.event(now, Event::Halted { wall_time, error }, out);
    }
}

/// The first time after `now` on the grid `at + k * period` (at least `at + period`).
pub(super) fn next_after(at: Duration, period: Duration, now: Duration) -> Duration {
    let period = period.max(Duration::from_micros(100));
    let mut next = at + period;
    if next <= now {
        let behind = (now - next).as_nanos() / period.as_nanos() + 1;
        next += period * u32::try_from(behind).unwrap_or(u32::MAX);
    }
    next
}
