//! Quick single-threaded timing of exact hypervolume on sphere fronts (the criterion bench in
//! `benches/` is the reference; this example needs neither criterion nor libtorch).
//!
//! Run: `cargo run --release -p panacea-eval --example hv_timing [-- d n]`
//!
//! The fronts are those of `benches/src/lib.rs::sphere_front` and `scripts/moocore_bench.py`
//! (SplitMix64 seeded with d·100000 + n, uniform (0,1) coordinates divided by their norm).

use std::time::Instant;

use panacea_eval::{hypervolume, RefPoint, Sense};

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn sphere_front(n: usize, d: usize) -> Vec<Vec<f64>> {
    let mut s = (d * 100_000 + n) as u64;
    (0..n)
        .map(|_| {
            let v: Vec<f64> = (0..d)
                .map(|_| ((next(&mut s) >> 12) * 2 + 1) as f64 / 9_007_199_254_740_992.0)
                .collect();
            let mut ss = 0.0;
            for x in &v {
                ss += x * x;
            }
            let norm = ss.sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes: Vec<(usize, usize)> = if args.len() == 2 {
        vec![(args[0], args[1])]
    } else {
        vec![
            (2, 1000),
            (2, 10_000),
            (3, 1000),
            (3, 10_000),
            (4, 1000),
            (5, 1000),
            (6, 100),
            (6, 300),
            (7, 100),
            (7, 300),
            (8, 100),
            (8, 300),
        ]
    };
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
