//! Reports: every metric of one point set (`panacea metrics`), and a methods × metrics
//! comparison of several fronts against one shared reference point, as JSON, CSV (points) and
//! Markdown (with bootstrap confidence intervals where per-prompt samples are given, and paired
//! bootstrap differences of every method against the first).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bootstrap::{bootstrap_ci, BootstrapOptions, ConfidenceInterval};
use crate::compare::{differences_vs_first, PairedDifference};
use crate::control::{lambda_control_with_ci, LambdaControl};
use crate::diversity::{expected_utility, inner_product, spacing, sparsity, SpacingVariant};
use crate::error::{EvalError, Result};
use crate::front::Front;
use crate::hypervolume::{auto_reference_point, hypervolume, RefPoint};
use crate::indicators::{
    avg_hausdorff, epsilon_additive, epsilon_multiplicative, gd, igd, igd_plus, r2_exact_2d,
};
use crate::pareto::{nondominated_mask, Duplicates};
use crate::sense::Sense;

/// Every metric of one point set, as printed by `panacea metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointMetrics {
    /// Sense of the points and of every point-valued field below.
    pub sense: Sense,
    /// Number of objectives.
    pub dim: usize,
    /// Number of points.
    pub n_points: usize,
    /// Number of non-dominated points (all copies of duplicates counted).
    pub n_nondominated: usize,
    /// Exact hypervolume.
    pub hypervolume: f64,
    /// The reference point the hypervolume was computed against.
    pub reference_point: Vec<f64>,
    /// `"auto"` or `"explicit"`.
    pub reference_point_rule: String,
    /// Points that strictly dominate the reference point (the others add nothing).
    pub n_contributing: usize,
    /// Schott spacing, every variant (`l1_nminus1` is the project default).
    pub spacing: BTreeMap<String, f64>,
    /// PGMORL sparsity on the non-dominated subset (project default).
    pub sparsity: f64,
    /// PGMORL sparsity over all points.
    pub sparsity_all_points: f64,
    /// Exact 2-D R2 against `r2_ideal_point` (2-D only).
    pub r2_exact: Option<f64>,
    /// The ideal point used for R2: the component-wise best of the points.
    pub r2_ideal_point: Option<Vec<f64>>,
    /// IGD against the reference set, if one was given.
    pub igd: Option<f64>,
    /// IGD+ against the reference set.
    pub igd_plus: Option<f64>,
    /// GD against the reference set.
    pub gd: Option<f64>,
    /// Averaged Hausdorff distance Δ₁ against the reference set.
    pub avg_hausdorff: Option<f64>,
    /// Additive ε against the reference set.
    pub epsilon_additive: Option<f64>,
    /// Multiplicative ε (only when every value is positive).
    pub epsilon_multiplicative: Option<f64>,
}

/// Computes every metric for `points`; the distance and ε indicators need a `reference_set`.
pub fn all_metrics(
    points: &[Vec<f64>],
    sense: Sense,
    reference: &RefPoint,
    reference_set: Option<&[Vec<f64>]>,
) -> Result<PointMetrics> {
    if points.is_empty() {
        return Err(EvalError::TooFewPoints { what: "points", min: 1, got: 0 });
    }
    let hv = hypervolume(points, sense, reference)?;
    let mask = nondominated_mask(points, sense, Duplicates::KeepAll)?;
    let mut sp = BTreeMap::new();
    for v in SpacingVariant::ALL {
        sp.insert(v.name().to_string(), spacing(points, v)?);
    }
    let (r2, ideal) = if hv.dim == 2 {
        let pick = |k: usize| {
            let it = points.iter().map(|p| p[k]);
            match sense {
                Sense::Max => it.fold(f64::NEG_INFINITY, f64::max),
                Sense::Min => it.fold(f64::INFINITY, f64::min),
            }
        };
        let z = vec![pick(0), pick(1)];
        (Some(r2_exact_2d(points, &z, sense)?), Some(z))
    } else {
        (None, None)
    };
    let mut m = PointMetrics {
        sense,
        dim: hv.dim,
        n_points: points.len(),
        n_nondominated: mask.iter().filter(|k| **k).count(),
        hypervolume: hv.value,
        reference_point: hv.reference_point,
        reference_point_rule: match reference {
            RefPoint::Auto => "auto".into(),
            RefPoint::Explicit(_) => "explicit".into(),
        },
        n_contributing: hv.n_contributing,
        spacing: sp,
        sparsity: sparsity(points, sense, true)?,
        sparsity_all_points: sparsity(points, sense, false)?,
        r2_exact: r2,
        r2_ideal_point: ideal,
        igd: None,
        igd_plus: None,
        gd: None,
        avg_hausdorff: None,
        epsilon_additive: None,
        epsilon_multiplicative: None,
    };
    if let Some(rs) = reference_set {
        m.igd = Some(igd(points, rs, sense)?);
        m.igd_plus = Some(igd_plus(points, rs, sense)?);
        m.gd = Some(gd(points, rs, sense)?);
        m.avg_hausdorff = Some(avg_hausdorff(points, rs, sense)?);
        m.epsilon_additive = Some(epsilon_additive(points, rs, sense)?);
        m.epsilon_multiplicative = epsilon_multiplicative(points, rs, sense).ok();
    }
    Ok(m)
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(", "))
}

impl PointMetrics {
    /// A human-readable, aligned listing of every metric.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(s, "{k:<28} {v}");
        };
        line("sense", self.sense.to_string());
        line("dim", self.dim.to_string());
        line("n_points", self.n_points.to_string());
        line("n_nondominated", self.n_nondominated.to_string());
        line("hypervolume", format!("{}", self.hypervolume));
        line(
            "reference_point",
            format!("{} ({})", fmt_vec(&self.reference_point), self.reference_point_rule),
        );
        line("n_contributing", self.n_contributing.to_string());
        for (k, v) in &self.spacing {
            line(&format!("spacing.{k}"), format!("{v}"));
        }
        line("sparsity (non-dominated)", format!("{}", self.sparsity));
        line("sparsity (all points)", format!("{}", self.sparsity_all_points));
        if let (Some(r2), Some(z)) = (self.r2_exact, &self.r2_ideal_point) {
            line("r2_exact", format!("{r2} (ideal point {})", fmt_vec(z)));
        }
        let opt = [
            ("igd", self.igd),
            ("igd_plus", self.igd_plus),
            ("gd", self.gd),
            ("avg_hausdorff", self.avg_hausdorff),
            ("epsilon_additive", self.epsilon_additive),
            ("epsilon_multiplicative", self.epsilon_multiplicative),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                line(k, format!("{v}"));
            }
        }
        s
    }
}

/// One method's front, with optional per-prompt samples ([K][P][D]) for confidence intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodInput {
    /// Method name (a table row).
    pub name: String,
    /// Its front.
    pub front: Front,
    /// Per-prompt objective vectors behind each front point, for bootstrap intervals.
    pub per_prompt: Option<Vec<Vec<Vec<f64>>>>,
}

/// Options of a [`FrontReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Sense of the objectives.
    pub sense: Sense,
    /// Reference point rule (`Auto` uses the union of all methods' fronts).
    pub reference: RefPoint,
    /// Spacing variant (default `l1_nminus1`).
    pub spacing: SpacingVariant,
    /// Sparsity on the non-dominated subset (default true).
    pub sparsity_only_nondominated: bool,
    /// Bootstrap settings for methods with per-prompt samples.
    pub bootstrap: BootstrapOptions,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            sense: Sense::Max,
            reference: RefPoint::Auto,
            spacing: SpacingVariant::default(),
            sparsity_only_nondominated: true,
            bootstrap: BootstrapOptions::default(),
        }
    }
}

/// One row of the comparison table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// Method name.
    pub method: String,
    /// Number of points.
    pub n_points: usize,
    /// Number of non-dominated points.
    pub n_nondominated: usize,
    /// Hypervolume against the report's reference point.
    pub hypervolume: f64,
    /// Inner product mean ⟨λ, F(λ)⟩ (needs prefs).
    pub inner_product: Option<f64>,
    /// Expected utility (needs prefs).
    pub eum: Option<f64>,
    /// Sparsity.
    pub sparsity: f64,
    /// Spacing.
    pub spacing: f64,
    /// Bootstrap intervals, keyed by metric name.
    pub ci: BTreeMap<String, ConfidenceInterval>,
    /// Per-λ control: Spearman ρ between λ_i and objective i over the grid, per objective, with
    /// a bootstrap interval over prompts when per-prompt samples were given (empty without
    /// preferences).
    pub lambda_control: Vec<LambdaControl>,
}

/// Several methods' fronts compared against one reference point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontReport {
    /// Sense of the objectives.
    pub sense: Sense,
    /// Number of objectives.
    pub dim: usize,
    /// Objective names.
    pub objectives: Vec<String>,
    /// The shared reference point.
    pub reference_point: Vec<f64>,
    /// `"auto"` or `"explicit"`.
    pub reference_point_rule: String,
    /// Spacing variant used.
    pub spacing_variant: SpacingVariant,
    /// Whether sparsity used the non-dominated subset.
    pub sparsity_only_nondominated: bool,
    /// Whether the inner product used raw objectives (always `false` here: no normalisation).
    pub normalised: bool,
    /// One row per method.
    pub methods: Vec<MethodReport>,
    /// Paired bootstrap differences (HV, IP) of every other method against the first one, for
    /// methods with per-prompt samples; empty with fewer than 2 methods.
    pub differences: Vec<PairedDifference>,
}

impl FrontReport {
    /// Computes every method's metrics against one reference point.
    pub fn build(methods: &[MethodInput], options: &ReportOptions) -> Result<FrontReport> {
        let first = methods
            .iter()
            .find(|m| !m.front.points.is_empty())
            .ok_or(EvalError::TooFewPoints { what: "report fronts", min: 1, got: 0 })?;
        let dim = first.front.dim();
        for m in methods {
            m.front.validate()?;
            if !m.front.points.is_empty() && m.front.dim() != dim {
                return Err(EvalError::DimensionMismatch {
                    what: "a method's front",
                    got: m.front.dim(),
                    expected: dim,
                });
            }
        }
        let reference_point = match &options.reference {
            RefPoint::Explicit(r) => r.clone(),
            RefPoint::Auto => {
                let all: Vec<&[Vec<f64>]> =
                    methods.iter().map(|m| m.front.points.as_slice()).collect();
                auto_reference_point(&all, options.sense)?
            }
        };
        let rp = RefPoint::Explicit(reference_point.clone());
        let sense = options.sense;
        let objectives = first.front.objective_names();
        let mut rows = Vec::new();
        for m in methods {
            let f = &m.front;
            let hv = hypervolume(&f.points, sense, &rp)?;
            let has_prefs = !f.prefs.is_empty() && !f.points.is_empty();
            let mut ci = BTreeMap::new();
            if let Some(pp) = &m.per_prompt {
                if pp.len() != f.points.len() {
                    return Err(EvalError::LengthMismatch {
                        what: "report",
                        left: "per-prompt samples",
                        left_len: pp.len(),
                        right: "points",
                        right_len: f.points.len(),
                    });
                }
                let b = &options.bootstrap;
                ci.insert(
                    "hypervolume".into(),
                    bootstrap_ci(pp, |fr| Ok(hypervolume(fr, sense, &rp)?.value), b)?,
                );
                ci.insert(
                    "sparsity".into(),
                    bootstrap_ci(
                        pp,
                        |fr| sparsity(fr, sense, options.sparsity_only_nondominated),
                        b,
                    )?,
                );
                ci.insert(
                    "spacing".into(),
                    bootstrap_ci(pp, |fr| spacing(fr, options.spacing), b)?,
                );
                if has_prefs {
                    ci.insert(
                        "inner_product".into(),
                        bootstrap_ci(pp, |fr| inner_product(&f.prefs, fr), b)?,
                    );
                }
            }
            let lambda_control = if has_prefs {
                lambda_control_with_ci(
                    &objectives,
                    &f.prefs,
                    &f.points,
                    m.per_prompt.as_deref(),
                    &options.bootstrap,
                )?
            } else {
                Vec::new()
            };
            rows.push(MethodReport {
                method: m.name.clone(),
                n_points: f.points.len(),
                n_nondominated: nondominated_mask(&f.points, sense, Duplicates::KeepAll)?
                    .iter()
                    .filter(|k| **k)
                    .count(),
                hypervolume: hv.value,
                inner_product: if has_prefs {
                    Some(inner_product(&f.prefs, &f.points)?)
                } else {
                    None
                },
                eum: if has_prefs { Some(expected_utility(&f.prefs, &f.points)?) } else { None },
                sparsity: sparsity(&f.points, sense, options.sparsity_only_nondominated)?,
                spacing: spacing(&f.points, options.spacing)?,
                ci,
                lambda_control,
            });
        }
        let differences =
            differences_vs_first(methods, sense, &reference_point, &options.bootstrap)?;
        Ok(FrontReport {
            sense,
            dim,
            objectives,
            reference_point,
            reference_point_rule: match options.reference {
                RefPoint::Auto => "auto".into(),
                RefPoint::Explicit(_) => "explicit".into(),
            },
            spacing_variant: options.spacing,
            sparsity_only_nondominated: options.sparsity_only_nondominated,
            normalised: false,
            methods: rows,
            differences,
        })
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Markdown table, methods × metrics, with `[lower, upper]` intervals where available.
    pub fn to_markdown(&self) -> String {
        let cell = |v: Option<f64>, ci: Option<&ConfidenceInterval>| -> String {
            match (v, ci) {
                (Some(v), Some(c)) => format!("{v:.4} [{:.4}, {:.4}]", c.lower, c.upper),
                (Some(v), None) => format!("{v:.4}"),
                (None, _) => "–".into(),
            }
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Reference point ({}, sense {}): {}; spacing {}; sparsity on {}.\n",
            self.reference_point_rule,
            self.sense,
            fmt_vec(&self.reference_point),
            self.spacing_variant.name(),
            if self.sparsity_only_nondominated { "the non-dominated subset" } else { "all points" }
        );
        let level = self.methods.iter().flat_map(|m| m.ci.values()).map(|c| c.level).next();
        if let Some(l) = level {
            let _ = writeln!(
                s,
                "Intervals: {:.0}% paired percentile bootstrap over prompts.\n",
                l * 100.0
            );
        }
        let _ = writeln!(
            s,
            "| method | n | non-dominated | HV ↑ | IP ↑ | EUM ↑ | sparsity ↓ | spacing ↓ |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for m in &self.methods {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                m.method,
                m.n_points,
                m.n_nondominated,
                cell(Some(m.hypervolume), m.ci.get("hypervolume")),
                cell(m.inner_product, m.ci.get("inner_product")),
                cell(m.eum, None),
                cell(Some(m.sparsity), m.ci.get("sparsity")),
                cell(Some(m.spacing), m.ci.get("spacing")),
            );
        }
        if let Some(first) = self.differences.first() {
            let _ = writeln!(
                s,
                "\nDifferences against {} (paired bootstrap over the same prompts, the same \
                 resamples for every method):\n",
                first.baseline
            );
            for d in &self.differences {
                let _ = writeln!(s, "- {}", d.verdict());
            }
        }
        let controlled: Vec<&MethodReport> =
            self.methods.iter().filter(|m| !m.lambda_control.is_empty()).collect();
        if !controlled.is_empty() {
            let _ = writeln!(
                s,
                "\nPer-λ control: Spearman ρ between λ_i and objective i over the grid (1: the \
                 objective rises with its weight; – when undefined):\n"
            );
            let _ = writeln!(s, "| method | {} |", self.objectives.join(" | "));
            let _ = writeln!(s, "|---|{}", "---|".repeat(self.objectives.len()));
            for m in controlled {
                let cells: Vec<String> = m
                    .lambda_control
                    .iter()
                    .map(|c| match (c.spearman, &c.ci) {
                        (Some(r), Some(ci)) => format!("{r:.3} [{:.3}, {:.3}]", ci.lower, ci.upper),
                        (Some(r), None) => format!("{r:.3}"),
                        (None, _) => "–".into(),
                    })
                    .collect();
                let _ = writeln!(s, "| {} | {} |", m.method, cells.join(" | "));
            }
        }
        s
    }

    /// CSV of every method's points: `method,k,λ_1..λ_d,<objective names>`.
    pub fn points_csv(methods: &[MethodInput]) -> String {
        let mut s = String::new();
        let Some(first) = methods.iter().find(|m| !m.front.points.is_empty()) else {
            return s;
        };
        let d = first.front.dim();
        let mut header = vec!["method".to_string(), "k".to_string()];
        header.extend((1..=d).map(|j| format!("pref_{j}")));
        header.extend(first.front.objective_names());
        let _ = writeln!(s, "{}", header.join(","));
        for m in methods {
            for (k, p) in m.front.points.iter().enumerate() {
                let mut row = vec![csv_field(&m.name), k.to_string()];
                match m.front.prefs.get(k) {
                    Some(l) => row.extend(l.iter().map(|v| format!("{v}"))),
                    None => row.extend(std::iter::repeat_n(String::new(), d)),
                }
                row.extend(p.iter().map(|v| format!("{v}")));
                let _ = writeln!(s, "{}", row.join(","));
            }
        }
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
