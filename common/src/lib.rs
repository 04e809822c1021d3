//! Shared pieces of qnet: the ids, wire protocol, topology model and helpers that the
//! broker, the nodes and the controller all speak.
//!
//! # Layout
//! - [`ids`]: node and qubit ids, Bell states, measurement bases.

pub mod ids;

pub use ids::{Basis, BellState, NodeId, QubitId};
