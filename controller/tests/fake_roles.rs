//! `up`, `status` and `down` against fake roles: a shell script stands in for the
//! `qnet` binary and prints READY lines (or fails, or hangs) the way the real broker
//! and nodes do. This checks the process handling — fail fast, timeouts, refusing a
//! second deployment, no process left behind — without the real roles.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use qnet_controller::deploy::{self, UpOptions};
use qnet_controller::procs;
use qnet_controller::record::Deployment;
use qnet_controller::status;

const LINE_3: &str = r#"
[network]
name = "line-3"
[[nodes]]
name = "alice"
[[nodes]]
name = "bob"
[[nodes]]
name = "carol"
[[links]]
a = "alice"
b = "bob"
[[links]]
a = "bob"
b = "carol"
"#;

/// A fake `qnet`: `broker --run-dir D` and `node --run-dir D --name N --broker A`.
/// `node_body` runs for nodes with `$name` set; it should print a READY line (or not)
/// and may exit. Addresses use port 0 so admin requests fail at once and `down`
/// falls back to signals.
fn fake_qnet(dir: &Path, node_body: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n\
         case \"$1\" in\n\
         broker) echo \"READY role=broker name=broker addr=127.0.0.1:0\" ;;\n\
         node) name=\"$5\"\n{node_body}\n ;;\n\
         esac\n\
         sleep 30 &\n\
         wait\n"
    );
    let path = dir.join("fake-qnet");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct Setup {
    tmp: tempfile::TempDir,
    options: UpOptions,
}

fn setup(node_body: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let topology = tmp.path().join("line-3.toml");
    std::fs::write(&topology, LINE_3).unwrap();
    let exe = fake_qnet(tmp.path(), node_body);
    let options = UpOptions {
        topology,
        run_dir: Some(tmp.path().join("run")),
        exe,
        nodes_timeout: Some(Duration::from_secs(10)),
        progress: false,
    };
    Setup { tmp, options }
}

fn gone(pid: u32) -> bool {
    matches!(procs::proc_state(pid), None | Some('Z'))
}

/// Kills whatever a failed test left behind.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            procs::signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn up_status_down() {
    let s = setup("echo \"READY role=node name=$name addr=127.0.0.1:0\"");
    let deployed = deploy::up(&s.options).await.expect("up");
    let run_dir = deployed.run_dir.clone();
    let mut reaper = Reaper(deployed.children);
    let record = Deployment::load(&run_dir).unwrap();
    assert_eq!(record, deployed.deployment);
    let names: Vec<&str> = record.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["broker", "alice", "bob", "carol"]);
    assert!(record.processes.iter().all(|p| p.addr.is_some()));
    for name in ["broker", "controller", "alice", "bob", "carol"] {
        assert!(run_dir.certs().join(format!("{name}.pem")).is_file());
    }
    assert!(run_dir.topology().is_file());
    let states = status::snapshot(&record);
    assert!(states.iter().all(|p| p.state == "up"), "{states:?}");

    // A second deployment into the same folder is refused, and changes nothing.
    let err = deploy::up(&s.options).await.unwrap_err().to_string();
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains("qnet down --run-dir"), "{err}");
    assert_eq!(Deployment::load(&run_dir).unwrap(), record);

    let report = deploy::down(&run_dir, &record).await.expect("down");
    assert_eq!(report.stopped.len(), 4, "{report:?}");
    assert!(report.killed.is_empty(), "{report:?}");
    deploy::reap(&mut reaper.0);
    for p in &record.processes {
        assert!(gone(p.pid), "{} still runs", p.name);
        // The whole group went: the script's `sleep` too (once whoever adopted it
        // has reaped it).
        let group = nix::unistd::Pid::from_raw(p.pid as i32);
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::killpg(group, None).is_ok() {
            assert!(
                Instant::now() < deadline,
                "group of {} still has members",
                p.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(!run_dir.deployment().exists());
    assert!(run_dir.log("bob").is_file(), "logs are kept");
    let states = status::snapshot(&record);
    assert!(states.iter().all(|p| p.state == "down"), "{states:?}");

    // The folder can be used again; stale contents are replaced.
    let again = deploy::up(&s.options).await.expect("second up");
    let record = again.deployment.clone();
    reaper.0.extend(again.children);
    deploy::down(&run_dir, &record).await.expect("second down");
    drop(s.tmp);
}

#[tokio::test]
async fn a_node_that_exits_fails_fast_and_nothing_is_left() {
    let s = setup(
        "if [ \"$name\" = bob ]; then echo \"bob: cannot start\" >&2; exit 3; fi\n\
         echo \"READY role=node name=$name addr=127.0.0.1:0\"",
    );
    let start = Instant::now();
    let err = format!("{:#}", deploy::up(&s.options).await.unwrap_err());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.starts_with("node bob exited"), "{err}");
    assert!(err.contains("bob: cannot start"), "{err}");
    let run_dir = qnet_common::rundir::RunDir::new(s.tmp.path().join("run"));
    assert!(!run_dir.deployment().exists());
    assert_no_fake_left(&s.options.exe);
}

#[tokio::test]
async fn a_node_that_never_gets_ready_times_out() {
    let mut s = setup(
        "if [ \"$name\" != carol ]; then echo \"READY role=node name=$name addr=127.0.0.1:0\"; fi",
    );
    s.options.nodes_timeout = Some(Duration::from_millis(500));
    let err = format!("{:#}", deploy::up(&s.options).await.unwrap_err());
    assert!(err.starts_with("timed out after"), "{err}");
    assert!(err.contains("1 of 3 not ready (carol)"), "{err}");
    assert_no_fake_left(&s.options.exe);
}

/// No process runs the fake binary any more (a zombie has exited). Killing a process
/// group is asynchronous for members that are not our children (the fake's
/// `sleep &` subshell), so they get a moment to go.
fn assert_no_fake_left(exe: &Path) {
    let exe = exe.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(args) = procs::cmdline(pid)
                && args.iter().any(|a| *a == exe)
                && !gone(pid)
            {
                left.push((pid, args));
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
