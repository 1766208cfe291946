//! Reports (JSON, CSV, Markdown, the `panacea metrics` listing) and plots (PNG, SVG).

use std::path::PathBuf;

use panacea_eval::{
    all_metrics, plot_fronts, BootstrapOptions, Front, FrontReport, MethodInput, PlotOptions,
    RefPoint, ReportOptions, Sense,
};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-eval-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn line_front(shift: f64) -> Front {
    let k = 5;
    Front {
        prefs: (0..k).map(|i| vec![i as f64 / 4.0, 1.0 - i as f64 / 4.0]).collect(),
        points: (0..k).map(|i| vec![i as f64 + shift, 4.0 - i as f64 + shift]).collect(),
        labels: vec!["helpful".into(), "harmless".into()],
    }
}

#[test]
fn all_metrics_json_has_the_documented_keys() {
    let pts = line_front(0.0).points;
    let m =
        all_metrics(&pts, Sense::Max, &RefPoint::Explicit(vec![-1.0, -1.0]), None, false).unwrap();
    // Staircase of (0,4),(1,3),(2,2),(3,1),(4,0) against (−1,−1): unit-wide columns of heights
    // 5, 4, 3, 2, 1 → 15.
    assert_eq!(m.hypervolume, 15.0);
    let v = serde_json::to_value(&m).unwrap();
    for key in [
        "hypervolume",
        "reference_point",
        "n_points",
        "n_nondominated",
        "dim",
        "spacing",
        "sparsity",
        "r2_exact",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["reference_point"], serde_json::json!([-1.0, -1.0]));
    assert_eq!(v["n_nondominated"], 5);
    let text = m.to_text();
    assert!(text.contains("hypervolume") && text.contains("spacing.l1_nminus1"), "{text}");
}

#[test]
fn front_report_markdown_json_csv() {
    let per_prompt: Vec<Vec<Vec<f64>>> = line_front(0.5)
        .points
        .iter()
        .map(|p| {
            (0..8).map(|j| vec![p[0] + 0.1 * (j % 3) as f64, p[1] - 0.1 * (j % 2) as f64]).collect()
        })
        .collect();
    let methods = vec![
        MethodInput {
            name: "panacea".into(),
            front: line_front(0.5),
            per_prompt: Some(per_prompt),
        },
        MethodInput { name: "rewarded soups".into(), front: line_front(0.0), per_prompt: None },
    ];
    let opts = ReportOptions {
        bootstrap: BootstrapOptions { n_resamples: 50, level: 0.95, seed: 1 },
        ..Default::default()
    };
    let report = FrontReport::build(&methods, &opts).unwrap();
    // Shared auto reference point from the union: min over both = 0, range 4.5 → 0 − 0.225.
    assert_eq!(report.reference_point, vec![-0.225, -0.225]);
    assert!(report.methods[0].hypervolume > report.methods[1].hypervolume);
    assert_eq!(report.methods[1].inner_product, Some(3.0));
    assert!(report.methods[0].ci.contains_key("hypervolume"));
    let md = report.to_markdown();
    assert!(
        md.contains("| panacea |") && md.contains("| rewarded soups |") && md.contains('['),
        "{md}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["methods"].as_array().unwrap().len(), 2);
    let csv = FrontReport::points_csv(&methods);
    assert!(csv.starts_with("method,k,pref_1,pref_2,helpful,harmless\n"), "{csv}");
    assert_eq!(csv.lines().count(), 11);
}

#[test]
fn plots_2d_png_svg_and_3d_matrix() {
    let dir = tmp_dir("plots");
    let fronts = vec![
        ("panacea".to_string(), line_front(0.5)),
        ("rewarded soups".to_string(), line_front(0.0)),
    ];
    let opts = PlotOptions {
        title: "HH front".into(),
        reference_point: Some(vec![-0.5, -0.5]),
        ..Default::default()
    };
    for name in ["front2d.png", "front2d.svg"] {
        let path = dir.join(name);
        plot_fronts(&path, &fronts, &opts).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 5_000, "{} is only {len} bytes", path.display());
    }
    let svg = std::fs::read_to_string(dir.join("front2d.svg")).unwrap();
    assert!(
        svg.contains("λ=(0.25,0.75)") && svg.contains("reference point"),
        "labels missing from the SVG"
    );
    let f3 = Front {
        prefs: vec![],
        points: (0..6).map(|i| vec![i as f64, 5.0 - i as f64, ((i * 3) % 5) as f64]).collect(),
        labels: vec!["a".into(), "b".into(), "c".into()],
    };
    let path = dir.join("front3d.png");
    plot_fronts(
        &path,
        &[("m".to_string(), f3)],
        &PlotOptions { reference_point: Some(vec![-1.0; 3]), ..Default::default() },
    )
    .unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 5_000);
    assert!(plot_fronts(&dir.join("x.gif"), &fronts, &opts).is_err());
}

#[test]
fn a_reference_point_that_no_point_dominates_fails_unless_allowed() {
    let pts = line_front(0.0).points; // (0,4) … (4,0), maximised
                                      // (5, 5) is better than every point: none dominates it, HV would silently be 0.
    let r = RefPoint::Explicit(vec![5.0, 5.0]);
    let err = all_metrics(&pts, Sense::Max, &r, None, false).unwrap_err();
    assert!(
        matches!(&err, panacea_eval::EvalError::EmptyHypervolume { n_points: 5, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("[5.0, 5.0]") && msg.contains("--allow-empty"), "{msg}");
    let m = all_metrics(&pts, Sense::Max, &r, None, true).unwrap();
    assert_eq!((m.hypervolume, m.n_contributing), (0.0, 0));
    assert_eq!(
        m.warnings,
        vec![panacea_eval::MetricWarning::EmptyHypervolume { reference_point: vec![5.0, 5.0] }]
    );
    assert!(m.to_text().contains("warning"), "{}", m.to_text());
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["warnings"][0]["kind"], "empty_hypervolume");
    // One contributing point is enough: no warning.
    let ok =
        all_metrics(&pts, Sense::Max, &RefPoint::Explicit(vec![3.5, -1.0]), None, false).unwrap();
    assert_eq!((ok.n_contributing, ok.warnings.len()), (1, 0));
}

#[test]
fn two_objective_plots_are_unchanged() {
    // tests/data/plots/front2d.svg was written by the plotting code before three-objective
    // fronts got their own layout; 2-D drawing must still produce exactly those bytes.
    let dir = tmp_dir("plots-2d-golden");
    let fronts = vec![
        ("panacea".to_string(), line_front(0.5)),
        ("rewarded soups".to_string(), line_front(0.0)),
    ];
    let opts = PlotOptions {
        title: "HH front".into(),
        reference_point: Some(vec![-0.5, -0.5]),
        ..Default::default()
    };
    let path = dir.join("front2d.svg");
    plot_fronts(&path, &fronts, &opts).unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/plots/front2d.svg");
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(&golden).unwrap(),
        "{} differs from {}",
        path.display(),
        golden.display()
    );
}

#[test]
fn three_objective_fronts_are_three_pairwise_projections() {
    let dir = tmp_dir("plots-3d");
    let n = 6;
    let f3 = Front {
        prefs: vec![],
        points: (0..n).map(|i| vec![i as f64, 5.0 - i as f64, ((i * 3) % 5) as f64]).collect(),
        labels: vec!["helpful".into(), "harmless".into(), "concise".into()],
    };
    let g3 = Front {
        points: f3.points.iter().map(|p| vec![p[0], p[1] + 1.0, p[2]]).collect(),
        ..f3.clone()
    };
    let fronts = vec![("panacea".to_string(), f3), ("soups".to_string(), g3)];
    let opts = PlotOptions { reference_point: Some(vec![-1.0; 3]), ..Default::default() };
    let svg_path = dir.join("front3d.svg");
    plot_fronts(&svg_path, &fronts, &opts).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains(r#"width="900" height="700""#), "the requested size");
    // Three panels of 2 fronts × 6 points, plus one legend marker per front.
    assert_eq!(svg.matches("<circle").count(), 3 * 2 * n + 2, "{svg}");
    // Each objective is on an axis of exactly two of the three projections.
    // (plotters writes each text element's content on its own line.)
    let text = |s: &str| format!(">\n{s}\n</text>");
    for name in ["helpful", "harmless", "concise"] {
        assert_eq!(svg.matches(&text(name)).count(), 2, "{name}");
    }
    assert!(svg.contains(&text("soups")) && svg.contains(&text("reference point")), "legend");
    let png_path = dir.join("front3d.png");
    plot_fronts(&png_path, &fronts, &opts).unwrap();
    let png = std::fs::read(&png_path).unwrap();
    // PNG signature, then the IHDR chunk's width and height (big-endian u32 at bytes 16..24).
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 900);
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 700);
}
