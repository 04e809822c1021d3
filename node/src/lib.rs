//! One qnet quantum node: a process with a classical QUIC endpoint (to its peers and
//! the controller) and a connection to the broker, through which alone it reaches
//! quantum state. It sees measurement outcomes, never amplitudes.
//!
//! # Layout
//! - [`broker_client`]: pipelined requests to the broker and its event stream.
//! - [`linklayer`]: the driver of each link's link-layer protocol, and the node's
//!   emulated clock.
//! - [`chaos`]: fibre latency and chaos faults on the node's outgoing traffic.
//! - [`peers`]: classical connections to other nodes, made on demand by name.
//! - [`apps`]: the applications the controller can run (EPR pairs, teleportation).
//! - [`admin`]: the controller's API on the node's endpoint.
//! - [`protocols`]: the sans-IO protocol state machines (the link layer).
//!
//! This crate does not depend on `qnet-broker`: the physics boundary is the wire.

pub mod admin;
pub mod apps;
pub mod broker_client;
pub mod chaos;
pub mod linklayer;
pub mod peers;
pub mod protocols;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use qnet_common::QubitId;
use qnet_common::rundir::{RunDir, ready_line};
use qnet_common::tls::{self, CertificateDer, Identity};
use qnet_common::topology::Topology;
use qnet_common::wire::{CloseCode, Event, RequestBody};
use tokio::sync::{Notify, oneshot, watch};

use crate::apps::AppMsg;
use crate::broker_client::BrokerClient;

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

/// Everything a node needs to run.
pub struct NodeConfig {
    /// This node's name.
    pub name: String,
    /// The network.
    pub topology: Topology,
    /// The node's certificate and key.
    pub identity: Identity,
    /// The deployment CA.
    pub ca: CertificateDer<'static>,
    /// The broker's address.
    pub broker: SocketAddr,
    /// Address of the classical endpoint.
    pub listen: SocketAddr,
}

impl NodeConfig {
    /// Loads the configuration from a run folder.
    pub fn from_args(args: &NodeArgs) -> anyhow::Result<NodeConfig> {
        let run_dir = RunDir::new(&args.run_dir);
        let topology = Topology::load(run_dir.topology())?;
        anyhow::ensure!(
            topology.node_index(&args.name).is_some(),
            "network {} has no node named {:?}",
            topology.name,
            args.name
        );
        Ok(NodeConfig {
            name: args.name.clone(),
            topology,
            identity: Identity::load(&run_dir.certs(), &args.name)?,
            ca: tls::load_ca_cert(&run_dir.certs())?,
            broker: args.broker,
            listen: args.listen,
        })
    }
}

/// Entry point of `qnet node`.
pub fn main(args: NodeArgs) -> anyhow::Result<()> {
    qnet_common::telemetry::init();
    let config = NodeConfig::from_args(&args)?;
    // One thread is plenty for a node and keeps a 100-node deployment light.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(
        config,
        |addr| println!("{}", ready_line("node", &args.name, addr)),
        qnet_common::telemetry::shutdown_signal(),
    ))
}

/// A pair delivered at this end of a peer's application run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Delivery {
    /// The local half, kept.
    Qubit(QubitId),
    /// The local half's measurement outcome.
    Outcome(u8),
}

/// A running node, shared by its tasks.
pub struct Node {
    name: String,
    topology: Topology,
    endpoint: quinn::Endpoint,
    broker: BrokerClient,
    peers: peers::Peers,
    /// Pairs delivered at this end for the peer's application runs and not yet
    /// claimed, by (peer, sequence number): a kept qubit or a measurement outcome.
    delivered: Mutex<HashMap<(usize, u64), Delivery>>,
    delivered_changed: Notify,
    /// Replies awaited by application runs, by run id.
    waiters: Mutex<HashMap<u64, oneshot::Sender<AppMsg>>>,
    next_run: AtomicU64,
    /// Qubits kept for the controller (teleported qubits, qubits that arrived).
    held: Mutex<HashSet<QubitId>>,
    stop: watch::Sender<bool>,
    /// Emulated time, synchronised with the broker at start.
    clock: linklayer::Clock,
    /// The link-layer driver of each neighbour, started on first use.
    links: Mutex<HashMap<String, linklayer::LinkHandle>>,
    /// Deliveries per peer, for consistency checks.
    link_log: linklayer::LinkLog,
    /// Purpose ids the link layer accepts from peers (`None`: all).
    purposes: Mutex<Option<Vec<u16>>>,
    /// Fibre latency and chaos faults on outgoing traffic.
    chaos: chaos::Chaos,
}

/// Runs a node until `shutdown` completes, the controller asks it to stop, or the
/// broker connection is lost. `on_ready` gets the classical endpoint's address.
pub async fn run(
    config: NodeConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = tls::server_config(&config.identity, &config.ca)?;
    let me = config
        .topology
        .node_index(&config.name)
        .expect("checked in NodeConfig::from_args");
    // Every datagram goes through the socket shim: the fibre's latency to each peer
    // and any chaos fault apply to real QUIC traffic.
    let (mut endpoint, shim) = qnet_common::shim::endpoint(
        Some(server),
        config.listen,
        config.topology.seed ^ me as u64,
    )
    .with_context(|| format!("cannot listen on {}", config.listen))?;
    let latency = qnet_common::shim::latency_table(&config.topology)
        .swap_remove(me)
        .into_iter()
        .enumerate()
        .map(|(j, d)| (config.topology.nodes[j].name.clone(), d))
        .collect();
    let chaos = chaos::Chaos::new(shim, latency);
    endpoint.set_default_client_config(tls::client_config(&config.identity, &config.ca)?);
    let addr = endpoint.local_addr()?;
    let (broker, events) = BrokerClient::connect(&endpoint, config.broker, &config.name).await?;
    broker
        .call(RequestBody::Announce {
            addr: addr.to_string(),
        })
        .await?;
    let emulated_now = match broker.call(RequestBody::Now).await? {
        qnet_common::wire::ResponseBody::Now { t_emu_ns } => t_emu_ns as f64 / 1e9,
        other => anyhow::bail!("unexpected answer to Now: {other:?}"),
    };
    let clock = linklayer::Clock::new(emulated_now, config.topology.time_scale);
    let (stop, mut stop_rx) = watch::channel(false);
    let node = Arc::new(Node {
        name: config.name,
        topology: config.topology,
        endpoint: endpoint.clone(),
        broker,
        peers: peers::Peers::default(),
        delivered: Mutex::default(),
        delivered_changed: Notify::new(),
        waiters: Mutex::default(),
        next_run: AtomicU64::new(1),
        held: Mutex::default(),
        stop,
        clock,
        links: Mutex::default(),
        link_log: linklayer::LinkLog::default(),
        purposes: Mutex::default(),
        chaos,
    });
    tokio::spawn(node.clone().handle_events(events));
    on_ready(addr);
    tracing::info!(node = %node.name, %addr, "node ready");

    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = stop_rx.changed() => break Ok(()),
            e = node.broker.closed() => {
                break Err(anyhow::anyhow!("lost the connection to the broker: {e}"));
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break Ok(()) };
                let node = node.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.serve_incoming(incoming).await {
                        tracing::debug!("incoming connection ended: {e:#}");
                    }
                });
            }
        }
    };
    tracing::info!(node = %node.name, "node shutting down");
    endpoint.close(CloseCode::Shutdown.into(), b"node shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

impl Node {
    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link-layer driver of the link to `peer`, started on first use.
    pub fn link(self: &Arc<Self>, peer: &str) -> anyhow::Result<linklayer::LinkHandle> {
        let mut links = self.links.lock().expect("links lock");
        if let Some(link) = links.get(peer) {
            return Ok(link.clone());
        }
        let link = linklayer::start(self, peer)?;
        let accepted = self.purposes.lock().expect("purposes lock").clone();
        link.send(linklayer::Input::SetPurposes(accepted));
        self.serve_link_apps(peer, &link);
        links.insert(peer.to_string(), link.clone());
        Ok(link)
    }

    async fn handle_events(
        self: Arc<Self>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                Event::PairsDelivered { peer, pairs } => {
                    let mut delivered = self.delivered.lock().expect("delivered lock");
                    for pair in pairs {
                        delivered.insert(
                            (self.peer_key(&peer), pair.seq),
                            Delivery::Qubit(pair.local),
                        );
                    }
                    drop(delivered);
                    self.delivered_changed.notify_waiters();
                }
                Event::QubitArrived { qubit, from, tag } => {
                    tracing::debug!(%qubit, %from, tag, "qubit arrived");
                    self.held.lock().expect("held lock").insert(qubit);
                }
                Event::Heralded {
                    peer,
                    label,
                    pair,
                    heralded_ns,
                } => match self.link(&peer) {
                    Ok(link) => link.send(linklayer::Input::Herald(
                        protocols::link::Herald {
                            label,
                            seq: pair.seq,
                            bell: pair.bell,
                            qubit: pair.local,
                            remote: pair.remote,
                            emitted: pair.created_ns as f64 / 1e9,
                        },
                        heralded_ns as f64 / 1e9,
                    )),
                    Err(e) => tracing::warn!(%peer, "herald for no link: {e:#}"),
                },
                Event::NodeLost { .. } => {}
            }
        }
    }

    /// Serves a connection made to this node: the controller's admin API, or a peer
    /// node's classical channel.
    async fn serve_incoming(self: Arc<Self>, incoming: quinn::Incoming) -> anyhow::Result<()> {
        let conn = incoming.await?;
        let identity = tls::peer_identity(&conn).unwrap_or_default();
        if identity == tls::CONTROLLER_IDENTITY {
            return admin::serve(self, conn).await;
        }
        if self.topology.node_index(&identity).is_none() {
            conn.close(
                CloseCode::NotAuthorised.into(),
                b"certificate names no node of this network",
            );
            anyhow::bail!("refused {identity:?}");
        }
        self.accept_peer(conn, identity).await
    }

    /// The key of a peer in per-peer tables (its index in the topology).
    fn peer_key(&self, peer: &str) -> usize {
        self.topology.node_index(peer).unwrap_or(usize::MAX)
    }

    /// Records a pair delivered for one of the peer's application runs.
    fn store_delivery(&self, peer: &str, seq: u64, delivery: Delivery) {
        let key = (self.peer_key(peer), seq);
        self.delivered
            .lock()
            .expect("delivered lock")
            .insert(key, delivery);
        self.delivered_changed.notify_waiters();
    }

    /// Waits until the pairs `seqs` made with `peer` are delivered here, then claims
    /// them (in the order asked).
    async fn claim_pairs(
        &self,
        peer: &str,
        seqs: &[u64],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let peer_key = self.peer_key(peer);
        loop {
            let notified = self.delivered_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut delivered = self.delivered.lock().expect("delivered lock");
                if seqs.iter().all(|s| delivered.contains_key(&(peer_key, *s))) {
                    return Ok(seqs
                        .iter()
                        .map(|s| delivered.remove(&(peer_key, *s)).expect("checked above"))
                        .collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!("pairs from {peer} were not delivered within {timeout:?}");
            }
        }
    }
}
