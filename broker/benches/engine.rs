//! Criterion benchmarks of the quantum-state engine.
//!
//! - `bell_lifecycle`: create a Werner pair, measure both halves, free — the hot path
//!   of every link. Target: ≥ 500,000 per second on one core.
//! - `gate_20q`: one single-qubit gate on a 20-qubit pure register (16 MiB of
//!   amplitudes) beside one plain memory pass over a buffer of the same size, so the
//!   ratio is measured in one run. Target: within 3× of the pass.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use num_complex::Complex64;
use qnet_broker::engine::{Engine, EngineConfig, Gate1, Gate2, NodeParams};
use qnet_common::{Basis, BellState, NodeId};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn bell_lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("bell_lifecycle");
    group.throughput(Throughput::Elements(1));
    for (label, fidelity) in [("werner_f0.9", 0.9), ("pure", 1.0)] {
        let mut e = Engine::new(EngineConfig::default(), StdRng::seed_from_u64(7));
        let (a, b) = (NodeId(0), NodeId(1));
        e.add_node(a, NodeParams::IDEAL).unwrap();
        e.add_node(b, NodeParams::IDEAL).unwrap();
        let mut now = 0.0;
        group.bench_function(label, |bench| {
            bench.iter(|| {
                now += 1e-6;
                let (qa, qb) = e
                    .create_pair(now, a, b, BellState::PhiPlus, fidelity)
                    .unwrap();
                let ma = e.measure(now, a, qa, Basis::Z).unwrap();
                let mb = e.measure(now, b, qb, Basis::Z).unwrap();
                e.free(now, a, qa).unwrap();
                e.free(now, b, qb).unwrap();
                black_box((ma, mb))
            })
        });
    }
    group.finish();
}

fn gate_20q(c: &mut Criterion) {
    const N: usize = 20;
    let mut group = c.benchmark_group("gate_20q");
    group.sample_size(30);
    group.throughput(Throughput::Bytes((16usize << N) as u64));

    // One plain read-modify-write pass over 16 MiB of complex numbers.
    let mut buf = vec![Complex64::new(1.0, 0.5); 1 << N];
    group.bench_function("memory_pass", |bench| {
        bench.iter(|| {
            for x in buf.iter_mut() {
                *x = -*x;
            }
            black_box(&buf);
        })
    });

    let config = EngineConfig {
        max_register_qubits: N,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, StdRng::seed_from_u64(7));
    let node = NodeId(0);
    e.add_node(node, NodeParams::IDEAL).unwrap();
    let qubits: Vec<_> = (0..N).map(|_| e.alloc(0.0, node).unwrap()).collect();
    e.gate1(0.0, node, qubits[0], Gate1::H).unwrap();
    for w in qubits.windows(2) {
        e.gate2(0.0, node, w[0], w[1], Gate2::Cnot).unwrap();
    }
    assert_eq!(e.register_size(qubits[0]).unwrap(), N);
    for (label, gate, target) in [
        ("h_low_qubit", Gate1::H, 0),
        ("h_high_qubit", Gate1::H, N - 1),
        ("ry_mid_qubit", Gate1::Ry(0.3), N / 2),
        ("t_mid_qubit", Gate1::T, N / 2),
    ] {
        group.bench_function(label, |bench| {
            bench.iter(|| e.gate1(0.0, node, qubits[target], gate).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bell_lifecycle, gate_20q);
criterion_main!(benches);
