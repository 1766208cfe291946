//! The report of one evaluation: the metrics (panacea-eval's [`FrontReport`] plus IGD+ against
//! the union, both spacing variants, per-point bootstrap intervals, dominance between fronts,
//! paired differences of each Panacea method against each baseline) written as `report.json`,
//! `report.md`, `points.csv`, `front.json`, `front.png` and `front.svg`.

use std::fmt::Write as _;
use std::path::Path;

use panacea_core::PreferenceSampler;
use panacea_eval::{
    bootstrap_ci, differences_vs_first, epsilon_additive, igd_plus, nondominated,
    nondominated_mask, plot_fronts, spacing, BootstrapOptions, ConfidenceInterval, Duplicates,
    Front, FrontReport, MethodInput, PairedDifference, PlotOptions, RefPoint, ReportOptions, Sense,
    SpacingVariant,
};
use serde::Serialize;

use crate::config::FrontConfig;
use crate::error::{io, Result};
use crate::evaluate::Evaluation;

/// One front point with its per-objective bootstrap interval.
#[derive(Debug, Serialize)]
pub struct PointRow {
    /// Its λ (None for the base).
    pub pref: Option<Vec<f64>>,
    /// Mean score per objective.
    pub mean: Vec<f64>,
    /// Bootstrap interval per objective.
    pub ci: Vec<ConfidenceInterval>,
    /// Not dominated by another point of the same method.
    pub nondominated_in_method: bool,
}

/// Metrics panacea-eval's `FrontReport` does not carry.
#[derive(Debug, Serialize)]
pub struct MethodExtra {
    /// The method.
    pub method: String,
    /// Its adapter folder(s), in words.
    pub adapter: Option<String>,
    /// IGD+ against the non-dominated union of every front.
    pub igd_plus_vs_union: f64,
    /// Spacing, L1 distances, 1/(n−1) (Schott).
    pub spacing_l1_nminus1: f64,
    /// Spacing, L2 distances, 1/n (LibMOON).
    pub spacing_libmoon_l2_n: f64,
    /// Every point with its interval.
    pub points: Vec<PointRow>,
}

/// Whether one method's front dominates another's (ordered pair, every method incl. the base).
#[derive(Debug, Serialize)]
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

/// What `report.json` holds.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    tool: &'static str,
    objectives: &'a [String],
    objective_ranges: Vec<[f64; 2]>,
    grid: &'a PreferenceSampler,
    n_prompts: usize,
    samples_per_prompt: usize,
    seed: u64,
    reference_point: &'a [f64],
    reference_point_rule: &'a str,
    inner_product_scaling: &'static str,
    union_nondominated: Vec<Vec<f64>>,
    dominance: &'a [Dominance],
    comparisons: &'a [PairedDifference],
    report: &'a FrontReport,
    methods: Vec<MethodExtra>,
    generated_rows: usize,
    seconds: f64,
}

const IP_SCALING: &str = "raw gold-scorer values, no normalisation: mean over λ of ⟨λ, ξ(λ)⟩";

/// The report of one evaluation.
#[derive(Debug)]
pub struct Written {
    /// The methods × metrics table with intervals, per-λ control and differences vs the base.
    pub report: FrontReport,
    /// Paired HV and IP differences of every Panacea method against every baseline.
    pub comparisons: Vec<PairedDifference>,
    /// `report.md`.
    pub markdown: String,
}

/// Every ordered pair of distinct methods' [`Dominance`].
pub fn dominance(methods: &[MethodInput]) -> Result<Vec<Dominance>> {
    let mut out = Vec::new();
    for a in methods {
        for b in methods.iter().filter(|b| b.name != a.name) {
            let (pa, pb) = (&a.front.points, &b.front.points);
            out.push(Dominance {
                method: a.name.clone(),
                over: b.name.clone(),
                coverage: panacea_eval::coverage(pa, pb, Sense::Max)?,
                epsilon_additive: epsilon_additive(pa, pb, Sense::Max)?,
            });
        }
    }
    Ok(out)
}

/// Paired bootstrap differences (HV against the report's reference point, IP) of every
/// Panacea method minus every baseline, the resamples of the prompts shared by all of them.
pub fn comparisons(
    ev: &Evaluation,
    reference_point: &[f64],
    boot: &BootstrapOptions,
) -> Result<Vec<PairedDifference>> {
    let methods = || ev.methods.iter().zip(&ev.baseline).skip(1);
    let mut out = Vec::new();
    for (m, _) in methods().filter(|(_, is_baseline)| !**is_baseline) {
        for (b, _) in methods().filter(|(_, is_baseline)| **is_baseline) {
            let pair = [b.clone(), m.clone()];
            out.extend(differences_vs_first(&pair, Sense::Max, reference_point, boot)?);
        }
    }
    Ok(out)
}

/// Computes the metrics and writes every output file into `out`.
pub fn write_report(ev: &Evaluation, cfg: &FrontConfig, out: &Path) -> Result<Written> {
    let sense = Sense::Max;
    let boot = BootstrapOptions {
        n_resamples: cfg.bootstrap.n_resamples,
        level: cfg.bootstrap.level,
        seed: cfg.seed,
    };
    let options =
        ReportOptions { sense, reference: RefPoint::Auto, bootstrap: boot, ..Default::default() };
    let report = FrontReport::build(&ev.methods, &options)?;
    let union: Vec<Vec<f64>> =
        ev.methods.iter().flat_map(|m| m.front.points.iter().cloned()).collect();
    let union_nd = nondominated(&union, sense, Duplicates::KeepOne)?;
    let mut extras = Vec::new();
    for (m, src) in ev.methods.iter().zip(&ev.sources) {
        let f = &m.front;
        let mask = nondominated_mask(&f.points, sense, Duplicates::KeepAll)?;
        let mut points = Vec::new();
        for (k, p) in f.points.iter().enumerate() {
            let ci = match &m.per_prompt {
                Some(pp) => {
                    let one = [pp[k].clone()];
                    (0..p.len())
                        .map(|j| bootstrap_ci(&one, |fr| Ok(fr[0][j]), &boot))
                        .collect::<std::result::Result<Vec<_>, _>>()?
                }
                None => Vec::new(),
            };
            points.push(PointRow {
                pref: f.prefs.get(k).cloned(),
                mean: p.clone(),
                ci,
                nondominated_in_method: mask[k],
            });
        }
        extras.push(MethodExtra {
            method: m.name.clone(),
            adapter: src.clone(),
            igd_plus_vs_union: igd_plus(&f.points, &union_nd, sense)?,
            spacing_l1_nminus1: spacing(&f.points, SpacingVariant::L1Nminus1)?,
            spacing_libmoon_l2_n: spacing(&f.points, SpacingVariant::L2N)?,
            points,
        });
    }
    let dominance = dominance(&ev.methods)?;
    let comparisons = comparisons(ev, &report.reference_point, &boot)?;
    let markdown = markdown(ev, cfg, &report, &extras, &dominance, &comparisons);
    let json = ReportJson {
        tool: "panacea eval-front",
        objectives: &ev.objectives,
        objective_ranges: ev.ranges.iter().map(|(a, b)| [*a, *b]).collect(),
        grid: &cfg.grid,
        n_prompts: ev.prompts.len(),
        samples_per_prompt: cfg.samples_per_prompt,
        seed: cfg.seed,
        reference_point: &report.reference_point,
        reference_point_rule: &report.reference_point_rule,
        inner_product_scaling: IP_SCALING,
        union_nondominated: union_nd,
        report: &report,
        methods: extras,
        dominance: &dominance,
        comparisons: &comparisons,
        generated_rows: ev.rows,
        seconds: ev.seconds,
    };
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let write = |name: &str, text: &str| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(io("writing", &p))
    };
    write("report.json", &serde_json::to_string_pretty(&json)?)?;
    write("report.md", &markdown)?;
    write("points.csv", &FrontReport::points_csv(&ev.methods))?;
    let fronts: Vec<serde_json::Value> = ev
        .methods
        .iter()
        .zip(&ev.sources)
        .map(|(m, src)| {
            serde_json::json!({
                "name": m.name, "adapter": src, "front": m.front, "per_prompt": m.per_prompt,
            })
        })
        .collect();
    let front_json = serde_json::json!({
        "objectives": ev.objectives, "prompts": ev.prompts, "methods": fronts,
    });
    write("front.json", &serde_json::to_string_pretty(&front_json)?)?;
    let plot_input: Vec<(String, Front)> =
        ev.methods.iter().map(|m| (m.name.clone(), m.front.clone())).collect();
    let plot = PlotOptions {
        title: format!(
            "Pareto front ({} prompts × {} samples)",
            ev.prompts.len(),
            cfg.samples_per_prompt
        ),
        sense,
        reference_point: Some(report.reference_point.clone()),
        pref_labels: true,
        size: (900, 700),
    };
    for name in ["front.png", "front.svg"] {
        plot_fronts(&out.join(name), &plot_input, &plot)?;
    }
    Ok(Written { report, comparisons, markdown })
}

/// A point as `(0.1234, 0.5678)`.
pub fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("({})", parts.join(", "))
}

fn markdown(
    ev: &Evaluation,
    cfg: &FrontConfig,
    report: &FrontReport,
    extras: &[MethodExtra],
    dominance: &[Dominance],
    comparisons: &[PairedDifference],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# eval-front\n");
    let _ = writeln!(
        s,
        "Model `{}`; objectives {} (gold scorers, higher is better, λ order); grid {:?}; {} \
         prompts ({:?}, {:?} split) × {} samples; max_new_tokens {}, temperature {}, top_p {:?}; \
         seed {} (each (prompt, sample) row has its own sampling stream, the same in every \
         method and batch). {} rows generated in {:.1} s.\n",
        cfg.model,
        ev.objectives.join(", "),
        cfg.grid,
        ev.prompts.len(),
        cfg.prompts.set,
        cfg.prompts.split,
        cfg.samples_per_prompt,
        cfg.generation.max_new_tokens,
        cfg.generation.temperature,
        cfg.generation.top_p,
        cfg.seed,
        ev.rows,
        ev.seconds
    );
    let _ = writeln!(
        s,
        "`base` is the untrained model (adapter off), one point. DPS is reported at its \
         members' λ, one point per trained member. HV uses the reference point below (auto: \
         min over the union of every front − 5 % of the range). Inner product: {IP_SCALING}. \
         Sparsity on each method's non-dominated subset (PGMORL); spacing L1, 1/(n−1) (Schott, \
         project default); both over distinct points. LibMOON's spacing (L2, 1/n) and IGD+ \
         against the non-dominated union of every front are in the second table. LibMOON \
         displays sparsity and spacing ×100; these are not scaled.\n"
    );
    s.push_str(&report.to_markdown());
    if !comparisons.is_empty() {
        let _ = writeln!(
            s,
            "\n## Verdicts: Panacea against the baselines\n\nPaired bootstrap over the same \
             prompts (every difference uses the same resamples):\n"
        );
        for d in comparisons {
            let _ = writeln!(s, "- {}", d.verdict());
        }
    }
    let _ = writeln!(
        s,
        "\n| method | IGD+ vs union ↓ | spacing LibMOON (L2, 1/n) ↓ | spacing L1 1/(n−1) ↓ |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    for e in extras {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.4} |",
            e.method, e.igd_plus_vs_union, e.spacing_libmoon_l2_n, e.spacing_l1_nminus1
        );
    }
    let _ = writeln!(
        s,
        "\n## Dominance between fronts\n\nRow A, column B: coverage C(A, B) = share of B's points \
         weakly dominated by a point of A (1 = A's front covers B's), then the additive ε+(A, B) \
         in objective units (≤ 0: A dominates all of B; > 0: how far A falls short).\n"
    );
    let names: Vec<&str> = ev.methods.iter().map(|m| m.name.as_str()).collect();
    let _ = writeln!(s, "| A \\ B | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(names.len()));
    for a in &names {
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
    let level = cfg.bootstrap.level * 100.0;
    let _ = writeln!(s, "\n## Points ({level:.0}% bootstrap intervals over prompts)\n");
    let mut header = "| method | λ |".to_string();
    let mut rule = "|---|---|".to_string();
    for o in &ev.objectives {
        let _ = write!(header, " {o} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{header} non-dominated |\n{rule}---|");
    for e in extras {
        for p in &e.points {
            let pref = p.pref.as_ref().map_or("–".to_string(), |l| fmt_vec(l));
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
    let _ = writeln!(s, "\n## Example responses (first prompt, first sample)\n");
    for x in &ev.examples {
        let short: String = x.response.chars().take(300).collect();
        let _ = writeln!(s, "- **{}** {} — _{}_ → {:?}", x.method, x.point, x.prompt, short);
    }
    s
}
