//! Classical latency from a topology's geography, as wall-clock durations.

use std::time::Duration;

use petgraph::algo::dijkstra;
use petgraph::graph::NodeIndex;

use crate::topology::Topology;

/// The one-way wall-clock latency between every two nodes, indexed by node index:
/// `table[a][b]`. Neighbours get their link's [`classical_latency`]; other pairs the
/// sum along the path with the least total latency; a node itself zero. Emulated
/// seconds become wall time by dividing by [`Topology::time_scale`]. Nodes with no
/// path between them (which a checked topology does not have) get [`Duration::MAX`].
///
/// A node installs `table[me][peer]` as the delay of its shim rule towards each peer
/// once it knows the peers' addresses.
///
/// [`classical_latency`]: crate::topology::LinkSpec::classical_latency
pub fn latency_table(topology: &Topology) -> Vec<Vec<Duration>> {
    let graph = topology.graph();
    let n = topology.nodes.len();
    let scale = topology.time_scale;
    (0..n)
        .map(|from| {
            let costs = dijkstra(&graph, NodeIndex::new(from), None, |e| {
                topology.links[*e.weight()].classical_latency
            });
            (0..n)
                .map(|to| {
                    let emulated = if from == to {
                        Some(0.0)
                    } else if let Some(link) = topology.link_between(from, to) {
                        Some(link.classical_latency)
                    } else {
                        costs.get(&NodeIndex::new(to)).copied()
                    };
                    emulated.map_or(Duration::MAX, |secs| wall(secs / scale))
                })
                .collect()
        })
        .collect()
}

/// `secs` as a duration, saturating: negative or NaN is zero, too large is
/// [`Duration::MAX`].
fn wall(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}
