//! The broker as every link's heralding station (DESIGN §6, physical layer).
//!
//! Sans-IO, like [`crate::engine`]: no clock, no runtime. The caller passes the
//! emulated time `now` (seconds) to every call, asks [`Links::poll_timeout`] when the
//! next herald is due and calls [`Links::handle_timeout`] at (or after) that time; the
//! random number generator is injected, so a seed replays every success time and
//! every heralded Bell state.
//!
//! # Semantics
//! A link is *attempting* while both ends have asked for the same label
//! ([`Links::set_attempt`] with equal `Some(label)`): like the midpoint station of
//! the QuTech MHP, the station heralds only when both ends name the same link-layer
//! request. From the moment a link starts attempting, the next success comes after
//! k attempts, k ~ Geometric(p) with the link's success probability (sampled in one
//! draw by the inverse CDF, never attempt by attempt). The successful emission is at
//! t_e = t_start + k·cycle_time and the herald reaches both ends at
//! t_h = t_e + herald_delay. At t_h, if both ends have a free memory qubit
//! (`owned_count < memory_qubits`), the pair is created in the engine *at t_e*, so
//! memory decoherence counts from the emission and includes the herald's flight, and
//! the next success is scheduled from t_e (attempts continue back to back; a node
//! that wants no more pairs stops attempting).
//!
//! If either end has no free memory qubit at t_h, no pair is made and the link
//! *waits for memory*: it makes no attempts until both ends have a free qubit again,
//! then resumes from that moment. (Re-sampling every cycle instead would spin the
//! broker once per emulated attempt cycle while a memory is full, for nothing: the
//! geometric waiting time is memoryless, so resuming when memory frees up gives the
//! same statistics.) [`Links::handle_timeout`] notices freed memory, so the caller
//! calls it after anything that may free a qubit.
//!
//! Any change of either end's label — a new label, a stop, a lost node — discards the
//! pending success: attempts are memoryless, so a link that starts attempting again
//! samples afresh from that moment. Repeating the current label changes nothing.
//!
//! Heralds of all links come out of [`Links::handle_timeout`] in herald-time order
//! (ties by link index), so pairs are created in the order the ends learn of them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use qnet_common::physics::{HeraldedBell, LinkPhysics};
use qnet_common::topology::Topology;
use qnet_common::{BellState, NodeId, QubitId};
use rand::{Rng, RngExt};

use crate::engine::Engine;

/// Why [`Links::set_attempt`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A node index outside the topology.
    #[error("unknown node index {node}")]
    UnknownNode {
        /// The index.
        node: usize,
    },
    /// No link of the topology joins the two nodes.
    #[error("nodes {a} and {b} are not joined by a link")]
    NotNeighbours {
        /// The requesting node's index.
        a: usize,
        /// The named peer's index.
        b: usize,
    },
}

/// One heralded pair, as [`Links::handle_timeout`] returns it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Herald {
    /// Index of the link in [`Topology::links`].
    pub link: usize,
    /// Node index of the link's `a` end.
    pub a: usize,
    /// Node index of the link's `b` end.
    pub b: usize,
    /// The link's sequence number of this pair (1, 2, …).
    pub seq: u64,
    /// The label both ends attempted for.
    pub label: u64,
    /// The heralded Bell state (qubit `qubit_a` first).
    pub bell: BellState,
    /// The `a` end's half.
    pub qubit_a: QubitId,
    /// The `b` end's half.
    pub qubit_b: QubitId,
    /// Emulated time of the successful emission, s (the pair's creation time).
    pub emitted: f64,
    /// Emulated time the herald reached both ends, s.
    pub heralded: f64,
}

/// The next success of an attempting link.
#[derive(Clone, Copy, Debug)]
struct Success {
    emitted: f64,
    heralded: f64,
}

/// One topology link's station.
#[derive(Debug)]
struct LinkState {
    /// Node indices of the `a` and `b` ends.
    ends: [usize; 2],
    physics: LinkPhysics,
    /// What each end attempts for.
    labels: [Option<u64>; 2],
    /// The pending success while attempting (and not waiting for memory).
    next: Option<Success>,
    /// Attempting, but a memory was full at the last success.
    waiting_for_memory: bool,
    /// Bumped whenever `next` is discarded, to recognise stale queue entries.
    generation: u64,
    /// Sequence number of the last herald.
    seq: u64,
    /// Taken down by a fault: no attempt succeeds.
    down: bool,
}

impl LinkState {
    /// The label the link attempts for, if both ends name the same one.
    fn attempting(&self) -> Option<u64> {
        if self.down {
            return None;
        }
        match self.labels {
            [Some(x), Some(y)] if x == y => Some(x),
            _ => None,
        }
    }

    fn discard(&mut self) {
        self.next = None;
        self.waiting_for_memory = false;
        self.generation += 1;
    }
}

/// A queued herald time, ordered so that [`BinaryHeap`] pops the earliest first.
#[derive(Clone, Copy, Debug)]
struct Due {
    at: f64,
    link: usize,
    generation: u64,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the earliest herald (then the lowest link index) is the greatest.
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.link.cmp(&self.link))
            .then_with(|| other.generation.cmp(&self.generation))
    }
}

/// Every link's heralding station. See the module documentation.
#[derive(Debug)]
pub struct Links<R> {
    rng: R,
    links: Vec<LinkState>,
    /// Unordered node pair `(min, max)` → link index.
    by_pair: HashMap<(usize, usize), usize>,
    /// Engine id and memory size of every node.
    nodes: Vec<(NodeId, usize)>,
    /// Pending heralds; entries whose generation is stale are skipped.
    queue: BinaryHeap<Due>,
    /// Links waiting for a free memory qubit at either end.
    waiting: Vec<usize>,
}

impl<R: Rng> Links<R> {
    /// A station for every link of `topology`, nobody attempting; `rng` draws the
    /// success times and heralded Bell states.
    pub fn new(topology: &Topology, rng: R) -> Links<R> {
        let mut by_pair = HashMap::with_capacity(topology.links.len());
        let links = topology
            .links
            .iter()
            .map(|spec| {
                by_pair
                    .entry((spec.a.min(spec.b), spec.a.max(spec.b)))
                    .or_insert(spec.index);
                LinkState {
                    ends: [spec.a, spec.b],
                    physics: LinkPhysics::of(spec),
                    labels: [None, None],
                    next: None,
                    waiting_for_memory: false,
                    generation: 0,
                    seq: 0,
                    down: false,
                }
            })
            .collect();
        Links {
            rng,
            links,
            by_pair,
            nodes: topology
                .nodes
                .iter()
                .map(|n| (n.id, n.memory_qubits as usize))
                .collect(),
            queue: BinaryHeap::new(),
            waiting: Vec::new(),
        }
    }

    /// The index of the link between node indices `a` and `b` (either order).
    pub fn link_index(&self, a: usize, b: usize) -> Option<usize> {
        self.by_pair.get(&(a.min(b), a.max(b))).copied()
    }

    /// The physics of link `link`.
    pub fn physics(&self, link: usize) -> Option<&LinkPhysics> {
        self.links.get(link).map(|l| &l.physics)
    }

    /// The label link `link` attempts for, if both ends name the same one.
    pub fn attempting(&self, link: usize) -> Option<u64> {
        self.links.get(link).and_then(LinkState::attempting)
    }

    /// True if link `link` attempts but waits for a free memory qubit.
    pub fn waiting_for_memory(&self, link: usize) -> bool {
        self.links.get(link).is_some_and(|l| l.waiting_for_memory)
    }

    /// Sequence number of link `link`'s last herald (0 before the first).
    pub fn seq(&self, link: usize) -> u64 {
        self.links.get(link).map_or(0, |l| l.seq)
    }

    /// Node `node` attempts on its link to `peer` for `label` from `now` on
    /// (`None`: stops). Any change discards the link's pending success; the same
    /// label again changes nothing.
    pub fn set_attempt(
        &mut self,
        now: f64,
        node: usize,
        peer: usize,
        label: Option<u64>,
    ) -> Result<(), LinkError> {
        for n in [node, peer] {
            if n >= self.nodes.len() {
                return Err(LinkError::UnknownNode { node: n });
            }
        }
        let Some(index) = self.link_index(node, peer).filter(|_| node != peer) else {
            return Err(LinkError::NotNeighbours { a: node, b: peer });
        };
        let link = &mut self.links[index];
        let end = usize::from(link.ends[0] != node);
        if link.labels[end] == label {
            return Ok(());
        }
        link.labels[end] = label;
        link.discard();
        if link.attempting().is_some() {
            self.schedule(index, now);
        }
        Ok(())
    }

    /// A fault: from `now` on, the link makes pairs of fidelity `fidelity` (if
    /// given) and is up or down (if given). Taking a link down discards its pending
    /// success; bringing it up restarts the attempts of ends that still attempt.
    pub fn set_fault(&mut self, now: f64, link: usize, fidelity: Option<f64>, up: Option<bool>) {
        let Some(state) = self.links.get_mut(link) else {
            return;
        };
        if let Some(f) = fidelity {
            state.physics.fidelity = f;
        }
        if let Some(up) = up
            && state.down == up
        {
            state.down = !up;
            state.discard();
            if state.attempting().is_some() {
                self.schedule(link, now);
            }
        }
    }

    /// Node `node` is gone: every link of it stops attempting at its end.
    pub fn node_lost(&mut self, node: usize) {
        for link in &mut self.links {
            for end in 0..2 {
                if link.ends[end] == node && link.labels[end].is_some() {
                    link.labels[end] = None;
                    link.discard();
                }
            }
        }
    }

    /// The emulated time of the next herald due, if any link has one pending. Links
    /// waiting for memory have none: call [`Links::handle_timeout`] after freeing
    /// qubits.
    pub fn poll_timeout(&mut self) -> Option<f64> {
        self.drop_stale();
        self.queue.peek().map(|d| d.at)
    }

    /// Every herald due at or before `now`, in herald-time order, with its pair
    /// created in `engine`. Links that waited for memory and now find a free qubit at
    /// both ends resume attempting from `now`.
    pub fn handle_timeout<E: Rng>(&mut self, now: f64, engine: &mut Engine<E>) -> Vec<Herald> {
        self.resume_waiting(now, engine);
        let mut heralds = Vec::new();
        loop {
            self.drop_stale();
            match self.queue.peek() {
                Some(due) if due.at <= now => {}
                _ => break,
            }
            let due = self.queue.pop().expect("peeked");
            let link = &mut self.links[due.link];
            let success = link.next.take().expect("a live queue entry has a success");
            let label = link.attempting().expect("a live queue entry attempts");
            let [a, b] = link.ends;
            if !(self.has_free_memory(a, engine) && self.has_free_memory(b, engine)) {
                self.links[due.link].waiting_for_memory = true;
                self.waiting.push(due.link);
                continue;
            }
            let link = &self.links[due.link];
            let (physics, seq) = (link.physics, link.seq + 1);
            let bell = match physics.bell {
                HeraldedBell::Fixed(bell) => bell,
                HeraldedBell::PsiEither if self.rng.random::<bool>() => BellState::PsiPlus,
                HeraldedBell::PsiEither => BellState::PsiMinus,
            };
            let pair = engine.create_pair(
                success.emitted,
                self.nodes[a].0,
                self.nodes[b].0,
                bell,
                physics.fidelity,
            );
            match pair {
                Ok((qubit_a, qubit_b)) => {
                    self.links[due.link].seq = seq;
                    heralds.push(Herald {
                        link: due.link,
                        a,
                        b,
                        seq,
                        label,
                        bell,
                        qubit_a,
                        qubit_b,
                        emitted: success.emitted,
                        heralded: success.heralded,
                    });
                }
                // Only a broken topology (a node the engine does not know, a fidelity
                // outside [0, 1]) gets here; the link keeps attempting.
                Err(e) => tracing::error!(link = due.link, "heralded pair not created: {e}"),
            }
            self.schedule(due.link, success.emitted);
        }
        heralds
    }

    fn has_free_memory<E: Rng>(&self, node: usize, engine: &Engine<E>) -> bool {
        let (id, capacity) = self.nodes[node];
        engine.owned_count(id).is_ok_and(|n| n < capacity)
    }

    /// Restarts links whose wait for memory is over, from `now`.
    fn resume_waiting<E: Rng>(&mut self, now: f64, engine: &Engine<E>) {
        let mut i = 0;
        while i < self.waiting.len() {
            let index = self.waiting[i];
            let link = &self.links[index];
            if !link.waiting_for_memory {
                // Stopped or restarted meanwhile.
                self.waiting.swap_remove(i);
                continue;
            }
            let [a, b] = link.ends;
            if self.has_free_memory(a, engine) && self.has_free_memory(b, engine) {
                self.waiting.swap_remove(i);
                self.links[index].waiting_for_memory = false;
                self.schedule(index, now);
            } else {
                i += 1;
            }
        }
    }

    /// Samples link `index`'s next success after attempts starting at `from`.
    fn schedule(&mut self, index: usize, from: f64) {
        let physics = self.links[index].physics;
        let Some(k) = attempts_until_success(physics.p_success, &mut self.rng) else {
            return; // p = 0: this link never heralds
        };
        let emitted = from + k * physics.cycle_time;
        let heralded = emitted + physics.herald_delay;
        let link = &mut self.links[index];
        link.next = Some(Success { emitted, heralded });
        self.queue.push(Due {
            at: heralded,
            link: index,
            generation: link.generation,
        });
        // Rapid label changes leave stale entries behind; keep the heap near the
        // number of links.
        if self.queue.len() > 2 * self.links.len() + 64 {
            let links = &self.links;
            self.queue.retain(|d| {
                links[d.link].generation == d.generation && links[d.link].next.is_some()
            });
        }
    }

    fn drop_stale(&mut self) {
        while let Some(due) = self.queue.peek() {
            let link = &self.links[due.link];
            if link.generation == due.generation && link.next.is_some() {
                return;
            }
            self.queue.pop();
        }
    }
}

/// The number of attempts up to and including the first success, k ≥ 1, drawn from
/// Geometric(`p`) with one uniform number by the inverse CDF:
/// k = ⌈ln U / ln(1 − p)⌉ with U uniform in (0, 1]. `None` if `p` = 0 (or not a
/// probability): no attempt ever succeeds. Returned as `f64` because k can exceed
/// any integer type for tiny `p`.
pub fn attempts_until_success(p: f64, rng: &mut impl Rng) -> Option<f64> {
    if p.is_nan() || p <= 0.0 {
        return None;
    }
    if p >= 1.0 {
        return Some(1.0);
    }
    // 1 − [0, 1) = (0, 1]: U is never 0, so ln U is finite.
    let u = 1.0 - rng.random::<f64>();
    Some((u.ln() / (-p).ln_1p()).ceil().max(1.0))
}
