//! The one owner of the engine: a task that takes requests from every connection in
//! turn, so the quantum state needs no locks and every collapse happens in one order
//! (the order a seed replays).
//!
//! The actor is also every link's heralding station: [`crate::links`] says when the
//! next herald is due, and the run loop sleeps until then unless a command comes
//! first. Heralds due by the time a command arrives are delivered before it is
//! handled, so a node never acts on a state that lacks a pair already heralded.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use qnet_common::topology::Topology;
use qnet_common::wire::{
    BrokerStats, ErrorBody, Event, Gate, HeraldRecord, MAX_BATCH, MAX_DENSITY_QUBITS, Pair,
    Request, RequestBody, Response, ResponseBody,
};
use qnet_common::{BellState, NodeId, QubitId};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};

use crate::engine::{Engine, EngineConfig, EngineError, Gate1, Gate2, NodeParams};
use crate::links::{Herald, LinkError, Links};

/// Records kept per link for [`RequestBody::HeraldLog`]; older ones are dropped.
pub const HERALD_LOG_CAPACITY: usize = 100_000;

/// Mixed into the topology seed for the links' generator, so success times and
/// heralded Bell states do not share a stream with the engine's measurements.
const LINKS_SEED_SALT: u64 = 0x6c69_6e6b_7374_6174;

/// Who is on the other end of a connection, from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A quantum node of the topology.
    Node(NodeId),
    /// The deployment's controller (admin rights).
    Controller,
}

/// A message to the actor.
#[derive(Debug)]
pub enum Cmd {
    /// A connection finished its hello.
    Connected {
        /// Who.
        peer: Peer,
        /// Distinguishes a node's successive connections.
        conn: u64,
        /// Where to push events for it.
        events: mpsc::UnboundedSender<Event>,
    },
    /// A connection ended.
    Disconnected {
        /// Who.
        peer: Peer,
        /// Which connection.
        conn: u64,
    },
    /// A request to answer on `reply`.
    Request {
        /// Who asked.
        peer: Peer,
        /// The request.
        request: Request,
        /// Where the response goes.
        reply: mpsc::UnboundedSender<Response>,
    },
}

struct NodeEntry {
    name: String,
    connection: Option<(u64, mpsc::UnboundedSender<Event>)>,
    address: Option<String>,
}

/// Wall clock ↔ emulated time (DESIGN §2): t_emu = (wall − start) × time_scale.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    time_scale: f64,
}

impl Clock {
    /// A clock whose emulated time 0 is `start`, running `time_scale` times as fast
    /// as the wall clock.
    pub fn new(start: Instant, time_scale: f64) -> Clock {
        Clock { start, time_scale }
    }

    /// Emulated seconds at wall instant `wall` (0 before the start).
    pub fn emulated(&self, wall: Instant) -> f64 {
        wall.saturating_duration_since(self.start).as_secs_f64() * self.time_scale
    }

    /// The earliest wall instant at which the emulated time is at least `t_emu`
    /// (rounded up to the next nanosecond, so a timer set for it never wakes a hair
    /// early); far in the future for times beyond what an `Instant` holds.
    pub fn wall(&self, t_emu: f64) -> Instant {
        let far = || self.start + Duration::from_secs(100 * 365 * 24 * 3600);
        let secs = t_emu / self.time_scale;
        if secs.is_nan() || secs >= 1e9 {
            return far();
        }
        let ns = (secs * 1e9).ceil().max(0.0);
        self.start
            .checked_add(Duration::from_nanos(ns as u64 + 1))
            .unwrap_or_else(far)
    }
}

/// The engine's owner.
pub struct Actor {
    engine: Engine<StdRng>,
    links: Links<StdRng>,
    /// The last [`HERALD_LOG_CAPACITY`] heralds of every link, by link index.
    herald_log: Vec<VecDeque<HeraldRecord>>,
    topology: Topology,
    nodes: Vec<NodeEntry>,
    controllers: HashMap<u64, mpsc::UnboundedSender<Event>>,
    link_seq: HashMap<(usize, usize), u64>,
    clock: Clock,
    stats: BrokerStats,
    shutdown: watch::Sender<bool>,
}

impl Actor {
    /// An actor for `topology`; `shutdown` is set when the controller asks the broker
    /// to stop.
    pub fn new(topology: Topology, shutdown: watch::Sender<bool>) -> anyhow::Result<Actor> {
        let mut engine = Engine::new(
            EngineConfig::default(),
            StdRng::seed_from_u64(topology.seed),
        );
        let mut nodes = Vec::with_capacity(topology.nodes.len());
        for spec in &topology.nodes {
            engine.add_node(
                spec.id,
                NodeParams {
                    t1: spec.t1,
                    t2: spec.t2,
                    gate_error: spec.gate_error,
                    readout_error: spec.readout_error,
                },
            )?;
            nodes.push(NodeEntry {
                name: spec.name.clone(),
                connection: None,
                address: None,
            });
        }
        let links = Links::new(
            &topology,
            StdRng::seed_from_u64(topology.seed ^ LINKS_SEED_SALT),
        );
        Ok(Actor {
            engine,
            links,
            herald_log: vec![VecDeque::new(); topology.links.len()],
            clock: Clock::new(Instant::now(), topology.time_scale),
            topology,
            nodes,
            controllers: HashMap::new(),
            link_seq: HashMap::new(),
            stats: BrokerStats::default(),
            shutdown,
        })
    }

    /// Serves commands until every sender is gone, and delivers heralds when they are
    /// due (at the wall time of the link stations' next timeout).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        // One timer, re-armed only when the next herald time changes.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<f64> = None;
        loop {
            let next = self.links.poll_timeout();
            if next != armed {
                if let Some(t) = next {
                    let at = tokio::time::Instant::from_std(self.clock.wall(t));
                    sleep.as_mut().reset(at);
                }
                armed = next;
            }
            let cmd = tokio::select! {
                biased;
                cmd = rx.recv() => cmd,
                () = &mut sleep, if armed.is_some() => {
                    armed = None; // fired; re-arm even if the time is the same
                    self.deliver_heralds();
                    continue;
                }
            };
            let Some(cmd) = cmd else { break };
            // Heralds due before the command happened before it.
            self.deliver_heralds();
            self.handle(cmd);
            // The command may have freed memory a waiting link needs.
            self.deliver_heralds();
        }
    }

    /// Emulated seconds since the broker started (DESIGN §2).
    fn now(&self) -> f64 {
        self.clock.emulated(Instant::now())
    }

    fn now_ns(&self) -> u64 {
        to_ns(self.now())
    }

    /// Delivers every herald due by now: both ends get [`Event::Heralded`], the
    /// link's log gets a record with the oracle's fidelity at the herald.
    fn deliver_heralds(&mut self) {
        let now = self.now();
        let heralds = self.links.handle_timeout(now, &mut self.engine);
        for herald in heralds {
            self.deliver(herald);
        }
    }

    fn deliver(&mut self, h: Herald) {
        let fidelity = self
            .engine
            .fidelity(h.heralded, h.qubit_a, h.qubit_b, h.bell)
            .unwrap_or(f64::NAN);
        let (created_ns, heralded_ns) = (to_ns(h.emitted), to_ns(h.heralded));
        for (me, other, local, remote) in [
            (h.a, h.b, h.qubit_a, h.qubit_b),
            (h.b, h.a, h.qubit_b, h.qubit_a),
        ] {
            if let Some((_, events)) = &self.nodes[me].connection {
                // A closed channel means the node is going; node_lost follows.
                let _ = events.send(Event::Heralded {
                    peer: self.nodes[other].name.clone(),
                    label: h.label,
                    pair: Pair {
                        seq: h.seq,
                        local,
                        remote,
                        bell: h.bell,
                        created_ns,
                    },
                    heralded_ns,
                });
            }
        }
        let log = &mut self.herald_log[h.link];
        if log.len() == HERALD_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(HeraldRecord {
            seq: h.seq,
            label: h.label,
            bell: h.bell,
            emitted_ns: created_ns,
            heralded_ns,
            fidelity,
        });
        self.stats.pairs_created += 1;
    }

    /// The admin herald log of the link between `a` and `b`.
    fn herald_log(
        &self,
        a: &str,
        b: &str,
        after_seq: u64,
        max: u32,
    ) -> Result<ResponseBody, ErrorBody> {
        let (ia, ib) = (self.node_by_name(a)?, self.node_by_name(b)?);
        let Some(link) = self.links.link_index(ia, ib).filter(|_| ia != ib) else {
            return Err(ErrorBody::NotNeighbours {
                peer: b.to_string(),
            });
        };
        let log = &self.herald_log[link];
        let first = log.partition_point(|r| r.seq <= after_seq);
        let max = max.min(MAX_BATCH) as usize;
        Ok(ResponseBody::HeraldLog(
            log.range(first..).take(max).copied().collect(),
        ))
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Connected { peer, conn, events } => match peer {
                Peer::Node(node) => {
                    // A node that connects while an older connection of it is still
                    // registered is a new incarnation (a restart after a crash the
                    // idle timeout has not noticed yet): the old one's qubits are lost.
                    if let Some((old, _)) = self.nodes[node.0 as usize].connection {
                        self.node_lost(node, old);
                    }
                    let entry = &mut self.nodes[node.0 as usize];
                    tracing::info!(node = %entry.name, conn, "node connected");
                    entry.connection = Some((conn, events));
                }
                Peer::Controller => {
                    self.controllers.insert(conn, events);
                }
            },
            Cmd::Disconnected { peer, conn } => match peer {
                Peer::Node(node) => self.node_lost(node, conn),
                Peer::Controller => {
                    self.controllers.remove(&conn);
                }
            },
            Cmd::Request {
                peer,
                request,
                reply,
            } => {
                self.stats.requests += 1;
                let body = self.request(&peer, request.body);
                if body.is_err() {
                    self.stats.errors += 1;
                }
                // A closed reply channel means the connection is gone; nothing to do.
                let _ = reply.send(Response {
                    id: request.id,
                    body,
                });
            }
        }
    }

    /// A node's connection ended: its qubits are traced out (a crash loses them, and
    /// a node that left has no use for them). Its partners are not told (DESIGN §4).
    fn node_lost(&mut self, node: NodeId, conn: u64) {
        let entry = &mut self.nodes[node.0 as usize];
        if entry.connection.as_ref().map(|c| c.0) != Some(conn) {
            return; // an older connection of a node that has already reconnected
        }
        entry.connection = None;
        entry.address = None;
        let name = entry.name.clone();
        self.links.node_lost(node.0 as usize);
        match self.engine.drop_node(node) {
            Ok(lost) => {
                tracing::warn!(node = %name, lost, "node disconnected; its qubits are lost")
            }
            Err(e) => tracing::error!(node = %name, "dropping node failed: {e}"),
        }
        self.controllers
            .retain(|_, tx| tx.send(Event::NodeLost { name: name.clone() }).is_ok());
    }

    fn node_by_name(&self, name: &str) -> Result<usize, ErrorBody> {
        self.topology
            .node_index(name)
            .ok_or_else(|| ErrorBody::UnknownNode(name.to_string()))
    }

    fn request(&mut self, peer: &Peer, body: RequestBody) -> Result<ResponseBody, ErrorBody> {
        if body.is_admin() && *peer != Peer::Controller {
            return Err(ErrorBody::NotAdmin);
        }
        let now = self.now();
        match (peer, body) {
            (_, RequestBody::Now) => Ok(ResponseBody::Now {
                t_emu_ns: self.now_ns(),
            }),
            (_, RequestBody::Lookup { name }) => {
                let i = self.node_by_name(&name)?;
                self.nodes[i]
                    .address
                    .clone()
                    .map(ResponseBody::Address)
                    .ok_or(ErrorBody::NodeDown(name))
            }
            (_, RequestBody::Stats) => Ok(ResponseBody::Stats(self.stats())),
            (_, RequestBody::Shutdown) => {
                tracing::info!("shutdown requested by the controller");
                let _ = self.shutdown.send(true);
                Ok(ResponseBody::Done)
            }
            (_, RequestBody::Fidelity { a, b, bell }) => self
                .engine
                .fidelity(now, a, b, bell)
                .map(ResponseBody::Fidelity)
                .map_err(|e| self.error(e)),
            (_, RequestBody::ReducedDensityMatrix { qubits }) => {
                if qubits.len() > MAX_DENSITY_QUBITS as usize {
                    return Err(ErrorBody::BatchTooLarge {
                        len: qubits.len() as u32,
                        max: MAX_DENSITY_QUBITS,
                    });
                }
                let rho = self
                    .engine
                    .reduced_density_matrix(now, &qubits)
                    .map_err(|e| self.error(e))?;
                Ok(ResponseBody::DensityMatrix {
                    qubits: qubits.len() as u32,
                    entries: rho.data.iter().map(|c| (c.re, c.im)).collect(),
                })
            }
            (
                _,
                RequestBody::HeraldLog {
                    a,
                    b,
                    after_seq,
                    max,
                },
            ) => self.herald_log(&a, &b, after_seq, max),
            (_, RequestBody::SetLink { a, b, fidelity, up }) => {
                let (i, j) = (self.node_by_name(&a)?, self.node_by_name(&b)?);
                let Some(link) = self.links.link_index(i, j).filter(|_| i != j) else {
                    return Err(ErrorBody::NotNeighbours { peer: b });
                };
                if let Some(f) = fidelity
                    && !(0.25..=1.0).contains(&f)
                {
                    return Err(ErrorBody::BadRequest(format!(
                        "fidelity {f} is outside [0.25, 1]"
                    )));
                }
                tracing::warn!(%a, %b, ?fidelity, ?up, t_emu = now, "fault: link changed");
                self.links.set_fault(now, link, fidelity, up);
                Ok(ResponseBody::Done)
            }
            (_, RequestBody::SetMemory { node, t1, t2 }) => {
                let i = self.node_by_name(&node)?;
                let id = self.topology.nodes[i].id;
                let mut params = self.engine.node_params(id).map_err(|e| self.error(e))?;
                params.t1 = t1.unwrap_or(params.t1);
                params.t2 = t2.unwrap_or(params.t2);
                self.engine
                    .set_node_params(now, id, params)
                    .map_err(|e| self.error(e))?;
                tracing::warn!(%node, t1 = params.t1, t2 = params.t2, t_emu = now, "fault: memory changed");
                Ok(ResponseBody::Done)
            }
            (Peer::Controller, _) => Err(ErrorBody::BadRequest(
                "the controller holds no qubits; only admin requests are allowed".into(),
            )),
            (Peer::Node(node), body) => self.node_request(*node, now, body),
        }
    }

    fn node_request(
        &mut self,
        node: NodeId,
        now: f64,
        body: RequestBody,
    ) -> Result<ResponseBody, ErrorBody> {
        match body {
            RequestBody::Announce { addr } => {
                self.nodes[node.0 as usize].address = Some(addr);
                Ok(ResponseBody::Done)
            }
            RequestBody::CreatePairs {
                link_peer,
                count,
                bell,
                fidelity,
            } => self.create_pairs(node, now, &link_peer, count, bell, fidelity),
            RequestBody::Attempt { link_peer, label } => {
                let peer = self.node_by_name(&link_peer)?;
                self.links
                    .set_attempt(now, node.0 as usize, peer, label)
                    .map_err(|e| match e {
                        LinkError::NotNeighbours { .. } => {
                            ErrorBody::NotNeighbours { peer: link_peer }
                        }
                        LinkError::UnknownNode { .. } => ErrorBody::Internal(e.to_string()),
                    })?;
                Ok(ResponseBody::Done)
            }
            RequestBody::Alloc { count } => {
                check_batch(count as usize)?;
                let mut qubits = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    qubits.push(self.engine.alloc(now, node).map_err(|e| self.error(e))?);
                }
                Ok(ResponseBody::Qubits(qubits))
            }
            RequestBody::Gate {
                gate,
                qubit,
                second,
            } => {
                self.stats.gates += 1;
                let result = match (gate_kind(gate), second) {
                    (Ok(g), None) => self.engine.gate1(now, node, qubit, g),
                    (Err(g), Some(b)) => self.engine.gate2(now, node, qubit, b, g),
                    _ => {
                        return Err(ErrorBody::BadRequest(format!(
                            "{gate:?} acts on {} qubit(s)",
                            gate.arity()
                        )));
                    }
                };
                result
                    .map(|()| ResponseBody::Done)
                    .map_err(|e| self.error(e))
            }
            RequestBody::Measure { qubits, free } => {
                check_batch(qubits.len())?;
                self.check_all(node, qubits.iter().map(|(q, _)| *q))?;
                let mut outcomes = Vec::with_capacity(qubits.len());
                for (q, basis) in qubits {
                    let r = if free {
                        self.engine.measure_free(now, node, q, basis)
                    } else {
                        self.engine.measure(now, node, q, basis)
                    };
                    outcomes.push(r.map_err(|e| self.error(e))?);
                }
                self.stats.measurements += outcomes.len() as u64;
                Ok(ResponseBody::Outcomes(outcomes))
            }
            RequestBody::Reset { qubits } => {
                check_batch(qubits.len())?;
                self.check_all(node, qubits.iter().copied())?;
                for q in qubits {
                    self.engine.reset(now, node, q).map_err(|e| self.error(e))?;
                }
                Ok(ResponseBody::Done)
            }
            RequestBody::Free { qubits } => {
                check_batch(qubits.len())?;
                self.check_all(node, qubits.iter().copied())?;
                for q in qubits {
                    self.engine.free(now, node, q).map_err(|e| self.error(e))?;
                }
                Ok(ResponseBody::Done)
            }
            RequestBody::Transfer { qubit, to, tag } => {
                let to_index = self.node_by_name(&to)?;
                // A qubit travels over a quantum channel, which only links provide.
                if self
                    .topology
                    .link_between(node.0 as usize, to_index)
                    .is_none()
                {
                    return Err(ErrorBody::NotNeighbours { peer: to });
                }
                let Some((_, events)) = self.nodes[to_index].connection.clone() else {
                    return Err(ErrorBody::NodeDown(to));
                };
                let to_id = self.topology.nodes[to_index].id;
                let new = self
                    .engine
                    .transfer(now, node, qubit, to_id)
                    .map_err(|e| self.error(e))?;
                let from = self.nodes[node.0 as usize].name.clone();
                let _ = events.send(Event::QubitArrived {
                    qubit: new,
                    from,
                    tag,
                });
                Ok(ResponseBody::Done)
            }
            other => Err(ErrorBody::BadRequest(format!(
                "{} is not a node request",
                other.kind()
            ))),
        }
    }

    /// Pairs on request over a link (the ideal link service): Werner pairs of the
    /// link's fidelity (or lower, if asked), the requester's halves in the response
    /// and the peer's pushed as an event.
    fn create_pairs(
        &mut self,
        node: NodeId,
        now: f64,
        link_peer: &str,
        count: u32,
        bell: BellState,
        fidelity: Option<f64>,
    ) -> Result<ResponseBody, ErrorBody> {
        check_batch(count as usize)?;
        let a = node.0 as usize;
        let b = self.node_by_name(link_peer)?;
        let Some(link) = self.topology.link_between(a, b) else {
            return Err(ErrorBody::NotNeighbours {
                peer: link_peer.to_string(),
            });
        };
        let link_fidelity = link.fidelity;
        let Some((_, events)) = self.nodes[b].connection.clone() else {
            return Err(ErrorBody::NodeDown(link_peer.to_string()));
        };
        let f = match fidelity {
            Some(f) if !(0.0..=1.0).contains(&f) => {
                return Err(ErrorBody::BadRequest(format!(
                    "fidelity {f} is outside [0, 1]"
                )));
            }
            Some(f) => f.min(link_fidelity),
            None => link_fidelity,
        };
        let b_id = self.topology.nodes[b].id;
        let created_ns = self.now_ns();
        let seq = self.link_seq.entry((a.min(b), a.max(b))).or_insert(0);
        let mut mine = Vec::with_capacity(count as usize);
        let mut theirs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (qa, qb) = self
                .engine
                .create_pair(now, node, b_id, bell, f)
                .map_err(|e| engine_error(&self.nodes, e))?;
            *seq += 1;
            mine.push(Pair {
                seq: *seq,
                local: qa,
                remote: qb,
                bell,
                created_ns,
            });
            theirs.push(Pair {
                seq: *seq,
                local: qb,
                remote: qa,
                bell,
                created_ns,
            });
        }
        self.stats.pairs_created += u64::from(count);
        let _ = events.send(Event::PairsDelivered {
            peer: self.nodes[a].name.clone(),
            pairs: theirs,
        });
        Ok(ResponseBody::Pairs(mine))
    }

    /// Checks that `node` owns every qubit of a batch (and none twice) before any of
    /// it is applied, so a bad batch changes nothing.
    fn check_all(
        &self,
        node: NodeId,
        qubits: impl Iterator<Item = QubitId>,
    ) -> Result<(), ErrorBody> {
        let mut seen = std::collections::HashSet::new();
        for q in qubits {
            if !seen.insert(q) {
                return Err(ErrorBody::BadRequest(format!(
                    "{q} appears twice in the batch"
                )));
            }
            let owner = self.engine.owner(q).map_err(|e| self.error(e))?;
            if owner != node {
                return Err(ErrorBody::NotOwner {
                    qubit: q,
                    owner: Some(self.nodes[owner.0 as usize].name.clone()),
                });
            }
        }
        Ok(())
    }

    fn error(&self, e: EngineError) -> ErrorBody {
        engine_error(&self.nodes, e)
    }

    fn stats(&self) -> BrokerStats {
        let s = self.engine.stats();
        BrokerStats {
            t_emu_ns: self.now_ns(),
            uptime_ns: self.clock.start.elapsed().as_nanos() as u64,
            connections: (self.nodes.iter().filter(|n| n.connection.is_some()).count()
                + self.controllers.len()) as u32,
            live_qubits: s.qubits as u64,
            registers: s.registers as u64,
            largest_register: s.largest_register as u32,
            ..self.stats.clone()
        }
    }
}

/// Emulated seconds as whole nanoseconds (negative and NaN as 0).
fn to_ns(t: f64) -> u64 {
    (t * 1e9) as u64
}

fn check_batch(len: usize) -> Result<(), ErrorBody> {
    if len > MAX_BATCH as usize {
        return Err(ErrorBody::BatchTooLarge {
            len: len as u32,
            max: MAX_BATCH,
        });
    }
    Ok(())
}

fn engine_error(nodes: &[NodeEntry], e: EngineError) -> ErrorBody {
    match e {
        EngineError::NoSuchQubit { qubit } => ErrorBody::NoSuchQubit { qubit },
        EngineError::NotOwner { qubit, owner, .. } => ErrorBody::NotOwner {
            qubit,
            owner: nodes.get(owner.0 as usize).map(|n| n.name.clone()),
        },
        EngineError::RegisterTooLarge { qubits, cap, .. } => ErrorBody::RegisterTooLarge {
            size: qubits as u32,
            cap: cap as u32,
        },
        EngineError::SameQubit { .. } | EngineError::InvalidParameter(_) => {
            ErrorBody::BadRequest(e.to_string())
        }
        EngineError::UnknownNode { .. } => ErrorBody::Internal(e.to_string()),
    }
}

/// A wire gate as a one-qubit gate (`Ok`) or a two-qubit gate (`Err`).
fn gate_kind(gate: Gate) -> Result<Gate1, Gate2> {
    Ok(match gate {
        Gate::X => Gate1::X,
        Gate::Y => Gate1::Y,
        Gate::Z => Gate1::Z,
        Gate::H => Gate1::H,
        Gate::S => Gate1::S,
        Gate::Sdg => Gate1::Sdg,
        Gate::T => Gate1::T,
        Gate::Tdg => Gate1::Tdg,
        Gate::Rx(t) => Gate1::Rx(t),
        Gate::Ry(t) => Gate1::Ry(t),
        Gate::Rz(t) => Gate1::Rz(t),
        Gate::Cnot => return Err(Gate2::Cnot),
        Gate::Cz => return Err(Gate2::Cz),
        Gate::Swap => return Err(Gate2::Swap),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_converts_between_wall_and_emulated_time() {
        let start = Instant::now();
        for scale in [1.0, 1e-3, 1000.0, 37.5] {
            let clock = Clock::new(start, scale);
            assert_eq!(clock.emulated(start), 0.0);
            // One wall second is `scale` emulated seconds.
            let one = clock.emulated(start + Duration::from_secs(1));
            assert!((one - scale).abs() <= 1e-12 * scale, "{scale}: {one}");
            for t in [0.0, 1e-6, 0.25, 3.0, 1234.5] {
                let wall = clock.wall(t);
                // Never early, and late by at most a couple of nanoseconds.
                assert!(clock.emulated(wall) >= t, "{scale}: {t}");
                let late = wall - start - Duration::from_secs_f64(t / scale);
                assert!(late <= Duration::from_nanos(3), "{scale}: {t}: {late:?}");
            }
        }
        // Before the start, and times too far away for an Instant.
        let clock = Clock::new(start, 2.0);
        assert_eq!(clock.wall(-5.0), start + Duration::from_nanos(1));
        assert!(clock.wall(f64::INFINITY) > start + Duration::from_secs(3600 * 24 * 365));
        assert!(clock.wall(f64::NAN) > start + Duration::from_secs(3600 * 24 * 365));
    }
}
