//! The node's connection to the broker: pipelined requests matched by id, and the
//! stream of events the broker pushes.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use qnet_common::tls;
use qnet_common::wire::{
    ErrorBody, Event, FrameReader, FrameWriter, Request, RequestBody, Response, ResponseBody, Role,
};
use tokio::sync::{mpsc, oneshot};

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The broker refused the request.
    #[error(transparent)]
    Refused(#[from] ErrorBody),
    /// The connection to the broker is gone.
    #[error("the connection to the broker is lost")]
    Lost,
    /// The broker answered with a response of the wrong kind.
    #[error("unexpected response from the broker: {0}")]
    Unexpected(String),
}

type Reply = oneshot::Sender<Result<ResponseBody, ErrorBody>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;

/// A pipelining client of the broker. Calls are sent in the order they are made
/// (so gates on one qubit apply in program order) and may be awaited in any order.
pub struct BrokerClient {
    tx: mpsc::UnboundedSender<(Request, Reply)>,
    next_id: AtomicU64,
    conn: quinn::Connection,
}

impl BrokerClient {
    /// Connects to the broker as node `name` and returns the client and the broker's
    /// event stream.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        name: &str,
    ) -> anyhow::Result<(BrokerClient, mpsc::UnboundedReceiver<Event>)> {
        let conn = endpoint
            .connect(addr, tls::BROKER_IDENTITY)?
            .await
            .with_context(|| format!("cannot reach the broker at {addr}"))?;
        let (send, recv) = conn.open_bi().await?;
        let mut writer = FrameWriter::new(send);
        let mut reader = FrameReader::new(recv);
        writer.write_hello(Role::Node(name.to_string())).await?;
        let hello = reader.read_hello().await?;
        anyhow::ensure!(
            hello.role == Role::Broker,
            "the broker answered as {:?}",
            hello.role
        );

        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_requests(writer, rx, pending.clone()));
        tokio::spawn(read_responses(reader, pending));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_events(conn.clone(), event_tx));
        Ok((
            BrokerClient {
                tx,
                next_id: AtomicU64::new(1),
                conn,
            },
            event_rx,
        ))
    }

    /// Sends a request now and returns a future of its response.
    pub fn call(
        &self,
        body: RequestBody,
    ) -> impl Future<Output = Result<ResponseBody, CallError>> + Send + 'static {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.send((Request { id, body }, reply)).is_ok();
        async move {
            if !sent {
                return Err(CallError::Lost);
            }
            match rx.await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(e)) => Err(CallError::Refused(e)),
                Err(_) => Err(CallError::Lost),
            }
        }
    }

    /// Completes when the connection to the broker ends.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.conn.closed().await
    }
}

async fn write_requests(
    mut writer: FrameWriter<quinn::SendStream>,
    mut rx: mpsc::UnboundedReceiver<(Request, Reply)>,
    pending: Pending,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some((request, reply)) = next {
            match writer.queue(&request) {
                Ok(()) => {
                    pending
                        .lock()
                        .expect("pending lock")
                        .insert(request.id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(ErrorBody::BadRequest(e.to_string())));
                }
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            break;
        }
    }
    pending.lock().expect("pending lock").clear();
}

async fn read_responses(mut reader: FrameReader<quinn::RecvStream>, pending: Pending) {
    while let Ok(Some(response)) = reader.read::<Response>().await {
        let reply = pending.lock().expect("pending lock").remove(&response.id);
        if let Some(reply) = reply {
            let _ = reply.send(response.body);
        }
    }
    // Dropping the senders fails every call still waiting.
    pending.lock().expect("pending lock").clear();
}

/// Reads the broker's event stream. QUIC announces a stream only with its first
/// bytes, so it is accepted here, in the background, not during the handshake.
async fn read_events(conn: quinn::Connection, tx: mpsc::UnboundedSender<Event>) {
    let Ok(stream) = conn.accept_uni().await else {
        return;
    };
    let mut reader = FrameReader::new(stream);
    while let Ok(Some(event)) = reader.read::<Event>().await {
        if tx.send(event).is_err() {
            return;
        }
    }
}
