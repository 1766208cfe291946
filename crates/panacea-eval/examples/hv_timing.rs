//! Quick single-threaded timing of exact hypervolume on sphere fronts (the criterion bench in
//! `benches/` is the reference; this example needs neither criterion nor libtorch).
//!
//! Run: `cargo run --release -p panacea-eval --example hv_timing [-- d n]`
//!
//! The fronts are `panacea_eval::bench_fronts::sphere_front`, which `scripts/moocore_bench.py`
//! reproduces (SplitMix64 seeded with d·100000 + n, uniform (0,1) coordinates over their norm).

use std::time::Instant;

use panacea_eval::bench_fronts::{sphere_front, SIZES};
use panacea_eval::{hypervolume, RefPoint, Sense};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes: Vec<(usize, usize)> =
        if args.len() == 2 { vec![(args[0], args[1])] } else { SIZES.to_vec() };
    for (d, n) in sizes {
        let pts = sphere_front(n, d);
        let rp = RefPoint::Explicit(vec![1.1; d]);
        let mut times = Vec::new();
        let start = Instant::now();
        let mut value = 0.0;
        while times.len() < 3 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 200) {
            let t0 = Instant::now();
            value = hypervolume(&pts, Sense::Min, &rp).map(|h| h.value).unwrap_or(f64::NAN);
            times.push(t0.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "sphere_d{d}_n{n}\t{value:.17}\tmedian {:.1} µs\t({} runs)",
            median * 1e6,
            times.len()
        );
    }
}
