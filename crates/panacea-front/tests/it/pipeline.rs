//! The whole evaluation on the tiny-random base: an adapter, a soup and a DPS set against the
//! base, the report files, and the base-model check.

use panacea_core::PreferenceVector;
use panacea_front::{
    check_base_models, evaluate, write_report, AdapterSpec, DpsSpec, Method, SoupSpec,
};
use panacea_run::Silent;

use crate::support::{random_adapter, temp_dir, tiny_base, tiny_eval_config};

/// 2-point grid, 2 prompts, concise + positive; one adapter folder plus the base, a soup of
/// the adapter read at e_1 and e_2, and a DPS set whose members are the adapter at e_1 and e_2.
/// At a vertex the soup is ΔW(e_j) merged, so it reproduces the adapter's own point there
/// (merged = unmerged), and each DPS member reproduces the adapter's point at its λ — with
/// sampling on, since every (prompt, sample) row draws the same numbers in every method.
#[test]
fn tiny_pipeline_writes_a_complete_report() {
    let Some(base) = tiny_base(3) else { return };
    let cfg = tiny_eval_config(&[
        "objectives=[{name: concise, kind: reward, source: {kind: concise, c: 4}}, {name: positive, kind: reward, source: {kind: positive}}]",
        "grid={kind: grid2d, n: 2}",
        "prompts.count=2",
        "samples_per_prompt=1",
        "generation.max_new_tokens=6",
        "bootstrap.n_resamples=50",
    ]);
    let tmp = temp_dir("pipeline");
    let adapter = tmp.join("adapter");
    random_adapter(&base, &["concise", "positive"], 7, &adapter);
    let err = check_base_models(&[adapter.as_path()], "tiny", "another-hash")
        .expect_err("a different base must be refused");
    assert!(format!("{err}").contains("hint: use the base the adapter was trained on"), "{err}");
    let hash = panacea_core::checkpoint::hash_var_store(&base.base_vs).expect("hash");
    check_base_models(&[adapter.as_path()], "tiny", &hash).expect("same base");

    let prompts = cfg.load_prompts().expect("bundled prompts");
    assert_eq!(prompts.len(), 2);
    let e = |i| PreferenceVector::vertex(2, i).expect("vertex");
    let methods = [
        Method::Adapter(AdapterSpec { label: "panacea".into(), adapter: adapter.clone() }),
        Method::Soup(SoupSpec {
            label: "soup".into(),
            adapters: vec![adapter.clone(), adapter.clone()],
        }),
        // Listed against the grid's order ([0, 1] first).
        Method::Dps(DpsSpec {
            label: "dps".into(),
            members: vec![(e(0), adapter.clone()), (e(1), adapter.clone())],
        }),
    ];
    let ev = evaluate(&cfg, &base, &methods, &prompts, &mut Silent).expect("evaluation runs");
    // base: 2 prompts; adapter and soup: 2 λ × 2 prompts; DPS: 2 members × 2 prompts.
    assert_eq!(ev.rows, 2 + 4 + 4 + 4);
    let [_, panacea, soup, dps] = &ev.methods[..] else { panic!("{} methods", ev.methods.len()) };
    assert_eq!(panacea.front.prefs, [[0.0, 1.0], [1.0, 0.0]]);
    assert_eq!(soup.front.prefs, panacea.front.prefs);
    assert_eq!(dps.front.prefs, [[1.0, 0.0], [0.0, 1.0]], "DPS at its members' λ");
    let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9);
    for (a, b) in panacea.front.points.iter().zip(&soup.front.points) {
        assert!(close(a, b), "soup {b:?} vs adapter {a:?}");
    }
    assert!(close(&dps.front.points[0], &panacea.front.points[1]));
    assert!(close(&dps.front.points[1], &panacea.front.points[0]));
    // The base weights were restored: the base model still gives the base's point.
    let again = evaluate(&cfg, &base, &[], &prompts, &mut Silent).expect("base again");
    assert_eq!(again.methods[0].front.points, ev.methods[0].front.points);

    let out = tmp.join("run");
    let w = write_report(&ev, &cfg, &out).expect("report written");
    assert_eq!(w.report.methods.len(), 4);
    assert_eq!(w.report.methods[0].method, "base");
    assert_eq!(w.report.methods[0].n_points, 1);
    assert_eq!(w.report.methods[1].n_points, 2, "one point per λ");
    for name in [
        "front.json",
        "report.md",
        "report.json",
        "points.csv",
        "front.png",
        "front.svg",
        "report.html",
    ] {
        let meta = std::fs::metadata(out.join(name)).expect(name);
        assert!(meta.len() > 0, "{name} is empty");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("read"))
            .expect("report.json parses");
    assert_eq!(json["reference_point"].as_array().map(Vec::len), Some(2));
    for m in json["report"]["methods"].as_array().expect("methods") {
        assert!(m["hypervolume"].as_f64().is_some_and(f64::is_finite), "{m}");
    }
    assert_eq!(json["methods"][1]["points"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["methods"][1]["points"][0]["pref"], serde_json::json!([0.0, 1.0]));
    assert!(json["methods"][0]["points"][0]["pref"].is_null(), "the base has no λ");
    // Scores lie in the scorers' ranges: concise ≤ r_max = 4, positive in [−1, 1].
    for m in &ev.methods {
        for p in &m.front.points {
            assert!(p[0] <= 4.0, "concise {p:?}");
            assert!((-1.0..=1.0).contains(&p[1]), "positive {p:?}");
        }
    }
    // The soup reproduces the adapter at both grid points: each front covers the other
    // (C = 1) with ε+ = 0.
    let pairs = json["dominance"].as_array().expect("dominance");
    assert_eq!(pairs.len(), 4 * 3, "every ordered pair of distinct methods");
    let over_soup = pairs
        .iter()
        .find(|d| d["method"] == "panacea" && d["over"] == "soup")
        .expect("panacea over soup");
    assert_eq!(over_soup["coverage"], 1.0);
    assert!(over_soup["epsilon_additive"].as_f64().expect("ε").abs() < 1e-9);
    assert!(w.markdown.contains("## Dominance between fronts"));
    // Panacea against each baseline: HV and IP differences with paired intervals; the fronts
    // are the same points, so every difference is 0 with a [0, 0] interval.
    assert_eq!(w.comparisons.len(), 4, "HV and IP against the soup and DPS");
    for d in &w.comparisons {
        assert_eq!(d.method, "panacea");
        assert!(d.difference.estimate.abs() < 1e-9, "{d:?}");
        assert!(w.markdown.contains(&d.verdict()), "{}", d.verdict());
    }
    assert!(w.markdown.contains("## Verdicts: Panacea against the baselines"));
    assert_eq!(json["comparisons"].as_array().map(Vec::len), Some(4));
    // Per-λ control per method with preferences (in the JSON and the Markdown).
    assert_eq!(w.report.methods[1].lambda_control.len(), 2);
    assert!(w.markdown.contains("Per-λ control"));
    let csv = std::fs::read_to_string(out.join("points.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1 + 1 + 3 * 2, "header + base + 2 points × 3 methods:\n{csv}");
    // The interactive front: report.json's view and the one embedded in report.html are the
    // same, with each grid λ's point and its sample answer (the evaluation's examples).
    let view: panacea_eval::FrontView =
        serde_json::from_value(json["front_view"].clone()).expect("front_view parses");
    assert_eq!(view.objectives, ["concise", "positive"]);
    let steered = view.steered().expect("the adapter's front");
    assert_eq!(steered.name, "panacea");
    assert_eq!(steered.points.len(), 2, "one point per grid λ");
    for (p, (pref, value)) in
        steered.points.iter().zip(panacea.front.prefs.iter().zip(&panacea.front.points))
    {
        assert_eq!(p.pref.as_ref(), Some(pref));
        assert_eq!(&p.value, value);
    }
    let answers: Vec<&str> = view
        .methods
        .iter()
        .flat_map(|m| &m.points)
        .map(|p| p.sample.as_ref().expect("a sample per point").answer.as_str())
        .collect();
    let examples: Vec<&str> = ev.examples.iter().map(|x| x.response.as_str()).collect();
    assert_eq!(answers, examples, "base, 2 adapter, 2 soup and 2 DPS points");
    assert_eq!(
        view.methods.iter().map(|m| m.baseline).collect::<Vec<_>>(),
        [false, false, true, true]
    );
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    // Self-contained: no script, style sheet or image is fetched.
    for fetch in ["<script src", "<link", "<img", "@import", "fetch("] {
        assert!(!html.contains(fetch), "report.html loads something: {fetch}");
    }
    let embedded = html.split("const VIEW = ").nth(1).and_then(|t| t.split(";\n").next());
    let embedded: panacea_eval::FrontView =
        serde_json::from_str(embedded.expect("embedded view")).expect("the embedded view parses");
    assert_eq!(embedded, view);
    // The page draws one circle per grid λ for the adapter (headless Chromium, when installed).
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/page_check.sh");
    let check = std::process::Command::new("bash")
        .arg(&script)
        .args(["--front".as_ref(), out.join("report.html").as_os_str(), "2".as_ref()])
        .arg(tmp.join("chromium"))
        .output()
        .expect("runs bash");
    let stderr = String::from_utf8_lossy(&check.stderr);
    if check.status.code() == Some(2) {
        eprintln!("SKIPPED the browser check: {}", stderr.trim());
    } else {
        assert!(check.status.success(), "{} failed: {stderr}", script.display());
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(stdout.contains("front ok: 2 grid points"), "{stdout}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// DPS is reported at its members' λ, one point per member, however fine the grid: on an
/// 11-point grid a 3-member DPS has 3 distinct points, so its spacing and sparsity come from
/// 3 points, not from 11 points with copies.
#[test]
fn dps_is_reported_at_its_member_preferences() {
    let Some(base) = tiny_base(3) else { return };
    let cfg = tiny_eval_config(&[
        "objectives=[{name: concise, kind: reward, source: {kind: concise, c: 4}}, {name: positive, kind: reward, source: {kind: positive}}]",
        "grid={kind: grid2d, n: 11}",
        "prompts.count=1",
        "generation.max_new_tokens=4",
        "bootstrap.n_resamples=20",
    ]);
    let tmp = temp_dir("dps");
    let adapter = tmp.join("adapter");
    random_adapter(&base, &["concise", "positive"], 7, &adapter);
    let members: Vec<(PreferenceVector, std::path::PathBuf)> =
        panacea_core::PreferenceSampler::DasDennis { h: 2 }
            .grid(2)
            .expect("lattice")
            .into_iter()
            .map(|l| (l, adapter.clone()))
            .collect();
    let prefs: Vec<Vec<f64>> = members.iter().map(|(l, _)| l.as_slice().to_vec()).collect();
    let dps = Method::Dps(DpsSpec { label: "dps".into(), members });
    let prompts = cfg.load_prompts().expect("prompts");
    let ev = evaluate(&cfg, &base, &[dps], &prompts, &mut Silent).expect("evaluate");
    assert_eq!(ev.rows, 1 + 3);
    assert_eq!(ev.methods[1].front.prefs, prefs);
    assert_eq!(ev.methods[1].front.points.len(), 3);
    let _ = std::fs::remove_dir_all(&tmp);
}
