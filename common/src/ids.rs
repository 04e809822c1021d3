//! Identifiers shared by every part of qnet.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A quantum node of a deployment. The broker numbers nodes in topology order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node#{}", self.0)
    }
}

/// A global qubit id handed out by the broker. An id is never reused: once its qubit
/// is freed, measured-and-freed, lost or transferred, the id stays dead forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QubitId(pub u64);

impl fmt::Display for QubitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// The four Bell states, the basis of every two-qubit entangled resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BellState {
    /// (|00⟩ + |11⟩)/√2
    PhiPlus,
    /// (|00⟩ − |11⟩)/√2
    PhiMinus,
    /// (|01⟩ + |10⟩)/√2
    PsiPlus,
    /// (|01⟩ − |10⟩)/√2
    PsiMinus,
}

impl BellState {
    /// All four Bell states, in the order Φ⁺, Φ⁻, Ψ⁺, Ψ⁻.
    pub const ALL: [BellState; 4] = [
        BellState::PhiPlus,
        BellState::PhiMinus,
        BellState::PsiPlus,
        BellState::PsiMinus,
    ];

    /// True for Ψ± (the two qubits disagree in Z).
    pub fn is_psi(self) -> bool {
        matches!(self, BellState::PsiPlus | BellState::PsiMinus)
    }

    /// True for Φ⁻ and Ψ⁻ (the relative phase is −1).
    pub fn has_minus_phase(self) -> bool {
        matches!(self, BellState::PhiMinus | BellState::PsiMinus)
    }
}

/// A measurement basis. Outcome 0 is always the +1 eigenstate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Basis {
    /// Computational basis: 0 ↔ |0⟩, 1 ↔ |1⟩.
    Z,
    /// 0 ↔ |+⟩, 1 ↔ |−⟩.
    X,
    /// 0 ↔ |+i⟩, 1 ↔ |−i⟩.
    Y,
    /// The basis {R|0⟩, R|1⟩} with R = Rz(phi)·Ry(theta): the Bloch-sphere direction
    /// at polar angle `theta` and azimuth `phi`.
    Rotated {
        /// Polar angle on the Bloch sphere, radians.
        theta: f64,
        /// Azimuth on the Bloch sphere, radians.
        phi: f64,
    },
}
