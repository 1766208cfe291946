//! Shared helpers for the benchmarks: the deterministic fronts of
//! [`panacea_eval::bench_fronts`] (which `scripts/moocore_bench.py` reproduces bit for bit, so
//! Rust and moocore/pygmo time the same points), and the reference values that script recorded.
#![warn(missing_docs)]

use std::path::PathBuf;

pub use panacea_eval::bench_fronts::{seed, sphere_front, SplitMix64, SIZES};

/// `benches/data/hv_reference.json`, written by `scripts/moocore_bench.py`.
pub fn reference_values() -> Option<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hv_reference.json");
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}
