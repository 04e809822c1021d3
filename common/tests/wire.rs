//! Wire protocol: every message round-trips, and bad input (oversize, garbage,
//! truncated, wrong version, random bytes) gives a typed error, never a panic.

use std::collections::BTreeSet;
use std::time::Duration;

use qnet_common::ids::{Basis, BellState, QubitId};
use qnet_common::wire::{
    BrokerStats, Classical, CloseCode, ErrorBody, Event, FrameReader, FrameWriter, Gate,
    HELLO_MAX_FRAME, Hello, MAX_BATCH, MAX_FRAME, PROTOCOL_VERSION, Pair, Request, RequestBody,
    Response, ResponseBody, Role, WireError, decode, encode, encode_frame_into, read_frame,
    read_hello, write_frame, write_hello,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt, duplex};

fn q(n: u64) -> QubitId {
    QubitId(n)
}

fn pair(seq: u64) -> Pair {
    Pair {
        seq,
        local: q(2 * seq),
        remote: q(2 * seq + 1),
        bell: BellState::PsiMinus,
        created_ns: 1_000 * seq,
    }
}

fn hellos() -> Vec<Hello> {
    vec![
        Hello::new(Role::Broker),
        Hello::new(Role::Controller),
        Hello::new(Role::Node("alice".into())),
    ]
}

/// One request of every kind; `request_kinds_covered` fails to compile when a variant
/// is added without a sample here.
fn requests() -> Vec<Request> {
    let bodies = vec![
        RequestBody::CreatePairs {
            link_peer: "bob".into(),
            count: 1000,
            bell: BellState::PhiPlus,
            fidelity: Some(0.95),
        },
        RequestBody::CreatePairs {
            link_peer: "bob".into(),
            count: 1,
            bell: BellState::PsiPlus,
            fidelity: None,
        },
        RequestBody::Attempt {
            link_peer: "bob".into(),
            label: Some(3),
        },
        RequestBody::Attempt {
            link_peer: "bob".into(),
            label: None,
        },
        RequestBody::HeraldLog {
            a: "alice".into(),
            b: "bob".into(),
            after_seq: 10,
            max: 100,
        },
        RequestBody::SetLink {
            a: "alice".into(),
            b: "bob".into(),
            fidelity: Some(0.8),
            up: Some(false),
        },
        RequestBody::SetMemory {
            node: "bob".into(),
            t1: None,
            t2: Some(0.05),
        },
        RequestBody::Alloc { count: 3 },
        RequestBody::gate1(Gate::H, q(1)),
        RequestBody::gate1(Gate::Rx(0.25), q(1)),
        RequestBody::gate1(Gate::Ry(-1.5), q(1)),
        RequestBody::gate1(Gate::Rz(f64::MAX), q(1)),
        RequestBody::gate2(Gate::Cnot, q(1), q(2)),
        RequestBody::gate2(Gate::Swap, q(u64::MAX), q(0)),
        RequestBody::Measure {
            qubits: vec![
                (q(1), Basis::Z),
                (q(2), Basis::X),
                (q(3), Basis::Y),
                (
                    q(4),
                    Basis::Rotated {
                        theta: 0.5,
                        phi: -0.25,
                    },
                ),
            ],
            free: true,
        },
        RequestBody::Reset {
            qubits: vec![q(5), q(6)],
        },
        RequestBody::Free { qubits: vec![q(7)] },
        RequestBody::Transfer {
            qubit: q(8),
            to: "carol".into(),
            tag: 42,
        },
        RequestBody::Now,
        RequestBody::Fidelity {
            a: q(1),
            b: q(2),
            bell: BellState::PhiMinus,
        },
        RequestBody::ReducedDensityMatrix {
            qubits: vec![q(1), q(2)],
        },
        RequestBody::Stats,
        RequestBody::Shutdown,
        RequestBody::Announce {
            addr: "127.0.0.1:4433".into(),
        },
        RequestBody::Lookup { name: "bob".into() },
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Request {
            id: i as u64 * 1_000_003,
            body,
        })
        .collect()
}

fn request_kinds_covered(body: &RequestBody) -> &'static str {
    // No wildcard arm: a new variant must be added here and to `requests()`.
    match body {
        RequestBody::CreatePairs { .. }
        | RequestBody::Attempt { .. }
        | RequestBody::Alloc { .. }
        | RequestBody::Gate { .. }
        | RequestBody::Measure { .. }
        | RequestBody::Reset { .. }
        | RequestBody::Free { .. }
        | RequestBody::Transfer { .. }
        | RequestBody::Now
        | RequestBody::Fidelity { .. }
        | RequestBody::ReducedDensityMatrix { .. }
        | RequestBody::Stats
        | RequestBody::Shutdown
        | RequestBody::Announce { .. }
        | RequestBody::Lookup { .. }
        | RequestBody::HeraldLog { .. }
        | RequestBody::SetLink { .. }
        | RequestBody::SetMemory { .. } => body.kind(),
    }
}

fn response_bodies() -> Vec<ResponseBody> {
    vec![
        ResponseBody::Done,
        ResponseBody::Qubits(vec![q(1), q(2), q(3)]),
        ResponseBody::Pairs((0..5).map(pair).collect()),
        ResponseBody::Outcomes(vec![0, 1, 1, 0]),
        ResponseBody::Now { t_emu_ns: 123_456 },
        ResponseBody::Fidelity(0.875),
        ResponseBody::DensityMatrix {
            qubits: 1,
            entries: vec![(0.5, 0.0), (0.25, -0.125), (0.25, 0.125), (0.5, 0.0)],
        },
        ResponseBody::Stats(BrokerStats {
            t_emu_ns: 1,
            uptime_ns: 2,
            connections: 3,
            live_qubits: 4,
            registers: 5,
            largest_register: 6,
            pairs_created: 7,
            gates: 8,
            measurements: 9,
            requests: 10,
            errors: 11,
        }),
        ResponseBody::Address("127.0.0.1:1".into()),
        ResponseBody::HeraldLog(vec![qnet_common::wire::HeraldRecord {
            seq: 1,
            label: 2,
            bell: BellState::PsiMinus,
            emitted_ns: 3,
            heralded_ns: 4,
            fidelity: 0.875,
        }]),
    ]
}

fn response_kinds_covered(body: &ResponseBody) {
    match body {
        ResponseBody::Done
        | ResponseBody::Qubits(_)
        | ResponseBody::Pairs(_)
        | ResponseBody::Outcomes(_)
        | ResponseBody::Now { .. }
        | ResponseBody::Fidelity(_)
        | ResponseBody::DensityMatrix { .. }
        | ResponseBody::Stats(_)
        | ResponseBody::Address(_)
        | ResponseBody::HeraldLog(_) => {}
    }
}

fn errors() -> Vec<ErrorBody> {
    vec![
        ErrorBody::NotOwner {
            qubit: q(1),
            owner: Some("bob".into()),
        },
        ErrorBody::NotOwner {
            qubit: q(1),
            owner: None,
        },
        ErrorBody::NoSuchQubit { qubit: q(9) },
        ErrorBody::RegisterTooLarge { size: 17, cap: 16 },
        ErrorBody::NotAdmin,
        ErrorBody::UnknownNode("mallory".into()),
        ErrorBody::NotNeighbours {
            peer: "carol".into(),
        },
        ErrorBody::NodeDown("bob".into()),
        ErrorBody::BatchTooLarge {
            len: 20_000,
            max: MAX_BATCH,
        },
        ErrorBody::BadRequest("count must be at least 1".into()),
        ErrorBody::ShuttingDown,
        ErrorBody::Internal("oops".into()),
    ]
}

fn error_kinds_covered(e: &ErrorBody) {
    match e {
        ErrorBody::NotOwner { .. }
        | ErrorBody::NoSuchQubit { .. }
        | ErrorBody::RegisterTooLarge { .. }
        | ErrorBody::NotAdmin
        | ErrorBody::UnknownNode(_)
        | ErrorBody::NotNeighbours { .. }
        | ErrorBody::NodeDown(_)
        | ErrorBody::BatchTooLarge { .. }
        | ErrorBody::BadRequest(_)
        | ErrorBody::ShuttingDown
        | ErrorBody::Internal(_) => {}
    }
}

fn responses() -> Vec<Response> {
    let ok = response_bodies().into_iter().map(Ok);
    let err = errors().into_iter().map(Err);
    ok.chain(err)
        .enumerate()
        .map(|(i, body)| Response { id: i as u64, body })
        .collect()
}

fn events() -> Vec<Event> {
    let events = vec![
        Event::PairsDelivered {
            peer: "alice".into(),
            pairs: (0..3).map(pair).collect(),
        },
        Event::QubitArrived {
            qubit: q(77),
            from: "alice".into(),
            tag: 5,
        },
        Event::NodeLost { name: "bob".into() },
        Event::Heralded {
            peer: "bob".into(),
            label: 9,
            pair: pair(4),
            heralded_ns: 12,
        },
    ];
    for e in &events {
        match e {
            Event::PairsDelivered { .. }
            | Event::QubitArrived { .. }
            | Event::NodeLost { .. }
            | Event::Heralded { .. } => {}
        }
    }
    events
}

fn classicals() -> Vec<Classical> {
    vec![
        Classical {
            app: "link".into(),
            payload: vec![],
        },
        Classical {
            app: "qkd".into(),
            payload: (0..=255).collect(),
        },
    ]
}

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msgs: &[T]) {
    for msg in msgs {
        let bytes = encode(msg).unwrap();
        let back: T = decode(&bytes).unwrap();
        assert_eq!(&back, msg);
        let mut framed = Vec::new();
        encode_frame_into(&mut framed, msg, MAX_FRAME).unwrap();
        assert_eq!(&framed[..4], &(bytes.len() as u32).to_be_bytes());
        assert_eq!(&framed[4..], &bytes[..]);
    }
}

#[test]
fn every_message_roundtrips_through_the_codec() {
    roundtrip(&hellos());
    roundtrip(&requests());
    roundtrip(&responses());
    roundtrip(&events());
    roundtrip(&classicals());
    roundtrip(&node_admin());

    let kinds: BTreeSet<_> = requests()
        .iter()
        .map(|r| request_kinds_covered(&r.body))
        .collect();
    assert_eq!(kinds.len(), 18, "one sample per request kind: {kinds:?}");
    response_bodies().iter().for_each(response_kinds_covered);
    errors().iter().for_each(error_kinds_covered);
    // Every error renders a human-readable message.
    for e in errors() {
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn hello_layout_is_pinned() {
    // The version is the first field, as a varint; old and new peers rely on it.
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(encode(&Hello::new(Role::Broker)).unwrap(), vec![1, 0]);
    assert_eq!(
        encode(&Hello::new(Role::Node("ab".into()))).unwrap(),
        vec![1, 1, 2, b'a', b'b']
    );
}

#[test]
fn admin_requests_are_flagged() {
    let admin: Vec<_> = requests()
        .into_iter()
        .filter(|r| r.body.is_admin())
        .map(|r| r.body.kind())
        .collect();
    assert_eq!(
        admin,
        [
            "herald_log",
            "set_link",
            "set_memory",
            "fidelity",
            "reduced_density_matrix",
            "stats",
            "shutdown"
        ]
    );
    assert_eq!(Gate::Cnot.arity(), 2);
    assert_eq!(Gate::Rz(1.0).arity(), 1);
}

#[test]
fn largest_batches_fit_in_a_frame() {
    let n = MAX_BATCH as u64;
    let worst = |i: u64| QubitId(u64::MAX - i);
    let measure = Request {
        id: u64::MAX,
        body: RequestBody::Measure {
            qubits: (0..n)
                .map(|i| {
                    (
                        worst(i),
                        Basis::Rotated {
                            theta: 1.0,
                            phi: 2.0,
                        },
                    )
                })
                .collect(),
            free: true,
        },
    };
    let pairs = Response {
        id: u64::MAX,
        body: Ok(ResponseBody::Pairs(
            (0..n)
                .map(|i| Pair {
                    seq: u64::MAX - i,
                    local: worst(i),
                    remote: worst(i),
                    bell: BellState::PsiMinus,
                    created_ns: u64::MAX,
                })
                .collect(),
        )),
    };
    let rdm = Response {
        id: u64::MAX,
        body: Ok(ResponseBody::DensityMatrix {
            qubits: 7,
            entries: vec![(0.1, 0.2); 1 << 14],
        }),
    };
    for len in [
        encode(&measure).unwrap().len(),
        encode(&pairs).unwrap().len(),
        encode(&rdm).unwrap().len(),
    ] {
        assert!(len < MAX_FRAME, "{len} bytes");
    }
}

#[tokio::test]
async fn frames_roundtrip_over_a_stream() {
    // A tiny duplex buffer forces frames to arrive in many pieces.
    let (a, b) = duplex(7);
    let reqs = requests();
    let sent = reqs.clone();
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(a);
        w.write_hello(Role::Node("alice".into())).await.unwrap();
        // Half one at a time, half as a single batch.
        let (one, batch) = sent.split_at(sent.len() / 2);
        for r in one {
            w.write(r).await.unwrap();
        }
        for r in batch {
            w.queue(r).unwrap();
        }
        assert!(w.queued() > 0);
        w.flush().await.unwrap();
        assert_eq!(w.queued(), 0);
        // Free functions write exactly one frame each and mix with the writer.
        write_frame(w.get_mut(), &reqs[0]).await.unwrap();
    });
    let mut r = FrameReader::new(b);
    let hello = r.read_hello().await.unwrap();
    assert_eq!(hello.role, Role::Node("alice".into()));
    for want in requests() {
        let got: Request = r.read().await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    let last: Request = r.read().await.unwrap().unwrap();
    assert_eq!(last, requests()[0]);
    writer.await.unwrap();
    assert!(r.read::<Request>().await.unwrap().is_none(), "clean EOF");
    assert_eq!(r.buffered(), 0);
}

#[tokio::test]
async fn free_functions_roundtrip_and_report_clean_eof() {
    let (mut a, mut b) = duplex(64);
    let writer = tokio::spawn(async move {
        write_hello(&mut a, Role::Controller).await.unwrap();
        for e in events() {
            write_frame(&mut a, &e).await.unwrap();
        }
    });
    assert_eq!(read_hello(&mut b).await.unwrap().role, Role::Controller);
    for want in events() {
        let got: Event = read_frame(&mut b, MAX_FRAME).await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    writer.await.unwrap();
    assert!(
        read_frame::<Event, _>(&mut b, MAX_FRAME)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn oversize_frame_is_refused_before_its_body() {
    // The writer announces a huge frame and then sends nothing more, keeping the
    // stream open: a reader that waited for the body would hang.
    for use_reader in [false, true] {
        let (mut a, mut b) = duplex(64);
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), async {
            if use_reader {
                FrameReader::new(&mut b).read::<Request>().await
            } else {
                read_frame::<Request, _>(&mut b, MAX_FRAME).await
            }
        })
        .await
        .expect("oversize must be detected from the header alone");
        match result {
            Err(WireError::Oversize { len, max }) => {
                assert_eq!(len, MAX_FRAME + 1);
                assert_eq!(max, MAX_FRAME);
            }
            other => panic!("expected Oversize, got {other:?}"),
        }
        drop(a);
    }

    // A per-call maximum applies too, and hellos have their own small one.
    let mut big = Vec::new();
    encode_frame_into(&mut big, &requests()[0], MAX_FRAME).unwrap();
    let err = read_frame::<Request, _>(&mut &big[..], 8)
        .await
        .unwrap_err();
    assert!(matches!(err, WireError::Oversize { max: 8, .. }), "{err:?}");
    let huge_hello = (HELLO_MAX_FRAME as u32 + 1).to_be_bytes();
    let err = read_hello(&mut &huge_hello[..]).await.unwrap_err();
    assert!(matches!(err, WireError::Oversize { .. }), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::ProtocolViolation);
}

#[tokio::test]
async fn oversize_message_is_not_sent() {
    let (a, _b) = duplex(64);
    let mut w = FrameWriter::with_max(a, 16);
    w.queue(&Hello::new(Role::Broker)).unwrap();
    let before = w.queued();
    let err = w
        .queue(&Classical {
            app: "x".into(),
            payload: vec![0; 100],
        })
        .unwrap_err();
    assert!(
        matches!(err, WireError::Oversize { max: 16, .. }),
        "{err:?}"
    );
    assert_eq!(
        w.queued(),
        before,
        "a refused message leaves nothing behind"
    );

    let mut buf = vec![9];
    let err = encode_frame_into(&mut buf, &vec![0u8; 100], 10).unwrap_err();
    assert!(matches!(err, WireError::Oversize { len: 101, max: 10 }));
    assert_eq!(buf, vec![9]);
}

#[tokio::test]
async fn garbage_is_malformed_and_framing_survives() {
    let mut stream = Vec::new();
    // A frame whose body is not a Request: variant index 200 does not exist.
    stream.extend_from_slice(&3u32.to_be_bytes());
    stream.extend_from_slice(&[0, 200, 1]);
    // A valid request with a trailing byte.
    let mut body = encode(&requests()[3]).unwrap();
    body.push(0);
    stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
    stream.extend_from_slice(&body);
    // A valid frame afterwards.
    encode_frame_into(&mut stream, &requests()[4], MAX_FRAME).unwrap();

    let mut r = FrameReader::new(&stream[..]);
    let err = r.read::<Request>().await.unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
    assert_eq!(err.close_code(), CloseCode::ProtocolViolation);
    let err = r.read::<Request>().await.unwrap_err();
    assert!(
        matches!(&err, WireError::Malformed(m) if m.contains("trailing")),
        "{err:?}"
    );
    assert_eq!(r.read::<Request>().await.unwrap().unwrap(), requests()[4]);
    assert!(r.read::<Request>().await.unwrap().is_none());

    assert!(matches!(
        decode::<Response>(&[0xff; 12]),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(decode::<Event>(&[]), Err(WireError::Malformed(_))));
}

#[tokio::test]
async fn truncated_frames_are_unexpected_eof() {
    let mut full = Vec::new();
    encode_frame_into(&mut full, &requests()[0], MAX_FRAME).unwrap();
    for cut in [1, 2, 3, 4, 5, full.len() - 1] {
        let part = &full[..cut];
        let err = read_frame::<Request, _>(&mut &part[..], MAX_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(err, WireError::UnexpectedEof),
            "cut {cut}: {err:?}"
        );
        let err = FrameReader::new(part).read::<Request>().await.unwrap_err();
        assert!(
            matches!(err, WireError::UnexpectedEof),
            "cut {cut}: {err:?}"
        );
    }
    // A stream that ends before the hello.
    let empty: &[u8] = &[];
    assert!(matches!(
        read_hello(&mut &empty[..]).await,
        Err(WireError::UnexpectedEof)
    ));
    assert!(matches!(
        FrameReader::new(empty).read_hello().await,
        Err(WireError::UnexpectedEof)
    ));
}

#[tokio::test]
async fn version_mismatch_is_detected() {
    // A hello from a future version, same shape.
    let future = Hello {
        version: PROTOCOL_VERSION + 1,
        role: Role::Broker,
    };
    let mut stream = Vec::new();
    write_frame(&mut stream, &future).await.unwrap();
    let err = read_hello(&mut &stream[..]).await.unwrap_err();
    match err {
        WireError::VersionMismatch { ours, theirs } => {
            assert_eq!(ours, PROTOCOL_VERSION);
            assert_eq!(theirs, PROTOCOL_VERSION + 1);
        }
        ref other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert_eq!(err.close_code(), CloseCode::VersionMismatch);

    // A hello from a version whose hello has another shape after the version field
    // (here: bytes that are no `Role`) is still a version mismatch, not Malformed.
    let body = [7u8, 0xee, 0xee, 0xee];
    let mut stream = (body.len() as u32).to_be_bytes().to_vec();
    stream.extend_from_slice(&body);
    let err = FrameReader::new(&stream[..])
        .read_hello()
        .await
        .unwrap_err();
    assert!(
        matches!(err, WireError::VersionMismatch { theirs: 7, .. }),
        "{err:?}"
    );

    // Same version but garbage role: Malformed.
    let body = [PROTOCOL_VERSION as u8, 0xee];
    let mut stream = (body.len() as u32).to_be_bytes().to_vec();
    stream.extend_from_slice(&body);
    let err = read_hello(&mut &stream[..]).await.unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
}

#[test]
fn close_codes_are_stable() {
    let codes: Vec<u32> = CloseCode::ALL.iter().map(|c| c.as_u32()).collect();
    assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    for c in CloseCode::ALL {
        assert_eq!(CloseCode::from_u64(c.as_u32().into()), Some(c));
        assert_eq!(quinn::VarInt::from(c).into_inner(), u64::from(c.as_u32()));
        assert!(!c.reason().is_empty());
    }
    assert_eq!(CloseCode::from_u64(1000), None);
}

/// xorshift64*, enough randomness for a fuzz loop without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = (self.next() % (max_len as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    let seed = std::env::var("QNET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0fc0_ffee);
    eprintln!("QNET_SEED={seed}");
    seed.max(1)
}

fn decode_everything(bytes: &[u8]) {
    let _ = decode::<Hello>(bytes);
    let _ = decode::<Request>(bytes);
    let _ = decode::<Response>(bytes);
    let _ = decode::<Event>(bytes);
    let _ = decode::<Classical>(bytes);
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = XorShift(seed());
    for _ in 0..20_000 {
        decode_everything(&rng.bytes(64));
    }
    // Mutations of valid messages reach deeper into the decoders than pure noise.
    let mut valid: Vec<Vec<u8>> = Vec::new();
    valid.extend(requests().iter().map(|m| encode(m).unwrap()));
    valid.extend(responses().iter().map(|m| encode(m).unwrap()));
    valid.extend(events().iter().map(|m| encode(m).unwrap()));
    for _ in 0..20_000 {
        let mut bytes = valid[(rng.next() % valid.len() as u64) as usize].clone();
        for _ in 0..1 + rng.next() % 3 {
            match rng.next() % 3 {
                0 if !bytes.is_empty() => {
                    let i = (rng.next() % bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << (rng.next() % 8);
                }
                1 if !bytes.is_empty() => {
                    let cut = (rng.next() % bytes.len() as u64) as usize;
                    bytes.truncate(cut);
                }
                _ => bytes.push(rng.next() as u8),
            }
        }
        decode_everything(&bytes);
    }
}

#[tokio::test]
async fn random_streams_never_panic_the_reader() {
    let mut rng = XorShift(seed() ^ 0xabcdef);
    for _ in 0..2_000 {
        let stream = rng.bytes(256);
        let mut r = FrameReader::with_max(&stream[..], 128);
        // Every read consumes input or ends the stream, so this terminates.
        for _ in 0..stream.len() + 1 {
            match r.read::<Request>().await {
                Ok(Some(_)) | Err(WireError::Malformed(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
        let _ = read_hello(&mut &stream[..]).await;
        let _ = read_frame::<Event, _>(&mut &stream[..], 128).await;
    }
}

fn node_admin() -> Vec<qnet_common::wire::NodeRequest> {
    use qnet_common::wire::{CardinalState, NodeRequest, NodeRequestBody};
    [
        NodeRequestBody::RunEpr {
            peer: "bob".into(),
            pairs: 10,
            basis: qnet_common::Basis::X,
        },
        NodeRequestBody::RunTeleport {
            peer: "bob".into(),
            state: CardinalState::MinusI,
            shots: 3,
        },
        NodeRequestBody::Free { qubits: vec![q(1)] },
        NodeRequestBody::Status,
        NodeRequestBody::HoldPairs {
            peer: "bob".into(),
            count: 2,
        },
        NodeRequestBody::Shutdown,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, body)| NodeRequest { id: i as u64, body })
    .collect()
}
