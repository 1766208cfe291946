//! Helpers shared by the test modules: the shared test-data directory, tolerances and a seeded
//! point generator.

use std::path::PathBuf;

use serde_json::Value;

/// The known-answer files: `$PANACEA_SHARED_DIR/testdata/metrics` when set, else the copy vendored
/// in this crate (`tests/data/metrics`, taken verbatim from the project's shared test data; see its
/// README for provenance and licences), so the crate tests stand alone in any checkout.
pub(crate) fn testdata_dir() -> PathBuf {
    let vendored = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics");
    let dir = match std::env::var("PANACEA_SHARED_DIR") {
        Ok(shared) => PathBuf::from(shared).join("testdata/metrics"),
        Err(_) => vendored,
    };
    assert!(
        dir.join("hv_cases.json").is_file(),
        "{} has no hv_cases.json (hint: unset PANACEA_SHARED_DIR to use the vendored copy)",
        dir.display()
    );
    dir
}

/// The `cases` array of one shared file.
pub(crate) fn cases(file: &str) -> Vec<Value> {
    let path = testdata_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["cases"].as_array().unwrap_or_else(|| panic!("{}: no cases array", path.display())).clone()
}

pub(crate) fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("array of rows")
        .iter()
        .map(|r| r.as_array().expect("row").iter().map(|x| x.as_f64().expect("number")).collect())
        .collect()
}

pub(crate) fn vector(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// Exact equality or relative 1e-12 (the shared README's tolerances).
#[track_caller]
pub(crate) fn assert_close(got: f64, want: f64, exact: bool, what: &str) {
    if exact {
        assert_eq!(got, want, "{what}: got {got:?}, want exactly {want:?}");
    } else {
        let rel = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
        assert!(
            rel <= 1e-12 || (want == 0.0 && got.abs() <= 1e-15),
            "{what}: got {got:?}, want {want:?} (rel {rel:e})"
        );
    }
}

/// SplitMix64: a tiny seeded generator so the property tests are reproducible.
pub(crate) struct Gen(u64);

impl Gen {
    pub(crate) fn new(seed: u64) -> Gen {
        Gen(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Small integers 0..=k, so ties and duplicates are common.
    pub(crate) fn int_points(&mut self, n: usize, d: usize, k: u64) -> Vec<Vec<f64>> {
        (0..n).map(|_| (0..d).map(|_| (self.next_u64() % (k + 1)) as f64).collect()).collect()
    }
    pub(crate) fn unit_points(&mut self, n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n).map(|_| (0..d).map(|_| self.unit()).collect()).collect()
    }
    /// Points on the positive unit sphere (mutually non-dominated), for minimisation.
    pub(crate) fn sphere_points(&mut self, n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                let v: Vec<f64> = (0..d).map(|_| self.unit() + 1e-3).collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect()
    }
}
