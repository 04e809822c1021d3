//! The broker process: the engine served over QUIC with mutual TLS.
//!
//! Every connection is authenticated by its certificate: a node's identity is the
//! name in its certificate, the controller's is `controller`. The client opens a
//! control stream (hello, then pipelined requests and in-order responses); the broker
//! opens a one-way event stream back. One actor task owns the engine
//! ([`crate::actor`]); connection tasks only move frames.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use qnet_common::rundir::{RunDir, ready_line};
use qnet_common::tls::CertificateDer;
use qnet_common::tls::{self, Identity, TransportOptions};
use qnet_common::topology::Topology;
use qnet_common::wire::{
    CloseCode, Event, FrameReader, FrameWriter, Request, Response, Role, WireError,
};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::actor::{Actor, Cmd, Peer};

/// `qnet broker`: started by `qnet up`, not by hand.
#[derive(clap::Args, Debug)]
pub struct BrokerArgs {
    /// The deployment's run folder (topology copy and certificates).
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seconds of silence after which a node's connection (and its qubits) is lost.
    #[arg(long, default_value_t = 3.0)]
    pub idle_timeout: f64,
}

/// Everything the broker needs to run.
pub struct BrokerConfig {
    /// The network.
    pub topology: Topology,
    /// The broker's certificate and key.
    pub identity: Identity,
    /// The deployment CA.
    pub ca: CertificateDer<'static>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Idle timeout of connections.
    pub idle_timeout: Duration,
}

impl BrokerConfig {
    /// Loads the configuration from a run folder.
    pub fn from_args(args: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
        let run_dir = RunDir::new(&args.run_dir);
        if !(args.idle_timeout > 0.0 && args.idle_timeout.is_finite()) {
            anyhow::bail!("--idle-timeout must be a positive number of seconds");
        }
        Ok(BrokerConfig {
            topology: Topology::load(run_dir.topology())?,
            identity: Identity::load(&run_dir.certs(), tls::BROKER_IDENTITY)?,
            ca: tls::load_ca_cert(&run_dir.certs())?,
            listen: args.listen,
            idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        })
    }
}

/// Entry point of `qnet broker`.
pub fn main(args: BrokerArgs) -> anyhow::Result<()> {
    qnet_common::telemetry::init();
    let config = BrokerConfig::from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(
        config,
        |addr| {
            println!("{}", ready_line("broker", tls::BROKER_IDENTITY, addr));
        },
        qnet_common::telemetry::shutdown_signal(),
    ))
}

/// Runs the broker until `shutdown` completes or the controller asks it to stop.
/// `on_ready` is called with the bound address once it accepts connections.
pub async fn run(
    config: BrokerConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let options = TransportOptions {
        idle_timeout: config.idle_timeout,
        keep_alive: config.idle_timeout / 3,
        ..TransportOptions::default()
    };
    let server = tls::server_config_with(&config.identity, &config.ca, &options)?;
    let endpoint = quinn::Endpoint::server(server, config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel();
    let actor = Actor::new(config.topology.clone(), stop_tx)?;
    let actor_task = tokio::spawn(actor.run(rx));
    let topology = std::sync::Arc::new(config.topology);
    on_ready(endpoint.local_addr()?);
    tracing::info!(addr = %endpoint.local_addr()?, network = %topology.name, "broker ready");

    tokio::pin!(shutdown);
    let connections = AtomicU64::new(0);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = stop_rx.changed() => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let conn_id = connections.fetch_add(1, Ordering::Relaxed);
                let tx = tx.clone();
                let topology = topology.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(incoming, conn_id, topology, tx).await {
                        tracing::debug!(conn = conn_id, "connection ended: {e:#}");
                    }
                }.instrument(tracing::info_span!("conn", conn = conn_id)));
            }
        }
    }
    tracing::info!("broker shutting down");
    endpoint.close(CloseCode::Shutdown.into(), b"broker shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    drop(tx);
    actor_task.abort();
    Ok(())
}

async fn serve_connection(
    incoming: quinn::Incoming,
    conn_id: u64,
    topology: std::sync::Arc<Topology>,
    actor: mpsc::UnboundedSender<Cmd>,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let identity = tls::peer_identity(&conn).unwrap_or_default();
    let peer = if identity == tls::CONTROLLER_IDENTITY {
        Peer::Controller
    } else if let Some(i) = topology.node_index(&identity) {
        Peer::Node(topology.nodes[i].id)
    } else {
        close(
            &conn,
            CloseCode::NotAuthorised,
            "certificate names no node of this network",
        );
        anyhow::bail!("refused {identity:?}: not a node of this network");
    };
    tracing::debug!(peer = %identity, "connection authenticated");

    let (send, recv) = conn.accept_bi().await?;
    let mut reader = FrameReader::new(recv);
    let mut writer = FrameWriter::new(send);
    let hello = match reader.read_hello().await {
        Ok(h) => h,
        Err(e) => return Err(refuse(&conn, e)),
    };
    let role_ok = match (&hello.role, &peer) {
        (Role::Controller, Peer::Controller) => true,
        (Role::Node(name), Peer::Node(_)) => *name == identity,
        _ => false,
    };
    if !role_ok {
        close(
            &conn,
            CloseCode::NotAuthorised,
            "hello role does not match the certificate",
        );
        anyhow::bail!(
            "hello role {:?} does not match certificate {identity}",
            hello.role
        );
    }
    writer.write_hello(Role::Broker).await?;

    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let events = conn.open_uni().await?;
    tokio::spawn(pump_events(events, event_rx));
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    tokio::spawn(pump_responses(writer, reply_rx));
    actor.send(Cmd::Connected {
        peer: peer.clone(),
        conn: conn_id,
        events: event_tx,
    })?;

    let result = loop {
        tokio::select! {
            frame = reader.read::<Request>() => match frame {
                Ok(Some(request)) => {
                    if actor.send(Cmd::Request { peer: peer.clone(), request, reply: reply_tx.clone() }).is_err() {
                        break Ok(());
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(refuse(&conn, e)),
            },
            e = conn.closed() => break Err(e.into()),
        }
    };
    let _ = actor.send(Cmd::Disconnected {
        peer,
        conn: conn_id,
    });
    result
}

/// Closes a connection whose stream can no longer be trusted and says why.
fn refuse(conn: &quinn::Connection, e: WireError) -> anyhow::Error {
    tracing::warn!("closing connection: {e}");
    close(conn, e.close_code(), &e.to_string());
    e.into()
}

fn close(conn: &quinn::Connection, code: CloseCode, reason: &str) {
    conn.close(code.into(), reason.as_bytes());
}

/// Writes responses in order, one write for everything that is ready.
async fn pump_responses(
    mut writer: FrameWriter<quinn::SendStream>,
    mut rx: mpsc::UnboundedReceiver<Response>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(response) = next {
            if writer.queue(&response).is_err() {
                tracing::error!("response too large to send");
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}

async fn pump_events(stream: quinn::SendStream, mut rx: mpsc::UnboundedReceiver<Event>) {
    let mut writer = FrameWriter::new(stream);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(event) = next {
            if writer.queue(&event).is_err() {
                tracing::error!("event too large to send");
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}
