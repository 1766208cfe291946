//! Spread and preference-following metrics (docs/metrics.md, §6–§7):
//! - spacing (Schott, "Fault tolerant design using single and multicriteria genetic algorithm
//!   optimization", MSc thesis, MIT 1995), in four variants;
//! - sparsity (Xu, Tian, Ma, Rus, Sueda & Matusik, "Prediction-guided multi-objective
//!   reinforcement learning for continuous robot control", ICML 2020, §5);
//! - inner product IP = mean_k ⟨λ_k, F_k⟩ (the Panacea paper's metric, arXiv 2402.02030);
//! - expected utility EUM = mean_k max_{y∈F} ⟨λ_k, y⟩ (Zintgraf, Kanters, Roijers, Oliehoek &
//!   Beau, "Quality assessment of MORL policies using multi-objective reinforcement learning",
//!   2015).

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::kdtree::{self, l1_box, l2_squared, l2_squared_box, KdTree};
use crate::pareto::{nondominated_mask_min, Duplicates};
use crate::sense::{Matrix, Sense};

/// Distance and denominator of Schott's spacing (docs/metrics.md, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpacingVariant {
    /// L1 distance, 1/(n − 1): Schott as quoted in surveys, PlatEMO. **Project default.**
    #[default]
    L1Nminus1,
    /// L1 distance, 1/n: pymoo `SpacingIndicator`, heuropt.
    L1N,
    /// L2 distance, 1/(n − 1).
    L2Nminus1,
    /// L2 distance, 1/n: LibMOON `compute_spacing` (likely the Panacea paper's).
    L2N,
}

impl SpacingVariant {
    /// All four variants, default first.
    pub const ALL: [SpacingVariant; 4] = [
        SpacingVariant::L1Nminus1,
        SpacingVariant::L1N,
        SpacingVariant::L2Nminus1,
        SpacingVariant::L2N,
    ];

    /// Whether the distance is L1 (else L2).
    pub fn is_l1(self) -> bool {
        matches!(self, SpacingVariant::L1Nminus1 | SpacingVariant::L1N)
    }

    /// The name used in reports and the shared test files (`l1_nminus1`, …).
    pub fn name(self) -> &'static str {
        match self {
            SpacingVariant::L1Nminus1 => "l1_nminus1",
            SpacingVariant::L1N => "l1_n",
            SpacingVariant::L2Nminus1 => "l2_nminus1",
            SpacingVariant::L2N => "l2_n",
        }
    }
}

/// Schott's spacing over the distinct points: d_i = min_{j≠i} dist(f_i, f_j),
/// SP = sqrt(Σ (d_i − d̄)² / D), where i and j range over the distinct points (exactly equal
/// rows count once) and n is their number. Returns 0 for fewer than 2 distinct points. Does not
/// depend on the sense.
///
/// Copies are dropped because a repeated point would be its copy's nearest neighbour at
/// distance 0: a method that answers many preferences with the same few outputs (DPS answering
/// a λ grid with its nearest member) would get spacing 0 by construction.
///
/// Nearest neighbours come from a k-d tree: O(n log n) on low-dimensional fronts, and exactly
/// the distances a scan of every pair finds.
pub fn spacing(points: &[Vec<f64>], variant: SpacingVariant) -> Result<f64> {
    let m = Matrix::new("points", points, 1.0, None)?.distinct_rows();
    Ok(spacing_from_nearest(&nearest_distances(&m, variant.is_l1()), variant))
}

/// Every spacing variant at once (each distance's nearest neighbours searched once), in
/// [`SpacingVariant::ALL`] order.
pub fn spacing_all_variants(points: &[Vec<f64>]) -> Result<[f64; 4]> {
    let m = Matrix::new("points", points, 1.0, None)?.distinct_rows();
    let (l1, l2) = (nearest_distances(&m, true), nearest_distances(&m, false));
    Ok(SpacingVariant::ALL.map(|v| spacing_from_nearest(if v.is_l1() { &l1 } else { &l2 }, v)))
}

/// Each distinct row's distance to its nearest other row (empty for fewer than 2 rows).
fn nearest_distances(m: &Matrix, l1: bool) -> Vec<f64> {
    if m.n < 2 {
        return Vec::new();
    }
    let tree = KdTree::new(&m.data, m.d);
    (0..m.n)
        .map(|i| {
            let q = m.row(i);
            if l1 {
                tree.min_by(
                    Some(i),
                    f64::NEG_INFINITY,
                    |p| kdtree::l1(q, p),
                    |lo, hi| l1_box(q, lo, hi),
                )
            } else {
                tree.min_by(
                    Some(i),
                    f64::NEG_INFINITY,
                    |p| l2_squared(q, p),
                    |lo, hi| l2_squared_box(q, lo, hi),
                )
                .sqrt()
            }
        })
        .collect()
}

fn spacing_from_nearest(nearest: &[f64], variant: SpacingVariant) -> f64 {
    let n = nearest.len();
    if n < 2 {
        return 0.0;
    }
    let mean = nearest.iter().sum::<f64>() / n as f64;
    let ss: f64 = nearest.iter().map(|d| (d - mean) * (d - mean)).sum();
    let denom = match variant {
        SpacingVariant::L1Nminus1 | SpacingVariant::L2Nminus1 => (n - 1) as f64,
        SpacingVariant::L1N | SpacingVariant::L2N => n as f64,
    };
    (ss / denom).sqrt()
}

/// PGMORL sparsity: (1/(|S| − 1)) Σ_j Σ_i (S̃_j(i+1) − S̃_j(i))², where S̃_j holds objective j's
/// values over S sorted ascending; 0 if |S| < 2. S holds distinct points only (exactly equal rows
/// count once, as in [`spacing`]): with `only_nondominated` (the project default) S is the
/// distinct non-dominated points in the given sense, otherwise every distinct point given.
///
/// Copies add zero-width gaps and would divide the same total by more gaps: eleven points that
/// are three distinct ones repeated would score a fifth of the three points' sparsity.
pub fn sparsity(points: &[Vec<f64>], sense: Sense, only_nondominated: bool) -> Result<f64> {
    let m = Matrix::new("points", points, 1.0, None)?.distinct_rows();
    let keep: Vec<bool> = if only_nondominated {
        let mut mm = m.clone();
        mm.data.iter_mut().for_each(|v| *v *= sense.sign());
        nondominated_mask_min(&mm, Duplicates::KeepAll)
    } else {
        vec![true; m.n]
    };
    let rows: Vec<&[f64]> = m.rows().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
    let s = rows.len();
    if s < 2 {
        return Ok(0.0);
    }
    let mut total = 0.0;
    let mut column = vec![0.0; s];
    for j in 0..m.d {
        for (c, r) in column.iter_mut().zip(&rows) {
            *c = r[j];
        }
        column.sort_unstable_by(f64::total_cmp);
        total += column.windows(2).map(|w| (w[1] - w[0]) * (w[1] - w[0])).sum::<f64>();
    }
    Ok(total / (s - 1) as f64)
}

fn paired(prefs: &[Vec<f64>], points: &[Vec<f64>]) -> Result<(Matrix, Matrix)> {
    let f = Matrix::new("points", points, 1.0, None)?;
    if f.n == 0 {
        return Err(EvalError::TooFewPoints { what: "points", min: 1, got: 0 });
    }
    let l = Matrix::new("preference vectors", prefs, 1.0, Some(f.d))?;
    Ok((l, f))
}

/// Inner product IP = (1/K) Σ_k ⟨λ_k, F_k⟩, where row k of `points` (maximised utilities) was
/// produced under preference row k. Higher is better; scale-dependent, so report the objective
/// scaling with it.
pub fn inner_product(prefs: &[Vec<f64>], points: &[Vec<f64>]) -> Result<f64> {
    let (l, f) = paired(prefs, points)?;
    if l.n != f.n {
        return Err(EvalError::LengthMismatch {
            what: "inner product",
            left: "preference vectors",
            left_len: l.n,
            right: "points",
            right_len: f.n,
        });
    }
    Ok(l.rows().zip(f.rows()).map(|(a, b)| dot(a, b)).sum::<f64>() / f.n as f64)
}

/// Expected utility EUM = (1/K) Σ_k max_{y∈F} ⟨λ_k, y⟩ over maximised utilities: any front point
/// may serve any preference. `prefs` and `points` may have different lengths.
pub fn expected_utility(prefs: &[Vec<f64>], points: &[Vec<f64>]) -> Result<f64> {
    let (l, f) = paired(prefs, points)?;
    if l.n == 0 {
        return Err(EvalError::TooFewPoints { what: "preference vectors", min: 1, got: 0 });
    }
    Ok(l.rows().map(|w| f.rows().map(|y| dot(w, y)).fold(f64::NEG_INFINITY, f64::max)).sum::<f64>()
        / l.n as f64)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
