//! The chip: electrodes with their outlines, areas, centroids, neighbours and channels.
//!
//! A [`Device`] comes from MicroDrop 3's `three-object` payload ([`three_object`]) or from
//! electrodes made in code (the simulator's grids). Coordinates are millimetres in the device
//! SVG's frame (y grows downwards); see [`Direction`] for what "up" means in routes.
//! Nothing here does I/O.

mod adjacency;
pub mod geometry;
#[cfg(test)]
mod tests;
pub mod three_object;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use nalgebra::Point2;

pub use adjacency::{Direction, UnknownDirection, GAP_FRACTION, MAX_GAP_MM, MIN_FACING_FRACTION};
pub use geometry::BoundingBox;

/// MicroDrop 3's default device as its `three-object` JSON (92 electrodes, 90 channels, about
/// 93 KB), from the sci-bots/microdrop-3 repository (BSD-3-Clause, copyright 2017
/// wheeler-microfluidics; see `microdrop3-default-three-object.NOTICE` next to this file).
pub const MICRODROP3_DEFAULT_THREE_OBJECT: &str =
    include_str!("microdrop3-default-three-object.json");

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The payload is not JSON at all.
    #[error("three-object payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The payload is JSON but not an array of electrodes.
    #[error("three-object payload must be an array of electrodes, got {found}")]
    NotAnArray {
        /// What was found instead ("an object", "null", ...).
        found: &'static str,
    },
    /// One electrode is malformed.
    #[error("electrode #{index} ({id}): {problem}")]
    Electrode {
        /// Position in the payload (0-based).
        index: usize,
        /// Its id, or `<no id>`.
        id: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An electrode's outline is unusable (too few points, not finite, no area).
    #[error("electrode {id:?}: {problem}")]
    Outline {
        /// The electrode's id.
        id: String,
        /// What is wrong with the outline.
        problem: String,
    },
    /// Two electrodes share an id.
    #[error("electrode id {id:?} is used twice (entries #{first} and #{second})")]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Index of the first use.
        first: usize,
        /// Index of the second use.
        second: usize,
    },
    /// Electrode ids the device does not have.
    #[error(transparent)]
    Unknown(#[from] UnknownElectrodes),
    /// A route step leads off the chip.
    #[error("no neighbour {direction} of electrode {id:?} (route step #{step})")]
    NoNeighbour {
        /// Electrode the step starts from.
        id: String,
        /// The direction asked for.
        direction: Direction,
        /// Index of the step in the route.
        step: usize,
    },
}

/// Electrode ids that are not on the device (reported, never ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown electrode id(s): {}", .unknown.join(", "))]
pub struct UnknownElectrodes {
    /// The unknown ids, in the order given, without repeats.
    pub unknown: Vec<String>,
}

/// One electrode of the chip.
#[derive(Debug, Clone, PartialEq)]
pub struct Electrode {
    /// MicroDrop's id, e.g. `electrode042`.
    pub id: String,
    /// Board channels that drive it (often one, sometimes none or several).
    pub channels: Vec<u16>,
    /// Outline in absolute device coordinates (mm), without the closing vertex repeated.
    pub outline: Vec<Point2<f64>>,
    /// Area of the outline (mm²).
    pub area_mm2: f64,
    /// Area centroid (mm).
    pub centroid: Point2<f64>,
}

impl Electrode {
    /// Builds an electrode, computing its area and centroid. Repeated consecutive vertices
    /// (and a repeated closing vertex) are dropped; the outline must have at least three
    /// distinct finite vertices and a positive area.
    pub fn new(
        id: impl Into<String>,
        channels: Vec<u16>,
        outline: Vec<Point2<f64>>,
    ) -> Result<Electrode, DeviceError> {
        let id = id.into();
        let problem = |problem: String| DeviceError::Outline {
            id: id.clone(),
            problem,
        };
        if let Some(p) = outline
            .iter()
            .find(|p| !(p.x.is_finite() && p.y.is_finite()))
        {
            return Err(problem(format!(
                "outline point ({}, {}) is not finite",
                p.x, p.y
            )));
        }
        let mut clean: Vec<Point2<f64>> = Vec::with_capacity(outline.len());
        for p in outline {
            if clean
                .last()
                .is_none_or(|q| (p - q).norm() > geometry::EPSILON_MM)
            {
                clean.push(p);
            }
        }
        while clean.len() > 1
            && clean
                .first()
                .zip(clean.last())
                .is_some_and(|(a, b)| (a - b).norm() <= geometry::EPSILON_MM)
        {
            clean.pop();
        }
        if clean.len() < 3 {
            return Err(problem(format!(
                "outline has {} distinct point(s), needs at least 3",
                clean.len()
            )));
        }
        let area_mm2 = geometry::area(&clean);
        let centroid = geometry::centroid(&clean);
        match centroid {
            Some(c)
                if area_mm2.is_finite()
                    && area_mm2 > geometry::EPSILON_MM
                    && c.x.is_finite()
                    && c.y.is_finite() =>
            {
                Ok(Electrode {
                    id,
                    channels,
                    outline: clean,
                    area_mm2,
                    centroid: c,
                })
            }
            _ => Err(problem(format!(
                "outline encloses no usable area ({area_mm2} mm²)"
            ))),
        }
    }

    /// An axis-aligned rectangle with its lower-x, lower-y corner at `min` (for simulated grids).
    pub fn rectangle(
        id: impl Into<String>,
        channels: Vec<u16>,
        min: Point2<f64>,
        width: f64,
        height: f64,
    ) -> Result<Electrode, DeviceError> {
        let outline = vec![
            min,
            Point2::new(min.x + width, min.y),
            Point2::new(min.x + width, min.y + height),
            Point2::new(min.x, min.y + height),
        ];
        Electrode::new(id, channels, outline)
    }

    /// Bounding box of the outline.
    pub fn bounding_box(&self) -> BoundingBox {
        geometry::bounding_box(&self.outline).unwrap_or(BoundingBox {
            min: self.centroid,
            max: self.centroid,
        })
    }
}

/// The chip: electrodes plus the indexes derived from them (ids, channels, neighbours).
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    electrodes: Vec<Electrode>,
    bboxes: Vec<BoundingBox>,
    by_id: HashMap<String, usize>,
    by_channel: BTreeMap<u16, Vec<usize>>,
    neighbours: Vec<Vec<usize>>,
}

impl Device {
    /// Parses MicroDrop 3's `three-object` payload (JSON text).
    pub fn from_three_object_json(json: &str) -> Result<Device, DeviceError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        Device::from_three_object_value(&value)
    }

    /// MicroDrop 3's default device ([`MICRODROP3_DEFAULT_THREE_OBJECT`]).
    pub fn microdrop3_default() -> Result<Device, DeviceError> {
        Device::from_three_object_json(MICRODROP3_DEFAULT_THREE_OBJECT)
    }

    /// Parses MicroDrop 3's `three-object` payload (already decoded JSON).
    pub fn from_three_object_value(value: &serde_json::Value) -> Result<Device, DeviceError> {
        Device::from_electrodes(three_object::parse_electrodes(value)?)
    }

    /// Builds a device from electrodes (e.g. a simulator's grid). Each outline is validated and
    /// its area and centroid recomputed; ids must be unique.
    pub fn from_electrodes(electrodes: Vec<Electrode>) -> Result<Device, DeviceError> {
        let mut checked = Vec::with_capacity(electrodes.len());
        let mut by_id = HashMap::with_capacity(electrodes.len());
        let mut by_channel: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (index, e) in electrodes.into_iter().enumerate() {
            let e = Electrode::new(e.id, e.channels, e.outline).map_err(|err| match err {
                DeviceError::Outline { id, problem } => {
                    DeviceError::Electrode { index, id, problem }
                }
                other => other,
            })?;
            if let Some(&first) = by_id.get(&e.id) {
                return Err(DeviceError::DuplicateId {
                    id: e.id,
                    first,
                    second: index,
                });
            }
            by_id.insert(e.id.clone(), index);
            for &ch in &e.channels {
                by_channel.entry(ch).or_default().push(index);
            }
            checked.push(e);
        }
        let bboxes: Vec<BoundingBox> = checked.iter().map(Electrode::bounding_box).collect();
        let neighbours = adjacency::neighbour_lists(&shapes(&checked, &bboxes));
        Ok(Device {
            electrodes: checked,
            bboxes,
            by_id,
            by_channel,
            neighbours,
        })
    }

    /// The `three-object` payload describing this device (for publishing a simulated chip).
    pub fn to_three_object_value(&self) -> serde_json::Value {
        three_object::to_value(&self.electrodes)
    }

    /// All electrodes, in payload order (their index is their position here).
    pub fn electrodes(&self) -> &[Electrode] {
        &self.electrodes
    }

    /// Number of electrodes.
    pub fn len(&self) -> usize {
        self.electrodes.len()
    }

    /// Whether the device has no electrodes.
    pub fn is_empty(&self) -> bool {
        self.electrodes.is_empty()
    }

    /// Electrode at `index`.
    pub fn electrode(&self, index: usize) -> Option<&Electrode> {
        self.electrodes.get(index)
    }

    /// Index of the electrode with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Electrode with this id.
    pub fn by_id(&self, id: &str) -> Option<&Electrode> {
        self.index_of(id).and_then(|i| self.electrodes.get(i))
    }

    /// Indexes of the electrodes next to electrode `index` (sorted; empty if out of range).
    pub fn neighbours(&self, index: usize) -> &[usize] {
        self.neighbours.get(index).map_or(&[], Vec::as_slice)
    }

    /// The neighbour of electrode `index` in direction `dir` (MicroDrop 3's convention,
    /// see [`Direction`]), if any.
    pub fn neighbour_in_direction(&self, index: usize, dir: Direction) -> Option<usize> {
        let shapes = shapes(&self.electrodes, &self.bboxes);
        adjacency::neighbour_towards(&shapes, index, self.neighbours(index), dir)
    }

    /// Follows a MicroDrop 3 route: the ids visited, starting with `start`.
    pub fn walk_route(&self, start: &str, path: &[Direction]) -> Result<Vec<String>, DeviceError> {
        let mut index = self.index_of(start).ok_or_else(|| UnknownElectrodes {
            unknown: vec![start.to_string()],
        })?;
        let mut visited = vec![start.to_string()];
        for (step, &direction) in path.iter().enumerate() {
            let next = self
                .neighbour_in_direction(index, direction)
                .ok_or_else(|| DeviceError::NoNeighbour {
                    id: self
                        .electrodes
                        .get(index)
                        .map(|e| e.id.clone())
                        .unwrap_or_default(),
                    direction,
                    step,
                })?;
            visited.extend(self.electrodes.get(next).map(|e| e.id.clone()));
            index = next;
        }
        Ok(visited)
    }

    /// Channels a board needs to drive this device: highest channel + 1 (0 if none).
    pub fn channel_count_needed(&self) -> usize {
        self.by_channel
            .last_key_value()
            .map_or(0, |(&ch, _)| usize::from(ch) + 1)
    }

    /// Every channel some electrode uses.
    pub fn channels(&self) -> BTreeSet<u16> {
        self.by_channel.keys().copied().collect()
    }

    /// The channels to switch on for these electrode ids. Any id the device does not know is
    /// an error listing all such ids (so a stale selection is never half-applied).
    pub fn channels_for<S: AsRef<str>>(
        &self,
        ids: &[S],
    ) -> Result<BTreeSet<u16>, UnknownElectrodes> {
        let mut channels = BTreeSet::new();
        let mut unknown: Vec<String> = Vec::new();
        for id in ids {
            let id = id.as_ref();
            match self.by_id(id) {
                Some(e) => channels.extend(e.channels.iter().copied()),
                None if !unknown.iter().any(|u| u == id) => unknown.push(id.to_string()),
                None => {}
            }
        }
        if unknown.is_empty() {
            Ok(channels)
        } else {
            Err(UnknownElectrodes { unknown })
        }
    }

    /// Electrodes driven by channel `ch` (several when electrodes share a channel).
    pub fn electrodes_on_channel(&self, ch: u16) -> Vec<&Electrode> {
        self.by_channel
            .get(&ch)
            .map(|idx| idx.iter().filter_map(|&i| self.electrodes.get(i)).collect())
            .unwrap_or_default()
    }
}

fn shapes<'a>(electrodes: &'a [Electrode], bboxes: &[BoundingBox]) -> Vec<adjacency::Shape<'a>> {
    electrodes
        .iter()
        .zip(bboxes)
        .map(|(e, b)| adjacency::Shape {
            outline: &e.outline,
            area_mm2: e.area_mm2,
            bbox: *b,
        })
        .collect()
}
