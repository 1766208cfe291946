//! Preference vectors λ ∈ Δ^{K−1} and the samplers that draw them (Panacea, arXiv 2402.02030,
//! §4: "for each data batch, we randomly sample a preference vector from the preference
//! simplex"; docs/method.md, §4).
//!
//! [`PreferenceVector`] is the only way a preference enters a model: it is validated once, when
//! built (length K, finite, ≥ 0, sum 1 within [`SUM_TOLERANCE`]), so nothing downstream checks
//! again. [`PreferenceSampler`] draws training preferences from a caller-owned RNG (the
//! `preference` stream of [`crate::seed::RunRng`]) and enumerates evaluation grids.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::{Validate, Validator};
use crate::CoreError;

/// How far Σλ may be from 1.
pub const SUM_TOLERANCE: f64 = 1e-6;

/// A validated preference vector λ: K finite weights, each ≥ 0, summing to 1 (± 1e-6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<f64>", into = "Vec<f64>")]
pub struct PreferenceVector(Vec<f64>);

fn reject(values: &[f64], reason: impl Into<String>) -> CoreError {
    CoreError::Preference { values: values.to_vec(), reason: reason.into() }
}

impl PreferenceVector {
    /// Validates `values` as a point of the simplex.
    pub fn new(values: Vec<f64>) -> Result<Self, CoreError> {
        if values.is_empty() {
            return Err(reject(&values, "it is empty; hint: give one weight per objective"));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(reject(&values, format!("entry {i} is {v}, not a finite number")));
        }
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return Err(reject(&values, format!("entry {i} is {v} < 0; weights must be ≥ 0")));
        }
        let sum: f64 = values.iter().sum();
        if (sum - 1.0).abs() > SUM_TOLERANCE {
            return Err(reject(
                &values,
                format!(
                    "the weights sum to {sum}, not 1 (tolerance {SUM_TOLERANCE}); hint: \
                     normalise them, e.g. 0.7,0.3"
                ),
            ));
        }
        Ok(Self(values))
    }

    /// Like [`PreferenceVector::new`], and also checks that there are exactly `k` weights.
    pub fn with_len(values: Vec<f64>, k: usize) -> Result<Self, CoreError> {
        let p = Self::new(values)?;
        p.expect_len(k)?;
        Ok(p)
    }

    /// Fails unless this vector has `k` weights (one per objective).
    pub fn expect_len(&self, k: usize) -> Result<(), CoreError> {
        if self.0.len() == k {
            Ok(())
        } else {
            Err(reject(
                &self.0,
                format!(
                    "it has {} weights but there are {k} objectives; hint: give one weight per \
                     objective, in the same order",
                    self.0.len()
                ),
            ))
        }
    }

    /// The vertex e_j of the K-simplex.
    pub fn vertex(k: usize, j: usize) -> Result<Self, CoreError> {
        if j >= k {
            return Err(reject(&[], format!("vertex {j} does not exist for {k} objectives")));
        }
        let mut v = vec![0.0; k];
        v[j] = 1.0;
        Self::new(v)
    }

    /// The uniform preference (1/K, …, 1/K).
    pub fn uniform(k: usize) -> Result<Self, CoreError> {
        Self::new(vec![1.0 / k as f64; k])
    }

    /// The weights.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// K, the number of weights.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a preference vector has at least one weight.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// λ as an f32 tensor of shape [K] on `device` (no gradient).
    pub fn to_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.0).to_kind(Kind::Float).to_device(device) // [K]
    }

    /// One preference per row as an f32 tensor [B, K]. All vectors must have the same K.
    pub fn stack(prefs: &[PreferenceVector], device: Device) -> Result<Tensor, CoreError> {
        let Some(first) = prefs.first() else {
            return Err(reject(&[], "cannot stack zero preference vectors"));
        };
        let k = first.len();
        for p in prefs {
            p.expect_len(k)?;
        }
        let flat: Vec<f64> = prefs.iter().flat_map(|p| p.0.iter().copied()).collect();
        Ok(Tensor::from_slice(&flat)
            .view([prefs.len() as i64, k as i64])
            .to_kind(Kind::Float)
            .to_device(device)) // [B, K]
    }
}

impl TryFrom<Vec<f64>> for PreferenceVector {
    type Error = CoreError;
    fn try_from(values: Vec<f64>) -> Result<Self, CoreError> {
        Self::new(values)
    }
}

impl From<PreferenceVector> for Vec<f64> {
    fn from(p: PreferenceVector) -> Vec<f64> {
        p.0
    }
}

impl FromStr for PreferenceVector {
    type Err = CoreError;
    /// Parses comma-separated weights, e.g. `0.7,0.3` (spaces and surrounding brackets allowed).
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let body = s.trim().trim_start_matches('[').trim_end_matches(']');
        let mut values = Vec::new();
        for (i, part) in body.split(',').enumerate() {
            let part = part.trim();
            let v: f64 = part.parse().map_err(|_| CoreError::Preference {
                values: values.clone(),
                reason: format!(
                    "cannot read weight {i} `{part}` of `{s}` as a number; hint: write e.g. 0.7,0.3"
                ),
            })?;
            values.push(v);
        }
        Self::new(values)
    }
}

impl fmt::Display for PreferenceVector {
    /// `[0.7,0.3]`: each weight rounded to 12 decimals first, so grid points computed as
    /// `1 − 0.7` print as `0.3` rather than `0.30000000000000004`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.0.iter().map(|v| format!("{}", (v * 1e12).round() / 1e12)).collect();
        write!(f, "[{}]", parts.join(","))
    }
}

/// The preference(s) of one training step, the same type for every trainer: one λ for the whole
/// batch (the paper's per-batch sampling) or one per row (mixed batches: a PPO rollout row, a DPO
/// pair; see `Aggregation::aggregate_losses` for how a loss groups them).
#[derive(Clone, Copy, Debug)]
pub enum StepPreference<'a> {
    /// One λ for every pair.
    Shared(&'a PreferenceVector),
    /// λ per row (a rollout row, a pair), in batch order.
    PerRow(&'a [PreferenceVector]),
}

impl StepPreference<'_> {
    /// The λ tensor of rows `start..start+len`: [K] when shared, [len, K] per row. Fails when
    /// a preference does not have `k` entries or the rows run past the per-row list.
    pub fn tensor(
        &self,
        k: usize,
        start: usize,
        len: usize,
        device: Device,
    ) -> Result<Tensor, CoreError> {
        match self {
            Self::Shared(p) => {
                p.expect_len(k)?;
                Ok(p.to_tensor(device)) // [K]
            }
            Self::PerRow(ps) => {
                if start + len > ps.len() {
                    return Err(CoreError::Preference {
                        values: Vec::new(),
                        reason: format!(
                            "{} per-row preferences for rows {start}..{}",
                            ps.len(),
                            start + len
                        ),
                    });
                }
                let t = PreferenceVector::stack(&ps[start..start + len], device)?; // [B, K]
                if t.size()[1] != k as i64 {
                    ps[start].expect_len(k)?;
                }
                Ok(t)
            }
        }
    }

    /// The mean λ over rows (the λ itself when shared), for logging.
    pub fn mean(&self) -> Vec<f64> {
        match self {
            Self::Shared(p) => p.as_slice().to_vec(),
            Self::PerRow(ps) => {
                let k = ps.first().map_or(0, |p| p.len());
                (0..k)
                    .map(|i| ps.iter().map(|p| p.as_slice()[i]).sum::<f64>() / ps.len() as f64)
                    .collect()
            }
        }
    }
}

fn default_vertex_prob() -> f64 {
    0.2
}

/// Where training preferences come from, and which grid evaluation uses. A serde-tagged enum:
/// `{ kind: dirichlet, vertex_prob: 0.2 }`, `{ kind: fixed, weights: [0.7, 0.3] }`,
/// `{ kind: grid2d, n: 11 }`, `{ kind: das_dennis, h: 5 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreferenceSampler {
    /// Dirichlet(1), i.e. uniform on the simplex, with vertex over-sampling (docs/method.md, §4.1):
    /// with probability `vertex_prob` λ = e_j, j ~ Uniform{1..K}; otherwise
    /// λ_i = E_i / Σ_j E_j with E_i = −ln U_i, U_i ~ U(0, 1].
    Dirichlet {
        /// p_v ∈ [0, 1], the probability of drawing a vertex (default 0.2).
        #[serde(default = "default_vertex_prob")]
        vertex_prob: f64,
    },
    /// Always the same preference.
    Fixed {
        /// The K weights (validated as a [`PreferenceVector`]).
        weights: Vec<f64>,
    },
    /// K = 2 only: `n` evenly spaced points λ_1 = i/(n−1), λ_2 = 1 − λ_1, from (0, 1) to (1, 0).
    Grid2d {
        /// Number of points, ≥ 2 (11 gives the paper's 0, 0.1, …, 1).
        n: usize,
    },
    /// The Das–Dennis simplex lattice: every λ = a/H with a ∈ ℕ^K and Σa = H, in lexicographic
    /// order of a (so K = 2 runs from (0, 1) to (1, 0)); C(H+K−1, K−1) points.
    DasDennis {
        /// Divisions H ≥ 1.
        h: usize,
    },
}

impl Default for PreferenceSampler {
    fn default() -> Self {
        Self::Dirichlet { vertex_prob: default_vertex_prob() }
    }
}

/// Upper bound on the size of an enumerated grid (Das–Dennis with K = 10, H = 10 has 92,378
/// points, which method.md calls too many).
pub const MAX_GRID_POINTS: usize = 50_000;

/// C(n, k) without overflow for the sizes used here (saturates at `usize::MAX`).
pub fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut acc: u128 = 1;
    for i in 0..k {
        acc = acc * (n - i) as u128 / (i + 1) as u128;
        if acc > usize::MAX as u128 {
            return usize::MAX;
        }
    }
    acc as usize
}

impl PreferenceSampler {
    /// Checks this sampler against the number of objectives `k`.
    pub fn check(&self, k: usize) -> Result<(), CoreError> {
        let bad = |reason: String| CoreError::Preference { values: vec![], reason };
        if k == 0 {
            return Err(bad("there must be at least one objective".into()));
        }
        match self {
            Self::Dirichlet { vertex_prob } => {
                if !(0.0..=1.0).contains(vertex_prob) {
                    return Err(bad(format!(
                        "dirichlet vertex_prob {vertex_prob} is not in [0, 1]"
                    )));
                }
            }
            Self::Fixed { weights } => {
                PreferenceVector::with_len(weights.clone(), k)?;
            }
            Self::Grid2d { n } => {
                if k != 2 {
                    return Err(bad(format!(
                        "grid2d needs exactly 2 objectives, there are {k}; hint: use das_dennis"
                    )));
                }
                if *n < 2 {
                    return Err(bad(format!("grid2d needs n ≥ 2 points, got {n}")));
                }
            }
            Self::DasDennis { h } => {
                if *h == 0 {
                    return Err(bad("das_dennis needs h ≥ 1".into()));
                }
                let count = binomial(h + k - 1, k - 1);
                if count > MAX_GRID_POINTS {
                    return Err(bad(format!(
                        "das_dennis with h = {h} and {k} objectives has {count} points (limit \
                         {MAX_GRID_POINTS}); hint: lower h"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Draws one preference for `k` objectives from `rng`. Grids draw one of their points
    /// uniformly; `Fixed` consumes no randomness.
    pub fn sample<R: Rng + ?Sized>(
        &self,
        k: usize,
        rng: &mut R,
    ) -> Result<PreferenceVector, CoreError> {
        self.check(k)?;
        match self {
            Self::Dirichlet { vertex_prob } => {
                // The coin is always drawn, so p_v does not shift the stream's later draws.
                let coin: f64 = rng.gen();
                if coin < *vertex_prob {
                    let j = rng.gen_range(0..k);
                    return PreferenceVector::vertex(k, j);
                }
                // E_i = −ln U_i with U_i ∈ (0, 1]: gen() is in [0, 1), so 1 − gen() is in (0, 1].
                let e: Vec<f64> = (0..k).map(|_| -(1.0 - rng.gen::<f64>()).ln()).collect();
                let total: f64 = e.iter().sum();
                if total > 0.0 {
                    let mut lambda: Vec<f64> = e.iter().map(|x| x / total).collect();
                    // Remove the rounding residue so Σλ = 1 holds to the last bit we can manage.
                    let residue = 1.0 - lambda.iter().sum::<f64>();
                    if let Some(max) = lambda.iter_mut().max_by(|a, b| a.total_cmp(b)) {
                        *max += residue;
                    }
                    PreferenceVector::new(lambda)
                } else {
                    // Every U_i was exactly 1 (probability ~2^-53K): fall back to the centre.
                    PreferenceVector::uniform(k)
                }
            }
            Self::Fixed { weights } => PreferenceVector::with_len(weights.clone(), k),
            Self::Grid2d { .. } | Self::DasDennis { .. } => {
                let grid = self.grid(k)?;
                let i = rng.gen_range(0..grid.len());
                Ok(grid[i].clone())
            }
        }
    }

    /// Draws one preference per row (mixed-λ batches), `b` draws in order.
    pub fn sample_rows<R: Rng + ?Sized>(
        &self,
        k: usize,
        b: usize,
        rng: &mut R,
    ) -> Result<Vec<PreferenceVector>, CoreError> {
        (0..b).map(|_| self.sample(k, rng)).collect()
    }

    /// The small grid a trainer's final steering check sweeps: every vertex and enough points
    /// between them for a rank correlation — Das–Dennis with h = 4 for K ≤ 2 (5 points), h = 2
    /// otherwise (6 points for K = 3).
    pub fn steering_grid(k: usize) -> Result<Vec<PreferenceVector>, CoreError> {
        let h = if k <= 2 { 4 } else { 2 };
        Self::DasDennis { h }.grid(k)
    }

    /// The evaluation grid: `Grid2d` and `DasDennis` enumerate their points in lexicographic
    /// order, `Fixed` is its one point, and `Dirichlet` (a distribution) has no grid.
    pub fn grid(&self, k: usize) -> Result<Vec<PreferenceVector>, CoreError> {
        self.check(k)?;
        match self {
            Self::Dirichlet { .. } => Err(CoreError::Preference {
                values: vec![],
                reason: "a dirichlet sampler has no grid; hint: use grid2d or das_dennis for \
                         evaluation"
                    .into(),
            }),
            Self::Fixed { weights } => Ok(vec![PreferenceVector::with_len(weights.clone(), k)?]),
            Self::Grid2d { n } => (0..*n)
                .map(|i| {
                    let l1 = i as f64 / (*n - 1) as f64;
                    PreferenceVector::new(vec![l1, 1.0 - l1])
                })
                .collect(),
            Self::DasDennis { h } => das_dennis(*h, k),
        }
    }
}

/// Every λ = a/H with a ∈ ℕ^k, Σa = H, in lexicographic order of a. The count is
/// C(H+k−1, k−1) (docs/method.md, §4.2 table); the last coordinate takes the remainder, so each
/// vector sums to 1 up to one rounding step.
pub fn das_dennis(h: usize, k: usize) -> Result<Vec<PreferenceVector>, CoreError> {
    if k == 0 || h == 0 {
        return Err(CoreError::Preference {
            values: vec![],
            reason: format!("das_dennis needs h ≥ 1 and k ≥ 1, got h = {h}, k = {k}"),
        });
    }
    let mut out = Vec::with_capacity(binomial(h + k - 1, k - 1).min(MAX_GRID_POINTS));
    let mut a = vec![0usize; k];
    fn rec(
        pos: usize,
        left: usize,
        h: usize,
        a: &mut [usize],
        out: &mut Vec<PreferenceVector>,
    ) -> Result<(), CoreError> {
        let k = a.len();
        if pos == k - 1 {
            a[pos] = left;
            let v: Vec<f64> = a.iter().map(|&x| x as f64 / h as f64).collect();
            out.push(PreferenceVector::new(v)?);
            return Ok(());
        }
        for x in 0..=left {
            a[pos] = x;
            rec(pos + 1, left - x, h, a, out)?;
        }
        Ok(())
    }
    rec(0, h, h, &mut a, &mut out)?;
    Ok(out)
}

impl Validate for PreferenceSampler {
    fn validate(&self, v: &mut Validator) {
        match self {
            Self::Dirichlet { vertex_prob } => v.in_range(*vertex_prob, "vertex_prob", 0.0, 1.0),
            Self::Fixed { weights } => {
                if let Err(e) = PreferenceVector::new(weights.clone()) {
                    v.problem("weights", e.to_string());
                }
            }
            Self::Grid2d { n } => v.check(*n >= 2, "n", format!("must be ≥ 2, got {n}")),
            Self::DasDennis { h } => v.check(*h >= 1, "h", format!("must be ≥ 1, got {h}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_sum_above_one() {
        let err = PreferenceVector::new(vec![0.5, 0.6]).expect_err("sum 1.1");
        assert!(err.to_string().contains("sum to 1.1"), "{err}");
    }

    #[test]
    fn displays_grid_weights_without_float_noise() {
        let p = PreferenceVector::new(vec![0.7, 1.0 - 0.7]).expect("valid");
        assert_eq!(p.as_slice()[1], 0.30000000000000004);
        assert_eq!(p.to_string(), "[0.7,0.3]");
        assert_eq!(PreferenceVector::vertex(3, 1).expect("e2").to_string(), "[0,1,0]");
    }

    #[test]
    fn parses_comma_list() {
        let p: PreferenceVector = "0.7, 0.3".parse().expect("valid");
        assert_eq!(p.as_slice(), &[0.7, 0.3]);
        let p: PreferenceVector = "[1,0]".parse().expect("valid");
        assert_eq!(p.as_slice(), &[1.0, 0.0]);
        assert!("0.7;0.3".parse::<PreferenceVector>().is_err());
        assert!("".parse::<PreferenceVector>().is_err());
    }

    #[test]
    fn binomial_small_values() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(19, 9), 92_378);
        assert_eq!(binomial(2, 3), 0);
    }
}
