//! Percentile bootstrap confidence intervals for any front metric from per-prompt samples
//! (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
//!
//! A front point F_k is the mean, over P prompts, of the objective vectors obtained under
//! preference λ_k. The same prompts are used for every λ, so a resample draws P prompt indices
//! with replacement once and applies them to every front point (a paired bootstrap); the metric
//! is recomputed on the resampled front.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::rng::Rng;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    /// Number of resamples (1000 is a common choice).
    pub n_resamples: usize,
    /// Two-sided confidence level in (0, 1), e.g. 0.95.
    pub level: f64,
    /// RNG seed; the same seed gives the same interval.
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { n_resamples: 1000, level: 0.95, seed: 0 }
    }
}

/// A point estimate with its percentile interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    /// The metric on the full (non-resampled) front.
    pub estimate: f64,
    /// Lower percentile bound.
    pub lower: f64,
    /// Upper percentile bound.
    pub upper: f64,
    /// Confidence level.
    pub level: f64,
    /// Number of resamples.
    pub n_resamples: usize,
    /// RNG seed.
    pub seed: u64,
}

/// Means over prompts: `per_prompt` is [K][P][D] → front [K][D].
pub fn mean_front(per_prompt: &[Vec<Vec<f64>>]) -> Result<Vec<Vec<f64>>> {
    let p = check_shape(per_prompt)?;
    let idx: Vec<usize> = (0..p).collect();
    Ok(resampled_front(per_prompt, &idx))
}

fn check_shape(per_prompt: &[Vec<Vec<f64>>]) -> Result<usize> {
    let Some(first) = per_prompt.first() else {
        return Err(EvalError::TooFewPoints { what: "per-prompt samples", min: 1, got: 0 });
    };
    let p = first.len();
    if p == 0 {
        return Err(EvalError::TooFewPoints { what: "prompts per front point", min: 1, got: 0 });
    }
    let d = first[0].len();
    for (k, rows) in per_prompt.iter().enumerate() {
        if rows.len() != p {
            return Err(EvalError::InvalidValue {
                what: "per-prompt samples",
                detail: format!(
                    "front point {k} has {} prompts but front point 0 has {p} (hint: evaluate every preference on the same prompts)",
                    rows.len()
                ),
            });
        }
        for (row, v) in rows.iter().enumerate() {
            if v.len() != d {
                return Err(EvalError::Ragged {
                    what: "per-prompt samples",
                    row,
                    got: v.len(),
                    expected: d,
                });
            }
            if let Some(col) = v.iter().position(|x| !x.is_finite()) {
                return Err(EvalError::NonFinite {
                    what: "per-prompt samples",
                    row,
                    col,
                    value: v[col],
                });
            }
        }
    }
    Ok(p)
}

fn resampled_front(per_prompt: &[Vec<Vec<f64>>], idx: &[usize]) -> Vec<Vec<f64>> {
    per_prompt
        .iter()
        .map(|rows| {
            let d = rows[0].len();
            let mut mean = vec![0.0; d];
            for &i in idx {
                for (m, v) in mean.iter_mut().zip(&rows[i]) {
                    *m += v;
                }
            }
            mean.iter_mut().for_each(|m| *m /= idx.len() as f64);
            mean
        })
        .collect()
}

/// Linear-interpolation quantile of sorted values (numpy's default, "linear").
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Paired percentile bootstrap of `metric` (applied to a [K][D] front) over prompts.
pub fn bootstrap_ci<F>(
    per_prompt: &[Vec<Vec<f64>>],
    metric: F,
    options: &BootstrapOptions,
) -> Result<ConfidenceInterval>
where
    F: Fn(&[Vec<f64>]) -> Result<f64>,
{
    if options.n_resamples < 2 || !(options.level > 0.0 && options.level < 1.0) {
        return Err(EvalError::InvalidValue {
            what: "bootstrap options",
            detail: format!(
                "n_resamples = {} and level = {} (hint: use n_resamples ≥ 2, e.g. 1000, and 0 < level < 1, e.g. 0.95)",
                options.n_resamples, options.level
            ),
        });
    }
    let p = check_shape(per_prompt)?;
    let all: Vec<usize> = (0..p).collect();
    let estimate = metric(&resampled_front(per_prompt, &all))?;
    let mut rng = Rng::seed_from_u64(options.seed);
    let mut idx = vec![0usize; p];
    let mut values = Vec::with_capacity(options.n_resamples);
    for _ in 0..options.n_resamples {
        idx.iter_mut().for_each(|i| *i = rng.below(p));
        values.push(metric(&resampled_front(per_prompt, &idx))?);
    }
    values.sort_unstable_by(f64::total_cmp);
    let alpha = (1.0 - options.level) / 2.0;
    Ok(ConfidenceInterval {
        estimate,
        lower: quantile(&values, alpha),
        upper: quantile(&values, 1.0 - alpha),
        level: options.level,
        n_resamples: options.n_resamples,
        seed: options.seed,
    })
}
