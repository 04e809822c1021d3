//! The user commands of `qnet`.

use std::path::PathBuf;

use clap::Subcommand;

/// User commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Work with topology files.
    Topo {
        /// What to do.
        #[command(subcommand)]
        command: TopoCommand,
    },
}

/// `qnet topo …`
#[derive(Subcommand, Debug)]
pub enum TopoCommand {
    /// Parse and validate a topology file and print its summary.
    Check {
        /// The topology file (TOML).
        file: PathBuf,
    },
}

/// Runs a user command.
pub fn main(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Topo {
            command: TopoCommand::Check { file },
        } => {
            let topology = qnet_common::topology::Topology::load(&file)?;
            print!("{}", topology.summary());
            Ok(())
        }
    }
}
