//! Tests of the property descriptions: parsing, validation messages, the schema.

use super::*;

#[test]
fn parses_microdrop_unit_strings() {
    assert_eq!(parse_quantity("100 V"), Some(100.0));
    assert_eq!(parse_quantity("1000 Hz"), Some(1000.0));
    assert_eq!(parse_quantity("1 kHz"), Some(1000.0));
    assert_eq!(parse_quantity("12.5"), Some(12.5));
    assert_eq!(parse_quantity("volts"), None);
}

#[test]
fn validates_with_limits_and_says_what_is_allowed() {
    let limits = Limits::default();
    assert_eq!(
        Property::Voltage.parse(&json!(120), &limits),
        Ok(PropertyValue::Voltage(120.0))
    );
    let err = Property::Voltage.parse(&json!(500), &limits).unwrap_err();
    assert!(err.to_string().contains("0 to 150"), "{err}");
    let err = Property::Voltage.parse(&json!("abc"), &limits).unwrap_err();
    assert!(err.to_string().contains("the string \"abc\""), "{err}");
    assert!(Property::Frequency.parse(&json!(0), &limits).is_ok());
    assert!(Property::Frequency.parse(&json!(50), &limits).is_err());
    assert!(Property::Channels.parse(&json!([0, 119]), &limits).is_ok());
    let err = Property::Channels
        .parse(&json!([120]), &limits)
        .unwrap_err();
    assert!(err.to_string().contains("0 to 119"), "{err}");
    assert!(Property::HvOutputEnabled
        .parse(&json!("yes"), &limits)
        .is_err());
    assert!(Property::CapacitanceUpdateIntervalMs
        .parse(&json!(-1), &limits)
        .is_err());
}

#[test]
fn schema_lists_every_property_with_per_step_hints() {
    let s = schema("dropbot", &Limits::default());
    for p in Property::ALL {
        assert_eq!(s["properties"][p.name()]["per_step"], json!(p.per_step()));
    }
    assert_eq!(s["properties"]["voltage"]["maximum"], json!(150.0));
    // MicroDrop's step editor lists a plugin with any property not `per_step: false`.
    let per_step: Vec<&str> = Property::ALL
        .into_iter()
        .filter(|p| s["properties"][p.name()]["per_step"] != json!(false))
        .map(Property::name)
        .collect();
    assert_eq!(per_step, ["wait-for-board"]);
}
