//! Local processes: starting a role with its output in a log file, waiting for its
//! READY line, telling whether a recorded pid is still ours and alive, signalling it,
//! and reading its memory use and log.
//!
//! Everything here reads Linux's `/proc`; on a system without it every pid looks
//! gone, which errs on the side of never signalling a stranger.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use qnet_common::rundir::parse_ready_line;

/// The state letter of `/proc/PID/stat` (`R`, `S`, `D`, `Z`, …), or `None` if the pid
/// does not exist.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may itself hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// The command line of `pid`, split into arguments.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// True if `pid` still runs our program: its `argv[0]` is `exe` (or `argv[1]`, when
/// `exe` is a script run by its interpreter) and its arguments hold `run_dir` (every
/// role is started with `--run-dir <run_dir>`). A pid that the OS has since handed
/// to another program is not ours.
pub fn is_ours(pid: u32, exe: &Path, run_dir: &Path) -> bool {
    let Some(args) = cmdline(pid) else {
        return false;
    };
    let run_dir = run_dir.to_string_lossy();
    args.iter().take(2).any(|a| Path::new(a) == exe) && args.iter().any(|a| *a == run_dir)
}

/// True if `pid` is ours (see [`is_ours`]) and running: it exists and is neither a
/// zombie nor dead.
pub fn is_alive(pid: u32, exe: &Path, run_dir: &Path) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z' && s != 'X') && is_ours(pid, exe, run_dir)
}

/// Resident memory of `pid` in MiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Sends `signal` to the process group of `pid` (each role leads its own group), or
/// to the pid alone if it has no group of its own. Only call this for a pid that
/// [`is_ours`].
pub fn signal_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let pid = Pid::from_raw(raw);
    if signal::killpg(pid, signal).is_err() {
        let _ = signal::kill(pid, signal);
    }
}

/// Starts `exe args…` in a process group of its own (so a Ctrl-C in the user's
/// terminal does not reach it and it outlives the controller), with stdin closed and
/// stdout and stderr appended to `log`.
pub fn spawn_logged(exe: &Path, args: &[&std::ffi::OsStr], log: &Path) -> anyhow::Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Log files are read by people and tools, not terminals: no colour codes.
        .env("NO_COLOR", "1")
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// Follows one log file and picks out the READY line of one process.
#[derive(Debug)]
pub struct ReadyWatcher {
    path: PathBuf,
    role: String,
    name: String,
    offset: u64,
    partial: Vec<u8>,
}

impl ReadyWatcher {
    /// Watches `path` for `READY role=<role> name=<name> addr=…`, ignoring whatever
    /// the file held before (so a log appended to by an earlier run is harmless).
    pub fn new(path: PathBuf, role: &str, name: &str) -> ReadyWatcher {
        let offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        ReadyWatcher {
            path,
            role: role.to_owned(),
            name: name.to_owned(),
            offset,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; the address once the READY line
    /// is there.
    pub fn poll(&mut self) -> io::Result<Option<SocketAddr>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let Some((role, name, addr)) = parse_ready_line(&String::from_utf8_lossy(&line))
                && role == self.role
                && name == self.name
            {
                return Ok(Some(addr));
            }
        }
        Ok(None)
    }
}

/// The last `n` lines of a file (all of it if shorter); reads at most the last
/// `max_bytes` bytes.
pub fn tail(path: &Path, n: usize, max_bytes: u64) -> io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the byte limit.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_string()).collect())
}

/// The last lines of a log, indented, for an error message; says so if there are
/// none.
pub fn log_excerpt(path: &Path) -> String {
    match tail(path, 12, 16 * 1024) {
        Ok(lines) if !lines.is_empty() => {
            let mut out = format!("\n  last lines of {}:", path.display());
            for line in lines {
                out.push_str("\n    ");
                out.push_str(&line);
            }
            out
        }
        Ok(_) => format!(" ({} is empty)", path.display()),
        Err(e) => format!(" (cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::time::{Duration, Instant};

    #[test]
    fn watcher_finds_ready_in_a_fake_child() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("x.log");
        fs::write(&log, "READY role=node name=x addr=127.0.0.1:9\n").unwrap();
        // The old line is ignored: only what is appended after `new` counts.
        let mut watcher = ReadyWatcher::new(log.clone(), "node", "x");
        let script = "echo starting; echo 'READY role=node name=y addr=127.0.0.1:2'; \
                      printf 'READY role=node name=x '; sleep 0.2; \
                      echo 'addr=127.0.0.1:1'; sleep 5";
        let args = [OsStr::new("-c"), OsStr::new(script)];
        let mut child = spawn_logged(Path::new("/bin/sh"), &args, &log).unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let addr = loop {
            if let Some(addr) = watcher.poll().unwrap() {
                break addr;
            }
            assert!(Instant::now() < deadline, "no READY line");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(addr, "127.0.0.1:1".parse().unwrap());
        assert!(matches!(proc_state(pid), Some('S' | 'R')));
        assert!(is_ours(pid, Path::new("/bin/sh"), Path::new("-c")));
        assert!(!is_ours(pid, Path::new("/bin/qnet"), Path::new("-c")));
        assert!(!is_ours(pid, Path::new("/bin/sh"), Path::new("/elsewhere")));
        assert!(rss_mb(pid).is_some_and(|mb| mb > 0.0));
        // Its own process group: signalling the group stops it.
        signal_group(pid, Signal::SIGKILL);
        child.wait().unwrap();
        assert_eq!(proc_state(pid), None);
        assert!(!is_alive(pid, Path::new("/bin/sh"), Path::new("-c")));
    }

    #[test]
    fn zombie_is_not_alive() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc_state(pid) != Some('Z') {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!is_alive(pid, Path::new("/bin/sh"), Path::new("-c")));
        child.wait().unwrap();
    }

    #[test]
    fn tail_takes_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("t.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&log, text).unwrap();
        assert_eq!(tail(&log, 2, 1 << 20).unwrap(), ["line 98", "line 99"]);
        assert_eq!(tail(&log, 1000, 1 << 20).unwrap().len(), 100);
        // A byte limit drops the cut first line.
        assert_eq!(tail(&log, 1000, 16).unwrap(), ["line 99"]);
        assert!(log_excerpt(&log).contains("line 99"));
        assert!(log_excerpt(&tmp.path().join("none")).contains("cannot read"));
    }
}
