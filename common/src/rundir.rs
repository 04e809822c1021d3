//! The layout of a run folder: everything one deployment produces lives under it.
//!
//! ```text
//! <run dir>/
//!   topology.toml        the topology the deployment was started from (a copy)
//!   deployment.json      the controller's record: processes, pids, addresses
//!   certs/ca.pem         the deployment CA's certificate
//!   certs/<name>.pem     one certificate and key per process ("broker",
//!   certs/<name>.key     "controller", and one per node)
//!   logs/<name>.log      each process's stdout and stderr
//! ```

use std::path::{Path, PathBuf};

/// Paths inside one run folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The copy of the topology.
    pub fn topology(&self) -> PathBuf {
        self.root.join("topology.toml")
    }

    /// The controller's record of the deployment.
    pub fn deployment(&self) -> PathBuf {
        self.root.join("deployment.json")
    }

    /// The certificate folder.
    pub fn certs(&self) -> PathBuf {
        self.root.join("certs")
    }

    /// The log folder.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The log file of one process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
}

/// The machine-readable line every role prints on stdout once it serves:
/// `READY role=<role> name=<name> addr=<ip:port>`.
pub fn ready_line(role: &str, name: &str, addr: std::net::SocketAddr) -> String {
    format!("READY role={role} name={name} addr={addr}")
}

/// Parses a [`ready_line`] into (role, name, addr).
pub fn parse_ready_line(line: &str) -> Option<(String, String, std::net::SocketAddr)> {
    let rest = line.trim().strip_prefix("READY ")?;
    let (mut role, mut name, mut addr) = (None, None, None);
    for field in rest.split_whitespace() {
        match field.split_once('=')? {
            ("role", v) => role = Some(v.to_string()),
            ("name", v) => name = Some(v.to_string()),
            ("addr", v) => addr = v.parse().ok(),
            _ => {}
        }
    }
    Some((role?, name?, addr?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_round_trips() {
        let addr = "127.0.0.1:4433".parse().unwrap();
        let line = ready_line("node", "alice", addr);
        assert_eq!(line, "READY role=node name=alice addr=127.0.0.1:4433");
        assert_eq!(
            parse_ready_line(&line),
            Some(("node".into(), "alice".into(), addr))
        );
        assert_eq!(parse_ready_line("READY role=node"), None);
        assert_eq!(parse_ready_line("hello"), None);
    }
}
