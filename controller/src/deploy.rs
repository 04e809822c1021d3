//! `qnet up` and `qnet down` for local processes.
//!
//! `up` prepares the run folder (topology copy, one certificate per process), starts
//! the broker, waits for its READY line, then starts every node at once and waits
//! for all of theirs. Each process gets its own process group and log file, so it
//! keeps running after the controller exits. The record in `deployment.json` is
//! rewritten whenever a pid or an address becomes known, so a `down` can always
//! find everything that was started. If anything fails, `up` kills what it started.
//!
//! `down` asks every process to shut down over its admin API, signals those that
//! cannot be asked, waits, and kills what is left — only pids whose command line
//! shows they are still ours.

use std::ffi::OsStr;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::Signal;
use qnet_common::rundir::RunDir;
use qnet_common::tls::{BROKER_IDENTITY, CONTROLLER_IDENTITY, DeploymentCa};
use qnet_common::topology::Topology;

use crate::client::Session;
use crate::procs::{self, ReadyWatcher};
use crate::record::{self, Deployment, ProcessRecord, ProcessRole};

/// How long the broker may take to print its READY line.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `up` looks at the log files.
const POLL: Duration = Duration::from_millis(15);

/// What `up` needs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The topology file.
    pub topology: PathBuf,
    /// The run folder; `None` for `.qnet/<network name>/` under the working folder.
    pub run_dir: Option<PathBuf>,
    /// The `qnet` binary to start the roles with.
    pub exe: PathBuf,
    /// How long the nodes may take to be ready; `None` for 10 s plus 100 ms per node.
    pub nodes_timeout: Option<Duration>,
    /// Show a progress line on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// A deployment `up` started.
#[derive(Debug)]
pub struct Deployed {
    /// Its run folder.
    pub run_dir: RunDir,
    /// Its record, as written to `deployment.json`.
    pub deployment: Deployment,
    /// The child processes, broker first. Dropping them leaves the processes
    /// running; a caller that stays alive after `down` should [`reap`] them.
    pub children: Vec<Child>,
    /// Seconds from the start of `up` until every process was ready.
    pub seconds: f64,
}

/// Waits for every child that has exited, so none stays a zombie of this process.
pub fn reap(children: &mut [Child]) {
    for child in children {
        let _ = child.try_wait();
    }
}

/// Starts a deployment; see the module docs.
pub async fn up(options: &UpOptions) -> anyhow::Result<Deployed> {
    let start = Instant::now();
    let topology = Topology::load(&options.topology)?;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let root = match &options.run_dir {
        Some(dir) => cwd.join(dir),
        None => cwd.join(record::DEFAULT_BASE).join(&topology.name),
    };
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    // One spelling of the folder everywhere: the processes' command lines hold it and
    // liveness checks compare with it.
    let root =
        fs::canonicalize(&root).with_context(|| format!("cannot open {}", root.display()))?;
    let run_dir = RunDir::new(&root);
    refuse_if_running(&run_dir)?;
    clean(&run_dir)?;
    fs::copy(&options.topology, run_dir.topology()).with_context(|| {
        format!(
            "cannot copy the topology to {}",
            run_dir.topology().display()
        )
    })?;
    let names: Vec<&str> = topology.nodes.iter().map(|n| n.name.as_str()).collect();
    issue_certs(&run_dir, &topology.name, &names)?;
    fs::create_dir_all(run_dir.logs())
        .with_context(|| format!("cannot create {}", run_dir.logs().display()))?;

    let mut starter = Starter {
        run_dir: run_dir.clone(),
        exe: options.exe.clone(),
        deployment: Deployment {
            network: topology.name.clone(),
            run_dir: root.clone(),
            started_at: record::now_rfc3339(),
            exe: options.exe.clone(),
            processes: Vec::new(),
        },
        children: Vec::new(),
        watchers: Vec::new(),
    };
    let nodes_timeout = options
        .nodes_timeout
        .unwrap_or(Duration::from_secs(10) + Duration::from_millis(100) * names.len() as u32);
    match starter
        .start_all(&names, nodes_timeout, options.progress)
        .await
    {
        Ok(()) => Ok(Deployed {
            run_dir,
            deployment: starter.deployment,
            children: starter.children,
            seconds: start.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            starter.abort();
            Err(e)
        }
    }
}

/// Fails if `deployment.json` in `run_dir` names a process that still runs.
fn refuse_if_running(run_dir: &RunDir) -> anyhow::Result<()> {
    if !run_dir.deployment().is_file() {
        return Ok(());
    }
    let Ok(old) = Deployment::load(run_dir) else {
        // A corrupt record names no pid we could check; treat it as stale.
        return Ok(());
    };
    let live = old
        .processes
        .iter()
        .filter(|p| procs::is_alive(p.pid, &old.exe, &old.run_dir))
        .count();
    if live > 0 {
        let dir = run_dir.root().display();
        bail!(
            "a deployment of {} is already running in {dir} ({live} processes up); \
             stop it with `qnet down --run-dir {dir}` or pick another --run-dir",
            old.network
        );
    }
    Ok(())
}

/// Removes what an earlier deployment left in the folder (only the entries `up`
/// creates, so a mistyped `--run-dir` never wipes anything else).
fn clean(run_dir: &RunDir) -> anyhow::Result<()> {
    for dir in [run_dir.certs(), run_dir.logs()] {
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    let tmp = run_dir.deployment().with_extension("json.tmp");
    for file in [run_dir.topology(), run_dir.deployment(), tmp] {
        if file.exists() {
            fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(())
}

/// Makes the deployment CA and one certificate for the broker, the controller and
/// every node, using every core (key generation dominates for large topologies).
fn issue_certs(run_dir: &RunDir, network: &str, nodes: &[&str]) -> anyhow::Result<()> {
    let dir = run_dir.certs();
    let ca = DeploymentCa::generate(network).context("cannot create the deployment CA")?;
    ca.write_cert(&dir)?;
    let mut identities = vec![BROKER_IDENTITY, CONTROLLER_IDENTITY];
    identities.extend_from_slice(nodes);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let per_thread = identities.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = identities
            .chunks(per_thread)
            .map(|chunk| {
                let (ca, dir) = (&ca, &dir);
                scope.spawn(move || -> anyhow::Result<()> {
                    for name in chunk {
                        ca.issue_to_dir(dir, name)
                            .with_context(|| format!("cannot issue a certificate for {name}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| anyhow!("certificate worker panicked"))?
        })
    })
}

/// The processes `up` has started so far.
struct Starter {
    run_dir: RunDir,
    exe: PathBuf,
    deployment: Deployment,
    /// Parallel to `deployment.processes`.
    children: Vec<Child>,
    /// Parallel to `deployment.processes`.
    watchers: Vec<ReadyWatcher>,
}

impl Starter {
    async fn start_all(
        &mut self,
        nodes: &[&str],
        nodes_timeout: Duration,
        progress: bool,
    ) -> anyhow::Result<()> {
        let root = self.run_dir.root().as_os_str().to_owned();
        self.spawn(
            ProcessRole::Broker,
            BROKER_IDENTITY,
            &[OsStr::new("broker"), OsStr::new("--run-dir"), &root],
        )?;
        self.deployment.save(&self.run_dir)?;
        self.wait_ready(0..1, BROKER_READY_TIMEOUT, None).await?;
        let broker = self.deployment.processes[0]
            .addr
            .expect("ready processes have an address")
            .to_string();
        self.deployment.save(&self.run_dir)?;

        for name in nodes {
            let args = [
                OsStr::new("node"),
                OsStr::new("--run-dir"),
                &root,
                OsStr::new("--name"),
                OsStr::new(name),
                OsStr::new("--broker"),
                OsStr::new(&broker),
            ];
            let started = self.spawn(ProcessRole::Node, name, &args);
            if started.is_err() {
                // Record what did start, so nothing is lost if the abort fails.
                let _ = self.deployment.save(&self.run_dir);
            }
            started?;
        }
        self.deployment.save(&self.run_dir)?;
        let progress = (progress && std::io::stderr().is_terminal()).then_some(nodes.len());
        self.wait_ready(1..self.children.len(), nodes_timeout, progress)
            .await?;
        self.deployment.save(&self.run_dir)
    }

    fn spawn(&mut self, role: ProcessRole, name: &str, args: &[&OsStr]) -> anyhow::Result<()> {
        let log = self.run_dir.log(name);
        let watcher = ReadyWatcher::new(log.clone(), role.as_str(), name);
        let child = procs::spawn_logged(&self.exe, args, &log)
            .with_context(|| format!("cannot start {} {name}", role.as_str()))?;
        self.deployment.processes.push(ProcessRecord {
            name: name.to_owned(),
            role,
            pid: child.id(),
            addr: None,
            log,
        });
        self.children.push(child);
        self.watchers.push(watcher);
        Ok(())
    }

    /// Waits until every process in `range` has printed its READY line. Fails fast
    /// when one exits, when the deadline passes, or on Ctrl-C.
    async fn wait_ready(
        &mut self,
        range: std::ops::Range<usize>,
        timeout: Duration,
        progress: Option<usize>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<usize> = range.collect();
        let total = pending.len();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut shown = usize::MAX;
        let result = loop {
            let mut failed = None;
            pending.retain(|&i| {
                if failed.is_some() {
                    return true;
                }
                match self.watchers[i].poll() {
                    Ok(Some(addr)) => {
                        self.deployment.processes[i].addr = Some(addr);
                        return false;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        failed = Some(anyhow!(
                            "cannot read {}: {e}",
                            self.deployment.processes[i].log.display()
                        ));
                        return true;
                    }
                }
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    let p = &self.deployment.processes[i];
                    failed = Some(anyhow!(
                        "{} {} exited ({status}) before it was ready{}",
                        p.role.as_str(),
                        p.name,
                        procs::log_excerpt(&p.log)
                    ));
                }
                true
            });
            if let Some(e) = failed {
                break Err(e);
            }
            if let Some(n) = progress
                && shown != pending.len()
            {
                shown = pending.len();
                eprint!("\rwaiting for nodes: {}/{n} ready ", total - shown);
                let _ = std::io::stderr().flush();
            }
            if pending.is_empty() {
                break Ok(());
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = pending
                    .iter()
                    .take(8)
                    .map(|&i| self.deployment.processes[i].name.as_str())
                    .collect();
                let more = if pending.len() > names.len() {
                    ", …"
                } else {
                    ""
                };
                let first = &self.deployment.processes[pending[0]];
                break Err(anyhow!(
                    "timed out after {:.0} s: {} of {total} not ready ({}{more}){}",
                    timeout.as_secs_f64(),
                    pending.len(),
                    names.join(", "),
                    procs::log_excerpt(&first.log)
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = &mut ctrl_c => break Err(anyhow!("interrupted; stopping what was started")),
            }
        };
        if progress.is_some() {
            eprintln!();
        }
        result
    }

    /// Kills and reaps everything started, and removes the record.
    fn abort(&mut self) {
        for child in &mut self.children {
            procs::signal_group(child.id(), Signal::SIGKILL);
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.run_dir.deployment());
    }
}

/// What `down` did.
#[derive(Debug, Default)]
pub struct DownReport {
    /// Processes that stopped when asked (admin request or SIGTERM).
    pub stopped: Vec<String>,
    /// Processes that had to be killed.
    pub killed: Vec<String>,
    /// Processes that were not running any more.
    pub gone: Vec<String>,
}

/// How long `down` waits for processes to exit after asking them.
pub const DOWN_GRACE: Duration = Duration::from_secs(3);

/// How long one admin shutdown request may take.
const SHUTDOWN_REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Stops every process of `deployment` and removes its record; see the module docs.
pub async fn down(run_dir: &RunDir, deployment: &Deployment) -> anyhow::Result<DownReport> {
    let alive = |p: &ProcessRecord| procs::is_alive(p.pid, &deployment.exe, &deployment.run_dir);
    let mut report = DownReport::default();
    let running: Vec<&ProcessRecord> = deployment
        .processes
        .iter()
        .filter(|p| {
            let up = alive(p);
            if !up {
                report.gone.push(p.name.clone());
            }
            up
        })
        .collect();

    if !running.is_empty() {
        let session = Session::new(run_dir).ok().map(Arc::new);
        // Nodes first, so that none of them sees its broker vanish while it runs.
        let (nodes, broker): (Vec<&ProcessRecord>, Vec<&ProcessRecord>) =
            running.iter().partition(|p| p.role == ProcessRole::Node);
        // One deadline for the whole graceful part, so a process that hangs costs
        // DOWN_GRACE once, not once per phase.
        let deadline = Instant::now() + DOWN_GRACE;
        ask_to_stop(session.as_ref(), deployment, &nodes).await;
        wait_exit(&nodes, alive, deadline - Duration::from_millis(500)).await;
        ask_to_stop(session.as_ref(), deployment, &broker).await;
        wait_exit(
            &running,
            alive,
            deadline.max(Instant::now() + Duration::from_millis(500)),
        )
        .await;
        if let Some(session) = session.and_then(Arc::into_inner) {
            session.close().await;
        }
        let leftovers: Vec<&ProcessRecord> = running.iter().copied().filter(|p| alive(p)).collect();
        for p in &leftovers {
            // `alive` has just checked that the pid still runs our command line.
            procs::signal_group(p.pid, Signal::SIGKILL);
        }
        wait_exit(&leftovers, alive, Instant::now() + Duration::from_secs(2)).await;
        let stuck: Vec<&str> = leftovers
            .iter()
            .filter(|p| alive(p))
            .map(|p| p.name.as_str())
            .collect();
        if !stuck.is_empty() {
            bail!(
                "could not stop {} (still running after SIGKILL); deployment.json kept",
                stuck.join(", ")
            );
        }
        for p in running {
            let list = if leftovers.iter().any(|l| l.pid == p.pid) {
                &mut report.killed
            } else {
                &mut report.stopped
            };
            list.push(p.name.clone());
        }
    }
    match fs::remove_file(run_dir.deployment()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).context(format!("cannot remove {}", run_dir.deployment().display()));
        }
    }
    Ok(report)
}

/// Sends an admin `Shutdown` to each process, all at once; a process that cannot be
/// asked (no session, no address, unreachable, refused) gets a SIGTERM instead.
async fn ask_to_stop(
    session: Option<&Arc<Session>>,
    deployment: &Deployment,
    procs: &[&ProcessRecord],
) {
    let mut tasks = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(
        crate::client::MAX_CONCURRENT_CONNECTS,
    ));
    for p in procs {
        let (Some(session), Some(addr)) = (session, p.addr) else {
            terminate(deployment, p);
            continue;
        };
        let (session, p, permits) = (session.clone(), (*p).clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await;
            let asked = tokio::time::timeout(SHUTDOWN_REQUEST_TIMEOUT, async {
                match p.role {
                    ProcessRole::Broker => {
                        let mut admin = session.broker(addr).await?;
                        admin.shutdown().await?;
                        admin.close();
                    }
                    ProcessRole::Node => {
                        let mut admin = session.node(&p.name, addr).await?;
                        admin.shutdown().await?;
                        admin.close();
                    }
                }
                anyhow::Ok(())
            })
            .await;
            match asked {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::debug!("shutdown of {} failed: {e:#}", p.name);
                    Some(p)
                }
                Err(_) => Some(p),
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(p)) = joined {
            terminate(deployment, &p);
        }
    }
}

/// SIGTERM to a process that is still ours.
fn terminate(deployment: &Deployment, p: &ProcessRecord) {
    if procs::is_alive(p.pid, &deployment.exe, &deployment.run_dir) {
        procs::signal_group(p.pid, Signal::SIGTERM);
    }
}

/// Waits until none of `procs` is alive, or `deadline`.
async fn wait_exit(
    procs: &[&ProcessRecord],
    alive: impl Fn(&ProcessRecord) -> bool,
    deadline: Instant,
) {
    while Instant::now() < deadline && procs.iter().any(|p| alive(p)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process names of a deployment in the order `up` prints them, with their
/// records; used by `up`'s table and by `status`.
pub fn rows(deployment: &Deployment) -> Vec<[String; 4]> {
    deployment
        .processes
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.role.as_str().to_owned(),
                p.pid.to_string(),
                p.addr.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            ]
        })
        .collect()
}
