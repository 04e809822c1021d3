//! Scenario files: a topology, workloads that run in the background, a timeline of
//! faults, and assertions checked at the end over windows of time.
//!
//! ```toml
//! name = "partition-and-heal"
//! topology = "../line-3.toml"      # relative to the scenario file
//! duration = "6s"                  # wall time of the run
//!
//! [[workload]]
//! name = "ab"
//! from = "alice"
//! to = "bob"
//! pairs = 20                       # per request; requests repeat back to back
//! type = "measure"                 # keep | measure (default measure)
//! basis = "Z"                      # Z | X | Y | random
//! max_time = "500ms"               # per request, emulated (default none)
//!
//! [[timeline]]
//! at = "2s"
//! action = "partition"             # latency | loss | partition | heal | kill |
//! groups = [["alice"], ["bob"]]    # restart | pause | link | memory
//!
//! [[assert]]
//! what = "rate"                    # delivered pairs per wall second in a window
//! workload = "ab"
//! from = "0s"
//! to = "2s"
//! min = 50.0
//! ```
//!
//! Assertions: `rate` (min and/or max over `[from, to]`), `fidelity` (mean oracle
//! fidelity of the delivered pairs, min), `errors` (count of an ERR `code`, min
//! and/or max, optionally in a window) and `consistent` (no pair reported at one end
//! only, from both ends' link-layer logs). In windows, a link workload's pairs count
//! at their own time (the request's start plus their latency); a teleport round's
//! are spread evenly over the wall time it took.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qnet_common::Basis;
use qnet_common::topology::{Location, parse_duration_secs};
use qnet_common::wire::{LinkKind, LinkRunSpec};
use serde::{Deserialize, Serialize};

use crate::chaos::Chaos;
use crate::run::{self, Target};

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Its name, for reports.
    pub name: String,
    /// The topology file, relative to the scenario file.
    pub topology: PathBuf,
    /// Wall time of the run, e.g. "6s".
    pub duration: String,
    /// Background workloads.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Workload>,
    /// Faults and when they happen.
    #[serde(default)]
    pub timeline: Vec<Step>,
    /// What must hold.
    #[serde(default, rename = "assert")]
    pub asserts: Vec<Assertion>,
}

/// A workload: link-layer requests (or teleportation rounds) between two
/// neighbours, back to back.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Its name, for assertions.
    pub name: String,
    /// `link` (default) or `teleport` (rounds of `pairs` shots of `state`, each
    /// checked with the oracle after the receiver applied its corrections).
    #[serde(default = "default_workload")]
    pub workload: String,
    /// The state a teleport workload sends (`plus` by default).
    #[serde(default = "default_state")]
    pub state: String,
    /// The requesting node.
    pub from: String,
    /// Its neighbour.
    pub to: String,
    /// Pairs per request.
    #[serde(default = "default_pairs")]
    pub pairs: u32,
    /// `keep` or `measure`.
    #[serde(default = "default_type", rename = "type")]
    pub kind: String,
    /// `Z`, `X`, `Y` or `random` (measure-type).
    #[serde(default = "default_basis")]
    pub basis: String,
    /// Longest wait per request, emulated (e.g. "500ms"); none by default.
    pub max_time: Option<String>,
    /// Lowest acceptable fidelity.
    #[serde(default)]
    pub min_fidelity: f64,
}

fn default_workload() -> String {
    "link".into()
}
fn default_state() -> String {
    "plus".into()
}
fn default_pairs() -> u32 {
    20
}
fn default_type() -> String {
    "measure".into()
}
fn default_basis() -> String {
    "Z".into()
}

/// One fault of the timeline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, from the start of the workloads (wall time), e.g. "2s".
    pub at: String,
    /// `latency`, `loss`, `partition`, `heal`, `kill`, `restart`, `pause`, `link`
    /// or `memory`.
    pub action: String,
    /// First node (latency, loss, heal, link) or the node (kill, restart, pause,
    /// memory).
    pub a: Option<String>,
    /// Second node.
    pub b: Option<String>,
    /// Groups of a partition.
    pub groups: Option<Vec<Vec<String>>>,
    /// One-way partition.
    #[serde(default)]
    pub oneway: bool,
    /// Latency, pause length ("20ms").
    pub delay: Option<String>,
    /// Latency jitter.
    pub jitter: Option<String>,
    /// Loss probability.
    pub loss: Option<f64>,
    /// Link fidelity.
    pub fidelity: Option<f64>,
    /// Link up (true) or down (false).
    pub up: Option<bool>,
    /// Memory T1.
    pub t1: Option<String>,
    /// Memory T2.
    pub t2: Option<String>,
}

/// An assertion.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    /// `rate`, `fidelity`, `errors` or `consistent`.
    pub what: String,
    /// The workload it is about.
    pub workload: String,
    /// Window start (wall, from the start of the workloads); default the start.
    pub from: Option<String>,
    /// Window end; default the end.
    pub to: Option<String>,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// ERR code for `errors` (`EXPIRE`, `TIMEOUT`, …, or `UNREACHABLE` for requests
    /// the controller could not even make).
    pub code: Option<String>,
}

/// One request of a workload, as it happened.
#[derive(Clone, Debug, Default, Serialize)]
struct Sample {
    start: f64,
    end: f64,
    delivered: usize,
    oracle_fidelity_sum: f64,
    oracle_pairs: usize,
    errors: BTreeMap<String, u32>,
    create_id: Option<u32>,
    /// Wall offsets of the delivered pairs, when known (link workloads).
    pair_times: Vec<f64>,
}

/// The result of one assertion.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The assertion.
    pub assertion: Assertion,
    /// Whether it held.
    pub passed: bool,
    /// The value measured.
    pub value: f64,
    /// In words.
    pub detail: String,
}

/// The report of a scenario run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub name: String,
    /// Every assertion's verdict.
    pub verdicts: Vec<Verdict>,
    /// Requests made per workload.
    pub requests: BTreeMap<String, usize>,
    /// Pairs delivered per workload.
    pub delivered: BTreeMap<String, usize>,
    /// Wall seconds of the run.
    pub seconds: f64,
    /// True if every assertion held.
    pub passed: bool,
}

fn secs(s: &str, what: &str) -> anyhow::Result<f64> {
    parse_duration_secs(s).map_err(|e| anyhow::anyhow!("{what}: bad duration {s:?}: {e}"))
}

impl Scenario {
    /// Reads and checks a scenario file; errors name the file (and line and column
    /// for syntax errors).
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        let origin = path.display().to_string();
        let scenario: Scenario = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| Location::from_offset(&origin, &text, s.start).to_string())
                .unwrap_or_else(|| origin.clone());
            anyhow::anyhow!("{at}: {}", e.message())
        })?;
        scenario
            .check()
            .map_err(|e| anyhow::anyhow!("{origin}: {e:#}"))?;
        Ok(scenario)
    }

    fn check(&self) -> anyhow::Result<()> {
        secs(&self.duration, "duration")?;
        let names: HashSet<&str> = self.workloads.iter().map(|w| w.name.as_str()).collect();
        if names.len() != self.workloads.len() {
            bail!("two workloads have the same name");
        }
        for w in &self.workloads {
            if !matches!(w.workload.as_str(), "link" | "teleport") {
                bail!("workload {}: workload must be link or teleport", w.name);
            }
            if qnet_common::wire::CardinalState::from_name(&w.state).is_none() {
                bail!("workload {}: unknown state {:?}", w.name, w.state);
            }
            if !matches!(w.kind.as_str(), "keep" | "measure") {
                bail!("workload {}: type must be keep or measure", w.name);
            }
            if !matches!(w.basis.as_str(), "Z" | "X" | "Y" | "random") {
                bail!("workload {}: basis must be Z, X, Y or random", w.name);
            }
            if let Some(t) = &w.max_time {
                secs(t, "max_time")?;
            }
        }
        for (i, s) in self.timeline.iter().enumerate() {
            secs(&s.at, "at")?;
            let known = [
                "latency",
                "loss",
                "partition",
                "heal",
                "kill",
                "restart",
                "pause",
                "link",
                "memory",
            ];
            if !known.contains(&s.action.as_str()) {
                bail!("timeline step {}: unknown action {:?}", i + 1, s.action);
            }
        }
        for (i, a) in self.asserts.iter().enumerate() {
            if !names.contains(a.workload.as_str()) {
                bail!("assertion {}: unknown workload {:?}", i + 1, a.workload);
            }
            if !matches!(
                a.what.as_str(),
                "rate" | "fidelity" | "errors" | "consistent"
            ) {
                bail!("assertion {}: unknown kind {:?}", i + 1, a.what);
            }
            if a.what == "errors" && a.code.is_none() {
                bail!("assertion {}: `errors` needs a code", i + 1);
            }
            for t in [&a.from, &a.to].into_iter().flatten() {
                secs(t, "window")?;
            }
        }
        Ok(())
    }

    /// The topology file, resolved against the scenario file's folder.
    pub fn topology_path(&self, scenario_file: &Path) -> PathBuf {
        scenario_file
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.topology)
    }
}

impl Workload {
    fn spec(&self) -> anyhow::Result<LinkRunSpec> {
        let kind = match (self.kind.as_str(), self.basis.as_str()) {
            ("keep", _) => LinkKind::Keep,
            (_, "random") => LinkKind::MeasureRandom,
            (_, "X") => LinkKind::Measure(Basis::X),
            (_, "Y") => LinkKind::Measure(Basis::Y),
            _ => LinkKind::Measure(Basis::Z),
        };
        Ok(LinkRunSpec {
            pairs: self.pairs,
            min_fidelity: self.min_fidelity,
            max_time: match &self.max_time {
                Some(t) => secs(t, "max_time")?,
                None => f64::INFINITY,
            },
            purpose: 10,
            priority: 0,
            kind,
        })
    }
}

/// Runs a scenario on a deployment that is up in `target`'s run folder; returns the
/// report. The caller deploys and tears down.
pub async fn run(
    scenario: &Scenario,
    run_dir: qnet_common::rundir::RunDir,
) -> anyhow::Result<Report> {
    let duration = secs(&scenario.duration, "duration")?;
    let start = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for w in &scenario.workloads {
        let w = w.clone();
        let spec = w.spec()?;
        let (stop, samples, run_dir) = (stop.clone(), samples.clone(), run_dir.clone());
        tasks.spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = start.elapsed().as_secs_f64();
                let mut sample = Sample {
                    start: t0,
                    ..Sample::default()
                };
                let outcome = match Target::load(run_dir.clone()) {
                    Ok(target) if w.workload == "teleport" => {
                        let state = qnet_common::wire::CardinalState::from_name(&w.state)
                            .expect("checked when loaded");
                        run::teleport(
                            &target,
                            &w.from,
                            &w.to,
                            state,
                            w.pairs,
                            Duration::from_secs(30),
                        )
                        .await
                        .map(|r| {
                            (
                                r.received,
                                r.received,
                                r.fidelity,
                                BTreeMap::new(),
                                None,
                                Vec::new(),
                            )
                        })
                    }
                    Ok(target) => run::link(&target, &w.from, &w.to, spec, Duration::from_secs(30))
                        .await
                        .map(|r| {
                            // A pair's wall time: the request's start plus its
                            // emulated latency in wall seconds.
                            let times = r
                                .pair_latencies
                                .iter()
                                .map(|l| t0 + l / target.topology.time_scale)
                                .collect();
                            (
                                r.delivered,
                                r.oracle_pairs,
                                r.oracle_fidelity_mean.unwrap_or(0.0),
                                r.errors,
                                Some(r.create_id),
                                times,
                            )
                        }),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok((delivered, checked, fidelity, errors, create_id, times)) => {
                        sample.pair_times = times;
                        sample.delivered = delivered;
                        sample.oracle_pairs = checked;
                        sample.oracle_fidelity_sum = fidelity * checked as f64;
                        sample.errors = errors;
                        sample.create_id = create_id;
                    }
                    Err(e) => {
                        tracing::info!(workload = %w.name, "request not made: {e:#}");
                        sample.errors.insert("UNREACHABLE".into(), 1);
                        // Don't spin against a node that is down.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                sample.end = start.elapsed().as_secs_f64();
                samples
                    .lock()
                    .expect("samples lock")
                    .entry(w.name.clone())
                    .or_default()
                    .push(sample);
            }
        });
    }
    // The timeline, in order of time.
    let mut steps: Vec<&Step> = scenario.timeline.iter().collect();
    steps.sort_by(|a, b| {
        secs(&a.at, "at")
            .unwrap_or(0.0)
            .total_cmp(&secs(&b.at, "at").unwrap_or(0.0))
    });
    let mut step_errors = Vec::new();
    for step in steps {
        let at = secs(&step.at, "at")?;
        tokio::time::sleep_until(
            tokio::time::Instant::from_std(start) + Duration::from_secs_f64(at),
        )
        .await;
        if let Err(e) = apply(step, &run_dir).await {
            step_errors.push(format!("step at {} ({}): {e:#}", step.at, step.action));
        }
    }
    tokio::time::sleep_until(
        tokio::time::Instant::from_std(start) + Duration::from_secs_f64(duration),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Requests in flight get a moment to end; a long one is cut off (the deployment
    // is torn down next anyway), so the run lasts what the scenario says.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    let seconds = start.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));

    let mut verdicts = Vec::new();
    for a in &scenario.asserts {
        verdicts.push(judge(a, &samples, duration, &scenario.workloads, &run_dir).await);
    }
    for e in step_errors {
        verdicts.push(Verdict {
            assertion: Assertion {
                what: "timeline".into(),
                workload: String::new(),
                from: None,
                to: None,
                min: None,
                max: None,
                code: None,
            },
            passed: false,
            value: f64::NAN,
            detail: e,
        });
    }
    let passed = verdicts.iter().all(|v| v.passed);
    Ok(Report {
        name: scenario.name.clone(),
        requests: samples.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
        delivered: samples
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|s| s.delivered).sum()))
            .collect(),
        verdicts,
        seconds,
        passed,
    })
}

async fn apply(step: &Step, run_dir: &qnet_common::rundir::RunDir) -> anyhow::Result<()> {
    let mut chaos = Chaos::open(run_dir.clone())?;
    let need = |x: &Option<String>, what: &str| {
        x.clone()
            .ok_or_else(|| anyhow::anyhow!("`{}` needs `{what}`", step.action))
    };
    let dur = |x: &Option<String>| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(match x {
            Some(s) => secs(s, "duration")?,
            None => 0.0,
        }))
    };
    let result = match step.action.as_str() {
        "latency" => {
            chaos
                .latency(
                    &need(&step.a, "a")?,
                    &need(&step.b, "b")?,
                    dur(&step.delay)?,
                    dur(&step.jitter)?,
                )
                .await
        }
        "loss" => {
            let p = step
                .loss
                .ok_or_else(|| anyhow::anyhow!("`loss` needs `loss`"))?;
            chaos
                .loss(&need(&step.a, "a")?, &need(&step.b, "b")?, p)
                .await
        }
        "partition" => {
            let groups = step
                .groups
                .clone()
                .ok_or_else(|| anyhow::anyhow!("`partition` needs `groups`"))?;
            if groups.len() != 2 {
                bail!("`partition` needs exactly two groups");
            }
            chaos.partition(&groups[0], &groups[1], step.oneway).await
        }
        "heal" => match (&step.a, &step.b) {
            (Some(a), Some(b)) => chaos.heal(Some((a, b))).await,
            _ => chaos.heal(None).await,
        },
        "kill" => chaos.kill(&need(&step.a, "a")?).await,
        "restart" => {
            chaos
                .restart(&need(&step.a, "a")?, Duration::from_secs(10))
                .await
        }
        "pause" => chaos.pause(&need(&step.a, "a")?, dur(&step.delay)?).await,
        "link" => {
            chaos
                .link(
                    &need(&step.a, "a")?,
                    &need(&step.b, "b")?,
                    step.fidelity,
                    step.up,
                )
                .await
        }
        "memory" => {
            let t = |x: &Option<String>| x.as_deref().map(|s| secs(s, "memory")).transpose();
            chaos
                .memory(&need(&step.a, "a")?, t(&step.t1)?, t(&step.t2)?)
                .await
        }
        other => bail!("unknown action {other:?}"),
    };
    chaos.close().await;
    result
}

/// Pairs of `samples` delivered in the window [from, to]: at their own times where
/// known, else each request's pairs spread evenly over its wall time.
fn delivered_in(samples: &[Sample], from: f64, to: f64) -> f64 {
    samples
        .iter()
        .map(|s| {
            if s.pair_times.len() == s.delivered && s.delivered > 0 {
                return s
                    .pair_times
                    .iter()
                    .filter(|&&t| t >= from && t <= to)
                    .count() as f64;
            }
            let len = (s.end - s.start).max(1e-9);
            let overlap = (s.end.min(to) - s.start.max(from)).max(0.0);
            s.delivered as f64 * overlap / len
        })
        .sum()
}

async fn judge(
    a: &Assertion,
    all: &BTreeMap<String, Vec<Sample>>,
    duration: f64,
    workloads: &[Workload],
    run_dir: &qnet_common::rundir::RunDir,
) -> Verdict {
    let samples: &[Sample] = all.get(&a.workload).map_or(&[], Vec::as_slice);
    let from = a
        .from
        .as_deref()
        .map_or(0.0, |s| secs(s, "from").unwrap_or(0.0));
    let to =
        a.to.as_deref()
            .map_or(duration, |s| secs(s, "to").unwrap_or(duration));
    let bounds = |value: f64| a.min.is_none_or(|m| value >= m) && a.max.is_none_or(|m| value <= m);
    let window = format!("[{from} s, {to} s]");
    let (value, passed, detail) = match a.what.as_str() {
        "rate" => {
            let rate = delivered_in(samples, from, to) / (to - from).max(1e-9);
            (rate, bounds(rate), format!("{rate:.1} pairs/s in {window}"))
        }
        "fidelity" => {
            let in_window: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.end > from && s.start < to)
                .collect();
            let n: usize = in_window.iter().map(|s| s.oracle_pairs).sum();
            let sum: f64 = in_window.iter().map(|s| s.oracle_fidelity_sum).sum();
            if n == 0 {
                (
                    f64::NAN,
                    false,
                    format!("no pair checked by the oracle in {window}"),
                )
            } else {
                let f = sum / n as f64;
                (
                    f,
                    bounds(f),
                    format!("mean oracle fidelity {f:.4} over {n} pairs in {window}"),
                )
            }
        }
        "errors" => {
            let code = a.code.clone().unwrap_or_default();
            let count: u32 = samples
                .iter()
                .filter(|s| s.end >= from && s.start <= to)
                .map(|s| s.errors.get(&code).copied().unwrap_or(0))
                .sum();
            let c = f64::from(count);
            (c, bounds(c), format!("{count} × {code} in {window}"))
        }
        _ => {
            // consistent: both ends' logs agree on every surviving pair.
            let Some(w) = workloads.iter().find(|w| w.name == a.workload) else {
                return Verdict {
                    assertion: a.clone(),
                    passed: false,
                    value: f64::NAN,
                    detail: "no such workload".into(),
                };
            };
            match consistency(w, run_dir).await {
                Ok((pairs, mismatches)) => (
                    mismatches as f64,
                    mismatches == 0,
                    format!("{pairs} pairs, {mismatches} reported at one end only"),
                ),
                Err(e) => (f64::NAN, false, format!("cannot read the link logs: {e:#}")),
            }
        }
    };
    Verdict {
        assertion: a.clone(),
        passed,
        value,
        detail,
    }
}

/// (pairs checked, pairs valid at one end only) for the link of `w`.
async fn consistency(
    w: &Workload,
    run_dir: &qnet_common::rundir::RunDir,
) -> anyhow::Result<(usize, usize)> {
    let target = Target::load(run_dir.clone())?;
    let here = run::link_log(&target, &w.from, &w.to).await?;
    let there = run::link_log(&target, &w.to, &w.from).await?;
    // (requester is `from`, create id, seq) → still valid.
    let valid = |entries: &[qnet_common::wire::LinkLogEntry], from_side: bool| {
        let mut set = std::collections::BTreeSet::new();
        for e in entries {
            let key = (e.local_origin == from_side, e.create_id, e.seq);
            if e.ok {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
        set
    };
    let a = valid(&here, true);
    let b = valid(&there, false);
    let mismatches = a.symmetric_difference(&b).count();
    Ok((a.union(&b).count(), mismatches))
}

/// The report in words.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "scenario {}: {} ({:.1} s)\n",
        report.name,
        if report.passed { "PASSED" } else { "FAILED" },
        report.seconds
    );
    for (w, n) in &report.requests {
        out += &format!(
            "  workload {w}: {n} requests, {} pairs delivered\n",
            report.delivered.get(w).copied().unwrap_or(0)
        );
    }
    for v in &report.verdicts {
        let bounds = match (v.assertion.min, v.assertion.max) {
            (Some(lo), Some(hi)) => format!(" (want {lo} ..= {hi})"),
            (Some(lo), None) => format!(" (want ≥ {lo})"),
            (None, Some(hi)) => format!(" (want ≤ {hi})"),
            (None, None) => String::new(),
        };
        out += &format!(
            "  [{}] {} {}: {}{bounds}\n",
            if v.passed { "ok" } else { "FAIL" },
            v.assertion.what,
            v.assertion.workload,
            v.detail
        );
    }
    out
}

/// The report as JUnit XML (one test case per assertion).
pub fn junit(report: &Report) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failures = report.verdicts.iter().filter(|v| !v.passed).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        esc(&report.name),
        report.verdicts.len(),
        report.seconds
    );
    for (i, v) in report.verdicts.iter().enumerate() {
        let name = esc(&format!(
            "{} {} #{}",
            v.assertion.what,
            v.assertion.workload,
            i + 1
        ));
        if v.passed {
            out += &format!("  <testcase name=\"{name}\"/>\n");
        } else {
            out += &format!(
                "  <testcase name=\"{name}\"><failure message=\"{}\"/></testcase>\n",
                esc(&v.detail)
            );
        }
    }
    out += "</testsuite>\n";
    out
}
