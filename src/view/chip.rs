//! The chip as the page draws it: electrode outlines from MicroDrop's `three-object` (parsed by
//! [`crate::device::three_object`]), the channel maps that turn `actuated-channels` into
//! electrodes, and the toggle rule of MicroDrop's electrodes model.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::device::three_object::parse_electrodes;
use crate::device::{BoundingBox, DeviceError};

/// Largest page description of a chip we send to browsers (a default chip takes about 20 KB).
pub const MAX_PAGE_JSON: usize = 4 * 1024 * 1024;

/// Why a `three-object` cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChipError {
    /// The device layer refused the payload.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Two electrodes share an id (the plugin refuses such a device too).
    #[error("electrode id {0:?} is used twice")]
    DuplicateId(String),
    /// The drawing would be too large to send.
    #[error("the device is too large to draw ({0} bytes of outlines; at most {MAX_PAGE_JSON})")]
    TooLarge(usize),
}

/// Why a click cannot be turned into a new `active-electrodes` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToggleError {
    /// The device has no such electrode.
    #[error("the device has no electrode {0:?}")]
    Unknown(String),
    /// The electrode has no channel: there is nothing to switch.
    #[error("electrode {0:?} has no channel on the device: nothing to switch")]
    NoChannel(String),
}

/// One electrode: id, channels (sorted), outline as an SVG path (mm).
#[derive(Debug, Clone, PartialEq)]
struct Pad {
    id: String,
    channels: Vec<u16>,
}

/// A chip ready to draw and to click.
#[derive(Debug, Clone)]
pub struct Chip {
    pads: Vec<Pad>,
    by_id: HashMap<String, usize>,
    by_channel: HashMap<u16, Vec<usize>>,
    page: Arc<str>,
}

impl Chip {
    /// Builds the chip from a `three-object` value (a bare array of electrodes).
    pub fn from_three_object(value: &Value) -> Result<Chip, ChipError> {
        let electrodes = parse_electrodes(value)?;
        let mut pads = Vec::with_capacity(electrodes.len());
        let mut by_id = HashMap::with_capacity(electrodes.len());
        let mut by_channel: HashMap<u16, Vec<usize>> = HashMap::new();
        let mut bounds: Option<BoundingBox> = None;
        let mut drawn = Vec::with_capacity(electrodes.len());
        for (index, e) in electrodes.into_iter().enumerate() {
            if by_id.insert(e.id.clone(), index).is_some() {
                return Err(ChipError::DuplicateId(e.id));
            }
            let b = e.bounding_box();
            bounds = Some(bounds.map_or(b, |a| union(&a, &b)));
            let mut channels = e.channels.clone();
            channels.sort_unstable();
            for &ch in &channels {
                by_channel.entry(ch).or_default().push(index);
            }
            drawn.push(json!({
                "id": e.id,
                "channels": channels,
                "d": svg_path(&e.outline),
                "cx": round(e.centroid.x),
                "cy": round(e.centroid.y),
            }));
            pads.push(Pad { id: e.id, channels });
        }
        let bounds = bounds.map_or(json!(null), |b| {
            json!({"x": round(b.min.x), "y": round(b.min.y),
                   "w": round(b.size().x), "h": round(b.size().y)})
        });
        let page = json!({"electrodes": drawn, "bounds": bounds}).to_string();
        if page.len() > MAX_PAGE_JSON {
            return Err(ChipError::TooLarge(page.len()));
        }
        Ok(Chip {
            pads,
            by_id,
            by_channel,
            page: page.into(),
        })
    }

    /// The page's description of the chip (JSON text: ids, channels, outlines, bounds).
    pub fn page_json(&self) -> Arc<str> {
        self.page.clone()
    }

    /// Number of electrodes.
    pub fn len(&self) -> usize {
        self.pads.len()
    }

    /// Whether the chip has no electrodes.
    pub fn is_empty(&self) -> bool {
        self.pads.is_empty()
    }

    /// The electrodes driven by `channels` (in chip order), and the channels no electrode uses.
    pub fn electrodes_on(&self, channels: &BTreeSet<u16>) -> (Vec<String>, Vec<u16>) {
        let mut on = BTreeSet::new();
        let mut elsewhere = Vec::new();
        for ch in channels {
            match self.by_channel.get(ch) {
                Some(pads) => on.extend(pads.iter().copied()),
                None => elsewhere.push(*ch),
            }
        }
        let ids = on
            .into_iter()
            .filter_map(|i| self.pads.get(i).map(|p| p.id.clone()))
            .collect();
        (ids, elsewhere)
    }

    /// The `active-electrodes` list after a click on `id`, as MicroDrop's electrodes model
    /// computes it for `toggle-electrode`: the clicked electrode and every electrode on the
    /// same channel(s) are added when it is not active, removed when it is; order is kept and
    /// repeats dropped. Unlike MicroDrop, ids this chip does not have are dropped too: the
    /// plugin refuses a list with unknown ids as a whole, so keeping them would make every
    /// click fail.
    pub fn toggle(&self, active: &[String], id: &str) -> Result<Vec<String>, ToggleError> {
        let pad = self
            .by_id
            .get(id)
            .and_then(|&i| self.pads.get(i))
            .ok_or_else(|| ToggleError::Unknown(id.to_owned()))?;
        if pad.channels.is_empty() {
            return Err(ToggleError::NoChannel(id.to_owned()));
        }
        let connected: Vec<&str> = self
            .pads
            .iter()
            .filter(|p| p.channels == pad.channels)
            .map(|p| p.id.as_str())
            .collect();
        let turn_on = !active.iter().any(|a| a == id);
        let mut next: Vec<String> = Vec::with_capacity(active.len() + connected.len());
        let kept = active
            .iter()
            .map(String::as_str)
            .filter(|a| self.by_id.contains_key(*a))
            .filter(|a| turn_on || !connected.contains(a));
        let added = connected.iter().copied().filter(|_| turn_on);
        for a in kept.chain(added) {
            if !next.iter().any(|n| n == a) {
                next.push(a.to_owned());
            }
        }
        Ok(next)
    }
}

fn union(a: &BoundingBox, b: &BoundingBox) -> BoundingBox {
    BoundingBox {
        min: nalgebra::Point2::new(a.min.x.min(b.min.x), a.min.y.min(b.min.y)),
        max: nalgebra::Point2::new(a.max.x.max(b.max.x), a.max.y.max(b.max.y)),
    }
}

/// Hundredths of a millimetre: far finer than a screen pixel, and short JSON.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `M x y L x y ... Z` in device millimetres (y down, as SVG).
fn svg_path(outline: &[nalgebra::Point2<f64>]) -> String {
    let mut d = String::with_capacity(outline.len() * 14);
    for (i, p) in outline.iter().enumerate() {
        let cmd = if i == 0 { 'M' } else { 'L' };
        // Writing to a String cannot fail.
        let _ = write!(d, "{cmd}{} {}", round(p.x), round(p.y));
    }
    d.push('Z');
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MICRODROP3_DEFAULT_THREE_OBJECT;

    /// A square electrode `id` on channel text `channel`, centred at (x, y), 2 mm wide.
    fn square(id: &str, channel: &str, x: f64, y: f64) -> Value {
        let corner = |dx: f64, dy: f64| json!({"x": dx, "y": dy});
        let curves: Vec<Value> = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
            .iter()
            .zip([(1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0)])
            .map(|(&(ax, ay), (bx, by))| json!({"v1": corner(ax, ay), "v2": corner(bx, by)}))
            .collect();
        json!({"id": id, "channel": channel, "translation": {"x": x, "y": y},
               "shape": {"curves": curves}})
    }

    fn chip() -> Chip {
        Chip::from_three_object(&json!([
            square("a", "1", 0.0, 0.0),
            square("b", "2", 2.0, 0.0),
            square("b2", "2", 10.0, 0.0),
            square("c", "", 4.0, 0.0),
            square("d", "3,4", 6.0, 0.0),
        ]))
        .unwrap()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_click_adds_or_removes_every_electrode_on_the_same_channel() {
        let c = chip();
        assert_eq!(c.toggle(&[], "b").unwrap(), ids(&["b", "b2"]));
        assert_eq!(
            c.toggle(&ids(&["a"]), "b2").unwrap(),
            ids(&["a", "b", "b2"])
        );
        assert_eq!(c.toggle(&ids(&["b", "a", "b2"]), "b").unwrap(), ids(&["a"]));
        // Order is kept and repeats from the bus are dropped.
        assert_eq!(
            c.toggle(&ids(&["d", "a", "a"]), "b").unwrap(),
            ids(&["d", "a", "b", "b2"])
        );
        assert_eq!(c.toggle(&ids(&["a"]), "a").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_click_that_cannot_switch_anything_says_why() {
        let c = chip();
        assert_eq!(c.toggle(&[], "zz"), Err(ToggleError::Unknown("zz".into())));
        assert_eq!(c.toggle(&[], "c"), Err(ToggleError::NoChannel("c".into())));
        // Ids the device does not know would make the plugin refuse the whole list.
        assert_eq!(
            c.toggle(&ids(&["old", "b"]), "a").unwrap(),
            ids(&["b", "a"])
        );
    }

    #[test]
    fn actuated_channels_map_to_electrodes_and_strays_are_reported() {
        let c = chip();
        let (on, stray) = c.electrodes_on(&BTreeSet::from([2, 4, 99]));
        assert_eq!(on, ids(&["b", "b2", "d"]));
        assert_eq!(stray, vec![99]);
        assert_eq!(c.electrodes_on(&BTreeSet::new()), (vec![], vec![]));
    }

    #[test]
    fn the_page_gets_outlines_in_device_millimetres() {
        let c = chip();
        let page: Value = serde_json::from_str(&c.page_json()).unwrap();
        let a = &page["electrodes"][0];
        assert_eq!(a["id"], "a");
        // Shape y points up, the drawing's y down: (-1, -1) local is (-1, 1) on the page.
        assert_eq!(a["d"], "M-1 1L1 1L1 -1L-1 -1Z");
        assert_eq!(a["channels"], json!([1]));
        assert_eq!(page["electrodes"][4]["channels"], json!([3, 4]));
        assert_eq!(
            page["bounds"],
            json!({"x": -1.0, "y": -1.0, "w": 12.0, "h": 2.0})
        );
    }

    #[test]
    fn microdrops_default_chip_is_small_enough_for_a_page() {
        let value: Value = serde_json::from_str(MICRODROP3_DEFAULT_THREE_OBJECT).unwrap();
        let c = Chip::from_three_object(&value).unwrap();
        assert_eq!(c.len(), 92);
        let size = c.page_json().len();
        assert!(size < 64 * 1024, "{size} bytes");
    }

    #[test]
    fn bad_devices_are_refused_with_a_reason() {
        let dup = json!([square("a", "1", 0.0, 0.0), square("a", "2", 5.0, 0.0)]);
        assert!(matches!(
            Chip::from_three_object(&dup),
            Err(ChipError::DuplicateId(id)) if id == "a"
        ));
        let e = Chip::from_three_object(&json!({"not": "an array"})).unwrap_err();
        assert!(e.to_string().contains("array"), "{e}");
        let e = Chip::from_three_object(&json!([{"id": "x"}])).unwrap_err();
        assert!(e.to_string().contains("translation"), "{e}");
    }
}
