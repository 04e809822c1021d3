//! The qnet broker: the one process that owns the joint quantum state of every qubit
//! in a network.
//!
//! # Layout
//! - [`engine`]: the pure quantum-state engine (no I/O, no async, injected RNG).
//! - [`links`]: every link's heralding station (sans-IO): when both ends attempt,
//!   successes at the link model's rate, pairs created in the engine.
//! - [`actor`]: the task that owns the engine and the links and answers requests in
//!   one order.
//! - [`service`]: the QUIC server around it and the `qnet broker` entry point.

pub mod actor;
pub mod engine;
pub mod links;
pub mod service;
