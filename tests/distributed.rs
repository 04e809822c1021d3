//! The system across real processes: each test deploys a small topology with
//! `qnet up` into a temporary run folder (broker and one `qnet node` process per node)
//! and checks what only a distributed deployment can show — teleportation over a
//! noisy link through the CLI, a SIGKILLed node's qubits being traced out, the broker
//! refusing a node access to another node's qubit, mutual TLS refusing a stranger
//! CA, garbage and oversize frames closing only the offending connection, and
//! `qnet down` leaving no process behind.
//!
//! Every deployment is a [`support::Deployment`], whose guard runs `qnet down` and
//! then kills any recorded pid still running, so a failing assertion never leaves
//! processes behind.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use qnet_common::tls::{self, CertificateDer, DeploymentCa, Identity};
use qnet_common::wire::{
    CloseCode, ErrorBody, FrameReader, FrameWriter, Hello, NodeRequestBody, NodeResponseBody, Pair,
    Request, RequestBody, Response, ResponseBody, Role, write_frame,
};
use qnet_common::{Basis, BellState};
use qnet_controller::client::{BrokerAdmin, NodeAdmin};
use support::{Deployment, is_gone, qnet, qnet_json, stderr, stdout};

/// Two nodes joined by an ideal, perfect link.
const PAIR: &str = r#"
[network]
name = "pair"
seed = 5

[[nodes]]
name = "alice"

[[nodes]]
name = "bob"

[[links]]
a = "alice"
b = "bob"
fidelity = 1.0
"#;

/// alice — bob — carol, ideal links.
const LINE_3: &str = r#"
[network]
name = "line"
seed = 6

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

/// The Werner fidelity of the link in [`WERNER`].
const WERNER_F: f64 = 0.8;

/// Two nodes joined by a link that delivers Werner pairs of fidelity 0.8, with
/// perfect memories, gates and readout so that the link is the only noise.
const WERNER: &str = r#"
[network]
name = "werner"
seed = 9

[defaults.node]
t1 = "inf"
t2 = "inf"
gate_error = 0.0
readout_error = 0.0

[[nodes]]
name = "alice"

[[nodes]]
name = "bob"

[[links]]
a = "alice"
b = "bob"
model = "ideal"
fidelity = 0.8
"#;

/// A QUIC client endpoint on loopback presenting `identity` and trusting `ca`.
fn client(identity: &Identity, ca: &CertificateDer<'static>) -> quinn::Endpoint {
    let mut endpoint =
        quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into()).expect("client endpoint");
    endpoint.set_default_client_config(tls::client_config(identity, ca).expect("client config"));
    endpoint
}

/// A client with the certificate of `name` from the deployment's own CA.
fn client_as(d: &Deployment, name: &str) -> quinn::Endpoint {
    let certs = d.certs();
    let identity = Identity::load(&certs, name).expect("load identity");
    let ca = tls::load_ca_cert(&certs).expect("load CA");
    client(&identity, &ca)
}

type Control = (
    quinn::Connection,
    FrameReader<quinn::RecvStream>,
    FrameWriter<quinn::SendStream>,
    Hello,
);

/// Connects to `addr` (whose certificate must name `server_name`), opens the control
/// stream and swaps hellos as `role`, the way nodes and the controller do.
async fn open_control(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    role: Role,
) -> anyhow::Result<Control> {
    let conn = endpoint.connect(addr, server_name)?.await?;
    let (send, recv) = conn.open_bi().await?;
    let mut writer = FrameWriter::new(send);
    let mut reader = FrameReader::new(recv);
    writer.write_hello(role).await?;
    let hello = reader.read_hello().await?;
    Ok((conn, reader, writer, hello))
}

/// Sends one request on a control stream and reads its response.
async fn call(
    reader: &mut FrameReader<quinn::RecvStream>,
    writer: &mut FrameWriter<quinn::SendStream>,
    id: u64,
    body: RequestBody,
) -> Result<ResponseBody, ErrorBody> {
    writer
        .write(&Request { id, body })
        .await
        .expect("send request");
    let response: Response = reader
        .read()
        .await
        .expect("read response")
        .expect("the broker closed the stream");
    assert_eq!(response.id, id, "responses echo the request id");
    response.body
}

/// Asks node `from` (as the controller) to make one pair with `to` and hold it.
async fn hold_one_pair(d: &Deployment, from: &str, to: &str) -> Pair {
    let (session, mut node) = NodeAdmin::connect(&d.layout(), from)
        .await
        .expect("connect to node");
    let answer = node
        .request(NodeRequestBody::HoldPairs {
            peer: to.to_owned(),
            count: 1,
        })
        .await
        .expect("HoldPairs");
    node.close();
    session.close().await;
    match answer {
        NodeResponseBody::Pairs { pairs } if pairs.len() == 1 => pairs[0],
        other => panic!("HoldPairs answered {other:?}"),
    }
}

/// The broker's oracle: one request, the raw answer (refusals included).
async fn oracle(broker: &mut BrokerAdmin, body: RequestBody) -> Result<ResponseBody, ErrorBody> {
    broker
        .pipeline(vec![body])
        .await
        .expect("broker reachable")
        .pop()
        .expect("one answer")
}

/// A deterministic stream of bytes (xorshift64), for garbage that is the same every
/// run.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Teleportation through the CLI over a Werner link of fidelity F = 0.8.
///
/// A Werner state is a Bell state sent through a depolarizing channel, and the
/// depolarizing channel commutes with the Pauli corrections: whatever the two
/// measured bits, Bob's qubit ends up as λ|ψ⟩⟨ψ| + (1 − λ)·I/2 with λ = (4F − 1)/3.
/// So every single shot, not just the average, has fidelity (1 + λ)/2 = (2F + 1)/3
/// with the sent state, and the broker's oracle reports it to rounding error: the
/// tolerance is 1e-6, not a statistical one.
#[test]
fn teleport_over_a_werner_link_has_fidelity_2f_plus_1_over_3() {
    let d = Deployment::up(WERNER);
    let expected = (2.0 * WERNER_F + 1.0) / 3.0;
    for (state, shots) in [("plus", 200), ("zero", 20), ("minus_i", 20)] {
        let shots_arg = shots.to_string();
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
            &shots_arg,
            "--json",
            "--run-dir",
            d.run_dir(),
        ]);
        assert_eq!(t["shots"], shots, "{t}");
        assert_eq!(t["received"], shots, "{t}");
        let mean = t["fidelity"].as_f64().expect("fidelity");
        let min = t["fidelity_min"].as_f64().expect("fidelity_min");
        assert!(
            (mean - expected).abs() < 1e-6,
            "{state}: mean fidelity {mean}, expected {expected}: {t}"
        );
        assert!(
            (min - expected).abs() < 1e-6,
            "{state}: worst shot {min}, expected {expected}: {t}"
        );
    }
}

/// SIGKILL a node holding half of a Φ⁺ pair: once the broker notices (its idle
/// timeout, 3 s), the dead node's qubit is gone and its partner's qubit is maximally
/// mixed. Nobody tells the partner.
#[tokio::test]
async fn killing_a_node_leaves_its_partner_maximally_mixed() {
    let d = Deployment::up(LINE_3);
    let pair = hold_one_pair(&d, "alice", "bob").await;
    let (session, mut broker) = BrokerAdmin::connect(&d.layout())
        .await
        .expect("broker admin");
    let fidelity = RequestBody::Fidelity {
        a: pair.local,
        b: pair.remote,
        bell: pair.bell,
    };
    assert_eq!(pair.bell, BellState::PhiPlus);
    match oracle(&mut broker, fidelity.clone()).await {
        Ok(ResponseBody::Fidelity(f)) => assert!((f - 1.0).abs() < 1e-12, "fidelity {f}"),
        other => panic!("fidelity before the kill: {other:?}"),
    }

    d.kill("bob");
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(10);
    loop {
        match oracle(&mut broker, fidelity.clone()).await {
            Err(ErrorBody::NoSuchQubit { qubit }) => {
                assert_eq!(qubit, pair.remote, "bob's half is the one gone");
                break;
            }
            // Until the broker notices, the pair is intact.
            Ok(ResponseBody::Fidelity(f)) => assert!((f - 1.0).abs() < 1e-12, "fidelity {f}"),
            other => panic!("fidelity after the kill: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the broker still holds bob's qubit 10 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "broker traced out bob's qubits {:.1} s after SIGKILL",
        killed.elapsed().as_secs_f64()
    );

    match oracle(
        &mut broker,
        RequestBody::ReducedDensityMatrix {
            qubits: vec![pair.local],
        },
    )
    .await
    {
        Ok(ResponseBody::DensityMatrix { qubits: 1, entries }) => {
            let half = [(0.5, 0.0), (0.0, 0.0), (0.0, 0.0), (0.5, 0.0)];
            assert_eq!(entries.len(), 4);
            for (got, want) in entries.iter().zip(half) {
                assert!(
                    (got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9,
                    "alice's qubit is not I/2: {entries:?}"
                );
            }
        }
        other => panic!("reduced density matrix of alice's qubit: {other:?}"),
    }
    broker.close();
    session.close().await;

    let states = d.states();
    let expect: Vec<(String, String)> = [
        ("broker", "up"),
        ("alice", "up"),
        ("bob", "down"),
        ("carol", "up"),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), s.to_string()))
    .collect();
    assert_eq!(states, expect);
}

/// The broker takes a node's identity from its certificate and refuses it any
/// operation on a qubit another node owns. A second connection under alice's
/// certificate is a new incarnation of alice (as after a restart): the broker traces
/// out the old incarnation's qubits, so this test has a deployment of its own and
/// uses a qubit the new connection allocates.
#[tokio::test]
async fn a_node_cannot_touch_another_nodes_qubit() {
    let d = Deployment::up(PAIR);
    let pair = hold_one_pair(&d, "alice", "bob").await;
    let bobs = pair.remote;

    let endpoint = client_as(&d, "alice");
    let (conn, mut reader, mut writer, hello) = open_control(
        &endpoint,
        d.addr("broker"),
        tls::BROKER_IDENTITY,
        Role::Node("alice".into()),
    )
    .await
    .expect("alice's certificate is accepted");
    assert_eq!(hello.role, Role::Broker);

    // The old incarnation's half is gone; the new connection owns what it makes.
    let mine = match call(
        &mut reader,
        &mut writer,
        90,
        RequestBody::Alloc { count: 1 },
    )
    .await
    {
        Ok(ResponseBody::Qubits(q)) => q[0],
        other => panic!("alloc: {other:?}"),
    };
    let not_owner = Err(ErrorBody::NotOwner {
        qubit: bobs,
        owner: Some("bob".into()),
    });
    let measure = RequestBody::Measure {
        qubits: vec![(bobs, Basis::Z)],
        free: false,
    };
    assert_eq!(call(&mut reader, &mut writer, 1, measure).await, not_owner);
    // Every other way of touching it is refused the same way.
    let attempts = [
        RequestBody::Measure {
            qubits: vec![(mine, Basis::Z), (bobs, Basis::X)],
            free: true,
        },
        RequestBody::gate1(qnet_common::wire::Gate::X, bobs),
        RequestBody::gate2(qnet_common::wire::Gate::Cnot, mine, bobs),
        RequestBody::Free { qubits: vec![bobs] },
        RequestBody::Reset { qubits: vec![bobs] },
        RequestBody::Transfer {
            qubit: bobs,
            to: "bob".into(),
            tag: 0,
        },
    ];
    for (i, body) in attempts.into_iter().enumerate() {
        let answer = call(&mut reader, &mut writer, 2 + i as u64, body.clone()).await;
        assert_eq!(answer, not_owner, "{body:?}");
    }
    // Nor may a node use the oracle.
    let fidelity = RequestBody::Fidelity {
        a: pair.local,
        b: bobs,
        bell: pair.bell,
    };
    assert_eq!(
        call(&mut reader, &mut writer, 100, fidelity.clone()).await,
        Err(ErrorBody::NotAdmin)
    );

    // The refused batches changed nothing: alice's own qubit, named first in a
    // batch refused as a whole, is still |0⟩, and bob's half still exists.
    let (session, mut broker) = BrokerAdmin::connect(&d.layout())
        .await
        .expect("broker admin");
    let rho = RequestBody::ReducedDensityMatrix { qubits: vec![mine] };
    match oracle(&mut broker, rho).await {
        Ok(ResponseBody::DensityMatrix { entries, .. }) => {
            assert!((entries[0].0 - 1.0).abs() < 1e-12, "not |0⟩: {entries:?}")
        }
        other => panic!("alice's qubit after the refusals: {other:?}"),
    }
    let rho = RequestBody::ReducedDensityMatrix { qubits: vec![bobs] };
    assert!(
        matches!(
            oracle(&mut broker, rho).await,
            Ok(ResponseBody::DensityMatrix { .. })
        ),
        "bob's half must survive alice's refused requests"
    );
    broker.close();
    session.close().await;
    CloseCode::Done.close(&conn);
    endpoint.wait_idle().await;
}

/// Mutual TLS: a client whose certificate comes from another CA is refused by the
/// broker and by the nodes, even though it claims a node's name; the deployment
/// does not notice.
#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let d = Deployment::up(PAIR);
    let stranger_ca = DeploymentCa::generate("stranger").expect("CA");
    let mallory = stranger_ca.issue("alice").expect("certificate");
    // Trust the deployment's CA, so that only the server's check of the client
    // certificate can fail.
    let ca = tls::load_ca_cert(&d.certs()).expect("load CA");
    let endpoint = client(&mallory, &ca);
    for (server_name, target) in [(tls::BROKER_IDENTITY, "broker"), ("bob", "bob")] {
        let attempt = open_control(
            &endpoint,
            d.addr(target),
            server_name,
            Role::Node("alice".into()),
        );
        let result = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .unwrap_or_else(|_| panic!("{target} neither accepted nor refused within 10 s"));
        match result {
            Ok(_) => panic!("{target} accepted a certificate from another CA"),
            Err(e) => {
                let text = format!("{e:#}");
                eprintln!("{target} refused the stranger: {text}");
                // The server aborts the handshake with a TLS alert.
                assert!(
                    text.contains("alert") || text.contains("certificate"),
                    "{target}: {text}"
                );
            }
        }
    }
    endpoint.close(CloseCode::Done.into(), b"done");

    let epr = d.epr("alice", "bob", 100);
    assert_eq!(epr["pairs"], 100, "{epr}");
    assert_eq!(epr["agree"].as_f64(), Some(1.0), "{epr}");
}

/// Connects to the broker with `endpoint`, swaps hellos as the controller if
/// `hello_first`, writes `bytes` raw on the control stream, and returns how the
/// broker closed the connection: its application close code and reason.
async fn broker_close(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    hello_first: bool,
    bytes: &[u8],
) -> (CloseCode, String) {
    let conn = endpoint
        .connect(addr, tls::BROKER_IDENTITY)
        .expect("connect")
        .await
        .expect("handshake");
    let (send, recv) = conn.open_bi().await.expect("open stream");
    let mut writer = FrameWriter::new(send);
    if hello_first {
        let mut reader = FrameReader::new(recv);
        writer.write_hello(Role::Controller).await.expect("hello");
        let hello = reader.read_hello().await.expect("broker hello");
        assert_eq!(hello.role, Role::Broker);
    }
    // The broker may close before it has read everything; that is fine.
    let _ = writer.get_mut().write_all(bytes).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the broker closes the connection within 5 s");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let code = CloseCode::from_u64(code)
                .unwrap_or_else(|| panic!("close code {code} is not one of ours"));
            (code, String::from_utf8_lossy(&close.reason).into_owned())
        }
        other => panic!("expected an application close, got {other}"),
    }
}

/// Garbage, oversize frames and bad hellos close the offending connection with an
/// application close code and a reason; neither the broker nor a node panics, and an
/// EPR run in flight at the same time completes untouched.
#[tokio::test]
async fn garbage_and_oversize_frames_close_only_that_connection() {
    let d = Deployment::up(PAIR);
    let broker = d.addr("broker");
    let endpoint = client_as(&d, tls::CONTROLLER_IDENTITY);

    // A real workload runs alongside the abuse.
    let epr_args = d.epr_args("alice", "bob", 2000);
    let epr = tokio::process::Command::new(support::QNET)
        .args(&epr_args)
        .env_remove("QNET_RUN_DIR")
        .kill_on_drop(true)
        .output();

    let abuse = async {
        let frame = |body: &[u8]| {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let mut version_999 = Vec::new();
        write_frame(
            &mut version_999,
            &Hello {
                version: 999,
                role: Role::Controller,
            },
        )
        .await
        .expect("encode");
        let hundred_mib = (100u32 << 20).to_be_bytes().to_vec();
        let cases: [(&str, bool, Vec<u8>, CloseCode); 6] = [
            (
                "a frame of random bytes after the hello",
                true,
                frame(&garbage(256, 0x9e37_79b9_7f4a_7c15)),
                CloseCode::ProtocolViolation,
            ),
            (
                "random bytes, no framing, after the hello",
                true,
                garbage(64 * 1024, 42),
                CloseCode::ProtocolViolation,
            ),
            (
                "a 100 MiB frame header after the hello",
                true,
                hundred_mib.clone(),
                CloseCode::ProtocolViolation,
            ),
            (
                "a 100 MiB frame header as the hello",
                false,
                hundred_mib,
                CloseCode::ProtocolViolation,
            ),
            (
                "an undecodable hello",
                false,
                frame(&[1, 0xff, 0xff, 0xff]),
                CloseCode::ProtocolViolation,
            ),
            (
                "a hello of protocol version 999",
                false,
                version_999,
                CloseCode::VersionMismatch,
            ),
        ];
        for (what, hello_first, bytes, want) in cases {
            let (code, reason) = broker_close(&endpoint, broker, hello_first, &bytes).await;
            eprintln!("{what}: closed with {code:?}: {reason}");
            assert_eq!(code, want, "{what}: reason {reason:?}");
            assert!(!reason.is_empty(), "{what}: no reason given");
        }
    };
    // A node's admin API survives the same abuse. (Its close code is not checked:
    // today the node drops such a connection, which closes it with code 0.)
    let node_abuse = async {
        for bytes in [(100u32 << 20).to_be_bytes().to_vec(), garbage(4096, 0x5eed)] {
            let (conn, _reader, mut writer, hello) =
                open_control(&endpoint, d.addr("bob"), "bob", Role::Controller)
                    .await
                    .expect("controller reaches bob");
            assert_eq!(hello.role, Role::Node("bob".into()));
            let _ = writer.get_mut().write_all(&bytes).await;
            tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("bob closes the connection within 5 s");
        }
    };
    let (epr, (), ()) = tokio::join!(epr, abuse, node_abuse);
    let epr = epr.expect("run qnet");
    let epr = support::parse_json(
        &epr_args.iter().map(String::as_str).collect::<Vec<_>>(),
        &epr,
    );
    assert_eq!(epr["pairs"], 2000, "{epr}");
    assert_eq!(epr["agree"].as_f64(), Some(1.0), "{epr}");
    endpoint.close(CloseCode::Done.into(), b"done");

    // The broker is still alive, still serving, and never panicked.
    assert!(!is_gone(d.pid("broker")), "the broker died");
    assert!(
        d.states().iter().all(|(_, s)| s == "up"),
        "{:?}",
        d.states()
    );
    let again = d.epr("alice", "bob", 100);
    assert_eq!(again["agree"].as_f64(), Some(1.0), "{again}");
    let log = d.log_tail("broker", 10_000);
    assert!(!log.contains("panicked"), "the broker panicked:\n{log}");
}

/// `qnet down` stops the broker and every node: none of the recorded pids is left
/// running (a zombie waiting for its adopter to reap it counts as gone), and no
/// process mentions the run folder any more.
#[test]
fn down_leaves_no_process_behind() {
    let d = Deployment::up(LINE_3);
    let pids = d.pids().to_vec();
    assert_eq!(pids.len(), 4, "broker and three nodes recorded");
    for &pid in &pids {
        assert!(!is_gone(pid), "pid {pid} is not running after up");
    }
    // Connections between the nodes and to the broker are open when down comes.
    let epr = d.epr("bob", "carol", 200);
    assert_eq!(epr["agree"].as_f64(), Some(1.0), "{epr}");

    let out = qnet(&["down", "--run-dir", d.run_dir()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for &pid in &pids {
        let state = support::proc_state(pid);
        assert!(is_gone(pid), "pid {pid} still there after down: {state:?}");
    }
    let pgrep = std::process::Command::new("pgrep")
        .args(["-af", d.run_dir()])
        .output()
        .expect("run pgrep");
    assert!(
        pgrep.stdout.is_empty() && pgrep.status.code() == Some(1),
        "processes left in {}:\n{}",
        d.run_dir(),
        stdout(&pgrep)
    );
    assert_eq!(d.record(), serde_json::Value::Null, "deployment.json kept");
}
