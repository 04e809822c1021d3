//! [`ShimHandle`]: the rule table and counters shared between a [`super::Shim`] and
//! whoever steers it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::rule::{LinkRule, RuleError};

/// The counters of one shim since it was bound, for `qnet status`. Counts are of
/// datagrams (a GSO batch of n counts n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimStats {
    /// Datagrams written to the real socket, duplicates and late ones included.
    pub sent: u64,
    /// Datagrams discarded: by loss, blackhole, a full rate-limit queue, or a socket
    /// error when a delayed one finally went out.
    pub dropped: u64,
    /// Extra copies made by `duplicate`.
    pub duplicated: u64,
    /// Datagrams (copies) that waited in the delay queue.
    pub delayed: u64,
    /// Datagrams held back by `reorder`.
    pub reordered: u64,
}

/// Live counters behind [`ShimStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub delayed: AtomicU64,
    pub reordered: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter` (a no-op for zero, to spare the atomic on the hot path).
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    fn snapshot(&self) -> ShimStats {
        ShimStats {
            sent: self.sent.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            duplicated: self.duplicated.load(Relaxed),
            delayed: self.delayed.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct RuleTable {
    default: Option<LinkRule>,
    peers: HashMap<SocketAddr, LinkRule>,
}

impl RuleTable {
    fn any_active(&self) -> bool {
        self.default
            .iter()
            .chain(self.peers.values())
            .any(|r| !r.is_noop())
    }
}

/// State shared by a shim, its delay-queue task and its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// False while no rule impairs anything: the hot path then skips the lock.
    active: AtomicBool,
    table: RwLock<RuleTable>,
    pub stats: Counters,
}

impl Shared {
    /// The rule that impairs datagrams to `destination`, if any.
    pub fn rule_for(&self, destination: SocketAddr) -> Option<LinkRule> {
        if !self.active.load(Relaxed) {
            return None;
        }
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let rule = table
            .peers
            .get(&canonical(destination))
            .or(table.default.as_ref())?;
        (!rule.is_noop()).then_some(*rule)
    }

    fn edit(&self, change: impl FnOnce(&mut RuleTable)) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        change(&mut table);
        self.active.store(table.any_active(), Relaxed);
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]`, what a dual-stack
/// socket sends to) written as plain IPv4, so either spelling finds one rule.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Steers one [`super::Shim`] at run time: its rules per peer address and its
/// counters. Cheap to clone; every clone steers the same shim, from any thread.
///
/// A peer is the address datagrams are sent to (for a quinn connection,
/// `Connection::remote_address`). The rule for a peer wins over the default rule
/// (`peer = None`); a datagram with neither goes straight to the socket. Rule
/// changes apply to datagrams sent afterwards; ones already delayed still leave at
/// their time.
#[derive(Clone, Debug)]
pub struct ShimHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl ShimHandle {
    pub(crate) fn new(shared: Arc<Shared>, local_addr: SocketAddr) -> ShimHandle {
        ShimHandle { shared, local_addr }
    }

    /// The shim's own socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Installs `rule` for datagrams to `peer`, or as the default for every peer
    /// without its own rule (`None`), replacing any rule there. An invalid rule is
    /// refused and changes nothing.
    pub fn set_rule(&self, peer: Option<SocketAddr>, rule: LinkRule) -> Result<(), RuleError> {
        rule.validate()?;
        tracing::debug!(local = %self.local_addr, ?peer, ?rule, "shim rule set");
        self.shared.edit(|table| match peer {
            Some(peer) => {
                table.peers.insert(canonical(peer), rule);
            }
            None => table.default = Some(rule),
        });
        Ok(())
    }

    /// Removes the rule for `peer` (or the default rule, for `None`); true if there
    /// was one. turmoil's `repair`, for a partition.
    pub fn clear(&self, peer: Option<SocketAddr>) -> bool {
        let mut removed = false;
        self.shared.edit(|table| {
            removed = match peer {
                Some(peer) => table.peers.remove(&canonical(peer)).is_some(),
                None => table.default.take().is_some(),
            }
        });
        tracing::debug!(local = %self.local_addr, ?peer, removed, "shim rule cleared");
        removed
    }

    /// Removes every rule, the default one included.
    pub fn clear_all(&self) {
        self.shared.edit(|table| *table = RuleTable::default());
        tracing::debug!(local = %self.local_addr, "shim rules cleared");
    }

    /// The rule installed for `peer` (or the default rule, for `None`), if any.
    pub fn rule(&self, peer: Option<SocketAddr>) -> Option<LinkRule> {
        let table = self
            .shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match peer {
            Some(peer) => table.peers.get(&canonical(peer)).copied(),
            None => table.default,
        }
    }

    /// Every installed rule: the default one first, then the peers' by address.
    pub fn rules(&self) -> Vec<(Option<SocketAddr>, LinkRule)> {
        let table = self
            .shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut peers: Vec<_> = table.peers.iter().map(|(p, r)| (Some(*p), *r)).collect();
        peers.sort_by_key(|(p, _)| *p);
        table
            .default
            .map(|r| (None, r))
            .into_iter()
            .chain(peers)
            .collect()
    }

    /// The counters so far.
    pub fn stats(&self) -> ShimStats {
        self.shared.stats.snapshot()
    }
}
