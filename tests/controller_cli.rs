//! The controller's user commands on real processes: `qnet up` a line of three nodes,
//! `status`, `run epr`, `run teleport` for every cardinal state, the one-line errors
//! for bad node names, and `down` leaving no process behind.
//!
//! Every run folder is a fresh temporary folder passed with `--run-dir`; a guard runs
//! `qnet down` and then kills any recorded pid that is still ours if a test fails
//! half way, so no test leaves processes behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const QNET: &str = env!("CARGO_BIN_EXE_qnet");

fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

fn qnet(args: &[&str]) -> Output {
    Command::new(QNET)
        .args(args)
        .env_remove("QNET_RUN_DIR")
        .output()
        .expect("run qnet")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `qnet args…`, expects success and returns stdout parsed as JSON.
fn qnet_json(args: &[&str]) -> Value {
    let out = qnet(args);
    assert!(
        out.status.success(),
        "qnet {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("qnet {args:?} printed no JSON ({e}): {}", stdout(&out)))
}

/// A state letter from /proc, `None` if the pid is gone.
fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Gone, or a zombie waiting for whoever adopted it to reap it.
fn is_gone(pid: u64) -> bool {
    matches!(proc_state(pid), None | Some('Z' | 'X'))
}

/// A deployment in a temporary run folder, torn down on drop.
struct Deployment {
    dir: tempfile::TempDir,
    pids: Vec<u64>,
}

impl Deployment {
    fn up(topology_file: &str) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut deployment = Deployment {
            dir,
            pids: Vec::new(),
        };
        let run_dir = deployment.run_dir();
        let file = topology(topology_file);
        let out = qnet(&["up", file.to_str().unwrap(), "--run-dir", &run_dir]);
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

    fn run_dir(&self) -> String {
        self.dir.path().join("run").to_str().unwrap().to_owned()
    }

    fn recorded_pids(&self) -> Vec<u64> {
        let path = self.dir.path().join("run/deployment.json");
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let record: Value = serde_json::from_str(&text).expect("deployment.json is JSON");
        record["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .map(|p| p["pid"].as_u64().expect("pid"))
            .collect()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = qnet(&["down", "--run-dir", &self.run_dir()]);
        for &pid in &self.pids {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&self.run_dir()));
            if ours && !is_gone(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

#[test]
fn up_run_down_on_line_3() {
    let d = Deployment::up("line-3.toml");
    let run_dir = d.run_dir();
    let rd = run_dir.as_str();
    assert_eq!(d.pids.len(), 4, "broker and three nodes recorded");

    // status: four processes, all up.
    let status = qnet_json(&["status", "--json", "--run-dir", rd]);
    let procs = status.as_array().expect("array");
    assert_eq!(procs.len(), 4, "{status}");
    for p in procs {
        assert_eq!(p["state"], "up", "{status}");
        for key in ["name", "role", "pid", "addr"] {
            assert!(!p[key].is_null(), "{key} missing: {status}");
        }
    }
    let names: Vec<&str> = procs.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broker", "alice", "bob", "carol"]);

    // A second `up` into the same folder is refused while this one runs.
    let again = qnet(&[
        "up",
        topology("line-3.toml").to_str().unwrap(),
        "--run-dir",
        rd,
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );

    // EPR pairs on an ideal link always agree.
    let epr = qnet_json(&[
        "run",
        "epr",
        "--from",
        "alice",
        "--to",
        "bob",
        "--pairs",
        "1000",
        "--json",
        "--run-dir",
        rd,
    ]);
    assert_eq!(epr["pairs"], 1000, "{epr}");
    assert_eq!(epr["agree"].as_f64(), Some(1.0), "{epr}");
    assert!(epr["pairs_per_s"].as_f64().unwrap() > 0.0, "{epr}");
    assert!(epr["seconds"].as_f64().is_some(), "{epr}");
    let epr_x = qnet_json(&[
        "run",
        "epr",
        "--from",
        "bob",
        "--to",
        "carol",
        "--pairs",
        "200",
        "--basis",
        "x",
        "--json",
        "--run-dir",
        rd,
    ]);
    assert_eq!(epr_x["agree"].as_f64(), Some(1.0), "{epr_x}");

    // Teleportation over a perfect pair is perfect, for every cardinal state.
    for state in ["zero", "one", "plus", "minus", "plus_i", "minus_i"] {
        let t = qnet_json(&[
            "run",
            "teleport",
            "--from",
            "alice",
            "--to",
            "bob",
            "--state",
            state,
            "--shots",
            "20",
            "--json",
            "--run-dir",
            rd,
        ]);
        assert_eq!(t["shots"], 20, "{t}");
        let fidelity = t["fidelity"].as_f64().unwrap();
        assert!(fidelity >= 0.999, "{state}: {t}");
        assert!(t["teleports_per_s"].as_f64().unwrap() > 0.0, "{t}");
    }
    // The controller freed every teleported qubit at bob.
    let probed = qnet_json(&["status", "--json", "--probe", "--run-dir", rd]);
    let bob = probed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bob")
        .unwrap();
    assert_eq!(bob["qubits"], 0, "{probed}");

    // Mistakes are one line on stderr and a failure exit.
    for (args, expect) in [
        (
            ["--from", "alice", "--to", "dave"],
            "error: unknown node: dave",
        ),
        (
            ["--from", "alice", "--to", "carol"],
            "error: alice and carol are not neighbours",
        ),
    ] {
        let mut full = vec!["run", "epr"];
        full.extend(args);
        full.extend(["--pairs", "10", "--run-dir", rd]);
        let out = qnet(&full);
        assert!(!out.status.success(), "{full:?} succeeded");
        let err = stderr(&out);
        assert!(err.starts_with(expect), "{full:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{full:?}: {err}");
    }
    let out = qnet(&["logs", "broker", "--lines", "50", "--run-dir", rd]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("READY role=broker"),
        "{}",
        stdout(&out)
    );

    // down: every process gone, the record removed, the logs kept.
    let out = qnet(&["down", "--run-dir", rd]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for &pid in &d.pids {
        assert!(is_gone(pid), "pid {pid} still running after down");
    }
    assert!(!Path::new(rd).join("deployment.json").exists());
    assert!(Path::new(rd).join("logs/alice.log").exists());
    let status = qnet_json(&["status", "--json", "--run-dir", rd]);
    assert_eq!(status, serde_json::json!([]));
    let out = qnet(&["status", "--run-dir", rd]);
    assert!(
        stdout(&out).contains("no running deployment"),
        "{}",
        stdout(&out)
    );
    // A second down has nothing to do and says so.
    let out = qnet(&["down", "--run-dir", rd]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("nothing to stop"), "{}", stdout(&out));
}

#[test]
fn errors_without_a_deployment_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let rd = dir.path().to_str().unwrap();
    let out = qnet(&["run", "epr", "--from", "a", "--to", "b", "--run-dir", rd]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.starts_with("error: no running deployment in"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // Resolution from the working folder: nothing under .qnet/.
    let out = Command::new(QNET)
        .args(["run", "epr", "--from", "a", "--to", "b"])
        .env_remove("QNET_RUN_DIR")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out).trim_end(),
        "error: no running deployment (start one with `qnet up TOPOLOGY`)"
    );

    // A broken topology is reported with its location, and nothing is started.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[network]\nname = \"x\"\nnmae = 1\n").unwrap();
    let out = qnet(&["up", bad.to_str().unwrap(), "--run-dir", rd]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("bad.toml:3"), "{err}");
}
