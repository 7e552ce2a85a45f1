//! The simulated chip's electrodes: a [`Device`] (from a MicroDrop 3 `three-object` file or the
//! built-in grid) plus the channel -> electrode index the physics needs.
//!
//! The built-in grid has 120 electrodes, one channel each, id `electrodeNNN` = channel NNN:
//! - channels 0-99: a 10 x 10 array of 2.4 mm squares on a 2.5 mm pitch; channel
//!   `10 * row + column`, column 0 at x = 0, row 0 at y = 0;
//! - channels 100-119: four reservoirs of five electrodes each (reservoir k = 0..3 uses
//!   channels `100 + 5k ..= 104 + 5k`): four 2.4 mm squares leading out of the array from
//!   rows 2 and 7 (k = 0, 1 on the left of column 0; k = 2, 3 on the right of column 9),
//!   the first one next to the array, then a 7.4 mm reservoir pad.

use std::collections::BTreeMap;

use nalgebra::Point2;

use crate::device::{Device, DeviceError, Electrode};

/// Side of a grid electrode, mm.
pub const GRID_SIDE_MM: f64 = 2.4;
/// Grid pitch, mm (0.1 mm gaps).
pub const GRID_PITCH_MM: f64 = 2.5;
/// Rows and columns of the built-in array.
pub const GRID_SIZE: u16 = 10;
/// Side of a reservoir pad, mm.
pub const RESERVOIR_SIDE_MM: f64 = 7.4;

/// Electrodes, their channels and neighbours, as the physics uses them.
#[derive(Debug, Clone)]
pub struct Layout {
    device: Device,
    by_channel: BTreeMap<u16, Vec<usize>>,
}

impl Layout {
    /// The layout of `device`.
    pub fn from_device(device: Device) -> Self {
        let mut by_channel: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, e) in device.electrodes().iter().enumerate() {
            for &ch in &e.channels {
                by_channel.entry(ch).or_default().push(i);
            }
        }
        Self { device, by_channel }
    }

    /// The built-in 120-channel grid with reservoirs (see the module docs).
    pub fn default_grid() -> Result<Self, DeviceError> {
        Ok(Self::from_device(default_grid_device()?))
    }

    /// The underlying device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of electrodes.
    pub fn len(&self) -> usize {
        self.device.len()
    }

    /// Whether there are no electrodes.
    pub fn is_empty(&self) -> bool {
        self.device.is_empty()
    }

    /// Electrode `index`.
    pub fn electrode(&self, index: usize) -> Option<&Electrode> {
        self.device.electrode(index)
    }

    /// Area of electrode `index` (0 if out of range).
    pub fn area(&self, index: usize) -> f64 {
        self.electrode(index).map_or(0.0, |e| e.area_mm2)
    }

    /// Centroid of electrode `index` (the origin if out of range).
    pub fn centroid(&self, index: usize) -> Point2<f64> {
        self.electrode(index)
            .map_or_else(Point2::origin, |e| e.centroid)
    }

    /// Id of electrode `index` (empty if out of range).
    pub fn id(&self, index: usize) -> &str {
        self.electrode(index).map_or("", |e| e.id.as_str())
    }

    /// Index of the electrode with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.device.index_of(id)
    }

    /// Neighbours of electrode `index`.
    pub fn neighbours(&self, index: usize) -> &[usize] {
        self.device.neighbours(index)
    }

    /// Electrodes driven by channel `ch`.
    pub fn electrodes_of_channel(&self, ch: u16) -> &[usize] {
        self.by_channel.get(&ch).map_or(&[], Vec::as_slice)
    }

    /// Per electrode: whether any of its channels is in `channels`.
    pub fn actuated_electrodes(&self, channels: impl IntoIterator<Item = u16>) -> Vec<bool> {
        let mut on = vec![false; self.len()];
        for ch in channels {
            for &i in self.electrodes_of_channel(ch) {
                if let Some(slot) = on.get_mut(i) {
                    *slot = true;
                }
            }
        }
        on
    }
}

/// The built-in grid as a [`Device`] (see the module docs).
pub fn default_grid_device() -> Result<Device, DeviceError> {
    let mut electrodes = Vec::with_capacity(120);
    for row in 0..GRID_SIZE {
        for col in 0..GRID_SIZE {
            let ch = row * GRID_SIZE + col;
            let min = Point2::new(
                f64::from(col) * GRID_PITCH_MM,
                f64::from(row) * GRID_PITCH_MM,
            );
            electrodes.push(Electrode::rectangle(
                electrode_id(ch),
                vec![ch],
                min,
                GRID_SIDE_MM,
                GRID_SIDE_MM,
            )?);
        }
    }
    let array_width = f64::from(GRID_SIZE) * GRID_PITCH_MM;
    for k in 0..4u16 {
        let row = if k % 2 == 0 { 2.0 } else { 7.0 };
        let left = k < 2;
        let y = row * GRID_PITCH_MM;
        for j in 0..5u16 {
            let ch = 100 + 5 * k + j;
            let (x, side) = if j < 4 {
                let step = f64::from(j + 1) * GRID_PITCH_MM;
                let x = if left {
                    -step
                } else {
                    array_width + step - GRID_PITCH_MM
                };
                (x, GRID_SIDE_MM)
            } else {
                // The pad starts one gap after the fourth lead electrode, centred on its row.
                let lead_end = 4.0 * GRID_PITCH_MM;
                let x = if left {
                    -lead_end - RESERVOIR_SIDE_MM
                } else {
                    array_width + lead_end
                };
                (x, RESERVOIR_SIDE_MM)
            };
            let y0 = y + GRID_SIDE_MM / 2.0 - side / 2.0;
            electrodes.push(Electrode::rectangle(
                electrode_id(ch),
                vec![ch],
                Point2::new(x, y0),
                side,
                side,
            )?);
        }
    }
    Device::from_electrodes(electrodes)
}

/// The id of grid electrode on channel `ch`: `electrodeNNN`.
pub fn electrode_id(ch: u16) -> String {
    format!("electrode{ch:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_120_channels_and_the_expected_neighbours() {
        let layout = Layout::default_grid().unwrap();
        assert_eq!(layout.len(), 120);
        assert_eq!(layout.device().channel_count_needed(), 120);
        // Array interior: four neighbours; corners: two; no diagonals.
        assert_eq!(layout.neighbours(55), &[45, 54, 56, 65]);
        assert_eq!(layout.neighbours(0), &[1, 10]);
        // Reservoir 0 leads out of row 2, column 0: 20 <-> 100 <-> 101 ... 104 (the pad).
        assert!(layout.neighbours(20).contains(&100));
        assert_eq!(layout.neighbours(100), &[20, 101]);
        assert_eq!(layout.neighbours(104), &[103]);
        // Reservoir 2 on the right of row 2, column 9.
        assert!(layout.neighbours(29).contains(&110));
        assert_eq!(layout.neighbours(114), &[113]);
        assert!((layout.area(104) - RESERVOIR_SIDE_MM * RESERVOIR_SIDE_MM).abs() < 1e-9);
        assert_eq!(layout.index_of("electrode042"), Some(42));
    }

    #[test]
    fn microdrop_device_maps_shared_channels() {
        let device = Device::microdrop3_default().unwrap();
        let layout = Layout::from_device(device);
        assert_eq!(layout.len(), 92);
        let shared = (0..120u16).find(|&ch| layout.electrodes_of_channel(ch).len() > 1);
        assert!(shared.is_some(), "the default device shares some channels");
        let on = layout.actuated_electrodes([119]);
        assert_eq!(on.iter().filter(|x| **x).count(), 1);
    }
}
