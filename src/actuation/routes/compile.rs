//! Routes to phases: every route walked on the device, unrolled (loops repeated), each
//! electrode given its on and off instants in whole microseconds, then one sweep over all
//! instants makes one phase per interval in which nothing changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Route, RouteError};
use crate::actuation::program::{Phase, Program};
use crate::device::Device;

/// Most electrode visits of all routes together, loops unrolled (bounds the compiler's memory).
pub const MAX_VISITS: usize = 100_000;
/// Electrode ids named in a phase's label before the rest are counted.
const LABEL_IDS: usize = 4;

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
