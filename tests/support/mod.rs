//! Helpers for the integration tests that start real `qnet` processes: running the
//! binary, reading `/proc`, and a [`Deployment`] guard that deploys a topology into a
//! fresh temporary run folder and never leaves a process behind.
//!
//! Each test file that uses it says `mod support;`. Not every file uses every helper,
//! hence the `dead_code` allowance.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qnet_common::rundir::RunDir;
use qnet_common::wire::{NodeRequestBody, NodeResponseBody};
use qnet_controller::client::NodeAdmin;
use serde_json::Value;

/// The binary under test.
pub const QNET: &str = env!("CARGO_BIN_EXE_qnet");

/// Runs `qnet args…` to completion (ignoring any `QNET_RUN_DIR` of the caller).
pub fn qnet(args: &[&str]) -> Output {
    Command::new(QNET)
        .args(args)
        .env_remove("QNET_RUN_DIR")
        .output()
        .expect("run qnet")
}

/// Runs `qnet args…` like [`qnet`], but SIGKILLs it and panics if it has not ended
/// within `deadline`: for commands that must never hang.
pub fn qnet_within(args: &[&str], deadline: Duration) -> Output {
    let child = Command::new(QNET)
        .args(args)
        .env_remove("QNET_RUN_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run qnet");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // Read both pipes to the end in the background, so a chatty child never blocks.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("wait for qnet"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv();
            panic!("qnet {args:?} did not end within {deadline:?}");
        }
    }
}

/// Pids of live processes whose command line names `dir` (a run folder): what a
/// deployment in `dir` left running.
pub fn processes_in(dir: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir))
                && !is_gone(pid)
        })
        .collect()
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses the stdout of a `qnet … --json` command that must have succeeded.
pub fn parse_json(args: &[&str], out: &Output) -> Value {
    assert!(
        out.status.success(),
        "qnet {args:?} failed: {}{}",
        stdout(out),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("qnet {args:?} printed no JSON ({e}): {}", stdout(out)))
}

/// Runs `qnet args…`, expects success and returns stdout parsed as JSON.
pub fn qnet_json(args: &[&str]) -> Value {
    parse_json(args, &qnet(args))
}

/// The state letter of `/proc/<pid>/stat`, `None` if the pid is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may itself hold spaces and parentheses.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Gone, or a zombie waiting for whoever adopted it to reap it.
pub fn is_gone(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z' | 'X'))
}

/// Calls `check` every 50 ms until it returns `Some`, or panics after `timeout` with
/// `what` and the last value seen.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A deployment of a topology in a temporary run folder. Dropping it runs
/// `qnet down` and then SIGKILLs any recorded pid that still runs in this folder, so
/// a failing assertion never leaves a process behind. When the test is failing, the
/// last lines of every log are printed first (the folder is deleted afterwards).
pub struct Deployment {
    dir: tempfile::TempDir,
    run_dir: String,
    pids: Vec<u32>,
}

impl Deployment {
    /// Writes `topology` (TOML text) into a fresh temporary folder and runs
    /// `qnet up` on it with the run folder `<tmp>/run`.
    pub fn up(topology: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("topology.toml");
        std::fs::write(&file, topology).expect("write the topology");
        Deployment::up_file(dir, &file)
    }

    /// Runs `qnet up` on the topology file `file` (for the files in `topologies/`).
    pub fn up_topology_file(name: &str) -> Deployment {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("topologies")
            .join(name);
        Deployment::up_file(tempfile::tempdir().expect("temp dir"), &file)
    }

    fn up_file(dir: tempfile::TempDir, file: &Path) -> Deployment {
        let run_dir = dir.path().join("run").to_str().expect("utf-8").to_owned();
        let mut deployment = Deployment {
            dir,
            run_dir,
            pids: Vec::new(),
        };
        let out = qnet(&[
            "up",
            file.to_str().expect("utf-8"),
            "--run-dir",
            &deployment.run_dir,
        ]);
        // Learn the pids before judging, so the guard can clean up either way.
        deployment.pids = deployment.recorded_pids();
        assert!(
            out.status.success(),
            "qnet up failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        deployment
    }

    /// The run folder, as `--run-dir` takes it.
    pub fn run_dir(&self) -> &str {
        &self.run_dir
    }

    /// The run folder's layout.
    pub fn layout(&self) -> RunDir {
        RunDir::new(&self.run_dir)
    }

    /// The certificate folder.
    pub fn certs(&self) -> PathBuf {
        self.layout().certs()
    }

    /// Every pid recorded at `up`: the broker first, then the nodes.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// `deployment.json`, or `Null` once `down` has removed it.
    pub fn record(&self) -> Value {
        match std::fs::read_to_string(self.layout().deployment()) {
            Ok(text) => serde_json::from_str(&text).expect("deployment.json is JSON"),
            Err(_) => Value::Null,
        }
    }

    fn recorded_pids(&self) -> Vec<u32> {
        let record = self.record();
        record["processes"]
            .as_array()
            .map(|procs| {
                procs
                    .iter()
                    .map(|p| p["pid"].as_u64().expect("pid") as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn process(&self, name: &str) -> Value {
        let record = self.record();
        record["processes"]
            .as_array()
            .and_then(|procs| procs.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no process {name} in deployment.json: {record}"))
    }

    /// The pid of process `name` (`broker` or a node).
    pub fn pid(&self, name: &str) -> u32 {
        self.process(name)["pid"].as_u64().expect("pid") as u32
    }

    /// The address process `name` listens on.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.process(name)["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("socket address")
    }

    /// True if `pid` runs in this deployment: its command line names the run folder.
    /// A recycled pid never is.
    pub fn is_ours(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.run_dir))
    }

    /// SIGKILLs process `name` (no goodbye to anyone) and waits until it has exited.
    pub fn kill(&self, name: &str) {
        let pid = self.pid(name);
        assert!(self.is_ours(pid), "pid {pid} of {name} is not ours");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed");
        wait_for(
            &format!("{name} (pid {pid}) to exit"),
            Duration::from_secs(5),
            || is_gone(pid).then_some(()),
        );
    }

    /// `qnet status --json`: the state of each process by name.
    pub fn states(&self) -> Vec<(String, String)> {
        let status = qnet_json(&["status", "--json", "--run-dir", &self.run_dir]);
        status
            .as_array()
            .expect("status is an array")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_owned(),
                    p["state"].as_str().expect("state").to_owned(),
                )
            })
            .collect()
    }

    /// `qnet run epr --from from --to to --pairs N --json`, parsed.
    pub fn epr(&self, from: &str, to: &str, pairs: u32) -> Value {
        let args = self.epr_args(from, to, pairs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        qnet_json(&args)
    }

    /// The arguments of [`epr`](Self::epr), e.g. to run it in the background.
    pub fn epr_args(&self, from: &str, to: &str, pairs: u32) -> Vec<String> {
        [
            "run",
            "epr",
            "--from",
            from,
            "--to",
            to,
            "--pairs",
            &pairs.to_string(),
            "--json",
            "--run-dir",
            &self.run_dir,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The arguments of `qnet run link --from from --to to --json` on this
    /// deployment, then `extra` (e.g. `["--pairs", "100", "--type", "measure"]`).
    pub fn link_args(&self, from: &str, to: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "link",
            "--from",
            from,
            "--to",
            to,
            "--json",
            "--run-dir",
            &self.run_dir,
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|&a| a.to_owned()));
        args
    }

    /// `qnet run link` (see [`link_args`](Self::link_args)), parsed.
    pub fn link(&self, from: &str, to: &str, extra: &[&str]) -> Value {
        let args = self.link_args(from, to, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        qnet_json(&args)
    }

    /// `qnet chaos args… --run-dir <this deployment>`, to completion.
    pub fn chaos(&self, args: &[&str]) -> Output {
        let mut all = vec!["chaos"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--run-dir", &self.run_dir]);
        qnet(&all)
    }

    /// One request on node `name`'s admin API (as the controller).
    pub fn node_request(&self, name: &str, body: NodeRequestBody) -> NodeResponseBody {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (session, mut node) = NodeAdmin::connect(&self.layout(), name)
                .await
                .unwrap_or_else(|e| panic!("connect to node {name}: {e:#}"));
            let answer = node.request(body).await;
            node.close();
            session.close().await;
            answer.unwrap_or_else(|e| panic!("node {name}: {e:#}"))
        })
    }

    /// The last `n` lines of process `name`'s log.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let log = std::fs::read_to_string(self.layout().log(name)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn log_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.layout().logs()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".log").map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in self.log_names() {
                eprintln!(
                    "--- last lines of {name}.log ({}) ---\n{}",
                    self.dir.path().display(),
                    self.log_tail(&name, 30)
                );
            }
        }
        let _ = qnet(&["down", "--run-dir", &self.run_dir]);
        let mut pids = self.pids.clone();
        pids.extend(self.recorded_pids());
        for pid in pids {
            if self.is_ours(pid) && !is_gone(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
