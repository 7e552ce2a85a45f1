//! `plot`: a run record (CSV) drawn as a PNG.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dropbot_plugin::{plot, runlog};

/// Arguments of `plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The run record (a CSV the plugin wrote).
    csv: PathBuf,
    /// The PNG to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Width, pixels.
    #[arg(long, default_value_t = 1200)]
    width: u32,
    /// Height, pixels.
    #[arg(long, default_value_t = 800)]
    height: u32,
}

/// Draws the record and says what was drawn.
pub fn plot(args: &PlotArgs) -> Result<()> {
    let rows = runlog::read_rows(&args.csv)?;
    let drawn = plot::render(&rows, &args.out, args.width, args.height)?;
    println!(
        "{}: {} samples, {} phase boundaries{}",
        args.out.display(),
        drawn.rows,
        drawn.boundaries,
        if drawn.coverage { ", coverage" } else { "" }
    );
    Ok(())
}
