//! The applications the controller runs on nodes. Each is driven from the node that
//! the controller asked (the initiator); the peer answers classical messages.
//!
//! - **EPR**: the initiator asks the broker for pairs over the link, measures its
//!   halves, and asks the peer (classically) to measure the same pairs; the peer's
//!   outcomes come back and are compared with the correlation the Bell state predicts
//!   in that basis.
//! - **Teleportation**: for each shot, the initiator prepares |ψ⟩, makes a pair, does
//!   the Bell measurement (CNOT, H, two Z measurements) and sends the two bits; the
//!   peer applies X^m2 then Z^m1 and keeps the qubit for the controller to check.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use qnet_common::wire::{
    CardinalState, Classical, Gate, NodeResponseBody, Pair, RequestBody, ResponseBody,
};
use qnet_common::{Basis, BellState, QubitId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::Node;
use crate::broker_client::CallError;

/// The `app` tag of the classical messages below.
pub const APP_TAG: &str = "qnet/apps";
/// Pairs per broker request; several chunks are in flight at once.
const CHUNK: u32 = 1024;
/// Chunks in flight per run.
const IN_FLIGHT: usize = 4;
/// How long a peer may take to answer one chunk.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// Classical messages between the two ends of an application run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppMsg {
    /// Initiator → peer: measure the pairs `seqs` in `basis` and send the outcomes.
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
            AppMsg::EprMeasure { run, basis, seqs } => {
                let qubits = self.claim_pairs(peer, &seqs, PEER_TIMEOUT).await?;
                let outcomes = self.measure_free(&qubits, basis).await?;
                Ok(AppMsg::EprOutcomes { run, outcomes })
            }
            AppMsg::TeleportFix { run, fixes } => {
                let seqs: Vec<u64> = fixes.iter().map(|f| f.0).collect();
                let qubits = self.claim_pairs(peer, &seqs, PEER_TIMEOUT).await?;
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

    async fn measure_free(&self, qubits: &[QubitId], basis: Basis) -> Result<Vec<u8>, CallError> {
        let request = RequestBody::Measure {
            qubits: qubits.iter().map(|&q| (q, basis)).collect(),
            free: true,
        };
        match self.broker.call(request).await? {
            ResponseBody::Outcomes(o) => Ok(o),
            other => Err(CallError::Unexpected(format!("{other:?}"))),
        }
    }

    /// `qnet run epr`: `pairs` pairs with `peer`, both ends measuring in `basis`.
    pub async fn run_epr(
        self: &Arc<Self>,
        peer: &str,
        pairs: u32,
        basis: Basis,
    ) -> anyhow::Result<NodeResponseBody> {
        self.check_neighbour(peer)?;
        let parity = expected_parity(BellState::PhiPlus, basis)
            .ok_or_else(|| anyhow::anyhow!("the EPR run needs basis Z, X or Y"))?;
        let start = Instant::now();
        let agree = self
            .in_chunks(peer, pairs, move |node, peer, n| async move {
                let made = node.create_pairs(&peer, n).await?;
                let mine: Vec<QubitId> = made.iter().map(|p| p.local).collect();
                let seqs: Vec<u64> = made.iter().map(|p| p.seq).collect();
                let ours = node.measure_free(&mine, basis).await?;
                let run = node.new_run();
                let theirs = match node
                    .ask(&peer, AppMsg::EprMeasure { run, basis, seqs })
                    .await?
                {
                    AppMsg::EprOutcomes { outcomes, .. } => outcomes,
                    other => anyhow::bail!("unexpected reply {other:?}"),
                };
                anyhow::ensure!(
                    theirs.len() == ours.len(),
                    "{peer} measured a different number of pairs"
                );
                Ok(ours
                    .iter()
                    .zip(&theirs)
                    .filter(|(a, b)| *a ^ *b == parity)
                    .count() as u64)
            })
            .await?;
        Ok(NodeResponseBody::Epr {
            pairs,
            agree: agree as u32,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// `qnet run teleport`: `shots` copies of `state` teleported to `peer`.
    pub async fn run_teleport(
        self: &Arc<Self>,
        peer: &str,
        state: CardinalState,
        shots: u32,
    ) -> anyhow::Result<NodeResponseBody> {
        self.check_neighbour(peer)?;
        let start = Instant::now();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        self.in_chunks(peer, shots, move |node, peer, n| {
            let sink = sink.clone();
            async move {
                let qubits = node.teleport_chunk(&peer, state, n).await?;
                sink.lock().expect("received lock").push(qubits);
                Ok(0)
            }
        })
        .await?;
        let received = std::mem::take(&mut *received.lock().expect("received lock"));
        Ok(NodeResponseBody::Teleport {
            received: received.into_iter().flatten().collect(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    async fn teleport_chunk(
        self: &Arc<Self>,
        peer: &str,
        state: CardinalState,
        n: u32,
    ) -> anyhow::Result<Vec<QubitId>> {
        let pairs = self.create_pairs(peer, n).await?;
        let psis = match self.broker.call(RequestBody::Alloc { count: n }).await? {
            ResponseBody::Qubits(q) => q,
            other => anyhow::bail!("unexpected answer to alloc: {other:?}"),
        };
        let prep: &[Gate] = match state {
            CardinalState::Zero => &[],
            CardinalState::One => &[Gate::X],
            CardinalState::Plus => &[Gate::H],
            CardinalState::Minus => &[Gate::X, Gate::H],
            CardinalState::PlusI => &[Gate::H, Gate::S],
            CardinalState::MinusI => &[Gate::H, Gate::Sdg],
        };
        // Calls go out in program order; only their answers are awaited together.
        let mut calls = Vec::new();
        for (psi, pair) in psis.iter().zip(&pairs) {
            for &g in prep {
                calls.push(self.broker.call(RequestBody::gate1(g, *psi)));
            }
            calls.push(
                self.broker
                    .call(RequestBody::gate2(Gate::Cnot, *psi, pair.local)),
            );
            calls.push(self.broker.call(RequestBody::gate1(Gate::H, *psi)));
        }
        let measure = self.broker.call(RequestBody::Measure {
            qubits: psis
                .iter()
                .zip(&pairs)
                .flat_map(|(psi, pair)| [(*psi, Basis::Z), (pair.local, Basis::Z)])
                .collect(),
            free: true,
        });
        for call in calls {
            call.await?;
        }
        let outcomes = match measure.await? {
            ResponseBody::Outcomes(o) => o,
            other => anyhow::bail!("unexpected answer to measure: {other:?}"),
        };
        let fixes = pairs
            .iter()
            .zip(outcomes.chunks_exact(2))
            .map(|(pair, m)| (pair.seq, m[0], m[1]))
            .collect();
        let run = self.new_run();
        match self.ask(peer, AppMsg::TeleportFix { run, fixes }).await? {
            AppMsg::TeleportDone { qubits, .. } => Ok(qubits),
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    }

    /// Runs `total` items in chunks of at most [`CHUNK`], [`IN_FLIGHT`] at a time,
    /// and sums what the chunks return. The first failure ends the run (the other
    /// chunks are aborted).
    async fn in_chunks<F, Fut>(
        self: &Arc<Self>,
        peer: &str,
        total: u32,
        job: F,
    ) -> anyhow::Result<u64>
    where
        F: Fn(Arc<Node>, String, u32) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<u64>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let (mut sum, mut left) = (0u64, total);
        loop {
            while left > 0 && set.len() < IN_FLIGHT {
                let n = left.min(CHUNK);
                left -= n;
                set.spawn(job(self.clone(), peer.to_string(), n));
            }
            match set.join_next().await {
                None => return Ok(sum),
                Some(Ok(Ok(x))) => sum += x,
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => anyhow::bail!("a run task failed: {e}"),
            }
        }
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
