//! Faults injected into a running deployment (turmoil's vocabulary: partition,
//! repair, latency, loss; plus kill, restart and pause for processes, and quantum
//! faults on links and memories).
//!
//! Classical faults are rules in the socket shim under each node's QUIC endpoint
//! (installed with the node's `SetChaos` admin request), so QUIC's own recovery
//! reacts to them. Every fault is recorded in `<run dir>/faults.json` (what is in
//! force, shown by `qnet status`) and appended to `<run dir>/faults.log` with its wall
//! and emulated time.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::Signal;
use qnet_common::rundir::RunDir;
use qnet_common::shim::LinkRule;
use qnet_common::wire::{NodeRequestBody, RequestBody, ResponseBody};
use serde::{Deserialize, Serialize};

use crate::client::Session;
use crate::procs::{self, ReadyWatcher};
use crate::record::{Deployment, ProcessRole, now_rfc3339};
use crate::run::Target;

/// The faults in force, as kept in `faults.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Classical impairments by direction, `"alice->bob"`.
    pub classical: BTreeMap<String, LinkRule>,
    /// Quantum faults by link, `"alice-bob"`: (fidelity override, down).
    pub links: BTreeMap<String, LinkFault>,
    /// Memory faults by node: (T1, T2) overrides in seconds.
    pub memories: BTreeMap<String, (Option<f64>, Option<f64>)>,
    /// Processes killed or paused by a fault, by name.
    pub processes: BTreeMap<String, String>,
}

/// A quantum fault on a link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkFault {
    /// Fidelity of fresh pairs, if changed.
    pub fidelity: Option<f64>,
    /// True while the link is down.
    pub down: bool,
}

impl Faults {
    fn path(run_dir: &RunDir) -> std::path::PathBuf {
        run_dir.root().join("faults.json")
    }

    /// The faults recorded for a deployment (none if the file is missing).
    pub fn load(run_dir: &RunDir) -> anyhow::Result<Faults> {
        match std::fs::read(Self::path(run_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes).context("faults.json is damaged"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Faults::default()),
            Err(e) => Err(e).context("cannot read faults.json"),
        }
    }

    fn save(&self, run_dir: &RunDir) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        std::fs::write(Self::path(run_dir), text).context("cannot write faults.json")
    }

    /// One line per fault in force, for `qnet status` and `qnet chaos list`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (dir, rule) in &self.classical {
            lines.push(format!("{dir}: {}", describe(rule)));
        }
        for (link, f) in &self.links {
            let mut parts = Vec::new();
            if let Some(fid) = f.fidelity {
                parts.push(format!("fidelity {fid}"));
            }
            if f.down {
                parts.push("down".to_string());
            }
            lines.push(format!("link {link}: {}", parts.join(", ")));
        }
        for (node, (t1, t2)) in &self.memories {
            let show = |t: &Option<f64>| t.map_or("unchanged".to_string(), |t| format!("{t} s"));
            lines.push(format!("memory {node}: T1 {}, T2 {}", show(t1), show(t2)));
        }
        for (node, what) in &self.processes {
            lines.push(format!("process {node}: {what}"));
        }
        lines
    }
}

/// A rule in words.
pub fn describe(rule: &LinkRule) -> String {
    let mut parts = Vec::new();
    if rule.blackhole {
        parts.push("partitioned".to_string());
    }
    if !rule.delay.is_zero() || !rule.jitter.is_zero() {
        parts.push(format!(
            "+{:?} latency (jitter {:?})",
            rule.delay, rule.jitter
        ));
    }
    if rule.loss > 0.0 {
        parts.push(format!("{:.0} % loss", rule.loss * 100.0));
    }
    if rule.duplicate > 0.0 {
        parts.push(format!("{:.0} % duplicated", rule.duplicate * 100.0));
    }
    if rule.reorder > 0.0 {
        parts.push(format!("{:.0} % reordered", rule.reorder * 100.0));
    }
    if let Some(b) = rule.bandwidth {
        parts.push(format!("{b} B/s"));
    }
    if parts.is_empty() {
        "no impairment".to_string()
    } else {
        parts.join(", ")
    }
}

/// A chaos session on one deployment.
pub struct Chaos {
    target: Target,
    session: Session,
    faults: Faults,
}

impl Chaos {
    /// Opens the deployment in `run_dir`.
    pub fn open(run_dir: RunDir) -> anyhow::Result<Chaos> {
        let target = Target::load(run_dir)?;
        let session = Session::new(&target.run_dir)?;
        let faults = Faults::load(&target.run_dir)?;
        Ok(Chaos {
            target,
            session,
            faults,
        })
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Closes the session's connections.
    pub async fn close(self) {
        self.session.close().await;
    }

    fn check_node(&self, name: &str) -> anyhow::Result<()> {
        if self.target.topology.node_index(name).is_none() {
            bail!("unknown node {name:?} in {}", self.target.topology.name);
        }
        Ok(())
    }

    /// The broker's emulated time now, seconds (for the fault log).
    async fn emulated_now(&self) -> Option<f64> {
        let addr = self.target.deployment.broker()?.addr?;
        let mut broker = self.session.broker(addr).await.ok()?;
        let t = match broker.request(RequestBody::Now).await.ok()? {
            ResponseBody::Now { t_emu_ns } => Some(t_emu_ns as f64 / 1e9),
            _ => None,
        };
        broker.close();
        t
    }

    /// Records a fault in force and logs it with its wall and emulated time.
    async fn record(&mut self, what: &str) -> anyhow::Result<()> {
        self.faults.save(&self.target.run_dir)?;
        let emulated = self
            .emulated_now()
            .await
            .map_or("?".to_string(), |t| format!("{t:.6}"));
        let line = format!("{} t_emu={emulated}s {what}\n", now_rfc3339());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.target.run_dir.root().join("faults.log"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .context("cannot write faults.log")?;
        tracing::info!("fault: {what}");
        Ok(())
    }

    /// Sends `from`'s classical rule towards `to` (the recorded fault, or none).
    async fn push_rule(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let rule = self.faults.classical.get(&direction(from, to)).copied();
        let addr = self.node_addr(from)?;
        let mut node = self.session.node(from, addr).await?;
        let answer = node
            .request(NodeRequestBody::SetChaos {
                peer: to.to_string(),
                rule,
            })
            .await;
        node.close();
        answer.map(|_| ())
    }

    fn node_addr(&self, name: &str) -> anyhow::Result<std::net::SocketAddr> {
        let p = self
            .target
            .deployment
            .process(name)
            .ok_or_else(|| anyhow!("node {name} is not part of this deployment"))?;
        if !procs::is_alive(
            p.pid,
            &self.target.deployment.exe,
            &self.target.deployment.run_dir,
        ) {
            bail!("node {name} is down");
        }
        p.addr
            .ok_or_else(|| anyhow!("node {name} never became ready"))
    }

    /// Changes the classical rule from `a` to `b` (and from `b` to `a` unless
    /// `oneway`) with `edit`, and installs it.
    async fn edit_classical(
        &mut self,
        a: &str,
        b: &str,
        oneway: bool,
        edit: impl Fn(&mut LinkRule),
    ) -> anyhow::Result<()> {
        self.check_node(a)?;
        self.check_node(b)?;
        if a == b {
            bail!("a fault needs two different nodes");
        }
        let mut pairs = vec![(a, b)];
        if !oneway {
            pairs.push((b, a));
        }
        for (from, to) in pairs {
            let key = direction(from, to);
            let mut rule = self.faults.classical.get(&key).copied().unwrap_or_default();
            edit(&mut rule);
            rule.validate()?;
            self.faults.classical.insert(key, rule);
            if let Err(e) = self.push_rule(from, to).await {
                // What was installed stays on record, so `list` shows it and
                // `heal` can remove it.
                self.faults.save(&self.target.run_dir)?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// `qnet chaos latency A B DELAY [--jitter J]`: extra one-way latency both ways.
    pub async fn latency(
        &mut self,
        a: &str,
        b: &str,
        delay: Duration,
        jitter: Duration,
    ) -> anyhow::Result<()> {
        self.edit_classical(a, b, false, |r| {
            r.delay = delay;
            r.jitter = jitter;
        })
        .await?;
        self.record(&format!("latency {a} <-> {b} +{delay:?} jitter {jitter:?}"))
            .await
    }

    /// `qnet chaos loss A B P`: datagram loss both ways.
    pub async fn loss(&mut self, a: &str, b: &str, p: f64) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&p) {
            bail!("loss must be a probability in [0, 1], not {p}");
        }
        self.edit_classical(a, b, false, |r| r.loss = p).await?;
        self.record(&format!("loss {a} <-> {b} {p}")).await
    }

    /// `qnet chaos partition A,B C,D [--oneway]`: no datagram from one group reaches
    /// the other (with `oneway`, only from the first group to the second).
    pub async fn partition(
        &mut self,
        left: &[String],
        right: &[String],
        oneway: bool,
    ) -> anyhow::Result<()> {
        if left.is_empty() || right.is_empty() {
            bail!("a partition needs two non-empty groups, e.g. `alice,bob carol`");
        }
        if let Some(n) = left.iter().find(|n| right.contains(n)) {
            bail!("{n} is in both groups");
        }
        // Every name first: a rule installed before a bad name fails is never recorded.
        left.iter()
            .chain(right)
            .try_for_each(|n| self.check_node(n))?;
        for a in left {
            for b in right {
                self.edit_classical(a, b, oneway, |r| r.blackhole = true)
                    .await?;
            }
        }
        let arrow = if oneway { "->" } else { "|" };
        self.record(&format!(
            "partition {} {arrow} {}",
            left.join(","),
            right.join(",")
        ))
        .await
    }

    /// `qnet chaos heal [A B]`: removes the classical faults between A and B (both
    /// ways), or every classical fault.
    pub async fn heal(&mut self, pair: Option<(&str, &str)>) -> anyhow::Result<()> {
        let keys: Vec<String> = match pair {
            Some((a, b)) => {
                self.check_node(a)?;
                self.check_node(b)?;
                vec![direction(a, b), direction(b, a)]
            }
            None => self.faults.classical.keys().cloned().collect(),
        };
        for key in keys {
            if self.faults.classical.remove(&key).is_some() {
                let (from, to) = key.split_once("->").expect("direction keys have an arrow");
                let (from, to) = (from.to_string(), to.to_string());
                // A node that is down has no rules to remove.
                if let Err(e) = self.push_rule(&from, &to).await {
                    tracing::warn!("{from}: {e:#}");
                }
            }
        }
        let what = pair.map_or("heal all".to_string(), |(a, b)| format!("heal {a} <-> {b}"));
        self.record(&what).await
    }

    /// `qnet chaos link A B [--fidelity F] [--down|--up]`: a quantum fault on a link.
    pub async fn link(
        &mut self,
        a: &str,
        b: &str,
        fidelity: Option<f64>,
        up: Option<bool>,
    ) -> anyhow::Result<()> {
        self.check_node(a)?;
        self.check_node(b)?;
        if !self.target.topology.are_neighbours(a, b) {
            bail!("{a} and {b} are not neighbours");
        }
        if fidelity.is_none() && up.is_none() {
            bail!("say what changes: --fidelity F, --down or --up");
        }
        self.admin(RequestBody::SetLink {
            a: a.to_string(),
            b: b.to_string(),
            fidelity,
            up,
        })
        .await?;
        let key = format!("{}-{}", a.min(b), a.max(b));
        let entry = self.faults.links.entry(key.clone()).or_default();
        if fidelity.is_some() {
            entry.fidelity = fidelity;
        }
        if let Some(up) = up {
            entry.down = !up;
        }
        // Back to the topology's own fidelity and up: no fault left.
        let original = self.target.topology.link_between(a, b).map(|l| l.fidelity);
        if !entry.down && (entry.fidelity.is_none() || entry.fidelity == original) {
            self.faults.links.remove(&key);
        }
        self.record(&format!("link {a}-{b} fidelity {fidelity:?} up {up:?}"))
            .await
    }

    /// `qnet chaos memory NODE [--t1 T] [--t2 T]`: a node's memory changes.
    pub async fn memory(
        &mut self,
        node: &str,
        t1: Option<f64>,
        t2: Option<f64>,
    ) -> anyhow::Result<()> {
        self.check_node(node)?;
        if t1.is_none() && t2.is_none() {
            bail!("say what changes: --t1 or --t2");
        }
        self.admin(RequestBody::SetMemory {
            node: node.to_string(),
            t1,
            t2,
        })
        .await?;
        self.faults.memories.insert(node.to_string(), (t1, t2));
        self.record(&format!("memory {node} t1 {t1:?} t2 {t2:?}"))
            .await
    }

    async fn admin(&self, body: RequestBody) -> anyhow::Result<ResponseBody> {
        let addr = self
            .target
            .deployment
            .broker()
            .and_then(|b| b.addr)
            .ok_or_else(|| anyhow!("the deployment has no running broker"))?;
        let mut broker = self.session.broker(addr).await?;
        let answer = broker.request(body).await;
        broker.close();
        answer
    }

    fn pid_of(&self, node: &str) -> anyhow::Result<u32> {
        self.check_node(node)?;
        let p = self
            .target
            .deployment
            .process(node)
            .filter(|p| p.role == ProcessRole::Node)
            .ok_or_else(|| anyhow!("node {node} is not part of this deployment"))?;
        Ok(p.pid)
    }

    /// `qnet chaos kill NODE`: the process dies at once (SIGKILL); its qubits are
    /// lost when the broker notices (its connection's idle timeout).
    pub async fn kill(&mut self, node: &str) -> anyhow::Result<()> {
        let pid = self.pid_of(node)?;
        let d = &self.target.deployment;
        if !procs::is_alive(pid, &d.exe, &d.run_dir) {
            bail!("node {node} is already down");
        }
        procs::signal_group(pid, Signal::SIGKILL);
        self.faults
            .processes
            .insert(node.to_string(), "killed".to_string());
        self.record(&format!("kill {node} (pid {pid})")).await
    }

    /// `qnet chaos pause NODE DURATION`: SIGSTOP, then SIGCONT after the duration
    /// (its qubits keep decohering meanwhile: emulated time does not stop).
    pub async fn pause(&mut self, node: &str, duration: Duration) -> anyhow::Result<()> {
        let pid = self.pid_of(node)?;
        let d = &self.target.deployment;
        if !procs::is_alive(pid, &d.exe, &d.run_dir) {
            bail!("node {node} is down");
        }
        procs::signal_group(pid, Signal::SIGSTOP);
        self.faults
            .processes
            .insert(node.to_string(), format!("paused for {duration:?}"));
        self.record(&format!("pause {node} for {duration:?}"))
            .await?;
        tokio::time::sleep(duration).await;
        procs::signal_group(pid, Signal::SIGCONT);
        self.faults.processes.remove(node);
        self.record(&format!("resume {node}")).await
    }

    /// `qnet chaos restart NODE`: kills the node if it still runs, starts it again
    /// with empty memory, and waits until it is ready; it rejoins the network.
    pub async fn restart(&mut self, node: &str, timeout: Duration) -> anyhow::Result<()> {
        let pid = self.pid_of(node)?;
        let exe = self.target.deployment.exe.clone();
        let run_dir_path = self.target.deployment.run_dir.clone();
        if procs::is_alive(pid, &exe, &run_dir_path) {
            procs::signal_group(pid, Signal::SIGKILL);
        }
        let broker = self
            .target
            .deployment
            .broker()
            .and_then(|b| b.addr)
            .ok_or_else(|| anyhow!("the deployment has no running broker"))?
            .to_string();
        let log = self.target.run_dir.log(node);
        let mut watcher = ReadyWatcher::new(log.clone(), "node", node);
        let root = self.target.run_dir.root().as_os_str().to_owned();
        let args = [
            OsStr::new("node"),
            OsStr::new("--run-dir"),
            &root,
            OsStr::new("--name"),
            OsStr::new(node),
            OsStr::new("--broker"),
            OsStr::new(&broker),
        ];
        let mut child = procs::spawn_logged(&exe, &args, &log)?;
        let new_pid = child.id();
        // Record the new pid at once, so `qnet down` finds it whatever happens next.
        let mut deployment: Deployment = self.target.deployment.clone();
        if let Some(p) = deployment.processes.iter_mut().find(|p| p.name == node) {
            p.pid = new_pid;
            p.addr = None;
        }
        deployment.save(&self.target.run_dir)?;
        let deadline = Instant::now() + timeout;
        let addr = loop {
            if let Some(addr) = watcher.poll()? {
                break addr;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "node {node} exited during restart ({status}):\n{}",
                    procs::log_excerpt(&log)
                );
            }
            if Instant::now() > deadline {
                bail!("node {node} was not ready within {timeout:?} after restart");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(p) = deployment.processes.iter_mut().find(|p| p.name == node) {
            p.addr = Some(addr);
        }
        deployment.save(&self.target.run_dir)?;
        self.target.deployment = deployment;
        self.faults.processes.remove(node);
        // The new process starts with no impairments; re-install the recorded ones.
        let directions: Vec<String> = self
            .faults
            .classical
            .keys()
            .filter(|k| k.starts_with(&format!("{node}->")))
            .cloned()
            .collect();
        for key in directions {
            let (from, to) = key.split_once("->").expect("direction keys have an arrow");
            self.push_rule(from, to).await?;
        }
        self.record(&format!("restart {node} (pid {new_pid}, {addr})"))
            .await
    }
}

fn direction(from: &str, to: &str) -> String {
    format!("{from}->{to}")
}
