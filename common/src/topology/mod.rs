//! The topology model: which quantum nodes exist, how they are linked, and the physics
//! of each node and link.
//!
//! A topology file is TOML (see `topologies/` for examples):
//!
//! ```toml
//! [network]
//! name = "line-3"
//! seed = 7                  # broker RNG seed (default 0)
//! time_scale = 1.0          # emulated seconds per wall second (default 1)
//! classical_latency = "1ms" # optional, for every link without its own
//!
//! [defaults.node]           # any node key; each [[nodes]] may override it
//! memory_qubits = 8
//! t1 = "10s"
//! t2 = "1s"
//!
//! [defaults.link]           # any link key; each [[links]] may override it
//! length_km = 10.0
//!
//! [[nodes]]
//! name = "alice"
//! [[nodes]]
//! name = "bob"
//! memory_qubits = 16
//!
//! [[links]]
//! a = "alice"
//! b = "bob"
//! length_km = 25.0
//! ```
//!
//! [`Topology::load`] and [`Topology::parse`] read such a file, check it, and return
//! a [`Topology`] with every default applied. Any mistake comes back as a
//! [`TopologyError`] naming the file, line and column.
//!
//! # Units
//!
//! Durations are `f64` seconds, with [`f64::INFINITY`] for `"inf"` (no decoherence);
//! lengths are kilometres; probabilities and fidelities are plain fractions.
//!
//! # Layout
//! - this module: the resolved model ([`Topology`], [`NodeSpec`], [`LinkSpec`]) and
//!   graph helpers.
//! - `raw`: the serde types that mirror the file, with spans.
//! - `validate`: the checks, and resolving defaults.
//! - [`error`]: [`TopologyError`] and [`Location`].
//! - [`duration`]: duration strings.

pub mod duration;
pub mod error;
mod raw;
mod validate;

use std::fmt::{self, Write as _};
use std::path::Path;

use petgraph::algo::astar;
use petgraph::graph::{NodeIndex, UnGraph};
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

pub use duration::{DurationError, format_duration_secs, parse_duration_secs};
pub use error::{Location, TopologyError};

use duration::format_number;

/// Light in fibre: 5 µs per km (refractive index ≈ 1.5), in seconds per km.
pub const FIBRE_DELAY_S_PER_KM: f64 = 5e-6;
/// Default memory size of a node.
pub const DEFAULT_MEMORY_QUBITS: u32 = 8;
/// Default link length, km.
pub const DEFAULT_LENGTH_KM: f64 = 10.0;
/// Default Werner fidelity of delivered pairs.
pub const DEFAULT_FIDELITY: f64 = 1.0;
/// Default fibre attenuation, dB/km (telecom C band).
pub const DEFAULT_ATTENUATION_DB_PER_KM: f64 = 0.2;
/// Default detector efficiency.
pub const DEFAULT_DETECTOR_EFFICIENCY: f64 = 1.0;
/// Default photon emission efficiency.
pub const DEFAULT_EMISSION_EFFICIENCY: f64 = 1.0;
/// Default bright-state population α of single-click links.
pub const DEFAULT_BRIGHT_STATE: f64 = 0.1;
/// Default link-layer protocol.
pub const DEFAULT_LINK_LAYER: &str = "egp";
/// The shortest cycle time derived from a link's length, so that a 0 km link does not
/// ask for infinitely many attempts per second. An explicit `cycle_time` may be shorter.
pub const MIN_DERIVED_CYCLE_TIME_S: f64 = 1e-6;
/// The longest network or node name.
pub const MAX_NAME_LEN: usize = 63;

/// How a link produces entangled pairs (`model` in the file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkModel {
    /// Every attempt succeeds after one cycle; no loss. `"ideal"`, the default.
    #[default]
    Ideal,
    /// Midpoint Bell-state measurement, Barrett–Kok: success probability
    /// ½·(η·10^(−αL/20))² per attempt, heralding Ψ±. `"heralded-double-click"`.
    HeraldedDoubleClick,
    /// Single-photon midpoint scheme: success ≈ 2·α_b·η, fidelity ≈ 1 − α_b, with
    /// α_b = `bright_state`. `"heralded-single-click"`.
    HeraldedSingleClick,
    /// Entangled-photon source at one end; the travelling photon is lost with
    /// probability 1 − 10^(−αL/10). `"source"`.
    Source,
}

impl LinkModel {
    /// The name used in topology files.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkModel::Ideal => "ideal",
            LinkModel::HeraldedDoubleClick => "heralded-double-click",
            LinkModel::HeraldedSingleClick => "heralded-single-click",
            LinkModel::Source => "source",
        }
    }
}

impl fmt::Display for LinkModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quantum node, defaults applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Position in [`Topology::nodes`] (file order).
    pub index: usize,
    /// The id the broker gives this node: `NodeId(index)`.
    pub id: NodeId,
    /// Unique name, `[A-Za-z0-9_-]{1,63}`.
    pub name: String,
    /// Number of memory qubits, at least 1.
    pub memory_qubits: u32,
    /// Amplitude-damping time T1, seconds; [`f64::INFINITY`] for none.
    pub t1: f64,
    /// Dephasing time T2, seconds, at most 2·T1; [`f64::INFINITY`] for none. When the
    /// file gives no `t2`, it is 2·T1 (pure amplitude damping, no extra dephasing).
    pub t2: f64,
    /// Depolarizing probability after each gate, in [0, 1].
    pub gate_error: f64,
    /// Probability that a measurement outcome is flipped, in [0, 1].
    pub readout_error: f64,
}

/// One link between two nodes, defaults applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Position in [`Topology::links`] (file order).
    pub index: usize,
    /// Index of the `a` end in [`Topology::nodes`].
    pub a: usize,
    /// Index of the `b` end in [`Topology::nodes`].
    pub b: usize,
    /// Name of the `a` end.
    pub a_name: String,
    /// Name of the `b` end.
    pub b_name: String,
    /// Fibre length, km, >= 0.
    pub length_km: f64,
    /// Werner fidelity of delivered pairs, in [0.25, 1].
    pub fidelity: f64,
    /// How pairs are produced.
    pub model: LinkModel,
    /// Fibre attenuation α, dB/km.
    pub attenuation_db_per_km: f64,
    /// Detector efficiency η_d, in [0, 1].
    pub detector_efficiency: f64,
    /// Photon emission (and collection) efficiency, in [0, 1].
    pub emission_efficiency: f64,
    /// Two-photon interference visibility, in [0, 1], if given.
    pub visibility: Option<f64>,
    /// Bright-state population α_b of single-click links, in (0, 0.5].
    pub bright_state: f64,
    /// Time per entanglement attempt, seconds. Default: the fibre flight time
    /// (5 µs/km), but at least [`MIN_DERIVED_CYCLE_TIME_S`].
    pub cycle_time: f64,
    /// Emulated one-way classical latency between the ends, seconds. Taken from the
    /// link, else `[defaults.link]`, else `[network]`, else the fibre flight time.
    pub classical_latency: f64,
    /// Link-layer protocol name, `"egp"` by default.
    pub link_layer: String,
}

impl LinkSpec {
    /// The node at the other end from `node`, or `None` if `node` is not an end.
    pub fn other_end(&self, node: usize) -> Option<usize> {
        if node == self.a {
            Some(self.b)
        } else if node == self.b {
            Some(self.a)
        } else {
            None
        }
    }

    /// True if the link joins `x` and `y`, in either order.
    pub fn connects(&self, x: usize, y: usize) -> bool {
        (self.a, self.b) == (x, y) || (self.a, self.b) == (y, x)
    }

    /// One-way light travel time over the whole fibre, seconds.
    pub fn flight_time(&self) -> f64 {
        self.length_km * FIBRE_DELAY_S_PER_KM
    }

    /// Fraction of photons that survive the whole fibre: 10^(−α·L/10).
    pub fn transmittance(&self) -> f64 {
        10f64.powf(-self.attenuation_db_per_km * self.length_km / 10.0)
    }
}

/// Which cost [`Topology::shortest_path`] minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathMetric {
    /// Fewest links.
    Hops,
    /// Least total fibre length.
    Length,
}

/// Something that names a node of a [`Topology`]: its index (`usize`), its
/// [`NodeId`], or its name (`&str`, `String`).
pub trait NodeRef {
    /// The node's index in `topology`, if it has one.
    fn index_in(&self, topology: &Topology) -> Option<usize>;
}

impl NodeRef for usize {
    fn index_in(&self, topology: &Topology) -> Option<usize> {
        (*self < topology.nodes.len()).then_some(*self)
    }
}

impl NodeRef for NodeId {
    fn index_in(&self, topology: &Topology) -> Option<usize> {
        usize::try_from(self.0).ok()?.index_in(topology)
    }
}

impl NodeRef for &str {
    fn index_in(&self, topology: &Topology) -> Option<usize> {
        topology.node_index(self)
    }
}

impl NodeRef for String {
    fn index_in(&self, topology: &Topology) -> Option<usize> {
        topology.node_index(self)
    }
}

impl NodeRef for &String {
    fn index_in(&self, topology: &Topology) -> Option<usize> {
        topology.node_index(self)
    }
}

/// A checked topology with every default applied.
///
/// Build one with [`Topology::load`] or [`Topology::parse`]; those guarantee what the
/// field docs say (unique names, links between distinct existing nodes, no duplicate
/// links, a connected graph, physical parameters in range). The fields are public
/// for reading; code that edits them takes on keeping those promises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Where the topology was read from (a path, or the origin name given to
    /// [`Topology::parse`]).
    pub origin: String,
    /// The network's name, `[A-Za-z0-9_-]{1,63}`.
    pub name: String,
    /// Seed of the broker's RNG: the same seed and the same order of operations give
    /// the same measurement outcomes.
    pub seed: u64,
    /// Emulated seconds per wall-clock second, > 0.
    pub time_scale: f64,
    /// The `[network]` classical latency, seconds, if given; already folded into each
    /// link's [`LinkSpec::classical_latency`].
    pub classical_latency: Option<f64>,
    /// The nodes, in file order; at least one.
    pub nodes: Vec<NodeSpec>,
    /// The links, in file order.
    pub links: Vec<LinkSpec>,
}

impl Topology {
    /// Reads and checks the topology file at `path`. Errors name the path as given.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| TopologyError::Io {
            path: path.to_owned(),
            error,
        })?;
        Topology::parse(&text, &path.display().to_string())
    }

    /// Parses and checks topology `text`; `origin` is the file name errors mention.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let raw: raw::RawTopology = toml::from_str(text).map_err(|e| TopologyError::Syntax {
            at: Location::from_offset(origin, text, e.span().map_or(0, |s| s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        validate::validate(raw, text, origin)
    }

    /// The index of the node called `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node `node` (an index, [`NodeId`] or name).
    pub fn node(&self, node: impl NodeRef) -> Option<&NodeSpec> {
        node.index_in(self).map(|i| &self.nodes[i])
    }

    /// The link between `a` and `b` (in either order), if there is one.
    pub fn link_between(&self, a: impl NodeRef, b: impl NodeRef) -> Option<&LinkSpec> {
        let (a, b) = (a.index_in(self)?, b.index_in(self)?);
        self.links.iter().find(|l| l.connects(a, b))
    }

    /// True if a link joins `a` and `b`.
    pub fn are_neighbours(&self, a: impl NodeRef, b: impl NodeRef) -> bool {
        self.link_between(a, b).is_some()
    }

    /// The links that end at node index `node`, in file order.
    pub fn links_of(&self, node: usize) -> impl Iterator<Item = &LinkSpec> + '_ {
        self.links
            .iter()
            .filter(move |l| l.a == node || l.b == node)
    }

    /// The indices of the nodes linked to node index `node`, in link order.
    pub fn neighbours(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.links.iter().filter_map(move |l| l.other_end(node))
    }

    /// The graph: node weights are node indices, edge weights link indices, and the
    /// petgraph indices equal the node and link indices.
    pub fn graph(&self) -> UnGraph<usize, usize> {
        let mut graph = UnGraph::with_capacity(self.nodes.len(), self.links.len());
        for node in &self.nodes {
            graph.add_node(node.index);
        }
        for link in &self.links {
            graph.add_edge(NodeIndex::new(link.a), NodeIndex::new(link.b), link.index);
        }
        graph
    }

    /// The cheapest path from `from` to `to` by `metric`, as node indices including
    /// both ends (`[from]` when they are the same node); `None` if either node is
    /// unknown. Ties are broken deterministically.
    pub fn shortest_path(
        &self,
        from: impl NodeRef,
        to: impl NodeRef,
        metric: PathMetric,
    ) -> Option<Vec<usize>> {
        let (from, to) = (from.index_in(self)?, to.index_in(self)?);
        let graph = self.graph();
        let cost = |e: petgraph::graph::EdgeReference<'_, usize>| match metric {
            PathMetric::Hops => 1.0,
            PathMetric::Length => self.links[*e.weight()].length_km,
        };
        let (_, path) = astar(
            &graph,
            NodeIndex::new(from),
            |n| n.index() == to,
            cost,
            |_| 0.0,
        )?;
        Some(path.into_iter().map(|n| n.index()).collect())
    }

    /// A multi-line description for people (`qnet topo check`): the network, then one
    /// line per node and one per link.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_summary(&mut out);
        out
    }

    fn write_summary(&self, out: &mut String) -> fmt::Result {
        let latency = self
            .classical_latency
            .map_or("per link".to_owned(), format_duration_secs);
        let total_km: f64 = self.links.iter().map(|l| l.length_km).sum();
        writeln!(out, "topology {} ({})", self.name, self.origin)?;
        writeln!(
            out,
            "  {} nodes, {} links, {} km of fibre, connected",
            self.nodes.len(),
            self.links.len(),
            format_number(total_km)
        )?;
        writeln!(
            out,
            "  seed {}, time scale {}, classical latency {latency}",
            self.seed,
            format_number(self.time_scale)
        )?;

        let name_width = self.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
        writeln!(out, "nodes:")?;
        for node in &self.nodes {
            let neighbours: Vec<&str> = self
                .neighbours(node.index)
                .map(|i| self.nodes[i].name.as_str())
                .collect();
            writeln!(
                out,
                "  {:<name_width$}  memory {} qubits, T1 {}, T2 {}, gate error {}, readout error {}, neighbours: {}",
                node.name,
                node.memory_qubits,
                format_duration_secs(node.t1),
                format_duration_secs(node.t2),
                format_number(node.gate_error),
                format_number(node.readout_error),
                neighbours.join(", ")
            )?;
        }

        writeln!(out, "links:")?;
        let pair_width = self
            .links
            .iter()
            .map(|l| l.a_name.len() + l.b_name.len() + 4)
            .max()
            .unwrap_or(0);
        for link in &self.links {
            let pair = format!("{} -- {}", link.a_name, link.b_name);
            write!(
                out,
                "  {pair:<pair_width$}  {} km, {}, fidelity {}, fibre loss {} dB",
                format_number(link.length_km),
                link.model,
                format_number(link.fidelity),
                format_number(link.attenuation_db_per_km * link.length_km),
            )?;
            if link.detector_efficiency != 1.0 {
                write!(
                    out,
                    ", detector efficiency {}",
                    format_number(link.detector_efficiency)
                )?;
            }
            if link.emission_efficiency != 1.0 {
                write!(
                    out,
                    ", emission efficiency {}",
                    format_number(link.emission_efficiency)
                )?;
            }
            if let Some(v) = link.visibility {
                write!(out, ", visibility {}", format_number(v))?;
            }
            if link.model == LinkModel::HeraldedSingleClick {
                write!(out, ", bright state {}", format_number(link.bright_state))?;
            }
            writeln!(
                out,
                ", cycle {}, classical latency {}, link layer {}",
                format_duration_secs(link.cycle_time),
                format_duration_secs(link.classical_latency),
                link.link_layer
            )?;
        }
        Ok(())
    }
}
