//! Percentile bootstrap confidence intervals for any front metric from per-prompt samples
//! (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13).
//!
//! A front point F_k is the mean, over P prompts, of the objective vectors obtained under
//! preference λ_k. The same prompts are used for every λ, so a resample draws P prompt indices
//! with replacement once and applies them to every front point (a paired bootstrap); the metric
//! is recomputed on the resampled front. [`bootstrap_difference`] applies each resample to two
//! methods at once (same prompts), for an interval on the difference of their metrics.
//!
//! Resamples run in parallel on rayon's thread pool. Each resample draws its indices from its
//! own generator, seeded from the run's seed and the resample's number alone, so an interval is
//! the same for a seed on any number of threads.

use rayon::prelude::*;
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

fn check_options(options: &BootstrapOptions) -> Result<()> {
    if options.n_resamples < 2 || !(options.level > 0.0 && options.level < 1.0) {
        return Err(EvalError::InvalidValue {
            what: "bootstrap options",
            detail: format!(
                "n_resamples = {} and level = {} (hint: use n_resamples ≥ 2, e.g. 1000, and 0 < level < 1, e.g. 0.95)",
                options.n_resamples, options.level
            ),
        });
    }
    Ok(())
}

/// `each(indices)` for every resample, in resample order: resample r draws P indices with
/// replacement from its own generator, seeded by the r-th output of a generator seeded with
/// `options.seed`. The indices depend only on the seed, r and P, so every call with the same
/// seed over the same prompts sees the same resamples (the per-method intervals and the
/// differences between methods share them), and the resamples can run on any number of
/// threads with the same results. The first error in resample order is returned.
fn map_resamples(
    p: usize,
    options: &BootstrapOptions,
    each: impl Fn(&[usize]) -> Result<f64> + Sync,
) -> Result<Vec<f64>> {
    let mut seeds = Rng::seed_from_u64(options.seed);
    let seeds: Vec<u64> = (0..options.n_resamples).map(|_| seeds.next_u64()).collect();
    let values: Vec<Result<f64>> = seeds
        .into_par_iter()
        .map_init(
            || vec![0usize; p],
            |idx, seed| {
                let mut rng = Rng::seed_from_u64(seed);
                idx.iter_mut().for_each(|i| *i = rng.below(p));
                each(idx)
            },
        )
        .collect();
    values.into_iter().collect()
}

fn percentile_interval(
    estimate: f64,
    mut values: Vec<f64>,
    options: &BootstrapOptions,
) -> ConfidenceInterval {
    values.sort_unstable_by(f64::total_cmp);
    let alpha = (1.0 - options.level) / 2.0;
    ConfidenceInterval {
        estimate,
        lower: quantile(&values, alpha),
        upper: quantile(&values, 1.0 - alpha),
        level: options.level,
        n_resamples: options.n_resamples,
        seed: options.seed,
    }
}

/// Paired percentile bootstrap of `metric` (applied to a [K][D] front) over prompts.
pub fn bootstrap_ci<F>(
    per_prompt: &[Vec<Vec<f64>>],
    metric: F,
    options: &BootstrapOptions,
) -> Result<ConfidenceInterval>
where
    F: Fn(&[Vec<f64>]) -> Result<f64> + Sync,
{
    check_options(options)?;
    let p = check_shape(per_prompt)?;
    let all: Vec<usize> = (0..p).collect();
    let estimate = metric(&resampled_front(per_prompt, &all))?;
    let values = map_resamples(p, options, |idx| metric(&resampled_front(per_prompt, idx)))?;
    Ok(percentile_interval(estimate, values, options))
}

/// Paired percentile bootstrap of the difference `metric_a(A) − metric_b(B)` between two methods
/// evaluated on the same P prompts (`a` is [K_A][P][D], `b` is [K_B][P][D]; prompt p must be the
/// same prompt in both).
///
/// Each resample draws P prompt indices once and applies them to both methods, so what the two
/// share (an easy or hard prompt) cancels in the difference; two identical methods give the
/// interval [0, 0]. The estimate is the difference on the full prompt set. The resamples are the
/// ones [`bootstrap_ci`] draws with the same options.
pub fn bootstrap_difference<FA, FB>(
    a: &[Vec<Vec<f64>>],
    b: &[Vec<Vec<f64>>],
    metric_a: FA,
    metric_b: FB,
    options: &BootstrapOptions,
) -> Result<ConfidenceInterval>
where
    FA: Fn(&[Vec<f64>]) -> Result<f64> + Sync,
    FB: Fn(&[Vec<f64>]) -> Result<f64> + Sync,
{
    check_options(options)?;
    let p = check_shape(a)?;
    let pb = check_shape(b)?;
    if p != pb {
        return Err(EvalError::InvalidValue {
            what: "paired bootstrap",
            detail: format!(
                "the first method has {p} prompts per front point but the second has {pb} (hint: a paired comparison needs both methods evaluated on the same prompts)"
            ),
        });
    }
    let all: Vec<usize> = (0..p).collect();
    let estimate = metric_a(&resampled_front(a, &all))? - metric_b(&resampled_front(b, &all))?;
    let values = map_resamples(p, options, |idx| {
        Ok(metric_a(&resampled_front(a, idx))? - metric_b(&resampled_front(b, idx))?)
    })?;
    Ok(percentile_interval(estimate, values, options))
}

/// The number of prompts behind per-prompt samples ([K][P][D]), after checking their shape.
pub fn n_prompts(per_prompt: &[Vec<Vec<f64>>]) -> Result<usize> {
    check_shape(per_prompt)
}
