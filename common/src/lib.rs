//! Shared pieces of qnet: the ids, wire protocol, topology model and helpers that the
//! broker, the nodes and the controller all speak.
//!
//! # Layout
//! - [`ids`]: node and qubit ids, Bell states, measurement bases.
//! - [`wire`]: the messages every process exchanges, their postcard codec, length-prefixed
//!   framing, the versioned hello and QUIC close codes.
//! - [`tls`]: the deployment CA, per-process certificates, mutual-TLS QUIC configs and
//!   [`tls::peer_identity`].
//! - [`topology`]: the topology file model, its parser and validator.
//! - [`physics`]: link models (success probability, cycle, herald delay, fidelity)
//!   and the decay of a pair's fidelity in memory.
//! - [`telemetry`]: the logging set-up every process shares.
//! - [`rundir`]: the layout of a deployment's run folder.
//! - [`shim`]: the UDP socket shim under every quinn endpoint: per-peer delay, jitter,
//!   loss, duplication, reordering, rate limits and partitions, steered at run time.

pub mod ids;
pub mod physics;
pub mod rundir;
pub mod shim;
pub mod telemetry;
pub mod tls;
pub mod topology;
pub mod wire;

pub use ids::{Basis, BellState, NodeId, QubitId};
