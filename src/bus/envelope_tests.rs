use super::*;

const LIMIT: usize = 1 << 20;

fn head() -> Header {
    Header::new("dropbot", "0.1.0")
}

fn decode(text: &str) -> Result<Envelope, BusError> {
    Envelope::decode(text.as_bytes(), LIMIT)
}

fn reparse(bytes: &[u8]) -> Result<Value, BusError> {
    Ok(serde_json::from_slice(bytes)?)
}

#[test]
fn objects_get_a_head_others_go_bare() -> Result<(), BusError> {
    let obj = reparse(&encode(&json!({"voltage": 100}), &head(), LIMIT)?)?;
    assert_eq!(
        obj,
        json!({"voltage": 100, "__head__": {"plugin_name": "dropbot", "plugin_version": "0.1.0"}})
    );
    for bare in [
        json!([1, 2]),
        json!("on"),
        json!(3.5),
        json!(true),
        json!(null),
    ] {
        assert_eq!(reparse(&encode(&bare, &head(), LIMIT)?)?, bare);
    }
    Ok(())
}

#[test]
fn encode_replaces_an_existing_head_once() -> Result<(), BusError> {
    let text = encode(
        &json!({"a": 1, "__head__": {"plugin_name": "x"}}),
        &head(),
        LIMIT,
    )?;
    let s = String::from_utf8_lossy(&text);
    assert_eq!(s.matches("__head__").count(), 1, "{s}");
    assert_eq!(reparse(&text)?["__head__"]["plugin_name"], "dropbot");
    Ok(())
}

#[test]
fn encode_guards_size() {
    let big = json!("x".repeat(100));
    assert!(matches!(
        encode(&big, &head(), 50),
        Err(BusError::TooLarge {
            size: 102,
            limit: 50
        })
    ));
}

#[test]
fn decode_strips_head_and_finds_reply_address() -> Result<(), BusError> {
    let env = decode(
        r#"{"voltage": 120, "__head__": {"plugin_name": "micropede-async-1-2", "version": "0.0.39"}}"#,
    )?;
    assert_eq!(env.value, json!({"voltage": 120}));
    assert_eq!(env.reply_to(), Some("micropede-async-1-2"));
    assert_eq!(env.put_value("voltage"), &json!(120));
    Ok(())
}

#[test]
fn missing_or_unusable_head_means_no_reply() -> Result<(), BusError> {
    for text in [
        r#"{"voltage": 1}"#,
        r#"{"__head__": {}}"#,
        r#"{"__head__": "dropbot"}"#,
        r#"{"__head__": {"plugin_name": 7}}"#,
        r#"{"__head__": {"plugin_name": ""}}"#,
        r#"{"__head__": {"plugin_name": "a/b"}}"#,
        r#"{"__head__": {"plugin_name": "+"}}"#,
        "[1]",
        "42",
    ] {
        assert_eq!(decode(text)?.reply_to(), None, "{text}");
    }
    Ok(())
}

#[test]
fn nested_head_is_data() -> Result<(), BusError> {
    let env = decode(r#"{"x": {"__head__": 1}, "__head__": {"plugin_name": "ui"}}"#)?;
    assert_eq!(env.value, json!({"x": {"__head__": 1}}));
    let env = decode(r#"[{"__head__": {"plugin_name": "ui"}}]"#)?;
    assert_eq!(env.value, json!([{"__head__": {"plugin_name": "ui"}}]));
    assert_eq!(env.head, None);
    Ok(())
}

#[test]
fn non_object_payloads_pass_through() -> Result<(), BusError> {
    for (text, value) in [
        (
            r#"["electrode000", "electrode001"]"#,
            json!(["electrode000", "electrode001"]),
        ),
        (r#""100 V""#, json!("100 V")),
        ("12.5", json!(12.5)),
        ("false", json!(false)),
        ("null", json!(null)),
    ] {
        let env = decode(text)?;
        assert_eq!(env.value, value);
        assert_eq!(env.put_value("voltage"), &value);
        assert_eq!(env.trigger_value(), &value);
    }
    Ok(())
}

#[test]
fn put_unwrapping() -> Result<(), BusError> {
    let env = decode(r#"{"frequency": 1000, "__head__": {"plugin_name": "ui"}}"#)?;
    assert_eq!(env.put_value("voltage"), &json!({"frequency": 1000}));
    assert_eq!(env.put_value("frequency"), &json!(1000));
    let env = decode(r#"{"voltage": {"v": 1}}"#)?;
    assert_eq!(env.put_value("voltage"), &json!({"v": 1}));
    Ok(())
}

#[test]
fn trigger_unwrapping() -> Result<(), BusError> {
    let env = decode(r#"{"data": [1, 2], "__head__": {"plugin_name": "ui"}}"#)?;
    assert_eq!(env.trigger_value(), &json!([1, 2]));
    let env = decode(r#"{"voltage": 100, "frequency": 1000}"#)?;
    assert_eq!(
        env.trigger_value(),
        &json!({"voltage": 100, "frequency": 1000})
    );
    let env = decode(r#"{"data": 1, "other": 2}"#)?;
    assert_eq!(env.trigger_value(), &json!({"data": 1, "other": 2}));
    let env = decode(r#"{"__head__": {"plugin_name": "ui"}}"#)?;
    assert_eq!(env.trigger_value(), &json!({}));
    Ok(())
}

#[test]
fn malformed_payloads_are_clear_errors() {
    assert!(matches!(decode("{\"a\": "), Err(BusError::Json(_))));
    assert!(matches!(decode("  "), Err(BusError::Json(_))));
    assert!(matches!(
        Envelope::decode(&[0x7b, 0xff, 0x7d], LIMIT),
        Err(BusError::NotUtf8(_))
    ));
    assert!(matches!(
        Envelope::decode(b"", LIMIT),
        Err(BusError::EmptyPayload)
    ));
    assert!(matches!(
        Envelope::decode(b"[1, 2, 3]", 4),
        Err(BusError::TooLarge { size: 9, limit: 4 })
    ));
    let msg = decode("nope")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn reply_bodies() -> Result<(), BusError> {
    let body = reply_body(ReplyStatus::Failed, json!("voltage must be 0..=150 V"));
    let sent = reparse(&encode(&body, &head(), LIMIT)?)?;
    assert_eq!(sent["status"], "failed");
    assert_eq!(sent["response"], "voltage must be 0..=150 V");
    assert_eq!(sent["__head__"]["plugin_name"], "dropbot");
    assert_eq!(
        reply_body(ReplyStatus::Success, json!(null))["status"],
        "success"
    );
    Ok(())
}
