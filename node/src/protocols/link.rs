//! The link-layer service: what a higher layer asks for (CREATE), what it gets back
//! (ACK, OK, ERR), and the [`LinkLayer`] trait that protocols implement so a topology
//! can choose one per link (`link_layer = "egp"`).

use qnet_common::{Basis, BellState, QubitId};
use serde::{Deserialize, Serialize};

/// Emulated time, seconds since the deployment started.
pub type Time = f64;

/// How the pairs of a request are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum RequestType {
    /// Create and keep: the qubits stay in memory for the higher layer.
    Keep,
    /// Measure directly, each pair as soon as it is heralded.
    Measure(MeasureBasis),
}

/// The basis of measure-type requests.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MeasureBasis {
    /// Both ends measure every pair in this basis.
    Fixed(Basis),
    /// Each end picks Z or X at random for every pair (BB84-style QKD).
    RandomZX,
}

/// A CREATE request (the fields of the QuTech link-layer service).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Number of pairs.
    pub number: u32,
    /// Lowest acceptable fidelity of each pair.
    pub min_fidelity: f64,
    /// Longest the requester waits, emulated seconds (`f64::INFINITY`: no limit).
    pub max_time: f64,
    /// Which application or circuit the pairs are for; the peer may refuse it.
    pub purpose_id: u16,
    /// Scheduling class: 0 is served first.
    pub priority: u8,
    /// Keep or measure.
    pub kind: RequestType,
}

/// Which end asked for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// This node.
    Local,
    /// The peer.
    Remote,
}

/// A request's id: the number the originating end gave it, and which end that was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CreateId {
    /// The originating end.
    pub origin: Origin,
    /// Its number there.
    pub id: u32,
}

/// What an OK delivers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Delivered {
    /// Keep-type: the local qubit, half of the Bell state `bell`.
    Kept {
        /// The local half.
        qubit: QubitId,
        /// The partner's half (it belongs to the peer; handy for the oracle).
        remote: QubitId,
        /// The state the pair is in, up to noise.
        bell: BellState,
    },
    /// Measure-type: the outcome and the basis it was measured in, already corrected
    /// so that both ends' outcomes correlate as Φ⁺ does.
    Measured {
        /// 0 for the +1 eigenstate.
        outcome: u8,
        /// The basis.
        basis: Basis,
    },
}

/// An OK: one pair delivered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairOk {
    /// The request.
    pub create_id: CreateId,
    /// Per-link sequence number, the same at both ends.
    pub seq: u64,
    /// The request's purpose.
    pub purpose_id: u16,
    /// The qubit or the outcome.
    pub delivered: Delivered,
    /// The service's estimate of the pair's fidelity …
    pub goodness: f64,
    /// … at this emulated time.
    pub time_of_goodness: Time,
}

/// The error codes of the link-layer service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The link cannot give this fidelity, or this maximum time is below its minimum.
    Unsupported,
    /// The request could not be parsed or makes no sense (e.g. zero pairs).
    Create,
    /// The peer refuses the purpose id.
    Rejected,
    /// The maximum time passed before all pairs were made.
    Timeout,
    /// Pairs already reported OK are no longer valid.
    Expire,
    /// Anything else.
    Other,
}

impl ErrorCode {
    /// The code as printed in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Create => "CREATE",
            ErrorCode::Rejected => "REJECTED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Expire => "EXPIRE",
            ErrorCode::Other => "OTHER",
        }
    }
}

/// An ERR.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkErr {
    /// The request.
    pub create_id: CreateId,
    /// What went wrong.
    pub code: ErrorCode,
    /// For EXPIRE: the sequence numbers whose OKs are withdrawn (empty: the whole
    /// request ended without them).
    pub seqs: Vec<u64>,
    /// For EXPIRE of keep-type pairs: local qubits of withdrawn pairs, which the
    /// higher layer must free if it still holds them.
    pub qubits: Vec<QubitId>,
}

/// What the link layer tells the layer above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LinkEvent {
    /// The request is queued (sent to the requester only).
    Ack(CreateId),
    /// A pair.
    Ok(PairOk),
    /// An error.
    Err(LinkErr),
    /// The request is complete: all its pairs were delivered.
    Done(CreateId),
}

/// What the link layer asks of the broker.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Attempt entanglement for this queue label, or stop (`None`).
    Attempt(Option<u64>),
    /// Apply these single-qubit Pauli corrections, in order ("X" or "Z").
    Correct {
        /// The qubit.
        qubit: QubitId,
        /// Gates, in order.
        gates: Vec<qnet_common::wire::Gate>,
    },
    /// Measure and free the qubit, then report with `handle_measured(seq, outcome)`.
    Measure {
        /// The pair's sequence number.
        seq: u64,
        /// The qubit.
        qubit: QubitId,
        /// The basis.
        basis: Basis,
    },
    /// Free the qubit (a pair that no request can use).
    Free(QubitId),
}

/// A herald from the broker, as the link layer sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Herald {
    /// Queue label both ends attempted for.
    pub label: u64,
    /// Per-link sequence number.
    pub seq: u64,
    /// Heralded Bell state.
    pub bell: BellState,
    /// The local half.
    pub qubit: QubitId,
    /// The peer's half.
    pub remote: QubitId,
    /// Emulated time of emission.
    pub emitted: Time,
}

/// A link-layer protocol for one link, seen from one end. Sans-IO: the driver feeds
/// inputs and drains outputs; nothing here blocks or reads a clock.
pub trait LinkLayer: Send {
    /// A CREATE from the layer above. Returns the request's id (an ACK follows as an
    /// event) or fails at once (UNSUPPORTED, CREATE).
    fn create(&mut self, now: Time, request: CreateRequest) -> Result<CreateId, LinkErr>;
    /// A message from the peer's link layer.
    fn handle_message(&mut self, now: Time, payload: &[u8]);
    /// A herald from the broker.
    fn handle_herald(&mut self, now: Time, herald: Herald);
    /// The outcome of an [`Action::Measure`].
    fn handle_measured(&mut self, now: Time, seq: u64, outcome: u8);
    /// The peer is gone (its classical channel failed for good).
    fn handle_peer_lost(&mut self, now: Time);
    /// Time passed; called at or after [`LinkLayer::poll_timeout`].
    fn handle_timeout(&mut self, now: Time);
    /// The next time the protocol wants to be woken.
    fn poll_timeout(&self) -> Option<Time>;
    /// A message for the peer's link layer.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// A request for the broker.
    fn poll_action(&mut self) -> Option<Action>;
    /// An event for the layer above.
    fn poll_event(&mut self) -> Option<LinkEvent>;
    /// Which purpose ids this end accepts from the peer (`None`: all).
    fn set_accepted_purposes(&mut self, accepted: Option<Vec<u16>>);
}
