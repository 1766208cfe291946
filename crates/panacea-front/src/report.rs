//! The report of one evaluation: the metrics (panacea-eval's [`FrontReport`] plus IGD+ against
//! the union, both spacing variants, per-point bootstrap intervals, dominance between fronts,
//! paired differences of each Panacea method against each baseline) written as `report.json`,
//! `report.md`, `points.csv`, `front.json`, `front.png`, `front.svg` and `report.html` (the
//! interactive front, [`panacea_eval::FrontView`]: hovering a point shows its λ and the sample
//! answer kept for it; `report.json` holds the same view under `front_view`, which
//! `panacea serve --report` reads). The per-method details,
//! dominance and their tables are panacea-eval's (`panacea_eval::compare`); this file adds the
//! evaluation's own header, the verdicts against baselines and the example responses.

use std::fmt::Write as _;
use std::path::Path;

use panacea_core::PreferenceSampler;
use panacea_eval::{
    details_markdown, differences_vs_first, dominance, dominance_markdown, method_details,
    plot_fronts, points_markdown, BootstrapOptions, Dominance, Front, FrontReport, FrontView,
    MethodDetail, PairedDifference, PlotOptions, RefPoint, ReportOptions, SampleAnswer, Sense,
    ViewMethod, ViewPoint,
};
use serde::Serialize;

use crate::config::FrontConfig;
use crate::error::{io, Result};
use crate::evaluate::Evaluation;

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
    methods: Vec<MethodDetail>,
    generated_rows: usize,
    seconds: f64,
    front_view: &'a FrontView,
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
    let (union_nd, details) = method_details(&ev.methods, &ev.sources, sense, &boot)?;
    let dominance = dominance(&ev.methods, sense)?;
    let comparisons = comparisons(ev, &report.reference_point, &boot)?;
    let markdown = markdown(ev, cfg, &report, &details, &dominance, &comparisons);
    let view = front_view(ev);
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
        methods: details,
        dominance: &dominance,
        comparisons: &comparisons,
        generated_rows: ev.rows,
        seconds: ev.seconds,
        front_view: &view,
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
    write("report.html", &view.html(&format!("eval-front: {}", cfg.model))?)?;
    Ok(Written { report, comparisons, markdown })
}

/// The interactive view of the evaluation: every method's points with their λ, each with the
/// example answer kept for it (the first prompt's first sample; the evaluation keeps one per
/// point, in point order, per method).
pub fn front_view(ev: &Evaluation) -> FrontView {
    let methods = ev
        .methods
        .iter()
        .zip(&ev.baseline)
        .map(|(m, &baseline)| {
            let mut samples = ev.examples.iter().filter(|x| x.method == m.name);
            let points = m
                .front
                .points
                .iter()
                .enumerate()
                .map(|(i, value)| ViewPoint {
                    pref: m.front.prefs.get(i).cloned(),
                    value: value.clone(),
                    sample: samples.next().map(|x| SampleAnswer {
                        prompt: x.prompt.clone(),
                        answer: x.response.clone(),
                    }),
                })
                .collect();
            ViewMethod { name: m.name.clone(), baseline, points }
        })
        .collect();
    FrontView { objectives: ev.objectives.clone(), methods }
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
    details: &[MethodDetail],
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
    s.push_str(&details_markdown(details));
    let names: Vec<&str> = ev.methods.iter().map(|m| m.name.as_str()).collect();
    s.push_str(&dominance_markdown(&names, dominance));
    s.push_str(&points_markdown(&ev.objectives, cfg.bootstrap.level, details));
    let _ = writeln!(s, "\n## Example responses (first prompt, first sample)\n");
    for x in &ev.examples {
        let short: String = x.response.chars().take(300).collect();
        let _ = writeln!(s, "- **{}** {} — _{}_ → {:?}", x.method, x.point, x.prompt, short);
    }
    s
}
