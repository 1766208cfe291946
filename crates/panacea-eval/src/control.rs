//! Per-λ control: does objective i rise with λ_i over the preference grid?
//!
//! For each objective i, Spearman's rank correlation ρ_i between λ_k[i] and F_k[i] over the grid
//! points k (Spearman, "The proof and measurement of association between two things", 1904):
//! 1 when objective i never falls as its weight grows, −1 when it never rises. Ties get the mean
//! of the ranks they span (a Das–Dennis grid in 3 objectives repeats every λ_i value), and ρ is
//! the Pearson correlation of those ranks. ρ is undefined (`None`) when either side is constant.

use serde::{Deserialize, Serialize};

use crate::bootstrap::{bootstrap_ci, BootstrapOptions, ConfidenceInterval};
use crate::error::{EvalError, Result};
use crate::sense::Matrix;

/// 1-based ranks of `v`, ties sharing the mean of their ranks.
fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_unstable_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's ρ of paired samples (average ranks for ties); `None` when x or y is constant.
/// Needs finite values, equal lengths and at least 2 pairs.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    if x.len() != y.len() {
        return Err(EvalError::LengthMismatch {
            what: "Spearman correlation",
            left: "x",
            left_len: x.len(),
            right: "y",
            right_len: y.len(),
        });
    }
    if x.len() < 2 {
        return Err(EvalError::TooFewPoints { what: "Spearman correlation", min: 2, got: x.len() });
    }
    for (what, v) in [("Spearman x", x), ("Spearman y", y)] {
        if let Some(row) = v.iter().position(|a| !a.is_finite()) {
            return Err(EvalError::NonFinite { what, row, col: 0, value: v[row] });
        }
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let mean = (x.len() + 1) as f64 / 2.0; // the mean rank, ties or not
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        let (dx, dy) = (a - mean, b - mean);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return Ok(None);
    }
    Ok(Some((sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)))
}

/// ρ_i between λ_k[i] and `points[k][i]` for every objective i (row k of `points` was obtained
/// under `prefs[k]`).
pub fn lambda_control(prefs: &[Vec<f64>], points: &[Vec<f64>]) -> Result<Vec<Option<f64>>> {
    let f = Matrix::new("points", points, 1.0, None)?;
    let l = Matrix::new("preference vectors", prefs, 1.0, Some(f.d))?;
    if l.n != f.n {
        return Err(EvalError::LengthMismatch {
            what: "per-λ control",
            left: "preference vectors",
            left_len: l.n,
            right: "points",
            right_len: f.n,
        });
    }
    (0..f.d)
        .map(|i| {
            let li: Vec<f64> = l.rows().map(|r| r[i]).collect();
            let fi: Vec<f64> = f.rows().map(|r| r[i]).collect();
            spearman(&li, &fi)
        })
        .collect()
}

/// Per-λ control of one objective, with a bootstrap interval over prompts when per-prompt
/// samples were given and ρ is defined on every resample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LambdaControl {
    /// The objective's name.
    pub objective: String,
    /// Spearman ρ between λ_i and objective i over the grid; `None` when undefined.
    pub spearman: Option<f64>,
    /// Percentile bootstrap interval of ρ over prompts.
    pub ci: Option<ConfidenceInterval>,
}

/// [`lambda_control`] for every objective, with intervals from `per_prompt` ([K][P][D]) when
/// given: each resample's mean front gives one ρ_i.
pub fn lambda_control_with_ci(
    objectives: &[String],
    prefs: &[Vec<f64>],
    points: &[Vec<f64>],
    per_prompt: Option<&[Vec<Vec<f64>>]>,
    options: &BootstrapOptions,
) -> Result<Vec<LambdaControl>> {
    let rho = lambda_control(prefs, points)?;
    let mut out = Vec::with_capacity(rho.len());
    for (i, r) in rho.into_iter().enumerate() {
        let ci = match (per_prompt, r) {
            (Some(pp), Some(_)) => {
                let metric = |front: &[Vec<f64>]| {
                    let li: Vec<f64> = prefs.iter().map(|l| l[i]).collect();
                    let fi: Vec<f64> = front.iter().map(|p| p[i]).collect();
                    spearman(&li, &fi)?.ok_or(EvalError::InvalidValue {
                        what: "per-λ control",
                        detail: "a resample has a constant objective".into(),
                    })
                };
                // A resample where the objective is constant has no ρ: no interval then.
                match bootstrap_ci(pp, metric, options) {
                    Ok(c) => Some(c),
                    Err(EvalError::InvalidValue { what: "per-λ control", .. }) => None,
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let objective = objectives.get(i).cloned().unwrap_or_else(|| format!("f{}", i + 1));
        out.push(LambdaControl { objective, spearman: r, ci });
    }
    Ok(out)
}
