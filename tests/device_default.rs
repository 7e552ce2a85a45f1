//! MicroDrop 3's real default device (92 electrodes, 90 channels) through the device layer.

use std::collections::BTreeSet;

use dropbot_plugin::device::{geometry, Device, Direction, UnknownElectrodes};
use nalgebra::Point2;

fn default_device() -> Device {
    Device::microdrop3_default().unwrap_or_else(|e| panic!("default device: {e}"))
}

fn id_of(d: &Device, index: usize) -> String {
    d.electrode(index).map(|e| e.id.clone()).unwrap_or_default()
}

#[test]
fn default_device_has_92_electrodes_on_90_channels() {
    let d = default_device();
    assert_eq!(d.len(), 92);
    assert_eq!(d.channels().len(), 90);
    assert_eq!(d.channel_count_needed(), 120); // highest channel is 119
    let shared: Vec<(u16, Vec<String>)> = d
        .channels()
        .into_iter()
        .map(|ch| {
            (
                ch,
                d.electrodes_on_channel(ch)
                    .iter()
                    .map(|e| e.id.clone())
                    .collect(),
            )
        })
        .filter(|(_, ids): &(u16, Vec<String>)| ids.len() > 1)
        .collect();
    println!("shared channels: {shared:?}");
    assert_eq!(shared.len(), 2);
    assert!(shared.iter().all(|(_, ids)| ids.len() == 2));
}

#[test]
fn areas_are_computed_from_shapes_and_plausible() {
    let d = default_device();
    for e in d.electrodes().iter().take(5) {
        println!(
            "{}: {:.2} mm², centroid ({:.2}, {:.2}), {} vertices, channels {:?}",
            e.id,
            e.area_mm2,
            e.centroid.x,
            e.centroid.y,
            e.outline.len(),
            e.channels
        );
    }
    let areas: Vec<f64> = d.electrodes().iter().map(|e| e.area_mm2).collect();
    let (min, max) = areas.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), a| {
        (lo.min(*a), hi.max(*a))
    });
    println!("areas: min {min:.2} mm², max {max:.2} mm²");
    // Electrodes are ~6 mm squares (~37 mm²) up to reservoirs of a few hundred mm².
    assert!(min > 20.0 && max < 1000.0, "min {min} max {max}");
    // The chip is about 139 x 137 mm: the electrodes cannot cover more than that.
    let total: f64 = areas.iter().sum();
    assert!(total > 3000.0 && total < 139.0 * 137.0, "total {total}");
    // electrode000's outline is exactly its rectangle in the device SVG (y down).
    let e0 = d
        .by_id("electrode000")
        .unwrap_or_else(|| panic!("electrode000"));
    let bb = e0.bounding_box();
    assert!(
        (bb.min - Point2::new(23.0518967178, 74.7022636)).norm() < 1e-6,
        "{bb:?}"
    );
    assert!(
        (bb.max - Point2::new(29.0322104422, 80.8617128)).norm() < 1e-6,
        "{bb:?}"
    );
}

#[test]
fn outlines_do_not_overlap_and_centroids_lie_inside() {
    let d = default_device();
    let es = d.electrodes();
    let mut smallest_gap = f64::INFINITY;
    for (i, a) in es.iter().enumerate() {
        assert!(
            geometry::contains(&a.outline, a.centroid),
            "{} centroid outside",
            a.id
        );
        for b in es.iter().skip(i + 1) {
            smallest_gap = smallest_gap.min(geometry::polygon_distance(&a.outline, &b.outline));
        }
    }
    println!("smallest gap between electrodes: {smallest_gap:.3} mm");
    // With a wrong y convention the mirrored non-rectangular electrodes would overlap.
    assert!(smallest_gap > 0.02, "{smallest_gap}");
}

#[test]
fn neighbours_are_symmetric_and_nobody_is_alone() {
    let d = default_device();
    let mut pairs = 0;
    for i in 0..d.len() {
        assert!(
            !d.neighbours(i).is_empty(),
            "{} has no neighbour",
            id_of(&d, i)
        );
        for &j in d.neighbours(i) {
            assert!(d.neighbours(j).contains(&i), "{} -> {} not mutual", i, j);
            assert_ne!(i, j);
            pairs += 1;
        }
    }
    println!("neighbour pairs: {}", pairs / 2);
    // The reservoirs 057/074 and 058/073 are 3.1 mm apart: not neighbours.
    for (a, b) in [
        ("electrode057", "electrode074"),
        ("electrode058", "electrode073"),
    ] {
        let (a, b) = (d.index_of(a).unwrap_or(0), d.index_of(b).unwrap_or(0));
        assert!(!d.neighbours(a).contains(&b));
    }
    let e0 = d.index_of("electrode000").unwrap_or(usize::MAX);
    let names: BTreeSet<String> = d.neighbours(e0).iter().map(|&j| id_of(&d, j)).collect();
    let expected: BTreeSet<String> = ["electrode001", "electrode002", "electrode043"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn directions_match_microdrop3_expectations() {
    // MicroDrop 3's own integration test expects these for its default device.
    let d = default_device();
    let e0 = d.index_of("electrode000").unwrap_or(usize::MAX);
    let towards = |dir| d.neighbour_in_direction(e0, dir).map(|j| id_of(&d, j));
    assert_eq!(towards(Direction::Left).as_deref(), Some("electrode043"));
    assert_eq!(towards(Direction::Down).as_deref(), Some("electrode001"));
    assert_eq!(towards(Direction::Right).as_deref(), Some("electrode002"));
    assert_eq!(towards(Direction::Up), None);
    let path: Vec<Direction> = ["up", "up", "up", "right", "right"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let route = d
        .walk_route("electrode030", &path)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        route,
        [
            "electrode030",
            "electrode029",
            "electrode091",
            "electrode084",
            "electrode083",
            "electrode082"
        ]
    );
}

#[test]
fn electrode_ids_map_to_channels_and_unknown_ids_are_reported() {
    let d = default_device();
    let on = d.channels_for(&[
        "electrode000",
        "electrode001",
        "electrode057",
        "electrode058",
    ]);
    assert_eq!(on, Ok([118u16, 119, 30].into_iter().collect()));
    let stale = d.channels_for(&["electrode000", "electrode999", "electrode-x"]);
    assert_eq!(
        stale,
        Err(UnknownElectrodes {
            unknown: vec!["electrode999".to_string(), "electrode-x".to_string()]
        })
    );
    let all: Vec<String> = d.electrodes().iter().map(|e| e.id.clone()).collect();
    assert_eq!(d.channels_for(&all).map(|c| c.len()), Ok(90));
}
