//! The applications the controller runs on nodes. Each is driven from the node that
//! the controller asked (the initiator); the peer answers classical messages.
//!
//! All pairs come from the link layer ([`crate::linklayer`]), which delivers them as
//! Φ⁺ (it applies the Pauli correction of the heralded Bell state).
//!
//! - **EPR**: the initiator makes a measure-type CREATE; both ends measure every
//!   pair in the basis as it is heralded; the initiator asks the peer (classically)
//!   for its outcomes and compares them with the correlation Φ⁺ predicts.
//! - **Teleportation**: a keep-type CREATE; for each pair the initiator prepares
//!   |ψ⟩, does the Bell measurement (CNOT, H, two Z measurements) and sends the two
//!   bits; the peer applies X^m2 then Z^m1 and keeps the qubit for the controller.
//! - **Link**: one CREATE as the controller specifies it, reported pair by pair.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qnet_common::wire::{
    CardinalState, Classical, Gate, LinkKind, LinkPairReport, LinkRunSpec, NodeResponseBody, Pair,
    RequestBody, ResponseBody,
};
use qnet_common::{Basis, BellState, QubitId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::broker_client::CallError;
use crate::linklayer::LinkHandle;
use crate::protocols::link::{
    CreateId, CreateRequest, Delivered, ErrorCode, LinkEvent, MeasureBasis, RequestType,
};
use crate::{Delivery, Node};

/// The `app` tag of the classical messages below.
pub const APP_TAG: &str = "qnet/apps";
/// Link-layer purpose id of EPR runs.
pub const PURPOSE_EPR: u16 = 1;
/// Link-layer purpose id of teleportation runs.
pub const PURPOSE_TELEPORT: u16 = 2;
/// Sequence numbers per classical request of an EPR comparison.
const CHUNK: usize = 8192;
/// How long a peer may take to answer one chunk.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Classical messages between the two ends of an application run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppMsg {
    /// Initiator → peer: send your outcomes of the pairs `seqs` (measured by the link
    /// layer in `basis`).
    EprMeasure {
        /// Run id (the initiator's).
        run: u64,
        /// Basis.
        basis: Basis,
        /// Pair sequence numbers.
        seqs: Vec<u64>,
    },
    /// Peer → initiator: outcomes in the order of `seqs`.
    EprOutcomes {
        /// Run id.
        run: u64,
        /// Outcomes.
        outcomes: Vec<u8>,
    },
    /// Initiator → peer: the two classical bits of each teleportation.
    TeleportFix {
        /// Run id.
        run: u64,
        /// (pair sequence number, m1 = outcome of |ψ⟩'s qubit, m2 = outcome of the
        /// pair half).
        fixes: Vec<(u64, u8, u8)>,
    },
    /// Peer → initiator: the corrected qubits, kept for the controller.
    TeleportDone {
        /// Run id.
        run: u64,
        /// The qubits, in the order of `fixes`.
        qubits: Vec<QubitId>,
    },
    /// Peer → initiator: the run failed at the peer.
    Failed {
        /// Run id.
        run: u64,
        /// Why.
        reason: String,
    },
}

impl AppMsg {
    fn run(&self) -> u64 {
        match self {
            AppMsg::EprMeasure { run, .. }
            | AppMsg::EprOutcomes { run, .. }
            | AppMsg::TeleportFix { run, .. }
            | AppMsg::TeleportDone { run, .. }
            | AppMsg::Failed { run, .. } => *run,
        }
    }
}

/// The Z-parity (0 = equal outcomes) that `bell` predicts when both halves are
/// measured in `basis`, or `None` for bases without a fixed correlation.
pub fn expected_parity(bell: BellState, basis: Basis) -> Option<u8> {
    let psi = u8::from(bell.is_psi());
    let minus = u8::from(bell.has_minus_phase());
    match basis {
        Basis::Z => Some(psi),
        Basis::X => Some(minus),
        // ⟨YY⟩ = −1 for Φ⁺: the outcomes disagree.
        Basis::Y => Some(1 ^ psi ^ minus),
        Basis::Rotated { .. } => None,
    }
}

impl Node {
    /// Handles a classical message from `peer`.
    pub(crate) fn on_classical(self: &Arc<Self>, peer: &str, msg: Classical) {
        if msg.app == crate::linklayer::LINK_TAG {
            match self.link(peer) {
                Ok(link) => link.send(crate::linklayer::Input::Message(msg.payload)),
                Err(e) => tracing::warn!(%peer, "link-layer message for no link: {e:#}"),
            }
            return;
        }
        if msg.app != APP_TAG {
            tracing::debug!(%peer, app = %msg.app, "classical message for no application");
            return;
        }
        let msg: AppMsg = match qnet_common::wire::decode(&msg.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, "undecodable application message: {e}");
                return;
            }
        };
        match msg {
            AppMsg::EprMeasure { .. } | AppMsg::TeleportFix { .. } => {
                let node = self.clone();
                let peer = peer.to_string();
                tokio::spawn(async move {
                    let run = msg.run();
                    let reply = match node.serve_peer(&peer, msg).await {
                        Ok(reply) => reply,
                        Err(e) => AppMsg::Failed {
                            run,
                            reason: format!("{}: {e:#}", node.name),
                        },
                    };
                    if let Err(e) = node.send_app(&peer, &reply).await {
                        tracing::warn!(%peer, "cannot answer: {e:#}");
                    }
                });
            }
            reply => {
                let waiter = self
                    .waiters
                    .lock()
                    .expect("waiters lock")
                    .remove(&reply.run());
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    None => tracing::debug!(%peer, run = reply.run(), "late reply dropped"),
                }
            }
        }
    }

    async fn serve_peer(&self, peer: &str, msg: AppMsg) -> anyhow::Result<AppMsg> {
        match msg {
            AppMsg::EprMeasure { run, seqs, .. } => {
                let outcomes = self
                    .claim_pairs(peer, &seqs, PEER_TIMEOUT)
                    .await?
                    .into_iter()
                    .map(|d| match d {
                        Delivery::Outcome(o) => Ok(o),
                        Delivery::Qubit(q) => anyhow::bail!("pair {q} was kept, not measured"),
                    })
                    .collect::<anyhow::Result<Vec<u8>>>()?;
                Ok(AppMsg::EprOutcomes { run, outcomes })
            }
            AppMsg::TeleportFix { run, fixes } => {
                let seqs: Vec<u64> = fixes.iter().map(|f| f.0).collect();
                let mut qubits = Vec::with_capacity(seqs.len());
                for d in self.claim_pairs(peer, &seqs, PEER_TIMEOUT).await? {
                    match d {
                        Delivery::Qubit(q) => qubits.push(q),
                        Delivery::Outcome(_) => {
                            anyhow::bail!("a measured pair cannot carry a teleport")
                        }
                    }
                }
                let mut calls = Vec::new();
                for (&(_, m1, m2), &q) in fixes.iter().zip(&qubits) {
                    if m2 == 1 {
                        calls.push(self.broker.call(RequestBody::gate1(Gate::X, q)));
                    }
                    if m1 == 1 {
                        calls.push(self.broker.call(RequestBody::gate1(Gate::Z, q)));
                    }
                }
                for call in calls {
                    call.await?;
                }
                self.held
                    .lock()
                    .expect("held lock")
                    .extend(qubits.iter().copied());
                Ok(AppMsg::TeleportDone { run, qubits })
            }
            other => anyhow::bail!("not a request: {other:?}"),
        }
    }

    /// Serves the peer's application runs on the link to `peer`: pairs of its EPR
    /// and teleportation requests are stored until its classical messages claim them.
    pub(crate) fn serve_link_apps(self: &Arc<Self>, peer: &str, link: &LinkHandle) {
        for purpose in [PURPOSE_EPR, PURPOSE_TELEPORT] {
            let mut events = link.listen(purpose);
            let node = self.clone();
            let peer = peer.to_string();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    match event {
                        LinkEvent::Ok(ok) => {
                            let delivery = match ok.delivered {
                                Delivered::Kept { qubit, .. } => Delivery::Qubit(qubit),
                                Delivered::Measured { outcome, .. } => Delivery::Outcome(outcome),
                            };
                            node.store_delivery(&peer, ok.seq, delivery);
                        }
                        LinkEvent::Err(err) => {
                            // Withdrawn pairs will never be claimed.
                            let key = node.peer_key(&peer);
                            let mut delivered = node.delivered.lock().expect("delivered lock");
                            for seq in &err.seqs {
                                delivered.remove(&(key, *seq));
                            }
                        }
                        LinkEvent::Ack(_) | LinkEvent::Done(_) => {}
                    }
                }
            });
        }
    }

    async fn send_app(self: &Arc<Self>, peer: &str, msg: &AppMsg) -> anyhow::Result<()> {
        let payload = qnet_common::wire::encode(msg)?;
        self.send_classical(
            peer,
            Classical {
                app: APP_TAG.to_string(),
                payload,
            },
        )
        .await
    }

    /// Sends `msg` to `peer` and waits for the reply of the same run.
    async fn ask(self: &Arc<Self>, peer: &str, msg: AppMsg) -> anyhow::Result<AppMsg> {
        let (tx, rx) = oneshot::channel();
        let run = msg.run();
        self.waiters.lock().expect("waiters lock").insert(run, tx);
        let result = async {
            self.send_app(peer, &msg).await?;
            match tokio::time::timeout(PEER_TIMEOUT, rx).await {
                Ok(Ok(AppMsg::Failed { reason, .. })) => anyhow::bail!("{reason}"),
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => anyhow::bail!("the run was abandoned"),
                Err(_) => anyhow::bail!("{peer} did not answer within {PEER_TIMEOUT:?}"),
            }
        }
        .await;
        self.waiters.lock().expect("waiters lock").remove(&run);
        result
    }

    fn new_run(&self) -> u64 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }

    /// Pairs on request from the broker (no link layer), kept at both ends.
    pub(crate) async fn create_pairs(
        &self,
        peer: &str,
        count: u32,
    ) -> Result<Vec<Pair>, CallError> {
        match self
            .broker
            .call(RequestBody::CreatePairs {
                link_peer: peer.to_string(),
                count,
                bell: BellState::PhiPlus,
                fidelity: None,
            })
            .await?
        {
            ResponseBody::Pairs(p) => Ok(p),
            other => Err(CallError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Makes a CREATE on the link to `peer` and returns its id and events, or the
    /// link layer's refusal as an error.
    async fn create(
        self: &Arc<Self>,
        peer: &str,
        request: CreateRequest,
    ) -> anyhow::Result<(CreateId, mpsc::UnboundedReceiver<LinkEvent>)> {
        self.check_neighbour(peer)?;
        match self.link(peer)?.create(request).await? {
            Ok(created) => Ok(created),
            Err(e) => anyhow::bail!("the link layer refused the request: {}", e.code.name()),
        }
    }

    /// `qnet run epr`: `pairs` pairs with `peer`, both ends measuring in `basis`.
    pub async fn run_epr(
        self: &Arc<Self>,
        peer: &str,
        pairs: u32,
        basis: Basis,
    ) -> anyhow::Result<NodeResponseBody> {
        let parity = expected_parity(BellState::PhiPlus, basis)
            .ok_or_else(|| anyhow::anyhow!("the EPR run needs basis Z, X or Y"))?;
        let start = Instant::now();
        let request = CreateRequest {
            number: pairs,
            min_fidelity: 0.0,
            max_time: f64::INFINITY,
            purpose_id: PURPOSE_EPR,
            priority: 0,
            kind: RequestType::Measure(MeasureBasis::Fixed(basis)),
        };
        let (_, mut events) = self.create(peer, request).await?;
        let mut ours: BTreeMap<u64, u8> = BTreeMap::new();
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Ok(ok) => {
                    if let Delivered::Measured { outcome, .. } = ok.delivered {
                        ours.insert(ok.seq, outcome);
                    }
                }
                LinkEvent::Err(err) if err.code == ErrorCode::Expire && !err.seqs.is_empty() => {
                    for seq in &err.seqs {
                        ours.remove(seq);
                    }
                }
                LinkEvent::Err(err) => {
                    anyhow::bail!("the link layer failed: {}", err.code.name())
                }
                LinkEvent::Done(_) => break,
                LinkEvent::Ack(_) => {}
            }
        }
        // Compare with the peer's outcomes, a chunk of sequence numbers at a time.
        let seqs: Vec<u64> = ours.keys().copied().collect();
        let mut agree = 0u32;
        for chunk in seqs.chunks(CHUNK) {
            let run = self.new_run();
            let msg = AppMsg::EprMeasure {
                run,
                basis,
                seqs: chunk.to_vec(),
            };
            let theirs = match self.ask(peer, msg).await? {
                AppMsg::EprOutcomes { outcomes, .. } => outcomes,
                other => anyhow::bail!("unexpected reply {other:?}"),
            };
            anyhow::ensure!(
                theirs.len() == chunk.len(),
                "{peer} reported a different number of pairs"
            );
            agree += chunk
                .iter()
                .zip(&theirs)
                .filter(|(seq, b)| ours[seq] ^ **b == parity)
                .count() as u32;
        }
        Ok(NodeResponseBody::Epr {
            pairs: seqs.len() as u32,
            agree,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// `qnet run teleport`: `shots` copies of `state` teleported to `peer`. The peer
    /// keeps what it receives, so `shots` must fit in its memory.
    pub async fn run_teleport(
        self: &Arc<Self>,
        peer: &str,
        state: CardinalState,
        shots: u32,
    ) -> anyhow::Result<NodeResponseBody> {
        let memory = self.topology.node(peer).map_or(0, |n| n.memory_qubits);
        if shots > memory {
            anyhow::bail!("{peer} can hold {memory} qubits; teleport at most that many at a time");
        }
        let start = Instant::now();
        let request = CreateRequest {
            number: shots,
            min_fidelity: 0.0,
            max_time: f64::INFINITY,
            purpose_id: PURPOSE_TELEPORT,
            priority: 0,
            kind: RequestType::Keep,
        };
        let (_, mut events) = self.create(peer, request).await?;
        let prep: &'static [Gate] = match state {
            CardinalState::Zero => &[],
            CardinalState::One => &[Gate::X],
            CardinalState::Plus => &[Gate::H],
            CardinalState::Minus => &[Gate::X, Gate::H],
            CardinalState::PlusI => &[Gate::H, Gate::S],
            CardinalState::MinusI => &[Gate::H, Gate::Sdg],
        };
        // Each pair is used as soon as it arrives; the Bell measurements run
        // concurrently and their bits go to the peer in one message at the end.
        let mut shots_in_flight = JoinSet::new();
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Ok(ok) => {
                    let Delivered::Kept { qubit, .. } = ok.delivered else {
                        anyhow::bail!("the link layer measured a keep-type pair");
                    };
                    let node = self.clone();
                    shots_in_flight
                        .spawn(async move { node.bell_measure(ok.seq, qubit, prep).await });
                }
                LinkEvent::Err(err) => {
                    anyhow::bail!("the link layer failed: {}", err.code.name())
                }
                LinkEvent::Done(_) => break,
                LinkEvent::Ack(_) => {}
            }
        }
        let mut fixes = Vec::with_capacity(shots as usize);
        while let Some(fix) = shots_in_flight.join_next().await {
            fixes.push(fix??);
        }
        fixes.sort_unstable();
        let run = self.new_run();
        let received = match self.ask(peer, AppMsg::TeleportFix { run, fixes }).await? {
            AppMsg::TeleportDone { qubits, .. } => qubits,
            other => anyhow::bail!("unexpected reply {other:?}"),
        };
        Ok(NodeResponseBody::Teleport {
            received,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Prepares |ψ⟩ with `prep` and Bell-measures it with the pair half `half`;
    /// returns (seq, m1, m2).
    async fn bell_measure(
        &self,
        seq: u64,
        half: QubitId,
        prep: &[Gate],
    ) -> anyhow::Result<(u64, u8, u8)> {
        let psi = match self.broker.call(RequestBody::Alloc { count: 1 }).await? {
            ResponseBody::Qubits(q) if q.len() == 1 => q[0],
            other => anyhow::bail!("unexpected answer to alloc: {other:?}"),
        };
        // Calls go out in program order; only their answers are awaited together.
        let mut calls = Vec::new();
        for &g in prep {
            calls.push(self.broker.call(RequestBody::gate1(g, psi)));
        }
        calls.push(self.broker.call(RequestBody::gate2(Gate::Cnot, psi, half)));
        calls.push(self.broker.call(RequestBody::gate1(Gate::H, psi)));
        let measure = self.broker.call(RequestBody::Measure {
            qubits: vec![(psi, Basis::Z), (half, Basis::Z)],
            free: true,
        });
        for call in calls {
            call.await?;
        }
        match measure.await? {
            ResponseBody::Outcomes(o) if o.len() == 2 => Ok((seq, o[0], o[1])),
            other => anyhow::bail!("unexpected answer to measure: {other:?}"),
        }
    }

    /// `qnet run link`: one CREATE, reported pair by pair. Kept qubits are freed as
    /// they arrive (the run measures the service, not an application).
    pub async fn run_link(
        self: &Arc<Self>,
        peer: &str,
        spec: LinkRunSpec,
    ) -> anyhow::Result<NodeResponseBody> {
        self.check_neighbour(peer)?;
        let kind = match spec.kind {
            LinkKind::Keep => RequestType::Keep,
            LinkKind::Measure(b) => RequestType::Measure(MeasureBasis::Fixed(b)),
            LinkKind::MeasureRandom => RequestType::Measure(MeasureBasis::RandomZX),
        };
        let request = CreateRequest {
            number: spec.pairs,
            min_fidelity: spec.min_fidelity,
            max_time: spec.max_time,
            purpose_id: spec.purpose,
            priority: spec.priority,
            kind,
        };
        let wall = Instant::now();
        let created = self.clock.now();
        let (create_id, mut events) = match self.link(peer)?.create(request).await? {
            Ok(created) => created,
            Err(e) => {
                return Ok(NodeResponseBody::Link {
                    create_id: e.create_id.id,
                    pairs: Vec::new(),
                    errors: vec![(e.code.name().to_string(), 1)],
                    emulated_seconds: 0.0,
                    wall_seconds: wall.elapsed().as_secs_f64(),
                });
            }
        };
        let mut errors: BTreeMap<&'static str, u32> = BTreeMap::new();
        let mut pairs: BTreeMap<u64, LinkPairReport> = BTreeMap::new();
        let mut to_free = Vec::new();
        let mut ended = created;
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Ok(ok) => {
                    if let Delivered::Kept { qubit, .. } = ok.delivered {
                        to_free.push(qubit);
                        // Batches fit in memory: a full memory would stall the link.
                        if to_free.len()
                            >= self
                                .topology
                                .node(&self.name)
                                .map_or(1, |n| (n.memory_qubits as usize / 2).clamp(1, 64))
                        {
                            drop(self.broker.call(RequestBody::Free {
                                qubits: std::mem::take(&mut to_free),
                            }));
                        }
                    }
                    ended = ok.time_of_goodness;
                    pairs.insert(
                        ok.seq,
                        LinkPairReport {
                            seq: ok.seq,
                            goodness: ok.goodness,
                            time_of_goodness: ok.time_of_goodness,
                            latency: ok.time_of_goodness - created,
                        },
                    );
                }
                LinkEvent::Err(err) => {
                    *errors.entry(err.code.name()).or_default() += 1;
                    for seq in &err.seqs {
                        pairs.remove(seq);
                    }
                    // Qubits of withdrawn pairs are freed by the link layer.
                    to_free.retain(|q| !err.qubits.contains(q));
                    if err.code != ErrorCode::Expire || err.seqs.is_empty() {
                        ended = self.clock.now();
                        break;
                    }
                }
                LinkEvent::Done(_) => break,
                LinkEvent::Ack(_) => {}
            }
        }
        if !to_free.is_empty() {
            drop(self.broker.call(RequestBody::Free { qubits: to_free }));
        }
        Ok(NodeResponseBody::Link {
            create_id: create_id.id,
            pairs: pairs.into_values().collect(),
            errors: errors
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            emulated_seconds: ended - created,
            wall_seconds: wall.elapsed().as_secs_f64(),
        })
    }

    pub(crate) fn check_neighbour(&self, peer: &str) -> anyhow::Result<()> {
        if self.topology.node_index(peer).is_none() {
            anyhow::bail!("unknown node {peer:?}");
        }
        if !self.topology.are_neighbours(self.name.as_str(), peer) {
            anyhow::bail!("{} and {peer} are not neighbours", self.name);
        }
        Ok(())
    }
}
