//! `qnet bench …`: end-to-end measurements on real processes (DESIGN §8). Each bench
//! deploys into a fresh folder under the system temp folder, measures, and always
//! tears the deployment down again: `epr` (pairs measured at both ends), `link`
//! (one keep-type link-layer request), `up` (start-up time and memory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use qnet_common::Basis;
use qnet_common::wire::{LinkKind, LinkRunSpec};
use serde::Serialize;

use crate::deploy::{self, Deployed, UpOptions};
use crate::procs;
use crate::record::ProcessRole;
use crate::run::{self, Target};

/// The two-node network of the benchmarks: one ideal link (every attempt succeeds,
/// one attempt per emulated microsecond at 0 km), memories that never decohere and
/// `memory_qubits` of them, so every pair agrees and only the system's speed is
/// measured. `bench epr` and `bench link` differ only in name and memory.
pub fn bench_topology(bench: &str, memory_qubits: u32) -> String {
    format!(
        r#"# Written by `qnet bench {bench}`.
[network]
name = "bench-{bench}"
seed = 1

[defaults.node]
memory_qubits = {memory_qubits}
t1 = "inf"
t2 = "inf"
gate_error = 0.0
readout_error = 0.0

[[nodes]]
name = "alice"

[[nodes]]
name = "bob"

[[links]]
a = "alice"
b = "bob"
model = "ideal"
length_km = 0.0
fidelity = 1.0
"#
    )
}

/// Result of `qnet bench epr`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EprBench {
    /// Pairs made.
    pub pairs: u32,
    /// Fraction that agreed (1 on this ideal network).
    pub agree: f64,
    /// Pairs per second.
    pub pairs_per_s: f64,
    /// Seconds the node took.
    pub seconds: f64,
    /// Seconds `up` took until every process was ready.
    pub up_seconds: f64,
    /// Largest resident memory of a node after the run, MiB.
    pub node_rss_mb: f64,
    /// Resident memory of the broker after the run, MiB.
    pub broker_rss_mb: f64,
}

/// Result of `qnet bench link`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkBench {
    /// Pairs asked for.
    pub pairs: u32,
    /// Pairs delivered.
    pub delivered: usize,
    /// Delivered pairs per wall second, over the node's own timing.
    pub pairs_per_s: f64,
    /// Wall seconds the node took for the request.
    pub seconds: f64,
    /// Emulated seconds of the same.
    pub emulated_seconds: f64,
    /// Mean oracle fidelity of the delivered pairs (1 on this ideal link).
    pub oracle_fidelity_mean: Option<f64>,
    /// Errors by code, if any.
    pub errors: std::collections::BTreeMap<String, u32>,
    /// Seconds `up` took until every process was ready.
    pub up_seconds: f64,
    /// Largest resident memory of a node after the run, MiB.
    pub node_rss_mb: f64,
    /// Resident memory of the broker after the run, MiB.
    pub broker_rss_mb: f64,
}

/// Result of `qnet bench up`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpBench {
    /// The network.
    pub network: String,
    /// Nodes started.
    pub nodes: usize,
    /// Seconds `up` took until every process was ready.
    pub up_seconds: f64,
    /// Largest resident memory of a node once ready, MiB.
    pub node_rss_mb: f64,
    /// Resident memory of the broker once ready, MiB.
    pub broker_rss_mb: f64,
}

/// A fresh folder for one bench run, removed on drop unless kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!(
            "qnet-bench-{what}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("run folder kept: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The largest node RSS and the broker's RSS, MiB.
fn memory(deployed: &Deployed) -> (f64, f64) {
    let (mut node, mut broker) = (0.0f64, 0.0f64);
    for p in &deployed.deployment.processes {
        let rss = procs::rss_mb(p.pid).unwrap_or(0.0);
        match p.role {
            ProcessRole::Node => node = node.max(rss),
            ProcessRole::Broker => broker = rss,
        }
    }
    (node, broker)
}

/// Deploys `topology` into `scratch`, runs `work`, and tears down whatever happens.
async fn with_deployment<T>(
    exe: PathBuf,
    topology: PathBuf,
    scratch: &mut Scratch,
    work: impl AsyncFnOnce(&Deployed) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let options = UpOptions {
        topology,
        run_dir: Some(scratch.path.join("run")),
        exe,
        nodes_timeout: None,
        progress: true,
    };
    let mut deployed = match deploy::up(&options).await {
        Ok(d) => d,
        Err(e) => {
            scratch.keep = true;
            return Err(e);
        }
    };
    // `up` took over Ctrl-C; keep honouring it so an interrupted bench still tears
    // its deployment down.
    let result = tokio::select! {
        result = work(&deployed) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; tearing down")),
    };
    let down = deploy::down(&deployed.run_dir, &deployed.deployment).await;
    deploy::reap(&mut deployed.children);
    if result.is_err() || down.is_err() {
        scratch.keep = true;
    }
    let value = result?;
    down.context("tearing the bench deployment down")?;
    Ok(value)
}

/// `qnet bench epr --pairs N`.
pub async fn epr(exe: PathBuf, pairs: u32, keep: bool) -> anyhow::Result<EprBench> {
    let mut scratch = Scratch::new("epr")?;
    scratch.keep = keep;
    let file = scratch.path.join("bench-epr.toml");
    std::fs::write(&file, bench_topology("epr", 1024))
        .with_context(|| format!("cannot write {}", file.display()))?;
    with_deployment(exe, file, &mut scratch, async |deployed: &Deployed| {
        let target = Target::load(deployed.run_dir.clone())?;
        let timeout = Duration::from_secs(60) + Duration::from_millis(u64::from(pairs));
        let report = run::epr(&target, "alice", "bob", pairs, Basis::Z, timeout).await?;
        let (node_rss_mb, broker_rss_mb) = memory(deployed);
        Ok(EprBench {
            pairs: report.pairs,
            agree: report.agree,
            pairs_per_s: report.pairs_per_s,
            seconds: report.seconds,
            up_seconds: deployed.seconds,
            node_rss_mb,
            broker_rss_mb,
        })
    })
    .await
}

/// `qnet bench link --pairs N`: one keep-type request of `pairs` pairs on the
/// ideal link of [`bench_topology`].
pub async fn link(exe: PathBuf, pairs: u32, keep: bool) -> anyhow::Result<LinkBench> {
    let mut scratch = Scratch::new("link")?;
    scratch.keep = keep;
    let file = scratch.path.join("bench-link.toml");
    std::fs::write(&file, bench_topology("link", 4096))
        .with_context(|| format!("cannot write {}", file.display()))?;
    with_deployment(exe, file, &mut scratch, async |deployed: &Deployed| {
        let target = Target::load(deployed.run_dir.clone())?;
        let timeout = Duration::from_secs(60) + Duration::from_millis(u64::from(pairs));
        let spec = LinkRunSpec {
            pairs,
            min_fidelity: 0.0,
            max_time: f64::INFINITY,
            purpose: 0,
            priority: 0,
            kind: LinkKind::Keep,
        };
        let report = run::link(&target, "alice", "bob", spec, timeout).await?;
        let (node_rss_mb, broker_rss_mb) = memory(deployed);
        Ok(LinkBench {
            pairs,
            delivered: report.delivered,
            pairs_per_s: report.rate_wall_hz,
            seconds: report.wall_seconds,
            emulated_seconds: report.emulated_seconds,
            oracle_fidelity_mean: report.oracle_fidelity_mean,
            errors: report.errors,
            up_seconds: deployed.seconds,
            node_rss_mb,
            broker_rss_mb,
        })
    })
    .await
}

/// `qnet bench up FILE`.
pub async fn up(exe: PathBuf, topology: PathBuf, keep: bool) -> anyhow::Result<UpBench> {
    let mut scratch = Scratch::new("up")?;
    scratch.keep = keep;
    with_deployment(exe, topology, &mut scratch, async |deployed: &Deployed| {
        let (node_rss_mb, broker_rss_mb) = memory(deployed);
        Ok(UpBench {
            network: deployed.deployment.network.clone(),
            nodes: deployed.deployment.nodes().count(),
            up_seconds: deployed.seconds,
            node_rss_mb,
            broker_rss_mb,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_topology_is_valid() {
        for (bench, memory) in [("epr", 1024), ("link", 4096)] {
            let text = bench_topology(bench, memory);
            let t = qnet_common::topology::Topology::parse(&text, "bench").unwrap();
            assert_eq!(t.nodes.len(), 2);
            assert!(t.are_neighbours("alice", "bob"));
            assert_eq!(t.nodes[0].memory_qubits, memory);
        }
    }
}
