//! Unit tests of parsing, validation, the channel map and directions on small devices.

use nalgebra::Point2;
use serde_json::{json, Value};

use super::*;

/// A three-object electrode: a `w` x `h` rectangle centred on (`x`, `y`), straight curves
/// without a `type` (like MicroDrop 3's default device).
fn rect_json(id: &str, channel: &str, x: f64, y: f64, w: f64, h: f64) -> Value {
    let (a, b) = (w / 2.0, h / 2.0);
    let corners = [(a, b), (-a, b), (-a, -b), (a, -b)];
    let curves: Vec<Value> = (0..4)
        .map(|i| {
            let (p, q) = (corners[i], corners[(i + 1) % 4]);
            json!({"arcLengthDivisions": 200, "v1": {"x": p.0, "y": p.1}, "v2": {"x": q.0, "y": q.1}})
        })
        .collect();
    json!({"id": id, "channel": channel, "translation": {"x": x, "y": y},
           "shape": {"curves": curves, "autoClose": true, "holes": []}, "area": 1.0})
}

/// 3 x 2 grid of 2 mm squares with 0.1 mm gaps; ids e<col><row>, channel = col + 3*row.
fn grid() -> Device {
    let mut electrodes = Vec::new();
    for row in 0..2u16 {
        for col in 0..3u16 {
            let min = Point2::new(f64::from(col) * 2.1, f64::from(row) * 2.1);
            let e =
                Electrode::rectangle(format!("e{col}{row}"), vec![col + 3 * row], min, 2.0, 2.0);
            electrodes.extend(e.ok());
        }
    }
    Device::from_electrodes(electrodes).unwrap_or_else(|e| panic!("grid: {e}"))
}

fn parse(v: Value) -> Result<Device, DeviceError> {
    Device::from_three_object_value(&v)
}

fn problem_of(result: Result<Device, DeviceError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(d) => panic!("expected an error, got {} electrodes", d.len()),
    }
}

#[test]
fn parses_channels_and_flips_shape_y() {
    let d = parse(json!([
        rect_json("a", "3", 10.0, 20.0, 2.0, 4.0),
        rect_json("b", "1, 2", 12.1, 20.0, 2.0, 4.0),
        rect_json("c", "", 14.2, 20.0, 2.0, 4.0),
    ]))
    .unwrap_or_else(|e| panic!("{e}"));
    let channels: Vec<Vec<u16>> = d.electrodes().iter().map(|e| e.channels.clone()).collect();
    assert_eq!(channels, vec![vec![3], vec![1, 2], vec![]]);
    let a = d.by_id("a").unwrap_or_else(|| panic!("a"));
    assert!((a.area_mm2 - 8.0).abs() < 1e-9, "area {}", a.area_mm2);
    assert!((a.centroid - Point2::new(10.0, 20.0)).norm() < 1e-9);
    // The first shape point (1, 2) (y up) lands at (11, 18) in device coordinates (y down).
    assert!((a.outline[0] - Point2::new(11.0, 18.0)).norm() < 1e-9);
    assert_eq!(d.channel_count_needed(), 4);
}

#[test]
fn missing_channel_and_numeric_channel_are_accepted() {
    let mut no_channel = rect_json("a", "", 0.0, 0.0, 1.0, 1.0);
    no_channel.as_object_mut().map(|o| o.remove("channel"));
    let mut numeric = rect_json("b", "", 1.1, 0.0, 1.0, 1.0);
    numeric["channel"] = json!(7);
    let d = parse(json!([no_channel, numeric])).unwrap_or_else(|e| panic!("{e}"));
    assert!(d.electrodes()[0].channels.is_empty());
    assert_eq!(d.electrodes()[1].channels, vec![7]);
}

#[test]
fn bad_payloads_name_the_electrode_and_the_problem() {
    assert!(problem_of(Device::from_three_object_json("{")).contains("not valid JSON"));
    assert!(problem_of(parse(json!({"id": "x"}))).contains("must be an array"));

    let mut no_id = rect_json("x", "1", 0.0, 0.0, 1.0, 1.0);
    no_id.as_object_mut().map(|o| o.remove("id"));
    let msg = problem_of(parse(json!([
        rect_json("ok", "1", 5.0, 5.0, 1.0, 1.0),
        no_id
    ])));
    assert!(
        msg.contains("electrode #1") && msg.contains("missing `id`"),
        "{msg}"
    );

    let msg = problem_of(parse(json!([rect_json("e7", "1,x", 0.0, 0.0, 1.0, 1.0)])));
    assert!(msg.contains("e7") && msg.contains("\"x\""), "{msg}");
    let msg = problem_of(parse(json!([rect_json("e8", "70000", 0.0, 0.0, 1.0, 1.0)])));
    assert!(msg.contains("e8") && msg.contains("70000"), "{msg}");

    let mut bad_coord = rect_json("e9", "1", 0.0, 0.0, 1.0, 1.0);
    bad_coord["translation"]["y"] = json!("12");
    let msg = problem_of(parse(json!([bad_coord])));
    assert!(
        msg.contains("e9") && msg.contains("`translation`") && msg.contains("`y`"),
        "{msg}"
    );

    let mut bad_curve = rect_json("e10", "1", 0.0, 0.0, 1.0, 1.0);
    bad_curve["shape"]["curves"][2]["v2"] = json!({"x": 1.0});
    let msg = problem_of(parse(json!([bad_curve])));
    assert!(
        msg.contains("e10") && msg.contains("curve #2") && msg.contains("`y`"),
        "{msg}"
    );

    let dup = problem_of(parse(json!([
        rect_json("d", "1", 0.0, 0.0, 1.0, 1.0),
        rect_json("d", "2", 3.0, 0.0, 1.0, 1.0),
    ])));
    assert!(
        dup.contains("\"d\"") && dup.contains("#0") && dup.contains("#1"),
        "{dup}"
    );

    let flat = problem_of(parse(json!([rect_json("flat", "1", 0.0, 0.0, 1.0, 0.0)])));
    assert!(flat.contains("flat"), "{flat}");
}

#[test]
fn non_finite_outlines_are_rejected_not_panicked_on() {
    let nan = vec![
        Point2::new(0.0, 0.0),
        Point2::new(f64::NAN, 0.0),
        Point2::new(1.0, 1.0),
    ];
    let err = Electrode::new("n", vec![1], nan)
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|m| m.contains("not finite")));
    let huge = Electrode::rectangle("h", vec![], Point2::new(0.0, 0.0), 1e200, 1e200);
    assert!(huge
        .err()
        .is_some_and(|e| e.to_string().contains("no usable area")));
    let e = Electrode::rectangle("r", vec![], Point2::new(0.0, 0.0), 1.0, 1.0);
    let mut e = e.unwrap_or_else(|e| panic!("{e}"));
    e.outline[2].y = f64::INFINITY;
    let msg = problem_of(Device::from_electrodes(vec![e]));
    assert!(msg.contains("electrode #0 (r)"), "{msg}");
}

#[test]
fn curved_and_unknown_curves_degrade_gracefully() {
    // A disc of radius 1 as one ellipse arc: area close to pi.
    let disc = json!({"id": "disc", "channel": "1", "translation": {"x": 0.0, "y": 0.0},
        "shape": {"curves": [{"type": "EllipseCurve", "aX": 0.0, "aY": 0.0, "xRadius": 1.0,
        "yRadius": 1.0, "aStartAngle": 0.0, "aEndAngle": std::f64::consts::TAU,
        "aClockwise": false}]}});
    // A triangle whose last side is a curve type we do not know, with end points.
    let tri = json!({"id": "tri", "channel": "2", "translation": {"x": 5.0, "y": 0.0},
        "shape": {"curves": [
            {"v1": {"x": 0.0, "y": 0.0}, "v2": {"x": 2.0, "y": 0.0}},
            {"type": "QuadraticBezierCurve", "v0": {"x": 2.0, "y": 0.0},
             "v1": {"x": 1.0, "y": 1.0}, "v2": {"x": 0.0, "y": 2.0}},
            {"type": "FancyCurve", "v1": {"x": 0.0, "y": 2.0}, "v2": {"x": 0.0, "y": 0.0}}]}});
    let d = parse(json!([disc, tri])).unwrap_or_else(|e| panic!("{e}"));
    let disc_area = d.electrodes()[0].area_mm2;
    assert!(
        (disc_area - std::f64::consts::PI).abs() < 0.1,
        "{disc_area}"
    );
    assert!((d.electrodes()[1].area_mm2 - 2.0).abs() < 1e-9);
    let unknown = json!([{"id": "u", "translation": {"x": 0, "y": 0},
        "shape": {"curves": [{"type": "Mystery"}]}}]);
    assert!(problem_of(parse(unknown)).contains("Mystery"));
}

#[test]
fn channel_map_reports_unknown_ids() {
    let d = grid();
    let chans = d.channels_for(&["e00", "e21", "e00"]);
    assert_eq!(chans, Ok([0u16, 5].into_iter().collect()));
    let err = d.channels_for(&["e00", "nope", "zz", "nope"]);
    assert_eq!(
        err,
        Err(UnknownElectrodes {
            unknown: vec!["nope".into(), "zz".into()]
        })
    );
    assert_eq!(d.channels_for::<&str>(&[]), Ok(BTreeSet::new()));
    let on_3: Vec<&str> = d
        .electrodes_on_channel(3)
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(on_3, vec!["e01"]);
    assert!(d.electrodes_on_channel(99).is_empty());
}

#[test]
fn grid_neighbours_exclude_diagonals() {
    let d = grid();
    let idx = |id: &str| d.index_of(id).unwrap_or(usize::MAX);
    let names = |i: usize| -> Vec<&str> {
        d.neighbours(i)
            .iter()
            .map(|&n| d.electrodes()[n].id.as_str())
            .collect()
    };
    assert_eq!(names(idx("e00")), vec!["e10", "e01"]);
    assert_eq!(names(idx("e11")), vec!["e10", "e01", "e21"]);
    assert!(d.neighbours(999).is_empty());
    // "up" is towards larger y (MicroDrop 3's screen), "right" towards larger x.
    assert_eq!(
        d.neighbour_in_direction(idx("e00"), Direction::Up),
        Some(idx("e01"))
    );
    assert_eq!(
        d.neighbour_in_direction(idx("e00"), Direction::Right),
        Some(idx("e10"))
    );
    assert_eq!(d.neighbour_in_direction(idx("e00"), Direction::Down), None);
    assert_eq!(d.neighbour_in_direction(idx("e00"), Direction::Left), None);
    let walk = d.walk_route("e00", &[Direction::Right, Direction::Up, Direction::Right]);
    assert_eq!(
        walk.ok(),
        Some(vec!["e00".into(), "e10".into(), "e11".into(), "e21".into()])
    );
    let off = d.walk_route("e00", &[Direction::Right, Direction::Down]);
    assert!(matches!(off, Err(DeviceError::NoNeighbour { step: 1, .. })));
}

#[test]
fn far_apart_electrodes_are_not_neighbours() {
    let a = Electrode::rectangle("a", vec![0], Point2::new(0.0, 0.0), 6.0, 6.0);
    let b = Electrode::rectangle("b", vec![1], Point2::new(7.0, 0.0), 6.0, 6.0); // 1 mm gap
    let c = Electrode::rectangle("c", vec![2], Point2::new(0.0, 6.5), 6.0, 6.0); // 0.5 mm gap
    let d = Device::from_electrodes([a, b, c].into_iter().flatten().collect());
    let d = d.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.neighbours(0), &[2]);
    assert!(d.neighbours(1).is_empty());
}

#[test]
fn three_object_round_trip_keeps_geometry_and_channels() {
    let d = grid();
    let back = Device::from_three_object_value(&d.to_three_object_value());
    let back = back.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.len(), d.len());
    for (a, b) in d.electrodes().iter().zip(back.electrodes()) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.channels, b.channels);
        assert!((a.area_mm2 - b.area_mm2).abs() < 1e-9);
        assert!((a.centroid - b.centroid).norm() < 1e-9);
    }
    assert_eq!(back.neighbours(0), d.neighbours(0));
}
