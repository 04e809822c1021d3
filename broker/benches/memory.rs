//! Memory held per idle Bell pair: creates 1,000,000 Werner pairs (fidelity 0.9, so
//! each is a 4×4 density matrix) and reads the process's resident set size before and
//! after from /proc/self/statm. Target: at most 512 bytes per pair.
//!
//! Run with `cargo bench -p qnet-broker --bench memory`.

use qnet_broker::engine::{Engine, EngineConfig, NodeParams};
use qnet_common::{BellState, NodeId};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that doesn't match skips this bench.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty() && !args.iter().any(|a| "memory".contains(a.as_str())) {
        return;
    }
    // Each case runs in a fresh process so that memory freed by one case cannot be
    // reused by the next and hide its cost.
    if let Ok(case) = std::env::var("QNET_MEMORY_CASE") {
        measure(&case);
        return;
    }
    for case in ["werner_f0.9", "pure"] {
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .env("QNET_MEMORY_CASE", case)
            .status()
            .expect("re-run the memory bench");
        assert!(status.success(), "memory case {case} failed");
    }
}

fn measure(label: &str) {
    const PAIRS: usize = 1_000_000;
    let fidelity = if label == "pure" { 1.0 } else { 0.9 };
    {
        let mut e = Engine::new(EngineConfig::default(), StdRng::seed_from_u64(7));
        let (a, b) = (NodeId(0), NodeId(1));
        e.add_node(a, NodeParams::IDEAL).unwrap();
        e.add_node(b, NodeParams::IDEAL).unwrap();
        let mut ids = Vec::with_capacity(PAIRS);
        let before = resident_bytes();
        for _ in 0..PAIRS {
            ids.push(
                e.create_pair(0.0, a, b, BellState::PhiPlus, fidelity)
                    .unwrap(),
            );
        }
        let ids_bytes = (ids.capacity() * size_of_val(&ids[0])) as u64;
        let after = resident_bytes();
        let per_pair = (after - before - ids_bytes) as f64 / PAIRS as f64;
        let stats = e.stats();
        println!(
            "memory/{label}: {PAIRS} idle pairs, {:.0} bytes per pair resident \
             ({} MB in all; state data {} MB; target <= 512 bytes)",
            per_pair,
            (after - before - ids_bytes) / 1_000_000,
            stats.state_bytes / 1_000_000,
        );
    }
}
