//! The user commands of `qnet` and their dispatch.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use qnet_common::Basis;
use qnet_common::topology::parse_duration_secs;
use qnet_common::wire::{CardinalState, LinkKind, LinkLogEntry, LinkRunSpec};
use serde::Serialize;

use crate::deploy::{self, UpOptions};
use crate::record::{self, Deployment};
use crate::run::Target;
use crate::status::{self, table};
use crate::{bench, run};

/// Writes to stdout; a closed stdout (`qnet status | head -1`) is not worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { emit(&format!($($arg)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { emit(&format!("{}\n", format_args!($($arg)*))) };
}

/// User commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a deployment: the broker and one process per node, in the background.
    Up {
        /// The topology file (TOML).
        file: PathBuf,
        /// Run folder (default: .qnet/NAME/, NAME being the network's name).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Seconds the nodes may take to be ready (default: 10 + 0.1 per node).
        #[arg(long)]
        timeout: Option<f64>,
    },
    /// Stop a deployment: every process, gracefully if possible. Logs are kept.
    Down {
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// Show every process of a deployment and whether it is up.
    Status {
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
        /// Print JSON: an array of {name, role, pid, addr, state}.
        #[arg(long)]
        json: bool,
        /// Also ask every process over its admin API (qubits held, peers).
        #[arg(long)]
        probe: bool,
    },
    /// Print the log of a process (a node, or `broker`).
    Logs {
        /// Process name.
        name: String,
        /// Only the last N lines.
        #[arg(long, short = 'n')]
        lines: Option<usize>,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// Run a workload on a deployment.
    Run {
        /// The workload.
        #[command(subcommand)]
        command: RunCommand,
    },
    /// Measure the system end to end on a fresh deployment (torn down afterwards).
    Bench {
        /// The benchmark.
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Inject faults into a running deployment (classical, quantum and process).
    Chaos {
        /// The fault.
        #[command(subcommand)]
        command: ChaosCommand,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// Scenario files: a topology, workloads, a timeline of faults and assertions.
    Scenario {
        /// What to do.
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Work with topology files.
    Topo {
        /// What to do.
        #[command(subcommand)]
        command: TopoCommand,
    },
}

/// `qnet chaos …`
#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Extra one-way latency between two nodes, both ways (on top of the fibre's).
    Latency {
        /// One node.
        a: String,
        /// The other.
        b: String,
        /// The latency, e.g. 20ms.
        delay: String,
        /// Random extra latency up to this, e.g. 5ms.
        #[arg(long)]
        jitter: Option<String>,
    },
    /// Datagram loss between two nodes, both ways.
    Loss {
        /// One node.
        a: String,
        /// The other.
        b: String,
        /// Loss probability in [0, 1].
        probability: f64,
    },
    /// Cut the classical network between two groups of nodes, e.g. `alice,bob carol`.
    Partition {
        /// First group, comma-separated.
        left: String,
        /// Second group, comma-separated.
        right: String,
        /// Only traffic from the first group to the second is cut.
        #[arg(long)]
        oneway: bool,
    },
    /// Remove the classical faults between two nodes, or all of them.
    Heal {
        /// One node (with the other), or nothing for all.
        a: Option<String>,
        /// The other node.
        b: Option<String>,
    },
    /// The faults in force.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Kill a node's process (its qubits are lost).
    Kill {
        /// The node.
        node: String,
    },
    /// Start a node again with empty memory; it rejoins the network.
    Restart {
        /// The node.
        node: String,
    },
    /// Stop a node's process for a while (SIGSTOP, then SIGCONT); its qubits keep
    /// decohering.
    Pause {
        /// The node.
        node: String,
        /// How long, e.g. 2s.
        duration: String,
    },
    /// A quantum fault on a link: new fidelity, or down/up.
    Link {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// Werner fidelity of new pairs.
        #[arg(long)]
        fidelity: Option<f64>,
        /// No pairs until --up.
        #[arg(long, conflicts_with = "up")]
        down: bool,
        /// Pairs again.
        #[arg(long)]
        up: bool,
    },
    /// A node's memory decoheres faster (or slower) from now on.
    Memory {
        /// The node.
        node: String,
        /// New T1, e.g. 1s.
        #[arg(long)]
        t1: Option<String>,
        /// New T2, e.g. 50ms.
        #[arg(long)]
        t2: Option<String>,
    },
}

/// `qnet scenario …`
#[derive(Subcommand, Debug)]
pub enum ScenarioCommand {
    /// Deploy the scenario's topology, run it, check its assertions, tear down.
    /// Exit status 0 only if every assertion held.
    Run {
        /// The scenario file (TOML).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the report as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Run folder (default: a temporary one).
        #[arg(long)]
        run_dir: Option<PathBuf>,
    },
}

/// `--run-dir`, shared by every command that acts on a running deployment.
#[derive(Args, Debug, Clone, Default)]
pub struct RunDirArg {
    /// Run folder of the deployment (default: $QNET_RUN_DIR, else the only one under
    /// .qnet/).
    #[arg(long, global = true)]
    pub run_dir: Option<PathBuf>,
}

/// A measurement basis on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasisArg {
    /// Computational basis.
    #[value(name = "Z")]
    Z,
    /// Hadamard basis.
    #[value(name = "X")]
    X,
    /// Circular basis.
    #[value(name = "Y")]
    Y,
}

impl From<BasisArg> for Basis {
    fn from(b: BasisArg) -> Basis {
        match b {
            BasisArg::Z => Basis::Z,
            BasisArg::X => Basis::X,
            BasisArg::Y => Basis::Y,
        }
    }
}

/// The type of a link-layer request on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTypeArg {
    /// Create and keep: the qubits stay in memory (the run frees them).
    Keep,
    /// Measure directly, both ends in `--basis`.
    Measure,
}

/// The basis of a measure-type link-layer request on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkBasisArg {
    /// Computational basis.
    #[value(name = "Z")]
    Z,
    /// Hadamard basis.
    #[value(name = "X")]
    X,
    /// Circular basis.
    #[value(name = "Y")]
    Y,
    /// Z or X, chosen at random per pair at each end.
    #[value(name = "random")]
    Random,
}

/// The request type `--type` and `--basis` describe.
fn link_kind(kind: LinkTypeArg, basis: Option<LinkBasisArg>) -> anyhow::Result<LinkKind> {
    Ok(match (kind, basis) {
        (LinkTypeArg::Keep, None) => LinkKind::Keep,
        (LinkTypeArg::Keep, Some(_)) => {
            anyhow::bail!("--basis is for --type measure; keep-type pairs are not measured")
        }
        (LinkTypeArg::Measure, None | Some(LinkBasisArg::Z)) => LinkKind::Measure(Basis::Z),
        (LinkTypeArg::Measure, Some(LinkBasisArg::X)) => LinkKind::Measure(Basis::X),
        (LinkTypeArg::Measure, Some(LinkBasisArg::Y)) => LinkKind::Measure(Basis::Y),
        (LinkTypeArg::Measure, Some(LinkBasisArg::Random)) => LinkKind::MeasureRandom,
    })
}

/// `--max-time`: an emulated duration (`2s`, `500ms`, `inf`).
fn max_time(text: Option<&str>) -> anyhow::Result<f64> {
    let Some(text) = text else {
        return Ok(f64::INFINITY);
    };
    let t = parse_duration_secs(text).map_err(|e| anyhow::anyhow!("--max-time {text:?}: {e}"))?;
    if t.is_nan() || t <= 0.0 {
        anyhow::bail!("--max-time must be a positive duration");
    }
    Ok(t)
}

fn parse_state(s: &str) -> Result<CardinalState, String> {
    CardinalState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = CardinalState::ALL.iter().map(|s| s.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

/// `qnet run …`
#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Make EPR pairs between two neighbours and compare measurement outcomes.
    Epr {
        /// The node that runs the protocol.
        #[arg(long)]
        from: String,
        /// Its neighbour.
        #[arg(long)]
        to: String,
        /// Number of pairs.
        #[arg(long, default_value_t = 1000)]
        pairs: u32,
        /// Basis both ends measure in.
        #[arg(long, value_enum, ignore_case = true, default_value = "Z")]
        basis: BasisArg,
        /// Print JSON: {pairs, agree, pairs_per_s, seconds, wall_seconds}.
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// Teleport copies of a state to a neighbour; the broker's oracle checks them.
    Teleport {
        /// The sender.
        #[arg(long)]
        from: String,
        /// The receiving neighbour.
        #[arg(long)]
        to: String,
        /// The state: zero, one, plus, minus, plus_i or minus_i.
        #[arg(long, value_parser = parse_state, default_value = "plus")]
        state: CardinalState,
        /// Number of copies.
        #[arg(long, default_value_t = 100)]
        shots: u32,
        /// Print JSON: {shots, received, fidelity, fidelity_min, teleports_per_s, …}.
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// One link-layer CREATE between neighbours; the broker's oracle checks the pairs.
    Link {
        /// The node that makes the request.
        #[arg(long)]
        from: String,
        /// Its neighbour.
        #[arg(long)]
        to: String,
        /// Number of pairs.
        #[arg(long, default_value_t = 1000)]
        pairs: u32,
        /// Lowest acceptable fidelity of each pair.
        #[arg(long, default_value_t = 0.0)]
        min_fidelity: f64,
        /// Longest wait, emulated (`2s`, `500ms`); default: none.
        #[arg(long)]
        max_time: Option<String>,
        /// keep (qubits stay in memory until the run frees them) or measure.
        #[arg(long = "type", value_enum, default_value = "keep")]
        kind: LinkTypeArg,
        /// Basis of --type measure: Z, X, Y or random (Z or X per pair); default Z.
        #[arg(long, value_enum, ignore_case = true)]
        basis: Option<LinkBasisArg>,
        /// Purpose id (the peer may refuse it; 1 and 2 belong to epr and teleport).
        #[arg(long, default_value_t = 0)]
        purpose: u16,
        /// Priority (0 first).
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Print JSON: {delivered, rate_emulated_hz, rate_wall_hz, goodness_mean,
        /// oracle_fidelity_mean, latency_ms_p50, latency_ms_p99, errors, …}.
        #[arg(long)]
        json: bool,
        /// Give up after this many (wall) seconds.
        #[arg(long, default_value_t = 300.0)]
        timeout: f64,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
    /// A node's log of link-layer deliveries with a neighbour (OKs and withdrawals).
    LinkLog {
        /// The node.
        #[arg(long)]
        node: String,
        /// Its neighbour.
        #[arg(long)]
        peer: String,
        /// Print JSON: an array of {local_origin, create_id, seq, ok}.
        #[arg(long)]
        json: bool,
        /// Which deployment.
        #[command(flatten)]
        target: RunDirArg,
    },
}

/// `qnet bench …`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// EPR pairs per second between two nodes over an ideal link, and memory use.
    Epr {
        /// Number of pairs.
        #[arg(long, default_value_t = 20_000)]
        pairs: u32,
        /// Print JSON: {pairs, pairs_per_s, seconds, up_seconds, node_rss_mb, broker_rss_mb}.
        #[arg(long)]
        json: bool,
        /// Keep the run folder (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Link-layer pairs per wall second on one fast link (keep-type, one request).
    Link {
        /// Number of pairs.
        #[arg(long, default_value_t = 20_000)]
        pairs: u32,
        /// Print JSON: {pairs, delivered, pairs_per_s, seconds, errors, …}.
        #[arg(long)]
        json: bool,
        /// Keep the run folder (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// How long `up` of a topology takes until every process is ready, and memory use.
    Up {
        /// The topology file (TOML).
        file: PathBuf,
        /// Print JSON: {network, nodes, up_seconds, node_rss_mb, broker_rss_mb}.
        #[arg(long)]
        json: bool,
        /// Keep the run folder (logs) afterwards.
        #[arg(long)]
        keep: bool,
    },
}

/// `qnet topo …`
#[derive(Subcommand, Debug)]
pub enum TopoCommand {
    /// Parse and validate a topology file and print its summary.
    Check {
        /// The topology file (TOML).
        file: PathBuf,
    },
}

/// Runs a user command.
pub fn main(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Topo {
            command: TopoCommand::Check { file },
        } => {
            let topology = qnet_common::topology::Topology::load(&file)?;
            out!("{}", topology.summary());
            Ok(())
        }
        Command::Up {
            file,
            run_dir,
            timeout,
        } => runtime()?.block_on(up(file, run_dir, timeout)),
        Command::Down { target } => runtime()?.block_on(down(&target)),
        Command::Status {
            target,
            json,
            probe,
        } => status_cmd(&target, json, probe),
        Command::Logs {
            name,
            lines,
            target,
        } => {
            let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
            let deployment = load_any(&run_dir)?;
            status::logs(&deployment, &name, lines)
        }
        Command::Run { command } => runtime()?.block_on(run_cmd(command)),
        Command::Chaos { command, target } => runtime()?.block_on(chaos_cmd(command, &target)),
        Command::Scenario {
            command:
                ScenarioCommand::Run {
                    file,
                    json,
                    junit,
                    run_dir,
                },
        } => runtime()?.block_on(scenario_cmd(&file, json, junit, run_dir)),
        Command::Bench { command } => runtime()?.block_on(bench_cmd(command)),
    }
}

/// The runtime of the commands that talk to processes: one thread is plenty for a
/// handful of connections and keeps the controller's own footprint small.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the qnet binary")
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{what} must be a positive number of seconds"))
}

async fn up(file: PathBuf, run_dir: Option<PathBuf>, timeout: Option<f64>) -> anyhow::Result<()> {
    let options = UpOptions {
        topology: file,
        run_dir,
        exe: exe()?,
        nodes_timeout: timeout.map(|t| seconds(t, "--timeout")).transpose()?,
        progress: true,
    };
    let deployed = deploy::up(&options).await?;
    let d = &deployed.deployment;
    outln!(
        "{}: {} nodes and the broker ready in {:.2} s",
        d.network,
        d.nodes().count(),
        deployed.seconds
    );
    out!(
        "{}",
        table(&["NAME", "ROLE", "PID", "ADDRESS"], &deploy::rows(d))
    );
    // Mention --run-dir only if the other commands would not find this deployment
    // by themselves.
    let found = record::resolve_from_env(None)
        .ok()
        .and_then(|r| std::fs::canonicalize(r.root()).ok());
    let dir_arg = if found.as_deref() == Some(d.run_dir.as_path()) {
        String::new()
    } else {
        format!(" --run-dir {}", d.run_dir.display())
    };
    let example = match deployed.deployment.processes.get(1..3) {
        Some([a, _]) => {
            let topology = qnet_common::topology::Topology::load(deployed.run_dir.topology())?;
            let i = topology.node_index(&a.name).unwrap_or(0);
            topology
                .neighbours(i)
                .next()
                .map(|j| {
                    format!(
                        ", `qnet run epr{dir_arg} --from {} --to {} --pairs 1000`",
                        a.name, topology.nodes[j].name
                    )
                })
                .unwrap_or_default()
        }
        _ => String::new(),
    };
    outln!(
        "logs and certificates in {}; next: `qnet status{dir_arg}`{example}, `qnet down{dir_arg}`",
        d.run_dir.display()
    );
    Ok(())
}

/// The deployment in `run_dir`, or the "nothing running" error.
fn load_any(run_dir: &qnet_common::rundir::RunDir) -> anyhow::Result<Deployment> {
    record::load_running(run_dir)
}

async fn down(target: &RunDirArg) -> anyhow::Result<()> {
    let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
    if !run_dir.deployment().is_file() {
        outln!("nothing to stop in {}", run_dir.root().display());
        return Ok(());
    }
    let deployment = Deployment::load(&run_dir)?;
    let report = deploy::down(&run_dir, &deployment).await?;
    let mut parts = Vec::new();
    if !report.stopped.is_empty() {
        parts.push(format!("{} stopped", report.stopped.len()));
    }
    if !report.killed.is_empty() {
        parts.push(format!(
            "{} killed after {} s ({})",
            report.killed.len(),
            deploy::DOWN_GRACE.as_secs(),
            run::short_list(&report.killed.iter().map(String::as_str).collect::<Vec<_>>())
        ));
    }
    if !report.gone.is_empty() {
        parts.push(format!("{} already gone", report.gone.len()));
    }
    outln!(
        "{}: {}; logs kept in {}",
        deployment.network,
        parts.join(", "),
        run_dir.logs().display()
    );
    Ok(())
}

fn status_cmd(target: &RunDirArg, json: bool, probe: bool) -> anyhow::Result<()> {
    let run_dir = match record::resolve_from_env(target.run_dir.as_deref()) {
        Ok(dir) if dir.deployment().is_file() => dir,
        Ok(dir) => return no_deployment(json, Some(dir.root())),
        Err(e) if e.to_string().starts_with("no running deployment") => {
            return no_deployment(json, None);
        }
        Err(e) => return Err(e),
    };
    let deployment = Deployment::load(&run_dir)?;
    let mut statuses = status::snapshot(&deployment);
    if probe {
        runtime()?.block_on(status::probe(&run_dir, &deployment, &mut statuses));
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        out!("{}", status::render(&deployment, &statuses));
        let faults = crate::chaos::Faults::load(&run_dir)?.lines();
        if !faults.is_empty() {
            outln!("faults in force:");
            for line in faults {
                outln!("  {line}");
            }
        }
    }
    Ok(())
}

/// "Nothing is running" is an answer, not an error, for `status`.
fn no_deployment(json: bool, dir: Option<&Path>) -> anyhow::Result<()> {
    if json {
        outln!("[]");
    } else if let Some(dir) = dir {
        outln!(
            "no running deployment in {} (start one with `qnet up TOPOLOGY`)",
            dir.display()
        );
    } else {
        outln!("no running deployment (start one with `qnet up TOPOLOGY`)");
    }
    Ok(())
}

fn duration_arg(text: &str, what: &str) -> anyhow::Result<Duration> {
    let secs = qnet_common::topology::parse_duration_secs(text)
        .map_err(|e| anyhow::anyhow!("{what}: {text:?} is not a duration ({e})"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("{what}: {text:?} is not a finite duration"))
}

async fn chaos_cmd(command: ChaosCommand, target: &RunDirArg) -> anyhow::Result<()> {
    let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
    let mut chaos = crate::chaos::Chaos::open(run_dir)?;
    let group = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect()
    };
    let secs = |t: &Option<String>, what: &str| -> anyhow::Result<Option<f64>> {
        t.as_deref()
            .map(|t| {
                qnet_common::topology::parse_duration_secs(t)
                    .map_err(|e| anyhow::anyhow!("{what}: {t:?} is not a duration ({e})"))
            })
            .transpose()
    };
    let result = match command {
        ChaosCommand::Latency {
            a,
            b,
            delay,
            jitter,
        } => {
            let delay = duration_arg(&delay, "latency")?;
            let jitter = match jitter {
                Some(j) => duration_arg(&j, "--jitter")?,
                None => Duration::ZERO,
            };
            chaos.latency(&a, &b, delay, jitter).await
        }
        ChaosCommand::Loss { a, b, probability } => chaos.loss(&a, &b, probability).await,
        ChaosCommand::Partition {
            left,
            right,
            oneway,
        } => chaos.partition(&group(&left), &group(&right), oneway).await,
        ChaosCommand::Heal { a, b } => match (a, b) {
            (Some(a), Some(b)) => chaos.heal(Some((&a, &b))).await,
            (None, None) => chaos.heal(None).await,
            _ => Err(anyhow::anyhow!(
                "heal takes two nodes, or none for every fault"
            )),
        },
        ChaosCommand::List { json } => {
            if json {
                print_json(chaos.faults())
            } else {
                let lines = chaos.faults().lines();
                if lines.is_empty() {
                    outln!("no faults in force");
                }
                for line in lines {
                    outln!("{line}");
                }
                Ok(())
            }
        }
        ChaosCommand::Kill { node } => chaos.kill(&node).await,
        ChaosCommand::Restart { node } => chaos.restart(&node, Duration::from_secs(10)).await,
        ChaosCommand::Pause { node, duration } => {
            let d = duration_arg(&duration, "pause")?;
            chaos.pause(&node, d).await
        }
        ChaosCommand::Link {
            a,
            b,
            fidelity,
            down,
            up,
        } => {
            let state = if down {
                Some(false)
            } else if up {
                Some(true)
            } else {
                None
            };
            chaos.link(&a, &b, fidelity, state).await
        }
        ChaosCommand::Memory { node, t1, t2 } => {
            let (t1, t2) = (secs(&t1, "--t1")?, secs(&t2, "--t2")?);
            chaos.memory(&node, t1, t2).await
        }
    };
    chaos.close().await;
    result
}

async fn scenario_cmd(
    file: &Path,
    json: bool,
    junit: Option<PathBuf>,
    run_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let scenario = crate::scenario::Scenario::load(file)?;
    let topology = scenario.topology_path(file);
    // Without --run-dir, a temporary folder that is removed when the scenario
    // passes and kept (and named) when it fails.
    let tmp = match run_dir {
        Some(_) => None,
        None => Some(tempfile_dir()?),
    };
    let run_dir = match (&run_dir, &tmp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.join("run"),
        (None, None) => unreachable!("one of them is set"),
    };
    let options = UpOptions {
        topology,
        run_dir: Some(run_dir),
        exe: exe()?,
        nodes_timeout: None,
        progress: false,
    };
    let deployed = deploy::up(&options).await?;
    let result = crate::scenario::run(&scenario, deployed.run_dir.clone()).await;
    // Tear down whatever happened.
    let record = Deployment::load(&deployed.run_dir).unwrap_or(deployed.deployment.clone());
    let down = deploy::down(&deployed.run_dir, &record).await;
    let report = result?;
    down?;
    if let Some(path) = junit {
        std::fs::write(&path, crate::scenario::junit(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if json {
        print_json(&report)?;
    } else {
        out!("{}", crate::scenario::render(&report));
    }
    if !report.passed {
        let failed = report.verdicts.iter().filter(|v| !v.passed).count();
        anyhow::bail!(
            "scenario {}: {failed} assertion(s) failed; logs in {}",
            report.name,
            deployed.run_dir.logs().display()
        );
    }
    if let Some(tmp) = tmp {
        let _ = std::fs::remove_dir_all(tmp);
    }
    Ok(())
}

/// A fresh folder under the system's temporary folder, for a scenario's run.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "qnet-scenario-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(base)
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_cmd(command: RunCommand) -> anyhow::Result<()> {
    match command {
        RunCommand::Epr {
            from,
            to,
            pairs,
            basis,
            json,
            timeout,
            target,
        } => {
            let timeout = seconds(timeout, "--timeout")?;
            let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
            let target = Target::load(run_dir)?;
            let r = run::epr(&target, &from, &to, pairs, basis.into(), timeout).await?;
            if json {
                return print_json(&r);
            }
            outln!("epr {from} -> {to}, basis {basis:?}");
            outln!("  pairs       {}", r.pairs);
            outln!(
                "  agreement   {:.4} ({} of {})",
                r.agree,
                (r.agree * f64::from(r.pairs)).round(),
                r.pairs
            );
            outln!(
                "  rate        {:.0} pairs/s ({:.3} s at the node)",
                r.pairs_per_s,
                r.seconds
            );
            outln!("  wall time   {:.3} s", r.wall_seconds);
            Ok(())
        }
        RunCommand::Teleport {
            from,
            to,
            state,
            shots,
            json,
            timeout,
            target,
        } => {
            let timeout = seconds(timeout, "--timeout")?;
            let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
            let target = Target::load(run_dir)?;
            let r = run::teleport(&target, &from, &to, state, shots, timeout).await?;
            if json {
                return print_json(&r);
            }
            outln!("teleport {from} -> {to}, state {}", state.name());
            outln!("  shots       {} ({} received)", r.shots, r.received);
            outln!(
                "  fidelity    {:.6} mean, {:.6} min",
                r.fidelity,
                r.fidelity_min
            );
            outln!(
                "  rate        {:.0} teleports/s ({:.3} s at the node)",
                r.teleports_per_s,
                r.seconds
            );
            outln!("  wall time   {:.3} s", r.wall_seconds);
            Ok(())
        }
        RunCommand::Link {
            from,
            to,
            pairs,
            min_fidelity,
            max_time: max_time_text,
            kind,
            basis,
            purpose,
            priority,
            json,
            timeout,
            target,
        } => {
            let timeout = seconds(timeout, "--timeout")?;
            let spec = LinkRunSpec {
                pairs,
                min_fidelity,
                max_time: max_time(max_time_text.as_deref())?,
                purpose,
                priority,
                kind: link_kind(kind, basis)?,
            };
            let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
            let target = Target::load(run_dir)?;
            let r = run::link(&target, &from, &to, spec, timeout).await?;
            if json {
                return print_json(&r);
            }
            out!("{}", render_link(&r, &spec));
            Ok(())
        }
        RunCommand::LinkLog {
            node,
            peer,
            json,
            target,
        } => {
            let run_dir = record::resolve_from_env(target.run_dir.as_deref())?;
            let target = Target::load(run_dir)?;
            let entries = run::link_log(&target, &node, &peer).await?;
            if json {
                return print_json(&entries);
            }
            out!("{}", render_link_log(&node, &peer, &entries));
            Ok(())
        }
    }
}

/// The text report of `qnet run link`.
fn render_link(r: &run::LinkReport, spec: &LinkRunSpec) -> String {
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    let kind = match spec.kind {
        LinkKind::Keep => "keep".to_owned(),
        LinkKind::Measure(b) => format!("measure in {b:?}"),
        LinkKind::MeasureRandom => "measure in Z or X at random".to_owned(),
    };
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    line(format!(
        "link {} -> {}: {} pairs, {kind}, purpose {}, request {}",
        r.from, r.to, r.requested, spec.purpose, r.create_id
    ));
    line(format!("  delivered   {} of {}", r.delivered, r.requested));
    line(format!(
        "  rate        {:.1} pairs/s emulated (model {:.1}), {:.1} pairs/s wall",
        r.rate_emulated_hz, r.model_rate_hz, r.rate_wall_hz
    ));
    line(format!(
        "  goodness    {} mean (model {:.4} at the herald)",
        opt(r.goodness_mean, 4),
        r.model_fidelity
    ));
    line(format!(
        "  oracle      {} mean fidelity ({} pairs checked, largest |goodness - oracle| {})",
        opt(r.oracle_fidelity_mean, 4),
        r.oracle_pairs,
        opt(r.goodness_error_max, 4)
    ));
    line(format!(
        "  latency     p50 {} ms, p99 {} ms (emulated)",
        opt(r.latency_ms_p50, 3),
        opt(r.latency_ms_p99, 3)
    ));
    if r.errors.is_empty() {
        line("  errors      none".to_owned());
    } else {
        let errors: Vec<String> = r
            .errors
            .iter()
            .map(|(code, n)| format!("{code} x{n}"))
            .collect();
        line(format!("  errors      {}", errors.join(", ")));
    }
    line(format!(
        "  time        {:.6} s emulated, {:.3} s wall at the node ({:.3} s in all)",
        r.emulated_seconds, r.wall_seconds, r.command_seconds
    ));
    text
}

/// The text report of `qnet run link-log`: one line per request.
fn render_link_log(node: &str, peer: &str, entries: &[LinkLogEntry]) -> String {
    // (origin, create id) → (OKs, withdrawn, first seq, last seq)
    let mut requests: std::collections::BTreeMap<(bool, u32), (u64, u64, u64, u64)> =
        std::collections::BTreeMap::new();
    for e in entries {
        let r = requests
            .entry((!e.local_origin, e.create_id))
            .or_insert((0, 0, u64::MAX, 0));
        if e.ok {
            r.0 += 1;
        } else {
            r.1 += 1;
        }
        r.2 = r.2.min(e.seq);
        r.3 = r.3.max(e.seq);
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|(&(remote, id), &(ok, withdrawn, first, last))| {
            vec![
                if remote { peer } else { node }.to_owned(),
                id.to_string(),
                ok.to_string(),
                withdrawn.to_string(),
                format!("{first}..={last}"),
            ]
        })
        .collect();
    let ok = entries.iter().filter(|e| e.ok).count();
    format!(
        "{node} <-> {peer}: {} entries ({ok} OK, {} withdrawn) in {} requests\n{}",
        entries.len(),
        entries.len() - ok,
        requests.len(),
        if rows.is_empty() {
            String::new()
        } else {
            table(&["ORIGIN", "REQUEST", "OK", "WITHDRAWN", "SEQS"], &rows)
        }
    )
}

async fn bench_cmd(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Epr { pairs, json, keep } => {
            if pairs == 0 {
                anyhow::bail!("--pairs must be at least 1");
            }
            let r = bench::epr(exe()?, pairs, keep).await?;
            if json {
                return print_json(&r);
            }
            outln!("bench epr: 2 nodes, ideal link");
            outln!("  pairs       {} (agreement {:.4})", r.pairs, r.agree);
            outln!(
                "  rate        {:.0} pairs/s ({:.3} s)",
                r.pairs_per_s,
                r.seconds
            );
            outln!("  up          {:.2} s", r.up_seconds);
            outln!(
                "  memory      node {:.1} MiB (max), broker {:.1} MiB",
                r.node_rss_mb,
                r.broker_rss_mb
            );
            Ok(())
        }
        BenchCommand::Link { pairs, json, keep } => {
            if pairs == 0 {
                anyhow::bail!("--pairs must be at least 1");
            }
            let r = bench::link(exe()?, pairs, keep).await?;
            if json {
                return print_json(&r);
            }
            outln!("bench link: 2 nodes, one ideal link, one keep-type request");
            outln!(
                "  pairs       {} of {} delivered (oracle fidelity {})",
                r.delivered,
                r.pairs,
                r.oracle_fidelity_mean
                    .map_or_else(|| "-".to_owned(), |f| format!("{f:.4}"))
            );
            outln!(
                "  rate        {:.0} pairs/s wall ({:.3} s at the node)",
                r.pairs_per_s,
                r.seconds
            );
            if !r.errors.is_empty() {
                outln!("  errors      {:?}", r.errors);
            }
            outln!("  up          {:.2} s", r.up_seconds);
            outln!(
                "  memory      node {:.1} MiB (max), broker {:.1} MiB",
                r.node_rss_mb,
                r.broker_rss_mb
            );
            Ok(())
        }
        BenchCommand::Up { file, json, keep } => {
            let r = bench::up(exe()?, file, keep).await?;
            if json {
                return print_json(&r);
            }
            outln!("bench up: {} ({} nodes)", r.network, r.nodes);
            outln!("  up          {:.2} s", r.up_seconds);
            outln!(
                "  memory      node {:.1} MiB (max), broker {:.1} MiB",
                r.node_rss_mb,
                r.broker_rss_mb
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_and_bases() {
        assert_eq!(link_kind(LinkTypeArg::Keep, None).unwrap(), LinkKind::Keep);
        assert!(link_kind(LinkTypeArg::Keep, Some(LinkBasisArg::X)).is_err());
        assert_eq!(
            link_kind(LinkTypeArg::Measure, None).unwrap(),
            LinkKind::Measure(Basis::Z)
        );
        assert_eq!(
            link_kind(LinkTypeArg::Measure, Some(LinkBasisArg::Y)).unwrap(),
            LinkKind::Measure(Basis::Y)
        );
        assert_eq!(
            link_kind(LinkTypeArg::Measure, Some(LinkBasisArg::Random)).unwrap(),
            LinkKind::MeasureRandom
        );
    }

    #[test]
    fn max_times_are_emulated_durations() {
        assert_eq!(max_time(None).unwrap(), f64::INFINITY);
        assert_eq!(max_time(Some("2s")).unwrap(), 2.0);
        assert!((max_time(Some("500ms")).unwrap() - 0.5).abs() < 1e-12);
        assert!(max_time(Some("0s")).is_err());
        assert!(max_time(Some("soon")).is_err());
    }
}
