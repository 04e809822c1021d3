//! `qnet`: the one binary of the quantum-internet emulator. The user commands live in
//! `qnet-controller`; `qnet broker` and `qnet node` are the roles the controller
//! starts as child processes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// qnet: a quantum-internet emulator. Every quantum node is its own process on a real
/// QUIC network; one broker holds the joint quantum state.
#[derive(Parser)]
#[command(name = "qnet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    User(qnet_controller::cli::Command),
    /// Role: serve the quantum state of a deployment (started by `qnet up`).
    #[command(hide = true)]
    Broker(qnet_broker::service::BrokerArgs),
    /// Role: run one quantum node (started by `qnet up`).
    #[command(hide = true)]
    Node(qnet_node::NodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::User(command) => qnet_controller::cli::main(command),
        Command::Broker(args) => qnet_broker::service::main(args),
        Command::Node(args) => qnet_node::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
