//! `run`: the plugin, with the configuration from the file, the environment and the flags.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dropbot_plugin::board::Selector;
use dropbot_plugin::config::Settings;
use dropbot_plugin::plugin;
use dropbot_plugin::sim::Timing;

use super::common::{
    load_device, shutdown_signal, start_simulator, start_view, supervisor_options,
};
use super::settings::SettingsArgs;

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Use a simulated board started in this process instead of hardware.
    #[arg(long, conflicts_with = "port")]
    simulate: bool,
    /// The simulated chip (`three-object` JSON) [default: MicroDrop 3's default device].
    #[arg(long, value_name = "FILE", requires = "simulate")]
    sim_device: Option<PathBuf>,
    /// The simulated board's timing.
    #[arg(long, default_value = "realistic", requires = "simulate")]
    sim_timing: Timing,
    /// Put a droplet on this electrode of the simulated chip (repeatable).
    #[arg(long, value_name = "ID", requires = "simulate")]
    sim_droplet: Vec<String>,
    /// Write the simulated board's trace (JSON lines: packets, channels, HV, droplets) to FILE.
    #[arg(long, value_name = "FILE", requires = "simulate")]
    sim_trace: Option<PathBuf>,
}

/// Runs the plugin until SIGINT, SIGTERM or the `exit` trigger.
pub async fn run_plugin(args: RunArgs, settings: Settings) -> Result<()> {
    let stop = shutdown_signal()?;
    let bus = settings.bus.clone();
    tracing::info!(name = %bus.name, broker = %format!("{}:{}", bus.host, bus.port), "starting");
    let (selector, sim) = if args.simulate {
        let device = load_device(args.sim_device.as_ref())?;
        let sim = start_simulator(
            device,
            args.sim_timing,
            &args.sim_droplet,
            args.sim_trace.as_ref(),
        )
        .await?;
        (
            Selector::Path(sim.handle.path().display().to_string()),
            Some(sim),
        )
    } else {
        (settings.selector.clone().unwrap_or_default(), None)
    };
    let view = match settings.view {
        Some(listen) => {
            let view = start_view(listen, &bus, sim.as_ref(), None).await?;
            tracing::info!("live view: {}", view.url());
            Some(view)
        }
        None => None,
    };
    let supervisor = supervisor_options(&settings.command_tables, selector)?;
    let outcome = plugin::run(bus, supervisor, settings.behaviour, stop).await;
    if let Some(view) = view {
        view.shutdown().await;
    }
    outcome?;
    Ok(())
}
