//! The EGP link layer between two ends in one process, under a simulated classical
//! network that delays, reorders, duplicates and drops messages, and a simulated
//! heralding station. Deterministic: every run is a seed (override with `QNET_SEED`;
//! the seed is printed when an assertion fails).
//!
//! Invariants checked after every run:
//! - no pair is reported at one end only: the (sequence number) sets that survive
//!   EXPIREs are equal at both ends, per request;
//! - every request ends: all its pairs (DONE), or an ERR — never a hang;
//! - no request gets more pairs than it asked for;
//! - measure-type pairs measured in the same basis agree (Φ⁺ after the Pauli frame).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use qnet_common::physics::{HeraldedBell, LinkPhysics, Memory};
use qnet_common::{Basis, BellState, QubitId};
use qnet_node::protocols::egp::{Egp, EgpConfig};
use qnet_node::protocols::link::{
    Action, CreateId, CreateRequest, Delivered, ErrorCode, Herald, LinkEvent, LinkLayer,
    MeasureBasis, Origin, RequestType, Time,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn seed(default: u64) -> u64 {
    std::env::var("QNET_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Impairments of the simulated classical channel.
#[derive(Clone, Copy, Debug)]
struct Net {
    delay: Time,
    jitter: Time,
    loss: f64,
    duplicate: f64,
}

const IDEAL_NET: Net = Net {
    delay: 1e-4,
    jitter: 0.0,
    loss: 0.0,
    duplicate: 0.0,
};

fn physics() -> LinkPhysics {
    LinkPhysics {
        p_success: 0.2,
        cycle_time: 1e-4,
        herald_delay: 2e-5,
        fidelity: 0.95,
        bell: HeraldedBell::PsiEither,
    }
}

const PERFECT: Memory = Memory {
    t1: f64::INFINITY,
    t2: f64::INFINITY,
};

fn end(owner: bool, seed: u64) -> Egp {
    Egp::new(EgpConfig {
        owner,
        physics: physics(),
        local_memory: PERFECT,
        remote_memory: PERFECT,
        retransmit: 2e-3,
        quantum: 4,
        aging: 1.0,
        seed,
    })
}

#[derive(Debug)]
enum Input {
    /// A message for end `to`.
    Message { to: usize, payload: Vec<u8> },
    /// A herald for both ends.
    Herald {
        seq: u64,
        label: u64,
        bell: BellState,
        emitted: Time,
    },
    /// End `end`'s attempt label reaches the station.
    Attempt { end: usize, label: Option<u64> },
    /// A measurement result for end `to`.
    Measured { to: usize, seq: u64, outcome: u8 },
}

/// One end's measurement of a pair: basis and raw outcome.
type Measurement = Option<(Basis, u8)>;

/// The two ends, the network between them and the heralding station.
struct Sim {
    now: Time,
    ends: [Egp; 2],
    net: Net,
    rng: StdRng,
    /// Pending inputs by (time, insertion number).
    agenda: BTreeMap<(u64, u64), Input>,
    counter: u64,
    attempts: [Option<u64>; 2],
    /// The station's scheduled success: (herald time, label).
    next_herald: Option<(Time, u64)>,
    seq: u64,
    /// Heralded Bell states and each end's measurement (basis, raw outcome) by seq.
    pairs: HashMap<u64, (BellState, [Measurement; 2])>,
    events: [Vec<LinkEvent>; 2],
    next_qubit: u64,
    freed: Vec<QubitId>,
}

fn key(t: Time) -> u64 {
    (t * 1e9) as u64
}

impl Sim {
    fn new(net: Net, seed: u64) -> Sim {
        Sim {
            now: 0.0,
            ends: [end(true, seed ^ 1), end(false, seed ^ 2)],
            net,
            rng: StdRng::seed_from_u64(seed),
            agenda: BTreeMap::new(),
            counter: 0,
            attempts: [None, None],
            next_herald: None,
            seq: 0,
            pairs: HashMap::new(),
            events: [Vec::new(), Vec::new()],
            next_qubit: 1,
            freed: Vec::new(),
        }
    }

    fn schedule(&mut self, at: Time, input: Input) {
        self.counter += 1;
        self.agenda.insert((key(at), self.counter), input);
    }

    /// Drains everything an end wants to do.
    fn drain(&mut self, i: usize) {
        loop {
            let mut progressed = false;
            while let Some(payload) = self.ends[i].poll_transmit() {
                progressed = true;
                let copies = if self.rng.random::<f64>() < self.net.duplicate {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.rng.random::<f64>() < self.net.loss {
                        continue;
                    }
                    let delay = self.net.delay + self.net.jitter * self.rng.random::<f64>();
                    self.schedule(
                        self.now + delay,
                        Input::Message {
                            to: 1 - i,
                            payload: payload.clone(),
                        },
                    );
                }
            }
            while let Some(action) = self.ends[i].poll_action() {
                progressed = true;
                match action {
                    // The station learns of it after a trip to the broker, so heralds
                    // for the old label can still come (as over a real network).
                    Action::Attempt(label) => {
                        self.schedule(self.now + 2e-4, Input::Attempt { end: i, label });
                    }
                    Action::Correct { .. } => {}
                    Action::Measure {
                        seq,
                        qubit: _,
                        basis,
                    } => {
                        let outcome = self.measure(i, seq, basis);
                        // A broker round trip: more heralds can arrive meanwhile.
                        self.schedule(
                            self.now + 3e-4,
                            Input::Measured {
                                to: i,
                                seq,
                                outcome,
                            },
                        );
                    }
                    Action::Free(q) => self.freed.push(q),
                }
            }
            while let Some(event) = self.ends[i].poll_event() {
                progressed = true;
                self.events[i].push(event);
            }
            if !progressed {
                break;
            }
        }
    }

    /// The station: a success after a geometric number of attempts while both ends
    /// attempt the same label; any change restarts the wait (memoryless).
    fn restation(&mut self) {
        match self.attempts {
            [Some(a), Some(b)] if a == b => {
                if self.next_herald.is_some_and(|(_, l)| l == a) {
                    return;
                }
                let p = physics().p_success;
                let u: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
                let k = (u.ln() / (1.0 - p).ln()).ceil().max(1.0);
                let emitted = self.now + k * physics().cycle_time;
                self.next_herald = Some((emitted + physics().herald_delay, a));
            }
            _ => self.next_herald = None,
        }
    }

    /// Raw outcome of end `i` measuring its half of pair `seq`, correlated with the
    /// other end's as the heralded Bell state says when the bases match.
    fn measure(&mut self, i: usize, seq: u64, basis: Basis) -> u8 {
        let r: u8 = u8::from(self.rng.random::<bool>());
        let (bell, measured) = self
            .pairs
            .get_mut(&seq)
            .expect("measured pair was heralded");
        let outcome = match measured[1 - i] {
            Some((b, o)) if b == basis => {
                o ^ qnet_node::apps::expected_parity(*bell, basis).unwrap()
            }
            _ => r,
        };
        measured[i] = Some((basis, outcome));
        outcome
    }

    fn step(&mut self) -> bool {
        let next_input = self.agenda.keys().next().copied();
        let herald_due = self.next_herald.map(|(t, _)| key(t));
        let timeouts = [self.ends[0].poll_timeout(), self.ends[1].poll_timeout()];
        let timeout = timeouts.iter().flatten().copied().min_by(f64::total_cmp);
        let candidates = [
            next_input.map(|k| k.0),
            herald_due,
            timeout.map(|t| key(t).max(key(self.now))),
        ];
        let Some(t) = candidates.iter().flatten().min().copied() else {
            return false;
        };
        self.now = t as f64 / 1e9;
        if herald_due == Some(t) {
            let (_, label) = self.next_herald.take().unwrap();
            self.seq += 1;
            let bell = if self.rng.random::<bool>() {
                BellState::PsiPlus
            } else {
                BellState::PsiMinus
            };
            self.pairs.insert(self.seq, (bell, [None, None]));
            let emitted = self.now - physics().herald_delay;
            self.schedule(
                self.now,
                Input::Herald {
                    seq: self.seq,
                    label,
                    bell,
                    emitted,
                },
            );
            // Attempts continue back to back.
            self.restation();
            return true;
        }
        if next_input.is_some_and(|k| k.0 == t) {
            let k = next_input.unwrap();
            let input = self.agenda.remove(&k).unwrap();
            match input {
                Input::Message { to, payload } => {
                    self.ends[to].handle_message(self.now, &payload);
                    self.drain(to);
                }
                Input::Herald {
                    seq,
                    label,
                    bell,
                    emitted,
                } => {
                    for i in 0..2 {
                        let q = QubitId(self.next_qubit);
                        self.next_qubit += 1;
                        self.ends[i].handle_herald(
                            self.now,
                            Herald {
                                label,
                                seq,
                                bell,
                                qubit: q,
                                remote: QubitId(0),
                                emitted,
                            },
                        );
                        self.drain(i);
                    }
                }
                Input::Attempt { end, label } => {
                    self.attempts[end] = label;
                    self.restation();
                }
                Input::Measured { to, seq, outcome } => {
                    self.ends[to].handle_measured(self.now, seq, outcome);
                    self.drain(to);
                }
            }
            return true;
        }
        // Wake with the exact time asked for: rounding it down to the agenda's
        // nanoseconds would wake the protocol just before its own deadline.
        if let Some(x) = timeout {
            self.now = self.now.max(x);
        }
        for (i, due) in timeouts.iter().enumerate() {
            if due.is_some_and(|x| x <= self.now) {
                self.ends[i].handle_timeout(self.now);
                self.drain(i);
            }
        }
        true
    }

    fn create(&mut self, i: usize, request: CreateRequest) -> Result<CreateId, ErrorCode> {
        let r = self.ends[i].create(self.now, request).map_err(|e| e.code);
        self.drain(i);
        r
    }

    fn run_until(&mut self, until: Time) {
        let (mut last, mut same) = (self.now, 0u32);
        while self.now < until {
            if !self.step() {
                break;
            }
            // A protocol that keeps asking to be woken without time moving on is
            // live-locked: fail rather than spin.
            if self.now == last {
                same += 1;
                assert!(same < 100_000, "no progress at t = {}", self.now);
            } else {
                (last, same) = (self.now, 0);
            }
        }
    }
}

/// Per request id (as the requester knows it): OKs (seq → delivered) and the
/// terminal event, collected at one end.
#[derive(Default, Debug)]
struct Outcome {
    oks: BTreeMap<u64, Delivered>,
    expired: BTreeSet<u64>,
    done: bool,
    errors: Vec<ErrorCode>,
}

fn outcomes(events: &[LinkEvent]) -> HashMap<CreateId, Outcome> {
    let mut map: HashMap<CreateId, Outcome> = HashMap::new();
    for e in events {
        match e {
            LinkEvent::Ack(_) => {}
            LinkEvent::Ok(ok) => {
                let o = map.entry(ok.create_id).or_default();
                assert!(
                    o.oks.insert(ok.seq, ok.delivered).is_none(),
                    "seq {} twice",
                    ok.seq
                );
            }
            LinkEvent::Err(err) => {
                let o = map.entry(err.create_id).or_default();
                o.errors.push(err.code);
                if err.code == ErrorCode::Expire {
                    o.expired.extend(&err.seqs);
                }
            }
            LinkEvent::Done(id) => map.entry(*id).or_default().done = true,
        }
    }
    map
}

/// The request id as the other end knows it.
fn mirror(id: CreateId) -> CreateId {
    CreateId {
        origin: match id.origin {
            Origin::Local => Origin::Remote,
            Origin::Remote => Origin::Local,
        },
        id: id.id,
    }
}

fn request(number: u32, kind: RequestType, max_time: Time, priority: u8) -> CreateRequest {
    CreateRequest {
        number,
        min_fidelity: 0.5,
        max_time,
        purpose_id: 7,
        priority,
        kind,
    }
}

/// Checks the invariants and returns (OK'd-and-not-expired pairs, requests done).
fn check(sim: &Sim, requests: &[(usize, CreateId, u32)], seed: u64) -> (usize, usize) {
    let at = [outcomes(&sim.events[0]), outcomes(&sim.events[1])];
    let (mut kept, mut done) = (0, 0);
    for &(origin_end, id, number) in requests {
        let here = at[origin_end].get(&id);
        let there = at[1 - origin_end].get(&mirror(id));
        let valid = |o: Option<&Outcome>| -> BTreeSet<u64> {
            o.map(|o| {
                o.oks
                    .keys()
                    .filter(|s| !o.expired.contains(s))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
        };
        // An EXPIRE withdraws only pairs that end reported OK.
        for o in [here, there].into_iter().flatten() {
            assert!(
                o.expired.iter().all(|s| o.oks.contains_key(s)),
                "seed {seed}: {id:?} withdrew pairs it never delivered"
            );
        }
        let (a, b) = (valid(here), valid(there));
        assert_eq!(
            a, b,
            "seed {seed}: request {id:?} has pairs at one end only"
        );
        assert!(
            a.len() <= number as usize,
            "seed {seed}: {id:?} got {} > {number}",
            a.len()
        );
        let here = here.unwrap_or_else(|| panic!("seed {seed}: request {id:?} produced nothing"));
        assert!(
            here.done || !here.errors.is_empty(),
            "seed {seed}: request {id:?} never ended ({} of {number} pairs)",
            a.len()
        );
        if here.done {
            done += 1;
            assert_eq!(a.len(), number as usize, "seed {seed}: {id:?} done early");
        }
        kept += a.len();
        // Same-basis measure-type pairs agree as Φ⁺ does.
        if let Some(there) = at[1 - origin_end].get(&mirror(id)) {
            for seq in &a {
                if let (
                    Some(Delivered::Measured {
                        outcome: x,
                        basis: bx,
                    }),
                    Some(Delivered::Measured {
                        outcome: y,
                        basis: by,
                    }),
                ) = (at[origin_end][&id].oks.get(seq), there.oks.get(seq))
                    && bx == by
                {
                    let parity = qnet_node::apps::expected_parity(BellState::PhiPlus, *bx).unwrap();
                    assert_eq!(x ^ y, parity, "seed {seed}: pair {seq} in {bx:?}");
                }
            }
        }
    }
    (kept, done)
}

#[test]
fn requests_from_both_ends_complete_on_a_clean_network() {
    let s = seed(1);
    let mut sim = Sim::new(IDEAL_NET, s);
    let mut reqs = Vec::new();
    for (i, kind) in [
        (0, RequestType::Keep),
        (1, RequestType::Keep),
        (0, RequestType::Measure(MeasureBasis::Fixed(Basis::X))),
        (1, RequestType::Measure(MeasureBasis::Fixed(Basis::Y))),
        (1, RequestType::Measure(MeasureBasis::RandomZX)),
    ] {
        let id = sim.create(i, request(50, kind, 10.0, 1)).unwrap();
        reqs.push((i, id, 50));
    }
    sim.run_until(10.0);
    let (kept, done) = check(&sim, &reqs, s);
    assert_eq!((kept, done), (250, 5), "seed {s}");
    // Nothing was withdrawn on a clean network.
    assert!(sim.freed.is_empty(), "seed {s}: freed {:?}", sim.freed);
}

#[test]
fn consistent_under_loss_duplication_delay_and_reordering() {
    for s in seed(10)..seed(10) + 50 {
        let net = Net {
            delay: 5e-4,
            jitter: 2e-3, // far more than the gaps between messages: heavy reordering
            loss: 0.3,
            duplicate: 0.1,
        };
        let mut sim = Sim::new(net, s);
        let mut reqs = Vec::new();
        let mut rng = StdRng::seed_from_u64(s);
        for k in 0..8 {
            let i = rng.random_range(0..2usize);
            let kind = match k % 3 {
                0 => RequestType::Keep,
                1 => RequestType::Measure(MeasureBasis::Fixed(Basis::Z)),
                _ => RequestType::Measure(MeasureBasis::RandomZX),
            };
            // Some requests have deadlines too short to finish under this loss.
            let max_time = if k % 4 == 3 { 0.02 } else { 5.0 };
            let number = rng.random_range(1..40);
            let priority = rng.random_range(0..3);
            let id = sim
                .create(i, request(number, kind, max_time, priority))
                .unwrap();
            reqs.push((i, id, number));
            sim.run_until(sim.now + 0.005);
        }
        sim.run_until(20.0);
        let (kept, done) = check(&sim, &reqs, s);
        assert!(
            done >= 4,
            "seed {s}: only {done} of 8 requests completed ({kept} pairs)"
        );
    }
}

#[test]
fn timeout_when_max_time_passes() {
    let s = seed(3);
    let mut sim = Sim::new(IDEAL_NET, s);
    // 10,000 pairs at ~2,000 per second cannot finish in 0.1 s.
    let id = sim
        .create(1, request(10_000, RequestType::Keep, 0.1, 0))
        .unwrap();
    sim.run_until(1.0);
    let at = outcomes(&sim.events[1]);
    assert_eq!(at[&id].errors, vec![ErrorCode::Timeout], "seed {s}");
    assert!(!at[&id].done);
    check(&sim, &[(1, id, 10_000)], s);
    // The link stops attempting once nothing is queued.
    assert_eq!(sim.attempts, [None, None], "seed {s}");
}

#[test]
fn unsupported_and_bad_requests_fail_at_once() {
    let mut sim = Sim::new(IDEAL_NET, 4);
    let too_good = CreateRequest {
        min_fidelity: 0.99,
        ..request(1, RequestType::Keep, 1.0, 0)
    };
    assert_eq!(sim.create(0, too_good), Err(ErrorCode::Unsupported));
    // Below one attempt cycle plus the herald flight.
    let too_quick = request(1, RequestType::Keep, 1e-5, 0);
    assert_eq!(sim.create(1, too_quick), Err(ErrorCode::Unsupported));
    assert_eq!(
        sim.create(0, request(0, RequestType::Keep, 1.0, 0)),
        Err(ErrorCode::Create)
    );
}

#[test]
fn rejected_purpose_at_either_end() {
    let s = seed(5);
    let mut sim = Sim::new(IDEAL_NET, s);
    sim.ends[0].set_accepted_purposes(Some(vec![1]));
    sim.ends[1].set_accepted_purposes(Some(vec![1]));
    let from_follower = sim
        .create(1, request(3, RequestType::Keep, 1.0, 0))
        .unwrap();
    let from_owner = sim
        .create(0, request(3, RequestType::Keep, 1.0, 0))
        .unwrap();
    sim.run_until(1.0);
    assert_eq!(
        outcomes(&sim.events[1])[&from_follower].errors,
        vec![ErrorCode::Rejected]
    );
    assert_eq!(
        outcomes(&sim.events[0])[&from_owner].errors,
        vec![ErrorCode::Rejected]
    );
    assert_eq!(
        sim.seq, 0,
        "seed {s}: no pair may be made for a refused request"
    );
}

#[test]
fn peer_lost_expires_delivered_pairs() {
    let s = seed(6);
    let mut sim = Sim::new(IDEAL_NET, s);
    let id = sim
        .create(0, request(1000, RequestType::Keep, 100.0, 0))
        .unwrap();
    sim.run_until(0.05);
    let delivered = outcomes(&sim.events[0])[&id].oks.len();
    assert!(delivered > 0, "seed {s}");
    sim.ends[0].handle_peer_lost(sim.now);
    sim.drain(0);
    let at = outcomes(&sim.events[0]);
    // One EXPIRE withdraws the delivered pairs, a second ends the request.
    assert_eq!(at[&id].errors, vec![ErrorCode::Expire, ErrorCode::Expire]);
    assert_eq!(
        at[&id].expired.len(),
        delivered,
        "every delivered pair is withdrawn"
    );
    let qubits: usize = sim.events[0]
        .iter()
        .filter_map(|e| match e {
            LinkEvent::Err(err) => Some(err.qubits.len()),
            _ => None,
        })
        .sum();
    assert_eq!(qubits, delivered, "the qubits to free are named");
    // The stop reaches the station after its trip to the broker.
    sim.run_until(sim.now + 1e-3);
    assert_eq!(sim.attempts[0], None);
}

#[test]
fn a_low_priority_request_does_not_starve() {
    let s = seed(9);
    let mut sim = Sim::new(IDEAL_NET, s);
    // A stream of urgent requests that alone would keep the link busy for 10 s…
    let mut urgent = Vec::new();
    for _ in 0..10 {
        urgent.push(
            sim.create(0, request(2_000, RequestType::Keep, 100.0, 0))
                .unwrap(),
        );
    }
    // …and one of the lowest class, queued behind them.
    let low = sim
        .create(1, request(20, RequestType::Keep, 100.0, 3))
        .unwrap();
    sim.run_until(5.0);
    let at = outcomes(&sim.events[1]);
    // Aging raises it one class per second of waiting: it is served after about 3 s
    // even though urgent work remains.
    assert!(
        at.get(&low).is_some_and(|o| o.done),
        "seed {s}: the low-priority request starved"
    );
    let urgent_left = outcomes(&sim.events[0])
        .iter()
        .filter(|(id, o)| urgent.contains(id) && !o.done)
        .count();
    assert!(
        urgent_left > 0,
        "seed {s}: the test needs urgent work left over"
    );
}

#[test]
fn priorities_are_served_first_and_equal_priorities_share() {
    let s = seed(8);
    let mut sim = Sim::new(IDEAL_NET, s);
    let low = sim
        .create(0, request(40, RequestType::Keep, 100.0, 5))
        .unwrap();
    let a = sim
        .create(0, request(40, RequestType::Keep, 100.0, 1))
        .unwrap();
    let b = sim
        .create(1, request(40, RequestType::Keep, 100.0, 1))
        .unwrap();
    sim.run_until(100.0);
    let at0 = outcomes(&sim.events[0]);
    let at1 = outcomes(&sim.events[1]);
    let last = |o: &Outcome| *o.oks.keys().last().unwrap();
    let first = |o: &Outcome| *o.oks.keys().next().unwrap();
    // The low-priority request starts only after both priority-1 requests are done.
    assert!(
        first(&at0[&low]) > last(&at0[&a]).max(last(&at1[&b])),
        "seed {s}"
    );
    // The two priority-1 requests interleave (round-robin in quanta of 4).
    assert!(first(&at1[&b]) < last(&at0[&a]), "seed {s}: no sharing");
    check(&sim, &[(0, low, 40), (0, a, 40), (1, b, 40)], s);
}
