//! `qnet scenario run` on real processes: every scenario shipped in
//! `topologies/scenarios/` passes (exit status 0, a JUnit report without failures,
//! no process left behind); a scenario whose assertion cannot hold fails, says
//! `FAILED` and names that assertion; and malformed scenario files are refused
//! before anything is deployed, with the file, line and column of a syntax error or
//! an unknown key, and with the name of an unknown workload.
//!
//! Scenarios measure rates and fidelities over windows of wall time, so the ones that
//! deploy run one at a time (see [`one_at_a_time`]): two cores are not shared with
//! another scenario's processes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::{processes_in, qnet, qnet_within, stderr, stdout};

/// The longest a scenario may take (the longest shipped one lasts 14 s, plus
/// deployment, draining and tear-down) before it counts as a hang.
const HANG: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the lock that keeps deploying scenarios from overlapping (a failed test
/// does not poison it for the others).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Tears down the deployment in `run_dir` when dropped, whatever happened to the
/// scenario run (it tears down by itself; this covers a run that was killed).
struct TearDown<'a>(&'a str);

impl Drop for TearDown<'_> {
    fn drop(&mut self) {
        let _ = qnet(&["down", "--run-dir", self.0]);
    }
}

/// `qnet scenario run FILE --junit JUNIT --run-dir RUN_DIR` within [`HANG`]; checks
/// that no process of the run is left afterwards.
fn run_scenario(file: &Path, junit: &Path, run_dir: &Path) -> Output {
    let run_dir = run_dir.to_str().expect("utf-8");
    let _tear_down = TearDown(run_dir);
    let out = qnet_within(
        &[
            "scenario",
            "run",
            file.to_str().expect("utf-8"),
            "--junit",
            junit.to_str().expect("utf-8"),
            "--run-dir",
            run_dir,
        ],
        HANG,
    );
    let left = processes_in(run_dir);
    assert!(
        left.is_empty(),
        "{}: processes left behind: {left:?}",
        file.display()
    );
    out
}

/// Every file in `topologies/scenarios/` runs, passes and reports in JUnit without a
/// failure. All are run before judging, so one failure shows every other result too.
#[test]
fn every_shipped_scenario_passes() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("topologies/scenarios"))
        .expect("topologies/scenarios")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenarios: {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_stem().expect("a name").to_string_lossy();
        let junit = tmp.path().join(format!("{name}.xml"));
        let start = Instant::now();
        let out = run_scenario(file, &junit, &tmp.path().join(&*name));
        eprintln!(
            "{name}: exit {:?} after {:.1} s\n{}{}",
            out.status.code(),
            start.elapsed().as_secs_f64(),
            stdout(&out),
            stderr(&out)
        );
        let report = std::fs::read_to_string(&junit).unwrap_or_default();
        if !out.status.success() {
            failures.push(format!("{name}: exit status {}", out.status));
        } else if !stdout(&out).contains("PASSED") {
            failures.push(format!("{name}: no PASSED in {}", stdout(&out)));
        } else if !report.contains("<testsuite") || !report.contains("<testcase") {
            failures.push(format!("{name}: no JUnit report: {report:?}"));
        } else if report.contains("<failure") {
            failures.push(format!("{name}: a failure in the JUnit report:\n{report}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A scenario file in `dir` with the given text; `TOPOLOGY` in it stands for the
/// absolute path of `topologies/line-3.toml`.
fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let topology = repo("topologies/line-3.toml");
    let file = dir.join(name);
    std::fs::write(
        &file,
        text.replace("TOPOLOGY", topology.to_str().expect("utf-8")),
    )
    .expect("write the scenario");
    file
}

/// An assertion that cannot hold (a billion pairs per second) makes the run fail:
/// exit status 1, `FAILED`, the failing assertion named, the one that held marked ok,
/// and one failure in the JUnit report.
#[test]
fn an_assertion_that_cannot_hold_fails_the_run() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = scenario_file(
        tmp.path(),
        "impossible.toml",
        r#"
name = "impossible"
topology = "TOPOLOGY"
duration = "2s"

[[workload]]
name = "ab"
from = "alice"
to = "bob"
pairs = 20
max_time = "500ms"

[[assert]]
what = "errors"
workload = "ab"
code = "UNREACHABLE"
max = 0

[[assert]]
what = "rate"
workload = "ab"
min = 1e9
"#,
    );
    let junit = tmp.path().join("impossible.xml");
    let _serial = one_at_a_time();
    let out = run_scenario(&file, &junit, &tmp.path().join("run"));
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(text.contains("scenario impossible: FAILED"), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("[FAIL]")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("rate ab") && failed[0].contains("1000000000"),
        "the failing assertion and its bound: {text}"
    );
    assert!(text.contains("[ok] errors ab"), "{text}");
    assert!(err.contains("1 assertion(s) failed"), "{err}");
    let report = std::fs::read_to_string(&junit).expect("a JUnit report");
    assert_eq!(report.matches("<failure").count(), 1, "{report}");
    assert!(report.contains("failures=\"1\""), "{report}");
}

/// Runs a scenario file that must be refused before anything is deployed: exit
/// status 1, one line on stderr that holds `says`, no panic.
fn assert_refused(file: &Path, says: &str) {
    let run_dir = file.with_extension("run");
    let out = run_scenario(file, &file.with_extension("xml"), &run_dir);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", file.display());
    assert_eq!(err.lines().count(), 1, "one line, not {err}");
    assert!(err.starts_with("error: ") && err.contains(says), "{err}");
    assert!(!run_dir.exists(), "nothing is deployed for a bad file");
}

/// A syntax error and an unknown key are refused with file:line:column; an
/// assertion about an unknown workload and an unknown timeline action by name.
#[test]
fn malformed_scenarios_are_refused_clearly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // Line 4, column 12: the value `6s` is not a TOML value.
    let syntax = scenario_file(
        tmp.path(),
        "syntax.toml",
        "name = \"syntax\"\ntopology = \"TOPOLOGY\"\n\nduration = 6s\n",
    );
    assert_refused(&syntax, &format!("{}:4:12:", syntax.display()));

    // Line 9, column 1: `pairz`.
    let unknown_key = scenario_file(
        tmp.path(),
        "unknown-key.toml",
        "name = \"typo\"\ntopology = \"TOPOLOGY\"\nduration = \"2s\"\n\n[[workload]]\n\
         name = \"ab\"\nfrom = \"alice\"\nto = \"bob\"\npairz = 20\n",
    );
    assert_refused(
        &unknown_key,
        &format!("{}:9:1: unknown field `pairz`", unknown_key.display()),
    );

    let unknown_workload = scenario_file(
        tmp.path(),
        "unknown-workload.toml",
        r#"
name = "nope"
topology = "TOPOLOGY"
duration = "2s"

[[workload]]
name = "ab"
from = "alice"
to = "bob"

[[assert]]
what = "rate"
workload = "ba"
min = 1.0
"#,
    );
    assert_refused(&unknown_workload, "assertion 1: unknown workload \"ba\"");

    let unknown_action = scenario_file(
        tmp.path(),
        "unknown-action.toml",
        r#"
name = "nope"
topology = "TOPOLOGY"
duration = "2s"

[[timeline]]
at = "1s"
action = "explode"
a = "bob"
"#,
    );
    assert_refused(
        &unknown_action,
        "timeline step 1: unknown action \"explode\"",
    );
}
