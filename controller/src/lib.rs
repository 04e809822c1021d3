//! The qnet controller: deployment, supervision, workloads and reports.
//!
//! # Layout
//! - [`cli`]: the user commands of the `qnet` binary and their dispatch.

pub mod cli;
