//! Shared helpers for the benchmarks: deterministic front generators that
//! `scripts/moocore_bench.py` reproduces bit for bit, so Rust and moocore/pygmo time the same
//! points, and the reference values that script recorded.
#![warn(missing_docs)]

use std::path::PathBuf;

/// SplitMix64 (Steele, Lea & Flood 2014): trivially portable to Python.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0: an odd multiple of 2⁻⁵³, exact in binary.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 12) * 2 + 1) as f64 / 9_007_199_254_740_992.0
    }
}

/// The seed used for the front with `n` points in `d` objectives.
pub fn seed(d: usize, n: usize) -> u64 {
    (d * 100_000 + n) as u64
}

/// n points on the positive unit sphere (all mutually non-dominated, the hard case; minimised,
/// reference point 1.1 in every coordinate): uniform (0, 1) coordinates divided by their norm.
pub fn sphere_front(n: usize, d: usize) -> Vec<Vec<f64>> {
    let mut g = SplitMix64::new(seed(d, n));
    (0..n)
        .map(|_| {
            let v: Vec<f64> = (0..d).map(|_| g.unit()).collect();
            let mut ss = 0.0;
            for x in &v {
                ss += x * x;
            }
            let norm = ss.sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// `benches/data/hv_reference.json`, written by `scripts/moocore_bench.py`.
pub fn reference_values() -> Option<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/hv_reference.json");
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}
