//! A run record as a picture: capacitance (and coverage, on a calibrated chip) and voltage
//! over time, with the phase boundaries and their labels. Drawn with plotters into a memory
//! bitmap and written as PNG; the text uses DejaVu Sans compiled into the binary, so no
//! system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::runlog::Row;

/// Why a plot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The record has no rows.
    #[error("the record has no rows: nothing to plot")]
    Empty,
    /// Drawing failed.
    #[error("drawing: {0}")]
    Draw(String),
    /// The PNG could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// What was drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSummary {
    /// Rows drawn.
    pub rows: usize,
    /// Phase boundaries drawn.
    pub boundaries: usize,
    /// Whether the coverage was drawn.
    pub coverage: bool,
}

const FONT: &str = "sans-serif";
static FONTS: Once = Once::new();

fn register_fonts() {
    FONTS.call_once(|| {
        let regular = dejavu::sans::regular();
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FONT, style, regular).is_err() {
                tracing::warn!("the built-in font could not be registered");
            }
        }
    });
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Seconds since the first row: by board time where every row has it, else host time.
fn times(rows: &[Row]) -> Vec<f64> {
    let board: Option<Vec<u64>> = rows.iter().map(|r| r.board_time_us).collect();
    match board {
        Some(us) => {
            let t0 = us.first().copied().unwrap_or(0);
            us.iter()
                .map(|t| t.saturating_sub(t0) as f64 / 1e6)
                .collect()
        }
        None => {
            let t0 = rows.first().map_or(0.0, |r| r.host_time_ms);
            rows.iter().map(|r| (r.host_time_ms - t0) / 1e3).collect()
        }
    }
}

/// Where the phase changes: (time, label).
fn boundaries(rows: &[Row], t: &[f64]) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut last: Option<(Option<usize>, Option<&str>)> = None;
    for (row, time) in rows.iter().zip(t) {
        let now = (row.phase, row.label.as_deref());
        if last != Some(now) {
            if let Some(p) = row.phase {
                let label = match &row.label {
                    Some(l) => format!("{p}: {l}"),
                    None => format!("{p}"),
                };
                out.push((*time, label));
            }
            last = Some(now);
        }
    }
    out
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.01).max(1e-9);
    (lo - pad, hi + pad)
}

/// Draw `rows` into a `width` × `height` PNG at `out`.
pub fn render(rows: &[Row], out: &Path, width: u32, height: u32) -> Result<PlotSummary, PlotError> {
    if rows.is_empty() {
        return Err(PlotError::Empty);
    }
    register_fonts();
    let t = times(rows);
    let marks = boundaries(rows, &t);
    let coverage = rows.iter().any(|r| r.coverage.is_some());
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, bottom) = root.split_vertically(height * 2 / 3);
        let (t0, t1) = range(t.iter().copied());
        let pf: Vec<f64> = rows.iter().map(|r| r.capacitance_f * 1e12).collect();
        let (c0, c1) = range(pf.iter().copied());
        let mut chart = ChartBuilder::on(&top)
            .caption("capacitance", (FONT, 18))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(if coverage { 50 } else { 0 })
            .build_cartesian_2d(t0..t1, c0..c1)
            .map_err(draw_err)?
            .set_secondary_coord(t0..t1, -0.05f64..1.05f64);
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("capacitance (pF)")
            .label_style((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(
                t.iter().copied().zip(pf.iter().copied()),
                &BLUE,
            ))
            .map_err(draw_err)?
            .label("capacitance (pF)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        if coverage {
            chart
                .configure_secondary_axes()
                .y_desc("coverage")
                .label_style((FONT, 12))
                .draw()
                .map_err(draw_err)?;
            let points = rows
                .iter()
                .zip(&t)
                .filter_map(|(r, t)| r.coverage.map(|c| (*t, c)));
            chart
                .draw_secondary_series(LineSeries::new(points, &GREEN))
                .map_err(draw_err)?
                .label("coverage")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN));
        }
        for (time, label) in &marks {
            let line = vec![(*time, c0), (*time, c1)];
            chart
                .draw_series(std::iter::once(PathElement::new(line, BLACK.mix(0.4))))
                .map_err(draw_err)?;
            let text = Text::new(
                label.clone(),
                (*time, c1),
                (FONT, 11).into_font().color(&BLACK),
            );
            chart.draw_series(std::iter::once(text)).map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;

        let volts: Vec<f64> = rows.iter().map(|r| r.voltage_v).collect();
        let (v0, v1) = range(volts.iter().copied());
        let mut chart = ChartBuilder::on(&bottom)
            .caption("actuation voltage", (FONT, 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .right_y_label_area_size(if coverage { 50 } else { 0 })
            .build_cartesian_2d(t0..t1, v0..v1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("V RMS")
            .label_style((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(t.iter().copied().zip(volts), &RED))
            .map_err(draw_err)?;
        for (time, _) in &marks {
            let line = vec![(*time, v0), (*time, v1)];
            chart
                .draw_series(std::iter::once(PathElement::new(line, BLACK.mix(0.4))))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    write_png(out, &pixels, width, height)?;
    Ok(PlotSummary {
        rows: rows.len(),
        boundaries: marks.len(),
        coverage,
    })
}

fn write_png(out: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), PlotError> {
    let io = |source| PlotError::Io {
        path: out.display().to_string(),
        source,
    };
    let file = std::fs::File::create(out).map_err(io)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| io(std::io::Error::other(e)))?;
    writer
        .write_image_data(rgb)
        .map_err(|e| io(std::io::Error::other(e)))?;
    writer.finish().map_err(|e| io(std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64, phase: usize) -> Row {
        Row {
            host_time_ms: 1.7e12 + i as f64 * 25.0,
            board_time_us: Some(1_000_000 + i * 25_000),
            phase: Some(phase),
            label: Some(format!("step {phase}")),
            actuated: "1".into(),
            capacitance_f: 1e-12 * (1.0 + phase as f64),
            coverage: Some(0.5),
            voltage_v: 100.0,
            frequency_hz: Some(1e4),
        }
    }

    #[test]
    fn boundaries_are_where_the_phase_changes() {
        let rows: Vec<Row> = (0..6).map(|i| row(i, (i / 2) as usize)).collect();
        let t = times(&rows);
        assert!((t[2] - 0.05).abs() < 1e-12);
        let b = boundaries(&rows, &t);
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].1, "1: step 1");
        assert!(render(&[], Path::new("/nonexistent.png"), 10, 10).is_err());
    }
}
