//! Does λ steer? The evidence a trained preference-conditioned model owes its user, computed
//! from per-prompt objective vectors of the base model and of a λ grid that contains every
//! vertex e_i:
//!
//! - **vertex checks**: for each objective i, e_i must score higher on objective i than the
//!   base model and than every other vertex e_j. Each difference gets a paired bootstrap
//!   interval over prompts (the same prompts answered by both sides), and a check passes only
//!   when its whole interval lies above 0;
//! - **per-λ control**: Spearman's ρ between λ_i and objective i over the grid
//!   ([`crate::lambda_control_with_ci`]), with its interval.
//!
//! The trainers print this at the end of a run and the steering bench aggregates it over
//! seeds; it needs no libtorch.

use serde::{Deserialize, Serialize};

use crate::bootstrap::{bootstrap_difference, mean_front, BootstrapOptions, ConfidenceInterval};
use crate::control::{lambda_control_with_ci, LambdaControl};
use crate::error::{EvalError, Result};

/// One paired comparison on one objective: `better` should exceed `other` on `objective`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertexCheck {
    /// The objective compared (index into the objectives).
    pub objective: usize,
    /// The side expected to be higher: `e<i>` (1-based, as printed).
    pub better: String,
    /// The side expected to be lower: `base` or `e<j>`.
    pub other: String,
    /// `better − other` on the objective, with its paired bootstrap interval over prompts.
    pub difference: ConfidenceInterval,
}

impl VertexCheck {
    /// True when the whole interval lies above 0.
    pub fn passed(&self) -> bool {
        self.difference.lower > 0.0
    }
}

/// What [`steering_report`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SteeringReport {
    /// Objective names, in preference order.
    pub objectives: Vec<String>,
    /// Number of prompts behind every mean.
    pub prompts: usize,
    /// The base model's mean objective vector: [K].
    pub base: Vec<f64>,
    /// The grid's preference vectors: [G][K].
    pub prefs: Vec<Vec<f64>>,
    /// The grid's mean objective vectors: [G][K].
    pub means: Vec<Vec<f64>>,
    /// Every vertex check (K objectives × (1 + K − 1) comparisons).
    pub checks: Vec<VertexCheck>,
    /// Per-λ control of each objective.
    pub control: Vec<LambdaControl>,
}

impl SteeringReport {
    /// True when every vertex check passed.
    pub fn vertices_pass(&self) -> bool {
        self.checks.iter().all(VertexCheck::passed)
    }

    /// The smallest Spearman ρ over the objectives (`None` when any is undefined).
    pub fn min_spearman(&self) -> Option<f64> {
        self.control.iter().map(|c| c.spearman).try_fold(f64::INFINITY, |m, r| r.map(|r| m.min(r)))
    }

    /// A plain-text table for terminals and logs.
    pub fn to_text(&self) -> String {
        let k = self.objectives.len();
        let mut out = format!(
            "steering on {} held-out prompts (mean utility; {}):\n",
            self.prompts,
            self.objectives.join(", ")
        );
        out += &format!("  base model          {}\n", fmt_vec(&self.base));
        for (p, m) in self.prefs.iter().zip(&self.means) {
            let label = match vertex_of(p) {
                Some(i) if k > 1 => format!("λ = e_{} {:<10}", i + 1, clip(&self.objectives[i])),
                _ => format!("λ = {:<14}", fmt_pref(p)),
            };
            out += &format!("  {label} {}\n", fmt_vec(m));
        }
        for c in &self.checks {
            let d = &c.difference;
            out += &format!(
                "  {:<10} {} − {:<4} {:+.4} [{:+.4}, {:+.4}] {}\n",
                clip(&self.objectives[c.objective]),
                c.better,
                c.other,
                d.estimate,
                d.lower,
                d.upper,
                if c.passed() { "ok" } else { "NOT above 0" }
            );
        }
        for c in &self.control {
            let rho = c.spearman.map_or("undefined".to_owned(), |r| format!("{r:+.3}"));
            let ci =
                c.ci.as_ref()
                    .map_or(String::new(), |ci| format!(" [{:+.3}, {:+.3}]", ci.lower, ci.upper));
            out +=
                &format!("  control {:<10} Spearman ρ(λ_i, objective i) {rho}{ci}\n", c.objective);
        }
        out += &format!(
            "  verdict: {}",
            if self.vertices_pass() {
                "every vertex beats the base and the other vertices on its own objective"
            } else {
                "λ does not steer every objective (see the checks above)"
            }
        );
        out
    }
}

/// A Markdown table of steering reports of the same job over several seeds: one row per seed,
/// one column per vertex check (`estimate [lower, upper]`) and per objective's Spearman ρ, and
/// a last row saying whether every seed passed every check. Reports must share objectives.
pub fn seeds_markdown(runs: &[(u64, SteeringReport)]) -> Result<String> {
    let Some((_, first)) = runs.first() else {
        return Err(EvalError::TooFewPoints { what: "steering reports", min: 1, got: 0 });
    };
    let label = |c: &VertexCheck, r: &SteeringReport| {
        format!("{}: {} − {}", r.objectives[c.objective], c.better, c.other)
    };
    let columns: Vec<String> = first.checks.iter().map(|c| label(c, first)).collect();
    let mut out = String::from("| seed |");
    for c in &columns {
        out += &format!(" {c} |");
    }
    for o in &first.objectives {
        out += &format!(" ρ {o} |");
    }
    out += " every check above 0 |\n|---|";
    out += &"---|".repeat(columns.len() + first.objectives.len() + 1);
    out += "\n";
    for (seed, r) in runs {
        let these: Vec<String> = r.checks.iter().map(|c| label(c, r)).collect();
        if these != columns || r.objectives != first.objectives {
            return Err(EvalError::InvalidValue {
                what: "steering reports",
                detail: format!(
                    "seed {seed} has other objectives or checks than seed {} (hint: compare \
                     runs of the same config)",
                    runs[0].0
                ),
            });
        }
        out += &format!("| {seed} |");
        for c in &r.checks {
            let d = &c.difference;
            out += &format!(" {:+.3} [{:+.3}, {:+.3}] |", d.estimate, d.lower, d.upper);
        }
        for c in &r.control {
            let ci =
                c.ci.as_ref()
                    .map_or(String::new(), |i| format!(" [{:+.2}, {:+.2}]", i.lower, i.upper));
            out += &match c.spearman {
                Some(rho) => format!(" {rho:+.2}{ci} |"),
                None => " undefined |".to_owned(),
            };
        }
        out += if r.vertices_pass() { " yes |\n" } else { " no |\n" };
    }
    let all = runs.iter().all(|(_, r)| r.vertices_pass());
    let min_rho = runs
        .iter()
        .map(|(_, r)| r.min_spearman())
        .try_fold(f64::INFINITY, |m, r| r.map(|r| m.min(r)));
    out += &format!(
        "\n{} of {} seeds pass every vertex check; the smallest Spearman ρ is {}.\n",
        runs.iter().filter(|(_, r)| r.vertices_pass()).count(),
        runs.len(),
        min_rho.map_or("undefined".to_owned(), |r| format!("{r:+.2}"))
    );
    if all {
        out += "Every vertex e_i beats the base and the other vertices on objective i in every seed.\n";
    }
    Ok(out)
}

/// The index i when `p` is the vertex e_i (one entry 1, the rest 0).
pub fn vertex_of(p: &[f64]) -> Option<usize> {
    let ones: Vec<usize> = (0..p.len()).filter(|&i| p[i] == 1.0).collect();
    match ones.as_slice() {
        [i] if p.iter().enumerate().all(|(j, &x)| j == *i || x == 0.0) => Some(*i),
        _ => None,
    }
}

/// The steering evidence from per-prompt objective vectors (higher is better in every
/// dimension): `base` is [P][K] for the base model, `grid` is [G][P][K] under `prefs[g]`, the
/// same P prompts in the same order everywhere. `prefs` must contain every vertex e_i.
pub fn steering_report(
    objectives: &[String],
    prefs: &[Vec<f64>],
    base: &[Vec<f64>],
    grid: &[Vec<Vec<f64>>],
    options: &BootstrapOptions,
) -> Result<SteeringReport> {
    let k = objectives.len();
    if prefs.len() != grid.len() {
        return Err(EvalError::LengthMismatch {
            what: "steering report",
            left: "preference vectors",
            left_len: prefs.len(),
            right: "grid evaluations",
            right_len: grid.len(),
        });
    }
    let mut vertex = vec![None; k];
    for (g, p) in prefs.iter().enumerate() {
        if p.len() != k {
            return Err(EvalError::Ragged {
                what: "preference vectors",
                row: g,
                got: p.len(),
                expected: k,
            });
        }
        if let Some(i) = vertex_of(p) {
            vertex[i].get_or_insert(g);
        }
    }
    let vertex: Vec<usize> = vertex
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| EvalError::InvalidValue {
                what: "steering report",
                detail: format!(
                    "the grid has no vertex e_{} (hint: use a Das–Dennis or 2-D grid, which \
                     includes every vertex)",
                    i + 1
                ),
            })
        })
        .collect::<Result<_>>()?;
    let base_pp = vec![base.to_vec()]; // [1][P][K]
    let prompts = crate::bootstrap::n_prompts(&base_pp)?;
    let means = mean_front(grid)?;
    let base_mean = mean_front(&base_pp)?.remove(0);
    let column = |i: usize| move |front: &[Vec<f64>]| Ok(front[0][i]);
    let mut checks = Vec::new();
    for i in 0..k {
        let at_vertex = vec![grid[vertex[i]].clone()];
        let mut others: Vec<(String, Vec<Vec<Vec<f64>>>)> =
            vec![("base".to_owned(), base_pp.clone())];
        for (j, &g) in vertex.iter().enumerate().filter(|&(j, _)| j != i) {
            others.push((format!("e{}", j + 1), vec![grid[g].clone()]));
        }
        for (name, other) in others {
            let difference =
                bootstrap_difference(&at_vertex, &other, column(i), column(i), options)?;
            checks.push(VertexCheck {
                objective: i,
                better: format!("e{}", i + 1),
                other: name,
                difference,
            });
        }
    }
    let control = lambda_control_with_ci(objectives, prefs, &means, Some(grid), options)?;
    Ok(SteeringReport {
        objectives: objectives.to_vec(),
        prompts,
        base: base_mean,
        prefs: prefs.to_vec(),
        means,
        checks,
        control,
    })
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:+.4}")).collect();
    format!("[{}]", parts.join(", "))
}

fn fmt_pref(p: &[f64]) -> String {
    let parts: Vec<String> = p.iter().map(|x| format!("{x:.2}")).collect();
    format!("({})", parts.join(", "))
}

fn clip(name: &str) -> String {
    name.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> BootstrapOptions {
        BootstrapOptions { n_resamples: 200, level: 0.95, seed: 7 }
    }

    /// Per-prompt rows [P][2] whose objective i is `offset_i` plus a prompt effect shared by
    /// every method (so paired differences are exact).
    fn rows(offsets: [f64; 2], p: usize) -> Vec<Vec<f64>> {
        (0..p).map(|q| vec![offsets[0] + q as f64 * 0.1, offsets[1] - q as f64 * 0.05]).collect()
    }

    #[test]
    fn a_steering_grid_passes_and_a_shifted_one_fails() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let prefs = vec![vec![1.0, 0.0], vec![0.5, 0.5], vec![0.0, 1.0]];
        let base = rows([0.0, 0.0], 8);
        // e_1 raises a by 0.3 and lowers b; e_2 the reverse; the midpoint sits between.
        let good = vec![rows([0.3, -0.2], 8), rows([0.05, 0.05], 8), rows([-0.2, 0.3], 8)];
        let r = steering_report(&names, &prefs, &base, &good, &opts()).unwrap();
        assert_eq!(r.checks.len(), 4);
        assert!(r.vertices_pass(), "{}", r.to_text());
        // Shared prompt effects cancel in paired differences: e_1 − base on a is exactly 0.3.
        assert!((r.checks[0].difference.estimate - 0.3).abs() < 1e-12);
        assert!((r.checks[0].difference.lower - 0.3).abs() < 1e-12);
        assert_eq!(r.min_spearman(), Some(1.0));

        // Both vertices shifted the same way (the failure the issue reports): e_2 is *worse*
        // than the base on b, so its check fails while e_1's pass.
        let shifted = vec![rows([0.4, -0.1], 8), rows([0.3, -0.15], 8), rows([0.2, -0.05], 8)];
        let r = steering_report(&names, &prefs, &base, &shifted, &opts()).unwrap();
        assert!(!r.vertices_pass());
        let failed: Vec<(&str, &str)> = r
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| (c.better.as_str(), c.other.as_str()))
            .collect();
        assert_eq!(failed, vec![("e2", "base")]);
    }

    #[test]
    fn the_seed_table_has_a_row_per_seed_and_counts_the_passing_ones() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let prefs = vec![vec![1.0, 0.0], vec![0.5, 0.5], vec![0.0, 1.0]];
        let base = rows([0.0, 0.0], 8);
        let good = vec![rows([0.3, -0.2], 8), rows([0.05, 0.05], 8), rows([-0.2, 0.3], 8)];
        let bad = vec![rows([0.4, -0.1], 8), rows([0.3, -0.15], 8), rows([0.2, -0.05], 8)];
        let pass = steering_report(&names, &prefs, &base, &good, &opts()).unwrap();
        let fail = steering_report(&names, &prefs, &base, &bad, &opts()).unwrap();
        let table = seeds_markdown(&[(1, pass.clone()), (2, fail)]).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("| seed | a: e1 − base | a: e1 − e2 | b: e2 − base |"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("| 1 | +0.300 [+0.300, +0.300] |")
                && lines[2].ends_with("| yes |")
        );
        assert!(lines[3].starts_with("| 2 |") && lines[3].ends_with("| no |"));
        assert!(table.contains("1 of 2 seeds pass every vertex check"), "{table}");
        assert!(seeds_markdown(&[]).is_err());
    }

    #[test]
    fn a_grid_without_a_vertex_is_an_error_that_names_it() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let prefs = vec![vec![1.0, 0.0], vec![0.5, 0.5]];
        let base = rows([0.0, 0.0], 4);
        let grid = vec![rows([0.1, 0.0], 4), rows([0.0, 0.0], 4)];
        let e = steering_report(&names, &prefs, &base, &grid, &opts()).unwrap_err().to_string();
        assert!(e.contains("e_2"), "{e}");
    }
}
