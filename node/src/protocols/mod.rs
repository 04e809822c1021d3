//! The node's protocol stack as sans-IO state machines: each takes inputs with the
//! emulated time (`handle_*(…, now)`), and hands back what to send, what to ask the
//! broker and what to tell the layer above through `poll_*` calls, plus the next time
//! it wants to be woken (`poll_timeout`). The async drivers in the node only move
//! those in and out, so every protocol is tested deterministically in one process.
//!
//! # Layout
//! - [`link`]: the link-layer service interface (CREATE, OK, ERR) and the trait every
//!   link-layer protocol implements.
//! - [`egp`]: the entanglement generation protocol with a distributed queue, after
//!   Dahlberg et al., "A link layer protocol for quantum networks", SIGCOMM 2019.

pub mod egp;
pub mod link;
