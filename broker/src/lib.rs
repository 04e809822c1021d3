//! The qnet broker: the one process that owns the joint quantum state of every qubit
//! in a network.
//!
//! # Layout
//! - [`engine`]: the pure quantum-state engine (no I/O, no async, injected RNG).

pub mod engine;
