use super::*;
use proptest::prelude::*;

#[test]
fn builds_every_kind() -> Result<(), BusError> {
    let cases = [
        (
            Topic::put("dropbot", "voltage")?,
            "microdrop/put/dropbot/voltage",
        ),
        (
            Topic::trigger("dropbot", "ping")?,
            "microdrop/trigger/dropbot/ping",
        ),
        (
            Topic::state("dropbot", "info")?,
            "microdrop/dropbot/state/info",
        ),
        (
            Topic::error("dropbot", "voltage")?,
            "microdrop/dropbot/error/voltage",
        ),
        (
            Topic::notify("dropbot", "micropede-async-a-b", "voltage")?,
            "microdrop/dropbot/notify/micropede-async-a-b/voltage",
        ),
        (
            Topic::signal("dropbot", "halted")?,
            "microdrop/dropbot/signal/halted",
        ),
        (Topic::status("dropbot")?, "microdrop/status/dropbot"),
    ];
    for (topic, text) in cases {
        assert_eq!(topic.to_string(), text);
        assert_eq!(text.parse::<Topic>()?, topic);
    }
    Ok(())
}

#[test]
fn parses_other_plugins_state() -> Result<(), BusError> {
    let t: Topic = "microdrop/electrodes-model/state/active-electrodes".parse()?;
    assert_eq!(
        t,
        Topic::State {
            sender: "electrodes-model".into(),
            property: "active-electrodes".into()
        }
    );
    assert!(t.is_retained());
    assert!(!Topic::put("a", "b")?.is_retained());
    Ok(())
}

#[test]
fn keywords_in_second_level_win() -> Result<(), BusError> {
    // `put` in the second level is always a put, so `put` can never be a sender.
    let t: Topic = "microdrop/put/state/voltage".parse()?;
    assert_eq!(
        t,
        Topic::Put {
            receiver: "state".into(),
            property: "voltage".into()
        }
    );
    assert!(Topic::state("put", "x").is_err());
    assert!(Topic::signal("trigger", "x").is_err());
    assert!(Topic::status("status").is_err());
    assert!("microdrop/status/state/x".parse::<Topic>().is_err());
    Ok(())
}

#[test]
fn rejects_bad_topics() {
    for bad in [
        "",
        "/",
        "microdrop",
        "microdrop/",
        "other/put/a/b",
        "microdrop/put/a",
        "microdrop/put/a/b/c",
        "microdrop/put//b",
        "microdrop/put/a/",
        "microdrop/put/+/b",
        "microdrop/put/a/#",
        "microdrop/put/a+/b",
        "microdrop/a/state",
        "microdrop/a/state/b/c",
        "microdrop/a/notify/b",
        "microdrop/a/unknown/b",
        "microdrop/status",
        "microdrop/status/a/b",
        "microdrop/put/a/b\0",
    ] {
        assert!(bad.parse::<Topic>().is_err(), "accepted {bad:?}");
    }
}

#[test]
fn builders_reject_bad_names() {
    for bad in ["", "a/b", "+", "#", "a+", "x#", "\0"] {
        assert!(Topic::put(bad, "p").is_err(), "receiver {bad:?}");
        assert!(Topic::put("r", bad).is_err(), "property {bad:?}");
        assert!(Topic::notify("s", bad, "t").is_err(), "receiver {bad:?}");
        assert!(Topic::status(bad).is_err(), "sender {bad:?}");
    }
}

#[test]
fn error_names_the_topic() {
    let err = "microdrop/put//x"
        .parse::<Topic>()
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("microdrop/put//x")),
        "{err:?}"
    );
}

#[test]
fn filter_matching() {
    let yes = [
        ("microdrop/+/state/x", "microdrop/a/state/x"),
        ("microdrop/#", "microdrop/a/state/x"),
        ("microdrop/#", "microdrop"),
        ("#", "a/b"),
        ("a/b", "a/b"),
        ("+/+", "/x"),
    ];
    let no = [
        ("microdrop/+/state/x", "microdrop/a/b/state/x"),
        ("microdrop/+/state/x", "microdrop/a/state"),
        ("a/b", "a/b/c"),
        ("a/b/c", "a/b"),
        ("#", "$SYS/x"),
        ("+/x", "$SYS/x"),
    ];
    for (f, t) in yes {
        assert!(filter_matches(f, t), "{f} should match {t}");
    }
    for (f, t) in no {
        assert!(!filter_matches(f, t), "{f} should not match {t}");
    }
    assert!(filter_matches("$SYS/#", "$SYS/x"));
    assert!(!filter_matches("é/+", "é"));
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_. -]{1,12}".prop_filter("reserved", |s| !RESERVED_SENDERS.contains(&s.as_str()))
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = s.parse::<Topic>();
        let _ = filter_matches(&s, &s);
    }

    #[test]
    fn display_parse_round_trip(a in name(), b in name(), c in name(), kind in 0u8..7) {
        let topic = match kind {
            0 => Topic::put(&a, &b),
            1 => Topic::trigger(&a, &b),
            2 => Topic::state(&a, &b),
            3 => Topic::error(&a, &b),
            4 => Topic::notify(&a, &b, &c),
            5 => Topic::signal(&a, &b),
            _ => Topic::status(&a),
        };
        let topic = topic.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = topic.to_string();
        prop_assert!(filter_matches(&text, &text));
        let back = text.parse::<Topic>().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, topic);
    }
}
