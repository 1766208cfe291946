//! Comparisons between methods: paired bootstrap intervals on the difference of a metric between
//! two methods evaluated on the same prompts, with a one-line verdict.
//!
//! Per-method intervals alone cannot support "A beats B": two overlapping intervals can hide a
//! clear paired difference, and two disjoint ones can come from a shared easy prompt set. The
//! difference is bootstrapped over prompts with the same resampled prompt indices applied to
//! both methods.

use serde::{Deserialize, Serialize};

use crate::bootstrap::{bootstrap_difference, n_prompts, BootstrapOptions, ConfidenceInterval};
use crate::diversity::inner_product;
use crate::error::Result;
use crate::hypervolume::{hypervolume, RefPoint};
use crate::report::MethodInput;
use crate::sense::Sense;

/// The metrics a [`PairedDifference`] can be about (both higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceMetric {
    /// Hypervolume against a shared reference point.
    Hypervolume,
    /// Inner product mean ⟨λ, F(λ)⟩ (needs preferences on both methods).
    InnerProduct,
}

impl DifferenceMetric {
    /// The short name used in verdicts (`HV`, `IP`).
    pub fn short_name(self) -> &'static str {
        match self {
            DifferenceMetric::Hypervolume => "HV",
            DifferenceMetric::InnerProduct => "IP",
        }
    }
}

/// `metric(method) − metric(baseline)` over the same prompts, with its paired percentile
/// bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Which metric.
    pub metric: DifferenceMetric,
    /// The method whose metric comes first in the difference.
    pub method: String,
    /// The method subtracted.
    pub baseline: String,
    /// Number of prompts resampled.
    pub n_prompts: usize,
    /// The difference on all prompts and its interval.
    pub difference: ConfidenceInterval,
}

/// A confidence level as a percentage without trailing zeros: 0.95 → `95`, 0.975 → `97.5`.
pub(crate) fn percent(level: f64) -> String {
    format!("{}", (level * 1000.0).round() / 10.0)
}

impl PairedDifference {
    /// Whether the interval excludes 0 (the sign of the difference is clear at this level).
    pub fn is_clear(&self) -> bool {
        self.difference.lower > 0.0 || self.difference.upper < 0.0
    }

    /// One sentence, e.g. `panacea's HV exceeds RS's by 0.1200 [0.0800, 0.1500] (95 % paired
    /// bootstrap over 32 prompts)`; `... is below RS's by ...` for a clearly negative difference
    /// (magnitudes shown), and `no clear difference between ...` when the interval contains 0.
    pub fn verdict(&self) -> String {
        let c = &self.difference;
        let (m, b, name) = (&self.method, &self.baseline, self.metric.short_name());
        let how =
            format!("({} % paired bootstrap over {} prompts)", percent(c.level), self.n_prompts);
        if c.lower > 0.0 {
            format!(
                "{m}'s {name} exceeds {b}'s by {:.4} [{:.4}, {:.4}] {how}",
                c.estimate, c.lower, c.upper
            )
        } else if c.upper < 0.0 {
            format!(
                "{m}'s {name} is below {b}'s by {:.4} [{:.4}, {:.4}] {how}",
                -c.estimate, -c.upper, -c.lower
            )
        } else {
            format!(
                "no clear difference between {m}'s and {b}'s {name}: {:+.4} [{:+.4}, {:+.4}] {how}",
                c.estimate, c.lower, c.upper
            )
        }
    }
}

/// Paired differences of every method after the first against the first (`methods[0]` is the
/// baseline): HV against `reference_point` when both have per-prompt samples, and IP when both
/// also have preferences. Methods without per-prompt samples are skipped; a different number of
/// prompts is an error (a paired comparison needs the same prompts).
pub fn differences_vs_first(
    methods: &[MethodInput],
    sense: Sense,
    reference_point: &[f64],
    options: &BootstrapOptions,
) -> Result<Vec<PairedDifference>> {
    let Some((first, rest)) = methods.split_first() else {
        return Ok(Vec::new());
    };
    let Some(base_pp) = &first.per_prompt else {
        return Ok(Vec::new());
    };
    let rp = RefPoint::Explicit(reference_point.to_vec());
    let hv = |front: &[Vec<f64>]| Ok(hypervolume(front, sense, &rp)?.value);
    let mut out = Vec::new();
    for m in rest {
        let Some(pp) = &m.per_prompt else { continue };
        let n = n_prompts(pp)?;
        out.push(PairedDifference {
            metric: DifferenceMetric::Hypervolume,
            method: m.name.clone(),
            baseline: first.name.clone(),
            n_prompts: n,
            difference: bootstrap_difference(pp, base_pp, hv, hv, options)?,
        });
        if !m.front.prefs.is_empty() && !first.front.prefs.is_empty() {
            let (pm, pb) = (&m.front.prefs, &first.front.prefs);
            out.push(PairedDifference {
                metric: DifferenceMetric::InnerProduct,
                method: m.name.clone(),
                baseline: first.name.clone(),
                n_prompts: n,
                difference: bootstrap_difference(
                    pp,
                    base_pp,
                    |f| inner_product(pm, f),
                    |f| inner_product(pb, f),
                    options,
                )?,
            });
        }
    }
    Ok(out)
}
