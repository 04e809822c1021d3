//! The qnet controller: deployment, supervision, workloads and reports.
//!
//! # Layout
//! - [`cli`]: the user commands of the `qnet` binary and their dispatch.
//! - [`record`]: the deployment record (`deployment.json`) and how a command finds
//!   its run folder.
//! - [`procs`]: local processes: start with a log file, wait for READY, liveness,
//!   signals, memory, log tails.
//! - [`deploy`]: `qnet up` and `qnet down`.
//! - [`client`]: async clients for the broker's and the nodes' admin APIs.
//! - [`status`]: `qnet status`, `qnet logs` and text tables.
//! - [`run`]: `qnet run epr|teleport`.
//! - [`bench`](mod@bench): `qnet bench epr|up`, end-to-end measurements.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod deploy;
pub mod procs;
pub mod record;
pub mod run;
pub mod scenario;
pub mod status;
