//! The broker as every link's heralding station ([`qnet_broker::links`]), driven
//! in-process with a simulated emulated-time clock: rates of every link model, the
//! fidelity of a delivered pair at its herald, the label, stop and memory rules, the
//! heralded Bell states, ordering and determinism.
//!
//! Exact checks go through the engine's oracle to [`EXACT`] = 1e-9. Statistical
//! checks use a fixed seed (override with `QNET_SEED`; every assertion prints the seed)
//! and state their sample size N, the standard error σ and the tolerance
//! ([`K_SIGMA`] = 5σ: a false alarm once in ~3.5 million runs per check).
//!
//! Rates: with attempts back to back, every attempt succeeds independently with p,
//! so the number of heralds in a window of n attempt cycles is Binomial(n, p) —
//! mean n·p, σ = √(n·p·(1 − p)) — as long as memory never fills (the tests free each
//! pair at its herald).

use qnet_broker::engine::{Engine, EngineConfig, NodeParams};
use qnet_broker::links::{Herald, LinkError, Links, attempts_until_success};
use qnet_common::physics::{LinkPhysics, Memory, decayed_fidelity};
use qnet_common::topology::Topology;
use qnet_common::{BellState, NodeId};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Tolerance of exact (oracle) checks.
const EXACT: f64 = 1e-9;
/// Tolerance of statistical checks, in standard errors.
const K_SIGMA: f64 = 5.0;
/// Expected heralds per rate measurement: σ/N ≈ 0.7 % at most, so 5σ ≈ 3.5 %.
const RATE_SAMPLE: f64 = 20_000.0;

const ALICE: usize = 0;
const BOB: usize = 1;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// The seed of a statistical test: `default`, or `QNET_SEED` if set.
fn seed(default: u64) -> u64 {
    match std::env::var("QNET_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .expect("QNET_SEED must be an unsigned integer"),
        Err(_) => default,
    }
}

/// Asserts that a statistical estimate lies within `K_SIGMA` standard errors.
fn assert_stat(what: &str, seed: u64, observed: f64, expected: f64, sigma: f64) {
    let dev = (observed - expected).abs();
    assert!(
        dev <= K_SIGMA * sigma,
        "{what}: observed {observed:.6}, expected {expected:.6}, off by {:.2}σ \
         (σ = {sigma:.3e}, tolerance {K_SIGMA}σ), seed {seed} (override with QNET_SEED)",
        dev / sigma
    );
}

#[track_caller]
fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= EXACT,
        "{what}: got {got:.12}, want {want:.12} (|Δ| = {:.3e})",
        (got - want).abs()
    );
}

/// Alice and Bob joined by one link with the `link` settings; `alice` and `bob` are
/// extra node settings (memory, T1/T2).
fn pair_topology(link: &str, alice: &str, bob: &str) -> Topology {
    let text = format!(
        "[network]\nname = \"links\"\nseed = 7\n\n\
         [[nodes]]\nname = \"alice\"\n{alice}\n\n\
         [[nodes]]\nname = \"bob\"\n{bob}\n\n\
         [[links]]\na = \"alice\"\nb = \"bob\"\n{link}\n"
    );
    Topology::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A topology's engine and link stations, and the emulated time.
struct Sim {
    topology: Topology,
    engine: Engine<StdRng>,
    links: Links<StdRng>,
    now: f64,
}

impl Sim {
    fn new(topology: Topology, seed: u64) -> Sim {
        let mut engine = Engine::new(EngineConfig::default(), StdRng::seed_from_u64(seed));
        for n in &topology.nodes {
            engine
                .add_node(
                    n.id,
                    NodeParams {
                        t1: n.t1,
                        t2: n.t2,
                        gate_error: n.gate_error,
                        readout_error: n.readout_error,
                    },
                )
                .unwrap();
        }
        let links = Links::new(&topology, StdRng::seed_from_u64(seed ^ 0x5eed));
        Sim {
            topology,
            engine,
            links,
            now: 0.0,
        }
    }

    fn physics(&self, link: usize) -> LinkPhysics {
        *self.links.physics(link).unwrap()
    }

    fn memory(&self, node: usize) -> Memory {
        Memory::from(&self.topology.nodes[node])
    }

    /// Both ends of link 0 attempt for `label` from now on.
    fn attempt_both(&mut self, label: u64) {
        let (a, b) = (self.topology.links[0].a, self.topology.links[0].b);
        self.links.set_attempt(self.now, a, b, Some(label)).unwrap();
        self.links.set_attempt(self.now, b, a, Some(label)).unwrap();
    }

    /// Advances to `until`, waking at every herald time as the actor does, and
    /// passes each herald to `f` at its herald time.
    fn run(&mut self, until: f64, mut f: impl FnMut(&mut Sim, Herald)) {
        while let Some(t) = self.links.poll_timeout().filter(|&t| t <= until) {
            assert!(t >= self.now, "timeout {t} before now {}", self.now);
            self.now = t;
            let heralds = self.links.handle_timeout(t, &mut self.engine);
            // Empty when a memory was full at the herald: the link now waits.
            for h in heralds {
                f(self, h);
            }
        }
        self.now = until;
        for h in self.links.handle_timeout(until, &mut self.engine) {
            f(self, h);
        }
    }

    /// Advances to `until`, freeing every pair at its herald; returns the heralds.
    fn run_consuming(&mut self, until: f64) -> Vec<Herald> {
        let mut out = Vec::new();
        self.run(until, |sim, h| {
            sim.free(&h);
            out.push(h);
        });
        out
    }

    /// Advances to `until`, keeping every pair; returns the heralds.
    fn run_keeping(&mut self, until: f64) -> Vec<Herald> {
        let mut out = Vec::new();
        self.run(until, |_, h| out.push(h));
        out
    }

    fn free(&mut self, h: &Herald) {
        let t = h.heralded;
        self.engine.free(t, NodeId(h.a as u32), h.qubit_a).unwrap();
        self.engine.free(t, NodeId(h.b as u32), h.qubit_b).unwrap();
    }
}

/// Measures link 0's rate over a window of about [`RATE_SAMPLE`] expected heralds and
/// checks it against `LinkPhysics::rate()` within 5σ. Returns (rate, σ of the rate).
fn check_rate(what: &str, link: &str, seed: u64) -> (f64, f64) {
    let mut sim = Sim::new(pair_topology(link, "", ""), seed);
    let physics = sim.physics(0);
    let window = RATE_SAMPLE / physics.rate();
    sim.attempt_both(1);
    let heralds = sim.run_consuming(window);
    // The heralds counted are those of the first n attempts whose herald arrives
    // within the window: Binomial(n, p).
    let n = ((window - physics.herald_delay) / physics.cycle_time).floor();
    let p = physics.p_success;
    let effective = n * physics.cycle_time;
    let rate = heralds.len() as f64 / effective;
    let sigma = (n * p * (1.0 - p)).sqrt() / effective;
    println!(
        "{what}: p = {p:.5}, cycle = {:.1} µs, N = {}, rate {rate:.2}/s, expected {:.2}/s, \
         σ = {sigma:.2}/s",
        physics.cycle_time * 1e6,
        heralds.len(),
        physics.rate()
    );
    assert!(
        heralds.len() >= 2_000,
        "{what}: only {} heralds",
        heralds.len()
    );
    assert_stat(&format!("{what}: rate"), seed, rate, physics.rate(), sigma);
    for pair in heralds.windows(2) {
        assert!(pair[1].seq == pair[0].seq + 1 && pair[1].emitted > pair[0].emitted);
    }
    (rate, sigma)
}

// ---------------------------------------------------------------------------------
// Rates
// ---------------------------------------------------------------------------------

/// Each model at 5 and 50 km, N ≈ 20,000 heralds each (σ ≈ √(N(1−p)), 5σ).
#[test]
fn rates_match_the_link_models() {
    let s = seed(11);
    // A different seed per case: with one seed, the inverse-CDF draws of different
    // p would be coupled and the cases would not be independent checks.
    let mut case = 0;
    for km in [5.0, 50.0] {
        let common =
            format!("length_km = {km}\ndetector_efficiency = 0.9\nemission_efficiency = 0.8");
        for model in ["heralded-double-click", "heralded-single-click", "source"] {
            check_rate(
                &format!("{model} {km} km"),
                &format!("model = \"{model}\"\n{common}"),
                s.wrapping_add(case),
            );
            case += 1;
        }
    }
}

/// The ideal model uses the same machinery with p = 1: one pair per cycle, exactly,
/// heralded at emission (no herald delay).
#[test]
fn ideal_links_herald_every_cycle() {
    let mut sim = Sim::new(
        pair_topology(
            "model = \"ideal\"\nlength_km = 2.0\nfidelity = 0.97",
            "",
            "",
        ),
        seed(3),
    );
    let physics = sim.physics(0);
    assert_eq!(physics.p_success, 1.0);
    sim.attempt_both(5);
    let heralds = sim.run_consuming(1000.5 * physics.cycle_time);
    assert_eq!(heralds.len(), 1000);
    for (i, h) in heralds.iter().enumerate() {
        let want = (i + 1) as f64 * physics.cycle_time;
        assert!(
            (h.emitted - want).abs() <= 1e-12,
            "{i}: {} vs {want}",
            h.emitted
        );
        assert_eq!(h.heralded, h.emitted);
        assert_eq!(h.bell, BellState::PhiPlus);
        assert_eq!((h.seq, h.label), (i as u64 + 1, 5));
    }
}

/// The geometric sampler itself: mean 1/p over N = 200,000 draws, σ = √(1−p)/(p√N).
#[test]
fn attempts_are_geometric() {
    let s = seed(5);
    let mut rng = StdRng::seed_from_u64(s);
    assert_eq!(attempts_until_success(0.0, &mut rng), None);
    assert_eq!(attempts_until_success(1.0, &mut rng), Some(1.0));
    for p in [0.9, 0.3, 1e-3] {
        let n = 200_000;
        let mut sum = 0.0;
        let mut ones = 0;
        for _ in 0..n {
            let k = attempts_until_success(p, &mut rng).unwrap();
            assert!(k >= 1.0 && k.fract() == 0.0, "k = {k}");
            sum += k;
            ones += usize::from(k == 1.0);
        }
        let sigma = (1.0 - p).sqrt() / p / (n as f64).sqrt();
        assert_stat(
            &format!("mean k, p = {p}"),
            s,
            sum / n as f64,
            1.0 / p,
            sigma,
        );
        // P(k = 1) = p.
        let sigma = (p * (1.0 - p) / n as f64).sqrt();
        assert_stat(
            &format!("P(k = 1), p = {p}"),
            s,
            ones as f64 / n as f64,
            p,
            sigma,
        );
    }
}

// ---------------------------------------------------------------------------------
// Fidelity at the herald
// ---------------------------------------------------------------------------------

/// A pair's oracle fidelity at its herald is the Werner fidelity decayed over the
/// herald delay (the pair is created at emission), exactly, for both heralded Bell
/// states and two different memories.
#[test]
fn fidelity_at_the_herald_includes_the_flight() {
    for (model, extra) in [
        ("heralded-double-click", "visibility = 0.9"),
        ("heralded-single-click", ""),
    ] {
        let mut sim = Sim::new(
            pair_topology(
                &format!("model = {model:?}\nlength_km = 50.0\n{extra}"),
                "t2 = \"200us\"",
                "t1 = \"1ms\"\nt2 = \"500us\"",
            ),
            seed(17),
        );
        let physics = sim.physics(0);
        assert!(physics.herald_delay > 1e-4, "{}", physics.herald_delay);
        let (ma, mb) = (sim.memory(ALICE), sim.memory(BOB));
        sim.attempt_both(1);
        let mut seen = [0; 2];
        let mut checked = 0;
        sim.run(2_000.0 / physics.rate(), |sim, h| {
            assert_close("herald delay", h.heralded - h.emitted, physics.herald_delay);
            let want = decayed_fidelity(physics.fidelity, h.bell, physics.herald_delay, ma, mb);
            let got = sim
                .engine
                .fidelity(h.heralded, h.qubit_a, h.qubit_b, h.bell)
                .unwrap();
            assert_close(&format!("{model}: fidelity of {:?}", h.bell), got, want);
            assert!(got < physics.fidelity - 1e-3, "memory noise is visible");
            seen[usize::from(h.bell == BellState::PsiMinus)] += 1;
            checked += 1;
            sim.free(&h);
        });
        assert!(checked >= 1_000, "{checked}");
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    }
}

/// Single-click: four times the bright-state population gives four times the rate
/// (p = 2·α_b·η·√T, well below 1 here) and F = 1 − α_b. N ≈ 20,000 per rate; the
/// ratio's σ from both rates' σ; 5σ.
#[test]
fn bright_state_trades_fidelity_for_rate() {
    let s = seed(23);
    let link = |alpha: f64| {
        format!("model = \"heralded-single-click\"\nlength_km = 20.0\nbright_state = {alpha}")
    };
    let (low, low_sigma) = check_rate("α = 0.05", &link(0.05), s);
    let (high, high_sigma) = check_rate("α = 0.2", &link(0.2), s + 1);
    let ratio = high / low;
    let sigma = ratio * ((low_sigma / low).powi(2) + (high_sigma / high).powi(2)).sqrt();
    assert_stat("rate(α = 0.2) / rate(α = 0.05)", s, ratio, 4.0, sigma);

    let mut fidelities = Vec::new();
    for alpha in [0.05, 0.2] {
        let mut sim = Sim::new(pair_topology(&link(alpha), "", ""), s);
        sim.attempt_both(1);
        let physics = sim.physics(0);
        let h = sim.run_keeping(100.0 / physics.rate())[0];
        let f = sim
            .engine
            .fidelity(h.heralded, h.qubit_a, h.qubit_b, h.bell)
            .unwrap();
        assert_close(&format!("F at α = {alpha}"), f, 1.0 - alpha);
        fidelities.push(f);
    }
    assert!(fidelities[1] < fidelities[0]);
}

// ---------------------------------------------------------------------------------
// Bell states
// ---------------------------------------------------------------------------------

/// Double-click heralds Ψ⁺ and Ψ⁻ half each: N ≈ 4,000, σ = √(¼/N) ≈ 0.008, 5σ. Every
/// pair is the announced state: with ideal memories its oracle fidelity with it is
/// the link's F and with the other Ψ state (1 − F)/3.
#[test]
fn double_click_heralds_both_psi_states() {
    let s = seed(29);
    let mut sim = Sim::new(
        pair_topology(
            "model = \"heralded-double-click\"\nlength_km = 5.0\nvisibility = 0.96",
            "",
            "",
        ),
        s,
    );
    let physics = sim.physics(0);
    sim.attempt_both(9);
    let mut plus = 0usize;
    let mut total = 0usize;
    sim.run(4_000.0 / physics.rate(), |sim, h| {
        let other = match h.bell {
            BellState::PsiPlus => {
                plus += 1;
                BellState::PsiMinus
            }
            BellState::PsiMinus => BellState::PsiPlus,
            b => panic!("double-click heralded {b:?}"),
        };
        total += 1;
        let f = sim
            .engine
            .fidelity(h.heralded, h.qubit_a, h.qubit_b, h.bell)
            .unwrap();
        assert_close("fidelity with the heralded state", f, physics.fidelity);
        let g = sim
            .engine
            .fidelity(h.heralded, h.qubit_a, h.qubit_b, other)
            .unwrap();
        assert_close(
            "fidelity with the other Ψ",
            g,
            (1.0 - physics.fidelity) / 3.0,
        );
        sim.free(&h);
    });
    assert!(total >= 2_000, "{total}");
    let sigma = (0.25 / total as f64).sqrt();
    assert_stat("fraction of Ψ⁺", s, plus as f64 / total as f64, 0.5, sigma);
}

// ---------------------------------------------------------------------------------
// Who attempts
// ---------------------------------------------------------------------------------

const SHORT_DOUBLE_CLICK: &str = "model = \"heralded-double-click\"\nlength_km = 5.0";

/// Different labels at the two ends give nothing; agreeing on one starts heralds for
/// it.
#[test]
fn mismatched_labels_give_no_heralds() {
    let mut sim = Sim::new(pair_topology(SHORT_DOUBLE_CLICK, "", ""), seed(31));
    let rate = sim.physics(0).rate();
    sim.links.set_attempt(0.0, ALICE, BOB, Some(1)).unwrap();
    sim.links.set_attempt(0.0, BOB, ALICE, Some(2)).unwrap();
    assert_eq!(sim.links.attempting(0), None);
    assert_eq!(sim.links.poll_timeout(), None);
    assert!(sim.run_consuming(1_000.0 / rate).is_empty());

    // Only one end attempting gives nothing either.
    sim.links.set_attempt(sim.now, BOB, ALICE, None).unwrap();
    assert!(sim.run_consuming(sim.now + 1_000.0 / rate).is_empty());

    let start = sim.now;
    sim.links.set_attempt(start, BOB, ALICE, Some(1)).unwrap();
    assert_eq!(sim.links.attempting(0), Some(1));
    let heralds = sim.run_consuming(start + 1_000.0 / rate);
    assert!(heralds.len() > 500, "{}", heralds.len());
    assert!(heralds.iter().all(|h| h.label == 1 && h.emitted > start));
}

/// One end stopping discards the pending success: nothing is heralded after the stop,
/// even a success already in flight. Repeating the current label changes nothing.
#[test]
fn stopping_stops_heralds() {
    let mut sim = Sim::new(pair_topology(SHORT_DOUBLE_CLICK, "", ""), seed(37));
    let rate = sim.physics(0).rate();
    sim.attempt_both(4);
    assert!(sim.run_consuming(100.0 / rate).len() > 50);

    let pending = sim.links.poll_timeout().unwrap();
    sim.links.set_attempt(sim.now, ALICE, BOB, Some(4)).unwrap();
    assert_eq!(
        sim.links.poll_timeout(),
        Some(pending),
        "same label, same schedule"
    );

    let stop = sim.now;
    sim.links.set_attempt(stop, BOB, ALICE, None).unwrap();
    assert_eq!(sim.links.poll_timeout(), None);
    assert!(sim.run_consuming(stop + 1_000.0 / rate).is_empty());

    // A lost node stops its links too.
    sim.attempt_both(4);
    assert!(!sim.run_consuming(sim.now + 100.0 / rate).is_empty());
    sim.links.node_lost(ALICE);
    assert_eq!(sim.links.attempting(0), None);
    assert!(sim.run_consuming(sim.now + 1_000.0 / rate).is_empty());
}

/// With Bob's memory full no pair is made and the link waits; freeing a qubit resumes
/// it from that moment.
#[test]
fn full_memory_blocks_until_a_qubit_is_freed() {
    let mut sim = Sim::new(
        pair_topology(SHORT_DOUBLE_CLICK, "", "memory_qubits = 3"),
        seed(41),
    );
    let physics = sim.physics(0);
    sim.attempt_both(2);
    let kept = sim.run_keeping(1_000.0 / physics.rate());
    assert_eq!(kept.len(), 3, "Bob holds 3 qubits");
    assert!(sim.links.waiting_for_memory(0));
    assert_eq!(sim.links.poll_timeout(), None);
    assert!(
        sim.run_keeping(sim.now + 1_000.0 / physics.rate())
            .is_empty()
    );

    // Bob frees one qubit; Alice's memory (8) still has room.
    let freed_at = sim.now;
    sim.engine
        .free(freed_at, NodeId(BOB as u32), kept[0].qubit_b)
        .unwrap();
    assert!(
        sim.links
            .handle_timeout(freed_at, &mut sim.engine)
            .is_empty()
    );
    assert!(!sim.links.waiting_for_memory(0));
    let more = sim.run_keeping(freed_at + 1_000.0 / physics.rate());
    assert_eq!(more.len(), 1, "one free qubit, one pair");
    assert!(more[0].emitted >= freed_at + physics.cycle_time - 1e-12);
    assert_eq!(more[0].seq, 4);
    assert!(sim.links.waiting_for_memory(0));

    // A label change while waiting ends the wait without a herald.
    sim.links.set_attempt(sim.now, ALICE, BOB, Some(3)).unwrap();
    assert!(!sim.links.waiting_for_memory(0));
}

#[test]
fn attempts_need_a_link() {
    let text = "[network]\nname = \"line\"\n\
                [[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[nodes]]\nname = \"c\"\n\
                [[links]]\na = \"a\"\nb = \"b\"\n[[links]]\na = \"b\"\nb = \"c\"\n";
    let topology = Topology::parse(text, "test.toml").unwrap();
    let mut links = Links::new(&topology, StdRng::seed_from_u64(1));
    assert_eq!(
        links.set_attempt(0.0, 0, 2, Some(1)),
        Err(LinkError::NotNeighbours { a: 0, b: 2 })
    );
    assert_eq!(
        links.set_attempt(0.0, 1, 1, Some(1)),
        Err(LinkError::NotNeighbours { a: 1, b: 1 })
    );
    assert_eq!(
        links.set_attempt(0.0, 0, 9, Some(1)),
        Err(LinkError::UnknownNode { node: 9 })
    );
    assert_eq!(links.link_index(2, 1), Some(1));
    assert_eq!(links.link_index(1, 2), Some(1));
    assert!(links.set_attempt(0.0, 2, 1, Some(1)).is_ok());
}

// ---------------------------------------------------------------------------------
// Ordering and determinism
// ---------------------------------------------------------------------------------

/// A chain with links of different lengths: one late `handle_timeout` gives every
/// herald in herald-time order, and exactly the heralds that stepping from timeout to
/// timeout gives (same seed, same draws).
#[test]
fn heralds_come_in_time_order_however_often_the_station_is_polled() {
    let text = "[network]\nname = \"chain\"\n\
                [defaults.node]\nmemory_qubits = 100000\n\
                [defaults.link]\nmodel = \"heralded-double-click\"\n\
                [[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n\
                [[nodes]]\nname = \"c\"\n[[nodes]]\nname = \"d\"\n\
                [[links]]\na = \"a\"\nb = \"b\"\nlength_km = 3.0\n\
                [[links]]\na = \"b\"\nb = \"c\"\nlength_km = 11.0\n\
                [[links]]\na = \"c\"\nb = \"d\"\nlength_km = 7.0\n";
    let topology = Topology::parse(text, "test.toml").unwrap();
    let s = seed(43);
    let heralds = |step: bool| {
        let mut sim = Sim::new(topology.clone(), s);
        for (a, b) in [(0, 1), (1, 2), (2, 3)] {
            sim.links.set_attempt(0.0, a, b, Some(7)).unwrap();
            sim.links.set_attempt(0.0, b, a, Some(7)).unwrap();
        }
        if step {
            sim.run_keeping(0.05)
        } else {
            sim.links.handle_timeout(0.05, &mut sim.engine)
        }
    };
    let batch = heralds(false);
    assert!(batch.len() > 1_000, "{}", batch.len());
    assert_eq!(batch, heralds(true));
    for w in batch.windows(2) {
        assert!(
            (w[0].heralded, w[0].link) < (w[1].heralded, w[1].link),
            "{w:?}"
        );
    }
    for link in 0..3 {
        let n = batch.iter().filter(|h| h.link == link).count() as u64;
        assert!(n > 100);
        assert_eq!(batch.iter().rfind(|h| h.link == link).unwrap().seq, n);
    }
}

// ---------------------------------------------------------------------------------
// The actor as heralding station (in-process, real wall clock)
// ---------------------------------------------------------------------------------

mod actor {
    use std::time::Duration;

    use qnet_broker::actor::{Actor, Cmd, Peer};
    use qnet_common::NodeId;
    use qnet_common::topology::Topology;
    use qnet_common::wire::{ErrorBody, Event, Request, RequestBody, Response, ResponseBody};
    use tokio::sync::{mpsc, watch};

    /// Sends `body` as `peer` and waits for the answer.
    async fn ask(
        tx: &mpsc::UnboundedSender<Cmd>,
        peer: Peer,
        body: RequestBody,
    ) -> Result<ResponseBody, ErrorBody> {
        let (reply, mut rx) = mpsc::unbounded_channel::<Response>();
        tx.send(Cmd::Request {
            peer,
            request: Request { id: 1, body },
            reply,
        })
        .unwrap();
        rx.recv().await.unwrap().body
    }

    async fn next_herald(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a herald within 10 s")
            .expect("event channel open")
    }

    /// Both ends attempt on an ideal link: each gets one `Heralded` per pair (its own
    /// half as `local`) until Bob's 2-qubit memory is full; freeing a qubit lets one
    /// more through; the herald log and the stats count them.
    #[tokio::test]
    async fn the_actor_heralds_to_both_ends() {
        let topology = Topology::parse(
            "[network]\nname = \"t\"\ntime_scale = 0.01\n\
             [[nodes]]\nname = \"alice\"\n[[nodes]]\nname = \"bob\"\nmemory_qubits = 2\n\
             [[nodes]]\nname = \"carol\"\n\
             [[links]]\na = \"alice\"\nb = \"bob\"\nmodel = \"ideal\"\nfidelity = 0.9\n\
             [[links]]\na = \"bob\"\nb = \"carol\"\n",
            "test.toml",
        )
        .unwrap();
        let (stop, _) = watch::channel(false);
        let actor = Actor::new(topology, stop).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(actor.run(rx));
        let (alice, bob) = (Peer::Node(NodeId(0)), Peer::Node(NodeId(1)));
        let mut events = Vec::new();
        for (conn, peer) in [alice.clone(), bob.clone()].into_iter().enumerate() {
            let (etx, erx) = mpsc::unbounded_channel();
            tx.send(Cmd::Connected {
                peer,
                conn: conn as u64,
                events: etx,
            })
            .unwrap();
            events.push(erx);
        }
        let attempt = |peer: &str, label| RequestBody::Attempt {
            link_peer: peer.into(),
            label,
        };
        assert_eq!(
            ask(&tx, alice.clone(), attempt("carol", Some(1))).await,
            Err(ErrorBody::NotNeighbours {
                peer: "carol".into()
            })
        );
        assert_eq!(
            ask(&tx, Peer::Controller, attempt("bob", Some(1))).await,
            Err(ErrorBody::BadRequest(
                "the controller holds no qubits; only admin requests are allowed".into()
            ))
        );
        assert_eq!(
            ask(&tx, alice.clone(), attempt("bob", Some(3))).await,
            Ok(ResponseBody::Done)
        );
        assert_eq!(
            ask(&tx, bob.clone(), attempt("alice", Some(3))).await,
            Ok(ResponseBody::Done)
        );

        let mut bob_halves = Vec::new();
        for seq in 1..=2 {
            let (
                Event::Heralded {
                    peer: pa,
                    label: la,
                    pair: a,
                    heralded_ns: ha,
                },
                Event::Heralded {
                    peer: pb,
                    label: lb,
                    pair: b,
                    heralded_ns: hb,
                },
            ) = (
                next_herald(&mut events[0]).await,
                next_herald(&mut events[1]).await,
            )
            else {
                panic!("expected heralds");
            };
            assert_eq!((pa.as_str(), pb.as_str(), la, lb), ("bob", "alice", 3, 3));
            assert_eq!((a.seq, b.seq), (seq, seq));
            assert_eq!((a.local, a.remote), (b.remote, b.local));
            assert_eq!((a.bell, a.created_ns, ha), (b.bell, b.created_ns, hb));
            // Ideal links herald at emission.
            assert_eq!(a.created_ns, ha);
            bob_halves.push(b.local);
        }
        // Bob's memory is full: nothing more while it stays full.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(events[0].try_recv().is_err());
        assert_eq!(
            ask(
                &tx,
                bob.clone(),
                RequestBody::Free {
                    qubits: vec![bob_halves[0]]
                }
            )
            .await,
            Ok(ResponseBody::Done)
        );
        let Event::Heralded { pair, .. } = next_herald(&mut events[1]).await else {
            panic!("expected a herald");
        };
        assert_eq!(pair.seq, 3);

        let log = |a: &str, b: &str, after_seq| RequestBody::HeraldLog {
            a: a.into(),
            b: b.into(),
            after_seq,
            max: 10,
        };
        let Ok(ResponseBody::HeraldLog(records)) =
            ask(&tx, Peer::Controller, log("bob", "alice", 1)).await
        else {
            panic!("expected a herald log");
        };
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
        for r in &records {
            assert_eq!(r.label, 3);
            assert!((r.fidelity - 0.9).abs() < 1e-9, "{r:?}");
        }
        assert_eq!(
            ask(&tx, alice.clone(), log("alice", "bob", 0)).await,
            Err(ErrorBody::NotAdmin)
        );
        assert_eq!(
            ask(&tx, Peer::Controller, log("alice", "carol", 0)).await,
            Err(ErrorBody::NotNeighbours {
                peer: "carol".into()
            })
        );
        let Ok(ResponseBody::Stats(stats)) = ask(&tx, Peer::Controller, RequestBody::Stats).await
        else {
            panic!("expected stats");
        };
        assert_eq!(stats.pairs_created, 3);

        // Alice leaves: her link stops (Bob has room again, yet no herald comes).
        ask(
            &tx,
            bob.clone(),
            RequestBody::Free {
                qubits: vec![bob_halves[1]],
            },
        )
        .await
        .unwrap();
        tx.send(Cmd::Disconnected {
            peer: alice,
            conn: 0,
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // At most one herald may have slipped in before the disconnect was handled.
        let mut late = 0;
        while events[1].try_recv().is_ok() {
            late += 1;
        }
        assert!(late <= 1, "{late}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(events[1].try_recv().is_err());
        drop(tx);
        task.await.unwrap();
    }
}
