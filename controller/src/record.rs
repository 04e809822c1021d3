//! The deployment record (`deployment.json`) and how a command finds its run folder.
//!
//! `qnet up` writes the record as soon as it has started a process, and again each
//! time it learns more (an address), so a `qnet down` can always find every pid even
//! if `up` itself was killed half way. `qnet down` removes it; its presence is what
//! marks a folder as a deployment.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use qnet_common::rundir::RunDir;
use serde::{Deserialize, Serialize};

/// The folder, relative to the working directory, under which `qnet up` puts run
/// folders by default (`.qnet/<network name>/`).
pub const DEFAULT_BASE: &str = ".qnet";

/// The environment variable naming the run folder when `--run-dir` is not given.
pub const RUN_DIR_ENV: &str = "QNET_RUN_DIR";

/// What a process of a deployment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    /// The broker that holds the quantum state.
    Broker,
    /// A quantum node.
    Node,
}

impl ProcessRole {
    /// The role's name as `qnet` spells it on the command line and in READY lines.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessRole::Broker => "broker",
            ProcessRole::Node => "node",
        }
    }
}

/// One process of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its name: `broker`, or the node's name.
    pub name: String,
    /// What it is.
    pub role: ProcessRole,
    /// Its process id (also its process group id: each runs in a group of its own).
    pub pid: u32,
    /// Where it listens, once it has said so.
    pub addr: Option<SocketAddr>,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

/// The controller's record of one deployment, kept in `<run dir>/deployment.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The network's name (from the topology).
    pub network: String,
    /// The run folder, absolute.
    pub run_dir: PathBuf,
    /// When `qnet up` started it, UTC, RFC 3339.
    pub started_at: String,
    /// The `qnet` binary every process runs; liveness checks compare a pid's command
    /// line with it so that a recycled pid is never taken for ours.
    pub exe: PathBuf,
    /// Broker first, then the nodes in topology order.
    pub processes: Vec<ProcessRecord>,
}

impl Deployment {
    /// Reads `<run dir>/deployment.json`.
    pub fn load(run_dir: &RunDir) -> anyhow::Result<Deployment> {
        let path = run_dir.deployment();
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))
    }

    /// Writes `<run dir>/deployment.json` atomically (temporary file, then rename).
    pub fn save(&self, run_dir: &RunDir) -> anyhow::Result<()> {
        let path = run_dir.deployment();
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(file);
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The broker's record.
    pub fn broker(&self) -> Option<&ProcessRecord> {
        self.processes
            .iter()
            .find(|p| p.role == ProcessRole::Broker)
    }

    /// The record of the process called `name` (`broker` or a node).
    pub fn process(&self, name: &str) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// The node records, in topology order.
    pub fn nodes(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.processes
            .iter()
            .filter(|p| p.role == ProcessRole::Node)
    }
}

/// Where a command looks for its deployment: `--run-dir`, else `$QNET_RUN_DIR`, else
/// the only folder under `<cwd>/.qnet/` that holds a `deployment.json`.
///
/// `explicit` and `env` are passed in (not read here) so tests can drive every case.
/// The result is absolute. An explicit or environment folder is returned even if it
/// holds no deployment; callers decide what that means for them.
pub fn resolve_run_dir(
    explicit: Option<&Path>,
    env: Option<&Path>,
    cwd: &Path,
) -> anyhow::Result<RunDir> {
    if let Some(dir) = explicit.or(env).filter(|d| !d.as_os_str().is_empty()) {
        return Ok(RunDir::new(cwd.join(dir)));
    }
    let base = cwd.join(DEFAULT_BASE);
    let mut found = find_deployments(&base);
    match found.len() {
        0 => bail!("no running deployment (start one with `qnet up TOPOLOGY`)"),
        1 => Ok(RunDir::new(found.remove(0))),
        _ => {
            let list = found
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "several deployments under {}: {list}; choose one with --run-dir",
                base.display()
            )
        }
    }
}

/// The sub-folders of `base` that hold a `deployment.json`, sorted.
pub fn find_deployments(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| RunDir::new(p.clone()).deployment().is_file())
        .collect();
    found.sort();
    found
}

/// The run folder from the command line or the environment, as [`resolve_run_dir`]
/// sees it in this process.
pub fn resolve_from_env(explicit: Option<&Path>) -> anyhow::Result<RunDir> {
    let env = std::env::var_os(RUN_DIR_ENV).map(PathBuf::from);
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    resolve_run_dir(explicit, env.as_deref(), &cwd)
}

/// The deployment in `run_dir`, or a one-line error saying there is none.
pub fn load_running(run_dir: &RunDir) -> anyhow::Result<Deployment> {
    if !run_dir.deployment().is_file() {
        bail!(
            "no running deployment in {} (start one with `qnet up TOPOLOGY --run-dir {}`)",
            run_dir.root().display(),
            run_dir.root().display()
        );
    }
    Deployment::load(run_dir)
}

/// Now, UTC, as RFC 3339 with second precision (`2025-01-31T12:00:00Z`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// `secs` since the Unix epoch as RFC 3339, UTC.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(dir: &Path) -> Deployment {
        Deployment {
            network: "net".into(),
            run_dir: dir.to_owned(),
            started_at: now_rfc3339(),
            exe: "/bin/qnet".into(),
            processes: vec![ProcessRecord {
                name: "broker".into(),
                role: ProcessRole::Broker,
                pid: 1,
                addr: Some("127.0.0.1:1".parse().unwrap()),
                log: dir.join("logs/broker.log"),
            }],
        }
    }

    fn make_deployment(dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        record(dir).save(&RunDir::new(dir)).unwrap();
    }

    #[test]
    fn explicit_beats_env_beats_scan() {
        let tmp = tempdir();
        let cwd = tmp.path();
        make_deployment(&cwd.join(".qnet/a"));
        let got = resolve_run_dir(Some(Path::new("x")), Some(Path::new("y")), cwd).unwrap();
        assert_eq!(got.root(), cwd.join("x"));
        let got = resolve_run_dir(None, Some(Path::new("/abs/y")), cwd).unwrap();
        assert_eq!(got.root(), Path::new("/abs/y"));
        let got = resolve_run_dir(None, None, cwd).unwrap();
        assert_eq!(got.root(), cwd.join(".qnet/a"));
    }

    #[test]
    fn none_and_several_are_clear_errors() {
        let tmp = tempdir();
        let cwd = tmp.path();
        let err = resolve_run_dir(None, None, cwd).unwrap_err().to_string();
        assert_eq!(
            err,
            "no running deployment (start one with `qnet up TOPOLOGY`)"
        );
        // A folder without deployment.json (e.g. after `qnet down`) does not count.
        fs::create_dir_all(cwd.join(".qnet/old/logs")).unwrap();
        assert!(resolve_run_dir(None, None, cwd).is_err());
        make_deployment(&cwd.join(".qnet/a"));
        make_deployment(&cwd.join(".qnet/b"));
        let err = resolve_run_dir(None, None, cwd).unwrap_err().to_string();
        assert!(err.contains("several deployments"), "{err}");
        assert!(err.contains(".qnet/a") && err.contains(".qnet/b"), "{err}");
        assert!(err.contains("--run-dir"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn record_round_trips() {
        let tmp = tempdir();
        let dir = RunDir::new(tmp.path());
        let rec = record(tmp.path());
        rec.save(&dir).unwrap();
        assert_eq!(Deployment::load(&dir).unwrap(), rec);
        assert_eq!(rec.broker().unwrap().name, "broker");
        assert_eq!(rec.nodes().count(), 0);
        let err = load_running(&RunDir::new(tmp.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no running deployment in "), "{err}");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}
