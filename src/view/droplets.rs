//! Droplets are not on the bus: only a simulated board knows where they are. When the board is
//! simulated in this process, the view is given a [`DropletSource`] and reads it while pages
//! are open; otherwise the page shows no droplets.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::hub::Hub;
use crate::sim::SimHandle;

/// How often droplets are read while a page is open: enough for motion that takes a few
/// hundred milliseconds per electrode (the page animates in between).
pub const DROPLET_PERIOD: Duration = Duration::from_millis(100);

/// A droplet to draw: its centre and the radius of its footprint, mm in the device's frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropletMark {
    /// Stable number of the droplet.
    pub id: u32,
    /// Centre, mm.
    pub x: f64,
    /// Centre, mm.
    pub y: f64,
    /// Radius of a disc with the droplet's footprint, mm.
    pub r: f64,
    /// The electrode it rests on or moves from.
    pub electrode: String,
}

/// Where droplets are.
pub trait DropletSource: Send + Sync + 'static {
    /// The droplets now.
    fn droplets(&self) -> Vec<DropletMark>;
}

/// The droplets of a simulated board in this process.
pub struct SimDroplets {
    sim: SimHandle,
    gap_height_mm: f64,
}

impl SimDroplets {
    /// Reads `sim`, whose plates are `gap_height_mm` apart (a droplet of V µL covers V / gap
    /// mm²).
    pub fn new(sim: SimHandle, gap_height_mm: f64) -> Self {
        SimDroplets { sim, gap_height_mm }
    }
}

impl DropletSource for SimDroplets {
    fn droplets(&self) -> Vec<DropletMark> {
        self.sim
            .snapshot()
            .droplets
            .into_iter()
            .map(|d| DropletMark {
                id: d.id,
                x: d.x,
                y: d.y,
                r: footprint_radius(d.volume_ul, self.gap_height_mm),
                electrode: d.electrode,
            })
            .collect()
    }
}

/// Radius (mm) of a disc of the area a droplet of `volume_ul` µL covers between plates
/// `gap_mm` apart; 0 for nonsense.
pub fn footprint_radius(volume_ul: f64, gap_mm: f64) -> f64 {
    let r = (volume_ul / gap_mm / std::f64::consts::PI).sqrt();
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

/// Reads `source` every [`DROPLET_PERIOD`] while at least one page is open, until `stop`.
pub(super) async fn follow(
    source: Arc<dyn DropletSource>,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) {
    let mut viewers = hub.viewers();
    let mut tick = tokio::time::interval(DROPLET_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            return;
        }
        if *viewers.borrow_and_update() == 0 {
            tokio::select! {
                _ = viewers.changed() => continue,
                _ = stop.changed() => return,
            }
        }
        tokio::select! {
            _ = tick.tick() => {
                let now = source.droplets();
                hub.update(|p| p.set_droplets(now));
            }
            _ = stop.changed() => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_droplet_covers_its_electrodes_area() {
        // 2.5 mm square electrode, 0.2 mm gap: 1.25 µL covers 6.25 mm².
        let r = footprint_radius(1.25, 0.2);
        assert!((std::f64::consts::PI * r * r - 6.25).abs() < 1e-9, "{r}");
        assert_eq!(footprint_radius(1.0, 0.0), 0.0);
        assert_eq!(footprint_radius(-1.0, 0.2), 0.0);
    }
}
