//! How droplets move, split and merge.
//!
//! A droplet rests on one electrode or moves from one to a neighbour (`progress` 0..1 along the
//! centroid-to-centroid line). At rest on an unactuated electrode it is pulled by its actuated
//! neighbours: one pulls it over, several split it equally. A moving droplet advances while
//! only its target is actuated, goes back while only its origin is, and settles on the nearer
//! electrode when neither is. Speed grows with V² above a threshold; nothing moves without HV
//! or with the chip out. Droplets at rest on the same electrode, or on neighbours when one of
//! them overfills its electrode, merge. A droplet of V µL covers V / gap mm².

use super::physics::{Droplet, Physics};

impl Physics {
    pub(super) fn speed(&self, v: f64) -> f64 {
        let th = self.params.threshold_v;
        if v <= th {
            return 0.0;
        }
        self.params.speed_mm_s_at_100v * (v * v - th * th) / (100.0 * 100.0 - th * th)
    }

    fn applied(&self, i: usize) -> bool {
        self.applied.get(i).copied().unwrap_or(false)
    }

    pub(super) fn step(&mut self, dt: f64, speed: f64) -> bool {
        if speed <= 0.0 {
            return false;
        }
        let mut changed = false;
        let mut born = Vec::new();
        for k in 0..self.droplets.len() {
            let Some(d) = self.droplets.get(k).cloned() else {
                continue;
            };
            let next = match d.to {
                None => {
                    if self.applied(d.from) {
                        continue;
                    }
                    let pulls: Vec<usize> = (self.layout.neighbours(d.from).iter())
                        .copied()
                        .filter(|&n| self.applied(n))
                        .collect();
                    let Some((&first, rest)) = pulls.split_first() else {
                        continue;
                    };
                    let volume = d.volume_ul / pulls.len() as f64;
                    for &target in rest {
                        born.push(Droplet {
                            id: self.next_id,
                            from: d.from,
                            to: Some(target),
                            progress: 0.0,
                            volume_ul: volume,
                        });
                        self.next_id += 1;
                    }
                    Droplet {
                        to: Some(first),
                        volume_ul: volume,
                        ..d
                    }
                }
                Some(t) => self.move_towards(d, t, dt, speed),
            };
            if let Some(slot) = self.droplets.get_mut(k) {
                changed |= slot.from != next.from || slot.to != next.to;
                *slot = next;
            }
        }
        changed |= !born.is_empty();
        self.droplets.extend(born);
        changed | self.merge()
    }

    fn move_towards(&self, mut d: Droplet, t: usize, dt: f64, speed: f64) -> Droplet {
        let (a, b) = (self.applied(d.from), self.applied(t));
        let distance = (self.layout.centroid(t) - self.layout.centroid(d.from))
            .norm()
            .max(1e-6);
        let dp = speed * dt / distance;
        match (a, b) {
            (false, true) => d.progress += dp,
            (true, false) => d.progress -= dp,
            (true, true) => {}
            // Nothing holds it: it settles on the nearer electrode.
            (false, false) => d.progress = if d.progress >= 0.5 { 1.0 } else { 0.0 },
        }
        if d.progress >= 1.0 {
            d.from = t;
            d.to = None;
            d.progress = 0.0;
        } else if d.progress <= 0.0 {
            d.to = None;
            d.progress = 0.0;
        }
        d
    }

    /// Merge droplets that touch; true if any did.
    pub(super) fn merge(&mut self) -> bool {
        let mut merged = false;
        'again: loop {
            for i in 0..self.droplets.len() {
                for j in i + 1..self.droplets.len() {
                    let (Some(a), Some(b)) = (self.droplets.get(i), self.droplets.get(j)) else {
                        continue;
                    };
                    if self.touch(a, b) {
                        let b = self.droplets.remove(j);
                        if let Some(a) = self.droplets.get_mut(i) {
                            if b.volume_ul > a.volume_ul {
                                a.from = b.from;
                            }
                            a.volume_ul += b.volume_ul;
                        }
                        merged = true;
                        continue 'again;
                    }
                }
            }
            return merged;
        }
    }

    fn touch(&self, a: &Droplet, b: &Droplet) -> bool {
        if a.to.is_some() || b.to.is_some() {
            return false;
        }
        if a.from == b.from {
            return true;
        }
        let overfull = |d: &Droplet| d.volume_ul > self.unit_volume(d.from) * (1.0 + 1e-9);
        self.layout.neighbours(a.from).contains(&b.from) && (overfull(a) || overfull(b))
    }
}
