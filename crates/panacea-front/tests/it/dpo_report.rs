//! A linear and a Tchebycheff tiny DPO run in one report with Rewarded Soups trained by the
//! DPO job.

use std::path::Path;

use panacea_data::ScorerSpec;
use panacea_front::{
    execute, plan, Baseline, FrontJob, FrontObjective, JobTrainer, Method, RunJob,
};
use panacea_run::{RunOptions, Silent};

use crate::support::{smollm2_available, temp_dir, tiny_dpo, tiny_eval_config};

/// The latest DPO run (the Tchebycheff one, newer) is found by panacea-run's rule, the linear
/// one is given as an adapter; both get labels naming their aggregation; the runs' PKU
/// objectives map to gold scorers; `rs` trains two fixed-λ DPO members of one step each
/// under the latest run; the report holds all four methods and Panacea-vs-RS verdicts.
#[test]
fn dpo_runs_ls_and_tchebycheff_share_one_report_with_rewarded_soups() {
    if !smollm2_available() {
        return;
    }
    tch::set_num_threads(1);
    let runs = temp_dir("dpo-report");
    let train = |name: &str, extra: &[&str]| {
        let cfg = tiny_dpo(&runs, extra);
        panacea_dpo::train_dpo(&cfg, &RunOptions::new(&runs).named(name), &mut Silent)
            .expect("train-dpo")
            .run_dir
    };
    // configs/tiny/dpo.yaml aggregates with Tchebycheff.
    let ls = train("dpo-ls", &["train.steps=2", "aggregation={kind: linear}"]);
    let tche = train("dpo-tche", &["train.steps=2"]);
    let config = tiny_eval_config(&[
        "grid={kind: grid2d, n: 2}",
        "prompts.count=2",
        "generation.max_new_tokens=4",
        "bootstrap.n_resamples=20",
    ]);
    let job = FrontJob {
        adapters: vec![ls.join("checkpoints/step-000002")],
        latest: Some((runs.clone(), RunJob::Dpo)),
        compare: vec![Baseline::Rs],
        baseline_steps: Some(2),
        ..FrontJob::new(config)
    };
    let mut trainer = JobTrainer::default();
    let mut planned = plan(&job, &mut trainer, &mut Silent).expect("plan");
    assert_eq!(
        planned.config.objectives,
        [
            FrontObjective::reward("helpful", ScorerSpec::Relevant { batch_size: 32 }),
            FrontObjective::reward("harmless", ScorerSpec::Harmless)
        ],
        "PKU helpful → relevant, harmless → harmless"
    );
    let stamp = |run: &Path| run.file_name().expect("name").to_string_lossy().to_string();
    let want_ls = format!("panacea DPO LS ({})", stamp(&ls));
    let want_tche = format!("panacea DPO Tche ({})", stamp(&tche));
    let labels: Vec<&str> = planned.methods.iter().map(Method::label).collect();
    assert_eq!(labels, [want_ls.as_str(), want_tche.as_str(), "rewarded-soups"]);
    let Method::Adapter(latest) = &planned.methods[1] else { panic!("{:?}", planned.methods) };
    assert_eq!(latest.adapter, tche.join("checkpoints/step-000002"));
    let Method::Soup(soup) = &planned.methods[2] else { panic!("{:?}", planned.methods) };
    for a in &soup.adapters {
        assert!(a.starts_with(tche.join("baselines")), "{}", a.display());
        assert!(a.ends_with("checkpoints/step-000001"), "{}", a.display());
    }
    // Scored here by positive instead of relevant, so the test needs no MiniLM.
    planned.config.objectives = vec![
        FrontObjective::reward("helpful", ScorerSpec::Positive),
        FrontObjective::reward("harmless", ScorerSpec::Harmless),
    ];
    let cfg: panacea_dpo::DpoRunConfig =
        panacea_core::config::load_config(&tche.join("config.yaml"), &[]).expect("config");
    let base = panacea_dpo::load_base(&cfg, tch::Device::Cpu).expect("tiny base");
    let out = runs.join("report");
    let w = execute(&planned, &base, &out, "test", &mut Silent).expect("report");
    let names: Vec<&str> = w.report.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["base", &want_ls, &want_tche, "rewarded-soups"]);
    for m in &w.report.methods[1..] {
        assert_eq!(m.n_points, 2, "{}: one point per λ", m.method);
    }
    // Each Panacea run against the soup: HV and IP.
    assert_eq!(w.comparisons.len(), 4);
    for name in ["report.md", "front.json", "config.yaml", "command.txt"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    // A label taken twice is refused before anything is trained or evaluated.
    let twice = FrontJob { labels: vec!["rewarded-soups".into()], ..job };
    let err = plan(&twice, &mut trainer, &mut Silent).expect_err("duplicate label");
    assert!(format!("{err}").contains("--label"), "{err}");
    let _ = std::fs::remove_dir_all(&runs);
}
