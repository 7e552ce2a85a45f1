//! MicroDrop 3's routes compiled to a [`Program`] with the chip's geometry.
//!
//! A route (MicroDrop 3's `routes-model`) is a start electrode and a path of directions,
//! walked on the device ([`Device::walk_route`]). It is scheduled as MicroDrop 3's
//! `RoutesModel` schedules it, with T its `transition-duration-seconds`:
//! - electrode i of the walk (the start is 0) is on during `[T·(i−trail+1), T·(i+1))`;
//! - the last electrode stays on: the run ends with it on;
//! - a closed route (its walk ends where it starts) is walked `max(⌊R/(T·len)⌋ + 1,
//!   route-repeats)` times, R its `repeat-duration-seconds` and len its number of steps; an
//!   open route is walked once (MicroDrop ignores its `route-repeats` too);
//! - several routes run at once from time 0; an electrode is on while any route wants it.
//!
//! MicroDrop samples that schedule every `min(T)/routes` and publishes each sample as
//! `active-electrodes`. Here every instant at which some route's set changes is computed
//! exactly (in whole microseconds), and each interval between two such instants becomes one
//! phase; the run lasts until the longest route's last electrode has been on for one T (by
//! then every trail has collapsed onto its last electrode).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use super::program::{Phase, Program};
use crate::device::{Device, DeviceError, Direction};

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
/// Most electrode visits of all routes together, loops unrolled (bounds the compiler's memory).
pub const MAX_VISITS: usize = 100_000;
/// Electrode ids named in a phase's label before the rest are counted.
const LABEL_IDS: usize = 4;

/// One MicroDrop 3 route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The electrode it starts on.
    pub start: String,
    /// The steps.
    pub path: Vec<Direction>,
    /// Electrodes on at once along the route (`trail-length`, at least 1).
    pub trail_length: u32,
    /// Time per step (`transition-duration-seconds`).
    pub transition: Duration,
    /// How long a closed route keeps looping (`repeat-duration-seconds`).
    pub repeat_duration: Duration,
    /// Fewest walks of a closed route (`route-repeats`, at least 1).
    pub route_repeats: u32,
}

impl Route {
    /// A route with MicroDrop's defaults: trail 1, 1 s per step, loops for 1 s, once.
    pub fn new(start: impl Into<String>, path: Vec<Direction>) -> Self {
        Route {
            start: start.into(),
            path,
            trail_length: DEFAULT_TRAIL_LENGTH,
            transition: Duration::from_secs_f64(DEFAULT_SECONDS),
            repeat_duration: Duration::from_secs_f64(DEFAULT_SECONDS),
            route_repeats: 1,
        }
    }
}

/// Why routes cannot run; nothing has moved.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The payload is not a list of routes.
    #[error("{0}")]
    Payload(String),
    /// A field of a route is missing or unusable.
    #[error("route #{route}: {field} {problem}")]
    Field {
        /// Index of the route in the payload.
        route: usize,
        /// The field, as MicroDrop names it.
        field: &'static str,
        /// What is wrong.
        problem: String,
        /// What is allowed.
        allowed: String,
    },
    /// The walk fails on this device: unknown start, or a step off the chip.
    #[error("route #{route}: {source}")]
    Walk {
        /// Index of the route.
        route: usize,
        /// What the device said.
        source: DeviceError,
    },
    /// An electrode of a route is on a channel the board does not have.
    #[error("route #{route}: electrode {id} is on channel {channel}")]
    Channel {
        /// Index of the route.
        route: usize,
        /// The electrode.
        id: String,
        /// Its channel.
        channel: u16,
        /// Channels of the board.
        channel_count: u16,
    },
    /// More than a run may hold.
    #[error("{what}")]
    TooLarge {
        /// What is too large.
        what: String,
        /// The bound.
        allowed: String,
    },
}

impl RouteError {
    /// What is allowed instead, for the error reply.
    pub fn allowed(&self) -> String {
        match self {
            RouteError::Payload(_) => "{\"routes\": [route, ...]} or [route, ...], a route being \
                MicroDrop 3's {\"start\": id, \"path\": [\"up\"|\"down\"|\"left\"|\"right\", ...], \
                \"trail-length\", \"transition-duration-seconds\", \"repeat-duration-seconds\", \
                \"route-repeats\"}"
                .into(),
            RouteError::Field { allowed, .. } | RouteError::TooLarge { allowed, .. } => {
                allowed.clone()
            }
            RouteError::Walk { .. } => "a start electrode of the loaded device and steps that \
                stay on the chip (each step to a neighbour in that direction)"
                .into(),
            RouteError::Channel { channel_count, .. } => format!(
                "electrodes on channels 0 to {} on this board",
                channel_count.saturating_sub(1)
            ),
        }
    }
}

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

/// Bounds of a compiled run, and the board it runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Most phases in the run.
    pub max_phases: usize,
    /// Longest run.
    pub max_duration: Duration,
    /// Channels of the board.
    pub channel_count: u16,
}

/// What one route does in a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// The electrodes of one walk, start first.
    pub ids: Vec<String>,
    /// Whether it ends where it starts (it then loops).
    pub closed: bool,
    /// How many times it is walked.
    pub repeats: u32,
}

/// Routes compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The phases, one per interval in which nothing changes.
    pub program: Program,
    /// Each route's walk, in payload order.
    pub walks: Vec<Walk>,
    /// How long the run lasts.
    pub duration: Duration,
}

/// One electrode of an unrolled walk: on from `on` until `off` (µs; `None`: stays on).
struct Span {
    electrode: usize,
    on: u64,
    off: Option<u64>,
}

/// Compile `routes` on `device`. `hold` are channels kept on throughout (MicroDrop keeps the
/// electrodes that were on and are on no route); channels of route electrodes are left out
/// of it, so the routes alone drive them.
pub fn compile(
    routes: &[Route],
    device: &Device,
    hold: &BTreeSet<u16>,
    bounds: &Bounds,
) -> Result<Compiled, RouteError> {
    let mut spans = Vec::new();
    let mut walks = Vec::with_capacity(routes.len());
    let mut route_channels = BTreeSet::new();
    let mut end_us = 0u64;
    for (r, route) in routes.iter().enumerate() {
        let (walk, indexes) = walk(r, route, device, bounds)?;
        for &i in &indexes {
            for &channel in device.electrode(i).map_or(&[][..], |e| &e.channels) {
                if channel >= bounds.channel_count {
                    return Err(RouteError::Channel {
                        route: r,
                        id: device
                            .electrode(i)
                            .map(|e| e.id.clone())
                            .unwrap_or_default(),
                        channel,
                        channel_count: bounds.channel_count,
                    });
                }
                route_channels.insert(channel);
            }
        }
        let t = micros(route.transition);
        let trail = u64::from(route.trail_length);
        let n = unrolled_len(&walk);
        if spans.len() + n > MAX_VISITS {
            return Err(RouteError::TooLarge {
                what: format!(
                    "the routes visit more than {MAX_VISITS} electrodes in all (loops unrolled)"
                ),
                allowed: format!("at most {MAX_VISITS} electrode visits in a run"),
            });
        }
        spans.reserve(n);
        let steps = indexes.len().saturating_sub(1).max(1);
        end_us = end_us.max(t.saturating_mul(n as u64));
        for k in 0..n {
            let i = k as u64;
            let electrode = match k {
                0 => indexes.first(),
                _ => indexes.get(1 + (k - 1) % steps),
            };
            spans.push(Span {
                electrode: electrode.copied().unwrap_or_default(),
                on: t.saturating_mul((i + 1).saturating_sub(trail)),
                off: (k + 1 < n).then(|| t.saturating_mul(i + 1)),
            });
        }
        walks.push(walk);
    }
    let hold: BTreeSet<u16> = hold.difference(&route_channels).copied().collect();
    let phases = sweep(&spans, end_us, device, &hold, bounds.max_phases)?;
    Ok(Compiled {
        program: Program::new(phases),
        walks,
        duration: Duration::from_micros(end_us),
    })
}

/// Walk a route once and decide its repeats; the electrode indexes of one walk.
fn walk(
    r: usize,
    route: &Route,
    device: &Device,
    bounds: &Bounds,
) -> Result<(Walk, Vec<usize>), RouteError> {
    let ids = device
        .walk_route(&route.start, &route.path)
        .map_err(|source| RouteError::Walk { route: r, source })?;
    let indexes: Vec<usize> = ids.iter().filter_map(|id| device.index_of(id)).collect();
    let steps = route.path.len() as u64;
    let closed = steps > 0 && ids.first() == ids.last();
    let t = micros(route.transition).max(1);
    let repeats = match closed {
        // MicroDrop: ⌊R / (T·len) + 1⌋, or route-repeats if that is more.
        true => (micros(route.repeat_duration) / t.saturating_mul(steps) + 1)
            .max(u64::from(route.route_repeats)),
        false => 1,
    };
    let total_steps = steps.saturating_mul(repeats);
    if total_steps > bounds.max_phases as u64 {
        return Err(RouteError::TooLarge {
            what: format!(
                "route #{r} makes {total_steps} steps ({steps} per walk, walked {repeats} times)"
            ),
            allowed: format!("at most {} steps in a run", bounds.max_phases),
        });
    }
    let lasts = Duration::from_micros(t.saturating_mul(total_steps + 1));
    if lasts > bounds.max_duration {
        return Err(RouteError::TooLarge {
            what: format!("route #{r} lasts {} s", lasts.as_secs_f64()),
            allowed: format!("runs of at most {} s", bounds.max_duration.as_secs()),
        });
    }
    let walk = Walk {
        ids,
        closed,
        repeats: u32::try_from(repeats).unwrap_or(u32::MAX),
    };
    Ok((walk, indexes))
}

/// Electrodes of a walk with its repeats unrolled (a loop's start is shared by its walks).
fn unrolled_len(walk: &Walk) -> usize {
    let steps = walk.ids.len().saturating_sub(1);
    1 + steps * walk.repeats as usize
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One phase per interval between the instants at which some electrode goes on or off.
fn sweep(
    spans: &[Span],
    end_us: u64,
    device: &Device,
    hold: &BTreeSet<u16>,
    max_phases: usize,
) -> Result<Vec<Phase>, RouteError> {
    let mut changes: Vec<(u64, usize, i32)> = Vec::with_capacity(spans.len() * 2);
    for s in spans {
        changes.push((s.on, s.electrode, 1));
        if let Some(off) = s.off {
            changes.push((off, s.electrode, -1));
        }
    }
    changes.retain(|(t, _, _)| *t < end_us);
    changes.sort_unstable_by_key(|(t, _, _)| *t);
    let mut on: BTreeMap<usize, i32> = BTreeMap::new();
    let mut phases: Vec<Phase> = Vec::new();
    let mut at = 0;
    while let Some(&(t, _, _)) = changes.get(at) {
        // Every change at this instant, then the set that holds until the next one.
        while let Some(&(_, electrode, delta)) = changes.get(at).filter(|c| c.0 == t) {
            let count = on.entry(electrode).or_default();
            *count += delta;
            if *count <= 0 {
                on.remove(&electrode);
            }
            at += 1;
        }
        let until = changes.get(at).map_or(end_us, |c| c.0);
        let duration = Duration::from_micros(until - t);
        let mut channels = hold.clone();
        let mut ids = Vec::with_capacity(on.len());
        for e in on.keys().filter_map(|&i| device.electrode(i)) {
            channels.extend(e.channels.iter().copied());
            ids.push(e.id.as_str());
        }
        match phases.last_mut() {
            Some(last) if last.channels == channels => last.duration += duration,
            _ => {
                if phases.len() == max_phases {
                    return Err(RouteError::TooLarge {
                        what: format!("the routes make more than {max_phases} phases"),
                        allowed: format!("at most {max_phases} phases in a run"),
                    });
                }
                phases.push(Phase {
                    label: Some(label(&ids)),
                    ..Phase::timed(channels, duration)
                });
            }
        }
    }
    Ok(phases)
}

fn label(ids: &[&str]) -> String {
    let mut text = ids
        .iter()
        .take(LABEL_IDS)
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    if ids.len() > LABEL_IDS {
        text.push_str(&format!(",+{}", ids.len() - LABEL_IDS));
    }
    text
}
