//! `ports` and `check`: the boards on this machine.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use dropbot_plugin::board::discovery::{DROPBOT_PID, DROPBOT_VID};
use dropbot_plugin::board::{describe_ports, PortLister, Probe, Selector, SystemPorts};
use firmware_protocol::TableSet;

use super::common::{load_tables, shutdown_signal};

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Which board (as for `run`) [default: the one DropBot present].
    #[arg(long, value_name = "SELECTOR")]
    port: Option<String>,
    /// Command table of a firmware build (TOML); repeatable.
    #[arg(long, value_name = "FILE")]
    command_table: Vec<PathBuf>,
    /// Drive this channel alone with HV (at the board's voltage setting) for --actuate-ms, then
    /// turn HV and every channel off.
    #[arg(long, value_name = "CHANNEL")]
    actuate: Option<u16>,
    /// How long --actuate keeps the channel on, ms.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    actuate_ms: u64,
    /// Round trips timed per call.
    #[arg(long, default_value_t = 20, value_name = "N")]
    samples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ports`.
#[derive(Debug, Args)]
pub struct PortsArgs {
    /// Also ask every Teensy port (16c0:0483) who it is, with the ID handshake (the USB id is
    /// shared by every Teensy, so only the handshake tells a DropBot), and print its uuid.
    #[arg(long)]
    probe: bool,
    /// Extra probe targets, e.g. a simulator's link path (with --probe).
    #[arg(long, value_name = "PATH", requires = "probe")]
    path: Vec<String>,
}

/// `check`: a bring-up report of one board.
pub async fn check(args: CheckArgs) -> Result<()> {
    use dropbot_plugin::board::check::{check, CheckOptions, Item};
    let stop = shutdown_signal()?;
    let selector = match &args.port {
        Some(s) => s.parse()?,
        None => Selector::default(),
    };
    let probe = Probe::new(Arc::new(load_tables(&args.command_table)?));
    let bot = dropbot_plugin::board::discover(&SystemPorts, &selector, &probe).await?;
    let options = CheckOptions {
        samples: args.samples.max(1),
        actuate: args.actuate,
        actuate_for: std::time::Duration::from_millis(args.actuate_ms),
    };
    let report = tokio::select! {
        report = check(&bot, &options) => report,
        () = stop => {
            let off = bot.safe_state().await;
            bot.disconnect().await;
            anyhow::bail!("interrupted; HV and channels off: {}", if off.is_ok() { "yes" } else { "not confirmed" });
        }
    };
    bot.disconnect().await;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    match report.actuation {
        None => Ok(()),
        Some(a) if a.all_off_after != Item::Ok(true) => {
            anyhow::bail!("the board did not confirm HV and channels off after --actuate")
        }
        Some(a) => match a.error {
            Some(e) => anyhow::bail!("--actuate {}: {e}", a.channel),
            None => Ok(()),
        },
    }
}

/// `ports`: the USB serial ports, and with `--probe` which are DropBots.
pub async fn ports(args: PortsArgs) -> Result<()> {
    let ports = SystemPorts.list()?;
    print!("{}", describe_ports(&ports));
    if !args.probe {
        return Ok(());
    }
    let probe = Probe::new(Arc::new(TableSet::builtin()));
    let teensies = ports
        .iter()
        .filter(|p| (p.vid, p.pid) == (DROPBOT_VID, DROPBOT_PID))
        .map(|p| p.path.clone());
    for path in teensies.chain(args.path) {
        match probe.identify(&path).await {
            Ok(info) => println!(
                "{path}: {} ({} channels, uuid {}; select with `--port {path}` or, over USB, `--port uuid:{}`)",
                info.identity, info.channel_count, info.uuid, info.uuid
            ),
            Err(why) => println!("{path}: not a DropBot we can use: {why}"),
        }
    }
    Ok(())
}
