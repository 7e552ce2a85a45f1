//! The chip and the board's analogue side: droplets moved by actuated electrodes (see
//! `motion` for the model), capacitance, output current, shorts, the HV supply.
//! Deterministic: time comes from the caller and noise only from a seeded ChaCha8 generator.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::hv::HvSupply;
use super::layout::Layout;
use super::options::PhysicsParams;

/// Longest physics step.
const STEP: Duration = Duration::from_millis(1);

/// A droplet as the trace and snapshots show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropletView {
    /// Stable number of the droplet (split parts get new numbers).
    pub id: u32,
    /// Electrode it rests on or moves from.
    pub electrode: String,
    /// Electrode it moves to, if moving.
    pub to: Option<String>,
    /// Progress towards `to`, 0..1.
    pub progress: f64,
    /// Position of its centre, mm.
    pub x: f64,
    /// Position of its centre, mm.
    pub y: f64,
    /// Volume, µL.
    pub volume_ul: f64,
}

/// A droplet: at rest on `from`, or moving from it to `to`.
#[derive(Debug, Clone)]
pub(super) struct Droplet {
    pub id: u32,
    pub from: usize,
    pub to: Option<usize>,
    pub progress: f64,
    pub volume_ul: f64,
}

/// The chip, the HV supply and the analogue measurements.
#[derive(Debug, Clone)]
pub struct Physics {
    pub(super) layout: Layout,
    pub(super) params: PhysicsParams,
    pub(super) droplets: Vec<Droplet>,
    pub(super) next_id: u32,
    shorted: BTreeSet<u16>,
    applied_channels: BTreeSet<u16>,
    pub(super) applied: Vec<bool>,
    hv: HvSupply,
    rng: ChaCha8Rng,
    last: Duration,
    /// The on-board test capacitor connected to the HV output, farads (0: none).
    test_capacitor_f: f64,
}

/// The on-board test capacitors, by index: 1, 10 and 100 pF (dropbot.py `Node.h`
/// `on_board_capacitance`, `CAPACITOR_0`..`CAPACITOR_2`, on pins 0-2, active low).
pub const TEST_CAPACITORS_F: [f64; 3] = [1e-12, 10e-12, 100e-12];

impl Physics {
    /// A chip of `layout`, HV off, no droplets.
    pub fn new(
        layout: Layout,
        params: PhysicsParams,
        hv_step: Duration,
        chip_inserted: bool,
        supply_v: f64,
        seed: u64,
    ) -> Self {
        let applied = vec![false; layout.len()];
        Self {
            layout,
            params,
            droplets: Vec::new(),
            next_id: 0,
            shorted: BTreeSet::new(),
            applied_channels: BTreeSet::new(),
            applied,
            hv: HvSupply::new(hv_step, chip_inserted, supply_v),
            rng: ChaCha8Rng::seed_from_u64(seed),
            last: Duration::ZERO,
            test_capacitor_f: 0.0,
        }
    }

    /// The electrodes.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The physical constants.
    pub fn params(&self) -> &PhysicsParams {
        &self.params
    }

    /// The HV supply.
    pub fn hv(&self) -> &HvSupply {
        &self.hv
    }

    /// The end of the next physics step towards `now` (`None` once there): steps are at
    /// most 1 ms while droplets may move, one jump otherwise.
    pub fn next_step(&self, now: Duration) -> Option<Duration> {
        if self.last >= now {
            None
        } else if self.may_move() {
            Some(now.min(self.last + STEP))
        } else {
            Some(now)
        }
    }

    /// Move droplets up to `now`; true if any droplet started, stopped, split or merged.
    pub fn advance_to(&mut self, now: Duration) -> bool {
        let mut changed = false;
        if self.droplets.is_empty() || !self.hv.is_on() {
            self.last = self.last.max(now);
            return false;
        }
        while self.last < now {
            let step = (now - self.last).min(STEP);
            self.last += step;
            let speed = self.speed(self.hv.drive(self.last));
            changed |= self.step(step.as_secs_f64(), speed);
        }
        changed
    }

    /// Whether droplets could move now (HV live and droplets on the chip).
    pub fn may_move(&self) -> bool {
        self.hv.is_on() && !self.droplets.is_empty()
    }

    /// Whether some droplet is between two electrodes.
    pub fn is_moving(&self) -> bool {
        self.droplets.iter().any(|d| d.to.is_some())
    }

    /// Drive these channels (already masked by the disabled set) from `now`.
    pub fn set_channels(&mut self, channels: &BTreeSet<u16>, now: Duration) {
        self.advance_to(now);
        self.applied = self.layout.actuated_electrodes(channels.iter().copied());
        self.applied_channels = channels.clone();
    }

    /// The HV supply, to change it at `now` (droplets are moved up to `now` first).
    pub fn hv_mut(&mut self, now: Duration) -> &mut HvSupply {
        self.advance_to(now);
        &mut self.hv
    }

    /// Channels shorted to ground.
    pub fn set_shorted(&mut self, shorted: impl IntoIterator<Item = u16>) {
        self.shorted = shorted.into_iter().collect();
    }

    /// Shorted channels below `channel_count`.
    pub fn shorted(&self, channel_count: u16) -> Vec<u16> {
        self.shorted.range(..channel_count).copied().collect()
    }

    /// Place a droplet at rest on electrode `index`; its id, or `None` for no such electrode.
    pub fn add_droplet(&mut self, index: usize, volume_ul: f64) -> Option<u32> {
        if index >= self.layout.len() || !(volume_ul.is_finite() && volume_ul > 0.0) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.droplets.push(Droplet {
            id,
            from: index,
            to: None,
            progress: 0.0,
            volume_ul,
        });
        self.merge();
        Some(id)
    }

    /// Volume (µL) that exactly covers electrode `index`.
    pub fn unit_volume(&self, index: usize) -> f64 {
        self.layout.area(index) * self.params.gap_height_mm
    }

    /// Droplets, by id.
    pub fn droplets(&self) -> Vec<DropletView> {
        self.droplets
            .iter()
            .map(|d| {
                let a = self.layout.centroid(d.from);
                let p = match d.to {
                    Some(t) => a + (self.layout.centroid(t) - a) * d.progress,
                    None => a,
                };
                DropletView {
                    id: d.id,
                    electrode: self.layout.id(d.from).to_owned(),
                    to: d.to.map(|t| self.layout.id(t).to_owned()),
                    progress: d.progress,
                    x: p.x,
                    y: p.y,
                    volume_ul: d.volume_ul,
                }
            })
            .collect()
    }

    /// Liquid-covered area of each electrode, mm².
    pub fn coverage(&self) -> Vec<f64> {
        let mut cov = vec![0.0; self.layout.len()];
        for d in &self.droplets {
            let footprint = d.volume_ul / self.params.gap_height_mm;
            let mut add = |i: usize, a: f64| {
                if let Some(c) = cov.get_mut(i) {
                    *c += a;
                }
            };
            match d.to {
                Some(t) => {
                    add(d.from, footprint * (1.0 - d.progress));
                    add(t, footprint * d.progress);
                }
                None => add(d.from, footprint),
            }
        }
        for (i, c) in cov.iter_mut().enumerate() {
            *c = c.min(self.layout.area(i));
        }
        cov
    }

    /// Noise-free capacitance of the electrodes selected by `on`, farads.
    pub fn ideal_capacitance(&self, on: &[bool]) -> f64 {
        let cov = self.coverage();
        on.iter()
            .zip(&cov)
            .enumerate()
            .filter(|(_, (on, _))| **on)
            .map(|(i, (_, c))| {
                c * self.params.liquid_f_per_mm2
                    + (self.layout.area(i) - c) * self.params.filler_f_per_mm2
            })
            .sum()
    }

    /// Noise-free capacitance of the driven electrodes, farads.
    pub fn load_capacitance(&self) -> f64 {
        self.ideal_capacitance(&self.applied)
    }

    /// A reading of the driven electrodes averaged over `n_samples` (0 without HV); an
    /// on-board test capacitor that is connected adds to the load.
    pub fn sample_capacitance(&mut self, n_samples: u32) -> f64 {
        let ideal = self.load_capacitance() + self.test_capacitor_f;
        self.reading(ideal, n_samples)
    }

    /// `select_on_board_test_capacitor(index)`: every test capacitor off first, then
    /// `index` on (-1 or out of range: none); the nominal capacitance now connected.
    pub fn select_test_capacitor(&mut self, index: i8) -> f64 {
        self.test_capacitor_f = usize::try_from(index)
            .ok()
            .and_then(|i| TEST_CAPACITORS_F.get(i).copied())
            .unwrap_or(0.0);
        self.test_capacitor_f
    }

    /// Which test capacitor is connected (its index), as pins 0-2 read it.
    pub fn test_capacitor(&self) -> Option<usize> {
        TEST_CAPACITORS_F
            .iter()
            .position(|c| *c == self.test_capacitor_f)
    }

    /// A reading of the electrodes of channel `ch` alone.
    pub fn sample_channel(&mut self, ch: u16, n_samples: u32) -> f64 {
        let on = self.layout.actuated_electrodes([ch]);
        let ideal = self.ideal_capacitance(&on);
        self.reading(ideal, n_samples)
    }

    fn reading(&mut self, ideal: f64, n_samples: u32) -> f64 {
        // Noise is drawn even without HV so that the random stream does not depend on it.
        let noise = self.gaussian() * self.params.noise_f / f64::from(n_samples.max(1)).sqrt();
        if self.hv.output(self.last) > 1.0 {
            (ideal + noise).max(0.0)
        } else {
            0.0
        }
    }

    /// Whether the chip load saturates the front end given `margin` (< 0 disables).
    pub fn chip_load_saturated(&self, margin: f64) -> bool {
        margin >= 0.0
            && self.hv.is_on()
            && self.load_capacitance() >= self.params.saturation_f * (1.0 - margin)
    }

    /// RMS output current at `now`, amperes: the chip's load at `frequency` plus shorts.
    pub fn output_current(&self, now: Duration, frequency: f64) -> f64 {
        let v = self.hv.output(now);
        let load = self.load_capacitance() * std::f64::consts::TAU * frequency.max(0.0) * v;
        let shorts = self.applied_channels.intersection(&self.shorted).count() as f64;
        load + shorts * v / self.params.short_resistance_ohm
    }

    /// A standard normal value from the seeded generator (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
