//! Deterministic benchmark fronts that `scripts/moocore_bench.py` reproduces bit for bit, so
//! panacea-eval, moocore and pygmo time exactly the same points (the criterion bench in
//! `benches/` and the criterion-free `examples/hv_timing.rs` both use them).

/// The (d, n) sizes timed against moocore and pygmo (benches/README.md, "Hypervolume").
pub const SIZES: [(usize, usize); 12] = [
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
];

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
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}
