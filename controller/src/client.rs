//! Async clients for the controller's two admin APIs: the broker's (oracle, stats,
//! shutdown) and each node's (run a workload, free qubits, status, shutdown).
//!
//! A [`Session`] holds one QUIC endpoint with the controller's certificate; every
//! connection of a command goes through it. [`BrokerAdmin`] and [`NodeAdmin`] each
//! own one connection and its control stream. Connecting has a deadline
//! ([`CONNECT_TIMEOUT`]) and failures name who could not be reached, where, and why.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use qnet_common::rundir::RunDir;
use qnet_common::tls::{self, BROKER_IDENTITY, CONTROLLER_IDENTITY, Identity};
use qnet_common::wire::{
    CloseCode, ErrorBody, Event, FrameReader, FrameWriter, NodeRequest, NodeRequestBody,
    NodeResponse, NodeResponseBody, Request, RequestBody, Response, ResponseBody, Role,
};

use crate::record::Deployment;

/// How long connecting (QUIC handshake and hellos) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes a command runs at once when it talks to many processes (`down`,
/// `status --probe`). A hundred simultaneous handshakes overflow the UDP receive
/// buffer of one socket; a lost Initial packet then costs a ~1 s retransmission.
pub const MAX_CONCURRENT_CONNECTS: usize = 16;

/// Requests pipelined per write by [`BrokerAdmin::pipeline`].
const PIPELINE_CHUNK: usize = 1024;

/// The controller's QUIC endpoint for one command.
#[derive(Debug)]
pub struct Session {
    endpoint: quinn::Endpoint,
}

impl Session {
    /// An endpoint presenting the controller certificate of `run_dir`, trusting its
    /// deployment CA.
    pub fn new(run_dir: &RunDir) -> anyhow::Result<Session> {
        Session::for_family(run_dir, false)
    }

    fn for_family(run_dir: &RunDir, v6: bool) -> anyhow::Result<Session> {
        let certs = run_dir.certs();
        let identity = Identity::load(&certs, CONTROLLER_IDENTITY)
            .context("cannot load the controller's certificate")?;
        let ca = tls::load_ca_cert(&certs).context("cannot load the deployment CA")?;
        let config = tls::client_config(&identity, &ca)?;
        let bind: SocketAddr = if v6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).context("cannot open a UDP socket for QUIC")?;
        endpoint.set_default_client_config(config);
        Ok(Session { endpoint })
    }

    /// Connects to `addr`, expecting the certificate `server_name`, within
    /// [`CONNECT_TIMEOUT`]; opens the control stream and swaps hellos. `what` names
    /// the peer in errors ("broker", "node bob").
    async fn open(
        &self,
        what: &str,
        server_name: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<(
        quinn::Connection,
        FrameReader<quinn::RecvStream>,
        FrameWriter<quinn::SendStream>,
        Role,
    )> {
        let attempt = async {
            let conn = self.endpoint.connect(addr, server_name)?.await?;
            let (send, recv) = conn.open_bi().await?;
            let mut writer = FrameWriter::new(send);
            let mut reader = FrameReader::new(recv);
            writer.write_hello(Role::Controller).await?;
            let hello = reader.read_hello().await?;
            anyhow::Ok((conn, reader, writer, hello.role))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(e)) => Err(anyhow!("cannot reach {what} at {addr}: {e:#}")),
            Err(_) => Err(anyhow!(
                "cannot reach {what} at {addr}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// Connects to the broker at `addr`.
    pub async fn broker(&self, addr: SocketAddr) -> anyhow::Result<BrokerAdmin> {
        let (conn, reader, writer, role) = self.open("the broker", BROKER_IDENTITY, addr).await?;
        if role != Role::Broker {
            conn.close(CloseCode::ProtocolViolation.into(), b"expected the broker");
            bail!("the process at {addr} is not the broker (it says {role:?})");
        }
        // Drain the event stream (NodeLost notices) so it never holds flow control.
        let events = conn.clone();
        tokio::spawn(async move {
            if let Ok(recv) = events.accept_uni().await {
                let mut reader = FrameReader::new(recv);
                while let Ok(Some(event)) = reader.read::<Event>().await {
                    tracing::debug!(?event, "broker event");
                }
            }
        });
        Ok(BrokerAdmin {
            conn,
            reader,
            writer,
            next_id: 1,
            addr,
        })
    }

    /// Connects to node `name` at `addr`.
    pub async fn node(&self, name: &str, addr: SocketAddr) -> anyhow::Result<NodeAdmin> {
        let what = format!("node {name}");
        let (conn, reader, writer, role) = self.open(&what, name, addr).await?;
        if role != Role::Node(name.to_owned()) {
            conn.close(CloseCode::ProtocolViolation.into(), b"unexpected role");
            bail!("the process at {addr} is not node {name} (it says {role:?})");
        }
        Ok(NodeAdmin {
            name: name.to_owned(),
            conn,
            reader,
            writer,
            next_id: 1,
            addr,
        })
    }

    /// Closes every connection and gives the endpoint a moment to tell the peers, so
    /// they do not wait for an idle timeout.
    pub async fn close(self) {
        self.endpoint.close(CloseCode::Done.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_millis(100), self.endpoint.wait_idle()).await;
    }
}

/// A connection to the broker's admin API.
#[derive(Debug)]
pub struct BrokerAdmin {
    conn: quinn::Connection,
    reader: FrameReader<quinn::RecvStream>,
    writer: FrameWriter<quinn::SendStream>,
    next_id: u64,
    addr: SocketAddr,
}

impl BrokerAdmin {
    /// Connects to the broker of the deployment in `run_dir` with a session of its
    /// own. Returns the session too: keep it alive as long as the connection.
    pub async fn connect(run_dir: &RunDir) -> anyhow::Result<(Session, BrokerAdmin)> {
        let deployment = Deployment::load(run_dir)?;
        let addr = deployment
            .broker()
            .and_then(|b| b.addr)
            .ok_or_else(|| anyhow!("the deployment has no broker address"))?;
        let session = Session::for_family(run_dir, addr.is_ipv6())?;
        let admin = session.broker(addr).await?;
        Ok((session, admin))
    }

    /// Sends one request and waits for its answer.
    pub async fn request(&mut self, body: RequestBody) -> anyhow::Result<ResponseBody> {
        let mut answers = self.pipeline(vec![body]).await?;
        answers
            .pop()
            .expect("one answer per request")
            .map_err(|e| anyhow!("broker refused: {e}"))
    }

    /// Sends every request without waiting (in chunks of a single write each) while
    /// reading the answers; returns them in request order.
    pub async fn pipeline(
        &mut self,
        bodies: Vec<RequestBody>,
    ) -> anyhow::Result<Vec<Result<ResponseBody, ErrorBody>>> {
        let first = self.next_id;
        let count = bodies.len();
        self.next_id += count as u64;
        let addr = self.addr;
        let (writer, reader) = (&mut self.writer, &mut self.reader);
        let send = async {
            let mut id = first;
            for chunk in bodies.chunks(PIPELINE_CHUNK) {
                for body in chunk {
                    writer.queue(&Request {
                        id,
                        body: body.clone(),
                    })?;
                    id += 1;
                }
                writer.flush().await?;
            }
            anyhow::Ok(())
        };
        let receive = async {
            let mut answers: Vec<Option<Result<ResponseBody, ErrorBody>>> = vec![None; count];
            for _ in 0..count {
                let response: Response = reader
                    .read()
                    .await?
                    .ok_or_else(|| anyhow!("the broker closed the connection"))?;
                let slot = response
                    .id
                    .checked_sub(first)
                    .and_then(|i| answers.get_mut(i as usize))
                    .ok_or_else(|| {
                        anyhow!("the broker answered unknown request {}", response.id)
                    })?;
                *slot = Some(response.body);
            }
            anyhow::Ok(answers)
        };
        let (sent, received) = tokio::join!(send, receive);
        sent.with_context(|| format!("lost the broker at {addr}"))?;
        let answers = received.with_context(|| format!("lost the broker at {addr}"))?;
        answers
            .into_iter()
            .map(|a| a.ok_or_else(|| anyhow!("the broker answered a request twice")))
            .collect()
    }

    /// Asks the broker to shut down.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.request(RequestBody::Shutdown).await.map(|_| ())
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(CloseCode::Done.into(), b"done");
    }
}

/// A connection to one node's admin API.
#[derive(Debug)]
pub struct NodeAdmin {
    name: String,
    conn: quinn::Connection,
    reader: FrameReader<quinn::RecvStream>,
    writer: FrameWriter<quinn::SendStream>,
    next_id: u64,
    addr: SocketAddr,
}

impl NodeAdmin {
    /// Connects to node `name` of the deployment in `run_dir` with a session of its
    /// own. Returns the session too: keep it alive as long as the connection.
    pub async fn connect(run_dir: &RunDir, name: &str) -> anyhow::Result<(Session, NodeAdmin)> {
        let deployment = Deployment::load(run_dir)?;
        let addr = deployment
            .process(name)
            .filter(|p| p.role == crate::record::ProcessRole::Node)
            .ok_or_else(|| anyhow!("unknown node: {name}"))?
            .addr
            .ok_or_else(|| anyhow!("node {name} has no address (it never became ready)"))?;
        let session = Session::for_family(run_dir, addr.is_ipv6())?;
        let admin = session.node(name, addr).await?;
        Ok((session, admin))
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one request and waits for its answer; a node's refusal becomes an error
    /// carrying the node's one-line reason.
    pub async fn request(&mut self, body: NodeRequestBody) -> anyhow::Result<NodeResponseBody> {
        let id = self.next_id;
        self.next_id += 1;
        let name = &self.name;
        let addr = self.addr;
        self.writer
            .write(&NodeRequest { id, body })
            .await
            .with_context(|| format!("lost node {name} at {addr}"))?;
        loop {
            let response: NodeResponse = self
                .reader
                .read()
                .await
                .with_context(|| format!("lost node {name} at {addr}"))?
                .ok_or_else(|| anyhow!("node {name} closed the connection"))?;
            if response.id == id {
                return response.body.map_err(|e| anyhow!("node {name}: {e}"));
            }
            tracing::debug!(id = response.id, "stray answer from node {name}");
        }
    }

    /// Asks the node to shut down.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.request(NodeRequestBody::Shutdown).await.map(|_| ())
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(CloseCode::Done.into(), b"done");
    }
}
