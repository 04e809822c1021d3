//! `qnet run APP …`: workloads started at one node and checked by the controller.
//!
//! - `epr`: node A makes pairs with its neighbour B; both measure in one basis and A
//!   counts agreements.
//! - `teleport`: node A teleports copies of a cardinal state to B; the controller
//!   asks the broker's oracle for each received qubit's density matrix, computes the
//!   fidelity with the state sent, then has B free the qubits.
//! - `link`: one link-layer CREATE from A to B as the user specifies it; the
//!   controller matches the delivered pairs with the broker's herald log to compare
//!   the link layer's goodness with the oracle's fidelity.
//! - `link-log`: a node's log of link-layer deliveries with a neighbour.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use qnet_common::Basis;
use qnet_common::BellState;
use qnet_common::QubitId;
use qnet_common::physics::{HeraldedBell, LinkPhysics, Memory, decayed_fidelity};
use qnet_common::rundir::RunDir;
use qnet_common::topology::Topology;
use qnet_common::wire::{
    CardinalState, LinkLogEntry, LinkRunSpec, MAX_BATCH, NodeRequestBody, NodeResponseBody,
    RequestBody, ResponseBody,
};
use serde::Serialize;

use crate::client::Session;
use crate::procs;
use crate::record::{Deployment, ProcessRole};

/// At most this many names are listed in an error message.
const LIST_MAX: usize = 8;

/// `a, b, c` — or the first few and how many more.
pub fn short_list(names: &[&str]) -> String {
    if names.len() <= LIST_MAX {
        names.join(", ")
    } else {
        format!(
            "{}, … ({} more)",
            names[..LIST_MAX].join(", "),
            names.len() - LIST_MAX
        )
    }
}

/// Checks that `from` and `to` are distinct nodes of `topology` joined by a link;
/// the error is one line saying what is wrong.
pub fn check_link(topology: &Topology, from: &str, to: &str) -> anyhow::Result<()> {
    let known = || {
        let names: Vec<&str> = topology.nodes.iter().map(|n| n.name.as_str()).collect();
        short_list(&names)
    };
    for name in [from, to] {
        if topology.node_index(name).is_none() {
            bail!(
                "unknown node: {name} (network {} has {})",
                topology.name,
                known()
            );
        }
    }
    if from == to {
        bail!("--from and --to are the same node ({from})");
    }
    if !topology.are_neighbours(from, to) {
        let i = topology.node_index(from).expect("checked above");
        let neighbours: Vec<&str> = topology
            .neighbours(i)
            .map(|j| topology.nodes[j].name.as_str())
            .collect();
        bail!(
            "{from} and {to} are not neighbours in {} ({from}'s neighbours: {})",
            topology.name,
            if neighbours.is_empty() {
                "none".to_owned()
            } else {
                short_list(&neighbours)
            }
        );
    }
    Ok(())
}

/// A deployment a workload runs on: its record, topology and folder.
#[derive(Debug)]
pub struct Target {
    /// The run folder.
    pub run_dir: RunDir,
    /// The record.
    pub deployment: Deployment,
    /// The topology it was started with.
    pub topology: Topology,
}

impl Target {
    /// Loads the deployment in `run_dir` and its topology.
    pub fn load(run_dir: RunDir) -> anyhow::Result<Target> {
        let deployment = crate::record::load_running(&run_dir)?;
        let topology = Topology::load(run_dir.topology())?;
        Ok(Target {
            run_dir,
            deployment,
            topology,
        })
    }

    /// The address of node `name`, which must be running.
    fn node_addr(&self, name: &str) -> anyhow::Result<std::net::SocketAddr> {
        let p = self
            .deployment
            .process(name)
            .filter(|p| p.role == ProcessRole::Node)
            .ok_or_else(|| anyhow!("node {name} is not part of this deployment"))?;
        if !procs::is_alive(p.pid, &self.deployment.exe, &self.deployment.run_dir) {
            bail!("node {name} is down (see `qnet logs {name}`)");
        }
        p.addr
            .ok_or_else(|| anyhow!("node {name} never became ready (see `qnet logs {name}`)"))
    }

    /// The broker's address; it must be running.
    fn broker_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let b = self
            .deployment
            .broker()
            .ok_or_else(|| anyhow!("the deployment has no broker"))?;
        if !procs::is_alive(b.pid, &self.deployment.exe, &self.deployment.run_dir) {
            bail!("the broker is down (see `qnet logs broker`)");
        }
        b.addr
            .ok_or_else(|| anyhow!("the broker never became ready (see `qnet logs broker`)"))
    }
}

/// Result of `qnet run epr`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EprReport {
    /// Pairs made and measured at both ends.
    pub pairs: u32,
    /// Fraction of pairs whose outcomes agreed, 0..1.
    pub agree: f64,
    /// Pairs per second, over the node's own timing.
    pub pairs_per_s: f64,
    /// Seconds the node took.
    pub seconds: f64,
    /// Seconds the whole command took, connecting included.
    pub wall_seconds: f64,
}

/// Runs `epr` from `from` to `to`.
pub async fn epr(
    target: &Target,
    from: &str,
    to: &str,
    pairs: u32,
    basis: Basis,
    timeout: Duration,
) -> anyhow::Result<EprReport> {
    check_link(&target.topology, from, to)?;
    if pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    target.node_addr(to)?;
    let addr = target.node_addr(from)?;
    let start = Instant::now();
    let session = Session::new(&target.run_dir)?;
    let result = async {
        let mut node = session.node(from, addr).await?;
        let body = NodeRequestBody::RunEpr {
            peer: to.to_owned(),
            pairs,
            basis,
        };
        let answer = with_timeout(timeout, "epr", node.request(body)).await?;
        node.close();
        match answer {
            NodeResponseBody::Epr {
                pairs,
                agree,
                seconds,
            } => Ok(EprReport {
                pairs,
                agree: if pairs == 0 {
                    0.0
                } else {
                    f64::from(agree) / f64::from(pairs)
                },
                pairs_per_s: rate(pairs as usize, seconds),
                seconds,
                wall_seconds: start.elapsed().as_secs_f64(),
            }),
            other => bail!("node {from} answered epr with {other:?}"),
        }
    }
    .await;
    session.close().await;
    result
}

/// Result of `qnet run teleport`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TeleportReport {
    /// Shots asked for.
    pub shots: u32,
    /// Qubits that arrived at the receiver.
    pub received: usize,
    /// Mean fidelity of the received qubits with the state sent.
    pub fidelity: f64,
    /// The worst fidelity.
    pub fidelity_min: f64,
    /// Teleports per second, over the node's own timing.
    pub teleports_per_s: f64,
    /// Seconds the node took for all shots.
    pub seconds: f64,
    /// Seconds the whole command took, oracle and freeing included.
    pub wall_seconds: f64,
}

/// Runs `teleport` of `state` from `from` to `to`, `shots` times.
pub async fn teleport(
    target: &Target,
    from: &str,
    to: &str,
    state: CardinalState,
    shots: u32,
    timeout: Duration,
) -> anyhow::Result<TeleportReport> {
    check_link(&target.topology, from, to)?;
    if shots == 0 {
        bail!("--shots must be at least 1");
    }
    let to_addr = target.node_addr(to)?;
    let from_addr = target.node_addr(from)?;
    let broker_addr = target.broker_addr()?;
    let start = Instant::now();
    let session = Session::new(&target.run_dir)?;
    // The receiver keeps every teleported qubit until the oracle has checked it, so
    // shots go in rounds that fit in its memory; each round is checked and freed
    // before the next.
    let round = target
        .topology
        .node(to)
        .map_or(1, |n| n.memory_qubits.max(1));
    let result = async {
        let mut sender = session.node(from, from_addr).await?;
        let mut broker = session.broker(broker_addr).await?;
        let (mut checked_fidelities, mut received_total, mut seconds) = (Vec::new(), 0usize, 0.0);
        let mut left = shots;
        while left > 0 {
            let n = left.min(round);
            left -= n;
            let body = NodeRequestBody::RunTeleport {
                peer: to.to_owned(),
                state,
                shots: n,
            };
            let answer = with_timeout(timeout, "teleport", sender.request(body)).await?;
            let received = match answer {
                NodeResponseBody::Teleport {
                    received,
                    seconds: s,
                } => {
                    seconds += s;
                    received
                }
                other => bail!("node {from} answered teleport with {other:?}"),
            };
            received_total += received.len();
            // Check the qubits, then free them whatever the check says.
            let checked = with_timeout(
                timeout,
                "the oracle",
                fidelities(&mut broker, &received, state),
            )
            .await;
            let freed = free(&session, to, to_addr, &received).await;
            checked_fidelities.extend(checked?);
            freed?;
        }
        sender.close();
        broker.close();
        let fidelities = checked_fidelities;
        if fidelities.is_empty() {
            bail!("none of the {shots} teleported qubits arrived at {to}");
        }
        let n = fidelities.len() as f64;
        Ok(TeleportReport {
            shots,
            received: received_total,
            fidelity: fidelities.iter().sum::<f64>() / n,
            fidelity_min: fidelities.iter().copied().fold(f64::INFINITY, f64::min),
            teleports_per_s: rate(received_total, seconds),
            seconds,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
    .await;
    session.close().await;
    result
}

/// Purpose id of `qnet run epr` (the node's `apps::PURPOSE_EPR`).
pub const PURPOSE_EPR: u16 = 1;
/// Purpose id of `qnet run teleport` (the node's `apps::PURPOSE_TELEPORT`).
pub const PURPOSE_TELEPORT: u16 = 2;
/// Purpose ids `qnet run link` leaves to `run epr` and `run teleport`: the peer keeps
/// the pairs of those purposes for the application's classical messages, which a
/// bare link-layer run never sends, so kept pairs would fill its memory.
pub const RESERVED_PURPOSES: [u16; 2] = [PURPOSE_EPR, PURPOSE_TELEPORT];

/// Result of `qnet run link`: one CREATE, its pairs checked against the broker's
/// oracle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkReport {
    /// The requesting node.
    pub from: String,
    /// Its peer.
    pub to: String,
    /// The request's number at `from`.
    pub create_id: u32,
    /// Pairs asked for.
    pub requested: u32,
    /// Pairs delivered and not withdrawn.
    pub delivered: usize,
    /// Delivered pairs per emulated second, from the CREATE to the end of the request.
    pub rate_emulated_hz: f64,
    /// Delivered pairs per wall second, over the node's own timing.
    pub rate_wall_hz: f64,
    /// The link model's rate while both ends attempt, pairs per emulated second.
    pub model_rate_hz: f64,
    /// Mean goodness (the link layer's fidelity estimate at the herald); `null` if
    /// nothing was delivered.
    pub goodness_mean: Option<f64>,
    /// Mean fidelity of the delivered pairs with their heralded Bell state at the
    /// herald, from the broker's oracle; `null` if no delivered pair was found in the
    /// broker's herald log.
    pub oracle_fidelity_mean: Option<f64>,
    /// Delivered pairs found in the herald log (the broker keeps the newest 100,000
    /// per link).
    pub oracle_pairs: usize,
    /// Largest |goodness − oracle fidelity| of one pair.
    pub goodness_error_max: Option<f64>,
    /// The model's fidelity of a fresh pair at its herald (Werner fidelity after the
    /// memories waited for the herald's flight).
    pub model_fidelity: f64,
    /// Median latency, CREATE to OK, emulated milliseconds.
    pub latency_ms_p50: Option<f64>,
    /// Every delivered pair's latency, CREATE to OK, emulated seconds, in sequence
    /// order (for placing pairs in time; not printed).
    #[serde(skip)]
    pub pair_latencies: Vec<f64>,
    /// 99th percentile of the same.
    pub latency_ms_p99: Option<f64>,
    /// Errors by code (`TIMEOUT`, `EXPIRE`, …) with their counts.
    pub errors: BTreeMap<String, u32>,
    /// Emulated seconds from the CREATE to the end of the request.
    pub emulated_seconds: f64,
    /// Wall seconds the node took for the same.
    pub wall_seconds: f64,
    /// Wall seconds the whole command took, connecting and the oracle included.
    pub command_seconds: f64,
}

/// The model's rate and fresh-pair fidelity of the link between `from` and `to`.
fn link_model(topology: &Topology, from: &str, to: &str) -> (f64, f64) {
    let Some(link) = topology.link_between(from, to) else {
        return (f64::NAN, f64::NAN);
    };
    let physics = LinkPhysics::of(link);
    let memory = |name: &str| topology.node(name).map(Memory::from);
    let (Some(a), Some(b)) = (memory(from), memory(to)) else {
        return (physics.rate(), f64::NAN);
    };
    let bells: &[BellState] = match physics.bell {
        HeraldedBell::Fixed(bell) => &[bell],
        HeraldedBell::PsiEither => &[BellState::PsiPlus, BellState::PsiMinus],
    };
    let fidelity = bells
        .iter()
        .map(|&bell| decayed_fidelity(physics.fidelity, bell, physics.herald_delay, a, b))
        .fold(f64::INFINITY, f64::min);
    (physics.rate(), fidelity)
}

/// Runs one link-layer CREATE `spec` from `from` to `to` and checks the delivered
/// pairs with the broker's herald log.
pub async fn link(
    target: &Target,
    from: &str,
    to: &str,
    spec: LinkRunSpec,
    timeout: Duration,
) -> anyhow::Result<LinkReport> {
    check_link(&target.topology, from, to)?;
    if spec.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if RESERVED_PURPOSES.contains(&spec.purpose) {
        bail!(
            "purpose {} is used by `qnet run {}`; pick another --purpose",
            spec.purpose,
            if spec.purpose == PURPOSE_EPR {
                "epr"
            } else {
                "teleport"
            }
        );
    }
    if !(0.0..=1.0).contains(&spec.min_fidelity) {
        bail!("--min-fidelity must be between 0 and 1");
    }
    target.node_addr(to)?;
    let addr = target.node_addr(from)?;
    let broker_addr = target.broker_addr()?;
    let start = Instant::now();
    let session = Session::new(&target.run_dir)?;
    let result = async {
        let mut node = session.node(from, addr).await?;
        let body = NodeRequestBody::RunLink {
            peer: to.to_owned(),
            spec,
        };
        let answer = with_timeout(timeout, "the link request", node.request(body)).await?;
        node.close();
        let NodeResponseBody::Link {
            create_id,
            pairs,
            errors,
            emulated_seconds,
            wall_seconds,
        } = answer
        else {
            bail!("node {from} answered the link request with {answer:?}");
        };
        let mut broker = session.broker(broker_addr).await?;
        let seqs: Vec<u64> = pairs.iter().map(|p| p.seq).collect();
        let oracle = with_timeout(
            timeout,
            "the herald log",
            herald_fidelities(&mut broker, from, to, &seqs),
        )
        .await?;
        broker.close();
        let mean = |values: &[f64]| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let goodness: Vec<f64> = pairs.iter().map(|p| p.goodness).collect();
        let checked: Vec<(f64, f64)> = pairs
            .iter()
            .filter_map(|p| oracle.get(&p.seq).map(|&f| (p.goodness, f)))
            .collect();
        let oracle_values: Vec<f64> = checked.iter().map(|c| c.1).collect();
        let mut latencies: Vec<f64> = pairs.iter().map(|p| p.latency * 1e3).collect();
        latencies.sort_by(f64::total_cmp);
        let (model_rate_hz, model_fidelity) = link_model(&target.topology, from, to);
        Ok(LinkReport {
            from: from.to_owned(),
            to: to.to_owned(),
            create_id,
            requested: spec.pairs,
            delivered: pairs.len(),
            rate_emulated_hz: rate(pairs.len(), emulated_seconds),
            rate_wall_hz: rate(pairs.len(), wall_seconds),
            model_rate_hz,
            goodness_mean: mean(&goodness),
            oracle_fidelity_mean: mean(&oracle_values),
            oracle_pairs: checked.len(),
            goodness_error_max: checked
                .iter()
                .map(|(g, f)| (g - f).abs())
                .max_by(f64::total_cmp),
            model_fidelity,
            latency_ms_p50: percentile(&latencies, 0.50),
            pair_latencies: pairs.iter().map(|p| p.latency).collect(),
            latency_ms_p99: percentile(&latencies, 0.99),
            errors: errors.into_iter().collect(),
            emulated_seconds,
            wall_seconds,
            command_seconds: start.elapsed().as_secs_f64(),
        })
    }
    .await;
    session.close().await;
    result
}

/// The oracle's fidelity at the herald of each pair `seqs` (sorted) of the link
/// between `a` and `b`, from the broker's herald log, read a page at a time from
/// the first of them to the last. Pairs the log no longer holds are missing.
async fn herald_fidelities(
    broker: &mut crate::client::BrokerAdmin,
    a: &str,
    b: &str,
    seqs: &[u64],
) -> anyhow::Result<HashMap<u64, f64>> {
    let mut found = HashMap::with_capacity(seqs.len());
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return Ok(found);
    };
    let wanted: HashSet<u64> = seqs.iter().copied().collect();
    let mut after_seq = first - 1;
    while after_seq < last {
        let body = RequestBody::HeraldLog {
            a: a.to_owned(),
            b: b.to_owned(),
            after_seq,
            max: MAX_BATCH,
        };
        let ResponseBody::HeraldLog(records) = broker.request(body).await? else {
            bail!("the broker answered the herald log request with something else");
        };
        let Some(end) = records.last() else { break };
        after_seq = end.seq;
        found.extend(
            records
                .iter()
                .filter(|r| wanted.contains(&r.seq))
                .map(|r| (r.seq, r.fidelity)),
        );
    }
    Ok(found)
}

/// The `q`-quantile of `sorted` by nearest rank, `None` if it is empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

/// Node `node`'s log of link-layer deliveries with `peer`.
pub async fn link_log(
    target: &Target,
    node: &str,
    peer: &str,
) -> anyhow::Result<Vec<LinkLogEntry>> {
    check_link(&target.topology, node, peer)?;
    let addr = target.node_addr(node)?;
    let session = Session::new(&target.run_dir)?;
    let result = async {
        let mut admin = session.node(node, addr).await?;
        let answer = admin
            .request(NodeRequestBody::LinkLog {
                peer: peer.to_owned(),
            })
            .await?;
        admin.close();
        match answer {
            NodeResponseBody::LinkLog { entries } => Ok(entries),
            other => bail!("node {node} answered the link log request with {other:?}"),
        }
    }
    .await;
    session.close().await;
    result
}

/// ⟨ψ|ρ|ψ⟩ of each qubit with `state`, from the broker's reduced density matrices
/// (all requests pipelined).
async fn fidelities(
    broker: &mut crate::client::BrokerAdmin,
    qubits: &[QubitId],
    state: CardinalState,
) -> anyhow::Result<Vec<f64>> {
    let requests = qubits
        .iter()
        .map(|&q| RequestBody::ReducedDensityMatrix { qubits: vec![q] })
        .collect();
    let psi = state.amplitudes();
    broker
        .pipeline(requests)
        .await?
        .into_iter()
        .zip(qubits)
        .map(|(answer, q)| match answer {
            Ok(ResponseBody::DensityMatrix { qubits: 1, entries }) if entries.len() == 4 => {
                Ok(overlap(psi, &entries))
            }
            Ok(other) => bail!("the broker answered the density matrix of {q} with {other:?}"),
            Err(e) => bail!("the broker refused the density matrix of {q}: {e}"),
        })
        .collect()
}

/// ⟨ψ|ρ|ψ⟩ = Σᵢⱼ ψᵢ* ρᵢⱼ ψⱼ for a one-qubit ρ given row-major as (re, im) pairs.
pub fn overlap(psi: [(f64, f64); 2], rho: &[(f64, f64)]) -> f64 {
    let mul = |(a, b): (f64, f64), (c, d): (f64, f64)| (a * c - b * d, a * d + b * c);
    let conj = |(a, b): (f64, f64)| (a, -b);
    let mut sum = 0.0;
    for i in 0..2 {
        for j in 0..2 {
            sum += mul(mul(conj(psi[i]), rho[2 * i + j]), psi[j]).0;
        }
    }
    sum
}

/// Asks node `name` to free `qubits`, in batches the broker accepts.
async fn free(
    session: &Session,
    name: &str,
    addr: std::net::SocketAddr,
    qubits: &[QubitId],
) -> anyhow::Result<()> {
    if qubits.is_empty() {
        return Ok(());
    }
    let mut node = session.node(name, addr).await?;
    for chunk in qubits.chunks(MAX_BATCH as usize) {
        node.request(NodeRequestBody::Free {
            qubits: chunk.to_vec(),
        })
        .await?;
    }
    node.close();
    Ok(())
}

async fn with_timeout<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow!("{what} did not finish within {} s", timeout.as_secs_f64()))?
}

fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line3() -> Topology {
        Topology::parse(
            "[network]\nname = \"line-3\"\n\
             [[nodes]]\nname = \"alice\"\n[[nodes]]\nname = \"bob\"\n[[nodes]]\nname = \"carol\"\n\
             [[links]]\na = \"alice\"\nb = \"bob\"\n[[links]]\na = \"bob\"\nb = \"carol\"\n",
            "line-3.toml",
        )
        .unwrap()
    }

    #[test]
    fn link_checks_say_what_is_wrong_in_one_line() {
        let t = line3();
        check_link(&t, "alice", "bob").unwrap();
        check_link(&t, "bob", "alice").unwrap();
        let e = check_link(&t, "alice", "dave").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown node: dave (network line-3 has alice, bob, carol)"
        );
        let e = check_link(&t, "alice", "carol").unwrap_err().to_string();
        assert_eq!(
            e,
            "alice and carol are not neighbours in line-3 (alice's neighbours: bob)"
        );
        let e = check_link(&t, "bob", "bob").unwrap_err().to_string();
        assert!(e.contains("same node"), "{e}");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
    }

    #[test]
    fn the_link_model_of_a_double_click_link() {
        let t = Topology::parse(
            "[network]\nname = \"m\"\n[defaults.node]\nt1 = \"inf\"\nt2 = \"inf\"\n\
             [[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n\
             [[links]]\na = \"a\"\nb = \"b\"\nmodel = \"heralded-double-click\"\n\
             length_km = 50.0\nvisibility = 0.8\n",
            "m.toml",
        )
        .unwrap();
        let (rate, fidelity) = link_model(&t, "a", "b");
        // p = ½·10^(−0.2·50/10) = 0.05 per 250 µs attempt.
        assert!((rate - 200.0).abs() < 1e-9, "{rate}");
        assert!((fidelity - 0.9).abs() < 1e-12, "{fidelity}");
    }

    #[test]
    fn short_lists_are_short() {
        let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let text = short_list(&names);
        assert!(text.ends_with("… (92 more)"), "{text}");
        assert_eq!(short_list(&["a", "b"]), "a, b");
    }

    #[test]
    fn overlap_of_cardinal_states() {
        for state in CardinalState::ALL {
            let psi = state.amplitudes();
            // ρ = |ψ⟩⟨ψ|
            let mut rho = Vec::new();
            for i in 0..2 {
                for j in 0..2 {
                    let (a, b) = psi[i];
                    let (c, d) = (psi[j].0, -psi[j].1);
                    rho.push((a * c - b * d, a * d + b * c));
                }
            }
            assert!((overlap(psi, &rho) - 1.0).abs() < 1e-12, "{state:?}");
            // The maximally mixed state has fidelity ½ with every pure state.
            let mixed = [(0.5, 0.0), (0.0, 0.0), (0.0, 0.0), (0.5, 0.0)];
            assert!((overlap(psi, &mixed) - 0.5).abs() < 1e-12);
        }
        // |+i⟩ against |−i⟩: orthogonal.
        let p = CardinalState::PlusI.amplitudes();
        let m = CardinalState::MinusI.amplitudes();
        let rho_m = [(0.5, 0.0), (0.0, 0.5), (0.0, -0.5), (0.5, 0.0)];
        assert!((overlap(m, &rho_m) - 1.0).abs() < 1e-12);
        assert!(overlap(p, &rho_m).abs() < 1e-12);
    }
}
