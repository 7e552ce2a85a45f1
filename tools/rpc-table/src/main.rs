//! `rpc-table`: derive a command table from a firmware build's headers and print it as TOML.
//!
//! ```text
//! rpc-table --base-node-rpc DIR --node-h Node.h --firmware-version 1.73.6 --firmware-version 1.74.0 \
//!     --description "..." --source "..." > table.toml
//! rpc-table --class BaseNode=BaseNode.h --class 'my::Node'=Node.h --firmware-version 1.0
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use rpc_table::table::{to_toml, TableInfo};
use rpc_table::{derive, ClassSource, DeriveError, Overloads, DROPBOT_CLASSES};

/// Derive a DropBot command table from the firmware's C++ headers.
#[derive(Debug, Parser)]

struct Args {
    /// base-node-rpc's header folder (`lib/BaseNodeRpc/src/BaseNodeRpc`) of a DropBot build.
    #[arg(long, requires = "node_h")]
    base_node_rpc: Option<PathBuf>,
    /// dropbot.py's `src/Node.h` of the same build.
    #[arg(long)]
    node_h: Option<PathBuf>,
    /// Instead: each class of the build in build order, as `CLASS=HEADER`.
    #[arg(
        long = "class",
        value_name = "CLASS=HEADER",
        conflicts_with = "base_node_rpc"
    )]
    classes: Vec<String>,
    /// A firmware version the table serves (repeat for several).
    #[arg(long = "firmware-version", required = true)]
    versions: Vec<String>,
    /// Which generator's rule for names overloaded in their last class.
    #[arg(long, value_enum, default_value = "drop")]
    overloads: OverloadRule,
    /// The table's description.
    #[arg(long, default_value = "DropBot firmware")]
    description: String,
    /// Where the headers come from (repositories, tags).
    #[arg(long, default_value = "")]
    source: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OverloadRule {
    /// sci-bots/arduino-rpc: dropped.
    Drop,
    /// AlexSklav/arduino-rpc (the Blue-Ocean fork's builds): kept.
    Keep,
}

fn read(class: &str, path: &Path) -> Result<ClassSource, DeriveError> {
    let header_text = std::fs::read_to_string(path).map_err(|source| DeriveError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(ClassSource {
        class: class.to_owned(),
        header_name: path.display().to_string(),
        header_text,
    })
}

fn run(args: &Args) -> Result<String, String> {
    let pairs: Vec<(String, PathBuf)> = match (&args.base_node_rpc, &args.node_h) {
        (Some(dir), Some(node_h)) => DROPBOT_CLASSES
            .iter()
            .map(|(class, header)| {
                let path = if *header == "Node.h" {
                    node_h.clone()
                } else {
                    dir.join(header)
                };
                ((*class).to_owned(), path)
            })
            .collect(),
        _ if !args.classes.is_empty() => args
            .classes
            .iter()
            .map(|spec| {
                spec.split_once('=')
                    .map(|(c, h)| (c.to_owned(), PathBuf::from(h)))
                    .ok_or_else(|| format!("`{spec}` is not CLASS=HEADER"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("give --base-node-rpc DIR --node-h FILE, or --class CLASS=HEADER".into()),
    };
    let sources = pairs
        .iter()
        .map(|(class, path)| read(class, path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let overloads = match args.overloads {
        OverloadRule::Drop => Overloads::Drop,
        OverloadRule::Keep => Overloads::Keep,
    };
    let codes = derive(&sources, overloads).map_err(|e| e.to_string())?;
    let info = TableInfo {
        description: args.description.clone(),
        source: args.source.clone(),
        firmware_versions: args.versions.clone(),
    };
    Ok(to_toml(&info, &codes))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-table: {e}");
            ExitCode::FAILURE
        }
    }
}
