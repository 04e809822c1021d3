//! The UDP socket shim on real sockets: raw datagrams through it, and real quinn
//! connections over it under delay, loss, partitions, duplication, reordering and a
//! rate limit; QUIC's recovery must deliver every byte intact. Also rule validation
//! and the latency table from a topology.
//!
//! Random decisions follow `QNET_SEED` (default 1); each test prints the seed it used.

use std::future::poll_fn;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qnet_common::shim::{
    self, Distribution, LinkRule, MAX_DELAY, RuleError, Shim, ShimHandle, latency_table,
};
use qnet_common::tls::{DeploymentCa, TransportOptions, client_config_with, server_config_with};
use qnet_common::topology::Topology;
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Connection, RecvStream, SendStream};
use tokio::time::{Instant, timeout};

const DEADLINE: Duration = Duration::from_secs(10);

fn seed() -> u64 {
    let seed = std::env::var("QNET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    eprintln!("QNET_SEED={seed}");
    seed
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------
// Raw datagrams

/// Sends one datagram (or a GSO batch, with `segment_size`) through `shim`.
async fn send_raw(shim: &Arc<Shim>, to: SocketAddr, contents: &[u8], segment_size: Option<usize>) {
    let mut poller = shim.clone().create_io_poller();
    let transmit = Transmit {
        destination: to,
        ecn: Some(EcnCodepoint::Ect0),
        contents,
        segment_size,
        src_ip: None,
    };
    loop {
        poll_fn(|cx| poller.as_mut().poll_writable(cx))
            .await
            .unwrap();
        match shim.try_send(&transmit) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Receives datagrams on `shim` until `quiet` passes without one; each with its
/// source and ECN codepoint, GRO batches split apart.
async fn recv_raw(
    shim: &Arc<Shim>,
    quiet: Duration,
) -> Vec<(Vec<u8>, SocketAddr, Option<EcnCodepoint>)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut meta = [RecvMeta::default()];
        let recv = poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            shim.poll_recv(cx, &mut bufs, &mut meta)
        });
        match timeout(quiet, recv).await {
            Err(_) => return got,
            Ok(n) => assert_eq!(n.unwrap(), 1),
        }
        let meta = meta[0];
        for datagram in buf[..meta.len].chunks(meta.stride.max(1)) {
            got.push((datagram.to_vec(), meta.addr, meta.ecn));
        }
    }
}

#[tokio::test]
async fn raw_datagrams_pass_through_without_rules() {
    let seed = seed();
    let (a, a_handle) = Shim::bind(localhost(), seed).unwrap();
    let (b, _) = Shim::bind(localhost(), seed).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert_eq!(a_handle.local_addr(), a_addr);

    send_raw(&a, b_addr, b"ping", None).await;
    let got = recv_raw(&b, ms(200)).await;
    assert_eq!(got, [(b"ping".to_vec(), a_addr, Some(EcnCodepoint::Ect0))]);
    send_raw(&b, a_addr, b"pong", None).await;
    let got = recv_raw(&a, ms(200)).await;
    assert_eq!(got, [(b"pong".to_vec(), b_addr, Some(EcnCodepoint::Ect0))]);

    let stats = a_handle.stats();
    assert_eq!((stats.sent, stats.dropped, stats.delayed), (1, 0, 0));
}

#[tokio::test]
async fn raw_delay_keeps_order_and_ecn() {
    let seed = seed();
    let (a, handle) = Shim::bind(localhost(), seed).unwrap();
    let (b, _) = Shim::bind(localhost(), seed).unwrap();
    let b_addr = b.local_addr().unwrap();
    handle
        .set_rule(
            Some(b_addr),
            LinkRule {
                delay: ms(30),
                ..LinkRule::default()
            },
        )
        .unwrap();

    let start = Instant::now();
    for i in 0..20u8 {
        send_raw(&a, b_addr, &[i; 100], None).await;
    }
    let first = recv_raw(&b, ms(1000)).await;
    // Nothing may arrive before the delay; everything arrives, in order, with ECN.
    assert!(start.elapsed() >= ms(30));
    let order: Vec<u8> = first.iter().map(|(d, _, _)| d[0]).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
    assert!(
        first
            .iter()
            .all(|(_, _, ecn)| *ecn == Some(EcnCodepoint::Ect0))
    );
    let stats = handle.stats();
    assert_eq!((stats.sent, stats.delayed, stats.dropped), (20, 20, 0));
}

#[tokio::test]
async fn dropped_shim_delivers_what_it_delayed_then_closes() {
    let seed = seed();
    let (a, handle) = Shim::bind(localhost(), seed).unwrap();
    let (b, _) = Shim::bind(localhost(), seed).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let rule = LinkRule {
        delay: ms(50),
        ..LinkRule::default()
    };
    a.handle().set_rule(None, rule).unwrap();
    send_raw(&a, b_addr, b"late", None).await;
    drop(a);
    let got = recv_raw(&b, ms(500)).await;
    assert_eq!(got, [(b"late".to_vec(), a_addr, Some(EcnCodepoint::Ect0))]);
    assert_eq!(handle.stats().sent, 1);
    // Its queue empty, the shim lets go of the socket: the port can be bound again.
    let rebound = timeout(DEADLINE, async {
        loop {
            match std::net::UdpSocket::bind(a_addr) {
                Ok(socket) => return socket,
                Err(_) => tokio::time::sleep(ms(10)).await,
            }
        }
    })
    .await;
    assert!(rebound.is_ok(), "the dropped shim still holds {a_addr}");
}

#[tokio::test]
async fn raw_loss_and_duplicates_match_the_counters() {
    let seed = seed();
    let (a, handle) = Shim::bind(localhost(), seed).unwrap();
    let (b, _) = Shim::bind(localhost(), seed).unwrap();
    let b_addr = b.local_addr().unwrap();
    handle
        .set_rule(
            None,
            LinkRule {
                loss: 0.5,
                duplicate: 0.5,
                ..LinkRule::default()
            },
        )
        .unwrap();
    for i in 0..200u16 {
        send_raw(&a, b_addr, &i.to_be_bytes(), None).await;
    }
    let got = recv_raw(&b, ms(200)).await;
    let stats = handle.stats();
    assert_eq!(got.len() as u64, stats.sent);
    assert_eq!(stats.sent + stats.dropped, 200 + stats.duplicated);
    assert!((60..=140).contains(&stats.dropped), "{stats:?}");
    assert!(stats.duplicated > 10, "{stats:?}");
}

#[tokio::test]
async fn raw_gso_batches_are_impaired_datagram_by_datagram() {
    let seed = seed();
    let (a, handle) = Shim::bind(localhost(), seed).unwrap();
    let (b, _) = Shim::bind(localhost(), seed).unwrap();
    if a.max_transmit_segments() < 5 {
        eprintln!("no GSO on this host; skipped");
        return;
    }
    let b_addr = b.local_addr().unwrap();
    handle
        .set_rule(
            Some(b_addr),
            LinkRule {
                duplicate: 1.0,
                ..LinkRule::default()
            },
        )
        .unwrap();
    let batch: Vec<u8> = (0..5u8).flat_map(|i| [i; 100]).collect();
    send_raw(&a, b_addr, &batch, Some(100)).await;
    let mut got: Vec<u8> = recv_raw(&b, ms(200))
        .await
        .iter()
        .map(|(d, _, _)| {
            assert_eq!(d.len(), 100);
            d[0]
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    assert_eq!(handle.stats().duplicated, 5);
}

// ---------------------------------------------------------------------------------
// QUIC over the shim

/// A server and a client, each on its own shim, with one connection between them and
/// an echo service on the server.
struct Pair {
    client_shim: ShimHandle,
    server_shim: ShimHandle,
    server_addr: SocketAddr,
    /// The client's connection.
    conn: Connection,
    /// The server's side of it.
    server_conn: Connection,
    _client: quinn::Endpoint,
    _server: quinn::Endpoint,
}

async fn pair(options: TransportOptions, seed: u64) -> Pair {
    let ca = DeploymentCa::generate("shim test").unwrap();
    let broker = ca.issue("broker").unwrap();
    let alice = ca.issue("alice").unwrap();
    let server_config = server_config_with(&broker, ca.cert(), &options).unwrap();
    let (server, server_shim) = shim::endpoint(Some(server_config), localhost(), seed).unwrap();
    let (mut client, client_shim) = shim::endpoint(None, localhost(), seed ^ 0xC1).unwrap();
    client.set_default_client_config(client_config_with(&alice, ca.cert(), &options).unwrap());
    let server_addr = server.local_addr().unwrap();

    let accept = async {
        let conn = server.accept().await.unwrap().await.unwrap();
        tokio::spawn(serve_echo(conn.clone()));
        conn
    };
    let connect = async {
        client
            .connect(server_addr, "broker")
            .unwrap()
            .await
            .unwrap()
    };
    let (server_conn, conn) = timeout(DEADLINE, async { tokio::join!(accept, connect) })
        .await
        .expect("handshake");
    Pair {
        client_shim,
        server_shim,
        server_addr,
        conn,
        server_conn,
        _client: client,
        _server: server,
    }
}

/// Echoes every bidirectional stream of `conn` until it closes.
async fn serve_echo(conn: Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                if send.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

/// One stream for request/response round trips to the echo service.
struct Echo {
    send: SendStream,
    recv: RecvStream,
}

impl Echo {
    async fn open(conn: &Connection) -> Echo {
        let (send, recv) = conn.open_bi().await.unwrap();
        Echo { send, recv }
    }

    async fn write(&mut self, msg: &[u8]) {
        self.send.write_all(msg).await.unwrap();
    }

    async fn read(&mut self, len: usize) -> Vec<u8> {
        let mut back = vec![0u8; len];
        self.recv.read_exact(&mut back).await.unwrap();
        back
    }

    /// Sends `msg`, waits for it to come back and checks it; returns the round trip.
    async fn round_trip(&mut self, msg: &[u8]) -> Duration {
        let start = Instant::now();
        self.write(msg).await;
        assert_eq!(self.read(msg.len()).await, msg);
        start.elapsed()
    }

    /// The fastest of `n` round trips.
    async fn min_rtt(&mut self, n: u32) -> Duration {
        let mut best = Duration::MAX;
        for i in 0..n {
            best = best.min(self.round_trip(&i.to_be_bytes()).await);
        }
        best
    }
}

/// `len` bytes that differ from one position to the next.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `data` on a new stream and reads the echo back concurrently.
async fn echo_bulk(conn: &Connection, data: &[u8]) -> Vec<u8> {
    let Echo { mut send, mut recv } = Echo::open(conn).await;
    let write = async {
        send.write_all(data).await.unwrap();
        send.finish().unwrap();
    };
    let read = recv.read_to_end(data.len() + 1);
    let ((), back) = tokio::join!(write, read);
    back.unwrap()
}

#[tokio::test]
async fn quic_echo_works_without_rules() {
    let pair = pair(TransportOptions::default(), seed()).await;
    let mut echo = Echo::open(&pair.conn).await;
    timeout(DEADLINE, async {
        for i in 0..10u32 {
            echo.round_trip(format!("hello {i}").as_bytes()).await;
        }
        let data = pattern(100_000);
        assert_eq!(echo_bulk(&pair.conn, &data).await, data);
    })
    .await
    .expect("echo");
    assert!(pair.client_shim.stats().sent > 0);
    assert_eq!(pair.client_shim.stats().dropped, 0);
    assert!(pair.client_shim.rules().is_empty());
}

#[tokio::test]
async fn delay_raises_the_round_trip_time() {
    let pair = pair(TransportOptions::default(), seed()).await;
    let mut echo = Echo::open(&pair.conn).await;
    let (baseline, delayed) = timeout(DEADLINE, async {
        let baseline = echo.min_rtt(10).await;
        let rule = LinkRule {
            delay: ms(20),
            ..LinkRule::default()
        };
        pair.client_shim
            .set_rule(Some(pair.server_addr), rule)
            .unwrap();
        let delayed = echo.min_rtt(10).await;
        (baseline, delayed)
    })
    .await
    .expect("echo");
    eprintln!(
        "baseline {baseline:?}, with 20 ms delay {delayed:?}, quinn rtt {:?}",
        pair.conn.rtt()
    );
    assert!(delayed > baseline + ms(15), "{baseline:?} -> {delayed:?}");
    assert!(delayed < baseline + ms(200), "{baseline:?} -> {delayed:?}");
    assert!(pair.client_shim.stats().delayed >= 10);
}

#[tokio::test]
async fn echo_survives_thirty_percent_loss_both_ways() {
    let seed = seed();
    let pair = pair(TransportOptions::default(), seed).await;
    let lossy = LinkRule {
        loss: 0.3,
        ..LinkRule::default()
    };
    pair.client_shim.set_rule(None, lossy).unwrap();
    pair.server_shim.set_rule(None, lossy).unwrap();
    let Echo { mut send, mut recv } = Echo::open(&pair.conn).await;
    let message = |i: u32| format!("message {i:3} of 200").into_bytes();
    // Round trips one at a time would spend most of their time in QUIC's
    // exponentially backed-off probe timeouts (a tail loss with nothing after it):
    // at 30 % loss each way, minutes. With a few in flight, later packets reveal
    // a loss quickly, as in any real request stream.
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let start = Instant::now();
    let writer = async {
        for i in 0..200 {
            window.acquire().await.unwrap().forget();
            send.write_all(&message(i)).await.unwrap();
        }
    };
    let reader = async {
        for i in 0..200 {
            let want = message(i);
            let mut back = vec![0u8; want.len()];
            recv.read_exact(&mut back).await.unwrap();
            assert_eq!(back, want, "round trip {i}");
            window.add_permits(1);
        }
    };
    timeout(Duration::from_secs(30), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("200 round trips under loss");
    let (client, server) = (pair.client_shim.stats(), pair.server_shim.stats());
    eprintln!(
        "{:?}; client {client:?}; server {server:?}",
        start.elapsed()
    );
    assert!(client.dropped > 0 && server.dropped > 0);
}

/// Round trips in flight at once in the loss test.
const WINDOW: usize = 16;

#[tokio::test]
async fn blackhole_stops_replies_until_cleared() {
    let options = TransportOptions {
        idle_timeout: Duration::from_secs(30),
        ..TransportOptions::default()
    };
    let pair = pair(options, seed()).await;
    let client_addr = pair.server_conn.remote_address();
    let mut echo = Echo::open(&pair.conn).await;
    timeout(DEADLINE, echo.round_trip(b"before")).await.unwrap();

    // A partition from someone else changes nothing here.
    let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    pair.server_shim
        .set_rule(Some(elsewhere), LinkRule::partition())
        .unwrap();
    timeout(DEADLINE, echo.round_trip(b"unrelated"))
        .await
        .unwrap();

    // One-way partition: the server's datagrams to the client vanish.
    pair.server_shim
        .set_rule(Some(client_addr), LinkRule::partition())
        .unwrap();
    echo.write(b"during").await;
    let read = timeout(Duration::from_secs(1), echo.read(b"during".len())).await;
    assert!(read.is_err(), "no reply may cross a partition");
    assert!(pair.server_shim.stats().dropped > 0);

    // Repair: the reply that was held up arrives, and the stream carries on.
    assert!(pair.server_shim.clear(Some(client_addr)));
    assert!(!pair.server_shim.clear(Some(client_addr)));
    let late = timeout(DEADLINE, echo.read(b"during".len()))
        .await
        .expect("reply after repair");
    assert_eq!(late, b"during");
    timeout(DEADLINE, echo.round_trip(b"after")).await.unwrap();
    assert_eq!(
        pair.server_shim.rules(),
        [(Some(elsewhere), LinkRule::partition())]
    );
}

#[tokio::test]
async fn duplication_and_reordering_leave_the_stream_intact() {
    let pair = pair(TransportOptions::default(), seed()).await;
    let messy = LinkRule {
        duplicate: 0.5,
        reorder: 0.5,
        ..LinkRule::default()
    };
    pair.client_shim.set_rule(None, messy).unwrap();
    pair.server_shim.set_rule(None, messy).unwrap();
    let data = pattern(200_000);
    let back = timeout(DEADLINE, echo_bulk(&pair.conn, &data))
        .await
        .expect("echo");
    assert!(back == data, "stream data came back changed");
    for stats in [pair.client_shim.stats(), pair.server_shim.stats()] {
        eprintln!("{stats:?}");
        assert!(stats.duplicated > 0 && stats.reordered > 0, "{stats:?}");
        assert_eq!(stats.dropped, 0);
    }
}

#[tokio::test]
async fn bandwidth_limit_slows_a_bulk_transfer() {
    let pair = pair(TransportOptions::default(), seed()).await;
    let rule = LinkRule {
        bandwidth: Some(100_000),
        ..LinkRule::default()
    };
    pair.client_shim
        .set_rule(Some(pair.server_addr), rule)
        .unwrap();
    let data = pattern(200_000);
    let start = Instant::now();
    let back = timeout(Duration::from_secs(20), echo_bulk(&pair.conn, &data))
        .await
        .expect("transfer");
    let took = start.elapsed();
    eprintln!(
        "200 kB at 100 kB/s: {took:?}; {:?}",
        pair.client_shim.stats()
    );
    assert!(back == data, "stream data came back changed");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

// ---------------------------------------------------------------------------------
// Rules and the latency table

#[test]
fn validate_rejects_bad_rules() {
    assert_eq!(LinkRule::default().validate(), Ok(()));
    assert!(LinkRule::default().is_noop());
    assert_eq!(LinkRule::partition().validate(), Ok(()));
    let good = LinkRule {
        delay: ms(5),
        jitter: ms(5),
        distribution: Distribution::Normal,
        loss: 1.0,
        duplicate: 0.0,
        reorder: 0.5,
        bandwidth: Some(1),
        blackhole: false,
    };
    assert_eq!(good.validate(), Ok(()));

    for (field, value) in [
        ("loss", -0.1),
        ("duplicate", 1.5),
        ("reorder", f64::NAN),
        ("loss", f64::INFINITY),
    ] {
        let mut rule = LinkRule::default();
        match field {
            "loss" => rule.loss = value,
            "duplicate" => rule.duplicate = value,
            _ => rule.reorder = value,
        }
        match rule.validate() {
            Err(RuleError::NotAProbability { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field} = {value}: {other:?}"),
        }
    }
    let zero = LinkRule {
        bandwidth: Some(0),
        ..LinkRule::default()
    };
    assert_eq!(zero.validate(), Err(RuleError::ZeroBandwidth));
    let long = LinkRule {
        delay: MAX_DELAY,
        jitter: ms(1),
        ..LinkRule::default()
    };
    assert!(matches!(
        long.validate(),
        Err(RuleError::DelayTooLong { .. })
    ));
}

#[tokio::test]
async fn handle_refuses_bad_rules_and_finds_mapped_addresses() {
    let (_shim, handle) = Shim::bind(localhost(), seed()).unwrap();
    let bad = LinkRule {
        loss: 2.0,
        ..LinkRule::default()
    };
    assert!(handle.set_rule(None, bad).is_err());
    assert!(handle.rules().is_empty());

    let v4: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
    let slow = LinkRule::latency(ms(10), ms(30), Distribution::Uniform);
    assert_eq!((slow.delay, slow.jitter), (ms(10), ms(20)));
    handle.set_rule(Some(mapped), slow).unwrap();
    handle.set_rule(None, LinkRule::partition()).unwrap();
    assert_eq!(handle.rule(Some(v4)), Some(slow));
    assert_eq!(
        handle.rules(),
        [(None, LinkRule::partition()), (Some(v4), slow)]
    );
    handle.clear_all();
    assert!(handle.rules().is_empty());
}

#[test]
fn rules_read_from_json_with_defaults() {
    let rule: LinkRule =
        serde_json::from_str(r#"{"loss": 0.25, "distribution": "normal"}"#).unwrap();
    assert_eq!(
        rule,
        LinkRule {
            loss: 0.25,
            distribution: Distribution::Normal,
            ..LinkRule::default()
        }
    );
    assert!(serde_json::from_str::<LinkRule>(r#"{"los": 0.25}"#).is_err());
}

#[test]
fn latency_table_sums_along_the_path_in_wall_time() {
    let topology = Topology::parse(
        r#"
        [network]
        name = "line-4"
        time_scale = 0.5

        [[nodes]]
        name = "a"
        [[nodes]]
        name = "b"
        [[nodes]]
        name = "c"
        [[nodes]]
        name = "d"

        [[links]]
        a = "a"
        b = "b"
        classical_latency = "2ms"
        [[links]]
        a = "b"
        b = "c"
        classical_latency = "3ms"
        [[links]]
        a = "c"
        b = "d"
        classical_latency = "5ms"
        "#,
        "line-4",
    )
    .unwrap();
    let table = latency_table(&topology);
    // Half an emulated second per wall second: wall time is twice the emulated.
    let expected = [
        [0, 4, 10, 20],
        [4, 0, 6, 16],
        [10, 6, 0, 10],
        [20, 16, 10, 0],
    ];
    for (a, row) in expected.iter().enumerate() {
        for (b, &want) in row.iter().enumerate() {
            let got = table[a][b];
            let diff = got.abs_diff(ms(want));
            assert!(diff < Duration::from_micros(1), "{a}->{b}: {got:?}");
        }
    }
}
