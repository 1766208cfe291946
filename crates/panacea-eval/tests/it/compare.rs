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
