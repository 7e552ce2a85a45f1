//! The `simulate` subcommand: a simulated DropBot on a pty, linked at a fixed path, until
//! SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dropbot_plugin::device::Device;
use dropbot_plugin::sim::control::{self, Scheduled};
use dropbot_plugin::sim::{spawn_at_link, Faults, SimError, SimOptions, Timing};
use tokio::signal::unix::{signal, SignalKind};

/// Options of `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Symlink to the board's pty, followed across replugs [default: dropbot-sim in the
    /// system's temporary directory].
    #[arg(long, value_name = "PATH")]
    pub link: Option<PathBuf>,
    /// Channels of the switching boards (40, 80 or 120).
    #[arg(long, default_value_t = 120)]
    pub channels: u16,
    /// The switching boards came up after the control board: it reports 0 channels until a
    /// host calls `initialize_switching_boards` (as the vendor's driver does at connection).
    #[arg(long)]
    pub late_switching_boards: bool,
    /// The board's input supply in volts; 0 simulates a board without its 12 V supply
    /// (measured HV reads 0, HV never comes up).
    #[arg(long, default_value_t = 12.0, value_name = "VOLTS")]
    pub supply_v: f64,
    /// MicroDrop 3 `three-object` JSON file of the chip [default: a 120-electrode grid with
    /// reservoirs].
    #[arg(long, value_name = "FILE")]
    pub device: Option<PathBuf>,
    /// `realistic` (the real board's delays) or `fast` (none).
    #[arg(long, default_value = "realistic")]
    pub timing: Timing,
    /// Seed of all noise and random faults.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write what the board does as JSON lines to FILE.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Fraction of written bytes to corrupt (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub corrupt_fraction: f64,
    /// Fraction of written bytes to drop (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub drop_fraction: f64,
    /// Delay every reply and event by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub reply_delay_ms: u64,
    /// Answer the ID handshake with this text and speak that version's command table
    /// [default: dropbot::1.73.6].
    #[arg(long)]
    pub firmware_id: Option<String>,
    /// Channels shorted to ground, e.g. `3,17`.
    #[arg(long, value_delimiter = ',')]
    pub shorted: Vec<u16>,
    /// Start with no chip inserted.
    #[arg(long)]
    pub no_chip: bool,
    /// Put a droplet on an electrode at start: `ID` (one electrode's worth) or `ID:MICROLITRES`.
    #[arg(long, value_name = "ID[:UL]")]
    pub droplet: Vec<String>,
    /// Run a control command at a time after start, e.g. `2000:unplug`, `4000:replug`,
    /// `1000:stall`, `3000:reboot` (repeatable; the same commands are read from stdin).
    #[arg(long, value_name = "MS:COMMAND")]
    pub at: Vec<Scheduled>,
}

impl SimulateArgs {
    /// The simulator options these arguments describe.
    pub fn options(&self) -> Result<SimOptions, SimError> {
        for (name, value) in [
            ("--corrupt-fraction", self.corrupt_fraction),
            ("--drop-fraction", self.drop_fraction),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimError::Options(format!(
                    "{name} {value} is not between 0 and 1"
                )));
            }
        }
        let device = match &self.device {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SimError::File {
                    path: path.clone(),
                    source,
                })?;
                Some(Device::from_three_object_json(&text)?)
            }
            None => None,
        };
        let defaults = SimOptions::default();
        Ok(SimOptions {
            channels: self.channels,
            switching_boards_late: self.late_switching_boards,
            supply_v: self.supply_v,
            timing: self.timing,
            seed: self.seed,
            device,
            firmware_id: self
                .firmware_id
                .clone()
                .unwrap_or(defaults.firmware_id.clone()),
            trace: self.trace.clone(),
            chip_inserted: !self.no_chip,
            shorted: self.shorted.clone(),
            faults: Faults {
                corrupt_fraction: self.corrupt_fraction,
                drop_fraction: self.drop_fraction,
                reply_delay: Duration::from_millis(self.reply_delay_ms),
                ..Faults::default()
            },
            ..defaults
        })
    }

    /// The link path, with its default.
    pub fn link_path(&self) -> PathBuf {
        self.link
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("dropbot-sim"))
    }
}

/// Run a simulated board until SIGINT or SIGTERM, printing where it is.
pub async fn run_simulate(args: SimulateArgs) -> Result<(), SimError> {
    let opts = args.options()?;
    let link = args.link_path();
    // Before the link exists: whoever sees the link may signal us at once.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sim = spawn_at_link(opts, &link).await?;
    for spec in &args.droplet {
        let (id, volume) = match spec.split_once(':') {
            Some((id, ul)) => {
                let ul: f64 = ul.parse().map_err(|_| {
                    SimError::Options(format!("droplet `{spec}`: `{ul}` is not a volume in µL"))
                })?;
                (id, ul)
            }
            None => (spec.as_str(), sim.unit_volume(spec.as_str())?),
        };
        sim.add_droplet(id, volume)?;
    }
    println!(
        "simulated DropBot at {} -> {}",
        link.display(),
        sim.path().display()
    );
    println!("{}", control::HELP);
    tokio::spawn(control::run_schedule(sim.clone(), args.at.clone()));
    tokio::spawn(control::serve_stdin(sim.clone()));
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn parses_the_documented_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--link",
            "board",
            "--timing",
            "fast",
            "--seed",
            "9",
            "--shorted",
            "3,17",
            "--corrupt-fraction",
            "0.1",
            "--reply-delay-ms",
            "20",
            "--firmware-id",
            "dropbot::2.0",
            "--late-switching-boards",
            "--supply-v",
            "0",
        ])
        .unwrap();
        let opts = cli.args.options().unwrap();
        assert_eq!(opts.timing, Timing::Fast);
        assert_eq!(opts.seed, 9);
        assert_eq!(opts.shorted, vec![3, 17]);
        assert_eq!(opts.faults.reply_delay, Duration::from_millis(20));
        assert_eq!(opts.firmware_id, "dropbot::2.0");
        assert!(opts.switching_boards_late);
        assert_eq!(opts.supply_v, 0.0);
        assert_eq!(cli.args.link_path(), PathBuf::from("board"));
        let defaults = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(defaults.args.options().unwrap().channels, 120);
        assert!(defaults.args.link_path().ends_with("dropbot-sim"));
        let bad = Cli::try_parse_from(["x", "--drop-fraction", "2"]).unwrap();
        assert!(bad.args.options().is_err());
        assert!(Cli::try_parse_from(["x", "--timing", "slow"]).is_err());
    }
}
