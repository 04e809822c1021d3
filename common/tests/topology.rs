//! Topology files: the shipped ones load, every mistake is reported with its file,
//! line and column, and defaults and overrides resolve as documented.

use std::path::PathBuf;

use qnet_common::NodeId;
use qnet_common::topology::{
    LinkModel, Location, PathMetric, Topology, TopologyError, format_duration_secs,
};

/// Parses `text` as `bad.toml` and returns the error it must produce.
fn error(text: &str) -> TopologyError {
    match Topology::parse(text, "bad.toml") {
        Ok(t) => panic!("expected an error, got a topology:\n{}", t.summary()),
        Err(e) => e,
    }
}

/// Asserts that `text` fails with exactly `expected` as its message.
#[track_caller]
fn assert_error(text: &str, expected: &str) {
    let e = error(text);
    assert_eq!(e.to_string(), expected, "{e:?}");
}

/// Parses `text` that must be valid.
#[track_caller]
fn ok(text: &str) -> Topology {
    Topology::parse(text, "good.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

/// Two nodes and one link; tests append or edit lines.
const PAIR: &str = r#"[network]
name = "pair"

[[nodes]]
name = "alice"

[[nodes]]
name = "bob"

[[links]]
a = "alice"
b = "bob"
"#;

// --- shipped files ---------------------------------------------------------------

#[test]
fn every_shipped_topology_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("topologies/ exists") {
        let path = entry.unwrap().path();
        if !path.is_file() || path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let topology = Topology::load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Shown with `--nocapture`, to eyeball what `qnet topo check` prints.
        println!("{}", topology.summary());
        loaded.push(topology.name.clone());
    }
    loaded.sort();
    for name in ["grid-3x3", "line-100", "line-3", "ring-8", "star-5"] {
        assert!(
            loaded.iter().any(|n| n == name),
            "{name} missing from {loaded:?}"
        );
    }
}

#[test]
fn shipped_topologies_have_the_promised_shape() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let load = |file: &str| Topology::load(dir.join(file)).unwrap_or_else(|e| panic!("{e}"));

    let line = load("line-3.toml");
    assert_eq!(
        line.shortest_path("alice", "carol", PathMetric::Hops),
        Some(vec![0, 1, 2])
    );
    assert!(
        line.links
            .iter()
            .all(|l| l.fidelity == 1.0 && l.model == LinkModel::Ideal)
    );
    assert!(
        line.nodes
            .iter()
            .all(|n| n.t1.is_infinite() && n.t2.is_infinite())
    );

    let star = load("star-5.toml");
    let hub = star.node_index("hub").unwrap();
    assert_eq!((star.nodes.len(), star.links.len()), (5, 4));
    assert_eq!(star.neighbours(hub).count(), 4);

    let ring = load("ring-8.toml");
    assert_eq!((ring.nodes.len(), ring.links.len()), (8, 8));
    assert!((0..8).all(|i| ring.neighbours(i).count() == 2));

    let grid = load("grid-3x3.toml");
    assert_eq!((grid.nodes.len(), grid.links.len()), (9, 12));
    assert_eq!(grid.neighbours(grid.node_index("g11").unwrap()).count(), 4);

    let long = load("line-100.toml");
    assert_eq!((long.nodes.len(), long.links.len()), (100, 99));
    assert_eq!(long.nodes[0].name, "n000");
    assert_eq!(long.nodes[99].name, "n099");
    assert_eq!(
        long.shortest_path("n000", "n099", PathMetric::Hops)
            .unwrap()
            .len(),
        100
    );
}

// --- syntax errors ---------------------------------------------------------------

#[test]
fn misspelled_key_is_rejected_with_line_and_column() {
    let text = PAIR.replace("b = \"bob\"\n", "b = \"bob\"\nlenght_km = 3.0\n");
    let e = error(&text);
    let TopologyError::Syntax { at, message } = &e else {
        panic!("expected a syntax error, got {e:?}");
    };
    assert_eq!((at.line, at.column), (13, 1), "{e}");
    assert!(message.contains("unknown field `lenght_km`"), "{e}");
    assert!(
        e.to_string()
            .starts_with("bad.toml:13:1: unknown field `lenght_km`"),
        "{e}"
    );

    // Indented, in a defaults table.
    let text = PAIR.replace(
        "[[nodes]]\nname = \"alice\"",
        "[defaults.node]\n  memory_qbits = 4\n\n[[nodes]]\nname = \"alice\"",
    );
    let e = error(&text);
    assert!(
        e.to_string()
            .starts_with("bad.toml:5:3: unknown field `memory_qbits`"),
        "{e}"
    );
}

#[test]
fn wrong_type_is_rejected_with_line_and_column() {
    let text = PAIR.replace("name = \"bob\"", "name = \"bob\"\nmemory_qubits = \"many\"");
    let e = error(&text);
    assert!(matches!(e, TopologyError::Syntax { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("bad.toml:9:17: invalid type: string \"many\""),
        "{e}"
    );
}

#[test]
fn unknown_link_model_is_rejected() {
    let text = PAIR.replace("b = \"bob\"", "b = \"bob\"\nmodel = \"magic\"");
    let e = error(&text);
    assert!(
        e.to_string()
            .starts_with("bad.toml:13:9: unknown variant `magic`"),
        "{e}"
    );
}

#[test]
fn broken_toml_is_rejected() {
    let e = error("[network]\nname = \"x\nseed = 1\n");
    assert_eq!(e.location().map(|l| l.line), Some(2), "{e}");
}

// --- semantic errors, each once ----------------------------------------------------

#[test]
fn unknown_node_in_a_link() {
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"carol\""),
        "bad.toml:12:5: link refers to unknown node \"carol\"",
    );
}

#[test]
fn duplicate_node_name() {
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"alice\""),
        "bad.toml:8:8: duplicate node name \"alice\" (first defined at line 5, column 8)",
    );
}

#[test]
fn duplicate_link_in_either_direction() {
    let text = format!("{PAIR}\n[[links]]\na = \"bob\"\nb = \"alice\"\n");
    assert_error(
        &text,
        "bad.toml:15:5: duplicate link between \"bob\" and \"alice\" (first defined at line 11, column 5)",
    );
}

#[test]
fn self_link() {
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"alice\""),
        "bad.toml:12:5: link connects node \"alice\" to itself",
    );
}

#[test]
fn disconnected_graph_names_an_unreachable_node() {
    let text = format!("{PAIR}\n[[nodes]]\nname = \"carol\"\n");
    assert_error(
        &text,
        "bad.toml:15:8: node \"carol\" cannot be reached from node \"alice\": the network is not connected",
    );
}

#[test]
fn t2_longer_than_twice_t1() {
    let text = PAIR.replace(
        "name = \"bob\"",
        "name = \"bob\"\nt1 = \"1s\"\nt2 = \"2500ms\"",
    );
    assert_error(
        &text,
        "bad.toml:10:6: node \"bob\" has T2 = 2500ms > 2·T1 = 2 × 1s; T2 must be at most 2·T1",
    );
    // The defaults are checked against the node that uses them.
    let text = PAIR.replace(
        "[[nodes]]\nname = \"alice\"",
        "[defaults.node]\nt2 = \"3s\"\n\n[[nodes]]\nname = \"alice\"\nt1 = \"1s\"",
    );
    assert_error(
        &text,
        "bad.toml:5:6: node \"alice\" has T2 = 3s > 2·T1 = 2 × 1s; T2 must be at most 2·T1",
    );
}

#[test]
fn probability_outside_zero_one() {
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"bob\"\ngate_error = 1.5"),
        "bad.toml:9:14: gate_error must be a probability in [0, 1], got 1.5",
    );
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\ndetector_efficiency = -0.1"),
        "bad.toml:13:23: detector_efficiency must be a probability in [0, 1], got -0.1",
    );
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\nvisibility = nan"),
        "bad.toml:13:14: visibility must be a probability in [0, 1], got NaN",
    );
}

#[test]
fn fidelity_outside_quarter_one() {
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\nfidelity = 0.2"),
        "bad.toml:13:12: fidelity must be in [0.25, 1], got 0.2",
    );
}

#[test]
fn negative_length() {
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\nlength_km = -3"),
        "bad.toml:13:13: length_km must be a finite number >= 0, got -3",
    );
}

#[test]
fn time_scale_not_positive() {
    assert_error(
        &PAIR.replace("name = \"pair\"", "name = \"pair\"\ntime_scale = 0.0"),
        "bad.toml:3:14: time_scale must be a finite number > 0, got 0",
    );
    assert_error(
        &PAIR.replace("name = \"pair\"", "name = \"pair\"\ntime_scale = -2"),
        "bad.toml:3:14: time_scale must be a finite number > 0, got -2",
    );
}

#[test]
fn bad_duration_string() {
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"bob\"\nt1 = \"10 parsecs\""),
        "bad.toml:9:6: bad duration \"10 parsecs\" for t1: unknown unit \"parsecs\" (use ns, us, µs, ms, s, min or h)",
    );
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\ncycle_time = \"10\""),
        "bad.toml:13:14: bad duration \"10\" for cycle_time: missing unit (use ns, us, µs, ms, s, min or h, or \"inf\")",
    );
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\nclassical_latency = \"inf\""),
        "bad.toml:13:21: bad duration \"inf\" for classical_latency: \"inf\" is not allowed here; give a finite duration",
    );
}

#[test]
fn zero_memory_qubits() {
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"bob\"\nmemory_qubits = 0"),
        "bad.toml:9:17: memory_qubits must be at least 1",
    );
}

#[test]
fn other_out_of_range_values() {
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\nbright_state = 0.7"),
        "bad.toml:13:16: bright_state must be in (0, 0.5], got 0.7",
    );
    assert_error(
        &PAIR.replace("b = \"bob\"", "b = \"bob\"\ncycle_time = \"0s\""),
        "bad.toml:13:14: cycle_time must be a finite duration > 0, got \"0s\"",
    );
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"bob\"\nt1 = \"0s\""),
        "bad.toml:9:6: t1 must be a duration > 0 (or \"inf\"), got \"0s\"",
    );
}

#[test]
fn bad_names_and_empty_networks() {
    assert_error(
        &PAIR.replace("name = \"pair\"", "name = \"my net\""),
        "bad.toml:2:8: invalid network name \"my net\": use only letters A-Z a-z, digits, '_' and '-'",
    );
    assert_error(
        &PAIR.replace("name = \"bob\"", "name = \"\""),
        "bad.toml:8:8: invalid node name \"\": it is empty",
    );
    assert_error(
        "[network]\nname = \"empty\"\n",
        "bad.toml:2:8: topology has no nodes; add at least one [[nodes]] entry",
    );
}

#[test]
fn node_names_must_be_certificate_identities() {
    let e = error(&PAIR.replace("name = \"bob\"", "name = \"Bob\""));
    assert!(
        e.to_string()
            .starts_with("bad.toml:8:8: invalid node name \"Bob\""),
        "{e}"
    );
    let e = error(&PAIR.replace("name = \"bob\"", "name = \"broker\""));
    assert!(e.to_string().contains("reserved"), "{e}");
    let e = error(&PAIR.replace("name = \"bob\"", "name = \"controller\""));
    assert!(e.to_string().contains("reserved"), "{e}");
}

#[test]
fn missing_file_names_the_path() {
    let e = Topology::load("no/such/topology.toml").unwrap_err();
    assert!(matches!(e, TopologyError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("no/such/topology.toml: cannot read topology file"),
        "{e}"
    );
    assert!(e.location().is_none());
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "t = \"5µs\" x";
    let at = Location::from_offset("f.toml", text, text.find('x').unwrap());
    assert_eq!((at.line, at.column), (1, 11));
    assert_eq!(at.to_string(), "f.toml:1:11");
}

// --- defaults and overrides ----------------------------------------------------------

#[test]
fn built_in_defaults_apply() {
    let t = ok(PAIR);
    assert_eq!(t.name, "pair");
    assert_eq!(t.origin, "good.toml");
    assert_eq!(t.seed, 0);
    assert_eq!(t.time_scale, 1.0);
    assert_eq!(t.classical_latency, None);

    let node = &t.nodes[1];
    assert_eq!(
        (node.index, node.id, node.name.as_str()),
        (1, NodeId(1), "bob")
    );
    assert_eq!(node.memory_qubits, 8);
    assert!(node.t1.is_infinite() && node.t2.is_infinite());
    assert_eq!((node.gate_error, node.readout_error), (0.0, 0.0));

    let link = &t.links[0];
    assert_eq!((link.a, link.b), (0, 1));
    assert_eq!(
        (link.a_name.as_str(), link.b_name.as_str()),
        ("alice", "bob")
    );
    assert_eq!(link.length_km, 10.0);
    assert_eq!(link.fidelity, 1.0);
    assert_eq!(link.model, LinkModel::Ideal);
    assert_eq!(link.attenuation_db_per_km, 0.2);
    assert_eq!(
        (link.detector_efficiency, link.emission_efficiency),
        (1.0, 1.0)
    );
    assert_eq!(link.visibility, None);
    assert_eq!(link.bright_state, 0.1);
    assert!(close(link.cycle_time, 50e-6), "{}", link.cycle_time);
    assert!(
        close(link.classical_latency, 50e-6),
        "{}",
        link.classical_latency
    );
    assert_eq!(link.link_layer, "egp");
    assert!(close(link.transmittance(), 10f64.powf(-0.2)));
}

#[test]
fn file_defaults_apply_and_overrides_win() {
    let t = ok(r#"[network]
name = "overrides"
seed = 7
time_scale = 2.5
classical_latency = "1ms"

[defaults.node]
memory_qubits = 4
t1 = "10s"
t2 = "1s"
gate_error = 0.01
readout_error = 0.02

[defaults.link]
length_km = 20.0
fidelity = 0.9
model = "heralded-double-click"
detector_efficiency = 0.8

[[nodes]]
name = "alice"

[[nodes]]
name = "bob"
memory_qubits = 16
t2 = "250ms"

[[nodes]]
name = "carol"
t1 = "3s"

[[links]]
a = "alice"
b = "bob"

[[links]]
a = "bob"
b = "carol"
length_km = 2.0
fidelity = 0.99
model = "heralded-single-click"
bright_state = 0.05
visibility = 0.9
cycle_time = "10µs"
classical_latency = "50us"
link_layer = "custom"
"#);
    assert_eq!(
        (t.seed, t.time_scale, t.classical_latency),
        (7, 2.5, Some(1e-3))
    );

    let [alice, bob, carol] = &t.nodes[..] else {
        panic!()
    };
    assert_eq!((alice.memory_qubits, alice.t1, alice.t2), (4, 10.0, 1.0));
    assert_eq!((alice.gate_error, alice.readout_error), (0.01, 0.02));
    assert_eq!((bob.memory_qubits, bob.t1, bob.t2), (16, 10.0, 0.25));
    assert_eq!((carol.memory_qubits, carol.t1, carol.t2), (4, 3.0, 1.0));

    let [ab, bc] = &t.links[..] else { panic!() };
    assert_eq!(
        (ab.length_km, ab.fidelity, ab.model),
        (20.0, 0.9, LinkModel::HeraldedDoubleClick)
    );
    assert_eq!(ab.detector_efficiency, 0.8);
    assert!(
        close(ab.cycle_time, 100e-6),
        "derived from 20 km: {}",
        ab.cycle_time
    );
    assert_eq!(
        ab.classical_latency, 1e-3,
        "the [network] latency beats the flight time"
    );

    assert_eq!(
        (bc.length_km, bc.fidelity, bc.model),
        (2.0, 0.99, LinkModel::HeraldedSingleClick)
    );
    assert_eq!(
        (bc.bright_state, bc.visibility, bc.detector_efficiency),
        (0.05, Some(0.9), 0.8)
    );
    assert!(close(bc.cycle_time, 10e-6));
    assert!(
        close(bc.classical_latency, 50e-6),
        "the link's own latency wins"
    );
    assert_eq!(bc.link_layer, "custom");
}

#[test]
fn t2_defaults_to_twice_t1() {
    let t = ok(&PAIR.replace("name = \"bob\"", "name = \"bob\"\nt1 = \"2s\""));
    assert_eq!((t.nodes[1].t1, t.nodes[1].t2), (2.0, 4.0));
    assert!(t.nodes[0].t2.is_infinite());
}

// --- helpers -------------------------------------------------------------------------

#[test]
fn graph_helpers() {
    // A square a-b-c-d-a where the long way round is shorter in fibre.
    let t = ok(r#"[network]
name = "square"
[[nodes]]
name = "a"
[[nodes]]
name = "b"
[[nodes]]
name = "c"
[[nodes]]
name = "d"
[[links]]
a = "a"
b = "b"
length_km = 100
[[links]]
a = "b"
b = "c"
length_km = 100
[[links]]
a = "c"
b = "d"
length_km = 1
[[links]]
a = "d"
b = "a"
length_km = 1
[[links]]
a = "b"
b = "d"
length_km = 1
"#);
    assert_eq!(t.node_index("c"), Some(2));
    assert_eq!(t.node_index("z"), None);
    assert_eq!(t.node(NodeId(3)).map(|n| n.name.as_str()), Some("d"));
    assert_eq!(t.link_between("c", "b").map(|l| l.index), Some(1));
    assert_eq!(t.link_between(0, 2), None);
    assert!(t.are_neighbours("a", "d"));
    assert!(!t.are_neighbours("a", "c"));
    assert!(!t.are_neighbours("a", "nobody"));
    assert_eq!(t.neighbours(1).collect::<Vec<_>>(), vec![0, 2, 3]);
    assert_eq!(
        t.links_of(3).map(|l| l.index).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );

    assert_eq!(t.shortest_path("a", "a", PathMetric::Hops), Some(vec![0]));
    assert_eq!(
        t.shortest_path("a", "b", PathMetric::Hops),
        Some(vec![0, 1])
    );
    assert_eq!(
        t.shortest_path("a", "b", PathMetric::Length),
        Some(vec![0, 3, 1])
    );
    assert_eq!(
        t.shortest_path("a", "c", PathMetric::Length),
        Some(vec![0, 3, 2])
    );
    assert_eq!(t.shortest_path("a", "nobody", PathMetric::Hops), None);

    let g = t.graph();
    assert_eq!((g.node_count(), g.edge_count()), (4, 5));

    let summary = t.summary();
    assert!(
        summary.starts_with("topology square (good.toml)\n"),
        "{summary}"
    );
    assert!(summary.contains("4 nodes, 5 links"), "{summary}");
    assert!(summary.contains("neighbours: b, d"), "{summary}");
    assert!(
        summary.contains("a -- b  100 km, ideal, fidelity 1"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1 + 2 + 1 + 4 + 1 + 5);
}

#[test]
fn durations_in_summaries_read_well() {
    assert_eq!(format_duration_secs(f64::INFINITY), "inf");
    assert_eq!(format_duration_secs(1e-3), "1 ms");
    assert_eq!(format_duration_secs(1.5), "1.5 s");
}
