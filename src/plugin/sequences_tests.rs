use serde_json::json;

use super::*;

fn device() -> Device {
    Device::microdrop3_default().expect("the default device")
}

fn env(device: &Device) -> Env<'_> {
    Env {
        device: Some(device),
        limits: Limits::default(),
        calibration: None,
    }
}

fn refused(value: Value, env: &Env<'_>) -> InputError {
    match parse_sequence(&value, env) {
        Ok(p) => panic!("accepted {value}: {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn timed_and_feedback_phases_with_settings_and_repeats() {
    let d = device();
    let p = parse_sequence(
        &json!({"phases": [
            {"channels": [3, 1], "duration_ms": 250, "voltage": "110 V", "frequency": 2000,
             "label": "first"},
            {"electrodes": ["electrode030", "electrode030"], "until": {"capacitance_f": 2e-12},
             "timeout_ms": 1500.5},
            {"channels": [], "duration_ms": 1},
        ], "repeats": 3}),
        &env(&d),
    )
    .unwrap();
    assert_eq!(p.repeats, 3);
    assert!(p.needs_hv);
    assert_eq!(p.len(), 9);
    let first = &p.phases[0];
    assert_eq!(first.channels, BTreeSet::from([1, 3]));
    assert_eq!(first.duration, Duration::from_millis(250));
    assert_eq!(
        (first.voltage, first.frequency),
        (Some(110.0), Some(2000.0))
    );
    assert_eq!(first.label.as_deref(), Some("first"));
    assert_eq!(first.until_farads, None);
    let feedback = &p.phases[1];
    assert_eq!(
        feedback.channels,
        d.channels_for(&["electrode030"]).unwrap()
    );
    assert_eq!(feedback.until_farads, Some(2e-12));
    assert_eq!(feedback.duration, Duration::from_micros(1_500_500));
    assert!(p.phases[2].channels.is_empty());
}

#[test]
fn coverage_needs_a_calibration_and_converts_in_one_place() {
    let d = device();
    let payload = json!({"phases": [
        {"electrodes": ["electrode030", "electrode029"], "until": {"coverage": 0.5},
         "timeout_ms": 1000},
    ]});
    let e = refused(payload.clone(), &env(&d));
    assert!(e.problem.contains("calibration"), "{e}");
    assert!(e.allowed.contains("capacitance_f"), "{e}");

    let calibration = Calibration {
        liquid_f_per_mm2: 1e-12,
        filler_f_per_mm2: 2e-14,
    };
    let calibrated = Env {
        calibration: Some(calibration),
        ..env(&d)
    };
    let area: f64 = ["electrode030", "electrode029"]
        .iter()
        .filter_map(|id| d.by_id(id))
        .map(|e| e.area_mm2)
        .sum();
    let p = parse_sequence(&payload, &calibrated).unwrap();
    let want = area * (2e-14 + 0.5 * (1e-12 - 2e-14));
    let got = p.phases[0].until_farads.unwrap();
    assert!((got - want).abs() < 1e-24, "{got} vs {want}");
    assert_eq!(calibration.coverage_farads(10.0, 0.0), 10.0 * 2e-14);
    assert_eq!(calibration.coverage_farads(10.0, 1.0), 10.0 * 1e-12);

    // By channel: every electrode on the channel counts once.
    let ch = d.channels_for(&["electrode030"]).unwrap();
    let by_channel = json!({"phases": [
        {"channels": ch, "until": {"coverage": 1.0}, "timeout_ms": 1000},
    ]});
    let p = parse_sequence(&by_channel, &calibrated).unwrap();
    let area: f64 = ch
        .iter()
        .flat_map(|&c| d.electrodes_on_channel(c))
        .map(|e| e.area_mm2)
        .sum();
    assert_eq!(p.phases[0].until_farads, Some(area * 1e-12));
}

#[test]
fn bad_payloads_say_which_phase_what_was_wrong_and_what_is_allowed() {
    let d = device();
    let env = env(&d);
    let one = |phase: Value| json!({"phases": [{"channels": [1], "duration_ms": 10}, phase]});
    let cases = [
        (json!([1]), "got an array", "phases"),
        (json!({"phase": []}), "unknown field `phase`", "phases"),
        (json!({}), "no `phases`", "phases"),
        (json!({"phases": []}), "has 0 phases", "1 to 1000"),
        (
            json!({"phases": [{"channels": [1], "duration_ms": 10}], "repeats": 0}),
            "repeats is 0",
            "1 to 10000",
        ),
        (one(json!(5)), "phases[1] is the number 5", "phases"),
        (
            one(json!({"channels": [1], "duraton_ms": 10})),
            "phases[1] has an unknown field `duraton_ms`",
            "duration_ms",
        ),
        (
            one(json!({"channels": [1], "electrodes": [], "duration_ms": 10})),
            "both channels and electrodes",
            "one of them",
        ),
        (
            one(json!({"duration_ms": 10})),
            "neither channels nor electrodes",
            "electrodes",
        ),
        (
            one(json!({"channels": [120], "duration_ms": 10})),
            "phases[1].channels: channel 120 does not exist",
            "0 to 119",
        ),
        (
            one(json!({"electrodes": ["electrode030", "nope", "gone"], "duration_ms": 10})),
            "phases[1].electrodes: unknown electrode id(s): nope, gone",
            "loaded device",
        ),
        (
            one(json!({"electrodes": [7], "duration_ms": 10})),
            "item 7 is not a string",
            "electrode ids",
        ),
        (
            one(json!({"channels": [1]})),
            "phases[1].duration_ms is missing",
            "milliseconds from 1 to 3600000",
        ),
        (
            one(json!({"channels": [1], "duration_ms": 0})),
            "phases[1].duration_ms is 0",
            "milliseconds",
        ),
        (
            one(json!({"channels": [1], "duration_ms": "10"})),
            "duration_ms is \"10\"",
            "milliseconds",
        ),
        (
            one(json!({"channels": [1], "duration_ms": 10, "voltage": 500})),
            "phases[1].voltage: 500 is out of range",
            "0 to 150",
        ),
        (
            one(json!({"channels": [1], "duration_ms": 10, "frequency": 50})),
            "phases[1].frequency: 50 is out of range",
            "Hz",
        ),
        (
            one(json!({"channels": [1], "duration_ms": 10, "label": 3})),
            "phases[1].label is the number 3",
            "text",
        ),
        (
            one(json!({"channels": [1], "duration_ms": 10, "timeout_ms": 10})),
            "timeout_ms but no until",
            "feedback phase",
        ),
        (
            one(json!({"channels": [1], "until": {"capacitance_f": 1e-12}, "duration_ms": 10})),
            "waits for `until` but has duration_ms",
            "timeout_ms",
        ),
        (
            one(json!({"channels": [1], "until": {"capacitance_f": 5}, "timeout_ms": 10})),
            "phases[1].until.capacitance_f is 5",
            "farads",
        ),
        (
            one(json!({"channels": [1], "until": {"capacitance_f": 0}, "timeout_ms": 10})),
            "capacitance_f is 0",
            "farads",
        ),
        (
            one(json!({"channels": [1], "until": {"coverage": 1.5}, "timeout_ms": 10})),
            "until.coverage is 1.5",
            "fraction",
        ),
        (
            one(json!({"channels": [1], "until": {"volume": 1}, "timeout_ms": 10})),
            "has `volume`",
            "capacitance_f",
        ),
        (
            one(json!({"channels": [1], "until": 1e-12, "timeout_ms": 10})),
            "until is the number",
            "capacitance_f",
        ),
    ];
    for (payload, problem, allowed) in cases {
        let e = refused(payload.clone(), &env);
        assert_eq!(e.property, "run-sequence");
        assert!(
            e.problem.contains(problem),
            "{payload}: {e} (wanted {problem})"
        );
        assert!(
            e.allowed.contains(allowed),
            "{payload}: {e} (wanted {allowed})"
        );
    }
}

#[test]
fn runs_are_bounded() {
    let d = device();
    let env = env(&d);
    let phase = json!({"channels": [1], "duration_ms": 10});
    let e = refused(json!({"phases": vec![phase.clone(); 1001]}), &env);
    assert!(e.problem.contains("1001 phases"), "{e}");
    let e = refused(
        json!({"phases": vec![phase.clone(); 20], "repeats": 1000}),
        &env,
    );
    assert!(
        e.problem.contains("20000") && e.allowed.contains("10000"),
        "{e}"
    );
    let hour = json!({"channels": [1], "duration_ms": 3_600_000});
    let e = refused(json!({"phases": [hour], "repeats": 25}), &env);
    assert!(e.allowed.contains("86400"), "{e}");
    // Electrodes need a device.
    let none = Env {
        device: None,
        ..env
    };
    let e = refused(
        json!({"phases": [{"electrodes": ["electrode030"], "duration_ms": 10}]}),
        &none,
    );
    assert!(e.problem.contains("no device"), "{e}");
    // A device channel the board does not have.
    let small = Env {
        limits: Limits {
            channel_count: 8,
            ..Limits::default()
        },
        ..env
    };
    let e = refused(
        json!({"phases": [{"electrodes": ["electrode030"], "duration_ms": 10}]}),
        &small,
    );
    assert!(e.allowed.contains("0 to 7"), "{e}");
}
