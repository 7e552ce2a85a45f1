//! MicroDrop 3's routes compiled to a [`Program`](crate::actuation::Program) with the chip's
//! geometry.
//!
//! A route (MicroDrop 3's `routes-model`) is a start electrode and a path of directions,
//! walked on the device ([`Device::walk_route`](crate::device::Device::walk_route)). It is scheduled as MicroDrop 3's
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
//!
//! `payload.rs` reads MicroDrop's route objects from JSON ([`routes_from_value`]);
//! `compile.rs` turns routes into phases ([`compile()`]).

mod compile;
mod payload;

use std::time::Duration;

use crate::device::{DeviceError, Direction};

pub use compile::{compile, Bounds, Compiled, Walk, MAX_VISITS};
pub use payload::{
    routes_from_value, DEFAULT_SECONDS, DEFAULT_TRAIL_LENGTH, MAX_COUNT, MAX_PATH,
    MAX_REPEAT_DURATION_S, MAX_ROUTES, MAX_TRANSITION_S, MIN_TRANSITION_S,
};

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
