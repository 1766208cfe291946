//! Whole jobs through the library calls: `train_ppo` and `train_score_models` on the tiny
//! configs (a random 2-layer base with the SmolLM2 tokenizer). They need the cached SmolLM2
//! tokenizer (`cargo xtask fetch-model smollm2-135m`); without it each test says so and checks
//! nothing else.

use std::path::{Path, PathBuf};

use panacea_core::config::load_config;
use panacea_core::device::DType;
use panacea_core::{seed_everything, StepPreference};
use panacea_rlhf::train::{build_trainer, load_policy, load_prompts, reward_sources, PromptCursor};
use panacea_rlhf::{train_ppo, train_score_models, RlhfError, TrainPpoConfig, TrainRmConfig};
use panacea_run::{Recorder, RunOptions, Silent, Trained};
use tch::{nn, Kind, Tensor};

/// The workspace root, when the SmolLM2 tokenizer is in the model cache; otherwise says the
/// test is skipped and returns None.
pub(crate) fn workspace_with_smollm2() -> Option<PathBuf> {
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!(
            "skipped: smollm2-135m is not in the model cache (`cargo xtask test` fetches it)"
        );
        return None;
    }
    panacea_core::device::init_torch();
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// A fresh scratch folder for one test.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-rlhf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

pub(crate) fn tiny_ppo(root: &Path, set: &[&str]) -> TrainPpoConfig {
    let mut sets: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    sets.push("device=cpu".into());
    load_config(&root.join("configs/tiny/ppo.yaml"), &sets).expect("tiny PPO config")
}

fn tiny_rm(root: &Path, set: &[String]) -> TrainRmConfig {
    let mut sets =
        vec![format!("data.train={}", root.join("data/tiny/pairs_generic.jsonl").display())];
    sets.extend(set.iter().cloned());
    load_config(&root.join("configs/tiny/rm.yaml"), &sets).expect("tiny RM config")
}

/// The `step` of every row of a run's metrics.jsonl, in order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
        .collect()
}

/// The learned-reward path end to end: `train_score_models` writes two score models,
/// `train_ppo` trains one step with them and leaves a checkpoint folder, one hypervolume point
/// and the final objective vectors.
#[test]
fn tiny_learned_reward_pipeline_runs_end_to_end() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("learned");
    let rm = train_score_models(&tiny_rm(&root, &[]), &RunOptions::new(&runs), &mut Silent)
        .expect("train-rm");
    assert!(!rm.interrupted);
    let sets = [
        format!("objectives.0.source.path={}", rm.run_dir.join("score-helpful").display()),
        format!("objectives.1.source.path={}", rm.run_dir.join("score-harmless").display()),
        "train.steps=1".into(),
        "train.eval_prompts=2".into(),
        "train.eval_every=1".into(),
        "train.hv_prompts=2".into(),
        "device=cpu".into(),
    ];
    let cfg: TrainPpoConfig =
        load_config(&root.join("configs/tiny/ppo-learned.yaml"), &sets).expect("config");
    let mut seen = Recorder::default();
    let t = train_ppo(&cfg, &RunOptions::new(&runs).named("ppo-learned"), &mut seen)
        .expect("train-ppo");
    assert_eq!((t.step, t.interrupted), (1, false));
    assert_eq!(seen.steps, [1]);
    assert_eq!(seen.checkpoints, [1]);
    for f in ["config.yaml", "command.txt", "manifest.json", "metrics.jsonl", "final_eval.json"] {
        assert!(t.run_dir.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(t.run_dir.join("metrics.jsonl")).expect("metrics");
    let hv: Vec<f64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["eval/hv"].as_f64())
        .collect();
    assert_eq!(hv.len(), 1, "one hypervolume point at step 1:\n{metrics}");
    assert!(hv[0].is_finite() && hv[0] >= 0.0);
    let ck = t.checkpoint.expect("checkpoint");
    assert!(ck.ends_with("checkpoints/step-000001"), "{}", ck.display());
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "critic.safetensors",
        "actor_optim.safetensors",
        "ppo_state.json",
        "trainer_state.json",
    ] {
        assert!(ck.join(f).is_file(), "checkpoint {f} missing");
    }
    let final_eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.run_dir.join("final_eval.json")).expect("final eval"),
    )
    .expect("json");
    for key in ["base", "e1", "e2"] {
        let v = final_eval[key].as_array().expect(key);
        assert_eq!(v.len(), 2, "{key}: {v:?}");
        assert!(v.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)), "{key}: {v:?}");
    }
    // The steering report: a 5-point grid, 2 × 2 vertex checks with intervals, and the
    // per-λ control of both objectives.
    let steering: panacea_eval::SteeringReport =
        serde_json::from_value(final_eval["steering"].clone()).expect("steering report");
    assert_eq!((steering.prefs.len(), steering.checks.len(), steering.control.len()), (5, 4, 2));
    for c in &steering.checks {
        let d = &c.difference;
        assert!(d.lower <= d.estimate && d.estimate <= d.upper, "{c:?}");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// Tchebycheff PPO through the whole job: the running ideal point is the element-wise maximum
/// of the batch estimates, saved with the checkpoint, and each step logs the adapter
/// diagnostics and the vertex rows' scores.
#[test]
fn tchebycheff_ppo_keeps_a_running_ideal_point_in_its_checkpoints() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("tchebycheff");
    let cfg = tiny_ppo(
        &root,
        &["aggregation={kind: tchebycheff}", "train.steps=2", "train.preference_per_row=true"],
    );
    assert_eq!(cfg.aggregation, panacea_core::Aggregation::Tchebycheff { ideal: vec![] });
    let t = train_ppo(&cfg, &RunOptions::new(&runs).named("cheb"), &mut Silent).expect("run");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.run_dir.join("checkpoints/step-000002/ppo_state.json"))
            .expect("state"),
    )
    .expect("json");
    let ideal: Vec<f64> = serde_json::from_value(state["ideal"].clone()).expect("ideal point");
    // The objectives are fractions of even and odd token ids (scale 1): the maximum batch mean
    // of each lies in [0, 1], and both cannot be 0 (every token is even or odd).
    assert_eq!(ideal.len(), 2);
    assert!(ideal.iter().all(|z| (0.0..=1.0).contains(z)) && ideal.iter().sum::<f64>() > 0.0);
    let metrics = std::fs::read_to_string(t.run_dir.join("metrics.jsonl")).expect("metrics");
    let rows: Vec<serde_json::Value> =
        metrics.lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    let train_rows: Vec<&serde_json::Value> =
        rows.iter().filter(|r| r.get("train/kl").is_some()).collect();
    assert_eq!(train_rows.len(), 2);
    let means: Vec<[f64; 2]> = train_rows
        .iter()
        .map(|r| {
            [
                r["train/score/even"].as_f64().expect("even"),
                r["train/score/odd"].as_f64().expect("odd"),
            ]
        })
        .collect();
    for i in 0..2 {
        let max = means.iter().map(|m| m[i]).fold(f64::NEG_INFINITY, f64::max);
        assert!((ideal[i] - max).abs() < 1e-9, "ideal {ideal:?}, batch means {means:?}");
    }
    for r in &train_rows {
        let share = r["diag/preference_grad_share"].as_f64().expect("grad share");
        assert!((0.0..=1.0).contains(&share), "{share}");
        assert!(r["diag/shared_strength"].as_f64().is_some_and(|x| x >= 0.0));
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// `dtype: bf16`: the base weights are bf16, one PPO step runs with finite losses, and
/// everything that trains stays f32: the policy adapter, the critic (adapter and value heads)
/// and both optimisers' moments.
#[test]
fn bf16_base_trains_with_f32_adapter_critic_and_optimiser() {
    let Some(root) = workspace_with_smollm2() else { return };
    let cfg = tiny_ppo(&root, &["dtype=bf16", "train.steps=1"]);
    assert_eq!(cfg.dtype, DType::Bf16);
    let (base_vs, policy, adapter_vs, tok, template) =
        load_policy(&cfg, tch::Device::Cpu).expect("policy");
    assert_eq!(policy.kind(), Kind::BFloat16);
    for (name, t) in base_vs.variables() {
        assert_eq!(t.kind(), Kind::BFloat16, "base variable {name}");
    }
    let (train_prompts, _, _) = load_prompts(&cfg, &tok, &template).expect("prompts");
    let sources = reward_sources(&cfg, &tok, &policy).expect("sources");
    let mut trainer = build_trainer(&cfg, &tok, policy, adapter_vs, sources).expect("trainer");
    let snapshot = |vs: &nn::VarStore| {
        let mut v: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let adapter_before = snapshot(&trainer.adapter_vs);
    let mut rng = seed_everything(cfg.seed);
    let batch = PromptCursor::new(train_prompts.len()).next_batch(
        &train_prompts,
        cfg.train.batch_size,
        &mut rng.data,
    );
    let prefs = cfg.preference.sample_rows(2, batch.len(), &mut rng.preference).expect("λ");
    let m = trainer.step(&batch, StepPreference::PerRow(&prefs), &mut rng).expect("bf16 step");
    for (what, x) in [("policy loss", m.policy_loss), ("value loss", m.value_loss), ("kl", m.kl)] {
        assert!(x.is_finite(), "{what} = {x}");
    }
    let adapter_after = snapshot(&trainer.adapter_vs);
    assert!(!adapter_after.is_empty());
    for (name, t) in adapter_after.iter().chain(&snapshot(&trainer.critic.vs)) {
        assert_eq!(t.kind(), Kind::Float, "trainable variable {name}");
    }
    let moved = adapter_before.iter().zip(&adapter_after).filter(|(a, b)| !a.1.equal(&b.1));
    assert!(moved.count() > 0, "the step changed no adapter tensor");
    for (name, t) in base_vs.variables() {
        assert_eq!(t.kind(), Kind::BFloat16, "base variable {name} after the step");
    }
    let dir = scratch("bf16");
    trainer.save_state(&dir).expect("save state");
    for f in ["actor_optim.safetensors", "critic_optim.safetensors", "critic.safetensors"] {
        let tensors = Tensor::read_safetensors(dir.join(f)).expect("read");
        assert!(!tensors.is_empty(), "{f} is empty");
        for (name, t) in tensors {
            assert!(
                matches!(t.kind(), Kind::Float | Kind::Int64 | Kind::Double),
                "{f}: {name} is {:?}",
                t.kind()
            );
        }
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The tiny config for 4 steps with checkpoints at 2 and 4 and one λ per row.
fn four_steps(root: &Path) -> TrainPpoConfig {
    tiny_ppo(root, &["train.steps=4", "train.save_every=2", "train.preference_per_row=true"])
}

/// Copies the run folder `from` into `to` as a run killed after logging every step of `from`
/// but before writing any checkpoint after step 2: config, manifest, all metric rows, and the
/// step-2 checkpoint only.
fn killed_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("checkpoints/step-000002")).expect("mkdir");
    for f in ["config.yaml", "manifest.json", "metrics.jsonl"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
    for e in std::fs::read_dir(from.join("checkpoints/step-000002")).expect("step 2").flatten() {
        std::fs::copy(e.path(), to.join("checkpoints/step-000002").join(e.file_name()))
            .expect("copy");
    }
}

/// A run killed after step 4 was logged but before its checkpoint, resumed from step 2: it
/// logs each step once (rows == steps) and ends on the same bits as the uninterrupted run.
#[test]
fn resumed_run_logs_each_step_once_and_matches_the_uninterrupted_one_bit_for_bit() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("resume");
    let cfg = four_steps(&root);
    let straight = train_ppo(&cfg, &RunOptions::new(&runs).named("straight"), &mut Silent)
        .expect("uninterrupted run")
        .run_dir;
    let killed = runs.join("killed");
    killed_copy(&straight, &killed);
    assert_eq!(logged_steps(&killed), [1, 2, 3, 4], "the killed run logged steps 3 and 4");
    let mut seen = Recorder::default();
    let resumed =
        train_ppo(&cfg, &RunOptions::new(&runs).resuming(&killed), &mut seen).expect("resume");
    assert_eq!(seen.steps, [3, 4], "the resumed run continued at step 3");
    assert_eq!((resumed.step, resumed.interrupted), (4, false));
    assert_eq!(logged_steps(&killed), [1, 2, 3, 4], "each step is logged once");
    for f in [
        "adapter_model.safetensors",
        "critic.safetensors",
        "actor_optim.safetensors",
        "critic_optim.safetensors",
        "ppo_state.json",
        "trainer_state.json",
    ] {
        let a = std::fs::read(straight.join("checkpoints/step-000004").join(f)).expect("a");
        let b = std::fs::read(killed.join("checkpoints/step-000004").join(f)).expect("b");
        assert!(a == b, "{f} differs between the uninterrupted and the resumed run");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// The stop flag ends a run after the current step with a checkpoint, and the run resumes
/// from there to its end, each step logged once.
#[test]
fn stop_flag_checkpoints_and_the_run_resumes_to_its_end() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("stop");
    let cfg = four_steps(&root);
    let opts = RunOptions::new(&runs).named("stopped");
    opts.stop.request();
    let stopped: Trained = train_ppo(&cfg, &opts, &mut Silent).expect("stopped run");
    assert_eq!((stopped.step, stopped.interrupted), (1, true));
    assert!(stopped.checkpoint.as_ref().is_some_and(|c| c.ends_with("step-000001")));
    let done = train_ppo(&cfg, &RunOptions::new(&runs).resuming(&stopped.run_dir), &mut Silent)
        .expect("resumed");
    assert_eq!((done.step, done.interrupted), (4, false));
    assert_eq!(logged_steps(&stopped.run_dir), [1, 2, 3, 4]);
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// Resuming with a setting that cannot change mid-run fails before training and names the
/// key; the steps may grow.
#[test]
fn resume_refuses_a_non_resumable_change_by_name() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("refuse");
    let cfg = tiny_ppo(&root, &["train.steps=2"]);
    let run = train_ppo(&cfg, &RunOptions::new(&runs), &mut Silent).expect("run").run_dir;
    let before = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    for (set, key) in [("seed=5", "`seed`"), ("optim.lr=0.5", "`optim.lr`")] {
        let changed = tiny_ppo(&root, &["train.steps=3", set]);
        let err = train_ppo(&changed, &RunOptions::new(&runs).resuming(&run), &mut Silent)
            .expect_err("a non-resumable change must fail");
        assert!(matches!(err, RlhfError::Run(_)), "{err:?}");
        assert!(err.to_string().contains(key), "{set}: {err}");
    }
    let after = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    assert_eq!(before, after, "a refused resume must not touch the metrics");
    let longer = tiny_ppo(&root, &["train.steps=3"]);
    let t = train_ppo(&longer, &RunOptions::new(&runs).resuming(&run), &mut Silent)
        .expect("more steps are a resumable change");
    assert_eq!(logged_steps(&t.run_dir), [1, 2, 3]);
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// Pairs whose two responses are identical carry no preference: train-rm drops them with a
/// warning that counts them, refuses a file made only of them, and names label keys that no
/// objective uses (a typo such as `helpfull`).
#[test]
fn score_models_refuse_identical_pairs_and_report_unknown_label_keys() {
    let Some(root) = workspace_with_smollm2() else { return };
    let dir = scratch("rm-identical");
    let good = std::fs::read_to_string(root.join("data/tiny/pairs_generic.jsonl")).expect("pairs");
    let mut rows: Vec<serde_json::Value> =
        good.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let n = rows.len();

    // Every pair identical: refused before anything is trained.
    let same: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["response_1"] = r["response_0"].clone();
            r.to_string()
        })
        .collect();
    let all_same = dir.join("same.jsonl");
    std::fs::write(&all_same, same.join("\n") + "\n").expect("write");
    let cfg = tiny_rm(&root, &[format!("data.train={}", all_same.display())]);
    let mut seen = Recorder::default();
    let err = train_score_models(&cfg, &RunOptions::new(dir.join("runs")), &mut seen)
        .expect_err("a file of identical pairs must fail");
    assert!(err.to_string().contains(&format!("{n} have identical responses")), "{err}");
    assert!(!dir.join("runs").exists(), "no run folder for a refused file");

    // One extra identical pair and one extra pair with a misspelt label key.
    let mut extra = rows[0].clone();
    extra["response_1"] = extra["response_0"].clone();
    let mut typo = rows[1].clone();
    typo["prefs"] = serde_json::json!({"helpfull": 0, "harmless": 0});
    rows.push(extra);
    rows.push(typo);
    let mixed = dir.join("mixed.jsonl");
    let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&mixed, text.join("\n") + "\n").expect("write");
    let cfg = tiny_rm(&root, &[format!("data.train={}", mixed.display()), "train.epochs=1".into()]);
    let mut seen = Recorder::default();
    train_score_models(&cfg, &RunOptions::new(dir.join("runs")), &mut seen).expect("train-rm");
    let warnings = seen.warnings.join("\n");
    assert!(
        warnings
            .contains(&format!("dropped 1 of {} pairs whose two responses are identical", n + 2)),
        "{warnings}"
    );
    assert!(warnings.contains("`helpfull` (1 pairs)"), "{warnings}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A score-model folder trained as a cost cannot be declared a reward objective.
#[test]
fn score_model_kind_must_match_the_objective() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("rm-kind");
    let rm = train_score_models(
        &tiny_rm(&root, &["train.epochs=1".into()]),
        &RunOptions::new(&runs),
        &mut Silent,
    )
    .expect("train-rm");
    let cost_dir = rm.run_dir.join("score-harmless");
    let loaded = load_policy(&tiny_ppo(&root, &["seed=1"]), tch::Device::Cpu).expect("policy");
    let err = panacea_rlhf::rollout::reward_source(
        "harmless",
        panacea_core::ObjectiveKind::Reward,
        &panacea_data::ScorerSpec::ScoreModel { path: cost_dir.clone() },
        &loaded.3,
        &loaded.1,
    )
    .err()
    .expect("a cost model read as a reward must fail");
    assert!(err.to_string().contains("trained as a Cost"), "{err}");
    let model = panacea_rlhf::LearnedScoreModel::load(&cost_dir, &loaded.1).expect("load");
    assert_eq!(model.meta.kind, panacea_core::ObjectiveKind::Cost);
    let vars = model.var_store().variables();
    assert!(!vars.is_empty() && vars.values().all(|t| !t.requires_grad()), "not frozen");
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// K = 3 end to end: configs/tiny/ppo-three.yaml trains two steps with a three-slot adapter and
/// ends with a steering report over the 6-point Das–Dennis grid: 3 objectives × 3 checks.
#[test]
fn three_objectives_train_and_end_with_a_six_point_steering_report() {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch("three");
    let cfg: TrainPpoConfig =
        load_config(&root.join("configs/tiny/ppo-three.yaml"), &["device=cpu".to_owned()])
            .expect("tiny three-objective config");
    assert_eq!((cfg.objectives.len(), cfg.adapter.n_objectives), (3, 3));
    let t = train_ppo(&cfg, &RunOptions::new(&runs).named("three"), &mut Silent).expect("run");
    assert_eq!((t.step, t.interrupted), (2, false));
    let final_eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.run_dir.join("final_eval.json")).expect("final eval"),
    )
    .expect("json");
    let r: panacea_eval::SteeringReport =
        serde_json::from_value(final_eval["steering"].clone()).expect("steering report");
    assert_eq!(r.objectives, ["even", "odd", "short"]);
    assert_eq!((r.prefs.len(), r.checks.len(), r.control.len()), (6, 9, 3));
    for key in ["e1", "e2", "e3", "base"] {
        assert_eq!(final_eval[key].as_array().map(Vec::len), Some(3), "{key}");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}
