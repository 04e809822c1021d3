//! The quantum-state engine: every qubit of a network, its owner and the joint state.
//!
//! A pure library: no I/O, no async, no clock. The caller passes the emulated time
//! `now` (seconds since the start of the run) to every call, and the random number
//! generator is injected, so the same seed and the same calls give the same outcomes.
//!
//! # State
//! The state is *factored*: a set of registers, each the joint state of qubits that
//! are entangled with each other. A two-qubit gate across registers merges them; a
//! measured, reset, freed or lost qubit is split out again, so registers stay small
//! (pairs, GHZ states) and memory grows with the number of qubits. A register is a
//! state vector while pure and a density matrix once noise has touched it.
//!
//! # Ownership
//! Every qubit has exactly one owner node. Every operation names the acting node and
//! fails with [`EngineError::NotOwner`] if that node does not own the qubit, or with
//! [`EngineError::NoSuchQubit`] if the id was freed, measured-and-freed, lost or
//! transferred. Ids are never reused. There is no copy operation.
//!
//! # Noise
//! Each node has [`NodeParams`]: memory T1/T2, applied lazily for the emulated time
//! since a qubit was last touched, a depolarizing gate error after every gate and a
//! classical readout flip. Local channels on different qubits commute with each
//! other and with operations elsewhere, so applying a qubit's memory noise only when
//! it is next touched is exact.

mod gates;
mod register;

use num_complex::Complex64 as C;
use qnet_common::{Basis, BellState, NodeId, QubitId};
use rand::{Rng, RngExt};

pub use gates::{Gate1, Gate2, Mat2, Noise, basis_change};
use register::{Register, State};

/// An error from the engine. Every failed call leaves the quantum state as it was,
/// except that memory decoherence up to `now` may already have been applied (which
/// would have happened at the next touch anyway).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The id does not name a live qubit: it was freed, lost, measured-and-freed or
    /// transferred (a transfer gives the receiver a new id), or it never existed.
    #[error("no such qubit: {qubit}")]
    NoSuchQubit {
        /// The id that was used.
        qubit: QubitId,
    },
    /// The acting node does not own the qubit.
    #[error("{actor} does not own {qubit} (owned by {owner})")]
    NotOwner {
        /// The qubit.
        qubit: QubitId,
        /// Its owner.
        owner: NodeId,
        /// The node that tried to act on it.
        actor: NodeId,
    },
    /// The node was never added with [`Engine::add_node`].
    #[error("unknown node {node}")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// The operation would make a register larger than the configured cap.
    #[error(
        "register of {qubits} qubits would exceed the cap of {cap} qubits for {kind} registers"
    )]
    RegisterTooLarge {
        /// Qubits the register would have.
        qubits: usize,
        /// The cap that applies.
        cap: usize,
        /// "pure" (state vector) or "mixed" (density matrix).
        kind: &'static str,
    },
    /// A two-qubit operation named the same qubit twice.
    #[error("the same qubit {qubit} was named twice")]
    SameQubit {
        /// The qubit.
        qubit: QubitId,
    },
    /// A parameter is out of range (a probability outside [0, 1], T2 > 2·T1, …).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// Result type of the engine.
pub type Result<T> = std::result::Result<T, EngineError>;

/// Limits of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Largest register held as a state vector (16 qubits = 1 MiB).
    pub max_register_qubits: usize,
    /// Largest register held as a density matrix (12 qubits = 256 MiB). A register
    /// that noise would turn into a density matrix beyond this fails instead.
    pub max_mixed_qubits: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_register_qubits: 16,
            max_mixed_qubits: 12,
        }
    }
}

/// Per-node physical parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeParams {
    /// Energy relaxation time in emulated seconds (`f64::INFINITY`: none).
    pub t1: f64,
    /// Dephasing time in emulated seconds (`f64::INFINITY`: none); at most 2·T1.
    pub t2: f64,
    /// Depolarizing probability applied to every qubit a gate acts on.
    pub gate_error: f64,
    /// Probability that a measurement reports the flipped outcome.
    pub readout_error: f64,
}

impl NodeParams {
    /// A perfect node: no decoherence, no gate or readout error.
    pub const IDEAL: NodeParams = NodeParams {
        t1: f64::INFINITY,
        t2: f64::INFINITY,
        gate_error: 0.0,
        readout_error: 0.0,
    };

    fn validate(&self) -> Result<()> {
        if self.t1.is_nan() || self.t2.is_nan() || self.t1 <= 0.0 || self.t2 <= 0.0 {
            return Err(EngineError::InvalidParameter(format!(
                "T1 and T2 must be positive (T1 = {}, T2 = {})",
                self.t1, self.t2
            )));
        }
        if self.t2 > 2.0 * self.t1 {
            return Err(EngineError::InvalidParameter(format!(
                "T2 = {} s exceeds 2·T1 = {} s",
                self.t2,
                2.0 * self.t1
            )));
        }
        check_probability("gate_error", self.gate_error)?;
        check_probability("readout_error", self.readout_error)
    }
}

fn check_probability(what: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(EngineError::InvalidParameter(format!(
            "{what} = {p} is not a probability in [0, 1]"
        )))
    }
}

/// A density matrix returned by the oracle: `dim × dim`, row-major, with the first
/// qubit asked for as the most significant bit of the index.
#[derive(Clone, Debug, PartialEq)]
pub struct DensityMatrix {
    /// 2^(number of qubits).
    pub dim: usize,
    /// Row-major entries.
    pub data: Vec<C>,
}

impl DensityMatrix {
    /// Entry at (row, col).
    pub fn get(&self, row: usize, col: usize) -> C {
        self.data[row * self.dim + col]
    }

    /// The trace (1 for a valid state).
    pub fn trace(&self) -> f64 {
        (0..self.dim).map(|i| self.get(i, i).re).sum()
    }

    /// ⟨ψ|ρ|ψ⟩ for a state vector in the same basis order.
    pub fn expectation(&self, psi: &[C]) -> f64 {
        let mut acc = C::new(0.0, 0.0);
        for (r, pr) in psi.iter().enumerate() {
            for (c, pc) in psi.iter().enumerate() {
                acc += pr.conj() * self.get(r, c) * pc;
            }
        }
        acc.re
    }
}

/// Bookkeeping of one live qubit.
#[derive(Clone, Copy, Debug)]
struct Live {
    owner: NodeId,
    register: u32,
    /// Emulated time up to which memory noise has been applied.
    touched: f64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u32,
    live: Option<Live>,
}

#[derive(Clone, Copy, Debug)]
struct NodeInfo {
    params: NodeParams,
    qubits: usize,
}

/// Counters for the broker's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Live qubits.
    pub qubits: usize,
    /// Live registers.
    pub registers: usize,
    /// Qubits in the largest register.
    pub largest_register: usize,
    /// Heap bytes held by register states.
    pub state_bytes: usize,
}

/// The quantum-state engine. See the module documentation.
pub struct Engine<R> {
    config: EngineConfig,
    rng: R,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    registers: Vec<Option<Register>>,
    free_registers: Vec<u32>,
    nodes: Vec<Option<NodeInfo>>,
}

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

impl<R: Rng> Engine<R> {
    /// An engine with the given limits and random number generator.
    pub fn new(config: EngineConfig, rng: R) -> Self {
        Engine {
            config,
            rng,
            slots: Vec::new(),
            free_slots: Vec::new(),
            registers: Vec::new(),
            free_registers: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The engine's limits.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Adds a node (or replaces its parameters) so it can own qubits.
    pub fn add_node(&mut self, node: NodeId, params: NodeParams) -> Result<()> {
        params.validate()?;
        let i = node.0 as usize;
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, None);
        }
        let qubits = self.nodes[i].map_or(0, |n| n.qubits);
        self.nodes[i] = Some(NodeInfo { params, qubits });
        Ok(())
    }

    /// Changes a node's parameters from now on. Qubits it holds first decohere up to
    /// `now` under the old parameters.
    pub fn set_node_params(&mut self, now: f64, node: NodeId, params: NodeParams) -> Result<()> {
        params.validate()?;
        self.node(node)?;
        for slot in self.owned_slots(node) {
            self.age(slot, now)?;
        }
        self.add_node(node, params)
    }

    /// A node's parameters.
    pub fn node_params(&self, node: NodeId) -> Result<NodeParams> {
        Ok(self.node(node)?.params)
    }

    /// Number of live qubits a node owns.
    pub fn owned_count(&self, node: NodeId) -> Result<usize> {
        Ok(self.node(node)?.qubits)
    }

    /// The owner of a live qubit.
    pub fn owner(&self, qubit: QubitId) -> Result<NodeId> {
        Ok(self.live(qubit)?.1.owner)
    }

    /// Allocates a fresh qubit in |0⟩ for `owner`.
    pub fn alloc(&mut self, now: f64, owner: NodeId) -> Result<QubitId> {
        self.node(owner)?;
        let reg = self.new_register_slot();
        let (slot, id) = self.new_slot(owner, reg, now);
        self.registers[reg as usize] =
            Some(Register::single(slot, C::new(1.0, 0.0), C::new(0.0, 0.0)));
        Ok(id)
    }

    /// Creates a pair of qubits, the first owned by `a` and the second by `b`, in the
    /// Werner state of fidelity `fidelity` with Bell state `bell`:
    /// ρ = F·|B⟩⟨B| + (1 − F)/3·(I − |B⟩⟨B|). With F = 1 the pair is a pure state.
    pub fn create_pair(
        &mut self,
        now: f64,
        a: NodeId,
        b: NodeId,
        bell: BellState,
        fidelity: f64,
    ) -> Result<(QubitId, QubitId)> {
        if !(0.0..=1.0).contains(&fidelity) {
            return Err(EngineError::InvalidParameter(format!(
                "pair fidelity {fidelity} is outside [0, 1]"
            )));
        }
        self.node(a)?;
        self.node(b)?;
        let psi = bell_vector(bell);
        let state = if fidelity >= 1.0 {
            State::Pure(psi.to_vec())
        } else {
            let w = (4.0 * fidelity - 1.0) / 3.0;
            let floor = (1.0 - fidelity) / 3.0;
            let mut rho = Vec::with_capacity(16);
            for (r, pr) in psi.iter().enumerate() {
                for (c, pc) in psi.iter().enumerate() {
                    let diag = if r == c { floor } else { 0.0 };
                    rho.push(pr * pc.conj() * w + diag);
                }
            }
            State::Mixed(rho)
        };
        let reg = self.new_register_slot();
        let (sa, qa) = self.new_slot(a, reg, now);
        let (sb, qb) = self.new_slot(b, reg, now);
        self.registers[reg as usize] = Some(Register {
            qubits: smallvec::smallvec![sa, sb],
            state,
        });
        Ok((qa, qb))
    }

    /// Applies a single-qubit gate, then the node's gate error.
    pub fn gate1(&mut self, now: f64, actor: NodeId, qubit: QubitId, gate: Gate1) -> Result<()> {
        let slot = self.acting(actor, qubit)?;
        if let Gate1::Rx(t) | Gate1::Ry(t) | Gate1::Rz(t) = gate
            && !t.is_finite()
        {
            return Err(EngineError::InvalidParameter(format!(
                "rotation angle {t} is not finite"
            )));
        }
        self.age(slot, now)?;
        let reg = self.slot_register(slot);
        self.check_gate_noise(actor, reg)?;
        let r = self.register_mut(reg);
        let k = r.position(slot);
        r.apply1(k, &gate.matrix());
        self.gate_noise(actor, slot)
    }

    /// Applies a two-qubit gate to (`a`, `b`) (for CNOT, `a` is the control), merging
    /// their registers if needed, then the node's gate error on both.
    pub fn gate2(
        &mut self,
        now: f64,
        actor: NodeId,
        a: QubitId,
        b: QubitId,
        gate: Gate2,
    ) -> Result<()> {
        if a == b {
            return Err(EngineError::SameQubit { qubit: a });
        }
        let sa = self.acting(actor, a)?;
        let sb = self.acting(actor, b)?;
        self.age(sa, now)?;
        self.age(sb, now)?;
        let (ra, rb) = (self.slot_register(sa), self.slot_register(sb));
        let merged = if ra == rb {
            self.register(ra).len()
        } else {
            self.register(ra).len() + self.register(rb).len()
        };
        if self.node(actor)?.params.gate_error > 0.0 && merged > self.config.max_mixed_qubits {
            // Gate noise needs a density matrix; refuse before merging anything.
            return Err(self.too_large(merged, true));
        }
        let reg = self.merge(ra, rb)?;
        self.check_gate_noise(actor, reg)?;
        let r = self.register_mut(reg);
        let (ka, kb) = (r.position(sa), r.position(sb));
        r.apply2(ka, kb, &gate.matrix());
        self.gate_noise(actor, sa)?;
        self.gate_noise(actor, sb)
    }

    /// Measures a qubit in `basis` and returns the reported outcome (0 for the +1
    /// eigenstate). Everything entangled with it collapses. The qubit stays live, in
    /// the basis state of the true outcome; the reported outcome is flipped with the
    /// node's readout error.
    pub fn measure(&mut self, now: f64, actor: NodeId, qubit: QubitId, basis: Basis) -> Result<u8> {
        self.measure_inner(now, actor, qubit, basis, false)
    }

    /// Measures a qubit like [`Engine::measure`] and frees it: the id dies.
    pub fn measure_free(
        &mut self,
        now: f64,
        actor: NodeId,
        qubit: QubitId,
        basis: Basis,
    ) -> Result<u8> {
        self.measure_inner(now, actor, qubit, basis, true)
    }

    /// Resets a qubit to |0⟩: it is traced out of its register (its partners keep
    /// their reduced state) and prepared afresh.
    pub fn reset(&mut self, now: f64, actor: NodeId, qubit: QubitId) -> Result<()> {
        let slot = self.acting(actor, qubit)?;
        self.split_off(slot);
        let live = self.slots[slot as usize]
            .live
            .as_mut()
            .expect("live slot after split");
        live.touched = now;
        let reg = live.register;
        self.registers[reg as usize] =
            Some(Register::single(slot, C::new(1.0, 0.0), C::new(0.0, 0.0)));
        Ok(())
    }

    /// Frees a qubit: it is traced out and its id dies.
    pub fn free(&mut self, now: f64, actor: NodeId, qubit: QubitId) -> Result<()> {
        let _ = now;
        let slot = self.acting(actor, qubit)?;
        self.release(slot);
        Ok(())
    }

    /// Moves a qubit to another node: the old id dies and the receiver's new id is
    /// returned. Memory noise up to `now` is that of the sender.
    pub fn transfer(
        &mut self,
        now: f64,
        actor: NodeId,
        qubit: QubitId,
        to: NodeId,
    ) -> Result<QubitId> {
        let slot = self.acting(actor, qubit)?;
        self.node(to)?;
        self.age(slot, now)?;
        let live = self.slots[slot as usize].live.expect("acting slot is live");
        let (new_slot, new_id) = self.new_slot(to, live.register, now);
        let reg = self.register_mut(live.register);
        let k = reg.position(slot);
        reg.qubits[k] = new_slot;
        self.kill_slot(slot);
        Ok(new_id)
    }

    /// A node crashed: every qubit it owns is traced out and lost. Its partners are
    /// left with their reduced (mixed) states. Returns how many qubits were lost.
    pub fn drop_node(&mut self, node: NodeId) -> Result<usize> {
        self.node(node)?;
        let slots = self.owned_slots(node);
        for &slot in &slots {
            self.release(slot);
        }
        Ok(slots.len())
    }

    /// Applies a noise channel to a qubit (the broker uses this for link and memory
    /// physics; nodes have no such call).
    pub fn apply_noise(&mut self, now: f64, qubit: QubitId, noise: Noise) -> Result<()> {
        check_probability("noise parameter", noise.parameter())?;
        let (slot, live) = self.live(qubit)?;
        self.age(slot, now)?;
        self.mixed_register(live.register)?;
        let r = self.register_mut(live.register);
        let k = r.position(slot);
        r.apply_superop(k, &noise.superop());
        Ok(())
    }

    /// Oracle: the fidelity ⟨B|ρ_ab|B⟩ of two qubits with a Bell state (the first
    /// qubit is the left one of the Bell state). Decoherence up to `now` is applied
    /// first.
    pub fn fidelity(&mut self, now: f64, a: QubitId, b: QubitId, bell: BellState) -> Result<f64> {
        let rho = self.reduced_density_matrix(now, &[a, b])?;
        // The oracle orders the first qubit as the high bit; bell_vector uses the
        // first qubit as the low bit, so swap |01⟩ and |10⟩.
        let v = bell_vector(bell);
        Ok(rho.expectation(&[v[0], v[2], v[1], v[3]]))
    }

    /// Oracle: the reduced density matrix of `qubits` (first qubit = most significant
    /// bit). Decoherence up to `now` is applied first.
    pub fn reduced_density_matrix(
        &mut self,
        now: f64,
        qubits: &[QubitId],
    ) -> Result<DensityMatrix> {
        let mut slots = Vec::with_capacity(qubits.len());
        for (i, &q) in qubits.iter().enumerate() {
            if qubits[..i].contains(&q) {
                return Err(EngineError::SameQubit { qubit: q });
            }
            slots.push(self.live(q)?.0);
        }
        if qubits.len() > self.config.max_mixed_qubits {
            return Err(EngineError::RegisterTooLarge {
                qubits: qubits.len(),
                cap: self.config.max_mixed_qubits,
                kind: "mixed",
            });
        }
        for &s in &slots {
            self.age(s, now)?;
        }
        // Group the requested qubits by register; each group's reduced state is a
        // factor of the result.
        let m = slots.len();
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        for (j, &s) in slots.iter().enumerate() {
            let reg = self.slot_register(s);
            match groups.iter_mut().find(|(r, _)| *r == reg) {
                Some((_, idx)) => idx.push(j),
                None => groups.push((reg, vec![j])),
            }
        }
        let factors: Vec<(Vec<usize>, Vec<C>)> = groups
            .into_iter()
            .map(|(reg, idx)| {
                let r = self.register(reg);
                let positions: Vec<usize> = idx.iter().map(|&j| r.position(slots[j])).collect();
                let rho = r.reduced(&positions);
                (idx, rho)
            })
            .collect();
        let dim = 1usize << m;
        let bit = |x: usize, j: usize| x >> (m - 1 - j) & 1;
        let mut data = vec![C::new(0.0, 0.0); dim * dim];
        for r in 0..dim {
            for c in 0..dim {
                let mut v = C::new(1.0, 0.0);
                for (idx, rho) in &factors {
                    let d = 1usize << idx.len();
                    let (mut fr, mut fc) = (0, 0);
                    for &j in idx {
                        fr = fr << 1 | bit(r, j);
                        fc = fc << 1 | bit(c, j);
                    }
                    v *= rho[fr * d + fc];
                }
                data[r * dim + c] = v;
            }
        }
        Ok(DensityMatrix { dim, data })
    }

    /// Number of qubits in the register that holds `qubit`.
    pub fn register_size(&self, qubit: QubitId) -> Result<usize> {
        let (_, live) = self.live(qubit)?;
        Ok(self.register(live.register).len())
    }

    /// True if the register holding `qubit` is a density matrix.
    pub fn is_mixed(&self, qubit: QubitId) -> Result<bool> {
        let (_, live) = self.live(qubit)?;
        Ok(self.register(live.register).is_mixed())
    }

    /// Trace of the register holding `qubit` (1 up to rounding for a valid state).
    pub fn register_trace(&self, qubit: QubitId) -> Result<f64> {
        let (_, live) = self.live(qubit)?;
        Ok(self.register(live.register).trace())
    }

    /// Every live qubit and its owner, in id order of their slots.
    pub fn live_qubits(&self) -> Vec<(QubitId, NodeId)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.live
                    .map(|l| (QubitId(make_id(i as u32, s.generation)), l.owner))
            })
            .collect()
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> EngineStats {
        let mut stats = EngineStats::default();
        for r in self.registers.iter().flatten() {
            stats.registers += 1;
            stats.qubits += r.len();
            stats.largest_register = stats.largest_register.max(r.len());
            stats.state_bytes += r.state_bytes();
        }
        stats
    }

    // ---- internals ----

    fn measure_inner(
        &mut self,
        now: f64,
        actor: NodeId,
        qubit: QubitId,
        basis: Basis,
        free: bool,
    ) -> Result<u8> {
        let slot = self.acting(actor, qubit)?;
        if let Basis::Rotated { theta, phi } = basis
            && !(theta.is_finite() && phi.is_finite())
        {
            return Err(EngineError::InvalidParameter(format!(
                "basis angles ({theta}, {phi}) are not finite"
            )));
        }
        self.age(slot, now)?;
        let readout_error = self.node(actor)?.params.readout_error;
        let reg_id = self.slot_register(slot);
        let change = basis_change(basis);
        let r = self.register_mut(reg_id);
        let k = r.position(slot);
        if let Some(b) = &change {
            r.apply1(k, &gates::dagger(b));
        }
        let p1 = r.prob_one(k);
        let mut outcome = u8::from(self.rng.random::<f64>() < p1);
        // Rounding can leave a tiny probability on an impossible branch; never
        // collapse onto a branch of zero weight.
        if (outcome == 1 && p1 <= 0.0) || (outcome == 0 && p1 >= 1.0) {
            outcome ^= 1;
        }
        let p = if outcome == 1 { p1 } else { 1.0 - p1 };
        let r = self.register_mut(reg_id);
        if r.len() == 1 {
            if free {
                self.registers[reg_id as usize] = None;
                self.free_registers.push(reg_id);
            } else {
                r.state = State::Pure(post_measurement(outcome, change.as_ref()).to_vec());
            }
        } else {
            r.project_out(k, outcome, p);
            if !free {
                let [a0, a1] = post_measurement(outcome, change.as_ref());
                let reg = self.new_register_slot();
                self.registers[reg as usize] = Some(Register::single(slot, a0, a1));
                self.slots[slot as usize]
                    .live
                    .as_mut()
                    .expect("live")
                    .register = reg;
            }
        }
        if free {
            self.kill_slot(slot);
        }
        let flip = readout_error > 0.0 && self.rng.random::<f64>() < readout_error;
        Ok(outcome ^ u8::from(flip))
    }

    fn node(&self, node: NodeId) -> Result<&NodeInfo> {
        self.nodes
            .get(node.0 as usize)
            .and_then(Option::as_ref)
            .ok_or(EngineError::UnknownNode { node })
    }

    fn live(&self, qubit: QubitId) -> Result<(u32, Live)> {
        let (index, generation) = split_id(qubit.0);
        match self.slots.get(index as usize) {
            Some(Slot {
                generation: g,
                live: Some(live),
            }) if *g == generation => Ok((index, *live)),
            _ => Err(EngineError::NoSuchQubit { qubit }),
        }
    }

    /// The slot of a qubit that `actor` owns.
    fn acting(&self, actor: NodeId, qubit: QubitId) -> Result<u32> {
        let (slot, live) = self.live(qubit)?;
        if live.owner != actor {
            return Err(EngineError::NotOwner {
                qubit,
                owner: live.owner,
                actor,
            });
        }
        Ok(slot)
    }

    fn owned_slots(&self, node: NodeId) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live.is_some_and(|l| l.owner == node))
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn slot_register(&self, slot: u32) -> u32 {
        self.slots[slot as usize].live.expect("live slot").register
    }

    fn register(&self, reg: u32) -> &Register {
        self.registers[reg as usize]
            .as_ref()
            .expect("slot points at a live register")
    }

    fn register_mut(&mut self, reg: u32) -> &mut Register {
        self.registers[reg as usize]
            .as_mut()
            .expect("slot points at a live register")
    }

    fn new_register_slot(&mut self) -> u32 {
        match self.free_registers.pop() {
            Some(r) => r,
            None => {
                self.registers.push(None);
                (self.registers.len() - 1) as u32
            }
        }
    }

    fn new_slot(&mut self, owner: NodeId, register: u32, now: f64) -> (u32, QubitId) {
        let live = Some(Live {
            owner,
            register,
            touched: now,
        });
        let index = match self.free_slots.pop() {
            Some(i) => {
                self.slots[i as usize].live = live;
                i
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    live,
                });
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(n) = self.nodes[owner.0 as usize].as_mut() {
            n.qubits += 1;
        }
        (
            index,
            QubitId(make_id(index, self.slots[index as usize].generation)),
        )
    }

    /// Marks a slot dead; its id never works again.
    fn kill_slot(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        if let Some(live) = s.live.take()
            && let Some(n) = self.nodes[live.owner.0 as usize].as_mut()
        {
            n.qubits -= 1;
        }
        // A slot whose generation is exhausted is retired rather than reused, so an
        // id can never come back to life.
        if s.generation < u32::MAX {
            s.generation += 1;
            self.free_slots.push(slot);
        }
    }

    /// Traces a qubit out of its register and kills its id. Never fails: a crash or
    /// a free must always succeed.
    fn release(&mut self, slot: u32) {
        let reg = self.slot_register(slot);
        if self.register(reg).len() == 1 {
            self.registers[reg as usize] = None;
            self.free_registers.push(reg);
        } else {
            self.remove_from_register(reg, slot);
        }
        self.kill_slot(slot);
    }

    /// Takes a qubit out of a register of several, leaving the others in their
    /// reduced state. A pure register too large to become a density matrix loses the
    /// qubit by a Z measurement whose outcome nobody learns: averaged over outcomes
    /// that is exactly the partial trace, and each run sees one of its branches.
    fn remove_from_register(&mut self, reg: u32, slot: u32) {
        let max_mixed = self.config.max_mixed_qubits;
        let r = self.register(reg);
        let k = r.position(slot);
        if !r.is_mixed() && r.len() - 1 > max_mixed {
            let p1 = r.prob_one(k);
            let mut outcome = u8::from(self.rng.random::<f64>() < p1);
            if (outcome == 1 && p1 <= 0.0) || (outcome == 0 && p1 >= 1.0) {
                outcome ^= 1;
            }
            let p = if outcome == 1 { p1 } else { 1.0 - p1 };
            self.register_mut(reg).project_out(k, outcome, p);
        } else {
            self.register_mut(reg).trace_out(k);
        }
    }

    /// Traces a qubit out of its register and leaves it alone in a fresh, empty
    /// register slot (the caller fills in its state).
    fn split_off(&mut self, slot: u32) {
        let reg = self.slot_register(slot);
        if self.register(reg).len() == 1 {
            return;
        }
        self.remove_from_register(reg, slot);
        let new = self.new_register_slot();
        self.slots[slot as usize]
            .live
            .as_mut()
            .expect("live")
            .register = new;
    }

    fn too_large(&self, qubits: usize, mixed: bool) -> EngineError {
        if mixed {
            EngineError::RegisterTooLarge {
                qubits,
                cap: self.config.max_mixed_qubits,
                kind: "mixed",
            }
        } else {
            EngineError::RegisterTooLarge {
                qubits,
                cap: self.config.max_register_qubits,
                kind: "pure",
            }
        }
    }

    /// Merges two registers (if different) and returns the merged one.
    fn merge(&mut self, ra: u32, rb: u32) -> Result<u32> {
        if ra == rb {
            return Ok(ra);
        }
        let (a, b) = (self.register(ra), self.register(rb));
        let n = a.len() + b.len();
        let mixed = a.is_mixed() || b.is_mixed();
        if n > self.config.max_register_qubits {
            return Err(self.too_large(n, false));
        }
        if mixed && n > self.config.max_mixed_qubits {
            return Err(self.too_large(n, true));
        }
        let a = self.registers[ra as usize].take().expect("live register");
        let b = self.registers[rb as usize].take().expect("live register");
        self.free_registers.push(rb);
        for &s in &b.qubits {
            self.slots[s as usize].live.as_mut().expect("live").register = ra;
        }
        self.registers[ra as usize] = Some(a.tensor(b));
        Ok(ra)
    }

    /// Makes a register a density matrix, or fails if it would be too large.
    fn mixed_register(&mut self, reg: u32) -> Result<()> {
        let r = self.register(reg);
        if !r.is_mixed() {
            if r.len() > self.config.max_mixed_qubits {
                return Err(self.too_large(r.len(), true));
            }
            self.register_mut(reg).make_mixed();
        }
        Ok(())
    }

    /// Applies memory decoherence to a qubit for the time since it was last touched.
    fn age(&mut self, slot: u32, now: f64) -> Result<()> {
        if !now.is_finite() {
            return Err(EngineError::InvalidParameter(format!(
                "time {now} is not a finite number of seconds"
            )));
        }
        let live = self.slots[slot as usize].live.expect("live slot");
        let params = self.node(live.owner)?.params;
        if let Some(s) = gates::memory_superop(now - live.touched, params.t1, params.t2) {
            self.mixed_register(live.register)?;
            let r = self.register_mut(live.register);
            let k = r.position(slot);
            r.apply_superop(k, &s);
        }
        let l = self.slots[slot as usize].live.as_mut().expect("live slot");
        l.touched = l.touched.max(now);
        Ok(())
    }

    fn check_gate_noise(&mut self, actor: NodeId, reg: u32) -> Result<()> {
        if self.node(actor)?.params.gate_error > 0.0 {
            self.mixed_register(reg)?;
        }
        Ok(())
    }

    fn gate_noise(&mut self, actor: NodeId, slot: u32) -> Result<()> {
        let p = self.node(actor)?.params.gate_error;
        if p > 0.0 {
            let reg = self.slot_register(slot);
            let r = self.register_mut(reg);
            let k = r.position(slot);
            r.apply_superop(k, &Noise::Depolarizing(p).superop());
        }
        Ok(())
    }
}

/// The Bell state as a vector in the register's basis order (first qubit = bit 0).
fn bell_vector(bell: BellState) -> [C; 4] {
    let h = C::new(FRAC_1_SQRT_2, 0.0);
    let z = C::new(0.0, 0.0);
    let sign = if bell.has_minus_phase() { -h } else { h };
    if bell.is_psi() {
        // |a=0,b=1⟩ is index 2, |a=1,b=0⟩ index 1: (|01⟩ ± |10⟩)/√2.
        [z, sign, h, z]
    } else {
        [h, z, z, sign]
    }
}

/// The post-measurement state of a measured qubit: `B|outcome⟩`.
fn post_measurement(outcome: u8, change: Option<&Mat2>) -> [C; 2] {
    match change {
        None if outcome == 0 => [C::new(1.0, 0.0), C::new(0.0, 0.0)],
        None => [C::new(0.0, 0.0), C::new(1.0, 0.0)],
        Some(b) => {
            let col = outcome as usize;
            [b[col], b[2 + col]]
        }
    }
}

fn make_id(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn split_id(id: u64) -> (u32, u32) {
    (id as u32, (id >> 32) as u32)
}
