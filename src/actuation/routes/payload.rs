//! MicroDrop 3's route objects (`routes-model` state) read from JSON, every field checked
//! against MicroDrop's schema (defaults, minimums) and bounded.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Route, RouteError};
use crate::device::Direction;

/// MicroDrop's default `trail-length`.
pub const DEFAULT_TRAIL_LENGTH: u32 = 1;
/// MicroDrop's default `transition-duration-seconds` and `repeat-duration-seconds`.
pub const DEFAULT_SECONDS: f64 = 1.0;
/// MicroDrop's minimum `transition-duration-seconds` (its route schema).
pub const MIN_TRANSITION_S: f64 = 0.1;
/// Longest `transition-duration-seconds` taken.
pub const MAX_TRANSITION_S: f64 = 3600.0;
/// Longest `repeat-duration-seconds` taken.
pub const MAX_REPEAT_DURATION_S: f64 = 86_400.0;
/// Largest `trail-length` and `route-repeats` taken.
pub const MAX_COUNT: u64 = 10_000;
/// Most directions in one route's path.
pub const MAX_PATH: usize = 10_000;
/// Most routes run at once.
pub const MAX_ROUTES: usize = 64;

/// `{"routes": [...]}` or a bare array of MicroDrop 3 route objects.
pub fn routes_from_value(value: &Value) -> Result<Vec<Route>, RouteError> {
    let list = match value {
        Value::Array(list) => list,
        Value::Object(map) => match map.get("routes") {
            Some(Value::Array(list)) => list,
            Some(_) => return Err(RouteError::Payload("`routes` is not an array".into())),
            None => return Err(RouteError::Payload("no `routes` in the payload".into())),
        },
        _ => {
            return Err(RouteError::Payload(
                "the payload is not a list of routes".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(RouteError::Payload("there are no routes to run".into()));
    }
    if list.len() > MAX_ROUTES {
        return Err(RouteError::TooLarge {
            what: format!("{} routes at once", list.len()),
            allowed: format!("at most {MAX_ROUTES} routes at once"),
        });
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| route_from_value(i, r))
        .collect()
}

fn route_from_value(route: usize, value: &Value) -> Result<Route, RouteError> {
    let field = |field: &'static str, problem: String, allowed: String| RouteError::Field {
        route,
        field,
        problem,
        allowed,
    };
    let Value::Object(map) = value else {
        let problem = format!("is {}", kind(value));
        return Err(field("route", problem, "a route object".into()));
    };
    let start = match map.get("start") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        other => {
            let problem = other.map_or("is missing".into(), |v| format!("is {}", kind(v)));
            return Err(field("start", problem, "an electrode id".into()));
        }
    };
    let path_allowed = || format!("an array of at most {MAX_PATH} of up, down, left, right");
    let path = match map.get("path") {
        Some(Value::Array(steps)) if steps.len() <= MAX_PATH => steps,
        Some(Value::Array(steps)) => {
            let problem = format!("has {} steps", steps.len());
            return Err(field("path", problem, path_allowed()));
        }
        other => {
            let problem = other.map_or("is missing".into(), |v| format!("is {}", kind(v)));
            return Err(field("path", problem, path_allowed()));
        }
    };
    let path = path
        .iter()
        .enumerate()
        .map(|(step, d)| {
            d.as_str()
                .and_then(|s| s.parse::<Direction>().ok())
                .ok_or_else(|| field("path", format!("step #{step} is {d}"), path_allowed()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = |name: &'static str, default: u32| -> Result<u32, RouteError> {
        let allowed = || format!("an integer from 1 to {MAX_COUNT}");
        match map.get(name) {
            None => Ok(default),
            Some(v) => whole(v)
                .filter(|n| (1..=MAX_COUNT).contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| field(name, format!("is {v}"), allowed())),
        }
    };
    let seconds = |name: &'static str, min: f64, max: f64| -> Result<Duration, RouteError> {
        let allowed = || format!("a number of seconds from {min} to {max}");
        match map.get(name) {
            None => Ok(Duration::from_secs_f64(DEFAULT_SECONDS)),
            Some(v) => v
                .as_f64()
                .filter(|s| s.is_finite() && (min..=max).contains(s))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| field(name, format!("is {v}"), allowed())),
        }
    };
    Ok(Route {
        start,
        path,
        trail_length: count("trail-length", DEFAULT_TRAIL_LENGTH)?,
        transition: seconds(
            "transition-duration-seconds",
            MIN_TRANSITION_S,
            MAX_TRANSITION_S,
        )?,
        repeat_duration: seconds("repeat-duration-seconds", 0.0, MAX_REPEAT_DURATION_S)?,
        route_repeats: count("route-repeats", 1)?,
    })
}

/// A JSON number that is a whole non-negative number (`2` or `2.0`).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
            .map(|f| f as u64)
    })
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Object(m) if m.is_empty() => "an empty object".into(),
        Value::Object(m) => format!("an object with {}", keys(m)),
        other => other.to_string().chars().take(60).collect(),
    }
}

fn keys(m: &Map<String, Value>) -> String {
    m.keys().take(5).cloned().collect::<Vec<_>>().join(", ")
}
