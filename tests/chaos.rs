//! Faults injected with `qnet chaos` into real deployments: each one provably takes
//! effect, and provably goes away when it is healed (or ends).
//!
//! - latency: the link layer's request latency rises by at least one one-way trip,
//!   the node's socket shim reports the rule in force, and `heal` takes it back;
//! - partition (both ways and one way): pairs stop (TIMEOUT) and come back after heal;
//! - loss: every request still ends, in OK or a proper ERR, and both ends' link-layer
//!   logs hold the same pairs;
//! - kill and restart: the node is down, then up again and serving;
//! - pause: the node's process is stopped for the duration, then serves again;
//! - link: down (no pairs), up (pairs), a new fidelity (the oracle sees it exactly);
//! - memory: a shorter T2 lowers the fidelity of fresh pairs to what
//!   `qnet_common::physics::decayed_fidelity` says;
//! - bad input is refused with one line and a non-zero exit, and leaves no fault.
//!
//! Every check is functional (a fault either stops pairs or it does not, a latency
//! rises by far more than the noise); nothing depends on tight timing.

mod support;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use qnet_common::BellState;
use qnet_common::physics::{LinkPhysics, Memory, decayed_fidelity};
use qnet_common::topology::Topology;
use qnet_common::wire::{NodeRequestBody, NodeResponseBody};
use serde_json::Value;
use support::{Deployment, parse_json, proc_state, qnet, qnet_within, stderr, stdout, wait_for};

/// Two nodes on an ideal 0-km link: perfect pairs at once, perfect memories, and no
/// fibre latency, so whatever latency a request sees is processing plus the fault.
/// Eight memory qubits, as in `line-3`: a request that ends leaves the link
/// attempting until both ends stop, and every free memory qubit becomes a spare pair
/// that both ends must refuse.
const IDEAL: &str = r#"
[network]
name = "chaos-ideal"
seed = 31

[defaults.node]
memory_qubits = 8
t1 = "inf"
t2 = "inf"
gate_error = 0.0
readout_error = 0.0

[[nodes]]
name = "a"
[[nodes]]
name = "b"

[[links]]
a = "a"
b = "b"
model = "ideal"
length_km = 0.0
fidelity = 1.0
"#;

/// One 50 km double-click link (200 pairs/s, herald delay 125 µs) with visibility
/// 0.9 (F = 0.95) between perfect memories.
const LONG: &str = r#"
[network]
name = "chaos-long"
seed = 32

[defaults.node]
memory_qubits = 8
t1 = "inf"
t2 = "inf"

[[nodes]]
name = "a"
[[nodes]]
name = "b"

[[links]]
a = "a"
b = "b"
model = "heralded-double-click"
length_km = 50.0
visibility = 0.9
"#;

/// How long any single command of these tests may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(30);

fn number(report: &Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {report}"))
}

/// The count of error `code` in a `run link` report (0 if absent).
fn errors(report: &Value, code: &str) -> u64 {
    report["errors"][code].as_u64().unwrap_or(0)
}

/// `qnet run link` from `from` to `to`, measure type, with `extra` arguments; must
/// end (well) within [`HANG`].
fn link(d: &Deployment, from: &str, to: &str, extra: &[&str]) -> Value {
    let mut args = d.link_args(from, to, &["--type", "measure"]);
    args.extend(extra.iter().map(|&a| a.to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    parse_json(&args, &qnet_within(&args, HANG))
}

/// The median request latency (ms) of 50 measure-type pairs from a to b.
fn latency_p50(d: &Deployment) -> f64 {
    let r = link(d, "a", "b", &["--pairs", "50"]);
    assert_eq!(r["delivered"], 50, "{r}");
    number(&r, "latency_ms_p50")
}

/// `qnet chaos args…`, which must succeed.
fn chaos(d: &Deployment, args: &[&str]) -> String {
    let out = d.chaos(args);
    assert!(
        out.status.success(),
        "qnet chaos {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `qnet chaos list`: one line per fault in force.
fn fault_lines(d: &Deployment) -> Vec<String> {
    chaos(d, &["list"]).lines().map(str::to_owned).collect()
}

fn assert_no_faults(d: &Deployment) {
    assert_eq!(fault_lines(d), ["no faults in force"]);
}

/// The faults, effective rules and shim counters of node `name`.
fn chaos_rules(d: &Deployment, name: &str) -> NodeResponseBody {
    d.node_request(name, NodeRequestBody::ChaosRules)
}

fn faults_log(d: &Deployment) -> String {
    std::fs::read_to_string(d.layout().root().join("faults.log")).unwrap_or_default()
}

/// `chaos latency a b 50ms` raises the median latency of a link-layer request by
/// more than 40 ms (a request needs several one-way trips, each 50 ms slower), the
/// node's shim has the rule in force, and after `heal a b` the latency is back near
/// the baseline and no fault is listed.
#[test]
fn latency_rises_and_heals() {
    let d = Deployment::up(IDEAL);
    latency_p50(&d); // opens the classical connections
    // The larger of two runs: the bounds below only get harder with it.
    let baseline = latency_p50(&d).max(latency_p50(&d));

    chaos(&d, &["latency", "a", "b", "50ms"]);
    let NodeResponseBody::Chaos {
        faults, effective, ..
    } = chaos_rules(&d, "a")
    else {
        panic!("ChaosRules answered something else");
    };
    let fault = faults.iter().find(|(p, _)| p == "b").map(|f| f.1);
    assert_eq!(fault.map(|r| r.delay), Some(Duration::from_millis(50)));
    let in_force = effective.iter().find(|(p, _)| p == "b").map(|e| e.1);
    // The fibre adds nothing on a 0-km link.
    assert_eq!(in_force.map(|r| r.delay), Some(Duration::from_millis(50)));
    let status = stdout(&qnet(&["status", "--run-dir", d.run_dir()]));
    assert!(
        status.contains("faults in force") && status.contains("a->b: +50ms latency"),
        "{status}"
    );

    let slow = latency_p50(&d);
    eprintln!("latency p50: baseline {baseline:.1} ms, with +50 ms one way {slow:.1} ms");
    assert!(slow > baseline + 40.0, "{slow} ms against {baseline} ms");

    chaos(&d, &["heal", "a", "b"]);
    assert_no_faults(&d);
    let NodeResponseBody::Chaos {
        faults, effective, ..
    } = chaos_rules(&d, "a")
    else {
        panic!("ChaosRules answered something else");
    };
    assert!(faults.is_empty(), "{faults:?}");
    assert!(
        effective.iter().all(|(_, r)| r.delay.is_zero()),
        "{effective:?}"
    );
    // The smaller of two runs: scheduling only ever adds latency.
    let healed = latency_p50(&d).min(latency_p50(&d));
    eprintln!("latency p50 after heal: {healed:.1} ms");
    assert!(
        healed < baseline + 20.0,
        "{healed} ms against {baseline} ms"
    );

    // Both changes are in the log, with wall and emulated time.
    let log = faults_log(&d);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("t_emu=") && lines[0].contains("latency a <-> b +50ms"));
    assert!(lines[1].contains("heal a <-> b"), "{log}");
}

/// A partition stops pairs (the request ends with TIMEOUT and nothing delivered) and
/// healing it brings them back; so does a one-way partition, either way round.
#[test]
fn partitions_stop_pairs_until_healed() {
    let d = Deployment::up(IDEAL);
    let ok = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(ok["delivered"], 20, "{ok}");
    for (groups, oneway, listed) in [
        (
            ["a", "b"],
            false,
            vec!["a->b: partitioned", "b->a: partitioned"],
        ),
        (["a", "b"], true, vec!["a->b: partitioned"]),
        (["b", "a"], true, vec!["b->a: partitioned"]),
    ] {
        let mut args = vec!["partition", groups[0], groups[1]];
        if oneway {
            args.push("--oneway");
        }
        chaos(&d, &args);
        assert_eq!(fault_lines(&d), listed);
        let cut = link(&d, "a", "b", &["--pairs", "20", "--max-time", "300ms"]);
        assert_eq!(cut["delivered"], 0, "{args:?}: {cut}");
        assert_eq!(errors(&cut, "TIMEOUT"), 1, "{args:?}: {cut}");
        chaos(&d, &["heal"]);
        assert_no_faults(&d);
        let back = link(&d, "a", "b", &["--pairs", "20"]);
        assert_eq!(back["delivered"], 20, "after healing {args:?}: {back}");
        assert_eq!(back["errors"], serde_json::json!({}), "{back}");
    }
}

/// The pairs a node's link log holds as delivered on its link to `peer`, as
/// (requesting node, create id, seq): every OK minus every withdrawal.
fn standing_pairs(d: &Deployment, node: &str, peer: &str) -> BTreeSet<(String, u64, u64)> {
    let args = [
        "run",
        "link-log",
        "--node",
        node,
        "--peer",
        peer,
        "--json",
        "--run-dir",
        d.run_dir(),
    ];
    let log = parse_json(&args, &qnet_within(&args, HANG));
    let mut standing = BTreeSet::new();
    for e in log.as_array().expect("an array of entries") {
        let origin = if e["local_origin"] == true {
            node
        } else {
            peer
        };
        let key = (
            origin.to_owned(),
            e["create_id"].as_u64().expect("create_id"),
            e["seq"].as_u64().expect("seq"),
        );
        if e["ok"] == true {
            standing.insert(key);
        } else {
            standing.remove(&key);
        }
    }
    standing
}

/// With 30 % of the datagrams lost both ways, QUIC retransmits: every request ends
/// in OK or a proper ERR well within its deadline (never a hang), pairs still get
/// through, the shim counts the drops, and both ends' logs agree on every pair.
#[test]
fn loss_never_hangs_and_both_ends_agree() {
    let d = Deployment::up(IDEAL);
    let warm = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(warm["delivered"], 20, "{warm}");
    chaos(&d, &["loss", "a", "b", "0.3"]);
    assert_eq!(
        fault_lines(&d),
        ["a->b: 30 % loss", "b->a: 30 % loss"],
        "the fault is listed"
    );
    let mut delivered = 0;
    for i in 0..5 {
        // max-time 2 s emulated = 2 s wall here; HANG is the outer bound.
        let r = link(&d, "a", "b", &["--pairs", "20", "--max-time", "2s"]);
        let n = r["delivered"].as_u64().expect("delivered");
        let codes: Vec<&String> = r["errors"].as_object().expect("errors").keys().collect();
        eprintln!("request {i} under 30 % loss: {n} pairs, errors {codes:?}");
        if n < 20 {
            assert!(
                codes
                    .iter()
                    .any(|c| ["TIMEOUT", "EXPIRE"].contains(&c.as_str())),
                "a short request must say why: {r}"
            );
        }
        delivered += n;
    }
    assert!(delivered > 0, "30 % loss must not stop every pair");
    let NodeResponseBody::Chaos { faults, stats, .. } = chaos_rules(&d, "a") else {
        panic!("ChaosRules answered something else");
    };
    assert!(
        faults.iter().any(|(p, r)| p == "b" && r.loss == 0.3),
        "{faults:?}"
    );
    assert!(stats.dropped > 0, "the shim dropped nothing: {stats:?}");

    chaos(&d, &["heal", "a", "b"]);
    assert_no_faults(&d);
    let at_a = standing_pairs(&d, "a", "b");
    let at_b = standing_pairs(&d, "b", "a");
    assert!(at_a.len() as u64 >= delivered + 20, "{} pairs", at_a.len());
    let only_a: Vec<_> = at_a.difference(&at_b).collect();
    let only_b: Vec<_> = at_b.difference(&at_a).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "pairs at one end only: a {only_a:?}, b {only_b:?}"
    );
}

/// The state of each process by name, from `qnet status --json`.
fn state_of(d: &Deployment, name: &str) -> String {
    d.states()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no process {name} in qnet status"))
}

/// `chaos kill b`: b's process is gone, `qnet status` says down and the fault list
/// says killed. `chaos restart b`: a new process, up, serving pairs that agree.
#[test]
fn kill_and_restart() {
    let d = Deployment::up(IDEAL);
    let old = d.pid("b");
    chaos(&d, &["kill", "b"]);
    wait_for("b to exit", Duration::from_secs(5), || {
        support::is_gone(old).then_some(())
    });
    assert_eq!(state_of(&d, "b"), "down");
    assert_eq!(state_of(&d, "a"), "up");
    assert_eq!(fault_lines(&d), ["process b: killed"]);
    // Nothing can be asked of a node that is down.
    let out = d.chaos(&["pause", "b", "1s"]);
    assert!(!out.status.success() && stderr(&out).contains("down"));

    chaos(&d, &["restart", "b"]);
    let new = d.pid("b");
    assert_ne!(new, old);
    assert!(d.is_ours(new), "the new b runs in this deployment");
    assert_eq!(state_of(&d, "b"), "up");
    assert_no_faults(&d);
    let r = d.epr("a", "b", 200);
    assert_eq!(r["pairs"], 200, "{r}");
    assert_eq!(number(&r, "agree"), 1.0, "{r}");
    let log = faults_log(&d);
    assert!(log.contains(&format!("kill b (pid {old})")), "{log}");
    assert!(log.contains(&format!("restart b (pid {new}")), "{log}");
}

/// `chaos pause b 1s` returns after the pause; meanwhile b's process is stopped
/// ('T') and a request from a cannot finish; afterwards b serves again.
#[test]
fn pause_stops_the_process_for_its_duration() {
    let d = Deployment::up(IDEAL);
    let warm = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(warm["delivered"], 20, "{warm}");
    let pid = d.pid("b");
    let start = Instant::now();
    std::thread::scope(|scope| {
        let pause = scope.spawn(|| {
            let out = pause_within(&d);
            (out, start.elapsed())
        });
        wait_for("b to be stopped", Duration::from_secs(5), || {
            (proc_state(pid) == Some('T')).then_some(())
        });
        assert_eq!(fault_lines(&d), ["process b: paused for 1s"]);
        // A request made while b is stopped ends only after SIGCONT, which comes a
        // second after SIGSTOP, which came after `start`.
        let during = link(&d, "a", "b", &["--pairs", "20"]);
        let done = start.elapsed();
        assert_eq!(during["delivered"], 20, "{during}");
        assert!(done >= Duration::from_secs(1), "done after {done:?}");
        let (out, took) = pause.join().expect("the pause thread");
        assert!(
            out.status.success(),
            "qnet chaos pause failed: {}",
            stderr(&out)
        );
        assert!(took >= Duration::from_secs(1), "returned after {took:?}");
    });
    assert_ne!(proc_state(pid), Some('T'));
    assert_no_faults(&d);
    let after = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(after["delivered"], 20, "{after}");
    let log = faults_log(&d);
    assert!(
        log.contains("pause b for 1s") && log.contains("resume b"),
        "{log}"
    );
}

/// `qnet chaos pause b 1s` on `d`, within [`HANG`].
fn pause_within(d: &Deployment) -> Output {
    qnet_within(
        &["chaos", "pause", "b", "1s", "--run-dir", d.run_dir()],
        HANG,
    )
}

/// A link that is down makes no pairs (TIMEOUT); up again, it does; with a new
/// fidelity, the oracle sees exactly that fidelity on an ideal link between perfect
/// memories.
#[test]
fn link_down_up_and_fidelity() {
    let d = Deployment::up(IDEAL);
    let ok = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(ok["delivered"], 20, "{ok}");

    chaos(&d, &["link", "a", "b", "--down"]);
    assert_eq!(fault_lines(&d), ["link a-b: down"]);
    let down = link(&d, "a", "b", &["--pairs", "20", "--max-time", "300ms"]);
    assert_eq!(down["delivered"], 0, "{down}");
    assert_eq!(errors(&down, "TIMEOUT"), 1, "{down}");

    chaos(&d, &["link", "a", "b", "--up"]);
    assert_no_faults(&d);
    let up = link(&d, "a", "b", &["--pairs", "20"]);
    assert_eq!(up["delivered"], 20, "{up}");
    assert!(
        (number(&up, "oracle_fidelity_mean") - 1.0).abs() < 1e-6,
        "{up}"
    );

    chaos(&d, &["link", "a", "b", "--fidelity", "0.8"]);
    assert_eq!(fault_lines(&d), ["link a-b: fidelity 0.8"]);
    let worse = link(&d, "a", "b", &["--pairs", "50"]);
    assert_eq!(worse["delivered"], 50, "{worse}");
    assert_eq!(worse["oracle_pairs"], 50, "{worse}");
    let f = number(&worse, "oracle_fidelity_mean");
    eprintln!("oracle fidelity with the link at 0.8: {f}");
    assert!((f - 0.8).abs() < 1e-6, "{worse}");
}

/// On a 50 km double-click link both halves wait for the herald's 125 µs flight.
/// With perfect memories the pairs have the link's fidelity; once b's T2 is 200 µs
/// they have the Werner fidelity after that decay at b.
#[test]
fn memory_fault_decoheres_fresh_pairs() {
    let topology = Topology::parse(LONG, "chaos-long").expect("topology");
    let physics = LinkPhysics::of(topology.link_between("a", "b").expect("a link"));
    let d = Deployment::up(LONG);
    let before = link(&d, "a", "b", &["--pairs", "40"]);
    assert_eq!(before["delivered"], 40, "{before}");
    let f_before = number(&before, "oracle_fidelity_mean");
    assert!((f_before - physics.fidelity).abs() < 1e-6, "{before}");

    chaos(&d, &["memory", "b", "--t2", "200us"]);
    assert_eq!(fault_lines(&d), ["memory b: T1 unchanged, T2 0.0002 s"]);
    let after = link(&d, "a", "b", &["--pairs", "40"]);
    assert_eq!(after["delivered"], 40, "{after}");
    let f_after = number(&after, "oracle_fidelity_mean");
    let perfect = Memory {
        t1: f64::INFINITY,
        t2: f64::INFINITY,
    };
    let faulty = Memory {
        t1: f64::INFINITY,
        t2: 200e-6,
    };
    // Ψ⁺ and Ψ⁻ decay alike.
    let model = decayed_fidelity(
        physics.fidelity,
        BellState::PsiPlus,
        physics.herald_delay,
        perfect,
        faulty,
    );
    eprintln!(
        "oracle fidelity: {f_before:.6} before, {f_after:.6} with T2 = 200 µs at b (model {model:.6})"
    );
    assert!(f_after < f_before - 0.05, "{f_after} against {f_before}");
    // Times travel as whole nanoseconds, hence not exactly equal.
    assert!((f_after - model).abs() < 1e-4, "{f_after} against {model}");
}

/// Mistakes get one line on stderr and a non-zero exit, never a panic, and leave no
/// fault behind: `chaos list` is empty and alice and bob still make pairs.
#[test]
fn bad_input_is_refused_cleanly() {
    let d = Deployment::up_topology_file("line-3.toml");
    for (args, says) in [
        (
            &["latency", "alice", "zed", "20ms"][..],
            "unknown node \"zed\"",
        ),
        (&["loss", "alice", "bob", "1.5"], "probability in [0, 1]"),
        (&["heal", "alice"], "two nodes"),
        (&["link", "alice", "carol", "--down"], "not neighbours"),
        // bob's rules would be valid, zed is not: nothing may be installed.
        (&["partition", "alice", "bob,zed"], "unknown node \"zed\""),
        (&["partition", "alice", "alice"], "in both groups"),
        (&["kill", "zed"], "unknown node \"zed\""),
        (&["pause", "bob", "soon"], "not a duration"),
        (&["memory", "bob"], "--t1 or --t2"),
        (&["link", "alice", "bob"], "--fidelity F, --down or --up"),
    ] {
        let out = d.chaos(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, not {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    assert_no_faults(&d);
    assert!(faults_log(&d).is_empty(), "{}", faults_log(&d));
    let r = link(&d, "alice", "bob", &["--pairs", "10", "--max-time", "5s"]);
    assert_eq!(r["delivered"], 10, "{r}");
}
