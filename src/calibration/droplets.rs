//! Droplet detection from a per-channel capacitance scan against the chip's calibration:
//! each channel's reading says how much of its electrodes' area is under liquid; covered
//! electrodes that touch are one droplet.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Specific;
use crate::device::Device;

/// How one channel read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelCoverage {
    /// The channel.
    pub channel: u16,
    /// Its reading, farads.
    pub farads: f64,
    /// Area of the electrodes on it, mm².
    pub area_mm2: f64,
    /// Fraction of that area under liquid (may fall a little outside 0..1 with noise).
    pub coverage: f64,
}

/// A droplet: touching electrodes whose channels read as covered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Droplet {
    /// Its electrodes, by id, sorted.
    pub electrodes: Vec<String>,
    /// Their channels.
    pub channels: BTreeSet<u16>,
    /// Liquid-covered area, mm² (coverage × area over its channels).
    pub covered_mm2: f64,
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Every channel scanned that has electrodes.
    pub channels: Vec<ChannelCoverage>,
    /// The droplets.
    pub droplets: Vec<Droplet>,
    /// Coverage at or above which a channel counts as holding liquid.
    pub threshold: f64,
}

/// Find droplets in `readings` (channel, farads) on `device`.
pub fn detect(
    readings: &[(u16, f64)],
    device: &Device,
    specific: &Specific,
    threshold: f64,
) -> Detection {
    let mut channels = Vec::new();
    let mut covered: BTreeMap<usize, f64> = BTreeMap::new();
    for &(channel, farads) in readings {
        let on = device.electrodes_on_channel(channel);
        let area: f64 = on.iter().map(|e| e.area_mm2).sum();
        if on.is_empty() || area <= 0.0 {
            continue;
        }
        let coverage = specific.coverage(farads, area);
        if coverage >= threshold {
            for e in &on {
                if let Some(i) = device.index_of(&e.id) {
                    covered.insert(i, coverage);
                }
            }
        }
        channels.push(ChannelCoverage {
            channel,
            farads,
            area_mm2: area,
            coverage,
        });
    }
    let droplets = components(device, &covered);
    Detection {
        channels,
        droplets,
        threshold,
    }
}

/// Connected groups of covered electrodes (neighbours on the device).
fn components(device: &Device, covered: &BTreeMap<usize, f64>) -> Vec<Droplet> {
    let mut seen = BTreeSet::new();
    let mut droplets = Vec::new();
    for &start in covered.keys() {
        if !seen.insert(start) {
            continue;
        }
        let mut stack = vec![start];
        let mut members = Vec::new();
        while let Some(i) = stack.pop() {
            members.push(i);
            for &n in device.neighbours(i) {
                if covered.contains_key(&n) && seen.insert(n) {
                    stack.push(n);
                }
            }
        }
        let mut electrodes = Vec::new();
        let mut channels = BTreeSet::new();
        let mut covered_mm2 = 0.0;
        for i in members {
            if let Some(e) = device.electrode(i) {
                electrodes.push(e.id.clone());
                channels.extend(e.channels.iter().copied());
                covered_mm2 += e.area_mm2 * covered.get(&i).copied().unwrap_or(0.0).min(1.0);
            }
        }
        electrodes.sort();
        droplets.push(Droplet {
            electrodes,
            channels,
            covered_mm2,
        });
    }
    droplets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Electrode;

    /// A row of five 2 mm squares, touching, channel = index.
    fn row() -> Device {
        let electrodes = (0..5u16)
            .map(|i| {
                let x = f64::from(i) * 2.05;
                Electrode::rectangle(
                    format!("e{i}"),
                    vec![i],
                    nalgebra::Point2::new(x, 0.0),
                    2.0,
                    2.0,
                )
                .unwrap()
            })
            .collect();
        Device::from_electrodes(electrodes).unwrap()
    }

    #[test]
    fn touching_covered_electrodes_are_one_droplet() {
        let device = row();
        let s = Specific {
            liquid_f_per_mm2: 1e-12,
            filler_f_per_mm2: 2e-14,
        };
        // e0 and e1 covered, e3 half covered, e2 and e4 dry.
        let reading = |cov: f64| 4.0 * (cov * 1e-12 + (1.0 - cov) * 2e-14);
        let readings = [
            (0, reading(1.0)),
            (1, reading(1.0)),
            (2, reading(0.0)),
            (3, reading(0.6)),
            (4, reading(0.02)),
            (9, 1e-12),
        ];
        let d = detect(&readings, &device, &s, 0.5);
        let found: Vec<Vec<String>> = d.droplets.iter().map(|d| d.electrodes.clone()).collect();
        assert_eq!(
            found,
            vec![vec!["e0".to_owned(), "e1".into()], vec!["e3".into()]]
        );
        assert_eq!(d.channels.len(), 5, "channel 9 has no electrode");
        assert!((d.channels[3].coverage - 0.6).abs() < 1e-9);
        assert!((d.droplets[0].covered_mm2 - 8.0).abs() < 1e-9);
    }
}
