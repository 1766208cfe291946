//! eval-front tests that train with this binary's PPO, DPO and score-model loops (the
//! library's own tests, with a recording trainer, are in panacea-front's tests/it).

use std::path::Path;

use panacea_core::device::DeviceChoice;
use panacea_core::PreferenceSampler;
use panacea_dpo::DpoRunConfig;
use panacea_front::{train_baselines, Baseline, GoldScorer, Method, RunJob};
use panacea_lm::{ChatTemplate, Llama, LlamaConfig, Tokenizer};
use panacea_rlhf::config::TrainPpoConfig;
use panacea_run::Silent;
use tch::nn;

use crate::eval_front::{Args, CliTrainer};
use crate::{test_support, train_dpo, train_ppo};

fn cpu_trainer() -> CliTrainer {
    CliTrainer { device: Some(DeviceChoice::Cpu) }
}

/// Trains RS and DPS for the Panacea run `panacea` (S steps, K = 2) with the real loops and
/// checks: RS is two runs of S/2 steps, DPS three of S/3 steps; each member is a run of the
/// same job whose resolved config holds its fixed λ (read by `fixed_pref`); a second call
/// trains nothing and returns the same folders.
#[track_caller]
fn check_baselines(
    panacea: &Path,
    job: RunJob,
    (rs_step, dps_step): (&str, &str),
    fixed_pref: impl Fn(&Path) -> PreferenceSampler,
) {
    let which = [Baseline::Rs, Baseline::Dps];
    let b = train_baselines(panacea, &which, None, &mut cpu_trainer(), &mut Silent).expect("train");
    let soup = b.soup.expect("rs");
    assert_eq!(soup.adapters.len(), 2);
    for a in &soup.adapters {
        assert!(a.ends_with(rs_step), "{}", a.display());
    }
    let dps = b.dps.expect("dps");
    assert_eq!(dps.members.len(), 3);
    for (pref, adapter) in &dps.members {
        assert!(adapter.ends_with(dps_step), "{}", adapter.display());
        let run = adapter.parent().and_then(Path::parent).expect("run folder");
        assert_eq!(RunJob::from_manifest(run), Some(job));
        assert_eq!(
            fixed_pref(&run.join("config.yaml")),
            PreferenceSampler::Fixed { weights: pref.as_slice().to_vec() }
        );
    }
    let count = || std::fs::read_dir(panacea.join("baselines")).expect("ls").count();
    assert_eq!(count(), 5);
    let again =
        train_baselines(panacea, &which, None, &mut cpu_trainer(), &mut Silent).expect("reuse");
    assert_eq!(count(), 5, "a second --compare must reuse the finished runs");
    assert_eq!(again.soup.expect("rs").adapters, soup.adapters);
}

/// On the tiny PPO config (4 steps): RS trains K = 2 fixed-λ runs of 2 steps, DPS three of
/// 1 step, reused the second time. Needs the cached SmolLM2 tokenizer.
#[test]
fn baselines_train_fixed_preference_runs_at_equal_compute_and_are_reused() {
    let Some(root) = test_support::workspace_with_smollm2() else { return };
    let runs = std::env::temp_dir().join(format!("panacea-baselines-{}", std::process::id()));
    let args = train_ppo::Args::new_run(
        root.join("configs/tiny/ppo.yaml"),
        vec!["train.steps=4".into()],
        Some(DeviceChoice::Cpu),
        runs.clone(),
        "ppo".into(),
    );
    let panacea = train_ppo::train(args).expect("panacea run").run_dir;
    check_baselines(&panacea, RunJob::Ppo, ("step-000002", "step-000001"), |config| {
        let cfg: TrainPpoConfig = panacea_core::config::load_config(config, &[]).expect("config");
        assert!(!cfg.train.preference_per_row);
        cfg.preference
    });
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// The same for a Tchebycheff DPO run (the tiny DPO config on `tiny-random`, 4 steps): the
/// members are DPO runs, one shared λ per step, linear aggregation, and every logged step's λ
/// is the member's fixed one.
#[test]
fn dpo_baselines_train_fixed_preference_dpo_runs_at_equal_compute_and_are_reused() {
    let Some(root) = test_support::workspace_with_smollm2() else { return };
    let runs = std::env::temp_dir().join(format!("panacea-dpo-baselines-{}", std::process::id()));
    let panacea = train_dpo::train(train_dpo::Args::new_run(
        root.join("configs/tiny/dpo.yaml"),
        test_support::tiny_dpo_sets(&runs, &["train.steps=4"]),
        Some(DeviceChoice::Cpu),
        runs.clone(),
        "dpo".into(),
    ))
    .expect("panacea run")
    .run_dir;
    check_baselines(&panacea, RunJob::Dpo, ("step-000002", "step-000001"), |config| {
        let cfg: DpoRunConfig = panacea_core::config::load_config(config, &[]).expect("config");
        assert!(!cfg.train.preference_per_row);
        assert_eq!(cfg.aggregation, panacea_core::Aggregation::Linear);
        let PreferenceSampler::Fixed { weights } = &cfg.preference else {
            panic!("{:?}", cfg.preference)
        };
        let run = config.parent().expect("run");
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
        let logged: Vec<Vec<f64>> = metrics
            .lines()
            .filter_map(|l| {
                let j: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(vec![j["dpo/pref/helpful"].as_f64()?, j["dpo/pref/harmless"].as_f64()?])
            })
            .collect();
        assert_eq!(logged, vec![weights.clone(); cfg.train.steps as usize], "{}", run.display());
        cfg.preference
    });
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// A linear and a Tchebycheff tiny DPO run in one report with Rewarded Soups trained by the
/// DPO loop. `--latest-dpo-run` finds the Tchebycheff run (the newer), `--adapter` adds the
/// linear one; both get labels naming their aggregation; the runs' PKU objectives map to gold
/// scorers; `--compare rs` trains two fixed-λ DPO members of one step each under the latest
/// run; the report holds all four methods.
#[test]
fn dpo_runs_ls_and_tchebycheff_share_one_report_with_rewarded_soups() {
    let Some(root) = test_support::workspace_with_smollm2() else { return };
    tch::set_num_threads(1);
    let runs = std::env::temp_dir().join(format!("panacea-evalfront-dpo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let train = |name: &str, extra: &[&str]| {
        let args = train_dpo::Args::new_run(
            root.join("configs/tiny/dpo.yaml"),
            test_support::tiny_dpo_sets(&runs, extra),
            Some(DeviceChoice::Cpu),
            runs.clone(),
            name.into(),
        );
        train_dpo::train(args).expect("train-dpo").run_dir
    };
    // configs/tiny/dpo.yaml aggregates with Tchebycheff.
    let ls = train("dpo-ls", &["train.steps=2", "aggregation={kind: linear}"]);
    let tche = train("dpo-tche", &["train.steps=2"]);
    let ls_adapter = ls.join("checkpoints/step-000002");
    let out = runs.join("report");
    let args = Args {
        config: root.join("configs/tiny/eval.yaml"),
        overrides: vec![
            "grid={kind: grid2d, n: 2}".into(),
            "prompts.count=2".into(),
            "generation.max_new_tokens=4".into(),
            "generation.temperature=0".into(),
            "bootstrap.n_resamples=20".into(),
        ],
        device: Some(DeviceChoice::Cpu),
        dtype: None,
        adapters: vec![ls_adapter.clone()],
        labels: vec![],
        soups: vec![],
        soup_labels: vec![],
        latest_ppo_run: None,
        latest_dpo_run: Some(runs.clone()),
        compare: vec![Baseline::Rs],
        baseline_steps: Some(2),
        out: Some(out.clone()),
    };
    let job = args.job().expect("job");
    let mut planned = panacea_front::plan(&job, &mut cpu_trainer(), &mut Silent).expect("plan");
    assert_eq!(
        planned.config.objectives,
        [GoldScorer::Relevant { batch_size: 32 }, GoldScorer::Harmless],
        "PKU helpful → relevant, harmless → harmless"
    );
    let stamp = |run: &Path| run.file_name().expect("name").to_string_lossy().to_string();
    let labels: Vec<&str> = planned.methods.iter().map(Method::label).collect();
    let want_ls = format!("panacea DPO LS ({})", stamp(&ls));
    let want_tche = format!("panacea DPO Tche ({})", stamp(&tche));
    assert_eq!(labels, [want_ls.as_str(), want_tche.as_str(), "rewarded-soups"]);
    let Method::Adapter(latest) = &planned.methods[1] else { panic!("{:?}", planned.methods) };
    assert_eq!(latest.adapter, tche.join("checkpoints/step-000002"));
    let Method::Soup(soup) = &planned.methods[2] else { panic!("{:?}", planned.methods) };
    for a in &soup.adapters {
        assert!(a.starts_with(tche.join("baselines")), "{}", a.display());
        assert!(a.ends_with("checkpoints/step-000001"), "{}", a.display());
    }
    // Scored here by positive instead of relevant, so the test needs no MiniLM.
    planned.config.objectives = vec![GoldScorer::Positive, GoldScorer::Harmless];
    let cfg: DpoRunConfig =
        panacea_core::config::load_config(&tche.join("config.yaml"), &[]).expect("config");
    let base = train_dpo::load_base(&cfg, tch::Device::Cpu).expect("tiny base");
    let w = panacea_front::execute(&planned, &base, &out, "test", &mut Silent).expect("report");
    let names: Vec<&str> = w.report.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["base", &want_ls, &want_tche, "rewarded-soups"]);
    for m in &w.report.methods[1..] {
        assert_eq!(m.n_points, 2, "{}: one point per λ", m.method);
    }
    // Each Panacea run against the soup: HV and IP.
    assert_eq!(w.comparisons.len(), 4);
    assert!(out.join("report.md").is_file() && out.join("front.json").is_file());
    // A label taken twice is refused before anything is trained or evaluated.
    let twice = Args { labels: vec!["rewarded-soups".into()], ..args };
    let err = panacea_front::plan(&twice.job().expect("job"), &mut cpu_trainer(), &mut Silent)
        .err()
        .expect("duplicate label");
    assert!(format!("{err}").contains("--label"), "{err}");
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// A learned reward and a learned cost model as eval objectives: each scores rendered
/// prompt + response at the last token, the cost negated; a kind mismatch is refused.
#[test]
fn learned_score_models_are_objectives_with_costs_negated() {
    panacea_core::device::init_torch();
    let Ok(dir) = panacea_lm::resolve_model("smollm2-135m") else {
        eprintln!("SKIPPED: smollm2-135m tokenizer not cached (`cargo xtask test` fetches it)");
        return;
    };
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2).expect("tokenizer");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runs = std::env::temp_dir().join(format!("panacea-eval-rm-{}", std::process::id()));
    let args = crate::train_rm::Args::for_test(
        root.join("configs/tiny/rm.yaml"),
        vec![
            "train.epochs=1".into(),
            format!("data.path={}", root.join("data/tiny/pairs_generic.jsonl").display()),
        ],
        runs.clone(),
    );
    crate::train_rm::run(args).expect("train-rm");
    let rm = std::fs::read_dir(&runs).expect("runs").flatten().next().expect("run").path();
    // The score models' base: configs/tiny/rm.yaml's tiny-random body with init seed 1.
    let base_vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
    panacea_lm::init_random(&base_vs, 1);
    let scorer = |name: &str, cost: bool| {
        GoldScorer::ScoreModel { name: name.into(), path: rm.join(format!("score-{name}")), cost }
            .build(&tokenizer, &model, tch::Device::Cpu)
    };
    let (prompts, responses) = (["Hi there", "Tell me a joke"], ["Hello!", "No."]);
    let helpful = scorer("helpful", false).expect("reward model");
    let harmless = scorer("harmless", true).expect("cost model");
    assert!(scorer("harmless", false).is_err(), "a cost model read as a reward must fail");
    assert_eq!(helpful.name(), "helpful");
    let h = helpful.score(&prompts, &responses).expect("helpful scores");
    let c = harmless.score(&prompts, &responses).expect("harmless scores");
    // The same texts through the cost model directly: the scorer returns their negation.
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let (cm, _) =
        panacea_rlhf::score::load_score_model(&rm.join("score-harmless"), &model, &mut vs)
            .expect("load");
    let rows: Vec<Vec<i64>> = prompts
        .iter()
        .zip(&responses)
        .map(|(p, r)| {
            let mut ids = tokenizer
                .encode(&format!("{}{r}", ChatTemplate::default().user_prompt(p)))
                .expect("encode");
            ids.push(tokenizer.eos_id);
            ids
        })
        .collect();
    let (ids, mask) = panacea_rlhf::score::right_pad(&rows, tokenizer.pad_id, tch::Device::Cpu);
    let direct: Vec<f64> = Vec::try_from(
        tch::no_grad(|| panacea_rlhf::score::ScoreModel::end_scores(&cm, &ids, &mask))
            .to_kind(tch::Kind::Double),
    )
    .expect("direct");
    for (got, want) in c.iter().zip(&direct) {
        assert!((got + want).abs() < 1e-6, "cost {got} vs −{want}");
    }
    assert!(h.iter().all(|x| x.is_finite()) && h.len() == 2);
    std::fs::remove_dir_all(&runs).expect("clean up");
}
