//! Three objectives end to end: the Das–Dennis grid, 3-D hypervolume, the scatter-plot
//! matrix, per-point and per-λ intervals, a 3-ingredient soup and a 6-member DPS.

use panacea_data::ScorerSpec;
use panacea_front::{
    evaluate, write_report, AdapterSpec, DpsSpec, FrontConfig, FrontObjective, Method, SoupSpec,
};
use panacea_run::Silent;

use crate::support::{random_adapter, temp_dir, tiny_base, tiny_eval_config};

fn three_objective_config(h: usize) -> FrontConfig {
    tiny_eval_config(&[
        "objectives=[{name: concise, kind: reward, source: {kind: concise, c: 4}}, {name: positive, kind: reward, source: {kind: positive}}, {name: harmless, kind: reward, source: {kind: harmless}}]",
        &format!("grid={{kind: das_dennis, h: {h}}}"),
        "prompts.count=2",
        "generation.max_new_tokens=5",
        "bootstrap.n_resamples=30",
    ])
}

#[test]
fn a_three_objective_front_is_evaluated_and_reported() {
    let Some(base) = tiny_base(4) else { return };
    let cfg = three_objective_config(2);
    assert_eq!(
        cfg.objectives,
        [
            FrontObjective::reward("concise", ScorerSpec::Concise { r_max: 4.0, c: 4.0 }),
            FrontObjective::reward("positive", ScorerSpec::Positive),
            FrontObjective::reward("harmless", ScorerSpec::Harmless)
        ]
    );
    // Das–Dennis with K = 3, H = 2: C(4, 2) = 6 points, lexicographic.
    let grid = cfg.grid_points().expect("grid");
    assert_eq!(grid.len(), 6);
    let tmp = temp_dir("k3");
    let adapter = tmp.join("adapter");
    random_adapter(&base, &["concise", "positive", "harmless"], 9, &adapter);
    let methods = [
        Method::Adapter(AdapterSpec { label: "panacea".into(), adapter: adapter.clone() }),
        Method::Soup(SoupSpec { label: "rs".into(), adapters: vec![adapter.clone(); 3] }),
        Method::Dps(DpsSpec {
            label: "dps".into(),
            members: grid.iter().take(3).map(|l| (l.clone(), adapter.clone())).collect(),
        }),
    ];
    let prompts = cfg.load_prompts().expect("prompts");
    let ev = evaluate(&cfg, &base, &methods, &prompts, &mut Silent).expect("evaluate");
    assert_eq!(ev.rows, 2 + 6 * 2 + 6 * 2 + 3 * 2);
    for m in &ev.methods[1..] {
        assert!(m.front.points.iter().all(|p| p.len() == 3), "{}", m.name);
        assert!(m.front.prefs.iter().all(|l| l.len() == 3), "{}", m.name);
    }
    let out = tmp.join("report");
    let w = write_report(&ev, &cfg, &out).expect("report");
    assert_eq!(w.report.dim, 3);
    assert_eq!(w.report.reference_point.len(), 3);
    for m in &w.report.methods {
        assert!(
            m.hypervolume.is_finite() && m.hypervolume >= 0.0,
            "{}: {}",
            m.method,
            m.hypervolume
        );
    }
    // Per-λ control: one Spearman entry per objective for every method with preferences.
    for m in &w.report.methods[1..] {
        assert_eq!(m.lambda_control.len(), 3, "{}", m.method);
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("read"))
            .expect("parses");
    let point = &json["methods"][1]["points"][0];
    assert_eq!(point["mean"].as_array().map(Vec::len), Some(3));
    assert_eq!(point["ci"].as_array().map(Vec::len), Some(3), "an interval per objective");
    for name in ["front.png", "front.svg"] {
        assert!(std::fs::metadata(out.join(name)).expect(name).len() > 0, "{name}");
    }
    assert_eq!(w.comparisons.len(), 4, "HV and IP of panacea against rs and dps");
    let _ = std::fs::remove_dir_all(&tmp);
}
