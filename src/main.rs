//! `dropbot-plugin`: a MicroDrop 3 process plugin for the DropBot DMF control board.
//! See `README.md`; `dropbot-plugin --help` lists the subcommands.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(cli::run(args))
}
