//! Entry point of the `panacea-benches` criterion suite; each module under `benchmarks/` adds one
//! group here.
//!
//! Run: `cargo bench -p panacea-benches` (all groups) or
//! `cargo bench -p panacea-benches -- hypervolume` (one group).

mod benchmarks;

criterion::criterion_main!(
    benchmarks::host_parallel::benches,
    benchmarks::hypervolume::benches,
    benchmarks::lm_decode::benches,
    benchmarks::svd_lora::benches
);
