//! The report of a fixed evaluation, byte for byte: `report.md`, `report.json` and
//! `points.csv` must equal the committed copies under `tests/it/golden/`. They were recorded
//! from the report code before it moved onto `panacea_eval::compare` (commit "front report
//! golden"), so the refactor is shown to change no byte. To record again after an intended
//! change, run with `PANACEA_BLESS=1` and review the diff.

use panacea_eval::{Front, MethodInput};
use panacea_front::{write_report, Evaluation, Example};

use crate::support::{temp_dir, tiny_eval_config};

/// Per-prompt scores [K][P][D] of a front: point k, prompt p, objective d, from a fixed
/// formula (no RNG), so the input is the same on every machine.
fn per_prompt(k: usize, p: usize, shift: f64, tilt: f64) -> Vec<Vec<Vec<f64>>> {
    (0..k)
        .map(|i| {
            let t = i as f64 / (k - 1).max(1) as f64;
            (0..p)
                .map(|j| {
                    let noise = ((i * 7 + j * 3) % 5) as f64 * 0.01 - 0.02;
                    vec![shift + tilt * t + noise, shift + tilt * (1.0 - t) - noise * 0.5]
                })
                .collect()
        })
        .collect()
}

fn method(name: &str, prefs: bool, pp: Vec<Vec<Vec<f64>>>) -> MethodInput {
    let k = pp.len();
    let prefs = if prefs {
        (0..k)
            .map(|i| {
                let t = i as f64 / (k - 1).max(1) as f64;
                vec![t, 1.0 - t]
            })
            .collect()
    } else {
        Vec::new()
    };
    let points = panacea_eval::mean_front(&pp).expect("means");
    MethodInput {
        name: name.into(),
        front: Front { prefs, points, labels: vec!["harmless".into(), "positive".into()] },
        per_prompt: Some(pp),
    }
}

fn evaluation() -> Evaluation {
    let prompts: Vec<String> = (0..6).map(|i| format!("prompt {i}")).collect();
    let p = prompts.len();
    Evaluation {
        objectives: vec!["harmless".into(), "positive".into()],
        ranges: vec![(0.0, 1.0), (-1.0, 1.0)],
        methods: vec![
            method("base", false, per_prompt(1, p, 0.3, 0.0)),
            method("panacea", true, per_prompt(3, p, 0.4, 0.3)),
            method("RS", true, per_prompt(3, p, 0.35, 0.25)),
        ],
        baseline: vec![false, false, true],
        sources: vec![None, Some("runs/x/adapter".into()), Some("soup of a, b".into())],
        prompts,
        examples: vec![Example {
            method: "panacea".into(),
            point: "λ = (0.5, 0.5)".into(),
            prompt: "prompt 0".into(),
            response: "A fixed response.".into(),
        }],
        rows: 42,
        seconds: 1.5,
    }
}

#[test]
fn the_report_of_a_fixed_evaluation_is_byte_identical_to_the_recorded_one() {
    let cfg = tiny_eval_config(&["bootstrap.n_resamples=50"]);
    let out = temp_dir("report-golden");
    write_report(&evaluation(), &cfg, &out).expect("report written");
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden");
    for name in ["report.md", "report.json", "points.csv"] {
        let got = std::fs::read_to_string(out.join(name)).expect("written");
        let path = golden.join(name);
        if std::env::var_os("PANACEA_BLESS").is_some() {
            std::fs::write(&path, &got).expect("bless");
        }
        let want = std::fs::read_to_string(&path).expect("golden file");
        assert!(got == want, "{name} differs from {}:\n{got}", path.display());
    }
    std::fs::remove_dir_all(&out).ok();
}
