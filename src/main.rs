//! `dropbot-plugin`: a MicroDrop 3 process plugin for the DropBot DMF control board.
//! See `README.md`; `dropbot-plugin --help` lists the subcommands.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    // One runtime worker, and everything spawned on it: the bus, the main loop, the supervisor
    // and a simulated board hand over to each other on one thread instead of waking the other
    // CPU. The work that must not wait for them has a thread of its own (the actuation engine,
    // the port's reader, the run record writer, the embedded broker) or goes to the blocking
    // pool (device models, opening ports). Two workers cost a request up to 10 % at the
    // median here (`docs/benchmarks.md`, "One runtime worker").
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async { tokio::spawn(cli::run(args)).await? })
}
