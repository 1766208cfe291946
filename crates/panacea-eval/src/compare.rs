//! Comparisons between methods:
//! - paired bootstrap intervals on the difference of a metric between two methods evaluated on
//!   the same prompts, with a one-line verdict ([`differences_vs_first`]);
//! - pairwise dominance between fronts: coverage C(A, B) and additive ε+(A, B) ([`dominance`]);
//! - per-method details against the non-dominated union of every front: IGD+, two spacing
//!   variants, and every point with its per-objective bootstrap interval
//!   ([`method_details`]);
//! - the Markdown tables of those ([`details_markdown`], [`dominance_markdown`],
//!   [`points_markdown`]).
//!
//! Per-method intervals alone cannot support "A beats B": two overlapping intervals can hide a
//! clear paired difference, and two disjoint ones can come from a shared easy prompt set. The
//! difference is bootstrapped over prompts with the same resampled prompt indices applied to
//! both methods.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{
    bootstrap_ci, bootstrap_difference, n_prompts, BootstrapOptions, ConfidenceInterval,
};
use crate::diversity::{inner_product, spacing, SpacingVariant};
use crate::error::{EvalError, Result};
use crate::hypervolume::{hypervolume, RefPoint};
use crate::indicators::{coverage, epsilon_additive, igd_plus};
use crate::pareto::{nondominated, nondominated_mask, Duplicates};
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

/// Whether one method's front dominates another's (an ordered pair of methods).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dominance {
    /// The dominating candidate A.
    pub method: String,
    /// The front B it is compared with.
    pub over: String,
    /// Zitzler's coverage C(A, B): the share of B's points weakly dominated by a point of A
    /// (1 = A covers all of B).
    pub coverage: f64,
    /// Additive ε indicator ε+(A, B): the smallest shift of A's points (in objective units)
    /// after which every point of B is weakly dominated; ≤ 0 means A dominates B outright.
    pub epsilon_additive: f64,
}

/// [`Dominance`] of every ordered pair of methods with different names, in `methods` order
/// (A outer, B inner).
pub fn dominance(methods: &[MethodInput], sense: Sense) -> Result<Vec<Dominance>> {
    let mut out = Vec::new();
    for a in methods {
        for b in methods.iter().filter(|b| b.name != a.name) {
            let (pa, pb) = (&a.front.points, &b.front.points);
            out.push(Dominance {
                method: a.name.clone(),
                over: b.name.clone(),
                coverage: coverage(pa, pb, sense)?,
                epsilon_additive: epsilon_additive(pa, pb, sense)?,
            });
        }
    }
    Ok(out)
}

/// One front point with its per-objective bootstrap interval over prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRow {
    /// The preference it was obtained under, if any.
    pub pref: Option<Vec<f64>>,
    /// The objective vector (mean over prompts).
    pub mean: Vec<f64>,
    /// One interval per objective.
    pub ci: Vec<ConfidenceInterval>,
    /// Whether no other point of the same method dominates it.
    pub nondominated_in_method: bool,
}

/// Per-method metrics that [`crate::FrontReport`] does not carry: distance to the union of every
/// method's front, two spacing variants, and the points with intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodDetail {
    /// Method name.
    pub method: String,
    /// Where the method came from (e.g. an adapter folder), as the caller describes it.
    pub adapter: Option<String>,
    /// IGD+ against the non-dominated union of every method's front.
    pub igd_plus_vs_union: f64,
    /// Spacing, L1 distance, 1/(n − 1) (the project default).
    pub spacing_l1_nminus1: f64,
    /// Spacing, L2 distance, 1/n (LibMOON's).
    pub spacing_libmoon_l2_n: f64,
    /// Every point with its intervals.
    pub points: Vec<PointRow>,
}

/// The non-dominated union of every method's front (one copy of duplicates) and each method's
/// [`MethodDetail`]. Every method needs per-prompt samples ([K][P][D]) for the intervals;
/// `sources` pairs with `methods` (use `None` where there is nothing to say).
pub fn method_details(
    methods: &[MethodInput],
    sources: &[Option<String>],
    sense: Sense,
    bootstrap: &BootstrapOptions,
) -> Result<(Vec<Vec<f64>>, Vec<MethodDetail>)> {
    if sources.len() != methods.len() {
        return Err(EvalError::LengthMismatch {
            what: "method details",
            left: "sources",
            left_len: sources.len(),
            right: "methods",
            right_len: methods.len(),
        });
    }
    let union: Vec<Vec<f64>> =
        methods.iter().flat_map(|m| m.front.points.iter().cloned()).collect();
    let union_nd = nondominated(&union, sense, Duplicates::KeepOne)?;
    let mut details = Vec::new();
    for (m, src) in methods.iter().zip(sources) {
        let f = &m.front;
        let mask = nondominated_mask(&f.points, sense, Duplicates::KeepAll)?;
        let pp = m.per_prompt.as_ref().ok_or_else(|| EvalError::InvalidValue {
            what: "method details",
            detail: format!(
                "method {:?} has no per-prompt samples (hint: keep the per-prompt scores for the point intervals)",
                m.name
            ),
        })?;
        if pp.len() != f.points.len() {
            return Err(EvalError::LengthMismatch {
                what: "method details",
                left: "per-prompt samples",
                left_len: pp.len(),
                right: "points",
                right_len: f.points.len(),
            });
        }
        let mut points = Vec::new();
        for (k, p) in f.points.iter().enumerate() {
            let one = [pp[k].clone()];
            let ci = (0..p.len())
                .map(|j| bootstrap_ci(&one, |fr| Ok(fr[0][j]), bootstrap))
                .collect::<Result<Vec<_>>>()?;
            points.push(PointRow {
                pref: f.prefs.get(k).cloned(),
                mean: p.clone(),
                ci,
                nondominated_in_method: mask[k],
            });
        }
        details.push(MethodDetail {
            method: m.name.clone(),
            adapter: src.clone(),
            igd_plus_vs_union: igd_plus(&f.points, &union_nd, sense)?,
            spacing_l1_nminus1: spacing(&f.points, SpacingVariant::L1Nminus1)?,
            spacing_libmoon_l2_n: spacing(&f.points, SpacingVariant::L2N)?,
            points,
        });
    }
    Ok((union_nd, details))
}

/// The table of [`MethodDetail`]'s metrics, starting with a blank line.
pub fn details_markdown(details: &[MethodDetail]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n| method | IGD+ vs union ↓ | spacing LibMOON (L2, 1/n) ↓ | spacing L1 1/(n−1) ↓ |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for e in details {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.4} |",
            e.method, e.igd_plus_vs_union, e.spacing_libmoon_l2_n, e.spacing_l1_nminus1
        );
    }
    s
}

/// A "Dominance between fronts" section: an explanation, then a methods × methods table of
/// coverage and ε+ (row A, column B; – on the diagonal).
pub fn dominance_markdown(names: &[&str], dominance: &[Dominance]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Dominance between fronts\n\nRow A, column B: coverage C(A, B) = share of B's points \
         weakly dominated by a point of A (1 = A's front covers B's), then the additive ε+(A, B) \
         in objective units (≤ 0: A dominates all of B; > 0: how far A falls short).\n"
    );
    let _ = writeln!(s, "| A \\ B | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(names.len()));
    for a in names {
        let cells: Vec<String> = names
            .iter()
            .map(|b| {
                dominance.iter().find(|d| d.method == *a && d.over == *b).map_or_else(
                    || "–".to_owned(),
                    |d| format!("C {:.2}, ε+ {:+.4}", d.coverage, d.epsilon_additive),
                )
            })
            .collect();
        let _ = writeln!(s, "| {a} | {} |", cells.join(" | "));
    }
    s
}

fn fmt_pref(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("({})", parts.join(", "))
}

/// A "Points" section: every method's points with their per-objective intervals at `level`
/// (e.g. 0.95) and whether each is non-dominated within its method.
pub fn points_markdown(objectives: &[String], level: f64, details: &[MethodDetail]) -> String {
    let mut s = String::new();
    let level = level * 100.0;
    let _ = writeln!(s, "\n## Points ({level:.0}% bootstrap intervals over prompts)\n");
    let mut header = "| method | λ |".to_string();
    let mut rule = "|---|---|".to_string();
    for o in objectives {
        let _ = write!(header, " {o} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{header} non-dominated |\n{rule}---|");
    for e in details {
        for p in &e.points {
            let pref = p.pref.as_ref().map_or("–".to_string(), |l| fmt_pref(l));
            let cells: Vec<String> = p
                .mean
                .iter()
                .zip(&p.ci)
                .map(|(m, c)| format!("{m:.4} [{:.4}, {:.4}]", c.lower, c.upper))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                e.method,
                pref,
                cells.join(" | "),
                if p.nondominated_in_method { "yes" } else { "no" }
            );
        }
    }
    s
}
