//! Measurements the engine makes on request: health readings (between phases, like any
//! request), and the calibration procedures that switch electrodes or test capacitors and
//! read the capacitance. Those need HV: asking for one is asking for HV for its duration
//! (refused while halted), and the channels and HV go back to how they were at the end.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::board::Monitor;
use super::engine::Engine;
use super::inbox::TestCapacitorReadings;
use super::ActuationError;

/// Longest nap while waiting for a measurement to settle: control requests (halt, stop) are
/// taken between naps.
const SETTLE_STEP: Duration = Duration::from_millis(5);

/// Nominal on-board test capacitors, by index (dropbot.py `Node.h` `on_board_capacitance`).
const TEST_CAPACITORS: u8 = 3;

impl Engine {
    /// Health readings; the interlock pin also tells the picture whether a chip is in.
    pub(super) fn monitor(&mut self) -> Result<Monitor, ActuationError> {
        let r = self.board()?.board.monitor();
        let monitor = r.map_err(|e| self.board_failed(e))?;
        if monitor.chip_inserted.is_some() && monitor.chip_inserted != self.picture.chip_inserted {
            self.picture.chip_inserted = monitor.chip_inserted;
            self.publish();
        }
        Ok(monitor)
    }

    /// Each set alone, `repeats` readings after `settle`.
    pub(super) fn measure_sets(
        &mut self,
        sets: &[BTreeSet<u16>],
        repeats: u32,
        settle: Duration,
    ) -> Result<Vec<Vec<f64>>, ActuationError> {
        self.with_hv_and_channels_back(|engine| {
            let mut out = Vec::with_capacity(sets.len());
            for set in sets {
                engine.write_channels(set)?;
                engine.settle(settle)?;
                out.push(engine.readings(repeats)?);
            }
            Ok(out)
        })
    }

    /// No channel on; the baseline, then each test capacitor, `repeats` readings each, as
    /// dropbot.py's `proxy_py2.py` `on_board_capacitance` and `hardware_test.py`
    /// `test_on_board_feedback_calibration` take them.
    pub(super) fn measure_test_capacitors(
        &mut self,
        repeats: u32,
    ) -> Result<TestCapacitorReadings, ActuationError> {
        let r = self.board()?.board.feedback_capacitor();
        let feedback_f = r.map_err(|e| self.board_failed(e))?;
        let result = self.with_hv_and_channels_back(|engine| {
            engine.write_channels(&BTreeSet::new())?;
            let mut nominal_f = Vec::new();
            let mut readings = Vec::new();
            for index in std::iter::once(None).chain((0..TEST_CAPACITORS).map(Some)) {
                let r = engine.board()?.board.select_test_capacitor(index);
                nominal_f.push(r.map_err(|e| engine.board_failed(e))?);
                engine.settle(SETTLE_STEP)?;
                readings.push(engine.readings(repeats)?);
            }
            Ok(TestCapacitorReadings {
                feedback_f,
                nominal_f,
                readings,
            })
        });
        // Every test capacitor off again, whatever happened.
        if let Ok(attached) = self.board() {
            if let Err(e) = attached.board.select_test_capacitor(None) {
                tracing::warn!(error = %e, "could not disconnect the test capacitors");
            }
        }
        result
    }

    /// Set the feedback capacitor.
    pub(super) fn set_feedback_capacitor(&mut self, farads: f64) -> Result<(), ActuationError> {
        if !(farads.is_finite() && farads > 0.0) {
            return Err(ActuationError::Invalid(format!(
                "feedback capacitor {farads} F: a positive capacitance is needed"
            )));
        }
        let r = self.board()?.board.set_feedback_capacitor(farads);
        r.map_err(|e| self.board_failed(e))
    }

    /// Run `measure` with HV on, then put the channels and HV back as they were.
    fn with_hv_and_channels_back<T>(
        &mut self,
        measure: impl FnOnce(&mut Self) -> Result<T, ActuationError>,
    ) -> Result<T, ActuationError> {
        if let Some(h) = self.policy.halted() {
            return Err(ActuationError::Halted(h.reason.clone()));
        }
        self.board()?;
        let channels = self.picture.channels.clone();
        let hv_was_on = self.picture.hv_output_enabled;
        if !hv_was_on {
            self.set_hv(true)?;
        }
        let result = measure(self);
        // A halt or a lost board in between: leave everything as the halt left it.
        if self.board.is_some() && self.policy.halted().is_none() {
            let back = self.write_channels(&channels).map(|_| ());
            let hv = match hv_was_on {
                true => Ok(()),
                false => self.set_hv(false),
            };
            if let Err(e) = back.and(hv) {
                tracing::warn!(error = %e, "could not restore the channels and HV after a measurement");
            }
        }
        result
    }

    /// Wait `settle`, taking control requests in between: one that changes what is on ends
    /// the measurement.
    fn settle(&mut self, settle: Duration) -> Result<(), ActuationError> {
        let until = Instant::now() + settle;
        loop {
            if self.interrupted() {
                return Err(ActuationError::Interrupted);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(SETTLE_STEP));
        }
    }

    /// `repeats` capacitance readings of what is on now.
    fn readings(&mut self, repeats: u32) -> Result<Vec<f64>, ActuationError> {
        let mut values = Vec::with_capacity(repeats as usize);
        for _ in 0..repeats.max(1) {
            let r = self.board()?.board.capacitance();
            values.push(r.map_err(|e| self.board_failed(e))?.farads);
            if self.interrupted() {
                return Err(ActuationError::Interrupted);
            }
        }
        Ok(values)
    }
}
