//! Wall time of `all_metrics` (every metric of `panacea metrics`) on large 3-D fronts, with a
//! reference set of the same size, single-threaded, plus the time of each metric alone.
//!
//! Run: `cargo run --release -p panacea-eval --example metrics_timing [-- n d]` (default: 3·10⁴
//! and 10⁵ points in 3-D). The points are `bench_fronts::sphere_front(n, d)` (mutually
//! non-dominated, the hard case for the non-dominated filter), maximised against the auto
//! reference point; the reference set is the sphere front of n + 1 points.

use std::time::Instant;

use panacea_eval::bench_fronts::sphere_front;
use panacea_eval::{
    all_metrics, avg_hausdorff, epsilon_additive, epsilon_multiplicative, gd, hypervolume, igd,
    igd_plus, nondominated_mask, spacing, spacing_all_variants, sparsity, Duplicates, RefPoint,
    Sense, SpacingVariant,
};

/// This process's user + system CPU time in seconds (Linux `/proc/self/stat`, 10 ms ticks), or
/// NaN elsewhere: on a shared machine it counts the work done, not the time others held the
/// cores.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return f64::NAN };
    // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|u| u.parse::<f64>().ok()),
        f.get(12).and_then(|s| s.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn time<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let out = f();
    println!(
        "  {what:<24} {:>8.3} s wall {:>8.2} s CPU",
        t0.elapsed().as_secs_f64(),
        cpu_seconds() - c0
    );
    out
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes: Vec<(usize, usize)> =
        if args.len() == 2 { vec![(args[0], args[1])] } else { vec![(30_000, 3), (100_000, 3)] };
    for (n, d) in sizes {
        let pts = sphere_front(n, d);
        let rs = sphere_front(n + 1, d);
        let (s, auto) = (Sense::Max, RefPoint::Auto);
        println!("sphere front, n = {n}, d = {d}, reference set of {} points:", n + 1);
        let _ = time("hypervolume", || hypervolume(&pts, s, &auto).map(|h| h.value));
        let _ = time("non-dominated mask", || {
            nondominated_mask(&pts, s, Duplicates::KeepAll).map(|_| ())
        });
        for v in SpacingVariant::ALL {
            let _ = time(&format!("spacing {}", v.name()), || spacing(&pts, v));
        }
        let _ = time("sparsity (non-dominated)", || sparsity(&pts, s, true));
        let _ = time("sparsity (all points)", || sparsity(&pts, s, false));
        let _ = time("spacing, all 4 variants", || spacing_all_variants(&pts).map(|_| ()));
        let _ = time("IGD", || igd(&pts, &rs, s));
        let _ = time("IGD+", || igd_plus(&pts, &rs, s));
        let _ = time("GD", || gd(&pts, &rs, s));
        let _ = time("avg Hausdorff", || avg_hausdorff(&pts, &rs, s));
        let _ = time("epsilon additive", || epsilon_additive(&pts, &rs, s));
        let _ = time("epsilon multiplicative", || epsilon_multiplicative(&pts, &rs, s));
        let m = time("all_metrics (total)", || all_metrics(&pts, s, &auto, Some(&rs), false));
        match m {
            Ok(m) => println!(
                "  HV {:.6}, spacing l1_nminus1 {:.6e}, IGD+ {:.6e}, n_nondominated {}",
                m.hypervolume,
                m.spacing["l1_nminus1"],
                m.igd_plus.unwrap_or(f64::NAN),
                m.n_nondominated
            ),
            Err(e) => println!("  all_metrics failed: {e}"),
        }
    }
}
