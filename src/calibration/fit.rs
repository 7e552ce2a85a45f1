//! Least-squares fits: the chip's capacitance per mm² under liquid and under filler, and the
//! board's feedback correction from its on-board test capacitors.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::CalibrationError;

/// Ratio of the smallest to the largest singular value below which two columns are taken as
/// dependent (e.g. every set has the same share of liquid).
const MIN_CONDITION: f64 = 1e-6;

/// One measurement of an electrode set: how much of its area was under liquid and under
/// filler, and what the board read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AreaReading {
    /// Electrode area under liquid, mm².
    pub liquid_mm2: f64,
    /// Electrode area under filler (air or oil), mm².
    pub filler_mm2: f64,
    /// The capacitance read, farads.
    pub farads: f64,
}

/// Capacitance per area of a chip: C = liquid · A_liquid + filler · A_filler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacitanceFit {
    /// Farads per mm² under liquid.
    pub liquid_f_per_mm2: f64,
    /// Farads per mm² under filler.
    pub filler_f_per_mm2: f64,
    /// Measured minus fitted capacitance of each reading, farads.
    pub residuals_f: Vec<f64>,
    /// Root mean square of the residuals over the root mean square of the readings.
    pub relative_rms: f64,
}

/// Fit liquid and filler capacitance per mm² to `readings` by least squares (SVD).
pub fn fit_capacitance(readings: &[AreaReading]) -> Result<CapacitanceFit, CalibrationError> {
    if readings.len() < 2 {
        return Err(CalibrationError::TooFew {
            what: "electrode set readings",
            got: readings.len(),
            need: 2,
        });
    }
    if let Some(r) = readings.iter().find(|r| {
        !(r.liquid_mm2.is_finite() && r.filler_mm2.is_finite() && r.farads.is_finite())
            || r.liquid_mm2 < 0.0
            || r.filler_mm2 < 0.0
    }) {
        return Err(CalibrationError::Invalid(format!(
            "a reading of {r:?} is not usable (areas and capacitance must be finite, areas not negative)"
        )));
    }
    let rows = readings.iter().flat_map(|r| [r.liquid_mm2, r.filler_mm2]);
    let a = DMatrix::from_row_iterator(readings.len(), 2, rows);
    let b = DVector::from_iterator(readings.len(), readings.iter().map(|r| r.farads));
    let x = solve(a.clone(), &b, "liquid and filler area")?;
    let [liquid, filler] = two(&x);
    if !(liquid > 0.0 && filler > 0.0) {
        return Err(CalibrationError::Invalid(format!(
            "the fit gives {liquid:e} F/mm² under liquid and {filler:e} F/mm² under filler: \
             both must be positive (are the sets' liquid electrodes really covered?)"
        )));
    }
    let residuals = &b - &a * &x;
    Ok(CapacitanceFit {
        liquid_f_per_mm2: liquid,
        filler_f_per_mm2: filler,
        relative_rms: rms(residuals.as_slice()) / rms(b.as_slice()).max(f64::MIN_POSITIVE),
        residuals_f: residuals.iter().copied().collect(),
    })
}

/// The board's reading of its on-board test capacitors, as a line: reading = gain · nominal
/// + offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackFit {
    /// Readings over true capacitance: the configured feedback capacitor over the real one.
    pub gain: f64,
    /// Reading with nothing connected (strays), farads.
    pub offset_f: f64,
    /// Median reading over nominal of each test capacitor (dropbot.py `calibrate_C16`'s
    /// correction factors).
    pub ratios: Vec<f64>,
    /// Median reading minus the fitted line, per capacitor (the baseline first), farads.
    pub residuals_f: Vec<f64>,
}

impl FeedbackFit {
    /// The feedback capacitor that makes readings true: the one in use divided by the gain.
    pub fn corrected(&self, feedback_f: f64) -> f64 {
        feedback_f / self.gain
    }
}

/// Fit the test capacitors' median readings against their nominal values (the first, 0 F,
/// is the baseline with none connected). dropbot.py's `calibrate_C16` takes the mean of
/// median / nominal over the three capacitors; a line through the baseline too separates
/// the stray capacitance from the gain.
pub fn fit_feedback(
    nominal_f: &[f64],
    readings: &[Vec<f64>],
) -> Result<FeedbackFit, CalibrationError> {
    if nominal_f.len() != readings.len() || nominal_f.len() < 2 {
        return Err(CalibrationError::TooFew {
            what: "test capacitor readings",
            got: nominal_f.len().min(readings.len()),
            need: 2,
        });
    }
    let medians: Vec<f64> = readings
        .iter()
        .map(|r| median(r))
        .collect::<Option<_>>()
        .ok_or_else(|| CalibrationError::Invalid("a test capacitor has no readings".into()))?;
    let rows = nominal_f.iter().flat_map(|n| [*n, 1.0]);
    let a = DMatrix::from_row_iterator(nominal_f.len(), 2, rows);
    let b = DVector::from_vec(medians.clone());
    let x = solve(a.clone(), &b, "test capacitor")?;
    let [gain, offset_f] = two(&x);
    if !(gain.is_finite() && gain > 0.1 && gain < 10.0) {
        return Err(CalibrationError::Invalid(format!(
            "the test capacitors read {gain:.3} times their nominal values: expected close to 1 \
             (is HV on and the chip's load off?)"
        )));
    }
    let residuals = &b - &a * &x;
    let ratios = nominal_f
        .iter()
        .zip(&medians)
        .filter(|(n, _)| **n > 0.0)
        .map(|(n, m)| m / n)
        .collect();
    Ok(FeedbackFit {
        gain,
        offset_f,
        ratios,
        residuals_f: residuals.iter().copied().collect(),
    })
}

/// The two unknowns of a two-column fit (NaN where missing, which every check refuses).
fn two(x: &DVector<f64>) -> [f64; 2] {
    let at = |i: usize| x.get(i).copied().unwrap_or(f64::NAN);
    [at(0), at(1)]
}

/// Least-squares solution of a x = b, refused when the columns are (nearly) dependent.
fn solve(a: DMatrix<f64>, b: &DVector<f64>, what: &str) -> Result<DVector<f64>, CalibrationError> {
    // Columns of very different scale (mm² against 1) would look dependent: scale them.
    let scales: Vec<f64> = (0..a.ncols())
        .map(|j| a.column(j).norm().max(f64::MIN_POSITIVE))
        .collect();
    let mut scaled = a;
    for (j, s) in scales.iter().enumerate() {
        scaled.column_mut(j).scale_mut(1.0 / s);
    }
    let svd = scaled.svd(true, true);
    let (max, min) = svd
        .singular_values
        .iter()
        .fold((0.0f64, f64::INFINITY), |(hi, lo), s| {
            (hi.max(*s), lo.min(*s))
        });
    if !(max > 0.0 && min / max > MIN_CONDITION) {
        return Err(CalibrationError::Degenerate(format!(
            "the readings do not separate the two unknowns ({what}): measure sets with \
             different shares of liquid, e.g. some fully under a droplet and some empty"
        )));
    }
    let x = svd
        .solve(b, f64::EPSILON)
        .map_err(|e| CalibrationError::Degenerate(e.to_string()))?;
    Ok(DVector::from_iterator(
        x.len(),
        x.iter().zip(&scales).map(|(v, s)| v / s),
    ))
}

/// The median of `values` (`None` if empty); NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

fn rms(values: &[f64]) -> f64 {
    match values.len() {
        0 => 0.0,
        n => (values.iter().map(|v| v * v).sum::<f64>() / n as f64).sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIQUID: f64 = 1.0e-12;
    const FILLER: f64 = 2.0e-14;

    fn reading(liquid_mm2: f64, filler_mm2: f64, noise: f64) -> AreaReading {
        AreaReading {
            liquid_mm2,
            filler_mm2,
            farads: liquid_mm2 * LIQUID + filler_mm2 * FILLER + noise,
        }
    }

    #[test]
    fn recovers_liquid_and_filler_exactly_without_noise() {
        let fit = fit_capacitance(&[
            reading(37.0, 0.0, 0.0),
            reading(0.0, 150.0, 0.0),
            reading(20.0, 17.0, 0.0),
        ])
        .unwrap();
        assert!(
            (fit.liquid_f_per_mm2 / LIQUID - 1.0).abs() < 1e-9,
            "{fit:?}"
        );
        assert!(
            (fit.filler_f_per_mm2 / FILLER - 1.0).abs() < 1e-9,
            "{fit:?}"
        );
        assert!(fit.relative_rms < 1e-9);
        assert_eq!(fit.residuals_f.len(), 3);
    }

    #[test]
    fn residuals_show_a_reading_that_does_not_fit() {
        let fit = fit_capacitance(&[
            reading(37.0, 0.0, 0.0),
            reading(0.0, 150.0, 0.0),
            reading(37.0, 0.0, 5e-12),
        ])
        .unwrap();
        assert!(fit.residuals_f.iter().any(|r| r.abs() > 1e-12), "{fit:?}");
        assert!(fit.relative_rms > 0.01);
    }

    #[test]
    fn sets_with_the_same_share_of_liquid_are_refused() {
        let same = fit_capacitance(&[reading(10.0, 10.0, 0.0), reading(20.0, 20.0, 0.0)]);
        assert!(
            matches!(same, Err(CalibrationError::Degenerate(_))),
            "{same:?}"
        );
        let one = fit_capacitance(&[reading(10.0, 0.0, 0.0)]);
        assert!(matches!(one, Err(CalibrationError::TooFew { .. })));
        let nan = fit_capacitance(&[reading(f64::NAN, 0.0, 0.0), reading(0.0, 1.0, 0.0)]);
        assert!(matches!(nan, Err(CalibrationError::Invalid(_))));
    }

    #[test]
    fn the_feedback_gain_and_strays_come_from_the_test_capacitors() {
        let nominal = [0.0, 1e-12, 10e-12, 100e-12];
        let gain = 1.05;
        let readings: Vec<Vec<f64>> = nominal
            .iter()
            .map(|n| vec![gain * n + 0.3e-12; 5])
            .collect();
        let fit = fit_feedback(&nominal, &readings).unwrap();
        assert!((fit.gain - gain).abs() < 1e-9, "{fit:?}");
        assert!((fit.offset_f - 0.3e-12).abs() < 1e-18);
        assert!((fit.corrected(150e-9) - 150e-9 / gain).abs() < 1e-15);
        assert_eq!(fit.ratios.len(), 3);
        let nothing = fit_feedback(
            &nominal,
            &[vec![0.0; 3], vec![0.0; 3], vec![0.0; 3], vec![0.0; 3]],
        );
        assert!(nothing.is_err(), "HV off reads nothing: {nothing:?}");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
