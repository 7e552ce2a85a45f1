//! Plain polygon geometry on `nalgebra::Point2<f64>` outlines (millimetres).
//!
//! Outlines are simple polygons given as their vertices in order, without repeating the first
//! vertex at the end. Either winding is accepted; functions that depend on it normalise.

use nalgebra::{Point2, Vector2};

/// Lengths below this (mm) are treated as zero: far below any feature of a real chip.
pub const EPSILON_MM: f64 = 1e-9;

/// An axis-aligned bounding box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    /// Smallest x and y of the outline.
    pub min: Point2<f64>,
    /// Largest x and y of the outline.
    pub max: Point2<f64>,
}

impl BoundingBox {
    /// Centre of the box.
    pub fn center(&self) -> Point2<f64> {
        nalgebra::center(&self.min, &self.max)
    }

    /// Width (x extent) and height (y extent).
    pub fn size(&self) -> Vector2<f64> {
        self.max - self.min
    }

    /// Whether two boxes overlap once each is grown by `margin` on every side.
    pub fn overlaps(&self, other: &BoundingBox, margin: f64) -> bool {
        self.min.x - margin <= other.max.x
            && other.min.x - margin <= self.max.x
            && self.min.y - margin <= other.max.y
            && other.min.y - margin <= self.max.y
    }
}

/// The edges of a closed polygon as (start, end) pairs, including the closing edge.
pub fn edges(poly: &[Point2<f64>]) -> impl Iterator<Item = (Point2<f64>, Point2<f64>)> + '_ {
    poly.iter()
        .zip(poly.iter().cycle().skip(1))
        .map(|(a, b)| (*a, *b))
}

/// Signed area by the shoelace formula: positive for counter-clockwise in a y-up frame.
pub fn signed_area(poly: &[Point2<f64>]) -> f64 {
    0.5 * edges(poly).map(|(a, b)| a.x * b.y - b.x * a.y).sum::<f64>()
}

/// Area enclosed by the outline (mm²), whatever its winding.
pub fn area(poly: &[Point2<f64>]) -> f64 {
    signed_area(poly).abs()
}

/// Area centroid; the mean of the vertices when the polygon has no area.
/// `None` only for an empty outline.
pub fn centroid(poly: &[Point2<f64>]) -> Option<Point2<f64>> {
    let first = poly.first()?;
    // Work relative to the first vertex: keeps precision for outlines far from the origin.
    let mut twice_area = 0.0;
    let mut acc = Vector2::zeros();
    for (a, b) in edges(poly) {
        let (a, b) = (a - first, b - first);
        let cross = a.x * b.y - b.x * a.y;
        twice_area += cross;
        acc += (a + b) * cross;
    }
    if twice_area.abs() < EPSILON_MM {
        let mean = poly.iter().map(|p| p.coords).sum::<Vector2<f64>>() / poly.len() as f64;
        return Some(Point2::from(mean));
    }
    Some(first + acc / (3.0 * twice_area))
}

/// Bounding box; `None` for an empty outline.
pub fn bounding_box(poly: &[Point2<f64>]) -> Option<BoundingBox> {
    let first = *poly.first()?;
    let (min, max) = poly.iter().fold((first, first), |(min, max), p| {
        (
            Point2::new(min.x.min(p.x), min.y.min(p.y)),
            Point2::new(max.x.max(p.x), max.y.max(p.y)),
        )
    });
    Some(BoundingBox { min, max })
}

/// Whether `p` lies inside the polygon (even-odd rule; points exactly on an edge may go
/// either way).
pub fn contains(poly: &[Point2<f64>], p: Point2<f64>) -> bool {
    let mut inside = false;
    for (a, b) in edges(poly) {
        if (a.y > p.y) != (b.y > p.y) {
            let x_cross = a.x + (p.y - a.y) / (b.y - a.y) * (b.x - a.x);
            if p.x < x_cross {
                inside = !inside;
            }
        }
    }
    inside
}

/// Distance from `p` to the segment `a`-`b`.
pub fn point_segment_distance(p: Point2<f64>, a: Point2<f64>, b: Point2<f64>) -> f64 {
    let ab = b - a;
    let len2 = ab.norm_squared();
    let t = if len2 < EPSILON_MM * EPSILON_MM {
        0.0
    } else {
        ((p - a).dot(&ab) / len2).clamp(0.0, 1.0)
    };
    (p - (a + ab * t)).norm()
}

/// Whether segments `a`-`b` and `c`-`d` cross or touch.
fn segments_intersect(a: Point2<f64>, b: Point2<f64>, c: Point2<f64>, d: Point2<f64>) -> bool {
    let cross = |o: Point2<f64>, p: Point2<f64>, q: Point2<f64>| (p - o).perp(&(q - o));
    let (d1, d2) = (cross(c, d, a), cross(c, d, b));
    let (d3, d4) = (cross(a, b, c), cross(a, b, d));
    (d1 * d2 < 0.0) && (d3 * d4 < 0.0)
}

/// Shortest distance between two segments.
pub fn segment_distance(a: Point2<f64>, b: Point2<f64>, c: Point2<f64>, d: Point2<f64>) -> f64 {
    if segments_intersect(a, b, c, d) {
        return 0.0;
    }
    point_segment_distance(a, c, d)
        .min(point_segment_distance(b, c, d))
        .min(point_segment_distance(c, a, b))
        .min(point_segment_distance(d, a, b))
}

/// Shortest distance between two outlines; 0 when they touch, cross or one contains the other.
pub fn polygon_distance(p: &[Point2<f64>], q: &[Point2<f64>]) -> f64 {
    if p.first().is_some_and(|v| contains(q, *v)) || q.first().is_some_and(|v| contains(p, *v)) {
        return 0.0;
    }
    edges(p)
        .flat_map(|(a, b)| edges(q).map(move |(c, d)| segment_distance(a, b, c, d)))
        .fold(f64::INFINITY, f64::min)
}

/// Edges closer than this angle to parallel count as facing each other (sin 15°).
const FACING_MAX_SIN: f64 = 0.258_819;

/// Length (mm) along which the outlines face each other across a gap of at most `gap`:
/// for every pair of nearly parallel edges (within 15°) the overlap of their projections,
/// kept only where the other edge stays within `gap` of the line. Outlines that only meet
/// at a corner (diagonal neighbours) face each other along zero length.
pub fn facing_length(p: &[Point2<f64>], q: &[Point2<f64>], gap: f64) -> f64 {
    let mut total = 0.0;
    for (a, b) in edges(p) {
        let along = b - a;
        let len = along.norm();
        if len < EPSILON_MM {
            continue;
        }
        let u = along / len;
        for (c, d) in edges(q) {
            let other = d - c;
            let other_len = other.norm();
            if other_len < EPSILON_MM || u.perp(&(other / other_len)).abs() > FACING_MAX_SIN {
                continue;
            }
            // Positions of c and d along a-b, and the part of c-d that projects onto a-b.
            let (s_c, s_d) = ((c - a).dot(&u), (d - a).dot(&u));
            let (lo, hi) = (s_c.min(s_d).max(0.0), s_c.max(s_d).min(len));
            if hi - lo <= EPSILON_MM || (s_d - s_c).abs() < EPSILON_MM {
                continue;
            }
            // Distance of c-d from the line a-b is linear in s: checking both ends suffices.
            let offset_at = |s: f64| {
                let point = c + other * ((s - s_c) / (s_d - s_c));
                u.perp(&(point - a)).abs()
            };
            if offset_at(lo) <= gap && offset_at(hi) <= gap {
                total += hi - lo;
            }
        }
    }
    total
}

/// Distances `t >= 0` along the ray `origin + t * dir` at which it crosses the outline.
pub fn ray_crossings(poly: &[Point2<f64>], origin: Point2<f64>, dir: Vector2<f64>) -> Vec<f64> {
    let mut hits = Vec::new();
    for (a, b) in edges(poly) {
        let edge = b - a;
        let denom = dir.perp(&edge);
        if denom.abs() < EPSILON_MM {
            continue; // parallel: grazing rays are found by the neighbouring edges
        }
        let w = a - origin;
        let t = w.perp(&edge) / denom;
        let s = w.perp(&dir) / denom;
        if t >= -EPSILON_MM && (-EPSILON_MM..=1.0 + EPSILON_MM).contains(&s) {
            hits.push(t.max(0.0));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: f64, y: f64, side: f64) -> Vec<Point2<f64>> {
        vec![
            Point2::new(x, y),
            Point2::new(x + side, y),
            Point2::new(x + side, y + side),
            Point2::new(x, y + side),
        ]
    }

    #[test]
    fn area_and_centroid_of_squares_and_l_shape() {
        let s = square(10.0, 20.0, 2.0);
        assert!((area(&s) - 4.0).abs() < 1e-12);
        let reversed: Vec<_> = s.iter().rev().copied().collect();
        assert!((signed_area(&s) + signed_area(&reversed)).abs() < 1e-12);
        let c = centroid(&s).unwrap_or_else(Point2::origin);
        assert!((c - Point2::new(11.0, 21.0)).norm() < 1e-12);
        // L shape: 2x2 square plus a 2x1 bar on its right, bottom-aligned.
        let l = vec![
            Point2::new(0.0, 0.0),
            Point2::new(4.0, 0.0),
            Point2::new(4.0, 1.0),
            Point2::new(2.0, 1.0),
            Point2::new(2.0, 2.0),
            Point2::new(0.0, 2.0),
        ];
        assert!((area(&l) - 6.0).abs() < 1e-12);
        let c = centroid(&l).unwrap_or_else(Point2::origin);
        // (4*(1,1) + 2*(3,0.5)) / 6
        assert!((c - Point2::new(10.0 / 6.0, 5.0 / 6.0)).norm() < 1e-12);
        assert!(centroid(&[]).is_none());
    }

    #[test]
    fn bounding_box_and_containment() {
        let s = square(-1.0, -1.0, 2.0);
        let bb = bounding_box(&s).unwrap_or(BoundingBox {
            min: Point2::origin(),
            max: Point2::origin(),
        });
        assert_eq!(bb.min, Point2::new(-1.0, -1.0));
        assert_eq!(bb.size(), Vector2::new(2.0, 2.0));
        assert!(contains(&s, Point2::new(0.5, -0.5)));
        assert!(!contains(&s, Point2::new(1.5, 0.0)));
        assert!(bounding_box(&[]).is_none());
    }

    #[test]
    fn distances_between_outlines() {
        let a = square(0.0, 0.0, 1.0);
        let b = square(1.3, 0.0, 1.0);
        assert!((polygon_distance(&a, &b) - 0.3).abs() < 1e-12);
        let inner = square(0.25, 0.25, 0.5);
        assert_eq!(polygon_distance(&a, &inner), 0.0);
        assert_eq!(
            segment_distance(
                Point2::new(0.0, 0.0),
                Point2::new(2.0, 2.0),
                Point2::new(0.0, 2.0),
                Point2::new(2.0, 0.0)
            ),
            0.0
        );
    }

    #[test]
    fn facing_length_separates_side_and_corner_neighbours() {
        let a = square(0.0, 0.0, 6.0);
        let side = square(6.2, 1.0, 6.0); // shares 5 mm of the right edge
        let corner = square(6.2, 6.2, 6.0); // diagonal, corners 0.28 mm apart
        assert!((facing_length(&a, &side, 0.5) - 5.0).abs() < 1e-9);
        assert_eq!(facing_length(&a, &corner, 0.5), 0.0);
        // Too far apart for the gap: nothing faces.
        assert_eq!(facing_length(&a, &square(7.0, 0.0, 6.0), 0.5), 0.0);
    }

    #[test]
    fn ray_crosses_square_twice() {
        let s = square(0.0, 0.0, 2.0);
        let mut hits = ray_crossings(&s, Point2::new(-1.0, 1.0), Vector2::new(1.0, 0.0));
        hits.sort_by(f64::total_cmp);
        assert_eq!(hits.len(), 2);
        assert!((hits[0] - 1.0).abs() < 1e-12 && (hits[1] - 3.0).abs() < 1e-12);
        assert!(ray_crossings(&s, Point2::new(-1.0, 5.0), Vector2::new(1.0, 0.0)).is_empty());
    }
}
