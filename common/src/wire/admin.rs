//! The controller → node admin API: the controller opens a bidirectional stream to a
//! node's classical endpoint, exchanges [`Hello`](super::Hello)s (its role is
//! `Controller`, checked against its certificate), then sends [`NodeRequest`]s and
//! reads [`NodeResponse`]s. Only the controller's certificate may use this API.

use serde::{Deserialize, Serialize};

use crate::ids::{Basis, QubitId};

/// A single-qubit state to teleport: the six cardinal states of the Bloch sphere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CardinalState {
    /// |0⟩
    Zero,
    /// |1⟩
    One,
    /// |+⟩ = (|0⟩ + |1⟩)/√2
    Plus,
    /// |−⟩ = (|0⟩ − |1⟩)/√2
    Minus,
    /// |+i⟩ = (|0⟩ + i|1⟩)/√2
    PlusI,
    /// |−i⟩ = (|0⟩ − i|1⟩)/√2
    MinusI,
}

impl CardinalState {
    /// All six, in declaration order.
    pub const ALL: [CardinalState; 6] = [
        CardinalState::Zero,
        CardinalState::One,
        CardinalState::Plus,
        CardinalState::Minus,
        CardinalState::PlusI,
        CardinalState::MinusI,
    ];

    /// The command-line name (`zero`, `one`, `plus`, `minus`, `plus_i`, `minus_i`).
    pub fn name(self) -> &'static str {
        match self {
            CardinalState::Zero => "zero",
            CardinalState::One => "one",
            CardinalState::Plus => "plus",
            CardinalState::Minus => "minus",
            CardinalState::PlusI => "plus_i",
            CardinalState::MinusI => "minus_i",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<CardinalState> {
        CardinalState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The state's amplitudes (α, β) of α|0⟩ + β|1⟩, as (re, im) pairs.
    pub fn amplitudes(self) -> [(f64, f64); 2] {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        match self {
            CardinalState::Zero => [(1.0, 0.0), (0.0, 0.0)],
            CardinalState::One => [(0.0, 0.0), (1.0, 0.0)],
            CardinalState::Plus => [(h, 0.0), (h, 0.0)],
            CardinalState::Minus => [(h, 0.0), (-h, 0.0)],
            CardinalState::PlusI => [(h, 0.0), (0.0, h)],
            CardinalState::MinusI => [(h, 0.0), (0.0, -h)],
        }
    }
}

/// A request from the controller to a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// Chosen by the controller; echoed in the response.
    pub id: u64,
    /// What to do.
    pub body: NodeRequestBody,
}

/// What the controller asks a node to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NodeRequestBody {
    /// Make `pairs` pairs with the neighbour `peer`; both ends measure every pair in
    /// `basis`; the peer sends its outcomes back over the classical channel and this
    /// node compares. Answered with [`NodeResponseBody::Epr`].
    RunEpr {
        /// The neighbour.
        peer: String,
        /// Number of pairs.
        pairs: u32,
        /// Basis both ends measure in.
        basis: Basis,
    },
    /// Teleport `shots` copies of `state` to the neighbour `peer`. The peer keeps the
    /// received qubits until the controller frees them (after checking them with the
    /// broker's oracle). Answered with [`NodeResponseBody::Teleport`].
    RunTeleport {
        /// The neighbour.
        peer: String,
        /// State to send.
        state: CardinalState,
        /// Number of copies.
        shots: u32,
    },
    /// Free qubits this node holds for the controller (e.g. teleported qubits).
    Free {
        /// The qubits.
        qubits: Vec<QubitId>,
    },
    /// Report this node's state.
    Status,
    /// Make `count` pairs with the neighbour `peer` and keep them: this node's halves
    /// are held for the controller, the peer's halves stay in its memory. Answered
    /// with [`NodeResponseBody::Pairs`]. For experiments and tests that need
    /// entanglement standing between two processes (e.g. to crash one of them).
    HoldPairs {
        /// The neighbour.
        peer: String,
        /// Number of pairs.
        count: u32,
    },
    /// Shut the node down gracefully.
    Shutdown,
    /// Run one CREATE on the link layer to the neighbour `peer` and report every
    /// pair and error. Answered with [`NodeResponseBody::Link`].
    RunLink {
        /// The neighbour.
        peer: String,
        /// The request.
        spec: LinkRunSpec,
    },
    /// Which purpose ids this node's link layer accepts from its peers (`None`: all).
    SetPurposes {
        /// Accepted purpose ids.
        accept: Option<Vec<u16>>,
    },
    /// Impair this node's outgoing classical traffic to `peer` (a chaos fault), on top
    /// of the latency of the fibre between them; `None` heals (back to the fibre's
    /// latency alone). Answered with `Done`.
    SetChaos {
        /// The peer node.
        peer: String,
        /// The impairment, or `None`.
        rule: Option<crate::shim::LinkRule>,
    },
    /// The impairments in force on this node's outgoing traffic and the socket
    /// shim's counters. Answered with [`NodeResponseBody::Chaos`].
    ChaosRules,
    /// The node's log of link-layer deliveries with `peer`: one entry per OK and
    /// per withdrawn (EXPIRE) pair. Answered with [`NodeResponseBody::LinkLog`].
    LinkLog {
        /// The neighbour.
        peer: String,
    },
}

/// How pairs of a link-layer request are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LinkKind {
    /// Kept in memory (the run frees them once delivered).
    Keep,
    /// Measured at once, both ends in this basis.
    Measure(Basis),
    /// Measured at once, each end in Z or X at random per pair.
    MeasureRandom,
}

/// A link-layer CREATE as the controller asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkRunSpec {
    /// Number of pairs.
    pub pairs: u32,
    /// Lowest acceptable fidelity.
    pub min_fidelity: f64,
    /// Longest wait, emulated seconds (infinite: none).
    pub max_time: f64,
    /// Purpose id.
    pub purpose: u16,
    /// Priority (0 first).
    pub priority: u8,
    /// Keep or measure.
    pub kind: LinkKind,
}

/// One delivered pair in a [`NodeResponseBody::Link`] report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkPairReport {
    /// Per-link sequence number.
    pub seq: u64,
    /// The link layer's fidelity estimate …
    pub goodness: f64,
    /// … at this emulated time, seconds.
    pub time_of_goodness: f64,
    /// Emulated seconds from the CREATE to this OK.
    pub latency: f64,
}

/// One entry of a node's link-layer log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLogEntry {
    /// True if this node made the request.
    pub local_origin: bool,
    /// The request's number at its origin.
    pub create_id: u32,
    /// The pair's sequence number.
    pub seq: u64,
    /// True for an OK, false for a withdrawal (EXPIRE).
    pub ok: bool,
}

/// A node's answer to a [`NodeRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeResponse {
    /// The request's id.
    pub id: u64,
    /// The result, or a one-line error for the user.
    pub body: Result<NodeResponseBody, String>,
}

/// Results of node requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NodeResponseBody {
    /// Done, nothing to report.
    Done,
    /// Result of [`NodeRequestBody::RunEpr`].
    Epr {
        /// Pairs made and measured at both ends.
        pairs: u32,
        /// Pairs whose outcomes agreed.
        agree: u32,
        /// Wall-clock seconds from the first request to the last comparison.
        seconds: f64,
    },
    /// Result of [`NodeRequestBody::RunTeleport`].
    Teleport {
        /// The teleported qubits, now held by the receiver, in shot order.
        received: Vec<QubitId>,
        /// Wall-clock seconds for all shots.
        seconds: f64,
    },
    /// Result of [`NodeRequestBody::HoldPairs`], seen from this node.
    Pairs {
        /// The pairs: `local` is held here, `remote` at the peer.
        pairs: Vec<crate::wire::Pair>,
    },
    /// Result of [`NodeRequestBody::RunLink`].
    Link {
        /// The request's number at this node.
        create_id: u32,
        /// Pairs delivered and not withdrawn.
        pairs: Vec<LinkPairReport>,
        /// Errors by code name (`TIMEOUT`, `EXPIRE`, …) with their counts.
        errors: Vec<(String, u32)>,
        /// Emulated seconds from the CREATE to the end of the request.
        emulated_seconds: f64,
        /// Wall seconds for the same.
        wall_seconds: f64,
    },
    /// Result of [`NodeRequestBody::LinkLog`].
    LinkLog {
        /// The entries, in the order they happened.
        entries: Vec<LinkLogEntry>,
    },
    /// Result of [`NodeRequestBody::ChaosRules`].
    Chaos {
        /// Per peer: the fault's rule (without the fibre latency).
        faults: Vec<(String, crate::shim::LinkRule)>,
        /// Per peer: the rule in force (fibre latency plus fault).
        effective: Vec<(String, crate::shim::LinkRule)>,
        /// Counters of the node's socket shim.
        stats: crate::shim::ShimStats,
    },
    /// Result of [`NodeRequestBody::Status`].
    Status {
        /// The node's name.
        name: String,
        /// Qubits the node holds.
        qubits: u32,
        /// Neighbours with an open classical connection.
        connected_peers: Vec<String>,
    },
}
