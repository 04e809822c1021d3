//! `qnet status` and `qnet logs`, and the plain-text tables every command prints.

use std::io::{self, Read, Write};
use std::time::Duration;

use anyhow::Context;
use qnet_common::rundir::RunDir;
use qnet_common::wire::{NodeRequestBody, NodeResponseBody, RequestBody, ResponseBody};
use serde::Serialize;

use crate::client::Session;
use crate::procs;
use crate::record::{Deployment, ProcessRecord, ProcessRole};

/// How long `status --probe` waits for each process's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One process as `qnet status` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessStatus {
    /// Its name.
    pub name: String,
    /// `broker` or `node`.
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Where it listens, if known.
    pub addr: Option<String>,
    /// `up`, `down`, or — with `--probe` — `unresponsive` (alive but not answering
    /// its admin API).
    pub state: String,
    /// Qubits the node holds (with `--probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qubits: Option<u64>,
    /// Neighbours a node has a classical connection to (with `--probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
}

/// The state of every process of `deployment`, from `/proc`.
pub fn snapshot(deployment: &Deployment) -> Vec<ProcessStatus> {
    deployment
        .processes
        .iter()
        .map(|p| {
            let up = procs::is_alive(p.pid, &deployment.exe, &deployment.run_dir);
            ProcessStatus {
                name: p.name.clone(),
                role: p.role.as_str().to_owned(),
                pid: p.pid,
                addr: p.addr.map(|a| a.to_string()),
                state: if up { "up" } else { "down" }.to_owned(),
                qubits: None,
                peers: None,
            }
        })
        .collect()
}

/// Asks every live process for its status over the admin API and fills in
/// `qubits` and `peers`; a live process that does not answer becomes `unresponsive`.
pub async fn probe(run_dir: &RunDir, deployment: &Deployment, statuses: &mut [ProcessStatus]) {
    let Ok(session) = Session::new(run_dir) else {
        return;
    };
    let session = std::sync::Arc::new(session);
    let mut tasks = tokio::task::JoinSet::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::client::MAX_CONCURRENT_CONNECTS,
    ));
    for (i, (p, s)) in deployment.processes.iter().zip(statuses.iter()).enumerate() {
        let (Some(addr), true) = (p.addr, s.state == "up") else {
            continue;
        };
        let (session, p, permits): (_, ProcessRecord, _) =
            (session.clone(), p.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await;
            let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
                match p.role {
                    ProcessRole::Broker => {
                        let mut admin = session.broker(addr).await?;
                        let stats = admin.request(RequestBody::Stats).await?;
                        admin.close();
                        match stats {
                            ResponseBody::Stats(stats) => anyhow::Ok((stats.live_qubits, None)),
                            other => anyhow::bail!("unexpected answer {other:?}"),
                        }
                    }
                    ProcessRole::Node => {
                        let mut admin = session.node(&p.name, addr).await?;
                        let status = admin.request(NodeRequestBody::Status).await?;
                        admin.close();
                        match status {
                            NodeResponseBody::Status {
                                qubits,
                                connected_peers,
                                ..
                            } => Ok((u64::from(qubits), Some(connected_peers))),
                            other => anyhow::bail!("unexpected answer {other:?}"),
                        }
                    }
                }
            })
            .await;
            (i, answer.ok().and_then(|a| a.ok()))
        });
    }
    while let Some(Ok((i, answer))) = tasks.join_next().await {
        match answer {
            Some((qubits, peers)) => {
                statuses[i].qubits = Some(qubits);
                statuses[i].peers = peers;
            }
            None => statuses[i].state = "unresponsive".to_owned(),
        }
    }
    if let Some(session) = std::sync::Arc::into_inner(session) {
        session.close().await;
    }
}

/// The human-readable status table.
pub fn render(deployment: &Deployment, statuses: &[ProcessStatus]) -> String {
    let probed = statuses.iter().any(|s| s.qubits.is_some());
    let mut headers = vec!["NAME", "ROLE", "PID", "ADDRESS", "STATE"];
    if probed {
        headers.extend(["QUBITS", "PEERS"]);
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                s.role.clone(),
                s.pid.to_string(),
                s.addr.clone().unwrap_or_else(|| "-".into()),
                s.state.clone(),
            ];
            if probed {
                row.push(s.qubits.map_or_else(|| "-".into(), |q| q.to_string()));
                row.push(match &s.peers {
                    Some(p) if !p.is_empty() => p.join(","),
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    let up = statuses.iter().filter(|s| s.state == "up").count();
    format!(
        "{}: {up}/{} processes up, run folder {}, started {}\n{}",
        deployment.network,
        statuses.len(),
        deployment.run_dir.display(),
        deployment.started_at,
        table(&headers, &rows)
    )
}

/// Left-aligned columns separated by two spaces, one header line, no trailing
/// spaces.
pub fn table<R: AsRef<[S]>, S: AsRef<str>>(headers: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.as_ref()) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(|c| c.as_ref()));
    }
    out
}

/// `qnet logs NAME [--lines N]`: copies the log of `name` (a node or `broker`) to
/// stdout, all of it or its last `lines` lines.
pub fn logs(deployment: &Deployment, name: &str, lines: Option<usize>) -> anyhow::Result<()> {
    let Some(p) = deployment.process(name) else {
        let known: Vec<&str> = deployment
            .processes
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        anyhow::bail!(
            "unknown process: {name} (known: {})",
            crate::run::short_list(&known)
        );
    };
    let mut stdout = io::stdout().lock();
    let result = match lines {
        Some(n) => procs::tail(&p.log, n, u64::MAX)
            .and_then(|lines| lines.iter().try_for_each(|l| writeln!(stdout, "{l}"))),
        None => std::fs::File::open(&p.log).and_then(|mut f| {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            stdout.write_all(&buf)
        }),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("cannot read {}", p.log.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["broker", "broker", "12", "127.0.0.1:4000"],
            vec!["alice", "node", "12345", "-"],
        ];
        let text = table(&["NAME", "ROLE", "PID", "ADDRESS"], &rows);
        assert_eq!(
            text,
            "NAME    ROLE    PID    ADDRESS\n\
             broker  broker  12     127.0.0.1:4000\n\
             alice   node    12345  -\n"
        );
        assert_eq!(table::<[&str; 1], &str>(&["A"], &[]), "A\n");
    }

    #[test]
    fn snapshot_of_dead_pids_is_down() {
        let deployment = Deployment {
            network: "n".into(),
            run_dir: "/nonexistent".into(),
            started_at: "t".into(),
            exe: "/nonexistent/qnet".into(),
            processes: vec![ProcessRecord {
                name: "alice".into(),
                role: ProcessRole::Node,
                // Our own pid: alive, but not running the recorded binary.
                pid: std::process::id(),
                addr: None,
                log: "/nonexistent/alice.log".into(),
            }],
        };
        let s = snapshot(&deployment);
        assert_eq!(s[0].state, "down");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"name": "alice", "role": "node", "pid": std::process::id(),
                                "addr": null, "state": "down"}])
        );
        assert!(render(&deployment, &s).starts_with("n: 0/1 processes up"));
    }
}
