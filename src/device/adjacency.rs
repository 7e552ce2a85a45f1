//! Which electrodes are neighbours, and which neighbour lies up, down, left or right.
//!
//! Rule: two electrodes are neighbours when their outlines face each other, nearly parallel,
//! across a gap of at most [`GAP_FRACTION`] of the smaller electrode's size (√area), capped at
//! [`MAX_GAP_MM`], along at least [`MIN_FACING_FRACTION`] of that size. For 6 mm electrodes that
//! is a gap of 0.9 mm and a shared side of 0.6 mm. DMF chips leave 0.05-0.5 mm between
//! electrodes (the default MicroDrop 3 device: 0.04-0.44 mm, then 1.6 mm to the nearest
//! electrode that is not a neighbour; its two pairs of reservoirs 3.1 mm apart must not count,
//! hence the cap). Electrodes that only meet at a corner (diagonals) are not neighbours: a
//! droplet cannot be pulled across a corner.

use std::fmt;
use std::str::FromStr;

use nalgebra::{Point2, Vector2};

use super::geometry::{self, BoundingBox};

/// Largest gap between neighbours, as a fraction of the smaller electrode's √area.
pub const GAP_FRACTION: f64 = 0.15;
/// Largest gap between neighbours whatever their size (mm): droplets do not jump wider gaps.
pub const MAX_GAP_MM: f64 = 1.0;
/// Shortest facing length between neighbours, as a fraction of the smaller electrode's √area.
pub const MIN_FACING_FRACTION: f64 = 0.1;

/// What adjacency needs to know of one electrode.
pub(crate) struct Shape<'a> {
    pub outline: &'a [Point2<f64>],
    pub area_mm2: f64,
    pub bbox: BoundingBox,
}

/// Largest gap (mm) still counted as "touching" between two electrodes.
pub(crate) fn gap_tolerance(area_a: f64, area_b: f64) -> f64 {
    (GAP_FRACTION * area_a.min(area_b).max(0.0).sqrt()).min(MAX_GAP_MM)
}

/// Neighbour lists, symmetric, each sorted by index.
pub(crate) fn neighbour_lists(shapes: &[Shape<'_>]) -> Vec<Vec<usize>> {
    let mut lists = vec![Vec::new(); shapes.len()];
    for (i, a) in shapes.iter().enumerate() {
        for (j, b) in shapes.iter().enumerate().skip(i + 1) {
            let gap = gap_tolerance(a.area_mm2, b.area_mm2);
            if !a.bbox.overlaps(&b.bbox, gap) {
                continue;
            }
            let size = a.area_mm2.min(b.area_mm2).sqrt();
            if geometry::facing_length(a.outline, b.outline, gap) >= MIN_FACING_FRACTION * size {
                if let Some(list) = lists.get_mut(i) {
                    list.push(j);
                }
                if let Some(list) = lists.get_mut(j) {
                    list.push(i);
                }
            }
        }
    }
    lists
}

/// A step direction of a MicroDrop 3 route (`"up"`, `"down"`, `"left"`, `"right"`).
///
/// Convention: MicroDrop 3 draws the device with three.js in a y-up world using the SVG's
/// numbers unchanged, so on its screen the chip appears mirrored top-to-bottom relative to the
/// SVG file, and its "up" means towards LARGER y of the SVG (device) coordinates used here.
/// This reproduces MicroDrop 3's own expectations for its default device (electrode000 has
/// `down: electrode001`, the route electrode030 `up, up, up, right, right` visits
/// electrode029, 091, 084, 083, 082).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Towards larger y (device/SVG coordinates): up on MicroDrop 3's screen.
    Up,
    /// Towards smaller y (device/SVG coordinates).
    Down,
    /// Towards smaller x.
    Left,
    /// Towards larger x.
    Right,
}

impl Direction {
    /// All four directions.
    pub const ALL: [Direction; 4] = [
        Direction::Up,
        Direction::Down,
        Direction::Left,
        Direction::Right,
    ];

    /// Unit vector of this direction in device (SVG) coordinates.
    pub fn unit(self) -> Vector2<f64> {
        match self {
            Direction::Up => Vector2::new(0.0, 1.0),
            Direction::Down => Vector2::new(0.0, -1.0),
            Direction::Left => Vector2::new(-1.0, 0.0),
            Direction::Right => Vector2::new(1.0, 0.0),
        }
    }

    /// The name MicroDrop 3 uses in routes.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Left => "left",
            Direction::Right => "right",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route step that is not one of MicroDrop 3's four directions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown direction {0:?}: expected up, down, left or right")]
pub struct UnknownDirection(pub String);

impl FromStr for Direction {
    type Err = UnknownDirection;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            "left" => Ok(Direction::Left),
            "right" => Ok(Direction::Right),
            _ => Err(UnknownDirection(s.to_string())),
        }
    }
}

/// The neighbour hit first by a ray from the centre of `from`'s bounding box in direction
/// `dir`, once the ray has left `from` (what MicroDrop 3 does), if it lies within the gap
/// tolerance. `candidates` are the indexes of `from`'s neighbours.
pub(crate) fn neighbour_towards(
    shapes: &[Shape<'_>],
    from: usize,
    candidates: &[usize],
    dir: Direction,
) -> Option<usize> {
    let own = shapes.get(from)?;
    let origin = own.bbox.center();
    let unit = dir.unit();
    let exit = geometry::ray_crossings(own.outline, origin, unit)
        .into_iter()
        .fold(0.0_f64, f64::max);
    let mut best: Option<(f64, usize)> = None;
    for &j in candidates {
        let Some(other) = shapes.get(j) else { continue };
        let gap = gap_tolerance(own.area_mm2, other.area_mm2);
        let nearest = geometry::ray_crossings(other.outline, origin, unit)
            .into_iter()
            .filter(|t| *t >= exit - gap)
            .fold(f64::INFINITY, f64::min);
        let distance = nearest - exit;
        if distance <= gap && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, j));
        }
    }
    best.map(|(_, j)| j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_parse_and_print() {
        for d in Direction::ALL {
            assert_eq!(d.as_str().parse::<Direction>(), Ok(d));
        }
        assert_eq!(" Up ".parse::<Direction>(), Ok(Direction::Up));
        assert!("north".parse::<Direction>().is_err());
        assert_eq!(Direction::Up.unit(), Vector2::new(0.0, 1.0));
    }

    #[test]
    fn gap_tolerance_follows_the_smaller_electrode() {
        assert!((gap_tolerance(36.0, 400.0) - 0.9).abs() < 1e-12);
        assert_eq!(gap_tolerance(900.0, 800.0), MAX_GAP_MM);
        assert_eq!(gap_tolerance(-1.0, 4.0), 0.0);
    }
}
