//! [`LinkRule`]: what the shim does to the datagrams it sends to one peer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest `delay + jitter` a rule may ask for. Far beyond any network, and small
/// enough that `now + delay` can never overflow a clock.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How long a datagram picked by [`LinkRule::reorder`] is held back, at least: it
/// waits `max(delay + jitter, REORDER_MIN_HOLD)` on top of its normal delay, so the
/// datagrams sent in that window overtake it.
pub const REORDER_MIN_HOLD: Duration = Duration::from_millis(10);

/// How the random part of a datagram's latency, in `[0, jitter]`, is drawn; with
/// [`LinkRule::delay`] as turmoil's minimum latency and `delay + jitter` as its
/// maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Uniform over `[0, jitter]`.
    #[default]
    Uniform,
    /// Normal with mean `jitter / 2` and standard deviation `jitter / 6` (so ±3σ spans
    /// the range), clamped to `[0, jitter]`.
    Normal,
    /// Exponential with rate 5 per `jitter` (mean `jitter / 5`), clamped to `jitter`:
    /// turmoil's default, mostly short with a long tail.
    Exponential,
}

/// The impairments applied to outgoing datagrams towards one peer (or, as the default
/// rule, towards every peer without a rule of its own). `Default` impairs nothing.
///
/// Each datagram, in this order: is dropped if `blackhole`, or with probability
/// `loss`; is copied once more with probability `duplicate`; then each copy queues
/// for the link's `bandwidth`, waits `delay` plus a `jitter` sample, and with
/// probability `reorder` is held back a while longer (see [`REORDER_MIN_HOLD`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkRule {
    /// Fixed one-way latency added to every datagram (turmoil's minimum latency).
    pub delay: Duration,
    /// Width of the random latency on top of `delay`: each datagram waits
    /// `delay + x` with `x` in `[0, jitter]` drawn from `distribution`.
    pub jitter: Duration,
    /// How the jitter is drawn.
    pub distribution: Distribution,
    /// Probability that a datagram is dropped, in [0, 1].
    pub loss: f64,
    /// Probability that a datagram is sent twice, in [0, 1].
    pub duplicate: f64,
    /// Probability that a datagram is held back so later ones overtake it, in [0, 1].
    pub reorder: f64,
    /// Link rate in bytes per second, if limited: datagrams queue behind each other
    /// and take `len / bandwidth` to go out; a full queue (more than half a second of
    /// traffic, at least 64 KiB) drops them, as a router's would.
    pub bandwidth: Option<u64>,
    /// Drop everything (a partition; on one side only, a one-way partition).
    pub blackhole: bool,
}

impl LinkRule {
    /// A rule that drops everything: turmoil's `partition` (one way, for the side
    /// that installs it).
    pub fn partition() -> LinkRule {
        LinkRule {
            blackhole: true,
            ..LinkRule::default()
        }
    }

    /// A rule with latency between `min` and `max` drawn from `distribution`, in
    /// turmoil's terms (`max` below `min` counts as `min`).
    pub fn latency(min: Duration, max: Duration, distribution: Distribution) -> LinkRule {
        LinkRule {
            delay: min,
            jitter: max.saturating_sub(min),
            distribution,
            ..LinkRule::default()
        }
    }

    /// True if the rule changes nothing, so datagrams under it take the fast path.
    pub fn is_noop(&self) -> bool {
        !self.blackhole
            && self.delay.is_zero()
            && self.jitter.is_zero()
            && self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.bandwidth.is_none()
    }

    /// Checks that the probabilities are in [0, 1], the bandwidth is not zero (use
    /// `blackhole` for that) and `delay + jitter` is at most [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), RuleError> {
        for (field, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            // `contains` is false for NaN, so this also rejects non-finite values.
            if !(0.0..=1.0).contains(&value) {
                return Err(RuleError::NotAProbability { field, value });
            }
        }
        if self.bandwidth == Some(0) {
            return Err(RuleError::ZeroBandwidth);
        }
        let total = self.delay.saturating_add(self.jitter);
        if total > MAX_DELAY {
            return Err(RuleError::DelayTooLong { total });
        }
        Ok(())
    }
}

/// Why a [`LinkRule`] was refused.
#[derive(Clone, Debug, PartialEq, Error)]
#[non_exhaustive]
pub enum RuleError {
    /// A probability field is outside [0, 1] or not a number.
    #[error("{field} must be a probability in [0, 1], not {value}")]
    NotAProbability {
        /// The field: `loss`, `duplicate` or `reorder`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// `bandwidth` is zero; a link that carries nothing is a `blackhole`.
    #[error("bandwidth must be at least 1 byte/s (use blackhole to cut a link)")]
    ZeroBandwidth,
    /// `delay + jitter` exceeds [`MAX_DELAY`].
    #[error("delay + jitter is {total:?}, more than the maximum {MAX_DELAY:?}")]
    DelayTooLong {
        /// `delay + jitter`.
        total: Duration,
    },
}
