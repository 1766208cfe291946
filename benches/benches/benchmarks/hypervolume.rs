//! Exact hypervolume of sphere fronts (minimised, reference point 1.1^d), the sizes of
//! metrics.md §3: d = 2, 3 with n = 10³, 10⁴; d = 4, 5 with n = 10³; d = 6, 7, 8 with
//! n = 100, 300. Peers: `python3 scripts/moocore_bench.py` times moocore and pygmo on the same
//! points (the generator is shared bit for bit).
//!
//! Run: `cargo bench -p panacea-benches -- hypervolume`
//!
//! Before timing, each value is checked against moocore's (or pygmo's) value recorded in
//! `benches/data/hv_reference.json` (relative 1e-12), and against the generic WFG path.

use std::time::Duration;

use criterion::{black_box, Criterion};
use panacea_benches::{reference_values, sphere_front, SIZES};
use panacea_eval::{hypervolume, hypervolume_min_with, HvAlgorithm, RefPoint, Sense};

fn check(name: &str, pts: &[Vec<f64>], r: &[f64], value: f64, refs: &Option<serde_json::Value>) {
    if let Some(want) = refs.as_ref().and_then(|v| v[name]["hv"].as_f64()) {
        let rel = (value - want).abs() / want;
        assert!(rel <= 1e-12, "{name}: ours {value} vs recorded {want} (rel {rel:e})");
    }
    // The generic WFG path (2-D base case) is an independent check; skip it where it is slow.
    let d = r.len();
    if (d <= 4 && pts.len() <= 1000) || (d <= 6 && pts.len() <= 100) {
        let generic = hypervolume_min_with(pts, r, HvAlgorithm::Wfg).expect("valid input");
        let rel = (value - generic).abs() / generic;
        assert!(rel <= 1e-12, "{name}: auto {value} vs generic WFG {generic} (rel {rel:e})");
    }
}

fn bench_hypervolume(c: &mut Criterion) {
    let refs = reference_values();
    let mut group = c.benchmark_group("hypervolume");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (d, n) in SIZES {
        let pts = sphere_front(n, d);
        let r = vec![1.1; d];
        let rp = RefPoint::Explicit(r.clone());
        let name = format!("sphere_d{d}_n{n}");
        let value = hypervolume(&pts, Sense::Min, &rp).expect("valid input").value;
        check(&name, &pts, &r, value, &refs);
        group.bench_function(format!("cpu_hv_{name}"), |b| {
            b.iter(|| {
                hypervolume(black_box(&pts), Sense::Min, black_box(&rp)).expect("valid input").value
            })
        });
    }
    group.finish();
}

criterion::criterion_group!(benches, bench_hypervolume);
