//! Paired bootstrap differences between methods over the same prompts, and their verdicts.

use panacea_eval::{
    bootstrap_difference, hypervolume, inner_product, BootstrapOptions, DifferenceMetric, Front,
    FrontReport, MethodInput, RefPoint, ReportOptions, Sense,
};

/// Five λ on a line, 20 prompts: point k, prompt p is (k, 4 − k) plus a prompt effect that is
/// large (±0.6) compared with the shift used below, shared by every front point.
fn per_prompt(shift: f64) -> Vec<Vec<Vec<f64>>> {
    (0..5)
        .map(|k| {
            (0..20)
                .map(|p| {
                    let e = ((p * 7) % 13) as f64 / 10.0 - 0.6;
                    vec![k as f64 + e - shift, 4.0 - k as f64 + 0.5 * e - shift]
                })
                .collect()
        })
        .collect()
}

fn prefs() -> Vec<Vec<f64>> {
    (0..5).map(|k| vec![k as f64 / 4.0, 1.0 - k as f64 / 4.0]).collect()
}

const OPTS: BootstrapOptions = BootstrapOptions { n_resamples: 400, level: 0.95, seed: 7 };

fn hv(front: &[Vec<f64>]) -> panacea_eval::Result<f64> {
    Ok(hypervolume(front, Sense::Max, &RefPoint::Explicit(vec![-3.0, -3.0]))?.value)
}

#[test]
fn a_method_shifted_down_is_clearly_worse_with_the_right_sign() {
    let (a, b) = (per_prompt(0.0), per_prompt(0.3));
    let d = bootstrap_difference(&a, &b, hv, hv, &OPTS).unwrap();
    // Every point of B is A's point minus 0.3 in both objectives, on every resample: HV(A) > HV(B).
    assert!(d.estimate > 0.0 && d.lower > 0.0 && d.lower <= d.estimate, "{d:?}");
    let r = bootstrap_difference(&b, &a, hv, hv, &OPTS).unwrap();
    assert!(r.upper < 0.0, "{r:?}");
    assert_eq!((r.estimate, r.lower, r.upper), (-d.estimate, -d.upper, -d.lower));
    // IP is linear: IP(A) − IP(B) = 0.3·(λ₁ + λ₂) = 0.3 on every resample, because the same
    // prompts are drawn for both methods; unshared resamples would spread it by the prompt
    // effect (±0.6).
    let l = prefs();
    let ip =
        bootstrap_difference(&a, &b, |f| inner_product(&l, f), |f| inner_product(&l, f), &OPTS)
            .unwrap();
    for v in [ip.estimate, ip.lower, ip.upper] {
        assert!((v - 0.3).abs() < 1e-12, "{ip:?}");
    }
}

#[test]
fn identical_methods_give_exactly_zero_and_the_interval_is_seeded() {
    let a = per_prompt(0.0);
    let d = bootstrap_difference(&a, &a.clone(), hv, hv, &OPTS).unwrap();
    assert_eq!((d.estimate, d.lower, d.upper), (0.0, 0.0, 0.0), "shared resamples cancel");
    let b = per_prompt(0.05);
    let x = bootstrap_difference(&a, &b, hv, hv, &OPTS).unwrap();
    assert_eq!(x, bootstrap_difference(&a, &b, hv, hv, &OPTS).unwrap(), "same seed");
    let y = bootstrap_difference(&a, &b, hv, hv, &BootstrapOptions { seed: 8, ..OPTS }).unwrap();
    assert_eq!(x.estimate, y.estimate);
    assert_ne!((x.lower, x.upper), (y.lower, y.upper), "another seed, other resamples");
    let fewer: Vec<Vec<Vec<f64>>> = b.iter().map(|rows| rows[..10].to_vec()).collect();
    let err = bootstrap_difference(&a, &fewer, hv, hv, &OPTS).unwrap_err().to_string();
    assert!(err.contains("20 prompts") && err.contains("10") && err.contains("hint"), "{err}");
}

fn method(name: &str, shift: f64) -> MethodInput {
    let pp = per_prompt(shift);
    let points = panacea_eval::mean_front(&pp).unwrap();
    MethodInput {
        name: name.into(),
        front: Front { prefs: prefs(), points, labels: vec![] },
        per_prompt: Some(pp),
    }
}

#[test]
fn the_report_compares_every_method_with_the_first_and_says_so() {
    let methods = vec![method("RS", 0.2), method("Panacea", 0.0), method("copy", 0.2)];
    let options = ReportOptions {
        reference: RefPoint::Explicit(vec![-3.0, -3.0]),
        bootstrap: OPTS,
        ..Default::default()
    };
    let report = FrontReport::build(&methods, &options).unwrap();
    let d = &report.differences;
    assert_eq!(d.len(), 4, "HV and IP for Panacea and copy against RS");
    assert_eq!((d[0].method.as_str(), d[0].baseline.as_str()), ("Panacea", "RS"));
    assert_eq!(d[0].metric, DifferenceMetric::Hypervolume);
    assert_eq!(d[1].metric, DifferenceMetric::InnerProduct);
    assert!(d[0].is_clear() && d[1].is_clear());
    assert!((d[1].difference.estimate - 0.2).abs() < 1e-12);
    let v = d[0].verdict();
    assert!(
        v.starts_with("Panacea's HV exceeds RS's by ")
            && v.ends_with("(95 % paired bootstrap over 20 prompts)"),
        "{v}"
    );
    assert!(!d[2].is_clear());
    assert_eq!(
        d[2].verdict(),
        "no clear difference between copy's and RS's HV: +0.0000 [+0.0000, +0.0000] \
         (95 % paired bootstrap over 20 prompts)"
    );
    let md = report.to_markdown();
    assert!(md.contains("Differences against RS") && md.contains(&format!("- {v}\n")), "{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["differences"][1]["metric"], "inner_product");
    assert_eq!(json["differences"][0]["n_prompts"], 20);
    // Reversed roles: the verdict says "below" with magnitudes.
    let rev = FrontReport::build(&methods[..2].iter().rev().cloned().collect::<Vec<_>>(), &options)
        .unwrap();
    let v = rev.differences[0].verdict();
    assert!(v.starts_with("RS's HV is below Panacea's by "), "{v}");
    // One method, or methods without per-prompt samples: nothing to compare.
    assert!(FrontReport::build(&methods[..1], &options).unwrap().differences.is_empty());
    let bare: Vec<MethodInput> =
        methods.iter().map(|m| MethodInput { per_prompt: None, ..m.clone() }).collect();
    assert!(FrontReport::build(&bare, &options).unwrap().differences.is_empty());
}

/// The tables as `panacea eval-front` built them before they moved here (its `dominance`,
/// `write_report` and `markdown`, verbatim in substance): the oracle for "same bytes".
mod eval_front_before {
    use std::fmt::Write as _;

    use panacea_eval::{
        bootstrap_ci, epsilon_additive, igd_plus, nondominated, nondominated_mask, spacing,
        BootstrapOptions, ConfidenceInterval, Duplicates, MethodInput, Sense, SpacingVariant,
    };
    use serde::Serialize;

    #[derive(Debug, Serialize)]
    pub(crate) struct PointRow {
        pref: Option<Vec<f64>>,
        mean: Vec<f64>,
        ci: Vec<ConfidenceInterval>,
        nondominated_in_method: bool,
    }

    #[derive(Debug, Serialize)]
    pub(crate) struct MethodExtra {
        method: String,
        adapter: Option<String>,
        igd_plus_vs_union: f64,
        spacing_l1_nminus1: f64,
        spacing_libmoon_l2_n: f64,
        points: Vec<PointRow>,
    }

    #[derive(Debug, Serialize)]
    pub(crate) struct Dominance {
        method: String,
        over: String,
        coverage: f64,
        epsilon_additive: f64,
    }

    pub(crate) fn dominance(methods: &[MethodInput]) -> Vec<Dominance> {
        let mut out = Vec::new();
        for a in methods {
            for b in methods.iter().filter(|b| b.name != a.name) {
                let (pa, pb) = (&a.front.points, &b.front.points);
                out.push(Dominance {
                    method: a.name.clone(),
                    over: b.name.clone(),
                    coverage: panacea_eval::coverage(pa, pb, Sense::Max).unwrap(),
                    epsilon_additive: epsilon_additive(pa, pb, Sense::Max).unwrap(),
                });
            }
        }
        out
    }

    pub(crate) fn extras(
        methods: &[MethodInput],
        sources: &[Option<String>],
        boot: &BootstrapOptions,
    ) -> (Vec<Vec<f64>>, Vec<MethodExtra>) {
        let sense = Sense::Max;
        let union: Vec<Vec<f64>> =
            methods.iter().flat_map(|m| m.front.points.iter().cloned()).collect();
        let union_nd = nondominated(&union, sense, Duplicates::KeepOne).unwrap();
        let mut extras = Vec::new();
        for (m, src) in methods.iter().zip(sources) {
            let f = &m.front;
            let mask = nondominated_mask(&f.points, sense, Duplicates::KeepAll).unwrap();
            let pp = m.per_prompt.as_ref().unwrap();
            let mut points = Vec::new();
            for (k, p) in f.points.iter().enumerate() {
                let one = [pp[k].clone()];
                let ci = (0..p.len())
                    .map(|j| bootstrap_ci(&one, |fr| Ok(fr[0][j]), boot))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
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
                igd_plus_vs_union: igd_plus(&f.points, &union_nd, sense).unwrap(),
                spacing_l1_nminus1: spacing(&f.points, SpacingVariant::L1Nminus1).unwrap(),
                spacing_libmoon_l2_n: spacing(&f.points, SpacingVariant::L2N).unwrap(),
                points,
            });
        }
        (union_nd, extras)
    }

    fn fmt_vec(v: &[f64]) -> String {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
        format!("({})", parts.join(", "))
    }

    pub(crate) fn tables(
        methods: &[MethodInput],
        objectives: &[String],
        level: f64,
        extras: &[MethodExtra],
        dominance: &[Dominance],
    ) -> String {
        let mut s = String::new();
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
        let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
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
        let level = level * 100.0;
        let _ = writeln!(s, "\n## Points ({level:.0}% bootstrap intervals over prompts)\n");
        let mut header = "| method | λ |".to_string();
        let mut rule = "|---|---|".to_string();
        for o in objectives {
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
        s
    }
}

#[test]
fn dominance_details_and_tables_are_the_bytes_eval_front_wrote() {
    use panacea_eval::{
        details_markdown, dominance, dominance_markdown, method_details, points_markdown,
    };
    // A base point without preferences, a line front and a shifted copy with a dominated point.
    let base = MethodInput {
        name: "base".into(),
        front: Front { prefs: vec![], points: vec![vec![1.1, 1.9]], labels: vec![] },
        per_prompt: Some(vec![(0..20).map(|p| vec![1.0 + 0.01 * p as f64, 1.9]).collect()]),
    };
    let mut dominated = method("RS", 0.4);
    dominated.front.points[2] = vec![0.5, 0.5];
    let methods = vec![base, method("Panacea", 0.0), dominated];
    let sources = vec![None, Some("runs/x/checkpoints/step-000040".to_string()), None];
    let names = vec!["helpful".to_string(), "harmless".to_string()];
    let boot = BootstrapOptions { n_resamples: 200, level: 0.9, seed: 3 };

    let (union_old, extras_old) = eval_front_before::extras(&methods, &sources, &boot);
    let dom_old = eval_front_before::dominance(&methods);
    let (union_new, extras_new) = method_details(&methods, &sources, Sense::Max, &boot).unwrap();
    let dom_new = dominance(&methods, Sense::Max).unwrap();
    assert_eq!(union_new, union_old);
    let json = |v: &dyn erased::Json| v.json();
    assert_eq!(json(&extras_new), json(&extras_old));
    assert_eq!(json(&dom_new), json(&dom_old));
    let list: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
    let new = format!(
        "{}{}{}",
        details_markdown(&extras_new),
        dominance_markdown(&list, &dom_new),
        points_markdown(&names, boot.level, &extras_new)
    );
    assert_eq!(new, eval_front_before::tables(&methods, &names, boot.level, &extras_old, &dom_old));
    assert!(new.contains("| A \\ B | base | Panacea | RS |"), "{new}");
}

/// Serialising either side's structs to one comparable form.
mod erased {
    pub(crate) trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string_pretty(self).unwrap()
        }
    }
}

/// Resamples run in parallel, each from its own seed: the intervals of a seed are the same,
/// bit for bit, on 1 (in order, one after another), 2 and 5 threads.
#[test]
fn intervals_are_the_same_for_a_seed_on_any_number_of_threads() {
    let (a, b) = (per_prompt(0.0), per_prompt(0.3));
    let intervals = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| {
            let ci = panacea_eval::bootstrap_ci(&a, hv, &OPTS).expect("ci");
            let diff = bootstrap_difference(&a, &b, hv, hv, &OPTS).expect("difference");
            [ci.lower, ci.upper, diff.lower, diff.upper].map(f64::to_bits)
        })
    };
    let one = intervals(1);
    assert_eq!(intervals(2), one);
    assert_eq!(intervals(5), one);
    let other = panacea_eval::bootstrap_ci(&a, hv, &BootstrapOptions { seed: 8, ..OPTS });
    assert_ne!(other.expect("ci").lower.to_bits(), one[0], "another seed, other resamples");
}
