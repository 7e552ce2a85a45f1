//! The simulated firmware's time-driven work: capacitance stream and target, drop detection,
//! output-current and chip-load checks, chip insertion and removal.

use std::time::Duration;

use firmware_protocol::events::{Drops, HaltReason};
use firmware_protocol::{Event, Packet};

use super::firmware::Firmware;
use super::trace::TraceEntry;

/// Capacitance above which an electrode holds a drop (the firmware's default, 3 pF).
const DROP_THRESHOLD_F: f64 = 3e-12;

impl Firmware {
    /// Period of the capacitance stream: the state's interval, never below the sampling tick.
    pub(super) fn capacitance_period(&self) -> Duration {
        let interval =
            Duration::from_millis(u64::from(self.state.capacitance_update_interval_ms()));
        interval.max(self.opts.timing.capacitance_tick)
    }

    /// A capacitance reading of the actuated electrodes, traced and checked for chip-load
    /// saturation (which halts the board when `halt_on_chip_load_saturated`).
    pub(super) fn read_capacitance(&mut self, now: Duration, n_samples: u32) -> f64 {
        let value = self.physics.sample_capacitance(n_samples);
        let actuated = self.actuated.iter().copied().collect();
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

    pub(super) fn stream_capacitance(&mut self, now: Duration, out: &mut Vec<Packet>) {
        if !(self.state.hv_output_enabled() && self.state.hv_output_selected()) {
            return;
        }
        let n_samples = self.config.capacitance_n_samples().max(1);
        let new_value = self.read_capacitance(now, n_samples);
        let time_us = u64::from(self.board_us(now));
        let v_a = self.physics.hv().measured(now);
        self.event(
            now,
            Event::CapacitanceUpdated {
                new_value,
                time_us,
                n_samples,
                v_a,
            },
            out,
        );
        let target = f64::from(self.state.target_capacitance());
        if target > 0.0 && new_value >= target {
            self.exceeded_count += 1;
            // target_count is a float on the wire; at least one sample.
            let needed = self.state.target_count().max(1.0);
            if self.exceeded_count as f32 >= needed {
                let count = self.exceeded_count;
                self.exceeded_count = 0;
                self.state.target_capacitance = Some(0.0);
                let event = Event::CapacitanceExceeded {
                    new_value,
                    target,
                    time_us,
                    n_samples,
                    count,
                    v_a,
                };
                self.event(now, event, out);
            }
        } else {
            self.exceeded_count = 0;
        }
        self.check_chip_load(now, out);
    }

    pub(super) fn check_chip_load(&mut self, now: Duration, out: &mut Vec<Packet>) {
        let margin = f64::from(self.state.chip_load_range_margin());
        if self.state.halt_on_chip_load_saturated() && self.physics.chip_load_saturated(margin) {
            // The firmware reports the ADC reading and the margin in counts of its 16-bit
            // differential range; the simulator models no ADC, so only the margin is given.
            let margin = Some((margin * f64::from(i16::MAX)) as i32);
            let error = HaltReason::ChipLoadSaturated {
                chip_load: None,
                margin,
            };
            self.halt(now, error, out);
        }
    }

    pub(super) fn check_current(&mut self, now: Duration, out: &mut Vec<Packet>) {
        if !self.physics.hv().is_on() {
            return;
        }
        let current = self.output_current(now);
        let limit = f64::from(self.state.output_current_limit());
        if current > limit {
            let error = HaltReason::OutputCurrentExceeded {
                output_current: Some(current),
            };
            self.halt(now, error, out);
            return;
        }
        self.check_chip_load(now, out);
    }

    /// A drop scan: the channels and capacitance of each droplet over the threshold.
    pub(super) fn detect_drops(&mut self, now: Duration, out: &mut Vec<Packet>) {
        if !self.physics.hv().is_on() {
            return;
        }
        let start = u64::from(self.board_us(now));
        let coverage = self.physics.coverage();
        let liquid = self.physics.params().liquid_f_per_mm2;
        let mut drops = Drops {
            channels: Vec::new(),
            capacitances: Vec::new(),
        };
        let layout = self.physics.layout();
        for d in self.physics.droplets() {
            let pads = [Some(d.electrode.as_str()), d.to.as_deref()];
            let mut channels = Vec::new();
            let mut capacitances = Vec::new();
            for index in pads
                .into_iter()
                .flatten()
                .filter_map(|id| layout.index_of(id))
            {
                let c = coverage.get(index).copied().unwrap_or(0.0) * liquid;
                if c >= DROP_THRESHOLD_F {
                    let pad = layout.electrode(index).map_or(&[][..], |e| &e.channels);
                    channels.extend(pad);
                    capacitances.extend(pad.iter().map(|_| c));
                }
            }
            if !channels.is_empty() {
                drops.channels.push(channels);
                drops.capacitances.push(capacitances);
            }
        }
        let end = start;
        self.event(now, Event::DropsDetected { drops, start, end }, out);
    }

    /// Short detection (also run on chip insertion): shorted channels join the disabled mask.
    pub(super) fn disable_shorted(
        &mut self,
        now: Duration,
        shorted: &[u16],
        events: &mut Vec<Event>,
    ) {
        self.disabled.extend(shorted.iter().copied());
        self.apply_channels(now);
        events.push(Event::ShortsDetected {
            values: shorted.to_vec(),
        });
    }

    /// The interlock has been stable for the debounce time.
    pub(super) fn chip_settled(&mut self, inserted: bool, now: Duration, out: &mut Vec<Packet>) {
        if inserted {
            self.event(now, Event::OutputEnabled, out);
            let shorted = self.physics.shorted(self.opts.channels);
            let mut events = Vec::new();
            self.disable_shorted(now, &shorted, &mut events);
            for event in events {
                self.event(now, event, out);
            }
        } else {
            self.event(now, Event::OutputDisabled, out);
        }
    }
}
