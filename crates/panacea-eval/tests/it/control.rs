//! Per-λ control (Spearman ρ between λ_i and objective i), by hand.

use panacea_eval::{
    lambda_control, lambda_control_with_ci, spearman, BootstrapOptions, Front, FrontReport,
    MethodInput, ReportOptions,
};

#[test]
fn spearman_hand_cases() {
    let x = [0.0, 0.25, 0.5, 0.75, 1.0];
    // Perfectly monotone, whatever the spacing: ranks equal.
    assert_eq!(spearman(&x, &[0.1, 0.2, 5.0, 7.0, 100.0]).unwrap(), Some(1.0));
    assert_eq!(spearman(&x, &[3.0, 2.0, 1.0, 0.0, -9.0]).unwrap(), Some(-1.0));
    // Ties: y = 1, 2, 2, 3 has ranks 1, 2.5, 2.5, 4 (mean 2.5); x ranks 1..4. Deviations
    // (−1.5, −0.5, 0.5, 1.5) and (−1.5, 0, 0, 1.5): Σdxdy = 4.5, Σdx² = 5, Σdy² = 4.5, so
    // ρ = 4.5 / sqrt(5 · 4.5) = sqrt(0.9) = 0.9486832980505138.
    let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 2.0, 3.0]).unwrap().unwrap();
    assert!((r - 0.9_f64.sqrt()).abs() < 1e-15, "{r}");
    // Ties on both sides (a 3-objective grid repeats λ_i): x ranks 1.5, 1.5, 3, y ranks 1, 2, 3:
    // dx = (−0.5, −0.5, 1), dy = (−1, 0, 1): Σdxdy = 1.5, Σdx² = 1.5, Σdy² = 2 → sqrt(0.75).
    let r = spearman(&[0.0, 0.0, 1.0], &[1.0, 2.0, 3.0]).unwrap().unwrap();
    assert!((r - 0.75_f64.sqrt()).abs() < 1e-15, "{r}");
    assert_eq!(spearman(&x, &[1.0; 5]).unwrap(), None, "a constant side has no ρ");
    assert!(spearman(&x, &[1.0]).is_err());
    assert!(spearman(&[1.0], &[1.0]).is_err());
    assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
}

fn grid_front(f2: [f64; 5]) -> Front {
    Front {
        prefs: (0..5).map(|k| vec![k as f64 / 4.0, 1.0 - k as f64 / 4.0]).collect(),
        // Objective 1 rises with λ_1; objective 2 as given.
        points: (0..5).map(|k| vec![k as f64, f2[k]]).collect(),
        labels: vec!["helpful".into(), "harmless".into()],
    }
}

#[test]
fn lambda_control_per_objective_and_in_the_report() {
    // λ_2 falls along the grid, so objective 2 rising along it is anti-control (−1) and falling
    // is control (+1).
    let f = grid_front([4.0, 3.0, 2.0, 1.0, 0.0]);
    assert_eq!(lambda_control(&f.prefs, &f.points).unwrap(), vec![Some(1.0), Some(1.0)]);
    let g = grid_front([0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(lambda_control(&g.prefs, &g.points).unwrap(), vec![Some(1.0), Some(-1.0)]);
    // Per-prompt samples: every prompt keeps the order, so every resample gives ρ = 1.
    let pp: Vec<Vec<Vec<f64>>> = f
        .points
        .iter()
        .map(|p| (0..6).map(|j| vec![p[0] + 0.01 * j as f64, p[1] - 0.02 * j as f64]).collect())
        .collect();
    let opts = BootstrapOptions { n_resamples: 100, level: 0.9, seed: 2 };
    let names = f.objective_names();
    let c = lambda_control_with_ci(&names, &f.prefs, &f.points, Some(&pp), &opts).unwrap();
    let ci = c[1].ci.as_ref().unwrap();
    assert_eq!((c[1].objective.as_str(), ci.lower, ci.upper), ("harmless", 1.0, 1.0));
    let methods = vec![
        MethodInput { name: "panacea".into(), front: f.clone(), per_prompt: Some(pp) },
        MethodInput {
            name: "base".into(),
            front: Front { prefs: vec![], points: vec![vec![1.0, 1.0]], labels: vec![] },
            per_prompt: None,
        },
    ];
    let report = FrontReport::build(&methods, &ReportOptions::default()).unwrap();
    assert_eq!(report.methods[0].lambda_control.len(), 2);
    assert!(report.methods[1].lambda_control.is_empty(), "no preferences, no control");
    let md = report.to_markdown();
    assert!(md.contains("| panacea | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["methods"][0]["lambda_control"][0]["spearman"], 1.0);
}
