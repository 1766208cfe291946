//! The whole job, [`train_dpo`], on the tiny config with the `tiny-random` base (2 layers,
//! D = 64, the SmolLM2 tokenizer; skipped with a message when the tokenizer is not in the model
//! cache): run folder and metric keys, resume after a kill, the NaN guard, the stop flag, the
//! job check on resume, and the config vocabulary.

use std::path::{Path, PathBuf};

use panacea_core::config::{load_config, parse_config};
use panacea_dpo::job::{interleave_by_prompt, split_by_prompt};
use panacea_dpo::{resolve_data_path, train_dpo, DpoError, DpoRunConfig};
use panacea_run::{Manifest, Recorder, RunDir, RunError, RunOptions, Silent};
use serde_json::Value;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh temporary folder for one test.
pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-dpo-job-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `configs/tiny/dpo.yaml` on `tiny-random`, the batch in one forward, no evaluation pairs, the
/// reference cache inside `runs`, one libtorch thread; then `extra`. None (test skipped) when
/// the SmolLM2 tokenizer is missing.
pub(crate) fn tiny_config(runs: &Path, extra: &[&str]) -> Option<DpoRunConfig> {
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!("skipped: the smollm2-135m tokenizer is not in the model cache");
        return None;
    }
    panacea_core::device::init_torch();
    let mut sets = vec![
        "model=tiny-random".to_owned(),
        "dpo.micro_batch_size=0".to_owned(),
        "data.eval=null".to_owned(),
        "threads=1".to_owned(),
        format!("ref_cache.dir={}", runs.join("ref-cache").display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let path = workspace().join("configs/tiny/dpo.yaml");
    let mut cfg: DpoRunConfig = load_config(&path, &sets).expect("tiny config");
    cfg.config_dir = Some(workspace().join("configs/tiny"));
    Some(cfg)
}

pub(crate) fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn steps_of(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["step"].as_u64().expect("step")).collect()
}

/// A metrics row without its timings (which differ between any two runs) and without
/// `dpo/ref_from_cache` (true once an earlier run filled the shared reference cache).
fn without_timings(row: &Value) -> Value {
    let mut row = row.clone();
    row.as_object_mut()
        .expect("object")
        .retain(|k, _| !k.starts_with("time/") && k != "dpo/ref_from_cache");
    row
}

/// Every file of a folder, by name, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| {
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read"))
        })
        .collect();
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_run_writes_its_folder_metrics_evaluation_and_checkpoint() {
    let runs = temp_dir("folder");
    // With the tiny evaluation pairs: a base evaluation at step 0 and one after the last step.
    let eval = workspace().join("data/tiny/pairs_pku.jsonl");
    let eval = format!("data.eval={}", eval.display());
    let Some(cfg) = tiny_config(&runs, &["train.steps=1", &eval]) else { return };
    let mut seen = Recorder::default();
    let trained =
        train_dpo(&cfg, &RunOptions::new(&runs).named("folder"), &mut seen).expect("train-dpo");
    assert!(!trained.interrupted);
    assert_eq!(trained.step, 1);
    let ckpt = trained.checkpoint.clone().expect("a checkpoint");
    assert!(ckpt.ends_with("checkpoints/step-000001"), "{}", ckpt.display());
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "optim.safetensors",
        "dpo_state.json",
        "trainer_state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f} missing in {}", ckpt.display());
    }
    let run = &trained.run_dir;
    assert_eq!(Manifest::read(run).expect("manifest").job, "train-dpo");
    assert!(run.join("dpo_data.json").is_file() && run.join("config.yaml").is_file());
    assert_eq!(seen.steps, [1]);
    assert_eq!(seen.checkpoints, [1]);
    assert!(seen.messages.iter().any(|m| m.starts_with("train pairs: ")), "{:?}", seen.messages);

    let rows = metrics(run);
    assert_eq!(steps_of(&rows), [0, 1, 1], "base evaluation, the step, the last evaluation");
    let has = |row: &Value, key: &str| row.get(key).and_then(Value::as_f64).is_some();
    for key in ["eval/base/ranking_accuracy/helpful", "eval/hv"] {
        assert!(has(&rows[0], key), "{key} in {}", rows[0]);
    }
    for key in [
        "dpo/loss",
        "dpo/loss/helpful",
        "dpo/accuracy/harmless",
        "dpo/pref/helpful",
        "dpo/margin",
        "dpo/reward/response_0",
        "dpo/grad_norm",
        "dpo/lr",
        "time/step_ms",
    ] {
        assert!(has(&rows[1], key), "{key} in {}", rows[1]);
    }
    // λ is on the simplex, and the first step of a fresh adapter has the loss log 2 (σ = s = 0:
    // the policy is the reference, so every implicit reward is 0).
    let pref = rows[1]["dpo/pref/helpful"].as_f64().expect("λ")
        + rows[1]["dpo/pref/harmless"].as_f64().expect("λ");
    assert!((pref - 1.0).abs() < 1e-9, "λ sums to {pref}");
    let loss = rows[1]["dpo/loss/helpful"].as_f64().expect("loss");
    assert!((loss - std::f64::consts::LN_2).abs() < 1e-5, "first-step loss {loss}");
    for tag in ["helpful", "harmless", "mid"] {
        for key in ["accuracy/helpful", "ranking_accuracy/harmless", "loss/helpful"] {
            assert!(has(&rows[2], &format!("eval/e_{tag}/{key}")), "e_{tag}/{key} in {}", rows[2]);
        }
    }
    let hv = rows[2]["eval/hv"].as_f64().expect("hv");
    assert!((0.0..=1.0).contains(&hv), "accuracy hypervolume {hv}");
    // The steering report over the 6 held-out pairs (labelled in both dimensions): a 5-point
    // grid, base and grid means are ranking accuracies (multiples of 1/6), 4 vertex checks.
    let final_eval: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("final_eval.json")).expect("final_eval.json"),
    )
    .expect("json");
    let report: panacea_eval::SteeringReport =
        serde_json::from_value(final_eval["steering"].clone()).expect("steering report");
    assert_eq!((report.prompts, report.prefs.len(), report.checks.len()), (6, 5, 4));
    for v in report.means.iter().flatten().chain(&report.base) {
        assert!((v * 6.0 - (v * 6.0).round()).abs() < 1e-9, "{v} is not a multiple of 1/6");
    }
    assert!(
        seen.messages.iter().any(|m| m.starts_with("steering on 6 held-out")),
        "{:?}",
        seen.messages
    );
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// K = 3 end to end: configs/tiny/dpo-three.yaml trains on `tiny-random`; its third objective is
/// labelled by no pair, so the steering report is skipped with a reason instead of failing.
#[test]
fn three_objectives_train_and_say_why_the_steering_report_is_skipped() {
    let runs = temp_dir("three");
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!("skipped: the smollm2-135m tokenizer is not in the model cache");
        return;
    }
    panacea_core::device::init_torch();
    let sets = vec![
        "model=tiny-random".to_owned(),
        "threads=1".to_owned(),
        format!("ref_cache.dir={}", runs.join("ref-cache").display()),
    ];
    let path = workspace().join("configs/tiny/dpo-three.yaml");
    let mut cfg: DpoRunConfig = load_config(&path, &sets).expect("tiny three-objective config");
    cfg.config_dir = Some(workspace().join("configs/tiny"));
    assert_eq!(cfg.k(), 3);
    let mut seen = Recorder::default();
    let t = train_dpo(&cfg, &RunOptions::new(&runs).named("three"), &mut seen).expect("train-dpo");
    assert_eq!((t.step, t.interrupted), (2, false));
    assert!(
        seen.messages.iter().any(|m| m.starts_with("steering report skipped: 0 held-out pairs")),
        "{:?}",
        seen.messages
    );
    std::fs::remove_dir_all(&runs).expect("clean up");
}

#[test]
fn a_killed_run_resumes_with_one_metrics_row_per_step_and_the_same_numbers() {
    let runs = temp_dir("resume");
    let Some(cfg) = tiny_config(&runs, &["train.steps=3", "train.save_every=1"]) else { return };
    let straight = train_dpo(&cfg, &RunOptions::new(&runs).named("straight"), &mut Silent)
        .expect("three steps")
        .run_dir;
    // A process killed after logging step 3 but before its checkpoint left this behind.
    let killed = runs.join("killed");
    copy_dir(&straight, &killed);
    std::fs::remove_dir_all(killed.join("checkpoints/step-000003")).expect("drop checkpoint 3");
    assert_eq!(steps_of(&metrics(&killed)), [1, 2, 3]);

    let mut seen = Recorder::default();
    let resumed =
        train_dpo(&cfg, &RunOptions::new(&runs).resuming(&killed), &mut seen).expect("resume");
    assert_eq!((resumed.step, resumed.interrupted), (3, false));
    assert_eq!(seen.steps, [3], "only step 3 runs again");
    let (a, b) = (metrics(&straight), metrics(&killed));
    assert_eq!(steps_of(&b), [1, 2, 3], "one row per step");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(without_timings(x), without_timings(y), "same numbers after resume");
    }
    assert_eq!(
        files(&straight.join("checkpoints/step-000003")),
        files(&killed.join("checkpoints/step-000003")),
        "the resumed checkpoint is byte-identical"
    );
    let log = std::fs::read_to_string(killed.join("resume.jsonl")).expect("resume.jsonl");
    assert!(log.contains("\"from_step\":2"), "{log}");
    std::fs::remove_dir_all(&runs).expect("clean up");
}

#[test]
fn a_resume_with_another_job_is_refused_naming_both_jobs() {
    let runs = temp_dir("jobs");
    // A DPO run folder with a checkpoint, as train-dpo leaves it (no model needed for the check).
    let path = {
        let run = RunDir::create(&runs, "dpo", "seed: 0\n", "test").expect("create");
        run.write_manifest(&Manifest::now("train-dpo", "cpu", 0)).expect("manifest");
        run.save_checkpoint(1, &1u64, |_| Ok::<(), RunError>(())).expect("checkpoint");
        run.path().to_owned()
    };
    let err = RunDir::resume(&path, "train-ppo", &Value::Null, &Value::Null, "", "test")
        .expect_err("the PPO job must refuse a DPO run");
    let text = err.to_string();
    assert!(matches!(err, RunError::WrongJob { .. }), "{text}");
    assert!(text.contains("train-dpo") && text.contains("train-ppo"), "{text}");

    // And train-dpo refuses a PPO run before loading anything (its config is not a DPO config;
    // the manifest names the job).
    let ppo = {
        let run = RunDir::create(&runs, "ppo", "ppo: {}\n", "test").expect("create");
        run.write_manifest(&Manifest::now("train-ppo", "cpu", 0)).expect("manifest");
        run.path().to_owned()
    };
    panacea_core::device::init_torch();
    let path = workspace().join("configs/tiny/dpo.yaml");
    let cfg: DpoRunConfig = load_config(&path, &[]).expect("tiny config");
    let err = train_dpo(&cfg, &RunOptions::new(&runs).resuming(&ppo), &mut Silent)
        .expect_err("train-dpo must refuse a PPO run");
    let text = err.to_string();
    assert!(matches!(err, DpoError::Run(RunError::WrongJob { .. })), "{text}");
    assert!(text.contains("train-dpo") && text.contains("train-ppo"), "{text}");
    std::fs::remove_dir_all(&runs).expect("clean up");
}

#[test]
fn a_diverging_run_stops_at_the_first_non_finite_step_and_saves_nothing_non_finite() {
    // lr = 1e30: step 1 moves the adapter by ~1e30 per entry (still finite in f32), so step 2's
    // forward overflows. Before the guard this run "succeeded" with NaN losses from step 2 on
    // and NaN checkpoints.
    let runs = temp_dir("nan");
    let Some(cfg) = tiny_config(&runs, &["optim.lr=1e30", "train.steps=6", "train.save_every=1"])
    else {
        return;
    };
    let err = train_dpo(&cfg, &RunOptions::new(&runs).named("nan"), &mut Silent)
        .expect_err("a NaN run must fail");
    let text = err.to_string();
    let DpoError::NonFinite { step, quantity, value, .. } = &err else {
        panic!("expected a non-finite error, got {text}")
    };
    assert_eq!(*step, 2, "{text}");
    assert!(!value.is_finite(), "{text}");
    assert!(text.contains("step 2") && text.contains(quantity.as_str()), "{text}");
    assert!(text.contains("optim.lr"), "the hint names the key: {text}");

    let run = std::fs::read_dir(&runs)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").is_file())
        .expect("the run folder");
    assert_eq!(steps_of(&metrics(&run)), [1], "only the finite step is logged");
    let ckpts: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .expect("checkpoints")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ckpts, ["step-000001"], "no checkpoint of the failed step");
    let tensors = tch::Tensor::read_safetensors(
        run.join("checkpoints/step-000001/adapter_model.safetensors"),
    )
    .expect("adapter");
    for (name, t) in tensors {
        assert!(bool::try_from(t.isfinite().all()).expect("bool"), "{name} is not finite");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}

#[test]
fn the_stop_flag_ends_the_run_after_one_step_with_a_checkpoint() {
    let runs = temp_dir("stop");
    let Some(cfg) = tiny_config(&runs, &["train.steps=4", "train.save_every=0"]) else { return };
    let opts = RunOptions::new(&runs).named("stop");
    opts.stop.request();
    let trained = train_dpo(&cfg, &opts, &mut Silent).expect("train-dpo");
    assert!(trained.interrupted);
    assert_eq!(trained.step, 1);
    assert!(trained.checkpoint.expect("checkpoint").ends_with("checkpoints/step-000001"));
    assert_eq!(steps_of(&metrics(&trained.run_dir)), [1]);
    std::fs::remove_dir_all(&runs).expect("clean up");
}

#[test]
fn bundled_configs_resolve_to_the_values_they_had_before_the_shared_vocabulary() {
    let root = workspace();
    // The three-objective configs parse with K = 3 everywhere.
    for file in ["configs/dpo-three.yaml", "configs/tiny/dpo-three.yaml"] {
        let c: DpoRunConfig = load_config(&root.join(file), &[]).expect(file);
        assert_eq!((c.k(), c.adapter.n_objectives), (3, 3), "{file}");
    }
    let default: DpoRunConfig =
        load_config(&root.join("configs/dpo-default.yaml"), &[]).expect("dpo-default");
    // configs/dpo-default.yaml before the rename: dpo.lr 2e-3, dpo.max_grad_norm 1.0,
    // dpo.warmup_steps 0, dpo.aggregation linear, train.per_pair_preference false.
    assert_eq!(default.optim.lr, 2.0e-3);
    assert_eq!(default.optim.max_grad_norm, 1.0);
    assert_eq!(default.optim.warmup_ratio, 0.0);
    assert_eq!(default.optim.weight_decay, 0.0);
    assert_eq!(default.aggregation, panacea_core::Aggregation::Linear);
    assert!(!default.train.preference_per_row);
    assert_eq!(
        (default.train.steps, default.train.save_every, default.train.eval_every),
        (120, 40, 0)
    );
    let tiny: DpoRunConfig = load_config(&root.join("configs/tiny/dpo.yaml"), &[]).expect("tiny");
    assert_eq!(tiny.optim.lr, 1.0e-3);
    assert_eq!(tiny.optim.max_grad_norm, 1.0, "the old DPO default");
    assert_eq!(tiny.aggregation, panacea_core::Aggregation::tchebycheff_zero(2));
    assert_eq!(tiny.dpo.micro_batch_size, 1);
    // The trainer's schedule: no warm-up, so every step runs at the peak rate.
    let trainer = default.trainer_config();
    assert_eq!(trainer.optim.lr_at(1, 120), 2.0e-3);
    assert_eq!(trainer.total_steps, 120);
}

#[test]
fn old_keys_fail_naming_their_new_spelling() {
    let text = std::fs::read_to_string(workspace().join("configs/tiny/dpo.yaml")).expect("tiny");
    for (set, old, new) in [
        ("dpo.lr=1e30", "dpo.lr", "optim.lr"),
        ("dpo.max_grad_norm=2", "dpo.max_grad_norm", "optim.max_grad_norm"),
        ("dpo.warmup_steps=3", "dpo.warmup_steps", "optim.warmup_ratio"),
        ("dpo.aggregation={kind: linear}", "dpo.aggregation", "aggregation"),
        ("train.per_pair_preference=true", "train.per_pair_preference", "train.preference_per_row"),
    ] {
        let err = parse_config::<DpoRunConfig>(&text, "dpo.yaml", &[set.to_owned()])
            .expect_err("an old key");
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{old}` is now `{new}`")), "{set}: {msg}");
    }
}

#[test]
fn objectives_take_bare_names_or_name_entries_and_numbers_must_be_finite() {
    let text = std::fs::read_to_string(workspace().join("configs/tiny/dpo.yaml")).expect("tiny");
    let cfg: DpoRunConfig =
        parse_config(&text, "dpo.yaml", &["objectives=[{name: helpful}, harmless]".to_owned()])
            .expect("both spellings");
    assert_eq!(cfg.objectives, ["helpful", "harmless"]);
    for set in ["adapter.alpha=.nan", "optim.lr=.inf", "optim.warmup_ratio=1.0", "dpo.beta=-1"] {
        let err =
            parse_config::<DpoRunConfig>(&text, "dpo.yaml", &[set.to_owned()]).expect_err(set);
        let key = set.split('=').next().expect("key");
        assert!(err.to_string().contains(key), "{set}: {err}");
    }
}

#[test]
fn relative_data_paths_are_found_beside_the_config_then_here_then_in_the_workspace() {
    let dir = temp_dir("paths");
    std::fs::write(dir.join("pairs.jsonl"), "").expect("write");
    let found = resolve_data_path(Path::new("pairs.jsonl"), Some(&dir)).expect("beside the config");
    assert_eq!(found, dir.join("pairs.jsonl"));
    let bundled = resolve_data_path(Path::new("data/tiny/pairs_pku.jsonl"), Some(&dir))
        .expect("the workspace's");
    assert!(bundled.is_file());
    let err = resolve_data_path(Path::new("nowhere/pairs.jsonl"), Some(&dir)).expect_err("missing");
    let DpoError::DataPath { tried, .. } = &err else { panic!("{err}") };
    assert_eq!(tried.len(), 3, "config folder, current folder, workspace: {err}");
    assert!(err.to_string().contains(&dir.join("nowhere/pairs.jsonl").display().to_string()));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A one-objective pair record of `prompt` from file line `line`.
fn record(prompt: &str, line: usize) -> panacea_data::PairRecord {
    panacea_data::PairRecord {
        prompt: prompt.into(),
        response_0: "a".into(),
        response_1: "b".into(),
        labels: vec![1],
        scores: vec![None],
        safety: None,
        severity: None,
        chat: None,
        line,
    }
}

#[test]
fn split_by_prompt_moves_whole_prompts() {
    // Prompts in first-appearance order: x (0), y (1), z (2), w (3); stride 2 → y and w.
    let records = ["x", "y", "x", "z", "y", "w"].map(|p| record(p, 1)).to_vec();
    let (train, eval) = split_by_prompt(records, 2);
    let names =
        |v: &[panacea_data::PairRecord]| v.iter().map(|r| r.prompt.clone()).collect::<Vec<_>>();
    assert_eq!(names(&train), ["x", "x", "z"]);
    assert_eq!(names(&eval), ["y", "y", "w"]);
}

#[test]
fn interleave_by_prompt_takes_one_pair_of_every_prompt_in_turn() {
    let records = [("x", 1), ("x", 2), ("x", 3), ("y", 4), ("z", 5), ("z", 6)]
        .map(|(p, l)| record(p, l))
        .to_vec();
    let lines: Vec<usize> = interleave_by_prompt(records).iter().map(|r| r.line).collect();
    assert_eq!(lines, [1, 4, 5, 2, 6, 3]);
}

/// `train.cuda_graphs: true` on a CPU: the run trains (eagerly; the trainer tests hold the
/// numbers equal to `false`) and says why once, as a message event.
#[test]
fn cuda_graphs_on_a_cpu_run_say_once_why_they_train_eagerly() {
    let runs = temp_dir("graphs");
    let Some(cfg) = tiny_config(&runs, &["train.steps=2", "train.cuda_graphs=true"]) else {
        return;
    };
    assert!(cfg.trainer_config().cuda_graphs);
    let mut seen = Recorder::default();
    let trained =
        train_dpo(&cfg, &RunOptions::new(&runs).named("graphs"), &mut seen).expect("train-dpo");
    assert_eq!(trained.step, 2);
    let notes: Vec<&String> =
        seen.messages.iter().filter(|m| m.starts_with("train.cuda_graphs")).collect();
    assert_eq!(notes.len(), 1, "said once: {notes:?}");
    assert!(notes[0].contains("CUDA"), "{}", notes[0]);
    let _ = std::fs::remove_dir_all(&runs);
}
