//! Turns a [`RawTopology`] into a [`Topology`]: checks every value where it is written,
//! applies the defaults, and checks the graph.

use std::collections::HashMap;
use std::ops::Range;

use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::Bfs;
use toml::Spanned;

use super::raw::{RawLinkParams, RawNodeParams, RawTopology};
use super::{
    DEFAULT_ATTENUATION_DB_PER_KM, DEFAULT_BRIGHT_STATE, DEFAULT_DETECTOR_EFFICIENCY,
    DEFAULT_EMISSION_EFFICIENCY, DEFAULT_FIDELITY, DEFAULT_LENGTH_KM, DEFAULT_LINK_LAYER,
    DEFAULT_MEMORY_QUBITS, DurationError, FIBRE_DELAY_S_PER_KM, LinkModel, LinkSpec, Location,
    MAX_NAME_LEN, MIN_DERIVED_CYCLE_TIME_S, NodeSpec, Topology, TopologyError, parse_duration_secs,
};
use crate::ids::NodeId;

type Result<T, E = TopologyError> = std::result::Result<T, E>;

/// The text being validated, to turn spans into [`Location`]s.
struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        Location::from_span(self.origin, self.text, &span)
    }
}

/// A duration together with the spanned text it came from, for error messages.
type Dur<'r> = (f64, &'r Spanned<String>);

/// Node settings after their own checks, before defaults are applied.
#[derive(Clone, Copy, Default)]
struct NodeValues<'r> {
    memory_qubits: Option<u32>,
    t1: Option<Dur<'r>>,
    t2: Option<Dur<'r>>,
    gate_error: Option<f64>,
    readout_error: Option<f64>,
}

impl NodeValues<'_> {
    /// `self`'s settings where given, `defaults`' elsewhere.
    fn or(self, defaults: Self) -> Self {
        NodeValues {
            memory_qubits: self.memory_qubits.or(defaults.memory_qubits),
            t1: self.t1.or(defaults.t1),
            t2: self.t2.or(defaults.t2),
            gate_error: self.gate_error.or(defaults.gate_error),
            readout_error: self.readout_error.or(defaults.readout_error),
        }
    }
}

/// Link settings after their own checks, before defaults are applied.
#[derive(Clone, Copy, Default)]
struct LinkValues<'r> {
    length_km: Option<f64>,
    fidelity: Option<f64>,
    model: Option<LinkModel>,
    attenuation_db_per_km: Option<f64>,
    detector_efficiency: Option<f64>,
    emission_efficiency: Option<f64>,
    visibility: Option<f64>,
    bright_state: Option<f64>,
    cycle_time: Option<f64>,
    classical_latency: Option<f64>,
    link_layer: Option<&'r str>,
}

impl LinkValues<'_> {
    /// `self`'s settings where given, `defaults`' elsewhere.
    fn or(self, defaults: Self) -> Self {
        LinkValues {
            length_km: self.length_km.or(defaults.length_km),
            fidelity: self.fidelity.or(defaults.fidelity),
            model: self.model.or(defaults.model),
            attenuation_db_per_km: self
                .attenuation_db_per_km
                .or(defaults.attenuation_db_per_km),
            detector_efficiency: self.detector_efficiency.or(defaults.detector_efficiency),
            emission_efficiency: self.emission_efficiency.or(defaults.emission_efficiency),
            visibility: self.visibility.or(defaults.visibility),
            bright_state: self.bright_state.or(defaults.bright_state),
            cycle_time: self.cycle_time.or(defaults.cycle_time),
            classical_latency: self.classical_latency.or(defaults.classical_latency),
            link_layer: self.link_layer.or(defaults.link_layer),
        }
    }
}

/// Checks `raw` (parsed from `text`, which came from `origin`) and resolves it.
///
/// Errors come in file order as far as possible: network, defaults, nodes, links, then
/// the graph as a whole. Only the first error is reported.
pub(super) fn validate(raw: RawTopology, text: &str, origin: &str) -> Result<Topology> {
    let src = Source { origin, text };

    // [network]
    let net = &raw.network;
    check_name(&src, "network", &net.name)?;
    let time_scale = match &net.time_scale {
        None => 1.0,
        Some(ts) if ts.get_ref().is_finite() && *ts.get_ref() > 0.0 => *ts.get_ref(),
        Some(ts) => {
            return Err(TopologyError::InvalidTimeScale {
                at: src.at(ts.span()),
                value: *ts.get_ref(),
            });
        }
    };
    let global_latency = net
        .classical_latency
        .as_ref()
        .map(|s| finite_duration(&src, "classical_latency", s))
        .transpose()?;

    // [defaults]
    let node_defaults = node_values(&src, &raw.defaults.node)?;
    let link_defaults = link_values(&src, &raw.defaults.link)?;

    // [[nodes]]
    if raw.nodes.is_empty() {
        return Err(TopologyError::NoNodes {
            at: src.at(net.name.span()),
        });
    }
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    let mut name_spans: Vec<Range<usize>> = Vec::with_capacity(raw.nodes.len());
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(raw.nodes.len());
    let node_parts: Vec<_> = raw.nodes.into_iter().map(|n| n.into_parts()).collect();
    for (index, (name, params)) in node_parts.iter().enumerate() {
        check_name(&src, "node", name)?;
        if let Some(&first) = by_name.get(name.get_ref().as_str()) {
            let first = src.at(name_spans[first].clone());
            return Err(TopologyError::DuplicateNode {
                at: src.at(name.span()),
                name: name.get_ref().clone(),
                first_line: first.line,
                first_column: first.column,
            });
        }
        by_name.insert(name.get_ref(), index);
        name_spans.push(name.span());
        let values = node_values(&src, params)?.or(node_defaults);
        nodes.push(resolve_node(&src, index, name.get_ref(), values)?);
    }

    // [[links]]
    let mut links = Vec::with_capacity(raw.links.len());
    let mut pairs: HashMap<(usize, usize), Range<usize>> = HashMap::new();
    for (index, link) in raw.links.into_iter().enumerate() {
        let (a, b, params) = link.into_parts();
        let end = |end: &Spanned<String>| {
            by_name
                .get(end.get_ref().as_str())
                .copied()
                .ok_or_else(|| TopologyError::UnknownNode {
                    at: src.at(end.span()),
                    name: end.get_ref().clone(),
                })
        };
        let (ia, ib) = (end(&a)?, end(&b)?);
        if ia == ib {
            return Err(TopologyError::SelfLink {
                at: src.at(b.span()),
                name: b.into_inner(),
            });
        }
        if let Some(first) = pairs.get(&(ia.min(ib), ia.max(ib))) {
            let first = src.at(first.clone());
            return Err(TopologyError::DuplicateLink {
                at: src.at(a.span()),
                a: a.into_inner(),
                b: b.into_inner(),
                first_line: first.line,
                first_column: first.column,
            });
        }
        pairs.insert((ia.min(ib), ia.max(ib)), a.span());
        let values = link_values(&src, &params)?.or(link_defaults);
        links.push(resolve_link(
            index,
            (ia, ib),
            (a, b),
            values,
            global_latency,
        ));
    }

    // The graph as a whole.
    let mut graph = UnGraph::<(), ()>::with_capacity(nodes.len(), links.len());
    for _ in &nodes {
        graph.add_node(());
    }
    for link in &links {
        graph.add_edge(NodeIndex::new(link.a), NodeIndex::new(link.b), ());
    }
    let mut reached = vec![false; nodes.len()];
    let mut bfs = Bfs::new(&graph, NodeIndex::new(0));
    while let Some(n) = bfs.next(&graph) {
        reached[n.index()] = true;
    }
    if let Some(lost) = reached.iter().position(|r| !r) {
        return Err(TopologyError::Disconnected {
            at: src.at(name_spans[lost].clone()),
            node: nodes[lost].name.clone(),
            from: nodes[0].name.clone(),
        });
    }

    Ok(Topology {
        origin: origin.to_owned(),
        name: net.name.get_ref().clone(),
        seed: net.seed.unwrap_or(0),
        time_scale,
        classical_latency: global_latency,
        nodes,
        links,
    })
}

/// Applies the built-in defaults to `v` and checks T2 ≤ 2·T1.
fn resolve_node(src: &Source<'_>, index: usize, name: &str, v: NodeValues<'_>) -> Result<NodeSpec> {
    let t1 = v.t1.map_or(f64::INFINITY, |(secs, _)| secs);
    // Without a T2 the memory has no dephasing beyond what amplitude damping implies,
    // which is T2 = 2·T1 (infinite when T1 is): a lone `t1` is then valid as written.
    let t2 = v.t2.map_or(2.0 * t1, |(secs, _)| secs);
    if let Some((_, t2_text)) = v.t2
        && t2 > 2.0 * t1
    {
        return Err(TopologyError::T2ExceedsTwiceT1 {
            at: src.at(t2_text.span()),
            node: name.to_owned(),
            t1: v
                .t1
                .map_or_else(|| "inf".to_owned(), |(_, s)| s.get_ref().clone()),
            t2: t2_text.get_ref().clone(),
        });
    }
    Ok(NodeSpec {
        index,
        id: NodeId(u32::try_from(index).expect("fewer than 2^32 nodes")),
        name: name.to_owned(),
        memory_qubits: v.memory_qubits.unwrap_or(DEFAULT_MEMORY_QUBITS),
        t1,
        t2,
        gate_error: v.gate_error.unwrap_or(0.0),
        readout_error: v.readout_error.unwrap_or(0.0),
    })
}

/// Applies the built-in defaults to `v`.
fn resolve_link(
    index: usize,
    (a, b): (usize, usize),
    (a_name, b_name): (Spanned<String>, Spanned<String>),
    v: LinkValues<'_>,
    global_latency: Option<f64>,
) -> LinkSpec {
    let length_km = v.length_km.unwrap_or(DEFAULT_LENGTH_KM);
    let flight = length_km * FIBRE_DELAY_S_PER_KM;
    LinkSpec {
        index,
        a,
        b,
        a_name: a_name.into_inner(),
        b_name: b_name.into_inner(),
        length_km,
        fidelity: v.fidelity.unwrap_or(DEFAULT_FIDELITY),
        model: v.model.unwrap_or_default(),
        attenuation_db_per_km: v
            .attenuation_db_per_km
            .unwrap_or(DEFAULT_ATTENUATION_DB_PER_KM),
        detector_efficiency: v.detector_efficiency.unwrap_or(DEFAULT_DETECTOR_EFFICIENCY),
        emission_efficiency: v.emission_efficiency.unwrap_or(DEFAULT_EMISSION_EFFICIENCY),
        visibility: v.visibility,
        bright_state: v.bright_state.unwrap_or(DEFAULT_BRIGHT_STATE),
        cycle_time: v.cycle_time.unwrap_or(flight.max(MIN_DERIVED_CYCLE_TIME_S)),
        classical_latency: v.classical_latency.or(global_latency).unwrap_or(flight),
        link_layer: v.link_layer.unwrap_or(DEFAULT_LINK_LAYER).to_owned(),
    }
}

/// Checks each node setting that is present.
fn node_values<'r>(src: &Source<'_>, p: &'r RawNodeParams) -> Result<NodeValues<'r>> {
    let memory_qubits = match &p.memory_qubits {
        Some(m) if *m.get_ref() == 0 => {
            return Err(TopologyError::ZeroMemory {
                at: src.at(m.span()),
            });
        }
        m => m.as_ref().map(|m| *m.get_ref()),
    };
    let lifetime = |field, s: &'r Spanned<String>| -> Result<Dur<'r>> {
        let secs = duration(src, field, s)?;
        if secs > 0.0 {
            Ok((secs, s))
        } else {
            Err(TopologyError::OutOfRange {
                at: src.at(s.span()),
                field,
                expected: "a duration > 0 (or \"inf\")",
                value: format!("\"{}\"", s.get_ref()),
            })
        }
    };
    Ok(NodeValues {
        memory_qubits,
        t1: p.t1.as_ref().map(|s| lifetime("t1", s)).transpose()?,
        t2: p.t2.as_ref().map(|s| lifetime("t2", s)).transpose()?,
        gate_error: probability(src, "gate_error", &p.gate_error)?,
        readout_error: probability(src, "readout_error", &p.readout_error)?,
    })
}

/// Checks each link setting that is present.
fn link_values<'r>(src: &Source<'_>, p: &'r RawLinkParams) -> Result<LinkValues<'r>> {
    let length_km = match &p.length_km {
        Some(l) if !(l.get_ref().is_finite() && *l.get_ref() >= 0.0) => {
            return Err(TopologyError::NegativeLength {
                at: src.at(l.span()),
                value: *l.get_ref(),
            });
        }
        l => l.as_ref().map(|l| *l.get_ref()),
    };
    let fidelity = match &p.fidelity {
        Some(f) if !(0.25..=1.0).contains(f.get_ref()) => {
            return Err(TopologyError::FidelityOutOfRange {
                at: src.at(f.span()),
                value: *f.get_ref(),
            });
        }
        f => f.as_ref().map(|f| *f.get_ref()),
    };
    let attenuation_db_per_km = in_range(
        src,
        "attenuation_db_per_km",
        &p.attenuation_db_per_km,
        |v| v.is_finite() && v >= 0.0,
        "a finite number >= 0",
    )?;
    let bright_state = in_range(
        src,
        "bright_state",
        &p.bright_state,
        |v| v > 0.0 && v <= 0.5,
        "in (0, 0.5]",
    )?;
    let cycle_time = match &p.cycle_time {
        None => None,
        Some(s) => match finite_duration(src, "cycle_time", s)? {
            secs if secs > 0.0 => Some(secs),
            _ => {
                return Err(TopologyError::OutOfRange {
                    at: src.at(s.span()),
                    field: "cycle_time",
                    expected: "a finite duration > 0",
                    value: format!("\"{}\"", s.get_ref()),
                });
            }
        },
    };
    let classical_latency = p
        .classical_latency
        .as_ref()
        .map(|s| finite_duration(src, "classical_latency", s))
        .transpose()?;
    let link_layer = match &p.link_layer {
        Some(l) if l.get_ref().trim().is_empty() => {
            return Err(TopologyError::OutOfRange {
                at: src.at(l.span()),
                field: "link_layer",
                expected: "the name of a link-layer protocol",
                value: format!("\"{}\"", l.get_ref()),
            });
        }
        l => l.as_ref().map(|l| l.get_ref().as_str()),
    };
    Ok(LinkValues {
        length_km,
        fidelity,
        model: p.model,
        attenuation_db_per_km,
        detector_efficiency: probability(src, "detector_efficiency", &p.detector_efficiency)?,
        emission_efficiency: probability(src, "emission_efficiency", &p.emission_efficiency)?,
        visibility: probability(src, "visibility", &p.visibility)?,
        bright_state,
        cycle_time,
        classical_latency,
        link_layer,
    })
}

/// `value`, if present, must lie in [0, 1] (NaN does not).
fn probability(
    src: &Source<'_>,
    field: &'static str,
    value: &Option<Spanned<f64>>,
) -> Result<Option<f64>> {
    match value {
        Some(v) if !(0.0..=1.0).contains(v.get_ref()) => {
            Err(TopologyError::ProbabilityOutOfRange {
                at: src.at(v.span()),
                field,
                value: *v.get_ref(),
            })
        }
        v => Ok(v.as_ref().map(|v| *v.get_ref())),
    }
}

/// `value`, if present, must satisfy `ok`, described by `expected`.
fn in_range(
    src: &Source<'_>,
    field: &'static str,
    value: &Option<Spanned<f64>>,
    ok: impl Fn(f64) -> bool,
    expected: &'static str,
) -> Result<Option<f64>> {
    match value {
        Some(v) if !ok(*v.get_ref()) => Err(TopologyError::OutOfRange {
            at: src.at(v.span()),
            field,
            expected,
            value: v.get_ref().to_string(),
        }),
        v => Ok(v.as_ref().map(|v| *v.get_ref())),
    }
}

/// Parses a duration string, pointing at it on failure.
fn duration(src: &Source<'_>, field: &'static str, s: &Spanned<String>) -> Result<f64> {
    parse_duration_secs(s.get_ref()).map_err(|reason| bad_duration(src, field, s, reason))
}

/// Parses a duration string that may not be `"inf"`.
fn finite_duration(src: &Source<'_>, field: &'static str, s: &Spanned<String>) -> Result<f64> {
    match duration(src, field, s)? {
        secs if secs.is_finite() => Ok(secs),
        _ => Err(bad_duration(
            src,
            field,
            s,
            DurationError::InfiniteNotAllowed,
        )),
    }
}

fn bad_duration(
    src: &Source<'_>,
    field: &'static str,
    s: &Spanned<String>,
    reason: DurationError,
) -> TopologyError {
    TopologyError::BadDuration {
        at: src.at(s.span()),
        field,
        text: s.get_ref().clone(),
        reason,
    }
}

/// Names end up in process names, file names, certificates and `key=value` log lines,
/// so they are kept to a safe alphabet.
fn check_name(src: &Source<'_>, what: &'static str, name: &Spanned<String>) -> Result<()> {
    let text = name.get_ref();
    let reason = if text.is_empty() {
        "it is empty"
    } else if text.len() > MAX_NAME_LEN {
        "it is longer than 63 characters"
    } else if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        "use only letters A-Z a-z, digits, '_' and '-'"
    } else if what == "node" && !crate::tls::is_valid_identity(text) {
        // A node's name is its certificate's DNS name and its identity on the wire.
        "a node name must start with a lowercase letter and use only a-z, 0-9 and '-' (not ending in '-')"
    } else if what == "node"
        && (text == crate::tls::BROKER_IDENTITY || text == crate::tls::CONTROLLER_IDENTITY)
    {
        "this name is reserved for a qnet process"
    } else {
        return Ok(());
    };
    Err(TopologyError::InvalidName {
        at: src.at(name.span()),
        what,
        name: text.clone(),
        reason,
    })
}
