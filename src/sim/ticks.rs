//! The firmware's `Node::loop()` (sci-bots/dropbot.py `src/Node.h`): the chip interlock's
//! debounce, the `SignalTimer` callbacks (capacitance sampling every 25 ms, output current
//! every 1 s, chip load every 25 ms, connected in that order in the `Node` constructor) and
//! drop detection.

use std::time::Duration;

use firmware_protocol::events::{Drops, HaltReason};
use firmware_protocol::Event;

use super::firmware::Firmware;
use super::trace::TraceEntry;

/// Period of the output-current check (`Node()`: `signal_timer_ms_.connect(..., 1000)`).
const CURRENT_CHECK: Duration = Duration::from_secs(1);
/// Capacitance above which an electrode holds liquid (`drops.h` `C_THRESHOLD`, 3 pF).
const DROP_THRESHOLD_F: f64 = 3e-12;
/// Samples whose cost is `TimingParams::capacitance_reading`.
pub(super) const SAMPLES_PER_READING: u32 = 50;
/// `detect_shorts` delay used on chip insertion (`Node()`: `detect_shorts(5)`).
const INSERTION_SHORTS_DELAY_MS: u8 = 5;

/// The interlock pin's debounce, as `InputDebounce::process` runs it (1000 ms,
/// `OutputEnableDebounce` in `Node()`): a change is noticed on the next pass and reported once
/// the pin has been stable for more than the debounce time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Interlock {
    value_last: bool,
    since_ms: u128,
    state_on: bool,
}

impl Interlock {
    /// Settled on `chip` (nothing to report).
    pub fn settled(chip: bool) -> Self {
        Self {
            value_last: chip,
            since_ms: 0,
            state_on: chip,
        }
    }

    /// `process(now)`: the new state when `pressed` (true) or `released` (false) fires.
    fn process(&mut self, pin: bool, now: Duration, debounce: Duration) -> Option<bool> {
        let now_ms = now.as_millis();
        if pin != self.value_last {
            self.value_last = pin;
            self.since_ms = now_ms;
            return None;
        }
        if now_ms - self.since_ms > debounce.as_millis() && self.state_on != self.value_last {
            self.state_on = self.value_last;
            return Some(self.state_on);
        }
        None
    }

    /// When `process` next has something to do (`Some(ZERO)`: at once).
    fn due(&self, pin: bool, debounce: Duration) -> Option<Duration> {
        if pin != self.value_last {
            Some(Duration::ZERO)
        } else if self.state_on != self.value_last {
            let ms = u64::try_from(self.since_ms + debounce.as_millis() + 1).unwrap_or(u64::MAX);
            Some(Duration::from_millis(ms))
        } else {
            None
        }
    }
}

impl Firmware {
    /// `Node::loop()` at the current time.
    pub(super) fn loop_work(&mut self) {
        let start = self.now();
        let debounce = self.opts.timing.chip_debounce;
        let pin = self.physics.hv().chip();
        match self.interlock.process(pin, start, debounce) {
            Some(true) => self.chip_inserted(),
            Some(false) => self.event(Event::OutputDisabled),
            None => {}
        }
        // The timers see the time taken at the start of the pass (`now` in `Node::loop`).
        let tick = self.opts.timing.sample_tick;
        let sample = start.saturating_sub(self.sample_timer) >= tick;
        if sample {
            self.sample_timer = start;
            if self.sampling() {
                self.sample_capacitance();
            }
        }
        if start.saturating_sub(self.current_timer) >= CURRENT_CHECK {
            self.current_timer = start;
            self.check_current();
        }
        if sample && self.sampling() {
            self.check_chip_load();
        }
        if self.drops_due(start) {
            self.refresh_drops();
            self.drops_stamp_ms = self.board_ms(self.now());
        }
    }

    /// When `Node::loop()` next has work.
    pub(super) fn loop_deadline(&self) -> Duration {
        let mut next = self.current_timer + CURRENT_CHECK;
        let pin = self.physics.hv().chip();
        if let Some(at) = self.interlock.due(pin, self.opts.timing.chip_debounce) {
            next = next.min(at);
        }
        if self.sampling() {
            next = next.min(self.sample_timer + self.opts.timing.sample_tick);
        }
        if let Some(at) = self.drops_deadline() {
            next = next.min(at);
        }
        next
    }

    /// While the 25 ms callbacks have no work nothing wakes the simulator for them: move the
    /// timer along its grid to `start`, as the idle firings would have.
    pub(super) fn idle_timers(&mut self, start: Duration) {
        let tick = self.opts.timing.sample_tick;
        if !self.sampling() && start.saturating_sub(self.sample_timer) >= tick {
            let periods = (start - self.sample_timer).as_nanos() / tick.as_nanos().max(1);
            self.sample_timer += tick * u32::try_from(periods).unwrap_or(u32::MAX);
        }
    }

    /// Whether the 25 ms callbacks have work: HV enabled and selected (state flags).
    fn sampling(&self) -> bool {
        self.state.hv_output_enabled() && self.state.hv_output_selected()
    }

    /// `OutputEnableDebounce::pressed` then the `chip_status_changed_` callbacks: HV toggled
    /// if enabled, `output_enabled`, then `detect_shorts(5)` (blocking the loop ~1.2 s).
    fn chip_inserted(&mut self) {
        if self.state.hv_output_enabled() {
            self.enable_hv("HV re-enabled on chip insertion");
        }
        self.event(Event::OutputEnabled);
        self.detect_shorts(INSERTION_SHORTS_DELAY_MS);
    }

    /// The capacitance callbacks: a reading, the target check, the periodic event.
    fn sample_capacitance(&mut self) {
        let n_samples = self.config.capacitance_n_samples().max(1);
        let cost = self.opts.timing.capacitance_reading * n_samples / SAMPLES_PER_READING;
        self.spend(cost, false);
        let now = self.now();
        let new_value = self.read_capacitance(n_samples);
        let v_a = self.physics.hv().measured(now);
        let time_us = u64::from(self.board_us(now));
        let target = self.state.target_capacitance();
        if target > 0.0 {
            if new_value >= f64::from(target) {
                // `target_count_` is a uint8_t.
                self.target_count = (self.target_count + 1) % 256;
                if self.target_count as f32 >= self.state.target_count() {
                    self.state.target_capacitance = Some(0.0);
                    let event = Event::CapacitanceExceeded {
                        new_value,
                        target: f64::from(target),
                        time_us,
                        n_samples,
                        count: self.target_count,
                        v_a,
                    };
                    self.event(event);
                }
            } else {
                self.target_count = 0;
            }
        }
        // `interval < millis() - capacitance_timestamp_ms_`: strictly, on the 25 ms grid.
        let interval = self.state.capacitance_update_interval_ms();
        let now_ms = self.board_ms(now);
        if interval > 0 && interval < now_ms.wrapping_sub(self.capacitance_stamp_ms) {
            let event = Event::CapacitanceUpdated {
                new_value,
                time_us,
                n_samples,
                v_a,
            };
            self.event(event);
            self.capacitance_stamp_ms = now_ms;
        }
    }

    /// What the front end's formula makes of a real capacitance: C = V_feedback · C16 / V_hv
    /// with the configured C16 (dropbot.py `channels.h` `capacitance`; `Node.h`
    /// `on_config_C16_changed` sets it), so a
    /// real feedback capacitor that differs scales the reading by configured / real.
    pub(super) fn feedback_gain(&self) -> f64 {
        match self.physics.params().feedback_capacitor_f {
            Some(real) if real > 0.0 => f64::from(self.config.c16()) / real,
            _ => 1.0,
        }
    }

    /// A capacitance reading of the driven electrodes, traced.
    pub(super) fn read_capacitance(&mut self, n_samples: u32) -> f64 {
        let value = self.physics.sample_capacitance(n_samples) * self.feedback_gain();
        let actuated = self.boards.driven().into_iter().collect();
        let now = self.now();
        self.record(
            now,
            TraceEntry::Capacitance {
                value,
                n_samples,
                actuated,
            },
        );
        value
    }

    /// The chip-load check: sci-bots firmware halts; the fork halts only while
    /// `halt_on_chip_load_saturated` and otherwise sends `capacitance_saturated` (every 25 ms
    /// while saturated).
    fn check_chip_load(&mut self) {
        let margin = self.state.chip_load_range_margin();
        if self.physics.chip_load_saturated(f64::from(margin)) {
            // The firmware reports the differential reading and the margin in ADC counts of
            // its 16-bit range; the simulator has no ADC: the reading is given as the end of
            // the range it reached.
            let counts = f64::from(i16::MAX);
            let margin = (f64::from(margin) * counts) as i32;
            let error = HaltReason::ChipLoadSaturated {
                chip_load: Some(i32::from(i16::MAX) - margin / 2),
                margin: Some(margin),
            };
            if !self.is_fork() || self.state.halt_on_chip_load_saturated() {
                self.halt_with(error);
            } else {
                let wall_time = self.wall_time();
                self.event(Event::CapacitanceSaturated { wall_time, error });
            }
        }
    }

    fn check_current(&mut self) {
        let current = self.output_current();
        let limit = self.state.output_current_limit();
        if current > f64::from(limit) {
            let error = HaltReason::OutputCurrentExceeded {
                output_current: Some(current),
            };
            self.halt_with(error);
        }
    }

    /// The board halts itself: `halt()`, then the `halted` event.
    fn halt_with(&mut self, error: HaltReason) {
        self.halt();
        let wall_time = self.wall_time();
        self.event(Event::Halted { wall_time, error });
    }

    /// `time::wall_time()`: the synchronised wall time plus the seconds since.
    pub(super) fn wall_time(&self) -> f64 {
        let ms = self.board_ms(self.now()).wrapping_sub(self.wall.1);
        self.wall.0 + 1e-3 * f64::from(ms)
    }

    fn drops_due(&self, start: Duration) -> bool {
        self.drops_deadline().is_some_and(|at| at <= start)
    }

    /// `drops_update_interval_ms < now - drops_timestamp_ms_ && event_enabled(DROPS)`.
    fn drops_deadline(&self) -> Option<Duration> {
        let interval = self.state.drops_update_interval_ms();
        let mask = self.state.event_mask();
        let bit = firmware_protocol::events::EVENT_DROPS_DETECTED;
        let enabled = mask & (bit | 1) == (bit | 1);
        (interval > 0 && enabled).then(|| {
            let ms = u64::from(self.drops_stamp_ms) + u64::from(interval) + 1;
            self.boot_at + Duration::from_millis(ms)
        })
    }

    /// `refresh_drops(0)`: each channel measured alone; with no neighbour table assigned
    /// every channel over the threshold is a drop of its own.
    fn refresh_drops(&mut self) {
        let start = u64::from(self.board_us(self.now()));
        let count = self.boards.count();
        let disabled = self.boards.disabled().clone();
        let measured: Vec<u16> = (0..count).filter(|c| !disabled.contains(c)).collect();
        let per = self.opts.timing.per_channel_capacitance;
        let cost = per * u32::try_from(measured.len()).unwrap_or(u32::MAX);
        self.busy("drop detection (per-channel capacitance)", cost, false);
        let n = self.config.capacitance_n_samples().max(1);
        let mut drops = Drops {
            channels: Vec::new(),
            capacitances: Vec::new(),
        };
        for ch in measured {
            let c = self.physics.sample_channel(ch, n) * self.feedback_gain();
            if c >= DROP_THRESHOLD_F {
                drops.channels.push(vec![ch]);
                drops.capacitances.push(vec![c]);
            }
        }
        let end = u64::from(self.board_us(self.now()));
        self.event(Event::DropsDetected { drops, start, end });
    }
}
