//! The node's classical impairments: the fibre's latency to each peer (DESIGN §5,
//! "classical latency from geography") and the chaos faults the controller installs,
//! both applied to outgoing datagrams by the socket shim under the node's QUIC
//! endpoint, so QUIC's loss recovery and congestion control react as on a real
//! network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use qnet_common::shim::{LinkRule, ShimHandle, ShimStats};

/// Rules by peer name.
pub type RulesByPeer = Vec<(String, LinkRule)>;

/// Impairments per peer, and where each peer is.
pub struct Chaos {
    shim: ShimHandle,
    /// One-way latency to every node of the topology, wall time.
    latency: HashMap<String, Duration>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    addrs: HashMap<String, SocketAddr>,
    faults: HashMap<String, LinkRule>,
}

impl Chaos {
    /// Impairments on `shim`, with `latency` the one-way latency to each node.
    pub fn new(shim: ShimHandle, latency: HashMap<String, Duration>) -> Chaos {
        Chaos {
            shim,
            latency,
            state: Mutex::default(),
        }
    }

    /// The peer `peer` is at `addr`: apply its rule there.
    pub fn peer_at(&self, peer: &str, addr: SocketAddr) {
        let mut state = self.state.lock().expect("chaos lock");
        if let Some(old) = state.addrs.insert(peer.to_string(), addr)
            && old != addr
        {
            self.shim.clear(Some(old));
        }
        self.apply(&state, peer);
    }

    /// Installs (or, with `None`, heals) the fault towards `peer`.
    pub fn set_fault(&self, peer: &str, rule: Option<LinkRule>) -> anyhow::Result<()> {
        if let Some(rule) = &rule {
            rule.validate()?;
        }
        let mut state = self.state.lock().expect("chaos lock");
        match rule {
            Some(rule) => state.faults.insert(peer.to_string(), rule),
            None => state.faults.remove(peer),
        };
        self.apply(&state, peer);
        Ok(())
    }

    /// Whether the peer's address is known (its rules are in force).
    pub fn knows(&self, peer: &str) -> bool {
        self.state
            .lock()
            .expect("chaos lock")
            .addrs
            .contains_key(peer)
    }

    /// The faults, the rules in force and the shim's counters.
    pub fn report(&self) -> (RulesByPeer, RulesByPeer, ShimStats) {
        let state = self.state.lock().expect("chaos lock");
        let mut faults: Vec<_> = state.faults.iter().map(|(p, r)| (p.clone(), *r)).collect();
        faults.sort_by(|a, b| a.0.cmp(&b.0));
        let mut effective: Vec<_> = state
            .addrs
            .keys()
            .map(|p| (p.clone(), self.effective(&state, p)))
            .collect();
        effective.sort_by(|a, b| a.0.cmp(&b.0));
        (faults, effective, self.shim.stats())
    }

    /// The fibre's latency plus the fault's impairments (its delay adds to the
    /// fibre's).
    fn effective(&self, state: &State, peer: &str) -> LinkRule {
        let base = self.latency.get(peer).copied().unwrap_or_default();
        let mut rule = state.faults.get(peer).copied().unwrap_or_default();
        rule.delay += base;
        rule
    }

    fn apply(&self, state: &State, peer: &str) {
        let Some(&addr) = state.addrs.get(peer) else {
            return; // applied when the peer's address becomes known
        };
        let rule = self.effective(state, peer);
        let result = if rule.is_noop() {
            self.shim.clear(Some(addr));
            Ok(())
        } else {
            self.shim.set_rule(Some(addr), rule)
        };
        if let Err(e) = result {
            tracing::warn!(%peer, "impairment not applied: {e}");
        }
    }
}
