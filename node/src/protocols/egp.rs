//! The entanglement generation protocol (EGP): the link layer of Dahlberg et al.,
//! "A link layer protocol for quantum networks" (SIGCOMM 2019), over an unreliable
//! classical channel.
//!
//! # How the two ends agree
//! One end owns the link's queue (the node whose name sorts first). Every request,
//! whichever end made it, gets its queue id (`qid`) from the owner, and both ends hold
//! it before anyone attempts for it:
//!
//! ```text
//! origin = follower:  REQ(create) ──▶ owner: purpose ok? ── ADD(qid) ──▶ follower ── ADD_ACK ──▶ owner
//! origin = owner:                      owner ── ADD(qid) ──▶ follower: purpose ok? ── ADD_ACK ──▶ owner
//! ```
//!
//! The owner schedules (priority, then round-robin) and announces the qid being
//! served with `ACTIVE(epoch, qid)`; both ends then tell the broker to attempt with
//! that qid as the label. The broker (the midpoint station) heralds only when both
//! labels match, so a herald names a request both ends hold, and each end counts
//! delivered pairs from the same heralds. Items end at both ends on their own: when
//! their last pair is delivered, or at the deadline that ADD carried.
//!
//! A herald that finds no request (a race with a deadline, or lost agreement) is not
//! delivered: its qubit is freed and the peer is told with `EXPIRE(qid, seq)`, which
//! withdraws the pair there too — so no pair is ever reported at one end only.
//!
//! Every control message is idempotent and retransmitted until acknowledged, and
//! `ACTIVE` carries an epoch and is repeated, so loss, duplication, delay and
//! reordering of classical messages cost time, never consistency.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use qnet_common::physics::{LinkPhysics, Memory, decayed_fidelity};
use qnet_common::wire::Gate;
use qnet_common::{Basis, BellState, QubitId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::link::{
    Action, CreateId, CreateRequest, Delivered, ErrorCode, Herald, LinkErr, LinkEvent, LinkLayer,
    MeasureBasis, Origin, PairOk, RequestType, Time,
};

/// A delivered pair: its sequence number and, for keep-type, the local qubit.
type DeliveredPair = (u64, Option<QubitId>);

/// Ended items whose pairs are kept for late withdrawals.
const RECENT_ITEMS: usize = 256;

/// Configuration of one end of a link.
#[derive(Clone, Debug)]
pub struct EgpConfig {
    /// True at the end that owns the queue.
    pub owner: bool,
    /// The link's physics (fidelity, minimum time).
    pub physics: LinkPhysics,
    /// This end's memory.
    pub local_memory: Memory,
    /// The peer's memory.
    pub remote_memory: Memory,
    /// Emulated seconds before an unacknowledged message is sent again.
    pub retransmit: Time,
    /// Pairs served for one request before the scheduler turns to the next request
    /// of the same priority.
    pub quantum: u32,
    /// Emulated seconds of waiting that raise a request by one priority class, so
    /// lower priorities are served in the end and never starve.
    pub aging: Time,
    /// Seed of the random bases of measure-type requests.
    pub seed: u64,
}

/// Messages between the two ends' EGPs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Msg {
    /// Follower → owner: queue this request of mine.
    Req { create: u32, request: CreateRequest },
    /// Owner → follower: the request is queue item `qid`.
    Add {
        qid: u64,
        /// The request's number at its origin.
        create: u32,
        /// True if the owner made the request.
        owner_origin: bool,
        request: CreateRequest,
        /// Emulated time at which the item ends if not complete.
        deadline: Time,
    },
    /// Follower → owner: item `qid` is queued here too.
    AddAck { qid: u64 },
    /// The receiving end refuses the purpose of a request.
    Rej {
        create: u32,
        owner_origin: bool,
        qid: Option<u64>,
    },
    /// Owner → follower: attempt for `qid` (or nothing).
    Active { epoch: u64, qid: Option<u64> },
    /// Withdraw these pairs of item `qid`.
    Expire { qid: u64, seqs: Vec<u64> },
    /// The EXPIRE arrived.
    ExpireAck { qid: u64, seqs: Vec<u64> },
}

#[derive(Clone, Debug)]
struct Item {
    create_id: CreateId,
    request: CreateRequest,
    deadline: Time,
    /// Owner: the follower holds it too. Follower: always true.
    confirmed: bool,
    delivered: u32,
    /// Pairs delivered: (seq, local qubit for keep-type).
    pairs: Vec<DeliveredPair>,
    /// Pauli frame of measure-type pairs waiting for their outcome: seq → (flip for Z,
    /// flip for X).
    measuring: HashMap<u64, (Basis, BellState, Time, Time)>,
    /// Last time an unacknowledged ADD was sent (owner).
    add_sent: Time,
    /// When this end queued it.
    added: Time,
}

/// A request of the follower waiting for its ADD.
#[derive(Clone, Debug)]
struct PendingReq {
    request: CreateRequest,
    deadline: Time,
    sent: Time,
}

/// One end of the EGP on one link.
pub struct Egp {
    config: EgpConfig,
    rng: StdRng,
    next_create: u32,
    next_qid: u64,
    queue: BTreeMap<u64, Item>,
    /// Follower: requests sent to the owner, not yet added.
    pending: BTreeMap<u32, PendingReq>,
    /// Owner: (origin is owner, create number) → qid, so a repeated REQ is not queued
    /// twice.
    known: HashMap<(bool, u32), u64>,
    /// Items that ended, so late duplicates are recognised.
    finished: HashSet<u64>,
    /// The delivered pairs of the most recently ended items, by qid.
    recent: BTreeMap<u64, (CreateId, Vec<DeliveredPair>)>,
    /// EXPIREs not yet acknowledged: (qid, seqs, last sent).
    expiring: Vec<(u64, Vec<u64>, Time, u32)>,
    /// Pairs refused since the last drain, by qid, and when.
    expire_batch: BTreeMap<u64, Vec<u64>>,
    expire_batch_time: Time,
    /// (qid, seq) withdrawn here, so a repeated EXPIRE is not reported twice.
    expired: HashSet<(u64, u64)>,
    accepted: Option<HashSet<u16>>,
    /// Owner: the announced (epoch, qid) and when it was last sent. Follower: the
    /// newest announcement received.
    active: (u64, Option<u64>),
    active_sent: Time,
    /// Owner: pairs served for the current item in this turn.
    served_in_turn: u32,
    attempting: Option<u64>,
    transmit: VecDeque<Msg>,
    actions: VecDeque<Action>,
    events: VecDeque<LinkEvent>,
}

impl Egp {
    /// A fresh EGP end.
    pub fn new(config: EgpConfig) -> Egp {
        Egp {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            next_create: 1,
            next_qid: 1,
            queue: BTreeMap::new(),
            pending: BTreeMap::new(),
            known: HashMap::new(),
            finished: HashSet::new(),
            recent: BTreeMap::new(),
            expiring: Vec::new(),
            expire_batch: BTreeMap::new(),
            expire_batch_time: 0.0,
            expired: HashSet::new(),
            accepted: None,
            active: (0, None),
            active_sent: f64::NEG_INFINITY,
            served_in_turn: 0,
            attempting: None,
            transmit: VecDeque::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// How long after its deadline an item waits for heralds emitted before the
    /// deadline: their flight, plus a wall-clock margin for the broker's and this
    /// node's scheduling (the retransmission time, itself scaled to emulated time).
    fn grace(&self) -> Time {
        self.config.physics.herald_delay + self.config.retransmit
    }

    fn accepts(&self, purpose: u16) -> bool {
        self.accepted.as_ref().is_none_or(|a| a.contains(&purpose))
    }

    fn send(&mut self, msg: Msg) {
        self.transmit.push_back(msg);
    }

    fn local_origin(&self, item_owner_origin: bool) -> Origin {
        if item_owner_origin == self.config.owner {
            Origin::Local
        } else {
            Origin::Remote
        }
    }

    fn fail(&mut self, create_id: CreateId, code: ErrorCode) {
        self.events.push_back(LinkEvent::Err(LinkErr {
            create_id,
            code,
            seqs: Vec::new(),
            qubits: Vec::new(),
        }));
    }

    /// Owner: picks the item to serve — the best priority among confirmed items;
    /// within it, the current item until it has had `quantum` pairs, then the next
    /// one round-robin — and announces it if it changed.
    fn schedule(&mut self, now: Time) {
        if !self.config.owner {
            return;
        }
        let ready = |i: &Item| i.confirmed && i.delivered < i.request.number;
        // Strict priority, except that waiting raises a request one class per
        // `aging` seconds (so low priorities cannot starve).
        let aging = self.config.aging;
        let class = |i: &Item| {
            let raised = if aging > 0.0 && aging.is_finite() {
                ((now - i.added) / aging).clamp(0.0, 255.0) as u8
            } else {
                0
            };
            i.request.priority.saturating_sub(raised)
        };
        let best = self.queue.values().filter(|i| ready(i)).map(class).min();
        let current = self
            .active
            .1
            .filter(|q| self.queue.get(q).is_some_and(ready));
        let choice = match best {
            None => None,
            Some(p) => {
                let same_class: Vec<u64> = self
                    .queue
                    .iter()
                    .filter(|(_, i)| ready(i) && class(i) == p)
                    .map(|(q, _)| *q)
                    .collect();
                match current {
                    Some(c)
                        if same_class.contains(&c)
                            && self.served_in_turn < self.config.quantum.max(1) =>
                    {
                        Some(c)
                    }
                    Some(c) if same_class.contains(&c) => {
                        // Turn over: the next item after c, wrapping around.
                        same_class
                            .iter()
                            .find(|&&q| q > c)
                            .or(same_class.first())
                            .copied()
                    }
                    _ => same_class.first().copied(),
                }
            }
        };
        if choice != self.active.1 {
            self.served_in_turn = 0;
            self.active = (self.active.0 + 1, choice);
            self.announce(now);
        } else if self.served_in_turn >= self.config.quantum.max(1) {
            self.served_in_turn = 0;
        }
        self.set_attempt(choice);
    }

    fn announce(&mut self, now: Time) {
        self.active_sent = now;
        let (epoch, qid) = self.active;
        self.send(Msg::Active { epoch, qid });
    }

    /// Follower: attempt for the announced item if it holds it.
    fn follow(&mut self) {
        if self.config.owner {
            return;
        }
        let label = self.active.1.filter(|q| {
            self.queue
                .get(q)
                .is_some_and(|i| i.delivered < i.request.number)
        });
        self.set_attempt(label);
    }

    fn set_attempt(&mut self, label: Option<u64>) {
        if label != self.attempting {
            self.attempting = label;
            self.actions.push_back(Action::Attempt(label));
        }
    }

    fn refresh(&mut self, now: Time) {
        if self.config.owner {
            self.schedule(now);
        } else {
            self.follow();
        }
    }

    /// Ends an item at this end.
    fn finish(&mut self, qid: u64) -> Option<Item> {
        let item = self.queue.remove(&qid)?;
        self.finished.insert(qid);
        Some(item)
    }

    /// Withdraws a pair that cannot be delivered: free it here and tell the peer.
    fn reject_pair(&mut self, now: Time, qid: u64, seq: u64, qubit: QubitId) {
        self.actions.push_back(Action::Free(qubit));
        self.expired.insert((qid, seq));
        // Refusals are gathered per request and sent as one EXPIRE when the driver
        // next drains the protocol: a fast link can refuse a whole memory's worth of
        // spare pairs at once.
        self.expire_batch.entry(qid).or_default().push(seq);
        self.expire_batch_time = now;
    }

    /// Turns the gathered refusals into EXPIRE messages (one per request).
    fn flush_expires(&mut self) {
        let now = self.expire_batch_time;
        for (qid, seqs) in std::mem::take(&mut self.expire_batch) {
            self.expiring.push((qid, seqs.clone(), now, 0));
            self.send(Msg::Expire { qid, seqs });
        }
    }

    fn goodness(&self, bell: BellState, emitted: Time, now: Time) -> f64 {
        decayed_fidelity(
            self.config.physics.fidelity,
            bell,
            now - emitted,
            self.config.local_memory,
            self.config.remote_memory,
        )
    }

    /// The Pauli corrections that take the heralded Bell state to Φ⁺ when applied at
    /// the follower's half: X for Ψ±, then Z for the minus states.
    fn corrections(bell: BellState) -> Vec<Gate> {
        let mut gates = Vec::new();
        if bell.is_psi() {
            gates.push(Gate::X);
        }
        if bell.has_minus_phase() {
            gates.push(Gate::Z);
        }
        gates
    }

    /// Whether the corrections of `bell` flip an outcome in `basis`: X flips Z and Y
    /// outcomes, Z flips X and Y outcomes.
    fn frame_flip(bell: BellState, basis: Basis) -> u8 {
        let x = u8::from(bell.is_psi());
        let z = u8::from(bell.has_minus_phase());
        match basis {
            Basis::Z => x,
            Basis::X => z,
            Basis::Y => x ^ z,
            Basis::Rotated { .. } => 0,
        }
    }

    fn on_message(&mut self, now: Time, msg: Msg) {
        match msg {
            Msg::Req { create, request } if self.config.owner => {
                if let Some(&qid) = self.known.get(&(false, create)) {
                    // Repeated REQ: repeat the ADD if the item still exists.
                    if let Some(item) = self.queue.get(&qid) {
                        let msg = Msg::Add {
                            qid,
                            create,
                            owner_origin: false,
                            request: item.request,
                            deadline: item.deadline,
                        };
                        self.send(msg);
                    }
                    return;
                }
                if !self.accepts(request.purpose_id) {
                    self.send(Msg::Rej {
                        create,
                        owner_origin: false,
                        qid: None,
                    });
                    return;
                }
                let deadline = now + request.max_time;
                self.add_item(now, create, false, request, deadline);
            }
            Msg::Add {
                qid,
                create,
                owner_origin,
                request,
                deadline,
            } if !self.config.owner => {
                if self.queue.contains_key(&qid) || self.finished.contains(&qid) {
                    self.send(Msg::AddAck { qid });
                    return;
                }
                if owner_origin && !self.accepts(request.purpose_id) {
                    self.finished.insert(qid);
                    self.send(Msg::Rej {
                        create,
                        owner_origin,
                        qid: Some(qid),
                    });
                    return;
                }
                if !owner_origin && self.pending.remove(&create).is_none() {
                    // Our request, but we no longer wait for it (it timed out here):
                    // refuse it so the owner drops it.
                    self.finished.insert(qid);
                    self.send(Msg::Rej {
                        create,
                        owner_origin,
                        qid: Some(qid),
                    });
                    return;
                }
                let origin = self.local_origin(owner_origin);
                self.queue.insert(
                    qid,
                    Item {
                        create_id: CreateId { origin, id: create },
                        request,
                        deadline,
                        confirmed: true,
                        delivered: 0,
                        pairs: Vec::new(),
                        measuring: HashMap::new(),
                        add_sent: now,
                        added: now,
                    },
                );
                self.send(Msg::AddAck { qid });
                self.follow();
            }
            Msg::AddAck { qid } if self.config.owner => {
                if let Some(item) = self.queue.get_mut(&qid) {
                    item.confirmed = true;
                }
                self.schedule(now);
            }
            Msg::Rej {
                create,
                owner_origin,
                qid,
            } => {
                let origin = self.local_origin(owner_origin);
                let create_id = CreateId { origin, id: create };
                if self.config.owner {
                    // The follower refused an item the owner added.
                    if let Some(qid) = qid
                        && self.finish(qid).is_some()
                        && origin == Origin::Local
                    {
                        self.fail(create_id, ErrorCode::Rejected);
                    }
                    self.schedule(now);
                } else if self.pending.remove(&create).is_some() {
                    self.fail(create_id, ErrorCode::Rejected);
                }
            }
            // An older announcement (reordered) is ignored.
            Msg::Active { epoch, qid } if !self.config.owner && epoch >= self.active.0 => {
                self.active = (epoch, qid);
                self.follow();
            }
            Msg::Expire { qid, seqs } => {
                let mut withdrawn = Vec::new();
                let mut qubits = Vec::new();
                let (create_id, pairs) = match self.queue.get_mut(&qid) {
                    Some(item) => (Some(item.create_id), Some(&mut item.pairs)),
                    None => match self.recent.get_mut(&qid) {
                        Some((id, pairs)) => (Some(*id), Some(pairs)),
                        None => (None, None),
                    },
                };
                if let Some(pairs) = pairs {
                    for &seq in &seqs {
                        if !self.expired.insert((qid, seq)) {
                            continue;
                        }
                        // Only a pair this end reported OK is withdrawn; one it has
                        // not seen yet is refused when its herald comes.
                        if let Some(pos) = pairs.iter().position(|p| p.0 == seq) {
                            let (_, qubit) = pairs.remove(pos);
                            qubits.extend(qubit);
                            withdrawn.push(seq);
                        }
                    }
                } else {
                    self.expired.extend(seqs.iter().map(|&seq| (qid, seq)));
                }
                self.send(Msg::ExpireAck { qid, seqs });
                if let Some(create_id) = create_id
                    && !withdrawn.is_empty()
                {
                    self.events.push_back(LinkEvent::Err(LinkErr {
                        create_id,
                        code: ErrorCode::Expire,
                        seqs: withdrawn,
                        qubits,
                    }));
                }
            }
            Msg::ExpireAck { qid, seqs } => {
                self.expiring
                    .retain(|(q, s, _, _)| !(*q == qid && *s == seqs));
            }
            // A message for the other role: a peer with a different idea of who owns
            // the queue; ignore it.
            _ => {}
        }
    }

    fn add_item(
        &mut self,
        now: Time,
        create: u32,
        owner_origin: bool,
        request: CreateRequest,
        deadline: Time,
    ) {
        let qid = self.next_qid;
        self.next_qid += 1;
        self.known.insert((owner_origin, create), qid);
        let origin = self.local_origin(owner_origin);
        self.queue.insert(
            qid,
            Item {
                create_id: CreateId { origin, id: create },
                request,
                deadline,
                confirmed: false,
                delivered: 0,
                pairs: Vec::new(),
                measuring: HashMap::new(),
                add_sent: now,
                added: now,
            },
        );
        self.send(Msg::Add {
            qid,
            create,
            owner_origin,
            request,
            deadline,
        });
    }

    /// Emits the OK of a measured pair.
    fn measured_ok(&mut self, qid: u64, seq: u64, outcome: u8) {
        let Some(item) = self.queue.get_mut(&qid) else {
            return;
        };
        let Some((basis, bell, emitted, heralded)) = item.measuring.remove(&seq) else {
            return;
        };
        let create_id = item.create_id;
        let purpose_id = item.request.purpose_id;
        let flip = if self.config.owner {
            0
        } else {
            Self::frame_flip(bell, basis)
        };
        let goodness = self.goodness(bell, emitted, heralded);
        self.events.push_back(LinkEvent::Ok(PairOk {
            create_id,
            seq,
            purpose_id,
            delivered: Delivered::Measured {
                outcome: outcome ^ flip,
                basis,
            },
            goodness,
            time_of_goodness: heralded,
        }));
        self.complete_if_done(qid);
    }

    fn complete_if_done(&mut self, qid: u64) {
        let done = self
            .queue
            .get(&qid)
            .is_some_and(|i| i.delivered >= i.request.number && i.measuring.is_empty());
        if done && let Some(item) = self.finish(qid) {
            self.events.push_back(LinkEvent::Done(item.create_id));
        }
    }
}

impl LinkLayer for Egp {
    fn create(&mut self, now: Time, request: CreateRequest) -> Result<CreateId, LinkErr> {
        let id = self.next_create;
        self.next_create += 1;
        let create_id = CreateId {
            origin: Origin::Local,
            id,
        };
        let refuse = |code| LinkErr {
            create_id,
            code,
            seqs: Vec::new(),
            qubits: Vec::new(),
        };
        let valid_basis = !matches!(
            request.kind,
            RequestType::Measure(MeasureBasis::Fixed(Basis::Rotated { .. }))
        );
        if request.number == 0
            || !valid_basis
            || request.min_fidelity.is_nan()
            || request.max_time.is_nan()
            || request.max_time <= 0.0
        {
            return Err(refuse(ErrorCode::Create));
        }
        let physics = self.config.physics;
        // The best a pair can be when it is delivered: fresh, after the herald flight.
        let best = [BellState::PhiPlus, BellState::PsiPlus]
            .into_iter()
            .map(|b| self.goodness(b, 0.0, physics.herald_delay))
            .fold(f64::INFINITY, f64::min);
        if request.min_fidelity > best || request.max_time < physics.min_time() {
            return Err(refuse(ErrorCode::Unsupported));
        }
        self.events.push_back(LinkEvent::Ack(create_id));
        let deadline = now + request.max_time;
        if self.config.owner {
            self.add_item(now, id, true, request, deadline);
        } else {
            self.pending.insert(
                id,
                PendingReq {
                    request,
                    deadline,
                    sent: now,
                },
            );
            self.send(Msg::Req {
                create: id,
                request,
            });
        }
        Ok(create_id)
    }

    fn handle_message(&mut self, now: Time, payload: &[u8]) {
        match qnet_common::wire::decode::<Msg>(payload) {
            Ok(msg) => self.on_message(now, msg),
            Err(e) => tracing::warn!("undecodable EGP message: {e}"),
        }
    }

    fn handle_herald(&mut self, now: Time, herald: Herald) {
        let qid = herald.label;
        if self.expired.contains(&(qid, herald.seq)) {
            // The peer withdrew this pair before its herald reached us.
            self.actions.push_back(Action::Free(herald.qubit));
            return;
        }
        let usable = self.queue.get(&qid).is_some_and(|i| {
            // Both ends judge by the emission time the broker stamped on the
            // herald, not by when it reached them, so they always agree.
            i.confirmed && i.delivered < i.request.number && herald.emitted < i.deadline
        });
        if !usable {
            tracing::debug!(
                qid,
                seq = herald.seq,
                known = self.queue.contains_key(&qid),
                "herald for no usable request: pair withdrawn"
            );
            self.reject_pair(now, qid, herald.seq, herald.qubit);
            return;
        }
        let owner = self.config.owner;
        let goodness = self.goodness(herald.bell, herald.emitted, now);
        let basis = match self.queue[&qid].request.kind {
            RequestType::Keep => None,
            RequestType::Measure(MeasureBasis::Fixed(b)) => Some(b),
            RequestType::Measure(MeasureBasis::RandomZX) => Some(if self.rng.random::<bool>() {
                Basis::Z
            } else {
                Basis::X
            }),
        };
        let item = self.queue.get_mut(&qid).expect("checked above");
        item.delivered += 1;
        let create_id = item.create_id;
        let purpose_id = item.request.purpose_id;
        match basis {
            None => {
                item.pairs.push((herald.seq, Some(herald.qubit)));
                let gates = Self::corrections(herald.bell);
                if !owner && !gates.is_empty() {
                    self.actions.push_back(Action::Correct {
                        qubit: herald.qubit,
                        gates,
                    });
                }
                self.events.push_back(LinkEvent::Ok(PairOk {
                    create_id,
                    seq: herald.seq,
                    purpose_id,
                    delivered: Delivered::Kept {
                        qubit: herald.qubit,
                        remote: herald.remote,
                        bell: BellState::PhiPlus,
                    },
                    goodness,
                    time_of_goodness: now,
                }));
                self.complete_if_done(qid);
            }
            Some(basis) => {
                item.pairs.push((herald.seq, None));
                item.measuring
                    .insert(herald.seq, (basis, herald.bell, herald.emitted, now));
                self.actions.push_back(Action::Measure {
                    seq: herald.seq,
                    qubit: herald.qubit,
                    basis,
                });
            }
        }
        if owner {
            self.served_in_turn += 1;
        }
        self.refresh(now);
    }

    fn handle_measured(&mut self, _now: Time, seq: u64, outcome: u8) {
        let qid = self
            .queue
            .iter()
            .find(|(_, i)| i.measuring.contains_key(&seq))
            .map(|(q, _)| *q);
        if let Some(qid) = qid {
            self.measured_ok(qid, seq, outcome);
        }
    }

    fn handle_peer_lost(&mut self, _now: Time) {
        tracing::warn!(
            requests = self.queue.len(),
            "peer lost: its requests expire"
        );
        // Every request on this link ends; pairs already delivered are withdrawn,
        // since nothing can be done with half a pair whose partner is gone.
        for (_, item) in std::mem::take(&mut self.queue) {
            let seqs: Vec<u64> = item.pairs.iter().map(|p| p.0).collect();
            let qubits: Vec<QubitId> = item.pairs.iter().filter_map(|p| p.1).collect();
            self.events.push_back(LinkEvent::Err(LinkErr {
                create_id: item.create_id,
                code: ErrorCode::Expire,
                seqs,
                qubits,
            }));
            // An EXPIRE with pairs withdraws them but does not end the request; this one does.
            if !item.pairs.is_empty() {
                self.fail(item.create_id, ErrorCode::Expire);
            }
        }
        for (create, _) in std::mem::take(&mut self.pending) {
            self.fail(
                CreateId {
                    origin: Origin::Local,
                    id: create,
                },
                ErrorCode::Expire,
            );
        }
        self.expiring.clear();
        self.expire_batch.clear();
        self.active = (self.active.0 + 1, None);
        self.set_attempt(None);
    }

    fn handle_timeout(&mut self, now: Time) {
        // Every comparison here has the form `now >= t`, with `t` exactly as
        // poll_timeout computed it, so a wake-up at that time always acts.
        let rto = self.config.retransmit;
        // Deadlines: items end at both ends on their own, from the deadline ADD
        // carried; the origin reports TIMEOUT.
        let due: Vec<u64> = self
            .queue
            .iter()
            .filter(|(_, i)| now >= i.deadline + self.grace() && i.measuring.is_empty())
            .map(|(q, _)| *q)
            .collect();
        for qid in due {
            let Some(item) = self.finish(qid) else {
                continue;
            };
            // Keep its pairs a while: a herald emitted before the deadline can
            // reach the peer after the peer ended the item too, and the peer's
            // EXPIRE must still withdraw the pair here. (An item that got all its
            // pairs needs no such grace: a spare herald is refused at both ends.)
            self.recent
                .insert(qid, (item.create_id, item.pairs.clone()));
            while self.recent.len() > RECENT_ITEMS {
                self.recent.pop_first();
            }
            if item.create_id.origin == Origin::Local {
                self.fail(item.create_id, ErrorCode::Timeout);
            }
        }
        let late: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(c, _)| *c)
            .collect();
        for create in late {
            self.pending.remove(&create);
            self.fail(
                CreateId {
                    origin: Origin::Local,
                    id: create,
                },
                ErrorCode::Timeout,
            );
        }
        // Retransmissions.
        let mut resend = Vec::new();
        for (&create, p) in self.pending.iter_mut() {
            if now >= p.sent + rto {
                p.sent = now;
                resend.push(Msg::Req {
                    create,
                    request: p.request,
                });
            }
        }
        if self.config.owner {
            for (&qid, item) in self.queue.iter_mut() {
                if !item.confirmed && now >= item.add_sent + rto {
                    item.add_sent = now;
                    resend.push(Msg::Add {
                        qid,
                        create: item.create_id.id,
                        owner_origin: item.create_id.origin == Origin::Local,
                        request: item.request,
                        deadline: item.deadline,
                    });
                }
            }
            if self.active.1.is_some() && now >= self.active_sent + rto {
                self.active_sent = now;
                resend.push(Msg::Active {
                    epoch: self.active.0,
                    qid: self.active.1,
                });
            }
        }
        for (qid, seqs, sent, tries) in self.expiring.iter_mut() {
            // Backing off: the channel underneath retransmits too, and a congested
            // one must not be flooded with repeats.
            if now >= *sent + rto * f64::from(1u32 << (*tries).min(4)) {
                *sent = now;
                *tries += 1;
                resend.push(Msg::Expire {
                    qid: *qid,
                    seqs: seqs.clone(),
                });
            }
        }
        self.transmit.extend(resend);
        self.refresh(now);
    }

    fn poll_timeout(&self) -> Option<Time> {
        let rto = self.config.retransmit;
        // An item waiting for a measurement outcome ends only after it arrives.
        let deadlines = self
            .queue
            .values()
            .filter(|i| i.measuring.is_empty())
            .map(|i| i.deadline + self.grace());
        let pending = self
            .pending
            .values()
            .flat_map(|p| [p.deadline, p.sent + rto]);
        let adds = self
            .queue
            .values()
            .filter(|i| self.config.owner && !i.confirmed)
            .map(|i| i.add_sent + rto);
        let active =
            (self.config.owner && self.active.1.is_some()).then_some(self.active_sent + rto);
        let expiring = self
            .expiring
            .iter()
            .map(|e| e.2 + rto * f64::from(1u32 << e.3.min(4)));
        deadlines
            .chain(pending)
            .chain(adds)
            .chain(active)
            .chain(expiring)
            .filter(|t| t.is_finite())
            .min_by(f64::total_cmp)
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.expire_batch.is_empty() {
            self.flush_expires();
        }
        let msg = self.transmit.pop_front()?;
        Some(qnet_common::wire::encode(&msg).expect("EGP messages always encode"))
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    fn set_accepted_purposes(&mut self, accepted: Option<Vec<u16>>) {
        self.accepted = accepted.map(|a| a.into_iter().collect());
    }
}
