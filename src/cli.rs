//! Command line: `run`, `demo`, `simulate`, `ports`, `check`, `config`, `plot`. The only place (with
//! `main.rs`) that uses `anyhow`. Each subcommand lives in its own file under `cli/`.

mod board;
mod common;
mod config;
mod demo;
mod plot;
mod run;
mod settings;
mod simulate;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// MicroDrop 3 process plugin for the DropBot digital-microfluidics control board.
#[derive(Debug, Parser)]
#[command(name = "dropbot-plugin", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr [default: `log.format` of the configuration, else text]
    /// (`RUST_LOG` sets the levels, e.g. `debug`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald, log shippers).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the plugin: connect to MicroDrop's broker and to the board.
    Run(run::RunArgs),
    /// All on this machine: an embedded broker on MicroDrop's ports, a simulated board, the plugin.
    Demo(demo::DemoArgs),
    /// A simulated DropBot on a pseudo-terminal, linked at a fixed path.
    Simulate(simulate::SimulateArgs),
    /// List USB serial ports (DropBots show as 16c0:0483).
    Ports(board::PortsArgs),
    /// Bring-up report of a board: identity, table, readings, timing (turns nothing on unless
    /// asked with --actuate).
    Check(board::CheckArgs),
    /// Check the configuration (file, environment, flags); `--print` shows it.
    Config(config::ConfigArgs),
    /// Draw a run record (CSV) as a PNG: capacitance, coverage, voltage, phases.
    Plot(plot::PlotArgs),
}

/// Set up `tracing` on stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            dropbot_plugin::broker::LOG_FILTER_DIRECTIVE
                .parse()
                .unwrap_or_default(),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Run the chosen subcommand.
pub async fn run(cli: Cli) -> Result<()> {
    let log = cli.log_format;
    match cli.command {
        Command::Run(args) => {
            // The configuration first: it may choose the log format.
            let loaded = args.settings.load()?;
            let settings = dropbot_plugin::config::Settings::from_loaded(&loaded)?;
            let format = log.unwrap_or(match settings.log_format {
                dropbot_plugin::config::LogFormat::Text => LogFormat::Text,
                dropbot_plugin::config::LogFormat::Json => LogFormat::Json,
            });
            init_logging(format);
            run::run_plugin(args, settings).await
        }
        command => {
            init_logging(log.unwrap_or(LogFormat::Text));
            match command {
                Command::Run(_) => Ok(()),
                Command::Demo(args) => demo::demo(args).await,
                Command::Simulate(args) => Ok(simulate::run_simulate(args).await?),
                Command::Ports(args) => board::ports(args).await,
                Command::Check(args) => board::check(args).await,
                Command::Config(args) => config::config(args),
                Command::Plot(args) => plot::plot(&args),
            }
        }
    }
}
