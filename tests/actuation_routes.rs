//! The route compiler: MicroDrop 3's route objects to phases, exactly (no sampling), on a
//! small grid and on MicroDrop 3's default device; refusals name the route and the step.

use std::collections::BTreeSet;
use std::time::Duration;

use dropbot_plugin::actuation::routes::{
    compile, routes_from_value, Bounds, Compiled, Route, RouteError,
};
use dropbot_plugin::device::{Device, Direction, Electrode};
use nalgebra::Point2;
use serde_json::json;

use Direction::{Down, Left, Right, Up};

const BOUNDS: Bounds = Bounds {
    max_phases: 10_000,
    max_duration: Duration::from_secs(86_400),
    channel_count: 120,
};

/// A 4 x 3 grid of 2 mm squares 0.1 mm apart: `e<x><y>` on channel `10·y + x`; `e30` shares
/// channel 2 with `e20`.
fn grid() -> Device {
    let mut electrodes = Vec::new();
    for y in 0..3u16 {
        for x in 0..4u16 {
            let channel = if (x, y) == (3, 0) { 2 } else { 10 * y + x };
            let min = Point2::new(f64::from(x) * 2.1, f64::from(y) * 2.1);
            let e = Electrode::rectangle(format!("e{x}{y}"), vec![channel], min, 2.0, 2.0)
                .expect("a rectangle");
            electrodes.push(e);
        }
    }
    Device::from_electrodes(electrodes).expect("the grid")
}

fn route(start: &str, path: &[Direction], transition_ms: u64) -> Route {
    Route {
        transition: Duration::from_millis(transition_ms),
        ..Route::new(start, path.to_vec())
    }
}

fn set(channels: &[u16]) -> BTreeSet<u16> {
    channels.iter().copied().collect()
}

/// (channels, duration in ms) of every phase.
fn phases(c: &Compiled) -> Vec<(BTreeSet<u16>, u64)> {
    assert_eq!(c.program.repeats, 1);
    assert!(c.program.needs_hv);
    c.program
        .phases
        .iter()
        .map(|p| {
            assert!(p.until_farads.is_none() && p.voltage.is_none());
            (p.channels.clone(), p.duration.as_micros() as u64 / 1000)
        })
        .collect()
}

fn run(routes: &[Route]) -> Compiled {
    compile(routes, &grid(), &BTreeSet::new(), &BOUNDS).expect("compiles")
}

#[test]
fn an_open_route_switches_one_electrode_per_transition_and_keeps_the_last() {
    let c = run(&[route("e00", &[Right, Right], 100)]);
    assert_eq!(
        phases(&c),
        vec![(set(&[0]), 100), (set(&[1]), 100), (set(&[2]), 100)]
    );
    assert_eq!(c.duration, Duration::from_millis(300));
    assert_eq!(c.walks[0].ids, ["e00", "e10", "e20"]);
    assert!(!c.walks[0].closed);
    assert_eq!(c.program.phases[1].label.as_deref(), Some("e10"));
}

#[test]
fn a_trail_keeps_electrodes_on_behind_the_head() {
    // Electrode i on during [T(i-1), T(i+1)) with a trail of 2; the last stays on.
    let c = run(&[Route {
        trail_length: 2,
        ..route("e00", &[Up, Up], 100)
    }]);
    assert_eq!(
        phases(&c),
        vec![
            (set(&[0, 10]), 100),
            (set(&[10, 20]), 100),
            (set(&[20]), 100)
        ]
    );
    // A trail longer than the route: everything on from the start, then it collapses.
    let c = run(&[Route {
        trail_length: 5,
        ..route("e00", &[Up, Up], 100)
    }]);
    assert_eq!(
        phases(&c),
        vec![
            (set(&[0, 10, 20]), 100),
            (set(&[10, 20]), 100),
            (set(&[20]), 100)
        ]
    );
}

#[test]
fn routes_of_different_speeds_change_at_their_exact_instants() {
    // A: 100 ms per step; B: 250 ms per step. MicroDrop would sample every 50 ms; the
    // phases here start exactly where a set changes.
    let c = run(&[route("e00", &[Up, Up], 100), route("e20", &[Up], 250)]);
    assert_eq!(
        phases(&c),
        vec![
            (set(&[0, 2]), 100),
            (set(&[10, 2]), 100),
            (set(&[20, 2]), 50),
            (set(&[20, 12]), 250),
        ]
    );
    assert_eq!(c.duration, Duration::from_millis(500));
}

#[test]
fn closed_loops_repeat_for_their_duration_or_their_count() {
    let square = [Up, Right, Down, Left];
    // ⌊R/(T·len)⌋ + 1 = ⌊1 s / 0.4 s⌋ + 1 = 3 walks.
    let c = run(&[route("e00", &square, 100)]);
    assert!(c.walks[0].closed);
    assert_eq!(c.walks[0].repeats, 3);
    let walk_once = [set(&[10]), set(&[11]), set(&[1]), set(&[0])];
    let mut want = vec![(set(&[0]), 100)];
    for _ in 0..3 {
        want.extend(walk_once.iter().map(|s| (s.clone(), 100)));
    }
    assert_eq!(phases(&c), want);
    assert_eq!(c.duration, Duration::from_millis(1300));

    // route-repeats wins when it asks for more; no repeat duration means one walk.
    let more = Route {
        route_repeats: 5,
        ..route("e00", &square, 100)
    };
    assert_eq!(run(&[more]).walks[0].repeats, 5);
    let once = Route {
        repeat_duration: Duration::ZERO,
        ..route("e00", &square, 100)
    };
    assert_eq!(run(&[once]).program.phases.len(), 5);
    // An open route ignores route-repeats, as MicroDrop does.
    let open = Route {
        route_repeats: 4,
        ..route("e00", &[Right], 100)
    };
    assert_eq!(run(&[open]).walks[0].repeats, 1);
}

#[test]
fn held_channels_stay_on_and_route_channels_are_left_to_the_route() {
    let c = compile(
        &[route("e00", &[Right], 100)],
        &grid(),
        &set(&[0, 99]),
        &BOUNDS,
    )
    .unwrap();
    assert_eq!(phases(&c), vec![(set(&[0, 99]), 100), (set(&[1, 99]), 100)]);
}

#[test]
fn steps_onto_a_shared_channel_merge_into_one_phase() {
    // e20 and e30 share channel 2: the board sees one frame for both steps.
    let c = run(&[route("e10", &[Right, Right], 100)]);
    assert_eq!(phases(&c), vec![(set(&[1]), 100), (set(&[2]), 200)]);
}

#[test]
fn invalid_routes_are_refused_naming_the_route_and_the_step() {
    let d = grid();
    let refuse = |routes: &[Route]| {
        compile(routes, &d, &BTreeSet::new(), &BOUNDS)
            .expect_err("refused")
            .to_string()
    };
    let e = refuse(&[route("e00", &[Up], 100), route("nowhere", &[Up], 100)]);
    assert!(e.contains("route #1") && e.contains("nowhere"), "{e}");
    let e = refuse(&[route("e00", &[Up, Left], 100)]);
    assert!(
        e.contains("route #0") && e.contains("left") && e.contains("step #1"),
        "{e}"
    );
    // Too many steps for a run: a loop asked to go on for a day at 0.1 s per step.
    let long = Route {
        repeat_duration: Duration::from_secs(86_000),
        ..route("e00", &[Up, Down], 100)
    };
    let e = compile(&[long], &d, &BTreeSet::new(), &BOUNDS).unwrap_err();
    assert!(matches!(e, RouteError::TooLarge { .. }), "{e}");
    assert!(e.allowed().contains("10000"), "{}", e.allowed());
    // Too many electrode visits in all: eleven loops of 9,998 steps each (⌊999.6 / 0.2⌋ + 1
    // walks of 2 steps).
    let busy = Route {
        repeat_duration: Duration::from_micros(999_600_000),
        ..route("e00", &[Up, Down], 100)
    };
    assert!(compile(std::slice::from_ref(&busy), &d, &BTreeSet::new(), &BOUNDS).is_ok());
    let e = compile(&vec![busy; 11], &d, &BTreeSet::new(), &BOUNDS).unwrap_err();
    assert!(e.to_string().contains("100000 electrodes"), "{e}");
    // A device channel the board does not have.
    let small = Bounds {
        channel_count: 16,
        ..BOUNDS
    };
    let e = compile(
        &[route("e00", &[Up, Up], 100)],
        &d,
        &BTreeSet::new(),
        &small,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("e02") && e.to_string().contains("20"),
        "{e}"
    );
    assert!(e.allowed().contains("0 to 15"), "{}", e.allowed());
}

#[test]
fn microdrop_route_objects_parse_with_its_defaults() {
    let payload = json!({"routes": [
        {"start": "e00", "path": ["up", "Right"], "uuid": "abc"},
        {"start": "e20", "path": [], "trail-length": 2, "transition-duration-seconds": 0.25,
         "repeat-duration-seconds": 0, "route-repeats": 3.0},
    ]});
    let routes = routes_from_value(&payload).unwrap();
    assert_eq!(routes[0], Route::new("e00", vec![Up, Right]));
    assert_eq!(routes[1].trail_length, 2);
    assert_eq!(routes[1].transition, Duration::from_millis(250));
    assert_eq!(routes[1].repeat_duration, Duration::ZERO);
    assert_eq!(routes[1].route_repeats, 3);
    // A bare array works too.
    let bare = json!([{"start": "e00", "path": ["up"]}]);
    assert_eq!(routes_from_value(&bare).unwrap().len(), 1);
    // An empty path holds its start for one transition.
    let c = run(&[route("e11", &[], 100)]);
    assert_eq!(phases(&c), vec![(set(&[11]), 100)]);
}

#[test]
fn bad_route_objects_say_what_is_wrong_and_what_is_allowed() {
    let cases = [
        (json!({"routes": 5}), "not an array", "routes"),
        (json!([]), "no routes", "routes"),
        (json!({}), "no `routes`", "routes"),
        (
            json!([{"path": []}]),
            "route #0: start is missing",
            "electrode id",
        ),
        (json!([{"start": "e00"}]), "path is missing", "up, down"),
        (
            json!([{"start": "e00", "path": ["up", "north"]}]),
            "step #1 is \"north\"",
            "up, down",
        ),
        (
            json!([{"start": "e00", "path": [], "trail-length": 0}]),
            "trail-length is 0",
            "1 to 10000",
        ),
        (
            json!([{"start": "e00", "path": [], "trail-length": 1.5}]),
            "trail-length is 1.5",
            "integer",
        ),
        (
            json!([{"start": "e00", "path": [], "transition-duration-seconds": 0.01}]),
            "transition-duration-seconds is 0.01",
            "from 0.1 to 3600",
        ),
        (
            json!([{"start": "e00", "path": [], "repeat-duration-seconds": -1}]),
            "repeat-duration-seconds is -1",
            "from 0 to",
        ),
        (
            json!([{"start": "e00", "path": [], "route-repeats": "2"}]),
            "route-repeats is \"2\"",
            "integer",
        ),
        (json!(["e00"]), "route #0: route is \"e00\"", "route object"),
    ];
    for (payload, problem, allowed) in cases {
        let e = routes_from_value(&payload).expect_err("refused");
        assert!(e.to_string().contains(problem), "{e} (wanted {problem})");
        assert!(
            e.allowed().contains(allowed),
            "{} (wanted {allowed})",
            e.allowed()
        );
    }
    let many: Vec<_> = (0..65)
        .map(|_| json!({"start": "e00", "path": []}))
        .collect();
    assert!(routes_from_value(&json!(many)).is_err());
}

#[test]
fn the_default_device_walks_as_microdrop_does() {
    let d = Device::microdrop3_default().unwrap();
    let r = Route {
        transition: Duration::from_millis(200),
        ..Route::new("electrode030", vec![Up, Up, Up, Right, Right])
    };
    let c = compile(&[r], &d, &BTreeSet::new(), &BOUNDS).unwrap();
    let ids = [
        "electrode030",
        "electrode029",
        "electrode091",
        "electrode084",
        "electrode083",
        "electrode082",
    ];
    assert_eq!(c.walks[0].ids, ids);
    let want: Vec<BTreeSet<u16>> = ids
        .iter()
        .map(|id| d.channels_for(&[id]).unwrap())
        .collect();
    let got: Vec<BTreeSet<u16>> = c
        .program
        .phases
        .iter()
        .map(|p| p.channels.clone())
        .collect();
    assert_eq!(got, want);
    assert!(c
        .program
        .phases
        .iter()
        .all(|p| p.duration == Duration::from_millis(200)));
}
