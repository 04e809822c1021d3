//! `qnet`: the one binary of the quantum-internet emulator. User commands (`topo`, and
//! the deployment commands as they land) and the role commands the controller starts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// qnet: a quantum-internet emulator.
#[derive(Parser)]
#[command(name = "qnet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with topology files.
    Topo {
        #[command(subcommand)]
        command: TopoCommand,
    },
}

#[derive(Subcommand)]
enum TopoCommand {
    /// Parse and validate a topology file and print its summary.
    Check {
        /// The topology file (TOML).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topo {
            command: TopoCommand::Check { file },
        } => {
            let topology = qnet_common::topology::Topology::load(&file)?;
            print!("{}", topology.summary());
            Ok(())
        }
    }
}
