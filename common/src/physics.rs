//! Link physics shared by the broker (which makes pairs at the model's rate), the
//! nodes (whose link layer estimates fidelity and refuses what a link cannot give)
//! and the controller (which compares estimates with the oracle).
//!
//! Models (DESIGN §3; numbers from Dahlberg et al., SIGCOMM 2019, and Barrett & Kok,
//! PRA 71, 060310, 2005):
//! - `heralded-double-click`: both ends emit towards a midpoint station; a success
//!   needs both photons, so per attempt p = ½·(η·10^(−α·L/20))² with η the product of
//!   emission and detection efficiency; the station heralds Ψ⁺ or Ψ⁻ (which
//!   detectors clicked), each half the time. Fidelity: (1 + V)/2 with the two-photon
//!   visibility V when given, else the link's `fidelity`.
//! - `heralded-single-click`: each end entangles its memory with a photon of
//!   bright-state population α_b; one click at the midpoint heralds. Per attempt
//!   p ≈ 2·α_b·η·10^(−α·L/20), fidelity ≈ 1 − α_b: more light, more rate, less
//!   fidelity.
//! - `source`: an entangled-photon source at end `a`; the travelling photon survives
//!   the whole fibre with 10^(−α·L/10), p = η·10^(−α·L/10); pairs are Φ⁺; the herald
//!   (the arrival report) comes back over the fibre.
//! - `ideal`: every attempt succeeds, Φ⁺ of the link's `fidelity`.
//!
//! The attempt cycle is the link's `cycle_time` (by default the fibre round trip to the
//! midpoint, 5 µs/km · L). Heralds reach the ends after the flight from the midpoint
//! (L/2 · 5 µs/km), or from the far end for `source`.

use crate::ids::BellState;
use crate::topology::{FIBRE_DELAY_S_PER_KM, LinkModel, LinkSpec, NodeSpec};

/// Which Bell states a link's heralds announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeraldedBell {
    /// Always this state.
    Fixed(BellState),
    /// Ψ⁺ or Ψ⁻ with equal probability (which detector clicked).
    PsiEither,
}

/// A link's physics, derived from its topology entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkPhysics {
    /// Success probability per attempt.
    pub p_success: f64,
    /// Emulated seconds per attempt.
    pub cycle_time: f64,
    /// Emulated seconds from the successful emission to the herald at the ends.
    pub herald_delay: f64,
    /// Werner fidelity of a fresh pair with its heralded Bell state.
    pub fidelity: f64,
    /// The Bell states heralds announce.
    pub bell: HeraldedBell,
}

impl LinkPhysics {
    /// The physics of `link`.
    pub fn of(link: &LinkSpec) -> LinkPhysics {
        let eta = link.emission_efficiency * link.detector_efficiency;
        let half_fibre = 10f64.powf(-link.attenuation_db_per_km * link.length_km / 20.0);
        let midpoint_flight = link.length_km / 2.0 * FIBRE_DELAY_S_PER_KM;
        let (p_success, herald_delay, fidelity, bell) = match link.model {
            LinkModel::Ideal => (
                1.0,
                0.0,
                link.fidelity,
                HeraldedBell::Fixed(BellState::PhiPlus),
            ),
            LinkModel::HeraldedDoubleClick => (
                0.5 * (eta * half_fibre).powi(2),
                midpoint_flight,
                link.visibility.map_or(link.fidelity, |v| (1.0 + v) / 2.0),
                HeraldedBell::PsiEither,
            ),
            LinkModel::HeraldedSingleClick => (
                (2.0 * link.bright_state * eta * half_fibre).min(1.0),
                midpoint_flight,
                (1.0 - link.bright_state).max(0.25),
                HeraldedBell::PsiEither,
            ),
            LinkModel::Source => (
                eta * link.transmittance(),
                link.flight_time(),
                link.fidelity,
                HeraldedBell::Fixed(BellState::PhiPlus),
            ),
        };
        LinkPhysics {
            p_success,
            cycle_time: link.cycle_time,
            herald_delay,
            fidelity,
            bell,
        }
    }

    /// Expected heralded pairs per emulated second while both ends attempt.
    pub fn rate(&self) -> f64 {
        self.p_success / self.cycle_time
    }

    /// The shortest time a request for one pair can take: one attempt and its
    /// herald. A `max_time` below this cannot be met.
    pub fn min_time(&self) -> f64 {
        self.cycle_time + self.herald_delay
    }
}

/// Memory parameters of one end, for [`decayed_fidelity`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    /// Energy relaxation time, s (infinite: none).
    pub t1: f64,
    /// Dephasing time, s (infinite: none).
    pub t2: f64,
}

impl From<&NodeSpec> for Memory {
    fn from(n: &NodeSpec) -> Memory {
        Memory { t1: n.t1, t2: n.t2 }
    }
}

/// Fidelity of a Werner pair of initial fidelity `f` (with any Bell state) after both
/// halves have waited `t` emulated seconds in memories `a` and `b`: amplitude damping
/// γ = 1 − e^(−t/T1) and total coherence decay e^(−t/T2) on each qubit (the engine's
/// memory model, DESIGN §3). Exact for all four Bell states: amplitude damping
/// treats Φ± (weight on |00⟩, |11⟩) and Ψ± (weight on |01⟩, |10⟩) differently, so each
/// has its own population update.
pub fn decayed_fidelity(f: f64, bell: BellState, t: f64, a: Memory, b: Memory) -> f64 {
    if t <= 0.0 {
        return f;
    }
    let w = (4.0 * f - 1.0) / 3.0;
    let gamma = |m: Memory| 1.0 - (-t / m.t1).exp();
    let coherence = |m: Memory| (-t / m.t2).exp();
    let (ga, gb) = (gamma(a), gamma(b));
    let c = coherence(a) * coherence(b);
    // Populations of the Werner state: the two "Bell" basis states carry (1+w)/4,
    // the other two (1−w)/4.
    let hi = (1.0 + w) / 4.0;
    let lo = (1.0 - w) / 4.0;
    if bell.is_psi() {
        // Ψ: weight on |01⟩ and |10⟩ (hi), |00⟩ and |11⟩ (lo).
        // After damping: p01' = p01·(1−γb) + p11·γa·(1−γb); p10' symmetric.
        let p01 = hi * (1.0 - gb) + lo * ga * (1.0 - gb);
        let p10 = hi * (1.0 - ga) + lo * gb * (1.0 - ga);
        // The |01⟩⟨10| coherence shrinks by both coherence factors.
        (p01 + p10) / 2.0 + c * w / 2.0
    } else {
        let p00 = hi + lo * (ga + gb) + hi * ga * gb;
        let p11 = hi * (1.0 - ga) * (1.0 - gb);
        (p00 + p11) / 2.0 + c * w / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_limits() {
        let ideal = Memory {
            t1: f64::INFINITY,
            t2: f64::INFINITY,
        };
        for bell in BellState::ALL {
            assert!((decayed_fidelity(0.9, bell, 5.0, ideal, ideal) - 0.9).abs() < 1e-12);
        }
        // Pure dephasing of Φ⁺ for a long time: the coherence is gone, F → 1/2 of the
        // population in |00⟩ + |11⟩ = (1 + w)/4·2/2.
        let dephasing = Memory {
            t1: f64::INFINITY,
            t2: 1e-3,
        };
        let f = decayed_fidelity(1.0, BellState::PhiPlus, 1.0, dephasing, dephasing);
        assert!((f - 0.5).abs() < 1e-9, "{f}");
        // Pure dephasing, F = 1: F(t) = (1 + e^(−2t/T2))/2.
        let f = decayed_fidelity(1.0, BellState::PsiMinus, 1e-3, dephasing, dephasing);
        assert!((f - (1.0 + (-2.0f64).exp()) / 2.0).abs() < 1e-12, "{f}");
    }
}
