//! One register: the joint state of a set of qubits entangled with each other.
//!
//! Qubit at position `k` of a register is bit `k` of the basis index (little-endian).
//! A pure register holds a state vector of length 2^n. A mixed register holds a
//! row-major 2^n × 2^n density matrix whose flat index is `(row << n) | col`, so the
//! same kernels act on it as on a state vector of 2n qubits: a unitary `U` on qubit
//! `k` is `U` on "row bit" `n + k` and `U*` on "column bit" `k`.

use num_complex::Complex64 as C;
use smallvec::SmallVec;

use super::gates::{Mat2, Mat4, Superop, conj2, conj4};

/// The state of a register.
#[derive(Clone, Debug)]
pub(crate) enum State {
    /// A state vector of length 2^n.
    Pure(Vec<C>),
    /// A row-major density matrix of size 2^n × 2^n.
    Mixed(Vec<C>),
}

/// A register: the slots of its qubits (position = bit) and their joint state.
#[derive(Clone, Debug)]
pub(crate) struct Register {
    pub qubits: SmallVec<[u32; 4]>,
    pub state: State,
}

impl Register {
    /// A one-qubit register in the pure state `amp0|0⟩ + amp1|1⟩`.
    pub fn single(slot: u32, amp0: C, amp1: C) -> Self {
        Register {
            qubits: SmallVec::from_slice(&[slot]),
            state: State::Pure(vec![amp0, amp1]),
        }
    }

    /// Number of qubits.
    pub fn len(&self) -> usize {
        self.qubits.len()
    }

    /// Position (bit) of a slot in this register.
    pub fn position(&self, slot: u32) -> usize {
        self.qubits
            .iter()
            .position(|&s| s == slot)
            .expect("slot table and register disagree")
    }

    /// True when the register holds a density matrix.
    pub fn is_mixed(&self) -> bool {
        matches!(self.state, State::Mixed(_))
    }

    /// Turns a pure register into a density matrix ρ = |ψ⟩⟨ψ|.
    pub fn make_mixed(&mut self) {
        if let State::Pure(v) = &self.state {
            let d = v.len();
            let mut rho = Vec::with_capacity(d * d);
            for r in v {
                for c in v {
                    rho.push(r * c.conj());
                }
            }
            self.state = State::Mixed(rho);
        }
    }

    /// Applies a unitary to the qubit at position `k`.
    pub fn apply1(&mut self, k: usize, m: &Mat2) {
        let n = self.len();
        match &mut self.state {
            State::Pure(v) => apply1(v, k, m),
            State::Mixed(rho) => {
                apply1(rho, n + k, m);
                apply1(rho, k, &conj2(m));
            }
        }
    }

    /// Applies a two-qubit unitary to the qubits at positions `a` and `b`.
    pub fn apply2(&mut self, a: usize, b: usize, m: &Mat4) {
        let n = self.len();
        match &mut self.state {
            State::Pure(v) => apply2(v, a, b, m),
            State::Mixed(rho) => {
                apply2(rho, n + a, n + b, m);
                apply2(rho, a, b, &conj4(m));
            }
        }
    }

    /// Applies a single-qubit channel to position `k`; the register must be mixed.
    pub fn apply_superop(&mut self, k: usize, s: &Superop) {
        let n = self.len();
        let State::Mixed(rho) = &mut self.state else {
            unreachable!("channels act on density matrices only");
        };
        let cbit = 1usize << k;
        let rbit = 1usize << (n + k);
        for i in 0..rho.len() {
            if i & (cbit | rbit) != 0 {
                continue;
            }
            let idx = [i, i | cbit, i | rbit, i | rbit | cbit];
            let old = idx.map(|j| rho[j]);
            for (row, &j) in s.iter().zip(&idx) {
                rho[j] = old[0] * row[0] + old[1] * row[1] + old[2] * row[2] + old[3] * row[3];
            }
        }
    }

    /// Probability that the qubit at position `k` reads 1 in Z.
    pub fn prob_one(&self, k: usize) -> f64 {
        let n = self.len();
        let bit = 1usize << k;
        let p: f64 = match &self.state {
            State::Pure(v) => v
                .iter()
                .enumerate()
                .filter(|(i, _)| i & bit != 0)
                .map(|(_, a)| a.norm_sqr())
                .sum(),
            State::Mixed(rho) => {
                let d = 1usize << n;
                (0..d)
                    .filter(|i| i & bit != 0)
                    .map(|i| rho[i * d + i].re)
                    .sum()
            }
        };
        p.clamp(0.0, 1.0)
    }

    /// Projects position `k` onto `outcome` (whose probability is `p`) and removes it
    /// from the register, leaving the rest normalised.
    pub fn project_out(&mut self, k: usize, outcome: u8, p: f64) {
        let n = self.len();
        match &mut self.state {
            State::Pure(v) => {
                let scale = 1.0 / p.sqrt();
                let out = (0..v.len() / 2)
                    .map(|i| v[insert_bit(i, k, outcome)] * scale)
                    .collect();
                *v = out;
            }
            State::Mixed(rho) => {
                let d = 1usize << (n - 1);
                let full = 1usize << n;
                let scale = 1.0 / p;
                let mut out = Vec::with_capacity(d * d);
                for r in 0..d {
                    let rr = insert_bit(r, k, outcome) * full;
                    for c in 0..d {
                        out.push(rho[rr + insert_bit(c, k, outcome)] * scale);
                    }
                }
                *rho = out;
            }
        }
        self.qubits.remove(k);
    }

    /// Traces out position `k` and removes it. A pure register with more than one
    /// qubit becomes mixed.
    pub fn trace_out(&mut self, k: usize) {
        let n = self.len();
        let full = 1usize << n;
        let d = full / 2;
        let mut out = vec![C::new(0.0, 0.0); d * d];
        match &self.state {
            State::Pure(v) => {
                for b in 0..2u8 {
                    for r in 0..d {
                        let vr = v[insert_bit(r, k, b)];
                        if vr == C::new(0.0, 0.0) {
                            continue;
                        }
                        for c in 0..d {
                            out[r * d + c] += vr * v[insert_bit(c, k, b)].conj();
                        }
                    }
                }
            }
            State::Mixed(rho) => {
                for b in 0..2u8 {
                    for r in 0..d {
                        let rr = insert_bit(r, k, b) * full;
                        for c in 0..d {
                            out[r * d + c] += rho[rr + insert_bit(c, k, b)];
                        }
                    }
                }
            }
        }
        self.state = State::Mixed(out);
        self.qubits.remove(k);
    }

    /// The tensor product `self ⊗ other`: `other`'s qubits take the positions after
    /// `self`'s.
    pub fn tensor(self, other: Register) -> Register {
        let na = self.len();
        let mut qubits = self.qubits;
        qubits.extend_from_slice(&other.qubits);
        let state = match (self.state, other.state) {
            (State::Pure(a), State::Pure(b)) => {
                let mut v = Vec::with_capacity(a.len() * b.len());
                for y in &b {
                    for x in &a {
                        v.push(x * y);
                    }
                }
                State::Pure(v)
            }
            (sa, sb) => {
                let ra = to_density(sa);
                let rb = to_density(sb);
                let da = 1usize << na;
                let db = (rb.len() as f64).sqrt() as usize;
                let d = da * db;
                let mut rho = vec![C::new(0.0, 0.0); d * d];
                for rb_i in 0..db {
                    for cb_i in 0..db {
                        let y = rb[rb_i * db + cb_i];
                        if y == C::new(0.0, 0.0) {
                            continue;
                        }
                        for ra_i in 0..da {
                            let row = (rb_i * da + ra_i) * d;
                            for ca_i in 0..da {
                                rho[row + cb_i * da + ca_i] = ra[ra_i * da + ca_i] * y;
                            }
                        }
                    }
                }
                State::Mixed(rho)
            }
        };
        Register { qubits, state }
    }

    /// The reduced density matrix of the qubits at `positions`, in that order with the
    /// first position as the most significant bit of the result's index.
    pub fn reduced(&self, positions: &[usize]) -> Vec<C> {
        let n = self.len();
        let m = positions.len();
        let dk = 1usize << m;
        let rest: Vec<usize> = (0..n).filter(|p| !positions.contains(p)).collect();
        let dr = 1usize << rest.len();
        // Full index from (kept value in output order, rest value).
        let index = |kept: usize, other: usize| -> usize {
            let mut i = 0usize;
            for (j, &p) in positions.iter().enumerate() {
                if kept >> (m - 1 - j) & 1 == 1 {
                    i |= 1 << p;
                }
            }
            for (j, &p) in rest.iter().enumerate() {
                if other >> j & 1 == 1 {
                    i |= 1 << p;
                }
            }
            i
        };
        let mut out = vec![C::new(0.0, 0.0); dk * dk];
        match &self.state {
            State::Pure(v) => {
                for o in 0..dr {
                    for r in 0..dk {
                        let a = v[index(r, o)];
                        for c in 0..dk {
                            out[r * dk + c] += a * v[index(c, o)].conj();
                        }
                    }
                }
            }
            State::Mixed(rho) => {
                let full = 1usize << n;
                for o in 0..dr {
                    for r in 0..dk {
                        let ri = index(r, o) * full;
                        for c in 0..dk {
                            out[r * dk + c] += rho[ri + index(c, o)];
                        }
                    }
                }
            }
        }
        out
    }

    /// Trace of the state (1 for a valid state).
    pub fn trace(&self) -> f64 {
        match &self.state {
            State::Pure(v) => v.iter().map(|a| a.norm_sqr()).sum(),
            State::Mixed(rho) => {
                let d = 1usize << self.len();
                (0..d).map(|i| rho[i * d + i].re).sum()
            }
        }
    }

    /// Heap bytes held by the state.
    pub fn state_bytes(&self) -> usize {
        match &self.state {
            State::Pure(v) | State::Mixed(v) => v.capacity() * size_of::<C>(),
        }
    }
}

fn to_density(s: State) -> Vec<C> {
    match s {
        State::Mixed(rho) => rho,
        State::Pure(v) => {
            let mut rho = Vec::with_capacity(v.len() * v.len());
            for r in &v {
                for c in &v {
                    rho.push(r * c.conj());
                }
            }
            rho
        }
    }
}

/// Inserts `bit` at position `k` of `i`, shifting the higher bits up.
#[inline]
fn insert_bit(i: usize, k: usize, bit: u8) -> usize {
    let low = i & ((1usize << k) - 1);
    ((i >> k) << (k + 1)) | ((bit as usize) << k) | low
}

/// Applies a 2×2 matrix to bit `k` of a vector of amplitudes.
pub(crate) fn apply1(v: &mut [C], k: usize, m: &Mat2) {
    let s = 1usize << k;
    let [m00, m01, m10, m11] = *m;
    let diagonal = m01 == C::new(0.0, 0.0) && m10 == C::new(0.0, 0.0);
    for chunk in v.chunks_exact_mut(2 * s) {
        let (lo, hi) = chunk.split_at_mut(s);
        if diagonal {
            if m00 != C::new(1.0, 0.0) {
                lo.iter_mut().for_each(|a| *a *= m00);
            }
            hi.iter_mut().for_each(|b| *b *= m11);
        } else {
            for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                let (x, y) = (*a, *b);
                *a = m00 * x + m01 * y;
                *b = m10 * x + m11 * y;
            }
        }
    }
}

/// Applies a 4×4 matrix to bits (`a`, `b`) of a vector, `a` the high bit of the
/// matrix's local index.
pub(crate) fn apply2(v: &mut [C], a: usize, b: usize, m: &Mat4) {
    let sa = 1usize << a;
    let sb = 1usize << b;
    for i in 0..v.len() {
        if i & (sa | sb) != 0 {
            continue;
        }
        let idx = [i, i | sb, i | sa, i | sa | sb];
        let old = idx.map(|j| v[j]);
        for (row, &j) in idx.iter().enumerate() {
            let r = &m[row * 4..row * 4 + 4];
            v[j] = r[0] * old[0] + r[1] * old[1] + r[2] * old[2] + r[3] * old[3];
        }
    }
}
