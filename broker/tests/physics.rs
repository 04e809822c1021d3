//! Physics tests of the quantum-state engine: the textbook values of DESIGN.md §3–§4.
//!
//! Every test is either exact (checked through the oracle to [`EXACT`] = 1e-9) or
//! statistical with a fixed seed. The seed can be overridden with the environment
//! variable `QNET_SEED`; every statistical assertion prints the seed it ran with.
//! Each statistical test states its sample size N, the standard error σ of the
//! estimate and the tolerance (5σ: a false alarm once in ~3.5 million runs per check).

use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

use num_complex::Complex64 as C;
use qnet_broker::engine::{
    DensityMatrix, Engine, EngineConfig, EngineError, Gate1, Gate2, NodeParams, Noise,
};
use qnet_common::{Basis, BellState, NodeId, QubitId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

type Eng = Engine<StdRng>;

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
/// The middle node of a repeater chain, or Eve.
const M: NodeId = NodeId(2);
/// Tolerance of exact (oracle) checks.
const EXACT: f64 = 1e-9;
/// Tolerance of statistical checks, in standard errors.
const K_SIGMA: f64 = 5.0;

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

/// An engine with `nodes` ideal nodes numbered 0.. .
fn engine(seed: u64, nodes: u32) -> Eng {
    let mut e = Engine::new(EngineConfig::default(), StdRng::seed_from_u64(seed));
    for n in 0..nodes {
        e.add_node(NodeId(n), NodeParams::IDEAL).unwrap();
    }
    e
}

/// A classical random source for the test's own choices (bases, bits), independent of
/// the engine's generator.
fn classical_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:.12}, want {want:.12} (|Δ| = {:.3e} > {tol:.1e})",
        (got - want).abs()
    );
}

/// Asserts that a statistical estimate lies within `K_SIGMA` standard errors.
fn assert_stat(what: &str, seed: u64, observed: f64, expected: f64, sigma: f64) {
    let dev = (observed - expected).abs();
    assert!(
        dev <= K_SIGMA * sigma,
        "{what}: observed {observed:.5}, expected {expected:.5}, off by {:.2}σ \
         (σ = {sigma:.2e}, tolerance {K_SIGMA}σ), seed {seed} (override with QNET_SEED)",
        dev / sigma
    );
}

/// Standard error of a frequency estimate of probability `p` from `n` samples.
fn binomial_sigma(p: f64, n: usize) -> f64 {
    (p * (1.0 - p) / n as f64).sqrt()
}

fn assert_rho_close(what: &str, got: &DensityMatrix, want: &DensityMatrix, tol: f64) {
    assert_eq!(got.dim, want.dim, "{what}: dimensions differ");
    for r in 0..got.dim {
        for c in 0..got.dim {
            let d = (got.get(r, c) - want.get(r, c)).norm();
            assert!(
                d <= tol,
                "{what}: entry ({r},{c}) is {}, want {} (|Δ| = {d:.3e})\ngot  {:?}\nwant {:?}",
                got.get(r, c),
                want.get(r, c),
                got.data,
                want.data
            );
        }
    }
}

/// The maximally mixed state of one qubit.
fn half_identity() -> DensityMatrix {
    DensityMatrix {
        dim: 2,
        data: vec![
            C::new(0.5, 0.0),
            C::new(0.0, 0.0),
            C::new(0.0, 0.0),
            C::new(0.5, 0.0),
        ],
    }
}

/// ⟨ψ|ρ|ψ⟩, written here rather than taken from the engine.
fn expect(rho: &DensityMatrix, psi: &[C]) -> f64 {
    let mut acc = C::new(0.0, 0.0);
    for (r, pr) in psi.iter().enumerate() {
        for (c, pc) in psi.iter().enumerate() {
            acc += pr.conj() * rho.get(r, c) * pc;
        }
    }
    acc.re
}

/// Bloch vector (x, y, z) of a qubit from the oracle: ρ = (I + xX + yY + zZ)/2.
fn bloch(e: &mut Eng, now: f64, q: QubitId) -> [f64; 3] {
    let rho = e.reduced_density_matrix(now, &[q]).unwrap();
    assert_eq!(rho.dim, 2);
    let r01 = rho.get(0, 1);
    [
        2.0 * r01.re,
        -2.0 * r01.im,
        rho.get(0, 0).re - rho.get(1, 1).re,
    ]
}

fn assert_bloch(what: &str, got: [f64; 3], want: [f64; 3], tol: f64) {
    for i in 0..3 {
        assert!(
            (got[i] - want[i]).abs() <= tol,
            "{what}: Bloch vector {got:?}, want {want:?}"
        );
    }
}

/// The Bloch direction (θ, φ) of a basis' outcome-0 state.
fn basis_angles(basis: Basis) -> (f64, f64) {
    match basis {
        Basis::Z => (0.0, 0.0),
        Basis::X => (PI / 2.0, 0.0),
        Basis::Y => (PI / 2.0, PI / 2.0),
        Basis::Rotated { theta, phi } => (theta, phi),
    }
}

/// Unit Bloch vector of a basis' outcome-0 state.
fn basis_direction(basis: Basis) -> [f64; 3] {
    let (t, p) = basis_angles(basis);
    [t.sin() * p.cos(), t.sin() * p.sin(), t.cos()]
}

/// The state vector of outcome `outcome` of `basis` (computed here, independently of
/// the engine's basis-change matrices).
fn basis_state(basis: Basis, outcome: u8) -> [C; 2] {
    let (t, p) = basis_angles(basis);
    let (s, c) = (t / 2.0).sin_cos();
    if outcome == 0 {
        [C::new(c, 0.0), C::from_polar(s, p)]
    } else {
        [C::new(-s, 0.0), C::from_polar(c, p)]
    }
}

/// Expectation value ⟨(n_a·σ) ⊗ (n_b·σ)⟩ of a two-qubit density matrix (first qubit =
/// most significant bit, as the oracle returns it).
fn correlator(rho: &DensityMatrix, na: [f64; 3], nb: [f64; 3]) -> f64 {
    let pauli = |n: [f64; 3]| {
        [
            [C::new(n[2], 0.0), C::new(n[0], -n[1])],
            [C::new(n[0], n[1]), C::new(-n[2], 0.0)],
        ]
    };
    let (pa, pb) = (pauli(na), pauli(nb));
    // Tr(ρ M) = Σ_{r,c} ρ[r][c] M[c][r], M[(i,k),(j,l)] = A[i][j] B[k][l].
    let mut acc = C::new(0.0, 0.0);
    for r in 0..4 {
        for c in 0..4 {
            let m_cr = pa[c >> 1][r >> 1] * pb[c & 1][r & 1];
            acc += rho.get(r, c) * m_cr;
        }
    }
    acc.re
}

/// A state prepared from |0⟩ with gates, and its Bloch vector.
struct Prepared {
    name: &'static str,
    gates: Vec<Gate1>,
    bloch: [f64; 3],
}

/// The six cardinal states plus two generic ones (Ry(θ) then Rz(φ)).
fn test_states() -> Vec<Prepared> {
    let generic = |name, theta: f64, phi: f64| Prepared {
        name,
        gates: vec![Gate1::Ry(theta), Gate1::Rz(phi)],
        bloch: [
            theta.sin() * phi.cos(),
            theta.sin() * phi.sin(),
            theta.cos(),
        ],
    };
    vec![
        Prepared {
            name: "|0⟩",
            gates: vec![],
            bloch: [0.0, 0.0, 1.0],
        },
        Prepared {
            name: "|1⟩",
            gates: vec![Gate1::X],
            bloch: [0.0, 0.0, -1.0],
        },
        Prepared {
            name: "|+⟩",
            gates: vec![Gate1::H],
            bloch: [1.0, 0.0, 0.0],
        },
        Prepared {
            name: "|−⟩",
            gates: vec![Gate1::X, Gate1::H],
            bloch: [-1.0, 0.0, 0.0],
        },
        Prepared {
            name: "|+i⟩",
            gates: vec![Gate1::H, Gate1::S],
            bloch: [0.0, 1.0, 0.0],
        },
        Prepared {
            name: "|−i⟩",
            gates: vec![Gate1::H, Gate1::Sdg],
            bloch: [0.0, -1.0, 0.0],
        },
        generic("Ry(1.1)Rz(0.4)", 1.1, 0.4),
        generic("Ry(2.3)Rz(−1.9)", 2.3, -1.9),
    ]
}

/// Number of cardinal states at the front of [`test_states`].
const CARDINAL: usize = 6;

fn prepare(e: &mut Eng, now: f64, node: NodeId, q: QubitId, gates: &[Gate1]) {
    for &g in gates {
        e.gate1(now, node, q, g).unwrap();
    }
}

/// A fresh qubit at `node` in the state Ry(θ) then Rz(φ) applied to |0⟩.
fn generic_qubit(e: &mut Eng, now: f64, node: NodeId, theta: f64, phi: f64) -> QubitId {
    let q = e.alloc(now, node).unwrap();
    prepare(e, now, node, q, &[Gate1::Ry(theta), Gate1::Rz(phi)]);
    q
}

/// Bell-state measurement of (`x`, `y`) at `node`: CNOT(x, y), H(x), measure both in
/// Z and free them. Returns (m1 from `x`, m2 from `y`).
fn bell_measure(e: &mut Eng, now: f64, node: NodeId, x: QubitId, y: QubitId) -> (u8, u8) {
    e.gate2(now, node, x, y, Gate2::Cnot).unwrap();
    e.gate1(now, node, x, Gate1::H).unwrap();
    let m1 = e.measure_free(now, node, x, Basis::Z).unwrap();
    let m2 = e.measure_free(now, node, y, Basis::Z).unwrap();
    (m1, m2)
}

/// Pauli correction X^m2 Z^m1 at `node`.
fn correct(e: &mut Eng, now: f64, node: NodeId, q: QubitId, (m1, m2): (u8, u8)) {
    if m2 == 1 {
        e.gate1(now, node, q, Gate1::X).unwrap();
    }
    if m1 == 1 {
        e.gate1(now, node, q, Gate1::Z).unwrap();
    }
}

// ---------------------------------------------------------------------------------
// 1. Same-basis correlations of Bell states (exact: deterministic outcomes)
// ---------------------------------------------------------------------------------

/// Φ⁺ measured in the same basis at both ends. Z and X always agree. Y always
/// DISAGREES: ⟨YY⟩ = −1 for Φ⁺ (Y⊗Y|Φ⁺⟩ = −|Φ⁺⟩). The issue that asked for these
/// tests said Y "agrees"; that is wrong physics, and DESIGN.md's "Φ⁺ measured in the
/// same basis at both ends always agrees" holds for real bases only. For Φ⁺ the true
/// statement is invariance under U ⊗ U*: Alice in Rotated{θ, φ} and Bob in
/// Rotated{θ, −φ} always agree; with φ = 0 that is the same basis at both ends.
/// Ψ⁻ is invariant under U ⊗ U, so it always disagrees in any common basis.
/// 500 shots per case, either measurement order; every shot must satisfy it.
#[test]
fn bell_states_same_basis_correlations() {
    let s = seed(1);
    let mut e = engine(s, 2);
    // (state, basis, agree?) — ⟨ZZ⟩, ⟨XX⟩, ⟨YY⟩ of each Bell state.
    let table = [
        (BellState::PhiPlus, [true, true, false]),
        (BellState::PhiMinus, [true, false, true]),
        (BellState::PsiPlus, [false, true, true]),
        (BellState::PsiMinus, [false, false, false]),
    ];
    for (bell, agree) in table {
        for (basis, agree) in [Basis::Z, Basis::X, Basis::Y].into_iter().zip(agree) {
            let mut zeros = 0;
            for shot in 0..500 {
                let (qa, qb) = e.create_pair(0.0, A, B, bell, 1.0).unwrap();
                let (ma, mb) = if shot % 2 == 0 {
                    let ma = e.measure_free(0.0, A, qa, basis).unwrap();
                    (ma, e.measure_free(0.0, B, qb, basis).unwrap())
                } else {
                    let mb = e.measure_free(0.0, B, qb, basis).unwrap();
                    (e.measure_free(0.0, A, qa, basis).unwrap(), mb)
                };
                assert_eq!(
                    ma == mb,
                    agree,
                    "{bell:?} in {basis:?}: outcomes {ma}, {mb} (seed {s})"
                );
                zeros += usize::from(ma == 0);
            }
            // Not a tolerance test, just a sanity check that outcomes are random.
            assert!(
                (100..400).contains(&zeros),
                "{bell:?} {basis:?}: {zeros}/500 zeros"
            );
        }
    }
    // Rotated bases, including negative polar angles and angles past π.
    for theta in [0.3, 1.1, 2.5, -0.7, 4.0] {
        for phi in [0.0, 0.6, -2.2, PI] {
            for _ in 0..100 {
                let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
                let ma = e
                    .measure_free(0.0, A, qa, Basis::Rotated { theta, phi })
                    .unwrap();
                let mb = e
                    .measure_free(0.0, B, qb, Basis::Rotated { theta, phi: -phi })
                    .unwrap();
                assert_eq!(ma, mb, "Φ⁺ in Rotated{{{theta}, ±{phi}}} (seed {s})");

                let (qa, qb) = e.create_pair(0.0, A, B, BellState::PsiMinus, 1.0).unwrap();
                let basis = Basis::Rotated { theta, phi };
                let ma = e.measure_free(0.0, A, qa, basis).unwrap();
                let mb = e.measure_free(0.0, B, qb, basis).unwrap();
                assert_ne!(ma, mb, "Ψ⁻ in {basis:?} (seed {s})");
            }
        }
    }
    assert_eq!(e.stats().qubits, 0);
}

/// The oracle agrees with the correlations: Werner pairs have fidelity F with their
/// own Bell state and (1 − F)/3 with each of the other three.
#[test]
fn werner_pair_oracle_fidelities() {
    let mut e = engine(seed(2), 2);
    for bell in BellState::ALL {
        for f in [0.0, 0.25, 0.6, 0.9, 1.0] {
            let (qa, qb) = e.create_pair(0.0, A, B, bell, f).unwrap();
            for other in BellState::ALL {
                let want = if other == bell { f } else { (1.0 - f) / 3.0 };
                let got = e.fidelity(0.0, qa, qb, other).unwrap();
                assert_close(&format!("{bell:?}(F={f}) vs {other:?}"), got, want, EXACT);
            }
            assert_rho_close(
                "Werner marginal",
                &e.reduced_density_matrix(0.0, &[qa]).unwrap(),
                &half_identity(),
                EXACT,
            );
            e.free(0.0, A, qa).unwrap();
            e.free(0.0, B, qb).unwrap();
        }
    }
}

/// Measurement collapses the partner: after Alice measures her half of Φ⁺ in a basis
/// and gets `a`, Bob's qubit is exactly the conjugate basis state, and Alice's qubit
/// (kept by `measure`) is the basis state of her outcome; re-measuring repeats it.
#[test]
fn measurement_collapse_and_post_state() {
    let s = seed(3);
    let mut e = engine(s, 2);
    let bases = [
        Basis::Z,
        Basis::X,
        Basis::Y,
        Basis::Rotated {
            theta: 1.3,
            phi: 0.8,
        },
        Basis::Rotated {
            theta: -2.0,
            phi: 2.9,
        },
    ];
    for basis in bases {
        for _ in 0..20 {
            let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
            let a = e.measure(0.0, A, qa, basis).unwrap();
            assert_eq!(e.register_size(qa).unwrap(), 1);
            assert_eq!(e.register_size(qb).unwrap(), 1);
            let n = basis_direction(basis);
            let sign = if a == 0 { 1.0 } else { -1.0 };
            let want_a = [sign * n[0], sign * n[1], sign * n[2]];
            // Φ⁺: Bob's state is the complex conjugate, i.e. y flipped.
            let want_b = [sign * n[0], -sign * n[1], sign * n[2]];
            assert_bloch("Alice after measure", bloch(&mut e, 0.0, qa), want_a, EXACT);
            assert_bloch(
                "Bob after Alice measures",
                bloch(&mut e, 0.0, qb),
                want_b,
                EXACT,
            );
            for _ in 0..3 {
                assert_eq!(
                    e.measure(0.0, A, qa, basis).unwrap(),
                    a,
                    "repeat (seed {s})"
                );
            }
            e.free(0.0, A, qa).unwrap();
            e.free(0.0, B, qb).unwrap();
        }
    }
}

/// Born rule: a qubit with Bloch vector r measured along n reads 0 with probability
/// (1 + r·n)/2. N = 8,000 per (state, basis); σ = √(p(1−p)/N) ≤ 0.0056; 5σ.
#[test]
fn born_rule_statistics() {
    let s = seed(4);
    let mut e = engine(s, 1);
    const N: usize = 8_000;
    let (theta, phi): (f64, f64) = (1.2, 0.5);
    let r = [
        theta.sin() * phi.cos(),
        theta.sin() * phi.sin(),
        theta.cos(),
    ];
    let bases = [
        Basis::Z,
        Basis::X,
        Basis::Y,
        Basis::Rotated {
            theta: 0.9,
            phi: -1.4,
        },
    ];
    for basis in bases {
        let n = basis_direction(basis);
        let p0 = (1.0 + r[0] * n[0] + r[1] * n[1] + r[2] * n[2]) / 2.0;
        let mut zeros = 0;
        for _ in 0..N {
            let q = generic_qubit(&mut e, 0.0, A, theta, phi);
            zeros += usize::from(e.measure_free(0.0, A, q, basis).unwrap() == 0);
        }
        let freq = zeros as f64 / N as f64;
        assert_stat(
            &format!("P(0) in {basis:?}"),
            s,
            freq,
            p0,
            binomial_sigma(p0, N),
        );
    }
}

// ---------------------------------------------------------------------------------
// 2. No signalling
// ---------------------------------------------------------------------------------

/// Statistical: Bob's marginal P(b = 0) is ½ in Z, X and Y whatever Alice does first
/// (nothing, or measure in Z, X, Y or a rotated basis). N = 6,000 per (Alice choice,
/// Bob basis), 15 cells; σ = 0.5/√N = 0.0065; each cell within 5σ of ½, and every two
/// cells with the same Bob basis within 5σ of each other (σ_diff = √2·σ).
#[test]
fn no_signalling_statistical() {
    let s = seed(5);
    let mut e = engine(s, 2);
    const N: usize = 6_000;
    let alice: [Option<Basis>; 5] = [
        None,
        Some(Basis::Z),
        Some(Basis::X),
        Some(Basis::Y),
        Some(Basis::Rotated {
            theta: 1.0,
            phi: 0.4,
        }),
    ];
    let sigma = 0.5 / (N as f64).sqrt();
    for bob in [Basis::Z, Basis::X, Basis::Y] {
        let mut freqs = Vec::new();
        for a in alice {
            let mut zeros = 0;
            for _ in 0..N {
                let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
                if let Some(basis) = a {
                    e.measure_free(0.0, A, qa, basis).unwrap();
                }
                zeros += usize::from(e.measure_free(0.0, B, qb, bob).unwrap() == 0);
                if a.is_none() {
                    e.free(0.0, A, qa).unwrap();
                }
            }
            let freq = zeros as f64 / N as f64;
            assert_stat(
                &format!("Bob P(0) in {bob:?} after Alice {a:?}"),
                s,
                freq,
                0.5,
                sigma,
            );
            freqs.push(freq);
        }
        for i in 0..freqs.len() {
            for j in i + 1..freqs.len() {
                assert_stat(
                    &format!("Bob {bob:?}: Alice {:?} vs {:?}", alice[i], alice[j]),
                    s,
                    freqs[i] - freqs[j],
                    0.0,
                    SQRT_2 * sigma,
                );
            }
        }
    }
}

/// Exact: Bob's reduced state averaged over Alice's outcomes, weighted by their exact
/// probabilities (from Alice's reduced matrix before she measures), equals Bob's state
/// before she measured (I/2), for pure and Werner pairs and any basis. Each
/// conditional state comes from the oracle after a real measurement; runs repeat until
/// both outcomes have been seen.
#[test]
fn no_signalling_exact() {
    let s = seed(6);
    let mut e = engine(s, 2);
    let bases = [
        Basis::Z,
        Basis::X,
        Basis::Y,
        Basis::Rotated {
            theta: 0.7,
            phi: -1.1,
        },
    ];
    for (bell, f) in [
        (BellState::PhiPlus, 1.0),
        (BellState::PsiMinus, 1.0),
        (BellState::PhiPlus, 0.7),
        (BellState::PsiPlus, 0.45),
    ] {
        for basis in bases {
            let mut conditional: [Option<DensityMatrix>; 2] = [None, None];
            let mut probs = [0.0; 2];
            let mut before = None;
            for _ in 0..200 {
                let (qa, qb) = e.create_pair(0.0, A, B, bell, f).unwrap();
                let rho_a = e.reduced_density_matrix(0.0, &[qa]).unwrap();
                probs = [0u8, 1].map(|o| expect(&rho_a, &basis_state(basis, o)));
                before = Some(e.reduced_density_matrix(0.0, &[qb]).unwrap());
                let a = e.measure_free(0.0, A, qa, basis).unwrap();
                conditional[a as usize] = Some(e.reduced_density_matrix(0.0, &[qb]).unwrap());
                e.free(0.0, B, qb).unwrap();
                if conditional.iter().all(Option::is_some) {
                    break;
                }
            }
            let [Some(r0), Some(r1)] = &conditional else {
                panic!("only one outcome in 200 runs (seed {s})");
            };
            let before = before.unwrap();
            assert_rho_close("Bob before", &before, &half_identity(), EXACT);
            assert_close("P(a=0)+P(a=1)", probs[0] + probs[1], 1.0, EXACT);
            let avg = DensityMatrix {
                dim: 2,
                data: (0..4)
                    .map(|i| r0.data[i] * probs[0] + r1.data[i] * probs[1])
                    .collect(),
            };
            assert_rho_close(
                &format!("{bell:?} F={f}, Alice in {basis:?}: averaged Bob state"),
                &avg,
                &before,
                EXACT,
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// 3. Teleportation
// ---------------------------------------------------------------------------------

/// Teleportation through a Werner pair of fidelity F. The Werner state is
/// w·|Φ⁺⟩⟨Φ⁺| + (1−w)·I/4 with w = (4F−1)/3; the I/4 part teleports to I/2 whatever
/// the outcomes and every outcome has probability ¼, so Bob's corrected state is
/// w·|ψ⟩⟨ψ| + (1−w)·I/2 in EVERY shot, with fidelity (1+w)/2 = (2F+1)/3 for every pure
/// |ψ⟩. Exact per shot (1e-9), so also averaged over the six cardinal states; 16 shots
/// per state, and all four outcome pairs must occur.
#[test]
fn teleportation_through_werner_pairs() {
    let s = seed(7);
    let mut e = engine(s, 2);
    for f in [0.8, 0.9, 1.0, 0.5] {
        let want = (2.0 * f + 1.0) / 3.0;
        let mut seen = [[false; 2]; 2];
        let mut cardinal_sum = 0.0;
        let mut cardinal_shots = 0;
        for (i, st) in test_states().iter().enumerate() {
            for _ in 0..16 {
                let psi = e.alloc(0.0, A).unwrap();
                prepare(&mut e, 0.0, A, psi, &st.gates);
                let (a, b) = e.create_pair(0.0, A, B, BellState::PhiPlus, f).unwrap();
                let m = bell_measure(&mut e, 0.0, A, psi, a);
                seen[m.0 as usize][m.1 as usize] = true;
                correct(&mut e, 0.0, B, b, m);
                assert_eq!(e.register_size(b).unwrap(), 1);
                let r = bloch(&mut e, 0.0, b);
                let fid =
                    (1.0 + r[0] * st.bloch[0] + r[1] * st.bloch[1] + r[2] * st.bloch[2]) / 2.0;
                assert_close(
                    &format!("teleport {} with F={f}, outcomes {m:?}", st.name),
                    fid,
                    want,
                    EXACT,
                );
                if i < CARDINAL {
                    cardinal_sum += fid;
                    cardinal_shots += 1;
                }
                e.free(0.0, B, b).unwrap();
            }
        }
        assert_close(
            &format!("average over cardinal states, F={f}"),
            cardinal_sum / cardinal_shots as f64,
            want,
            EXACT,
        );
        assert_eq!(
            seen, [[true; 2]; 2],
            "not every outcome occurred (seed {s})"
        );
    }
    assert_eq!(e.stats().qubits, 0);
}

// ---------------------------------------------------------------------------------
// 4. Entanglement swapping
// ---------------------------------------------------------------------------------

/// Swapping Werner pairs F1 (A–M) and F2 (M–B): Bell measurement at M, X^m2 Z^m1 at B.
/// Werner pairs are Bell-diagonal and each outcome has probability ¼ independently of
/// the Pauli errors, so the end pair is Bell-diagonal with Φ⁺ weight
/// F1F2 + 3·((1−F1)/3)((1−F2)/3) = F1F2 + (1−F1)(1−F2)/3 in every shot (exact, 1e-9),
/// and each other Bell state has weight (1 − F_out)/3 (the result is again Werner).
#[test]
fn entanglement_swapping_of_werner_pairs() {
    let s = seed(8);
    let mut e = engine(s, 3);
    for (f1, f2) in [(0.9, 0.8), (1.0, 0.7), (0.95, 0.95), (1.0, 1.0), (0.6, 0.3)] {
        let want = f1 * f2 + (1.0 - f1) * (1.0 - f2) / 3.0;
        let mut seen = [[false; 2]; 2];
        for _ in 0..32 {
            let (a, m1) = e.create_pair(0.0, A, M, BellState::PhiPlus, f1).unwrap();
            let (m2, b) = e.create_pair(0.0, M, B, BellState::PhiPlus, f2).unwrap();
            let m = bell_measure(&mut e, 0.0, M, m1, m2);
            seen[m.0 as usize][m.1 as usize] = true;
            correct(&mut e, 0.0, B, b, m);
            assert_eq!(e.register_size(a).unwrap(), 2);
            assert_eq!(e.owned_count(M).unwrap(), 0);
            for bell in BellState::ALL {
                let w = if bell == BellState::PhiPlus {
                    want
                } else {
                    (1.0 - want) / 3.0
                };
                assert_close(
                    &format!("swap F1={f1} F2={f2} outcomes {m:?}: weight of {bell:?}"),
                    e.fidelity(0.0, a, b, bell).unwrap(),
                    w,
                    EXACT,
                );
            }
            e.free(0.0, A, a).unwrap();
            e.free(0.0, B, b).unwrap();
        }
        assert_eq!(
            seen, [[true; 2]; 2],
            "not every outcome occurred (seed {s})"
        );
    }
}

// ---------------------------------------------------------------------------------
// 5. BBPSSW purification
// ---------------------------------------------------------------------------------

/// One round of BBPSSW (Bennett et al. 1996) on two Φ⁺-Werner pairs of fidelity F:
/// CNOT pair1→pair2 at both ends, measure pair2 in Z at both ends, keep pair1 when the
/// outcomes agree.
///
/// Werner inputs are Bell-diagonal, so no twirl is needed before the round; in Pauli
/// frame terms (I, Z, X, Y on one half ↔ Φ⁺, Φ⁻, Ψ⁺, Ψ⁻, probabilities F, q, q, q with
/// q = (1−F)/3) the bilateral CNOT maps errors (x1,z1),(x2,z2) to (x1, z1⊕z2),
/// (x1⊕x2, z2) and success means x1 = x2. Hence
///   p_success = F² + 2Fq + 5q² = F² + 2F(1−F)/3 + 5((1−F)/3)²,
///   Φ⁺: (F² + q²)/p, Φ⁻: 2Fq/p, Ψ⁺: 2q²/p, Ψ⁻: 2q²/p.
/// The outcomes 00 and 11 are equally likely in every frame, so the post-state is the
/// same in both success branches: the output fidelities are exact per successful shot
/// (checked to 1e-9 for all four Bell weights; the output is Bell-diagonal but not
/// Werner — the twirl of the full protocol would make it so before the next round).
///
/// Success probability: N = 5,000 rounds for F = 0.8 (p = 0.769, σ = √(p(1−p)/N) =
/// 0.0060) and F = 0.65 (p = 0.597, σ = 0.0069), N = 300 for F = 0.95 (σ = 0.011);
/// tolerance 5σ. (Four-qubit density matrices are slow in debug builds: ~0.25 ms a
/// round.)
#[test]
fn bbpssw_one_round() {
    let s = seed(9);
    let mut e = engine(s, 2);
    for (f, n) in [(0.8, 5_000), (0.65, 5_000), (0.95, 300)] {
        let q = (1.0 - f) / 3.0;
        let p = f * f + 2.0 * f * q + 5.0 * q * q;
        assert_close(
            "formula",
            p,
            f * f + 2.0 * f * (1.0 - f) / 3.0 + 5.0 * ((1.0 - f) / 3.0).powi(2),
            1e-15,
        );
        let want = [
            (BellState::PhiPlus, (f * f + q * q) / p),
            (BellState::PhiMinus, 2.0 * f * q / p),
            (BellState::PsiPlus, 2.0 * q * q / p),
            (BellState::PsiMinus, 2.0 * q * q / p),
        ];
        let mut successes = 0;
        let mut branches = [0usize; 2];
        for _ in 0..n {
            let (a1, b1) = e.create_pair(0.0, A, B, BellState::PhiPlus, f).unwrap();
            let (a2, b2) = e.create_pair(0.0, A, B, BellState::PhiPlus, f).unwrap();
            e.gate2(0.0, A, a1, a2, Gate2::Cnot).unwrap();
            e.gate2(0.0, B, b1, b2, Gate2::Cnot).unwrap();
            let ma = e.measure_free(0.0, A, a2, Basis::Z).unwrap();
            let mb = e.measure_free(0.0, B, b2, Basis::Z).unwrap();
            if ma == mb {
                successes += 1;
                branches[ma as usize] += 1;
                // The oracle is cheap; check every hundredth success to keep debug
                // builds fast (the first ones of both branches are always checked).
                if successes % 100 == 1 || branches[ma as usize] == 1 {
                    for (bell, w) in want {
                        assert_close(
                            &format!("BBPSSW F={f}, branch {ma}{mb}: weight of {bell:?}"),
                            e.fidelity(0.0, a1, b1, bell).unwrap(),
                            w,
                            EXACT,
                        );
                    }
                }
            }
            e.free(0.0, A, a1).unwrap();
            e.free(0.0, B, b1).unwrap();
        }
        assert!(branches[0] > 0 && branches[1] > 0, "seed {s}");
        assert_stat(
            &format!("BBPSSW success probability, F={f}"),
            s,
            successes as f64 / n as f64,
            p,
            binomial_sigma(p, n),
        );
        // Purification improves fidelity for F > ½.
        assert!(want[0].1 > f);
    }
}

// ---------------------------------------------------------------------------------
// 6. CHSH
// ---------------------------------------------------------------------------------

/// CHSH with Alice Z, X and Bob (Z+X)/√2, (Z−X)/√2 (Basis::Rotated at θ = ±π/4 in the
/// x–z plane): S = E(Z,B0) + E(Z,B1) + E(X,B0) − E(X,B1) = 2√2·w on a Werner pair,
/// w = (4F−1)/3 (2√2 for F = 1).
///
/// Exact part: the correlators computed from the oracle's ρ_AB (1e-9). Statistical
/// part: N = 10,000 shots per setting; each product has variance 1 − E², so
/// σ_S = √(Σ(1 − E_i²)/N) ≈ 0.0141 for F = 1 (0.0158 for F = 0.9, 0.020 for F = 0.5);
/// tolerance 5σ. F = 1 must violate the classical bound 2, and F = 0.5 must not.
#[test]
fn chsh() {
    let s = seed(10);
    let mut e = engine(s, 2);
    const N: usize = 10_000;
    let alice = [Basis::Z, Basis::X];
    let bob = [
        Basis::Rotated {
            theta: PI / 4.0,
            phi: 0.0,
        },
        Basis::Rotated {
            theta: PI / 4.0,
            phi: PI,
        },
    ];
    let sign = |i: usize, j: usize| if i == 1 && j == 1 { -1.0 } else { 1.0 };
    for f in [1.0, 0.9, 0.5] {
        let w = (4.0 * f - 1.0) / 3.0;
        let want = 2.0 * SQRT_2 * w;

        let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, f).unwrap();
        let rho = e.reduced_density_matrix(0.0, &[qa, qb]).unwrap();
        let mut exact = 0.0;
        for (i, &ab) in alice.iter().enumerate() {
            for (j, &bb) in bob.iter().enumerate() {
                exact += sign(i, j) * correlator(&rho, basis_direction(ab), basis_direction(bb));
            }
        }
        assert_close(&format!("exact CHSH S, F={f}"), exact, want, EXACT);
        e.free(0.0, A, qa).unwrap();
        e.free(0.0, B, qb).unwrap();

        let mut s_hat = 0.0;
        let mut var = 0.0;
        for (i, &ab) in alice.iter().enumerate() {
            for (j, &bb) in bob.iter().enumerate() {
                let mut sum = 0i64;
                for _ in 0..N {
                    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, f).unwrap();
                    let ma = e.measure_free(0.0, A, qa, ab).unwrap();
                    let mb = e.measure_free(0.0, B, qb, bb).unwrap();
                    sum += if ma == mb { 1 } else { -1 };
                }
                let e_ij = w * FRAC_1_SQRT_2 * sign(i, j);
                var += (1.0 - e_ij * e_ij) / N as f64;
                s_hat += sign(i, j) * sum as f64 / N as f64;
            }
        }
        let sigma = var.sqrt();
        assert_stat(&format!("CHSH S, F={f}"), s, s_hat, want, sigma);
        if f == 1.0 {
            assert!(s_hat > 2.0 + K_SIGMA * sigma, "no violation: S = {s_hat}");
        }
        if f == 0.5 {
            assert!(s_hat < 2.0, "F = 0.5 violates CHSH: S = {s_hat}");
        }
    }
}

// ---------------------------------------------------------------------------------
// 7. BB84
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Eve {
    None,
    /// Eve measures with `measure` (the qubit stays in the post-measurement state) and
    /// forwards the same qubit.
    MeasureForward,
    /// Eve measures with `measure_free` and prepares a fresh qubit from her result.
    MeasureResend,
}

/// Runs `rounds` BB84 rounds A → (Eve at M) → B; returns (sifted, errors).
fn bb84(e: &mut Eng, rng: &mut StdRng, rounds: usize, eve: Eve) -> (usize, usize) {
    let encode = |e: &mut Eng, node: NodeId, q: QubitId, bit: bool, x_basis: bool| {
        if bit {
            e.gate1(0.0, node, q, Gate1::X).unwrap();
        }
        if x_basis {
            e.gate1(0.0, node, q, Gate1::H).unwrap();
        }
    };
    let basis = |x: bool| if x { Basis::X } else { Basis::Z };
    let (mut sifted, mut errors) = (0, 0);
    for _ in 0..rounds {
        let bit: bool = rng.random();
        let alice_x: bool = rng.random();
        let q = e.alloc(0.0, A).unwrap();
        encode(e, A, q, bit, alice_x);
        let q = match eve {
            Eve::None => e.transfer(0.0, A, q, B).unwrap(),
            Eve::MeasureForward => {
                let q = e.transfer(0.0, A, q, M).unwrap();
                e.measure(0.0, M, q, basis(rng.random())).unwrap();
                e.transfer(0.0, M, q, B).unwrap()
            }
            Eve::MeasureResend => {
                let q = e.transfer(0.0, A, q, M).unwrap();
                let eve_x: bool = rng.random();
                let m = e.measure_free(0.0, M, q, basis(eve_x)).unwrap();
                let fresh = e.alloc(0.0, M).unwrap();
                encode(e, M, fresh, m == 1, eve_x);
                e.transfer(0.0, M, fresh, B).unwrap()
            }
        };
        let bob_x: bool = rng.random();
        let b = e.measure_free(0.0, B, q, basis(bob_x)).unwrap();
        if bob_x == alice_x {
            sifted += 1;
            errors += usize::from((b == 1) != bit);
        }
    }
    assert_eq!(e.stats().qubits, 0);
    (sifted, errors)
}

/// BB84: without Eve the sifted key has no errors (exact, 2,000 rounds). With
/// intercept–resend in a random basis the QBER is ¼ (wrong basis half the time, then a
/// coin flip). N = 16,000 rounds → n ≈ 8,000 sifted bits; σ = √(¼·¾/n) ≈ 0.0048;
/// tolerance 5σ, for both ways Eve can resend.
#[test]
fn bb84_intercept_resend_qber() {
    let s = seed(11);
    let mut e = engine(s, 3);
    let mut rng = classical_rng(s);
    let (sifted, errors) = bb84(&mut e, &mut rng, 2_000, Eve::None);
    assert!(sifted > 800, "seed {s}");
    assert_eq!(errors, 0, "QBER without Eve must be 0 (seed {s})");
    for eve in [Eve::MeasureForward, Eve::MeasureResend] {
        let (sifted, errors) = bb84(&mut e, &mut rng, 16_000, eve);
        let qber = errors as f64 / sifted as f64;
        assert_stat(
            "intercept-resend QBER",
            s,
            qber,
            0.25,
            binomial_sigma(0.25, sifted),
        );
        assert_stat(
            "sifted fraction",
            s,
            sifted as f64 / 16_000.0,
            0.5,
            binomial_sigma(0.5, 16_000),
        );
    }
}

// ---------------------------------------------------------------------------------
// 8. Memory decoherence (T1, T2)
// ---------------------------------------------------------------------------------

fn node(t1: f64, t2: f64) -> NodeParams {
    NodeParams {
        t1,
        t2,
        ..NodeParams::IDEAL
    }
}

/// Pure dephasing (T1 = ∞, T2 = 1): |+⟩ keeps ⟨Z⟩ = 0 and ⟨X⟩ = 2·Re ρ01 = e^(−t/T2);
/// the oracle ages the qubit lazily and repeated queries compose. Exact.
#[test]
fn t2_dephasing() {
    let mut e = engine(seed(12), 0);
    e.add_node(A, node(f64::INFINITY, 1.0)).unwrap();
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::H).unwrap();
    for t in [0.0, 0.1, 0.5, 1.0, 2.0, 3.7] {
        let r = bloch(&mut e, t, q);
        assert_bloch(
            &format!("|+⟩ after {t} s"),
            r,
            [(-t).exp(), 0.0, 0.0],
            EXACT,
        );
    }
    // Querying the past changes nothing.
    let r = bloch(&mut e, 1.0, q);
    assert_bloch("query in the past", r, [(-3.7f64).exp(), 0.0, 0.0], EXACT);

    // Touching the qubit at intermediate times (Z·Z = I) does not change the decay.
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::H).unwrap();
    e.gate1(0.3, A, q, Gate1::Z).unwrap();
    e.gate1(0.8, A, q, Gate1::Z).unwrap();
    let r = bloch(&mut e, 1.5, q);
    assert_bloch("touched at 0.3, 0.8", r, [(-1.5f64).exp(), 0.0, 0.0], EXACT);

    // Half of Φ⁺ dephasing: fidelity (1 + e^(−t/T2))/2, the rest in Φ⁻.
    e.add_node(B, NodeParams::IDEAL).unwrap();
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
    for t in [0.2f64, 1.0, 2.5] {
        let want = (1.0 + (-t).exp()) / 2.0;
        assert_close(
            "Φ⁺ fidelity under T2",
            e.fidelity(t, qa, qb, BellState::PhiPlus).unwrap(),
            want,
            EXACT,
        );
        assert_close(
            "Φ⁻ weight under T2",
            e.fidelity(t, qa, qb, BellState::PhiMinus).unwrap(),
            1.0 - want,
            EXACT,
        );
    }

    // Noise before a transfer is the sender's, after it the receiver's (ideal here).
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::H).unwrap();
    let q = e.transfer(0.5, A, q, B).unwrap();
    let r = bloch(&mut e, 3.0, q);
    assert_bloch(
        "transferred at 0.5 s",
        r,
        [(-0.5f64).exp(), 0.0, 0.0],
        EXACT,
    );
}

/// Finite T1 = 2, T2 = 1: the population of |1⟩ decays as e^(−t/T1) and the coherence
/// ρ01 (complex) as e^(−t/T2). Also |1⟩ at T1 = 2, T2 = 4 (= 2·T1, pure relaxation):
/// P(1) = e^(−t/T1). Exact.
#[test]
fn t1_relaxation_and_t2() {
    let mut e = engine(seed(13), 0);
    e.add_node(A, node(2.0, 1.0)).unwrap();
    e.add_node(B, node(2.0, 4.0)).unwrap();
    let (theta, phi) = (2.0, 0.7);
    let q = generic_qubit(&mut e, 0.0, A, theta, phi);
    let r0 = e.reduced_density_matrix(0.0, &[q]).unwrap();
    let p1_0 = r0.get(1, 1).re;
    assert_close("initial P(1)", p1_0, (theta / 2.0).sin().powi(2), EXACT);
    let c0 = r0.get(0, 1);
    let one = e.alloc(0.0, B).unwrap();
    e.gate1(0.0, B, one, Gate1::X).unwrap();
    for t in [0.25, 1.0, 1.5, 4.0] {
        let rho = e.reduced_density_matrix(t, &[q]).unwrap();
        assert_close(
            &format!("P(1) at {t} s"),
            rho.get(1, 1).re,
            p1_0 * (-t / 2.0).exp(),
            EXACT,
        );
        assert_close("trace", rho.trace(), 1.0, EXACT);
        let c = rho.get(0, 1);
        let want = c0 * (-t).exp();
        assert!((c - want).norm() <= EXACT, "ρ01 at {t} s: {c}, want {want}");
        assert!((rho.get(1, 0) - want.conj()).norm() <= EXACT);

        let rho = e.reduced_density_matrix(t, &[one]).unwrap();
        assert_close(
            &format!("|1⟩ P(1) at {t} s"),
            rho.get(1, 1).re,
            (-t / 2.0).exp(),
            EXACT,
        );
        assert!(rho.get(0, 1).norm() <= EXACT);
    }
}

/// Measurements see the decayed state: |1⟩ at a node with T1 = 1 measured at t = 1
/// reads 1 with probability e^(−1). N = 10,000; σ = √(p(1−p)/N) = 0.0048; 5σ.
#[test]
fn t1_measurement_statistics() {
    let s = seed(14);
    let mut e = engine(s, 0);
    e.add_node(A, node(1.0, 0.5)).unwrap();
    const N: usize = 10_000;
    let mut ones = 0;
    for i in 0..N {
        let t0 = i as f64 * 10.0;
        let q = e.alloc(t0, A).unwrap();
        e.gate1(t0, A, q, Gate1::X).unwrap();
        ones += usize::from(e.measure_free(t0 + 1.0, A, q, Basis::Z).unwrap() == 1);
    }
    let p = (-1.0f64).exp();
    assert_stat(
        "P(1) after T1",
        s,
        ones as f64 / N as f64,
        p,
        binomial_sigma(p, N),
    );
}

// ---------------------------------------------------------------------------------
// 9. Crashed nodes
// ---------------------------------------------------------------------------------

/// A crashed node's partner qubit is maximally mixed; the crashed node's ids are dead;
/// the partner's qubit still works. A GHZ state losing one member leaves the others
/// classically correlated: (|00⟩⟨00| + |11⟩⟨11|)/2.
#[test]
fn crashed_node_leaves_partner_mixed() {
    let s = seed(15);
    let mut e = engine(s, 3);
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
    let extra = e.alloc(0.0, A).unwrap();
    assert_eq!(e.drop_node(A).unwrap(), 2);
    assert_eq!(e.owned_count(A).unwrap(), 0);
    for q in [qa, extra] {
        assert_eq!(e.owner(q), Err(EngineError::NoSuchQubit { qubit: q }));
        assert_eq!(
            e.measure(0.0, A, q, Basis::Z),
            Err(EngineError::NoSuchQubit { qubit: q })
        );
        assert_eq!(
            e.reduced_density_matrix(0.0, &[q]).unwrap_err(),
            EngineError::NoSuchQubit { qubit: q }
        );
    }
    assert_rho_close(
        "Bob after Alice crashed",
        &e.reduced_density_matrix(0.0, &[qb]).unwrap(),
        &half_identity(),
        EXACT,
    );
    assert_eq!(e.register_size(qb).unwrap(), 1);
    assert_eq!(e.owner(qb).unwrap(), B);
    e.gate1(0.0, B, qb, Gate1::H).unwrap();
    let m = e.measure(0.0, B, qb, Basis::Z).unwrap();
    assert_eq!(e.measure(0.0, B, qb, Basis::Z).unwrap(), m);
    assert_eq!(e.stats().qubits, 1);

    // GHZ across A, B, M; A crashes.
    let g: Vec<QubitId> = (0..3).map(|_| e.alloc(0.0, A).unwrap()).collect();
    e.gate1(0.0, A, g[0], Gate1::H).unwrap();
    e.gate2(0.0, A, g[0], g[1], Gate2::Cnot).unwrap();
    e.gate2(0.0, A, g[0], g[2], Gate2::Cnot).unwrap();
    let gb = e.transfer(0.0, A, g[1], B).unwrap();
    let gm = e.transfer(0.0, A, g[2], M).unwrap();
    assert_eq!(e.drop_node(A).unwrap(), 1);
    let rho = e.reduced_density_matrix(0.0, &[gb, gm]).unwrap();
    let mut want = DensityMatrix {
        dim: 4,
        data: vec![C::new(0.0, 0.0); 16],
    };
    want.data[0] = C::new(0.5, 0.0);
    want.data[15] = C::new(0.5, 0.0);
    assert_rho_close("GHZ minus one", &rho, &want, EXACT);
    // The crashed node may come back and allocate again; its old ids stay dead.
    let fresh = e.alloc(0.0, A).unwrap();
    assert_ne!(fresh, qa);
    assert_eq!(e.owner(qa), Err(EngineError::NoSuchQubit { qubit: qa }));
}

// ---------------------------------------------------------------------------------
// 10. Ownership and errors
// ---------------------------------------------------------------------------------

/// Every operation by a node that does not own the qubit fails with NotOwner (with the
/// right fields) and changes nothing.
#[test]
fn not_owner_is_refused_and_changes_nothing() {
    let mut e = engine(seed(16), 3);
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
    let mine = e.alloc(0.0, B).unwrap();
    let err = |actor| EngineError::NotOwner {
        qubit: qa,
        owner: A,
        actor,
    };
    for actor in [B, M] {
        assert_eq!(e.gate1(0.0, actor, qa, Gate1::X), Err(err(actor)));
        assert_eq!(e.measure(0.0, actor, qa, Basis::Z), Err(err(actor)));
        assert_eq!(e.measure_free(0.0, actor, qa, Basis::X), Err(err(actor)));
        assert_eq!(e.free(0.0, actor, qa), Err(err(actor)));
        assert_eq!(e.reset(0.0, actor, qa), Err(err(actor)));
        assert_eq!(e.transfer(0.0, actor, qa, actor), Err(err(actor)));
    }
    // gate2 with one foreign qubit, in either position.
    assert_eq!(e.gate2(0.0, B, mine, qa, Gate2::Cnot), Err(err(B)));
    assert_eq!(e.gate2(0.0, B, qa, mine, Gate2::Cz), Err(err(B)));
    assert_eq!(e.gate2(0.0, B, qa, qb, Gate2::Swap), Err(err(B)));
    assert_eq!(e.owner(qa).unwrap(), A);
    assert_eq!(e.owned_count(A).unwrap(), 1);
    assert_eq!(e.owned_count(B).unwrap(), 2);
    assert_close(
        "fidelity after refused ops",
        e.fidelity(0.0, qa, qb, BellState::PhiPlus).unwrap(),
        1.0,
        EXACT,
    );
    assert_eq!(e.register_size(mine).unwrap(), 1);
    assert_eq!(e.register_size(qa).unwrap(), 2);
}

/// Dead ids (free, measure_free, transfer, drop_node) give NoSuchQubit everywhere,
/// forever, even after many allocations reuse their slots; new ids never repeat.
#[test]
fn dead_ids_stay_dead() {
    let mut e = engine(seed(17), 3);
    let mut dead = Vec::new();
    let q = e.alloc(0.0, A).unwrap();
    e.free(0.0, A, q).unwrap();
    dead.push(q);
    let q = e.alloc(0.0, A).unwrap();
    e.measure_free(0.0, A, q, Basis::X).unwrap();
    dead.push(q);
    // Transfer: the old id dies, the new one works for the receiver only.
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
    let moved = e.transfer(0.0, A, qa, M).unwrap();
    assert_ne!(moved, qa);
    dead.push(qa);
    assert_eq!(e.owner(moved).unwrap(), M);
    assert_eq!(e.owned_count(A).unwrap(), 0);
    assert_eq!(e.owned_count(M).unwrap(), 1);
    assert_close(
        "fidelity survives transfer",
        e.fidelity(0.0, moved, qb, BellState::PhiPlus).unwrap(),
        1.0,
        EXACT,
    );
    assert_eq!(
        e.gate1(0.0, A, moved, Gate1::X),
        Err(EngineError::NotOwner {
            qubit: moved,
            owner: M,
            actor: A
        })
    );
    e.gate1(0.0, M, moved, Gate1::X).unwrap();
    assert_close(
        "X on moved half",
        e.fidelity(0.0, moved, qb, BellState::PsiPlus).unwrap(),
        1.0,
        EXACT,
    );
    // drop_node kills ids too.
    let q = e.alloc(0.0, B).unwrap();
    e.drop_node(B).unwrap();
    dead.push(q);
    dead.push(qb);
    // A never-issued id.
    dead.push(QubitId(0xdead_beef_0000_1234));

    let mut issued: std::collections::HashSet<QubitId> = dead.iter().copied().collect();
    issued.insert(moved);
    for i in 0..2_000 {
        let q = e.alloc(0.0, A).unwrap();
        assert!(issued.insert(q), "id {q} issued twice");
        if i % 3 == 0 {
            e.measure_free(0.0, A, q, Basis::Z).unwrap();
        } else {
            e.free(0.0, A, q).unwrap();
        }
        dead.push(q);
    }
    for &q in &dead {
        let gone = EngineError::NoSuchQubit { qubit: q };
        for actor in [A, B, M] {
            assert_eq!(e.gate1(0.0, actor, q, Gate1::H), Err(gone.clone()));
            assert_eq!(e.measure(0.0, actor, q, Basis::Z), Err(gone.clone()));
            assert_eq!(e.free(0.0, actor, q), Err(gone.clone()));
            assert_eq!(e.reset(0.0, actor, q), Err(gone.clone()));
            assert_eq!(e.transfer(0.0, actor, q, A), Err(gone.clone()));
        }
        assert_eq!(e.owner(q), Err(gone.clone()));
        assert_eq!(e.register_size(q), Err(gone.clone()));
        assert_eq!(
            e.apply_noise(0.0, q, Noise::Depolarizing(0.1)),
            Err(gone.clone())
        );
        assert_eq!(
            e.fidelity(0.0, q, moved, BellState::PhiPlus),
            Err(gone.clone())
        );
        assert_eq!(e.gate2(0.0, M, moved, q, Gate2::Cnot), Err(gone.clone()));
    }
    assert_eq!(e.live_qubits(), vec![(moved, M)]);
    assert_eq!(e.stats().qubits, 1);
}

#[test]
fn unknown_node_and_same_qubit() {
    let mut e = engine(seed(18), 2);
    let ghost = NodeId(7);
    let unknown = EngineError::UnknownNode { node: ghost };
    assert_eq!(e.alloc(0.0, ghost), Err(unknown.clone()));
    assert_eq!(
        e.create_pair(0.0, A, ghost, BellState::PhiPlus, 1.0),
        Err(unknown.clone())
    );
    assert_eq!(
        e.create_pair(0.0, ghost, A, BellState::PhiPlus, 1.0),
        Err(unknown.clone())
    );
    assert_eq!(e.drop_node(ghost), Err(unknown.clone()));
    assert_eq!(e.owned_count(ghost), Err(unknown.clone()));
    assert_eq!(e.node_params(ghost), Err(unknown.clone()));
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::H).unwrap();
    assert_eq!(e.transfer(0.0, A, q, ghost), Err(unknown.clone()));
    assert_eq!(e.owner(q).unwrap(), A);
    assert_bloch(
        "after refused transfer",
        bloch(&mut e, 0.0, q),
        [1.0, 0.0, 0.0],
        EXACT,
    );
    // A node that does not exist owns nothing, so it gets NotOwner for live qubits.
    assert_eq!(
        e.gate1(0.0, ghost, q, Gate1::X),
        Err(EngineError::NotOwner {
            qubit: q,
            owner: A,
            actor: ghost
        })
    );
    assert_eq!(e.stats().qubits, 1);

    let same = EngineError::SameQubit { qubit: q };
    for g in [Gate2::Cnot, Gate2::Cz, Gate2::Swap] {
        assert_eq!(e.gate2(0.0, A, q, q, g), Err(same.clone()));
    }
    assert_eq!(e.reduced_density_matrix(0.0, &[q, q]).unwrap_err(), same);
    assert_eq!(e.fidelity(0.0, q, q, BellState::PhiPlus), Err(same));
    assert_bloch(
        "after SameQubit",
        bloch(&mut e, 0.0, q),
        [1.0, 0.0, 0.0],
        EXACT,
    );
}

/// The reduced state of every qubit and every pair of `qubits`, for "nothing
/// changed" checks (the oracle itself is capped at `max_mixed_qubits`).
fn joint(e: &mut Eng, qubits: &[QubitId]) -> Vec<DensityMatrix> {
    let mut out = Vec::new();
    for (i, &a) in qubits.iter().enumerate() {
        out.push(e.reduced_density_matrix(0.0, &[a]).unwrap());
        for &b in &qubits[i + 1..] {
            out.push(e.reduced_density_matrix(0.0, &[a, b]).unwrap());
        }
    }
    out
}

fn assert_same(what: &str, got: &[DensityMatrix], want: &[DensityMatrix]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_rho_close(what, g, w, EXACT);
    }
}

/// Measures `qubits` (with their owners) in X and returns the parity of the outcomes:
/// always 0 for a GHZ state, so a check that its coherence survived.
fn x_parity(e: &mut Eng, qubits: &[QubitId]) -> u8 {
    qubits.iter().fold(0, |acc, &q| {
        let owner = e.owner(q).unwrap();
        acc ^ e.measure(0.0, owner, q, Basis::X).unwrap()
    })
}

/// A GHZ state of `n` fresh qubits at `node`.
fn ghz(e: &mut Eng, node: NodeId, n: usize) -> Vec<QubitId> {
    let g: Vec<QubitId> = (0..n).map(|_| e.alloc(0.0, node).unwrap()).collect();
    e.gate1(0.0, node, g[0], Gate1::H).unwrap();
    for w in g.windows(2) {
        e.gate2(0.0, node, w[0], w[1], Gate2::Cnot).unwrap();
    }
    g
}

/// RegisterTooLarge when a merge or a conversion to a density matrix would pass a cap;
/// the state (and the register layout) is unchanged after the error.
#[test]
fn register_too_large_leaves_state_unchanged() {
    let config = EngineConfig {
        max_register_qubits: 4,
        max_mixed_qubits: 2,
    };
    let mut e = Engine::new(config, StdRng::seed_from_u64(seed(19)));
    e.add_node(A, NodeParams::IDEAL).unwrap();
    let g = ghz(&mut e, A, 3);
    let p = ghz(&mut e, A, 2);
    let all: Vec<QubitId> = g.iter().chain(&p).copied().collect();
    let before = joint(&mut e, &all);

    // Pure merge past 4.
    assert_eq!(
        e.gate2(0.0, A, g[0], p[0], Gate2::Cnot),
        Err(EngineError::RegisterTooLarge {
            qubits: 5,
            cap: 4,
            kind: "pure"
        })
    );
    // Noise would make the 3-qubit GHZ a density matrix past 2.
    let mixed_3 = EngineError::RegisterTooLarge {
        qubits: 3,
        cap: 2,
        kind: "mixed",
    };
    assert_eq!(
        e.apply_noise(0.0, g[1], Noise::Dephasing(0.1)),
        Err(mixed_3.clone())
    );
    // Tracing one qubit out of GHZ-3 leaves a 2-qubit mixed register: allowed.
    // Refusals above left the GHZ-3 and the pair untouched.
    assert_same("GHZ-3 and pair unchanged", &joint(&mut e, &all), &before);
    for &q in &g {
        assert_eq!(e.register_size(q).unwrap(), 3);
        assert!(!e.is_mixed(q).unwrap());
    }
    assert_eq!(e.register_size(p[0]).unwrap(), 2);
    assert_eq!(x_parity(&mut e, &p), 0);
    e.free(0.0, A, g[0]).unwrap();
    assert!(e.is_mixed(g[1]).unwrap());
    assert_eq!(e.register_size(g[1]).unwrap(), 2);

    // Freeing one qubit of a pure GHZ-4 would leave a 3-qubit density matrix past
    // the cap of 2. Free never fails (a crash cannot be refused): the qubit leaves
    // by a Z measurement nobody sees, which averaged over outcomes is the partial
    // trace. The other three are left in |000⟩ or |111⟩, still one pure register.
    let g4 = ghz(&mut e, A, 4);
    e.free(0.0, A, g4[3]).unwrap();
    assert_eq!(e.register_size(g4[0]).unwrap(), 3);
    assert!(!e.is_mixed(g4[0]).unwrap());
    let z: Vec<u8> = g4[..3]
        .iter()
        .map(|&q| e.measure(0.0, A, q, Basis::Z).unwrap())
        .collect();
    assert!(z == [0, 0, 0] || z == [1, 1, 1], "GHZ remainder {z:?}");

    // Merging a mixed pair with a pure qubit past the mixed cap.
    let (wa, wb) = e.create_pair(0.0, A, A, BellState::PhiPlus, 0.9).unwrap();
    let single = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, single, Gate1::H).unwrap();
    let three = [wa, wb, single];
    let before3 = joint(&mut e, &three);
    assert_eq!(
        e.gate2(0.0, A, single, wa, Gate2::Cnot),
        Err(EngineError::RegisterTooLarge {
            qubits: 3,
            cap: 2,
            kind: "mixed"
        })
    );
    assert_same(
        "Werner + single unchanged",
        &joint(&mut e, &three),
        &before3,
    );
    assert_eq!(e.register_size(single).unwrap(), 1);
    assert_eq!(e.register_size(wa).unwrap(), 2);
}

/// A node with a gate error needs a density matrix for the merged register of a
/// two-qubit gate. When that would pass the mixed cap the gate must fail without
/// changing the state — and without leaving the two registers merged.
#[test]
fn register_too_large_with_gate_error_leaves_registers_unmerged() {
    let config = EngineConfig {
        max_register_qubits: 8,
        max_mixed_qubits: 2,
    };
    let mut e = Engine::new(config, StdRng::seed_from_u64(seed(20)));
    e.add_node(A, NodeParams::IDEAL).unwrap();
    let noisy = NodeParams {
        gate_error: 0.01,
        ..NodeParams::IDEAL
    };
    let p = ghz(&mut e, A, 2);
    let single = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, single, Gate1::H).unwrap();
    e.add_node(A, noisy).unwrap();
    let three = [p[0], p[1], single];
    let before = joint(&mut e, &three);
    let stats = e.stats();
    assert_eq!(
        e.gate2(0.0, A, single, p[0], Gate2::Cnot),
        Err(EngineError::RegisterTooLarge {
            qubits: 3,
            cap: 2,
            kind: "mixed"
        })
    );
    assert_same("state after refused gate", &joint(&mut e, &three), &before);
    assert_eq!(
        e.stats(),
        stats,
        "register layout changed by a failed gate2"
    );
    assert_eq!(e.register_size(single).unwrap(), 1);
    // The qubit still works on its own at the noisy node (a one-qubit register may
    // become a density matrix), as it did before the refused gate.
    e.gate1(0.0, A, single, Gate1::H).unwrap();
    assert_bloch(
        "noisy H·H",
        bloch(&mut e, 0.0, single),
        [0.0, 0.0, 0.99],
        EXACT,
    );
}

/// A crash cannot be refused: drop_node loses every qubit of the node even when a
/// pure register is too large to become a density matrix (that qubit leaves by an
/// unseen Z measurement; averaged over outcomes this is the partial trace).
#[test]
fn drop_node_never_refuses() {
    let config = EngineConfig {
        max_register_qubits: 8,
        max_mixed_qubits: 2,
    };
    let mut e = Engine::new(config, StdRng::seed_from_u64(seed(30)));
    e.add_node(A, NodeParams::IDEAL).unwrap();
    e.add_node(B, NodeParams::IDEAL).unwrap();
    let lone = e.alloc(0.0, B).unwrap();
    e.gate1(0.0, B, lone, Gate1::H).unwrap();
    let g = ghz(&mut e, A, 4);
    let member = e.transfer(0.0, A, g[3], B).unwrap();
    assert_eq!(e.drop_node(B), Ok(2));
    assert_eq!(e.owned_count(B).unwrap(), 0);
    assert_eq!(e.owner(lone), Err(EngineError::NoSuchQubit { qubit: lone }));
    assert_eq!(
        e.owner(member),
        Err(EngineError::NoSuchQubit { qubit: member })
    );
    // A's three GHZ qubits are left in |000⟩ or |111⟩.
    let z: Vec<u8> = g[..3]
        .iter()
        .map(|&q| e.measure(0.0, A, q, Basis::Z).unwrap())
        .collect();
    assert!(z == [0, 0, 0] || z == [1, 1, 1], "GHZ remainder {z:?}");
}

#[test]
fn invalid_parameters() {
    let mut e = engine(seed(21), 1);
    let bad = |t1, t2, gate_error, readout_error| NodeParams {
        t1,
        t2,
        gate_error,
        readout_error,
    };
    let inf = f64::INFINITY;
    let invalid = [
        bad(1.0, 2.5, 0.0, 0.0), // T2 > 2·T1
        bad(2.0, inf, 0.0, 0.0), // T2 = ∞ > 2·T1
        bad(0.0, 0.0, 0.0, 0.0),
        bad(-1.0, 1.0, 0.0, 0.0),
        bad(f64::NAN, 1.0, 0.0, 0.0),
        bad(1.0, f64::NAN, 0.0, 0.0),
        bad(inf, inf, 1.5, 0.0),
        bad(inf, inf, -0.1, 0.0),
        bad(inf, inf, f64::NAN, 0.0),
        bad(inf, inf, 0.0, 2.0),
        bad(inf, inf, 0.0, -1e-9),
    ];
    let is_invalid =
        |r: Result<(), EngineError>| matches!(r, Err(EngineError::InvalidParameter(_)));
    for p in invalid {
        assert!(is_invalid(e.add_node(B, p)), "{p:?} accepted");
        assert!(is_invalid(e.set_node_params(0.0, A, p)), "{p:?} accepted");
    }
    assert_eq!(e.alloc(0.0, B), Err(EngineError::UnknownNode { node: B }));
    assert_eq!(e.node_params(A).unwrap(), NodeParams::IDEAL);
    // Valid edge cases.
    for p in [
        bad(1.0, 2.0, 0.0, 0.0), // T2 = 2·T1
        bad(inf, 1.0, 0.0, 0.0), // T1 = ∞, any T2
        bad(1.0, 1e-3, 1.0, 1.0),
        bad(inf, inf, 0.0, 0.0),
    ] {
        e.add_node(B, p).unwrap();
        assert_eq!(e.node_params(B).unwrap(), p);
    }
    e.add_node(B, NodeParams::IDEAL).unwrap();

    for f in [1.1, -0.1, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                e.create_pair(0.0, A, B, BellState::PhiPlus, f),
                Err(EngineError::InvalidParameter(_))
            ),
            "fidelity {f} accepted"
        );
    }
    assert_eq!(e.stats().qubits, 0);
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::H).unwrap();
    for n in [
        Noise::Depolarizing(1.5),
        Noise::Dephasing(-0.1),
        Noise::AmplitudeDamping(f64::NAN),
        Noise::AmplitudeDamping(1.0 + 1e-12),
    ] {
        assert!(
            matches!(
                e.apply_noise(0.0, q, n),
                Err(EngineError::InvalidParameter(_))
            ),
            "{n:?} accepted"
        );
    }
    assert_bloch(
        "after refused noise",
        bloch(&mut e, 0.0, q),
        [1.0, 0.0, 0.0],
        EXACT,
    );
    assert!(!e.is_mixed(q).unwrap());
}

// ---------------------------------------------------------------------------------
// 11. Gates, gate and readout error, noise channels
// ---------------------------------------------------------------------------------

/// The density matrix of a generic state after `gates`.
fn after(e: &mut Eng, gates: &[Gate1], theta: f64, phi: f64) -> DensityMatrix {
    let q = generic_qubit(e, 0.0, A, theta, phi);
    prepare(e, 0.0, A, q, gates);
    let rho = e.reduced_density_matrix(0.0, &[q]).unwrap();
    e.free(0.0, A, q).unwrap();
    rho
}

/// Gate identities, exact on density matrices (so up to a global phase), for several
/// input states; and the Bloch-sphere action of each gate.
#[test]
fn single_qubit_gate_identities() {
    use Gate1::*;
    let mut e = engine(seed(22), 1);
    let identities: Vec<(&str, Vec<Gate1>, Vec<Gate1>)> = vec![
        ("H·H = I", vec![H, H], vec![]),
        ("S·S = Z", vec![S, S], vec![Z]),
        ("T·T = S", vec![T, T], vec![S]),
        ("S·S† = I", vec![S, Sdg], vec![]),
        ("T·T† = I", vec![Tdg, T], vec![]),
        ("T†·T† = S†", vec![Tdg, Tdg], vec![Sdg]),
        ("Rx(π) = X", vec![Rx(PI)], vec![X]),
        ("Ry(π) = Y", vec![Ry(PI)], vec![Y]),
        ("Rz(π) = Z", vec![Rz(PI)], vec![Z]),
        ("Rz(π/2) = S", vec![Rz(PI / 2.0)], vec![S]),
        ("Rz(π/4) = T", vec![Rz(PI / 4.0)], vec![T]),
        ("HZH = X", vec![H, Z, H], vec![X]),
        ("HXH = Z", vec![H, X, H], vec![Z]),
        ("XZ = Y (up to phase)", vec![Z, X], vec![Y]),
        ("X·X = I", vec![X, X], vec![]),
        ("Y·Y = I", vec![Y, Y], vec![]),
        (
            "Rx(a)Rx(b) = Rx(a+b)",
            vec![Rx(0.3), Rx(1.4)],
            vec![Rx(1.7)],
        ),
        ("Rx(2π) = I (up to phase)", vec![Rx(2.0 * PI)], vec![]),
        ("H Rz(θ) H = Rx(θ)", vec![H, Rz(0.9), H], vec![Rx(0.9)]),
    ];
    for (theta, phi) in [(0.0, 0.0), (1.1, 0.4), (2.3, -1.9), (PI / 2.0, 0.0)] {
        for (name, lhs, rhs) in &identities {
            let l = after(&mut e, lhs, theta, phi);
            let r = after(&mut e, rhs, theta, phi);
            assert_rho_close(&format!("{name} on Ry({theta})Rz({phi})"), &l, &r, EXACT);
        }
        // Bloch action: (x, y, z) under each gate.
        let v = [
            theta.sin() * phi.cos(),
            theta.sin() * phi.sin(),
            theta.cos(),
        ];
        let a = 0.8f64;
        let (sa, ca) = a.sin_cos();
        let cases: [(Gate1, [f64; 3]); 8] = [
            (X, [v[0], -v[1], -v[2]]),
            (Y, [-v[0], v[1], -v[2]]),
            (Z, [-v[0], -v[1], v[2]]),
            (H, [v[2], -v[1], v[0]]),
            (S, [-v[1], v[0], v[2]]),
            (Rz(a), [ca * v[0] - sa * v[1], sa * v[0] + ca * v[1], v[2]]),
            (Rx(a), [v[0], ca * v[1] - sa * v[2], sa * v[1] + ca * v[2]]),
            (Ry(a), [ca * v[0] + sa * v[2], v[1], -sa * v[0] + ca * v[2]]),
        ];
        for (g, want) in cases {
            let q = generic_qubit(&mut e, 0.0, A, theta, phi);
            e.gate1(0.0, A, q, g).unwrap();
            assert_bloch(
                &format!("{g:?} on {v:?}"),
                bloch(&mut e, 0.0, q),
                want,
                EXACT,
            );
            e.free(0.0, A, q).unwrap();
        }
    }
}

#[test]
fn two_qubit_gates() {
    let mut e = engine(seed(23), 1);
    // CNOT on |+⟩|0⟩ makes Φ⁺.
    let (c, t) = (e.alloc(0.0, A).unwrap(), e.alloc(0.0, A).unwrap());
    e.gate1(0.0, A, c, Gate1::H).unwrap();
    e.gate2(0.0, A, c, t, Gate2::Cnot).unwrap();
    assert_close(
        "CNOT Φ⁺",
        e.fidelity(0.0, c, t, BellState::PhiPlus).unwrap(),
        1.0,
        EXACT,
    );
    assert_eq!(e.register_size(c).unwrap(), 2);
    e.free(0.0, A, c).unwrap();
    e.free(0.0, A, t).unwrap();

    // CNOT truth table: |ab⟩ → |a, a⊕b⟩ (oracle: first qubit = high bit).
    for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let (c, t) = (e.alloc(0.0, A).unwrap(), e.alloc(0.0, A).unwrap());
        if a == 1 {
            e.gate1(0.0, A, c, Gate1::X).unwrap();
        }
        if b == 1 {
            e.gate1(0.0, A, t, Gate1::X).unwrap();
        }
        e.gate2(0.0, A, c, t, Gate2::Cnot).unwrap();
        let rho = e.reduced_density_matrix(0.0, &[c, t]).unwrap();
        let idx = 2 * a + (a ^ b);
        assert_close(&format!("CNOT|{a}{b}⟩"), rho.get(idx, idx).re, 1.0, EXACT);
        e.free(0.0, A, c).unwrap();
        e.free(0.0, A, t).unwrap();
    }

    // SWAP exchanges two generic states.
    let (s1, s2) = ((1.1, 0.4), (2.3, -1.9));
    let q1 = generic_qubit(&mut e, 0.0, A, s1.0, s1.1);
    let q2 = generic_qubit(&mut e, 0.0, A, s2.0, s2.1);
    let (r1, r2) = (bloch(&mut e, 0.0, q1), bloch(&mut e, 0.0, q2));
    e.gate2(0.0, A, q1, q2, Gate2::Swap).unwrap();
    assert_bloch("SWAP q1", bloch(&mut e, 0.0, q1), r2, EXACT);
    assert_bloch("SWAP q2", bloch(&mut e, 0.0, q2), r1, EXACT);
    e.free(0.0, A, q1).unwrap();
    e.free(0.0, A, q2).unwrap();

    // SWAP of halves of two different Bell pairs moves the entanglement.
    let (a1, b1) = e.create_pair(0.0, A, A, BellState::PhiPlus, 1.0).unwrap();
    let (a2, b2) = e.create_pair(0.0, A, A, BellState::PsiMinus, 1.0).unwrap();
    e.gate2(0.0, A, b1, b2, Gate2::Swap).unwrap();
    assert_close(
        "SWAP pairs 1",
        e.fidelity(0.0, a1, b2, BellState::PhiPlus).unwrap(),
        1.0,
        EXACT,
    );
    assert_close(
        "SWAP pairs 2",
        e.fidelity(0.0, a2, b1, BellState::PsiMinus).unwrap(),
        1.0,
        EXACT,
    );
    for q in [a1, b1, a2, b2] {
        e.free(0.0, A, q).unwrap();
    }

    // CZ is symmetric, and CZ = (I⊗H)·CNOT·(I⊗H).
    let mk = |e: &mut Eng| {
        (
            generic_qubit(e, 0.0, A, 1.1, 0.4),
            generic_qubit(e, 0.0, A, 2.3, -1.9),
        )
    };
    let (a, b) = mk(&mut e);
    e.gate2(0.0, A, a, b, Gate2::Cz).unwrap();
    let ab = e.reduced_density_matrix(0.0, &[a, b]).unwrap();
    let (c, d) = mk(&mut e);
    e.gate2(0.0, A, d, c, Gate2::Cz).unwrap();
    let dc = e.reduced_density_matrix(0.0, &[c, d]).unwrap();
    assert_rho_close("CZ symmetric", &ab, &dc, EXACT);
    let (f, g) = mk(&mut e);
    e.gate1(0.0, A, g, Gate1::H).unwrap();
    e.gate2(0.0, A, f, g, Gate2::Cnot).unwrap();
    e.gate1(0.0, A, g, Gate1::H).unwrap();
    let fg = e.reduced_density_matrix(0.0, &[f, g]).unwrap();
    assert_rho_close("CZ = H·CNOT·H", &ab, &fg, EXACT);
    // CZ really does something on these states.
    let (h, k) = mk(&mut e);
    let plain = e.reduced_density_matrix(0.0, &[h, k]).unwrap();
    assert!((plain.get(1, 3) - ab.get(1, 3)).norm() > 0.1);
}

/// Readout error 0.1: |0⟩ reads 1 with frequency 0.1. N = 20,000; σ = √(0.1·0.9/N)
/// = 0.0021; 5σ. The qubit itself stays in the true post-measurement state (exact).
#[test]
fn readout_error() {
    let s = seed(24);
    let mut e = engine(s, 0);
    e.add_node(
        A,
        NodeParams {
            readout_error: 0.1,
            ..NodeParams::IDEAL
        },
    )
    .unwrap();
    const N: usize = 20_000;
    let q = e.alloc(0.0, A).unwrap();
    let mut ones = 0;
    for _ in 0..N {
        ones += usize::from(e.measure(0.0, A, q, Basis::Z).unwrap() == 1);
    }
    assert_bloch(
        "true state after misreads",
        bloch(&mut e, 0.0, q),
        [0.0, 0.0, 1.0],
        EXACT,
    );
    assert!(!e.is_mixed(q).unwrap());
    assert_stat(
        "readout error frequency",
        s,
        ones as f64 / N as f64,
        0.1,
        binomial_sigma(0.1, N),
    );
}

/// Gate error p: depolarizing after the gate. X on |0⟩ gives P(1) = 1 − p/2; CNOT
/// depolarizes both qubits. Exact.
#[test]
fn gate_error_is_depolarizing() {
    let mut e = engine(seed(25), 0);
    let p = 0.1;
    e.add_node(
        A,
        NodeParams {
            gate_error: p,
            ..NodeParams::IDEAL
        },
    )
    .unwrap();
    let q = e.alloc(0.0, A).unwrap();
    e.gate1(0.0, A, q, Gate1::X).unwrap();
    let rho = e.reduced_density_matrix(0.0, &[q]).unwrap();
    assert_close("P(1) after noisy X", rho.get(1, 1).re, 1.0 - p / 2.0, EXACT);
    // Two noisy X: (1−p)²·|0⟩ + the rest mixed: P(1) = (1 − (1−p)²)/2.
    e.gate1(0.0, A, q, Gate1::X).unwrap();
    let rho = e.reduced_density_matrix(0.0, &[q]).unwrap();
    assert_close(
        "P(1) after two noisy X",
        rho.get(1, 1).re,
        (1.0 - (1.0 - p).powi(2)) / 2.0,
        EXACT,
    );

    // Noisy CNOT on |10⟩ → |11⟩, each qubit then depolarized.
    let (c, t) = (e.alloc(0.0, A).unwrap(), e.alloc(0.0, A).unwrap());
    e.add_node(A, NodeParams::IDEAL).unwrap();
    e.gate1(0.0, A, c, Gate1::X).unwrap();
    e.add_node(
        A,
        NodeParams {
            gate_error: p,
            ..NodeParams::IDEAL
        },
    )
    .unwrap();
    e.gate2(0.0, A, c, t, Gate2::Cnot).unwrap();
    let rho = e.reduced_density_matrix(0.0, &[c, t]).unwrap();
    assert_close("P(11)", rho.get(3, 3).re, (1.0 - p / 2.0).powi(2), EXACT);
    assert_close("P(00)", rho.get(0, 0).re, (p / 2.0).powi(2), EXACT);
    // Noisy CNOT on |+⟩|0⟩: each qubit depolarized, Werner-like with w = (1−p)² ...
    // the Φ⁺ fidelity of (D_p ⊗ D_p)(Φ⁺) is 1 − 3/4·(1 − (1−p)²).
    let (c, t) = (e.alloc(0.0, A).unwrap(), e.alloc(0.0, A).unwrap());
    e.add_node(A, NodeParams::IDEAL).unwrap();
    e.gate1(0.0, A, c, Gate1::H).unwrap();
    e.add_node(
        A,
        NodeParams {
            gate_error: p,
            ..NodeParams::IDEAL
        },
    )
    .unwrap();
    e.gate2(0.0, A, c, t, Gate2::Cnot).unwrap();
    let w = (1.0 - p).powi(2);
    assert_close(
        "noisy CNOT Φ⁺ fidelity",
        e.fidelity(0.0, c, t, BellState::PhiPlus).unwrap(),
        w + (1.0 - w) / 4.0,
        EXACT,
    );
}

/// apply_noise channels on a generic Bloch vector (x, y, z), exact:
/// depolarizing p → (1−p)(x, y, z); dephasing p → ((1−2p)x, (1−2p)y, z);
/// amplitude damping γ → (√(1−γ)x, √(1−γ)y, γ + (1−γ)z). Depolarizing one half of Φ⁺
/// with p gives a Werner pair of F = 1 − 3p/4.
#[test]
fn noise_channels() {
    let mut e = engine(seed(26), 2);
    for (theta, phi) in [(1.1f64, 0.4f64), (2.3, -1.9), (PI, 0.0)] {
        let v = [
            theta.sin() * phi.cos(),
            theta.sin() * phi.sin(),
            theta.cos(),
        ];
        for p in [0.0f64, 0.2, 0.5, 1.0] {
            let k = (1.0 - p).sqrt();
            for (noise, want) in [
                (
                    Noise::Depolarizing(p),
                    [(1.0 - p) * v[0], (1.0 - p) * v[1], (1.0 - p) * v[2]],
                ),
                (
                    Noise::Dephasing(p),
                    [(1.0 - 2.0 * p) * v[0], (1.0 - 2.0 * p) * v[1], v[2]],
                ),
                (
                    Noise::AmplitudeDamping(p),
                    [k * v[0], k * v[1], p + (1.0 - p) * v[2]],
                ),
            ] {
                let q = generic_qubit(&mut e, 0.0, A, theta, phi);
                e.apply_noise(0.0, q, noise).unwrap();
                assert_bloch(
                    &format!("{noise:?} on {v:?}"),
                    bloch(&mut e, 0.0, q),
                    want,
                    EXACT,
                );
                assert_close("trace", e.register_trace(q).unwrap(), 1.0, EXACT);
                e.free(0.0, A, q).unwrap();
            }
        }
    }
    for p in [0.1, 0.4, 1.0] {
        let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
        e.apply_noise(0.0, qb, Noise::Depolarizing(p)).unwrap();
        let f = 1.0 - 3.0 * p / 4.0;
        for bell in BellState::ALL {
            let want = if bell == BellState::PhiPlus {
                f
            } else {
                (1.0 - f) / 3.0
            };
            assert_close(
                &format!("depolarized Φ⁺ (p={p}) vs {bell:?}"),
                e.fidelity(0.0, qa, qb, bell).unwrap(),
                want,
                EXACT,
            );
        }
        e.free(0.0, A, qa).unwrap();
        e.free(0.0, B, qb).unwrap();
    }
}

/// reset traces a qubit out: the partner keeps its reduced state, the qubit is |0⟩.
#[test]
fn reset_traces_out() {
    let mut e = engine(seed(27), 2);
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PsiPlus, 1.0).unwrap();
    e.reset(0.0, A, qa).unwrap();
    assert_eq!(e.register_size(qa).unwrap(), 1);
    assert_eq!(e.register_size(qb).unwrap(), 1);
    assert_bloch(
        "reset qubit",
        bloch(&mut e, 0.0, qa),
        [0.0, 0.0, 1.0],
        EXACT,
    );
    assert_rho_close(
        "partner",
        &e.reduced_density_matrix(0.0, &[qb]).unwrap(),
        &half_identity(),
        EXACT,
    );
    assert_eq!(e.owner(qa).unwrap(), A);
    assert_eq!(e.stats().qubits, 2);
}

// ---------------------------------------------------------------------------------
// 12. Determinism
// ---------------------------------------------------------------------------------

/// A mixed workload; returns every measurement outcome in order.
fn workload(seed: u64) -> Vec<u8> {
    let mut e = engine(seed, 3);
    let mut out = Vec::new();
    let bases = [
        Basis::Z,
        Basis::X,
        Basis::Y,
        Basis::Rotated {
            theta: 0.7,
            phi: 1.9,
        },
    ];
    for i in 0..100 {
        let (qa, qb) = e
            .create_pair(i as f64, A, B, BellState::ALL[i % 4], 0.85)
            .unwrap();
        out.push(e.measure_free(i as f64, A, qa, bases[i % 4]).unwrap());
        out.push(e.measure_free(i as f64, B, qb, bases[(i / 4) % 4]).unwrap());
        let psi = generic_qubit(&mut e, i as f64, M, 1.0, 0.3 * i as f64);
        let (m, b) = e
            .create_pair(i as f64, M, B, BellState::PhiPlus, 0.9)
            .unwrap();
        let (m1, m2) = bell_measure(&mut e, i as f64, M, psi, m);
        out.extend([m1, m2, e.measure_free(i as f64, B, b, Basis::X).unwrap()]);
    }
    out
}

#[test]
fn determinism() {
    let s = seed(28);
    let first = workload(s);
    assert_eq!(first.len(), 500);
    assert_eq!(
        first,
        workload(s),
        "same seed, different outcomes (seed {s})"
    );
    // 500 outcomes, most of them fair coins: equal by chance with probability ~2^-300.
    assert_ne!(
        first,
        workload(s.wrapping_add(1)),
        "seeds {s} and {} agree",
        s.wrapping_add(1)
    );
}

// ---------------------------------------------------------------------------------
// 13. Registers stay small
// ---------------------------------------------------------------------------------

#[test]
fn registers_split_and_ghz() {
    let s = seed(29);
    let mut e = engine(s, 5);
    // Measuring and freeing split qubits out.
    let (qa, qb) = e.create_pair(0.0, A, B, BellState::PhiPlus, 1.0).unwrap();
    assert_eq!(e.register_size(qa).unwrap(), 2);
    assert_eq!(
        e.stats(),
        qnet_broker::engine::EngineStats {
            qubits: 2,
            registers: 1,
            largest_register: 2,
            state_bytes: e.stats().state_bytes
        }
    );
    e.measure(0.0, A, qa, Basis::X).unwrap();
    assert_eq!(e.register_size(qa).unwrap(), 1);
    assert_eq!(e.register_size(qb).unwrap(), 1);
    assert_eq!((e.stats().qubits, e.stats().registers), (2, 2));
    let (qc, qd) = e.create_pair(0.0, A, B, BellState::PhiPlus, 0.8).unwrap();
    e.free(0.0, A, qc).unwrap();
    assert_eq!(e.register_size(qd).unwrap(), 1);
    assert_rho_close(
        "partner of a freed qubit",
        &e.reduced_density_matrix(0.0, &[qd]).unwrap(),
        &half_identity(),
        EXACT,
    );
    assert_eq!((e.stats().qubits, e.stats().registers), (3, 3));
    for (q, n) in [(qa, A), (qb, B), (qd, B)] {
        e.free(0.0, n, q).unwrap();
    }
    assert_eq!(e.stats(), Default::default());

    // GHZ-5 spread over five nodes: Z outcomes all equal, X outcomes have even parity
    // (⟨X⊗5⟩ = +1). 100 shots each.
    for basis in [Basis::Z, Basis::X] {
        let mut firsts = [0usize; 2];
        for _ in 0..100 {
            let g = ghz(&mut e, A, 5);
            let g: Vec<(QubitId, NodeId)> = g
                .into_iter()
                .enumerate()
                .map(|(i, q)| {
                    let n = NodeId(i as u32);
                    if n == A {
                        (q, A)
                    } else {
                        (e.transfer(0.0, A, q, n).unwrap(), n)
                    }
                })
                .collect();
            for &(q, _) in &g {
                assert_eq!(e.register_size(q).unwrap(), 5);
            }
            assert_eq!(e.stats().qubits, 5);
            assert_eq!(e.stats().largest_register, 5);
            let mut outs = Vec::new();
            for (i, &(q, n)) in g.iter().enumerate() {
                outs.push(e.measure(0.0, n, q, basis).unwrap());
                assert_eq!(e.register_size(q).unwrap(), 1);
                for &(r, _) in &g[i + 1..] {
                    assert!(e.register_size(r).unwrap() < 5 - i);
                }
            }
            firsts[outs[0] as usize] += 1;
            if basis == Basis::Z {
                assert!(
                    outs.iter().all(|&o| o == outs[0]),
                    "GHZ Z outcomes {outs:?} (seed {s})"
                );
            } else {
                let parity = outs.iter().fold(0, |a, &o| a ^ o);
                assert_eq!(parity, 0, "GHZ X outcomes {outs:?} (seed {s})");
            }
            assert_eq!(e.stats().largest_register, 1);
            for (q, n) in g {
                e.free(0.0, n, q).unwrap();
            }
        }
        assert!(firsts[0] > 20 && firsts[1] > 20, "{firsts:?} (seed {s})");
    }
    assert_eq!(e.stats().qubits, 0);
}
