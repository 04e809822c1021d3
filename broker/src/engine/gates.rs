//! Gate matrices, measurement bases and noise channels as small dense matrices.
//!
//! Conventions: a one-qubit matrix is row-major `[m00, m01, m10, m11]`; a two-qubit
//! matrix is row-major 4×4 in the basis |ab⟩ = |00⟩, |01⟩, |10⟩, |11⟩ where `a` is the
//! first qubit named (the control of CNOT).

use num_complex::Complex64 as C;
use qnet_common::Basis;

/// A row-major 2×2 complex matrix.
pub type Mat2 = [C; 4];
/// A row-major 4×4 complex matrix.
pub type Mat4 = [C; 16];

const fn c(re: f64, im: f64) -> C {
    C::new(re, im)
}

const ZERO: C = c(0.0, 0.0);
const ONE: C = c(1.0, 0.0);

/// A single-qubit gate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gate1 {
    /// Pauli X (bit flip).
    X,
    /// Pauli Y.
    Y,
    /// Pauli Z (phase flip).
    Z,
    /// Hadamard.
    H,
    /// Phase gate diag(1, i).
    S,
    /// S† = diag(1, −i).
    Sdg,
    /// π/8 gate diag(1, e^{iπ/4}).
    T,
    /// T† = diag(1, e^{−iπ/4}).
    Tdg,
    /// Rotation about X by the angle in radians: e^{−iθX/2}.
    Rx(f64),
    /// Rotation about Y by the angle in radians: e^{−iθY/2}.
    Ry(f64),
    /// Rotation about Z by the angle in radians: e^{−iθZ/2}.
    Rz(f64),
}

/// A two-qubit gate. The first qubit named is `a`, the second `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate2 {
    /// Controlled-NOT with `a` the control and `b` the target.
    Cnot,
    /// Controlled-Z (symmetric).
    Cz,
    /// Exchange of the two qubits' states.
    Swap,
}

impl Gate1 {
    /// The gate's unitary.
    pub fn matrix(self) -> Mat2 {
        let h = std::f64::consts::FRAC_1_SQRT_2;
        match self {
            Gate1::X => [ZERO, ONE, ONE, ZERO],
            Gate1::Y => [ZERO, c(0.0, -1.0), c(0.0, 1.0), ZERO],
            Gate1::Z => [ONE, ZERO, ZERO, c(-1.0, 0.0)],
            Gate1::H => [c(h, 0.0), c(h, 0.0), c(h, 0.0), c(-h, 0.0)],
            Gate1::S => [ONE, ZERO, ZERO, c(0.0, 1.0)],
            Gate1::Sdg => [ONE, ZERO, ZERO, c(0.0, -1.0)],
            Gate1::T => [ONE, ZERO, ZERO, c(h, h)],
            Gate1::Tdg => [ONE, ZERO, ZERO, c(h, -h)],
            Gate1::Rx(t) => {
                let (s, co) = (t / 2.0).sin_cos();
                [c(co, 0.0), c(0.0, -s), c(0.0, -s), c(co, 0.0)]
            }
            Gate1::Ry(t) => {
                let (s, co) = (t / 2.0).sin_cos();
                [c(co, 0.0), c(-s, 0.0), c(s, 0.0), c(co, 0.0)]
            }
            Gate1::Rz(t) => {
                let (s, co) = (t / 2.0).sin_cos();
                [c(co, -s), ZERO, ZERO, c(co, s)]
            }
        }
    }
}

impl Gate2 {
    /// The gate's unitary in the |ab⟩ basis.
    pub fn matrix(self) -> Mat4 {
        let mut m = [ZERO; 16];
        let perm: [usize; 4] = match self {
            Gate2::Cnot => [0, 1, 3, 2],
            Gate2::Swap => [0, 2, 1, 3],
            Gate2::Cz => [0, 1, 2, 3],
        };
        for (row, col) in perm.into_iter().enumerate() {
            m[row * 4 + col] = ONE;
        }
        if self == Gate2::Cz {
            m[15] = c(-1.0, 0.0);
        }
        m
    }
}

/// The unitary `B` whose columns are the basis states of `basis`: `B|0⟩` is the state
/// reported as outcome 0, `B|1⟩` as outcome 1. Measuring in `basis` is applying `B†`
/// and measuring in Z.
pub fn basis_change(basis: Basis) -> Option<Mat2> {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    match basis {
        Basis::Z => None,
        Basis::X => Some(Gate1::H.matrix()),
        // S·H: |0⟩ → |+i⟩, |1⟩ → |−i⟩.
        Basis::Y => Some([c(h, 0.0), c(h, 0.0), c(0.0, h), c(0.0, -h)]),
        Basis::Rotated { theta, phi } => {
            // Rz(φ)·Ry(θ) up to a global phase: columns are the Bloch vectors
            // (θ, φ) and the antipode.
            let (s, co) = (theta / 2.0).sin_cos();
            let e = C::from_polar(1.0, phi);
            Some([c(co, 0.0), c(-s, 0.0), e * s, e * co])
        }
    }
}

/// The conjugate transpose of a 2×2 matrix.
pub fn dagger(m: &Mat2) -> Mat2 {
    [m[0].conj(), m[2].conj(), m[1].conj(), m[3].conj()]
}

/// The element-wise complex conjugate of a 2×2 matrix.
pub fn conj2(m: &Mat2) -> Mat2 {
    [m[0].conj(), m[1].conj(), m[2].conj(), m[3].conj()]
}

/// The element-wise complex conjugate of a 4×4 matrix.
pub fn conj4(m: &Mat4) -> Mat4 {
    let mut out = *m;
    for x in &mut out {
        *x = x.conj();
    }
    out
}

/// A single-qubit channel as a superoperator acting on the four entries
/// (ρ00, ρ01, ρ10, ρ11) of a qubit's 2×2 block: `S[(a,b),(a',b')] = Σ_k K[a,a'] K*[b,b']`.
pub type Superop = [[f64; 4]; 4];

/// A noise channel on one qubit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Noise {
    /// ρ → (1 − p)·ρ + p·I/2: with probability `p` the qubit is replaced by the
    /// maximally mixed state.
    Depolarizing(f64),
    /// ρ → (1 − p)·ρ + p·ZρZ: coherences shrink by the factor 1 − 2p.
    Dephasing(f64),
    /// Energy relaxation |1⟩ → |0⟩ with probability γ (Kraus operators
    /// [[1, 0], [0, √(1−γ)]] and [[0, √γ], [0, 0]]).
    AmplitudeDamping(f64),
}

impl Noise {
    /// The channel's parameter, which must lie in [0, 1].
    pub fn parameter(self) -> f64 {
        match self {
            Noise::Depolarizing(p) | Noise::Dephasing(p) | Noise::AmplitudeDamping(p) => p,
        }
    }

    /// The channel as a real superoperator (all three channels here have real
    /// superoperators in the computational basis).
    pub fn superop(self) -> Superop {
        match self {
            Noise::Depolarizing(p) => {
                let keep = 1.0 - p;
                let half = p / 2.0;
                [
                    [keep + half, 0.0, 0.0, half],
                    [0.0, keep, 0.0, 0.0],
                    [0.0, 0.0, keep, 0.0],
                    [half, 0.0, 0.0, keep + half],
                ]
            }
            Noise::Dephasing(p) => {
                let f = 1.0 - 2.0 * p;
                [
                    [1.0, 0.0, 0.0, 0.0],
                    [0.0, f, 0.0, 0.0],
                    [0.0, 0.0, f, 0.0],
                    [0.0, 0.0, 0.0, 1.0],
                ]
            }
            Noise::AmplitudeDamping(g) => {
                let s = (1.0 - g).sqrt();
                [
                    [1.0, 0.0, 0.0, g],
                    [0.0, s, 0.0, 0.0],
                    [0.0, 0.0, s, 0.0],
                    [0.0, 0.0, 0.0, 1.0 - g],
                ]
            }
        }
    }
}

/// The superoperator of memory decoherence over `dt` seconds for a qubit with
/// relaxation time `t1` and dephasing time `t2` (either may be infinite): amplitude
/// damping with γ = 1 − e^(−dt/T1), then extra pure dephasing so that coherences decay
/// as e^(−dt/T2) in total (amplitude damping alone gives e^(−dt/2T1); T2 ≤ 2·T1 is
/// required). Returns `None` when nothing would change.
pub fn memory_superop(dt: f64, t1: f64, t2: f64) -> Option<Superop> {
    if dt <= 0.0 || (t1.is_infinite() && t2.is_infinite()) {
        return None;
    }
    let gamma = 1.0 - (-dt / t1).exp();
    // Coherence factor e^(−dt/T2); population transfer γ.
    let coherence = (-dt / t2).exp();
    Some([
        [1.0, 0.0, 0.0, gamma],
        [0.0, coherence, 0.0, 0.0],
        [0.0, 0.0, coherence, 0.0],
        [0.0, 0.0, 0.0, 1.0 - gamma],
    ])
}
