//! Unit tests of the droplet physics on the built-in grid.

use std::collections::BTreeSet;
use std::time::Duration;

use super::layout::{Layout, GRID_SIDE_MM};
use super::options::PhysicsParams;
use super::physics::Physics;

const MS: Duration = Duration::from_millis(1);

fn chip() -> Physics {
    let layout = Layout::default_grid().unwrap();
    Physics::new(
        layout,
        PhysicsParams::default(),
        Duration::ZERO,
        true,
        12.0,
        7,
    )
}

/// HV on at `volts` from `now` (no enable sequence: zero steps).
fn hv_on(p: &mut Physics, volts: f64, now: Duration) {
    let hv = p.hv_mut(now);
    hv.set_target(volts);
    hv.enable(0.0, now);
}

fn drive(p: &mut Physics, channels: &[u16], now: Duration) {
    let set: BTreeSet<u16> = channels.iter().copied().collect();
    p.set_channels(&set, now);
}

/// Time until the droplets settle (none moving), stepping 1 ms, at most `limit`.
fn settle(p: &mut Physics, from: Duration, limit: Duration) -> Duration {
    let mut t = from;
    while t < from + limit {
        t += MS;
        p.advance_to(t);
        if !p.is_moving() && t > from + 2 * MS {
            break;
        }
    }
    t
}

#[test]
fn actuated_neighbour_pulls_a_droplet_over() {
    let mut p = chip();
    let unit = p.unit_volume(0);
    p.add_droplet(0, unit).unwrap();
    drive(&mut p, &[1], Duration::ZERO);
    hv_on(&mut p, 100.0, Duration::ZERO);
    let t = settle(&mut p, Duration::ZERO, 2000 * MS);
    let d = p.droplets();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].electrode, "electrode001");
    // 2.5 mm at 20 mm/s: about 125 ms.
    assert!(t > 100 * MS && t < 200 * MS, "{t:?}");
    // Covered: the whole electrode.
    let c = p.load_capacitance();
    let expected = GRID_SIDE_MM * GRID_SIDE_MM * 1e-12;
    assert!((c - expected).abs() < 1e-15, "{c}");
}

#[test]
fn nothing_moves_without_hv_or_chip() {
    let mut p = chip();
    p.add_droplet(0, p.unit_volume(0)).unwrap();
    drive(&mut p, &[1], Duration::ZERO);
    p.advance_to(2000 * MS);
    assert_eq!(p.droplets()[0].electrode, "electrode000");
    p.hv_mut(2000 * MS).set_chip(false);
    hv_on(&mut p, 100.0, 2000 * MS);
    p.advance_to(4000 * MS);
    assert_eq!(p.droplets()[0].electrode, "electrode000");
    assert_eq!(p.sample_capacitance(50), 0.0);
    p.hv_mut(4000 * MS).set_chip(true);
    p.advance_to(6000 * MS);
    assert_eq!(p.droplets()[0].electrode, "electrode001");
}

#[test]
fn speed_rises_with_voltage() {
    let time_at = |v: f64| {
        let mut p = chip();
        p.add_droplet(0, p.unit_volume(0)).unwrap();
        drive(&mut p, &[1], Duration::ZERO);
        hv_on(&mut p, v, Duration::ZERO);
        settle(&mut p, Duration::ZERO, 5000 * MS)
    };
    let (slow, fast) = (time_at(60.0), time_at(140.0));
    assert!(slow > 2 * fast, "{slow:?} vs {fast:?}");
    let mut p = chip();
    p.add_droplet(0, p.unit_volume(0)).unwrap();
    drive(&mut p, &[1], Duration::ZERO);
    hv_on(&mut p, 25.0, Duration::ZERO);
    p.advance_to(5000 * MS);
    assert_eq!(p.droplets()[0].electrode, "electrode000", "below threshold");
}

#[test]
fn splits_across_two_actuated_neighbours_and_merges_back() {
    let mut p = chip();
    let unit = p.unit_volume(55);
    p.add_droplet(55, 2.0 * unit).unwrap();
    hv_on(&mut p, 100.0, Duration::ZERO);
    drive(&mut p, &[54, 56], Duration::ZERO);
    let t = settle(&mut p, Duration::ZERO, 2000 * MS);
    let d = p.droplets();
    assert_eq!(d.len(), 2, "{d:?}");
    let mut at: Vec<&str> = d.iter().map(|d| d.electrode.as_str()).collect();
    at.sort();
    assert_eq!(at, ["electrode054", "electrode056"]);
    assert!(d.iter().all(|d| (d.volume_ul - unit).abs() < 1e-12));
    // Bring both back to 55: they merge.
    drive(&mut p, &[55], t);
    settle(&mut p, t, 2000 * MS);
    let d = p.droplets();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].electrode, "electrode055");
    assert!((d[0].volume_ul - 2.0 * unit).abs() < 1e-12);
}

#[test]
fn capacitance_counts_covered_and_uncovered_actuated_area() {
    let mut p = chip();
    hv_on(&mut p, 100.0, Duration::ZERO);
    let area = GRID_SIDE_MM * GRID_SIDE_MM;
    // Half an electrode's worth of liquid on 10, which is actuated with 11 (empty).
    p.add_droplet(10, p.unit_volume(10) / 2.0).unwrap();
    drive(&mut p, &[10, 11], Duration::ZERO);
    let expected = area / 2.0 * 1e-12 + (area / 2.0 + area) * 2e-14;
    assert!((p.load_capacitance() - expected).abs() < 1e-18);
    let noisy = p.sample_capacitance(50);
    assert!((noisy - expected).abs() < 1e-13, "{noisy} vs {expected}");
}

#[test]
fn shorts_raise_the_output_current() {
    let mut p = chip();
    p.set_shorted([3]);
    hv_on(&mut p, 100.0, Duration::ZERO);
    drive(&mut p, &[2], Duration::ZERO);
    let normal = p.output_current(Duration::ZERO, 10_000.0);
    assert!(normal < 0.001, "{normal}");
    drive(&mut p, &[2, 3], Duration::ZERO);
    let shorted = p.output_current(Duration::ZERO, 10_000.0);
    assert!(shorted > 0.04, "{shorted}");
    assert_eq!(p.shorted(120), vec![3]);
    assert_eq!(p.shorted(3), Vec::<u16>::new());
}
