//! `config`: the configuration in effect.

use anyhow::Result;
use clap::Args;
use dropbot_plugin::config::print;

use super::settings::SettingsArgs;

/// Arguments of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the configuration in effect (file, environment and these flags), secrets hidden,
    /// with where each value that is not the default came from. Without it, only check it.
    #[arg(long)]
    print: bool,
    #[command(flatten)]
    settings: SettingsArgs,
}

/// Loads (and so checks) the configuration; prints it with `--print`.
pub fn config(args: ConfigArgs) -> Result<()> {
    let loaded = args.settings.load()?;
    if args.print {
        print!("{}", print::effective(&loaded));
    } else {
        println!("configuration OK");
    }
    Ok(())
}
