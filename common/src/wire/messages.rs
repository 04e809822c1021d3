//! The messages: hello, node/controller → broker requests and their responses, broker
//! → node events, and the node ↔ node classical envelope.
//!
//! Node names on the wire are the certificate identities of [`crate::tls`] (DNS
//! labels such as `alice`). Emulated times are nanoseconds of emulated time since the
//! deployment started (DESIGN §2).

use serde::{Deserialize, Serialize};

use crate::ids::{Basis, BellState, QubitId};

/// The protocol version this build speaks. Bump it for any change an older peer
/// cannot decode (see the module docs of [`crate::wire`]).
pub const PROTOCOL_VERSION: u32 = 1;

/// The most items one batch request may ask for: pairs in [`RequestBody::CreatePairs`],
/// qubits in [`RequestBody::Alloc`], [`RequestBody::Measure`], [`RequestBody::Reset`]
/// and [`RequestBody::Free`]. Chosen so that the largest request and its response
/// both fit in one [`MAX_FRAME`](super::MAX_FRAME) with room to spare.
pub const MAX_BATCH: u32 = 16_384;

/// The most qubits [`RequestBody::ReducedDensityMatrix`] may ask for: 2⁷ × 2⁷
/// complex entries are about 256 KiB on the wire.
pub const MAX_DENSITY_QUBITS: u32 = 7;

/// The first message on every connection, in both directions. It carries the
/// protocol version and the sender's role so that mismatches are reported clearly;
/// who the peer *is* comes from its certificate, not from here.
///
/// `version` is the first field and must stay so in every future version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What the sender is.
    pub role: Role,
}

impl Hello {
    /// A hello with this build's [`PROTOCOL_VERSION`].
    pub fn new(role: Role) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role,
        }
    }
}

/// The kind of process at one end of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// The broker that holds the quantum state.
    Broker,
    /// A quantum node, with its name (informational; the certificate decides).
    Node(String),
    /// The controller, the only identity allowed to make admin requests.
    Controller,
}

/// A client → broker request. The client picks `id`s (unique among its requests in
/// flight on one connection, e.g. a counter) and matches [`Response::id`] to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// What a [`Request`] asks the broker to do. Every qubit named in a request must be
/// owned by the requester (else [`ErrorBody::NotOwner`]) and alive (else
/// [`ErrorBody::NoSuchQubit`]); a batch is checked whole before any of it is applied,
/// so a refused batch changes nothing. Batches are limited to [`MAX_BATCH`] items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    /// Create `count` entangled pairs between the requester and its topology
    /// neighbour `link_peer`, directly and at once (no link physics beyond the
    /// fidelity). The requester gets [`ResponseBody::Pairs`]; the peer gets the same
    /// pairs, seen from its end, in one [`Event::PairsDelivered`], sent before the
    /// response. Each pair is a Werner state of fidelity `fidelity` (or the link's
    /// configured fidelity when `None`) around `bell`.
    CreatePairs {
        /// The node at the other end of the link.
        link_peer: String,
        /// How many pairs, 1 ..= [`MAX_BATCH`].
        count: u32,
        /// The target Bell state.
        bell: BellState,
        /// Werner fidelity with `bell` in \[0.25, 1\]; `None` = the link's own.
        fidelity: Option<f64>,
    },
    /// Start or stop attempting heralded entanglement on the link to `link_peer`.
    /// While both ends attempt for the same label and both have a free memory qubit,
    /// the broker, acting as the link's heralding station, makes pairs at the rate of
    /// the link model and delivers each to both ends as an [`Event::Heralded`].
    /// Answered with [`ResponseBody::Done`] at once; repeating a call is harmless.
    Attempt {
        /// The node at the other end of the link.
        link_peer: String,
        /// `Some(label)`: attempt from now on, for the link-layer queue item `label`
        /// (the broker, as the midpoint station, heralds only while both ends name
        /// the same label). `None`: stop attempting.
        label: Option<u64>,
    },
    /// Allocate `count` fresh qubits in |0⟩. Answered with [`ResponseBody::Qubits`].
    Alloc {
        /// How many, 1 ..= [`MAX_BATCH`].
        count: u32,
    },
    /// Apply `gate`. A single-qubit gate acts on `qubit` and needs `second = None`; a
    /// two-qubit gate needs `second = Some(..)`, different from `qubit`: for
    /// [`Gate::Cnot`] `qubit` is the control and `second` the target (CZ and SWAP are
    /// symmetric). A wrong number of qubits is [`ErrorBody::BadRequest`]. Answered
    /// with [`ResponseBody::Done`].
    Gate {
        /// The gate.
        gate: Gate,
        /// The qubit, or the control of a CNOT.
        qubit: QubitId,
        /// The second qubit of a two-qubit gate (the CNOT target).
        second: Option<QubitId>,
    },
    /// Measure each qubit in its basis, in order, and — when `free` — free them
    /// afterwards (the usual case: a measured qubit is rarely reused). Answered with
    /// [`ResponseBody::Outcomes`], one outcome per qubit in request order. A qubit
    /// named twice is [`ErrorBody::BadRequest`].
    Measure {
        /// The qubits and the basis to measure each in.
        qubits: Vec<(QubitId, Basis)>,
        /// Free the qubits after measuring.
        free: bool,
    },
    /// Reset each qubit to |0⟩ (measure, then flip if needed; the outcome is not
    /// reported). Answered with [`ResponseBody::Done`].
    Reset {
        /// The qubits to reset.
        qubits: Vec<QubitId>,
    },
    /// Free (trace out) each qubit; its id is dead afterwards. Partners of a freed
    /// qubit are left in the corresponding mixed state. Answered with
    /// [`ResponseBody::Done`].
    Free {
        /// The qubits to free.
        qubits: Vec<QubitId>,
    },
    /// Send `qubit` over the quantum channel to the neighbour `to`. The requester's
    /// handle dies at once (answered with [`ResponseBody::Done`]); after the flight
    /// delay, unless the channel loses it, `to` gets an [`Event::QubitArrived`] with a
    /// new id and the same `tag`. The sender is not told whether it arrived.
    Transfer {
        /// The qubit to send.
        qubit: QubitId,
        /// The receiving neighbour.
        to: String,
        /// Chosen by the sender and handed to the receiver, so that the receiver can
        /// tell which protocol run the qubit belongs to (the emulated equivalent of a
        /// time bin).
        tag: u64,
    },
    /// The broker's current emulated time. Answered with [`ResponseBody::Now`]; also a
    /// cheap liveness probe.
    Now,
    /// Admin: the exact fidelity of the two-qubit state of `a` and `b` (in that order)
    /// with `bell`. Any owners. Answered with [`ResponseBody::Fidelity`].
    Fidelity {
        /// First qubit.
        a: QubitId,
        /// Second qubit.
        b: QubitId,
        /// The Bell state to compare with.
        bell: BellState,
    },
    /// Admin: the reduced density matrix of `qubits` (at most [`MAX_DENSITY_QUBITS`],
    /// no repeats, any owners). Answered with [`ResponseBody::DensityMatrix`].
    ReducedDensityMatrix {
        /// The qubits to keep; everything else is traced out.
        qubits: Vec<QubitId>,
    },
    /// Admin: broker counters. Answered with [`ResponseBody::Stats`].
    Stats,
    /// Admin: shut the broker down. Answered with [`ResponseBody::Done`] before the
    /// broker closes every connection with [`CloseCode::Shutdown`](super::CloseCode::Shutdown).
    Shutdown,
    /// Node → broker: "my classical (node-to-node) endpoint listens here". The broker
    /// keeps a directory of these so nodes can find each other on any host.
    Announce {
        /// Socket address, e.g. `127.0.0.1:4433`.
        addr: String,
    },
    /// Admin: the broker's record of the heralds on the link between `a` and `b`
    /// with sequence numbers above `after_seq` (at most `max` of them), each with the
    /// oracle's fidelity at the moment of the herald. Answered with
    /// [`ResponseBody::HeraldLog`].
    HeraldLog {
        /// One end of the link.
        a: String,
        /// The other end.
        b: String,
        /// Only heralds with a larger sequence number.
        after_seq: u64,
        /// At most this many records.
        max: u32,
    },
    /// Admin: a quantum fault on the link between `a` and `b`: from now on its pairs
    /// have Werner fidelity `fidelity` (if given), and it is up or down (if given).
    SetLink {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// New fidelity of fresh pairs, in \[0.25, 1\].
        fidelity: Option<f64>,
        /// `Some(false)`: no pair is made until `Some(true)`.
        up: Option<bool>,
    },
    /// Admin: a node's memory changes from now on (qubits it holds first decohere
    /// under the old parameters up to now). Seconds; infinite: none.
    SetMemory {
        /// The node.
        node: String,
        /// New T1, if given.
        t1: Option<f64>,
        /// New T2, if given (at most 2·T1).
        t2: Option<f64>,
    },
    /// Where does this node's classical endpoint listen? Answered with
    /// [`ResponseBody::Address`], or `NodeDown` if it has not announced one.
    Lookup {
        /// Node name.
        name: String,
    },
}

impl RequestBody {
    /// True for the requests only the controller's identity may make.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            RequestBody::Fidelity { .. }
                | RequestBody::ReducedDensityMatrix { .. }
                | RequestBody::Stats
                | RequestBody::Shutdown
                | RequestBody::HeraldLog { .. }
                | RequestBody::SetLink { .. }
                | RequestBody::SetMemory { .. }
        )
    }

    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestBody::CreatePairs { .. } => "create_pairs",
            RequestBody::Attempt { .. } => "attempt",
            RequestBody::Alloc { .. } => "alloc",
            RequestBody::Gate { .. } => "gate",
            RequestBody::Measure { .. } => "measure",
            RequestBody::Reset { .. } => "reset",
            RequestBody::Free { .. } => "free",
            RequestBody::Transfer { .. } => "transfer",
            RequestBody::Now => "now",
            RequestBody::Fidelity { .. } => "fidelity",
            RequestBody::ReducedDensityMatrix { .. } => "reduced_density_matrix",
            RequestBody::Stats => "stats",
            RequestBody::Shutdown => "shutdown",
            RequestBody::Announce { .. } => "announce",
            RequestBody::Lookup { .. } => "lookup",
            RequestBody::HeraldLog { .. } => "herald_log",
            RequestBody::SetLink { .. } => "set_link",
            RequestBody::SetMemory { .. } => "set_memory",
        }
    }

    /// A single-qubit gate request.
    pub fn gate1(gate: Gate, qubit: QubitId) -> RequestBody {
        RequestBody::Gate {
            gate,
            qubit,
            second: None,
        }
    }

    /// A two-qubit gate request (`first` is the CNOT control).
    pub fn gate2(gate: Gate, first: QubitId, second: QubitId) -> RequestBody {
        RequestBody::Gate {
            gate,
            qubit: first,
            second: Some(second),
        }
    }
}

/// A quantum gate (DESIGN §3). Angles are radians.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Gate {
    /// Pauli X.
    X,
    /// Pauli Y.
    Y,
    /// Pauli Z.
    Z,
    /// Hadamard.
    H,
    /// Phase gate S = diag(1, i).
    S,
    /// S† = diag(1, −i).
    Sdg,
    /// T = diag(1, e^{iπ/4}).
    T,
    /// T† = diag(1, e^{−iπ/4}).
    Tdg,
    /// Rotation about X: e^{−iθX/2}.
    Rx(f64),
    /// Rotation about Y: e^{−iθY/2}.
    Ry(f64),
    /// Rotation about Z: e^{−iθZ/2}.
    Rz(f64),
    /// Controlled NOT (control first).
    Cnot,
    /// Controlled Z.
    Cz,
    /// SWAP.
    Swap,
}

impl Gate {
    /// How many qubits the gate acts on: 1 or 2.
    pub fn arity(self) -> usize {
        match self {
            Gate::Cnot | Gate::Cz | Gate::Swap => 2,
            _ => 1,
        }
    }
}

/// One entangled pair as seen from the end a message is addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The pair's sequence number on its link, counted per link from 1; both ends see
    /// the same number, so they can agree on which pair is which.
    pub seq: u64,
    /// The half owned by the receiver of this message.
    pub local: QubitId,
    /// The half owned by the other end (informational: only its owner can use it).
    pub remote: QubitId,
    /// The Bell state the pair was created or heralded in, before noise, with `local`
    /// as the first qubit.
    pub bell: BellState,
    /// Emulated time the pair was made (for a herald: the successful emission; the
    /// qubits have decohered in memory since), ns.
    pub created_ns: u64,
}

/// The broker's answer to the [`Request`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The result, or why the request was refused.
    pub body: Result<ResponseBody, ErrorBody>,
}

/// The result of a request that succeeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Done, nothing to report ([`RequestBody::Attempt`], `Gate`, `Reset`, `Free`,
    /// `Transfer`, `Shutdown`).
    Done,
    /// Fresh qubits ([`RequestBody::Alloc`]), in allocation order.
    Qubits(Vec<QubitId>),
    /// The pairs made by [`RequestBody::CreatePairs`], seen from the requester's end.
    Pairs(Vec<Pair>),
    /// Measurement outcomes ([`RequestBody::Measure`]), 0 or 1, in request order.
    /// Outcome 0 is the +1 eigenstate of the basis.
    Outcomes(Vec<u8>),
    /// The broker's emulated time ([`RequestBody::Now`]), ns.
    Now {
        /// Emulated nanoseconds since the deployment started.
        t_emu_ns: u64,
    },
    /// Fidelity in \[0, 1\] ([`RequestBody::Fidelity`]).
    Fidelity(f64),
    /// A density matrix ([`RequestBody::ReducedDensityMatrix`]) of dimension
    /// 2^`qubits`, row-major, as (re, im) pairs. Basis states are numbered with the
    /// first requested qubit as the most significant bit (|q₀q₁…⟩).
    DensityMatrix {
        /// Number of qubits; the matrix is 2^qubits × 2^qubits.
        qubits: u32,
        /// 4^qubits entries, row-major.
        entries: Vec<(f64, f64)>,
    },
    /// Broker counters ([`RequestBody::Stats`]).
    Stats(BrokerStats),
    /// Answer to [`RequestBody::Lookup`]: a socket address.
    Address(String),
    /// Answer to [`RequestBody::HeraldLog`], in sequence order.
    HeraldLog(Vec<HeraldRecord>),
}

/// Broker counters returned by [`RequestBody::Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Emulated time now, ns.
    pub t_emu_ns: u64,
    /// Wall-clock time since the broker started, ns.
    pub uptime_ns: u64,
    /// Connections currently open.
    pub connections: u32,
    /// Qubits currently alive.
    pub live_qubits: u64,
    /// Registers (groups of mutually entangled qubits) currently held.
    pub registers: u64,
    /// Qubits in the largest register.
    pub largest_register: u32,
    /// Pairs created or heralded since start.
    pub pairs_created: u64,
    /// Gates applied since start.
    pub gates: u64,
    /// Qubits measured since start.
    pub measurements: u64,
    /// Requests handled since start.
    pub requests: u64,
    /// Requests refused with an [`ErrorBody`] since start.
    pub errors: u64,
}

/// Why the broker refused a request. The connection stays open; nothing the request
/// would have changed was changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorBody {
    /// The requester does not own `qubit`; `owner` names the node that does, if it is
    /// alive.
    #[error("{qubit} is not yours (owner: {})", owner.as_deref().unwrap_or("nobody"))]
    NotOwner {
        /// The qubit.
        qubit: QubitId,
        /// Its current owner.
        owner: Option<String>,
    },
    /// `qubit` was never handed out, or was freed, measured-and-freed, transferred or
    /// lost.
    #[error("no such qubit: {qubit}")]
    NoSuchQubit {
        /// The qubit.
        qubit: QubitId,
    },
    /// The operation would merge registers into one of `size` qubits, more than the
    /// broker's `cap`.
    #[error("register of {size} qubits would exceed the cap of {cap}")]
    RegisterTooLarge {
        /// Qubits the merged register would have.
        size: u32,
        /// The configured cap.
        cap: u32,
    },
    /// An admin request from an identity other than the controller.
    #[error("admin requests are for the controller only")]
    NotAdmin,
    /// No node of that name is in the topology.
    #[error("unknown node: {0}")]
    UnknownNode(String),
    /// The requester and `peer` are not joined by a link of the topology (pair
    /// creation, attempts and transfers need one).
    #[error("not neighbours: {peer}")]
    NotNeighbours {
        /// The requested peer.
        peer: String,
    },
    /// `peer` is in the topology but not connected to the broker (crashed, killed or
    /// not yet started), so nothing can be delivered to it.
    #[error("node is down: {0}")]
    NodeDown(String),
    /// A batch asked for `len` items, more than `max` ([`MAX_BATCH`] or
    /// [`MAX_DENSITY_QUBITS`]).
    #[error("batch of {len} exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Items asked for.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The request is well-formed but makes no sense (wrong gate arity, a qubit named
    /// twice, count 0, fidelity out of range, …); the text says what.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The broker is shutting down and takes no more requests.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// The broker failed internally; the text is for humans. The request may or may
    /// not have taken effect.
    #[error("internal broker error: {0}")]
    Internal(String),
}

/// A message the broker pushes to a node on its event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Pairs on the link to `peer` were created ([`RequestBody::CreatePairs`] by
    /// `peer`) or heralded ([`RequestBody::Attempt`]); the receiver owns each
    /// [`Pair::local`].
    PairsDelivered {
        /// The node at the other end.
        peer: String,
        /// The pairs, from the receiver's end, in sequence order.
        pairs: Vec<Pair>,
    },
    /// A qubit sent by `from` with [`RequestBody::Transfer`] arrived and is now owned
    /// by the receiver under the new id `qubit`.
    QubitArrived {
        /// The receiver's new handle.
        qubit: QubitId,
        /// The sending neighbour.
        from: String,
        /// The sender's tag.
        tag: u64,
    },
    /// Sent to the controller only: node `name` disconnected and its qubits were
    /// traced out. Nodes are never told (DESIGN §4): they find out over the classical
    /// network.
    NodeLost {
        /// The lost node.
        name: String,
    },
    /// A heralded pair on the link to `peer`, sent to both ends at the emulated time
    /// the herald reaches them. `pair.created_ns` is the emission time: the qubits
    /// have decohered in memory since then.
    Heralded {
        /// The node at the other end of the link.
        peer: String,
        /// The label both ends attempted for.
        label: u64,
        /// The pair, seen from the receiving end; `bell` is the heralded Bell state.
        pair: Pair,
        /// Emulated time of the herald, ns.
        heralded_ns: u64,
    },
}

/// One herald as the broker recorded it (admin only).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeraldRecord {
    /// Per-link sequence number.
    pub seq: u64,
    /// The link-layer label both ends attempted for.
    pub label: u64,
    /// The Bell state the herald announced.
    pub bell: BellState,
    /// Emulated time of the successful emission, ns.
    pub emitted_ns: u64,
    /// Emulated time the herald reached the nodes, ns.
    pub heralded_ns: u64,
    /// The oracle's fidelity of the pair with `bell` at `heralded_ns`.
    pub fidelity: f64,
}

/// A node ↔ node classical message: an opaque payload for the application or
/// protocol layer `app`. The sender is the peer's certificate identity, so it is not
/// repeated here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classical {
    /// Which protocol or application on the receiving node the payload is for
    /// (e.g. `"link"`, `"qkd"`).
    pub app: String,
    /// The protocol's own encoding of its message.
    pub payload: Vec<u8>,
}
