//! The async driver of the link layer: one task per neighbour that feeds the link's
//! sans-IO protocol ([`crate::protocols`]) with heralds, peer messages, measurement
//! outcomes and timer wake-ups, and carries out what it asks: classical messages to
//! the peer, attempts, corrections and measurements at the broker, and events to the
//! layer above.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use qnet_common::physics::{LinkPhysics, Memory};
use qnet_common::wire::{Classical, LinkLogEntry, RequestBody};
use tokio::sync::{mpsc, oneshot};

use crate::Node;
use crate::protocols::egp::{Egp, EgpConfig};
use crate::protocols::link::{
    Action, CreateId, CreateRequest, Delivered, ErrorCode, Herald, LinkErr, LinkEvent, LinkLayer,
    Origin, Time,
};

/// The `app` tag of link-layer messages between nodes.
pub const LINK_TAG: &str = "qnet/egp";

/// Emulated time at this node: the broker's clock read at connection, advanced by
/// the wall clock times the network's time scale (DESIGN §2).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: Instant,
    emulated: f64,
    scale: f64,
}

impl Clock {
    /// A clock that reads `emulated` seconds now.
    pub fn new(emulated: f64, scale: f64) -> Clock {
        Clock {
            wall: Instant::now(),
            emulated,
            scale,
        }
    }

    /// Emulated seconds now.
    pub fn now(&self) -> Time {
        self.emulated + self.wall.elapsed().as_secs_f64() * self.scale
    }

    /// The wall instant at which the clock reads `t`.
    pub fn instant_of(&self, t: Time) -> tokio::time::Instant {
        let ahead = ((t - self.emulated) / self.scale).max(0.0);
        let ahead = std::time::Duration::try_from_secs_f64(ahead)
            .unwrap_or(std::time::Duration::from_secs(3600));
        tokio::time::Instant::from_std(self.wall) + ahead
    }
}

/// Inputs of a link's driver task.
pub enum Input {
    /// A CREATE from this node; the reply carries the request's id and a channel of
    /// its events, or the immediate error.
    Create {
        /// The request.
        request: CreateRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(CreateId, mpsc::UnboundedReceiver<LinkEvent>), LinkErr>>,
    },
    /// A message from the peer's link layer.
    Message(Vec<u8>),
    /// A herald from the broker, at this emulated time.
    Herald(Herald, Time),
    /// The outcome of a measurement the protocol asked for.
    Measured {
        /// The pair.
        seq: u64,
        /// The outcome.
        outcome: u8,
    },
    /// The classical channel to the peer failed for good.
    PeerLost,
    /// Accept only these purposes from the peer (`None`: all).
    SetPurposes(Option<Vec<u16>>),
    /// Deliver the events of the peer's requests with this purpose here.
    Listen {
        /// The purpose id.
        purpose: u16,
        /// Where the events go.
        events: mpsc::UnboundedSender<LinkEvent>,
    },
}

/// The handle of one link's driver.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::UnboundedSender<Input>,
}

impl LinkHandle {
    /// Hands an input to the driver (dropped if the driver is gone).
    pub fn send(&self, input: Input) {
        let _ = self.tx.send(input);
    }

    /// Makes a CREATE and returns its id and a channel of its events.
    pub async fn create(
        &self,
        request: CreateRequest,
    ) -> anyhow::Result<Result<(CreateId, mpsc::UnboundedReceiver<LinkEvent>), LinkErr>> {
        let (reply, rx) = oneshot::channel();
        self.send(Input::Create { request, reply });
        rx.await
            .map_err(|_| anyhow::anyhow!("the link layer stopped"))
    }

    /// Subscribes to the events of the peer's requests with `purpose`.
    pub fn listen(&self, purpose: u16) -> mpsc::UnboundedReceiver<LinkEvent> {
        let (events, rx) = mpsc::unbounded_channel();
        self.send(Input::Listen { purpose, events });
        rx
    }
}

/// The log of deliveries per peer, for consistency checks across nodes.
#[derive(Default)]
pub struct LinkLog {
    entries: Mutex<HashMap<String, Vec<LinkLogEntry>>>,
}

/// Entries kept per peer.
const LOG_LIMIT: usize = 1_000_000;

impl LinkLog {
    fn record(&self, peer: &str, entry: LinkLogEntry) {
        let mut map = self.entries.lock().expect("log lock");
        let log = map.entry(peer.to_string()).or_default();
        if log.len() < LOG_LIMIT {
            log.push(entry);
        }
    }

    /// The entries with `peer`.
    pub fn entries(&self, peer: &str) -> Vec<LinkLogEntry> {
        let map = self.entries.lock().expect("log lock");
        map.get(peer).cloned().unwrap_or_default()
    }
}

/// Starts the link-layer driver for the link to `peer`.
pub fn start(node: &Arc<Node>, peer: &str) -> anyhow::Result<LinkHandle> {
    let topology = &node.topology;
    let me = topology
        .node_index(node.name.as_str())
        .expect("a node knows its own name");
    let other = topology
        .node_index(peer)
        .ok_or_else(|| anyhow::anyhow!("unknown node {peer:?}"))?;
    let link = topology
        .link_between(me, other)
        .ok_or_else(|| anyhow::anyhow!("{} and {peer} are not neighbours", node.name))?;
    let protocol: Box<dyn LinkLayer> = match link.link_layer.as_str() {
        "egp" => Box::new(Egp::new(EgpConfig {
            owner: node.name.as_str() < peer,
            physics: LinkPhysics::of(link),
            local_memory: Memory::from(&topology.nodes[me]),
            remote_memory: Memory::from(&topology.nodes[other]),
            // Control messages travel on QUIC, which retransmits itself; the
            // protocol's own retransmission covers channels that break and come back.
            retransmit: 0.25 * topology.time_scale,
            quantum: 16,
            aging: topology.time_scale,
            seed: topology.seed ^ (me as u64) << 32 ^ other as u64,
        })),
        other => anyhow::bail!("unknown link layer {other:?} on the link to {peer}"),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        node: node.clone(),
        peer: peer.to_string(),
        protocol,
        creators: HashMap::new(),
        listeners: HashMap::new(),
        remote_purposes: HashMap::new(),
        tx: tx.clone(),
    };
    tokio::spawn(driver.run(rx));
    Ok(LinkHandle { tx })
}

struct Driver {
    node: Arc<Node>,
    peer: String,
    protocol: Box<dyn LinkLayer>,
    creators: HashMap<CreateId, mpsc::UnboundedSender<LinkEvent>>,
    listeners: HashMap<u16, mpsc::UnboundedSender<LinkEvent>>,
    /// Purposes of the peer's requests, learnt from their OKs, so their later
    /// errors and completion reach the same listener.
    remote_purposes: HashMap<CreateId, u16>,
    tx: mpsc::UnboundedSender<Input>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let clock = self.node.clock;
        loop {
            let wake = self.protocol.poll_timeout().map(|t| clock.instant_of(t));
            let input = tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => Some(i),
                    None => return,
                },
                _ = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            let now = clock.now();
            match input {
                None => self.protocol.handle_timeout(now),
                Some(input) => self.handle(now, input),
            }
            // Take whatever else is already waiting before doing the work it causes.
            while let Ok(input) = rx.try_recv() {
                self.handle(clock.now(), input);
            }
            self.drain();
        }
    }

    fn handle(&mut self, now: Time, input: Input) {
        match input {
            Input::Create { request, reply } => match self.protocol.create(now, request) {
                Ok(id) => {
                    let (events, rx) = mpsc::unbounded_channel();
                    self.creators.insert(id, events);
                    let _ = reply.send(Ok((id, rx)));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Input::Message(payload) => self.protocol.handle_message(now, &payload),
            Input::Herald(herald, at) => self.protocol.handle_herald(at.max(now - 1.0), herald),
            Input::Measured { seq, outcome } => self.protocol.handle_measured(now, seq, outcome),
            Input::PeerLost => self.protocol.handle_peer_lost(now),
            Input::SetPurposes(accept) => self.protocol.set_accepted_purposes(accept),
            Input::Listen { purpose, events } => {
                self.listeners.insert(purpose, events);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(payload) = self.protocol.poll_transmit() {
            self.node.post_classical(
                &self.peer,
                Classical {
                    app: LINK_TAG.to_string(),
                    payload,
                },
            );
        }
        // Measurements of many heralds go to the broker as one batch.
        let mut measures = Vec::new();
        while let Some(action) = self.protocol.poll_action() {
            match action {
                Action::Measure { seq, qubit, basis } => measures.push((seq, qubit, basis)),
                other => self.act(other),
            }
        }
        if !measures.is_empty() {
            self.measure(measures);
        }
        while let Some(event) = self.protocol.poll_event() {
            self.deliver(event);
        }
    }

    fn act(&mut self, action: Action) {
        let broker = &self.node.broker;
        match action {
            Action::Attempt(label) => {
                // Fire and forget: the broker answers Done, and an error would only
                // mean the peer is unknown, which `start` ruled out.
                drop(broker.call(RequestBody::Attempt {
                    link_peer: self.peer.clone(),
                    label,
                }));
            }
            Action::Correct { qubit, gates } => {
                for gate in gates {
                    drop(broker.call(RequestBody::gate1(gate, qubit)));
                }
            }
            Action::Measure { seq, qubit, basis } => self.measure(vec![(seq, qubit, basis)]),
            Action::Free(qubit) => {
                drop(broker.call(RequestBody::Free {
                    qubits: vec![qubit],
                }));
            }
        }
    }

    /// Measures and frees a batch of pairs' qubits in one broker request and feeds
    /// the outcomes back. If the batch is refused (one qubit is gone), each is
    /// measured on its own so the others still complete.
    fn measure(&self, batch: Vec<(u64, qnet_common::QubitId, qnet_common::Basis)>) {
        let broker = &self.node.broker;
        let call = broker.call(RequestBody::Measure {
            qubits: batch.iter().map(|&(_, q, b)| (q, b)).collect(),
            free: true,
        });
        let tx = self.tx.clone();
        let node = self.node.clone();
        tokio::spawn(async move {
            match call.await {
                Ok(qnet_common::wire::ResponseBody::Outcomes(o)) if o.len() == batch.len() => {
                    for (&(seq, _, _), outcome) in batch.iter().zip(o) {
                        let _ = tx.send(Input::Measured { seq, outcome });
                    }
                }
                _ if batch.len() > 1 => {
                    for (seq, qubit, basis) in batch {
                        let single = node.broker.call(RequestBody::Measure {
                            qubits: vec![(qubit, basis)],
                            free: true,
                        });
                        match single.await {
                            Ok(qnet_common::wire::ResponseBody::Outcomes(o)) if o.len() == 1 => {
                                let _ = tx.send(Input::Measured { seq, outcome: o[0] });
                            }
                            other => tracing::warn!(seq, "measuring a pair failed: {other:?}"),
                        }
                    }
                }
                other => tracing::warn!("measuring a pair failed: {other:?}"),
            }
        });
    }

    fn deliver(&mut self, event: LinkEvent) {
        let log = &self.node.link_log;
        let origin = |id: CreateId| id.origin == Origin::Local;
        match &event {
            LinkEvent::Ok(ok) => log.record(
                &self.peer,
                LinkLogEntry {
                    local_origin: origin(ok.create_id),
                    create_id: ok.create_id.id,
                    seq: ok.seq,
                    ok: true,
                },
            ),
            LinkEvent::Err(err) if err.code == ErrorCode::Expire => {
                for &seq in &err.seqs {
                    log.record(
                        &self.peer,
                        LinkLogEntry {
                            local_origin: origin(err.create_id),
                            create_id: err.create_id.id,
                            seq,
                            ok: false,
                        },
                    );
                }
                // Withdrawn pairs are freed here, whoever holds them: their partners
                // are gone or no longer count.
                // One request per qubit: the broker refuses a batch whole if one of
                // its qubits is already gone (the application may have freed it).
                for &qubit in &err.qubits {
                    drop(self.node.broker.call(RequestBody::Free {
                        qubits: vec![qubit],
                    }));
                }
            }
            _ => {}
        }
        let id = match &event {
            LinkEvent::Ack(id) | LinkEvent::Done(id) => *id,
            LinkEvent::Ok(ok) => ok.create_id,
            LinkEvent::Err(err) => err.create_id,
        };
        let purpose = match &event {
            LinkEvent::Ok(ok) => {
                self.remote_purposes.insert(ok.create_id, ok.purpose_id);
                Some(ok.purpose_id)
            }
            _ => self.remote_purposes.get(&id).copied(),
        };
        let terminal = matches!(&event, LinkEvent::Done(_))
            || matches!(&event, LinkEvent::Err(e) if e.code != ErrorCode::Expire || e.seqs.is_empty());
        if id.origin == Origin::Local {
            if let Some(tx) = self.creators.get(&id) {
                let _ = tx.send(event);
            }
            if terminal {
                self.creators.remove(&id);
            }
            return;
        }
        if terminal {
            self.remote_purposes.remove(&id);
        }
        // The peer's request: to the listener of its purpose, else the sink.
        let listener = purpose.and_then(|p| self.listeners.get(&p));
        match listener {
            Some(tx) if !tx.is_closed() => {
                let _ = tx.send(event);
            }
            _ => {
                // Nobody wants the pair at this end: free kept qubits at once.
                if let LinkEvent::Ok(ok) = &event
                    && let Delivered::Kept { qubit, .. } = ok.delivered
                {
                    drop(self.node.broker.call(RequestBody::Free {
                        qubits: vec![qubit],
                    }));
                }
            }
        }
    }
}
