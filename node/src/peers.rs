//! Classical channels between nodes: one QUIC connection per peer, made on demand
//! (the peer's address comes from the broker's directory) and made again after a
//! failure. Each carries one bidirectional stream of [`Classical`] frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use qnet_common::wire::{Classical, FrameReader, FrameWriter, RequestBody, ResponseBody, Role};
use tokio::sync::mpsc;

use crate::Node;

/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The open classical channels, by peer name.
#[derive(Default)]
pub struct Peers {
    senders: Mutex<HashMap<String, mpsc::UnboundedSender<Classical>>>,
}

impl Peers {
    fn get(&self, peer: &str) -> Option<mpsc::UnboundedSender<Classical>> {
        let senders = self.senders.lock().expect("peers lock");
        senders.get(peer).filter(|tx| !tx.is_closed()).cloned()
    }

    fn insert(&self, peer: &str, tx: mpsc::UnboundedSender<Classical>) {
        self.senders
            .lock()
            .expect("peers lock")
            .insert(peer.to_string(), tx);
    }

    /// Forgets the channel `tx` to `peer` (if it is still the current one), so the
    /// next message makes a new connection.
    /// Returns true if it was the current channel.
    fn remove(&self, peer: &str, tx: &mpsc::UnboundedSender<Classical>) -> bool {
        let mut senders = self.senders.lock().expect("peers lock");
        if senders.get(peer).is_some_and(|t| t.same_channel(tx)) {
            senders.remove(peer);
            return true;
        }
        false
    }

    /// Names of peers with an open channel.
    pub fn connected(&self) -> Vec<String> {
        let senders = self.senders.lock().expect("peers lock");
        let mut names: Vec<String> = senders
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }
}

impl Node {
    /// Sends a classical message to `peer` without waiting: at once on an open
    /// channel, else from a task that connects first. A failed connection tells the
    /// link layer that the peer is lost.
    pub fn post_classical(self: &Arc<Self>, peer: &str, msg: Classical) {
        if let Some(tx) = self.peers.get(peer)
            && tx.send(msg.clone()).is_ok()
        {
            return;
        }
        let node = self.clone();
        let peer = peer.to_string();
        tokio::spawn(async move {
            if let Err(e) = node.send_classical(&peer, msg).await {
                tracing::warn!(%peer, "classical message lost: {e:#}");
                node.peer_lost(&peer);
            }
        });
    }

    /// The classical channel to `peer` is gone: its link layer must know.
    fn peer_lost(&self, peer: &str) {
        let link = self.links.lock().expect("links lock").get(peer).cloned();
        if let Some(link) = link {
            link.send(crate::linklayer::Input::PeerLost);
        }
    }

    /// Where `peer`'s classical endpoint listens, from the broker's directory.
    pub(crate) async fn lookup(&self, peer: &str) -> anyhow::Result<SocketAddr> {
        let request = RequestBody::Lookup {
            name: peer.to_string(),
        };
        let addr = match self.broker.call(request).await? {
            ResponseBody::Address(a) => a,
            other => anyhow::bail!("unexpected directory answer {other:?}"),
        };
        addr.parse()
            .with_context(|| format!("bad address {addr:?} for {peer}"))
    }

    /// Sends a classical message to `peer`, connecting first if needed.
    pub async fn send_classical(
        self: &Arc<Self>,
        peer: &str,
        msg: Classical,
    ) -> anyhow::Result<()> {
        let tx = match self.peers.get(peer) {
            Some(tx) => tx,
            None => self.connect_peer(peer).await?,
        };
        tx.send(msg)
            .map_err(|_| anyhow::anyhow!("the classical channel to {peer} closed"))
    }

    async fn connect_peer(
        self: &Arc<Self>,
        peer: &str,
    ) -> anyhow::Result<mpsc::UnboundedSender<Classical>> {
        let addr = self.lookup(peer).await?;
        self.chaos.peer_at(peer, addr);
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(addr, peer)?)
            .await
            .with_context(|| format!("timed out connecting to {peer} at {addr}"))?
            .with_context(|| format!("cannot connect to {peer} at {addr}"))?;
        let (send, recv) = conn.open_bi().await?;
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv);
        writer.write_hello(Role::Node(self.name.clone())).await?;
        let hello = reader.read_hello().await?;
        anyhow::ensure!(
            hello.role == Role::Node(peer.to_string()),
            "{peer} answered as {:?}",
            hello.role
        );
        Ok(self.start_channel(conn, peer.to_string(), reader, writer))
    }

    /// Accepts a classical channel that `peer` (named by its certificate) opened.
    pub(crate) async fn accept_peer(
        self: Arc<Self>,
        conn: quinn::Connection,
        peer: String,
    ) -> anyhow::Result<()> {
        self.chaos.peer_at(&peer, conn.remote_address());
        let result = self.accept_peer_inner(&conn, peer).await;
        if let Err(e) = &result
            && let Some(wire) = e.downcast_ref::<qnet_common::wire::WireError>()
        {
            conn.close(wire.close_code().into(), wire.to_string().as_bytes());
        }
        result
    }

    async fn accept_peer_inner(
        self: Arc<Self>,
        conn: &quinn::Connection,
        peer: String,
    ) -> anyhow::Result<()> {
        let (send, recv) = conn.accept_bi().await?;
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv);
        let hello = reader.read_hello().await?;
        if hello.role != Role::Node(peer.clone()) {
            conn.close(
                qnet_common::wire::CloseCode::NotAuthorised.into(),
                b"hello role does not match the certificate",
            );
            anyhow::bail!("{peer} said it was {:?}", hello.role);
        }
        writer.write_hello(Role::Node(self.name.clone())).await?;
        self.start_channel(conn.clone(), peer, reader, writer);
        Ok(())
    }

    fn start_channel(
        self: &Arc<Self>,
        conn: quinn::Connection,
        peer: String,
        mut reader: FrameReader<quinn::RecvStream>,
        mut writer: FrameWriter<quinn::SendStream>,
    ) -> mpsc::UnboundedSender<Classical> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Classical>();
        self.peers.insert(&peer, tx.clone());
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(msg) = next {
                    if let Err(e) = writer.queue(&msg) {
                        tracing::warn!("classical message not sent: {e}");
                    }
                    next = rx.try_recv().ok();
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
            drop(conn);
        });
        let node = self.clone();
        let current = tx.clone();
        tokio::spawn(async move {
            loop {
                match reader.read::<Classical>().await {
                    Ok(Some(msg)) => node.on_classical(&peer, msg),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, "classical channel broken: {e}");
                        break;
                    }
                }
            }
            if node.peers.remove(&peer, &current) {
                node.peer_lost(&peer);
            }
        });
        tx
    }
}
