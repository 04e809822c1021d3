//! One qnet quantum node.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `qnet node`: started by `qnet up`, not by hand.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The deployment's run folder.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// This node's name in the topology.
    #[arg(long)]
    pub name: String,
    /// The broker's address.
    #[arg(long)]
    pub broker: SocketAddr,
    /// Address of the classical endpoint.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Entry point of `qnet node`.
pub fn main(args: NodeArgs) -> anyhow::Result<()> {
    anyhow::bail!("node {} not implemented yet", args.name)
}
