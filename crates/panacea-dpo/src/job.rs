//! A whole multi-objective DPO run as one call: [`train_dpo`], top to bottom:
//! config → device → base model + adapter → pairs (split, tokenised) → reference log-prob
//! caches → run folder (new, or resumed from its newest checkpoint) → the loop (batch, λ,
//! [`DpoTrainer::step`], metrics, evaluation, checkpoints, the stop flag) → the last
//! evaluation and checkpoint.
//!
//! Run folder (panacea-run's [`RunDir`], job name `train-dpo`): `config.yaml` (resolved),
//! `command.txt`, `manifest.json`, `metrics.jsonl` + TensorBoard events, `dpo_data.json` (what
//! tokenisation kept and dropped, the base model's hash), and `checkpoints/step-NNNNNN/` holding
//! the native adapter folder, the trainer's state ([`DpoTrainer::save_state`]) and the loop state
//! (step, RNG streams, data cursor). A resumed run continues bit-exactly on the CPU.
//!
//! Metrics (`metrics.jsonl`, one object per logged step; `{name}` is an objective):
//!
//! | key | meaning |
//! |---|---|
//! | `dpo/loss`, `dpo/loss/{name}` | aggregated loss, per-objective loss L̄_i |
//! | `dpo/accuracy/{name}` | implicit-reward accuracy of the batch |
//! | `dpo/pref/{name}` | the step's λ (its mean with per-row preferences) |
//! | `dpo/margin`, `dpo/reward/response_{0,1}` | mean h_0 − h_1, mean β·h_j |
//! | `dpo/grad_norm`, `dpo/lr`, `dpo/ref_from_cache` | before clipping; the step's rate |
//! | `eval/e_{name}/{accuracy,ranking_accuracy,loss}/{name}` | held-out pairs under λ = e_name (`e_mid`: the centre) |
//! | `eval/base/ranking_accuracy/{name}` | the base model's likelihood ranking |
//! | `eval/hv` | hypervolume of the ranking-accuracy points of the vertices and the centre (reference 0) |
//! | `time/step_ms`, `time/pairs_per_s` | timings |
//! | `time/allreduce_ms` | data parallel only: the gradient all-reduce, mean over ranks |
//!
//! **Data parallel** ([`train_dpo_data_parallel`] with a [`ProcessGroup`] of W ranks):
//! `train.batch_size` is the batch of each rank, so a step trains on W × batch_size pairs.
//! Every rank runs the same seeded streams, so they agree on the global order: the loader
//! draws W × batch_size pair positions and rank r takes the r-th run of batch_size of them;
//! the per-row λ are drawn for the whole global batch from the one preference stream and
//! sliced the same way (a shared λ is drawn once, the same on every rank). Rank 0 broadcasts
//! the initial (or resumed) adapter, each step averages the gradient (one all-reduce,
//! [`DpoTrainer::step_data_parallel`]) and one more small all-reduce combines the metrics
//! and the stop flags. Rank 0 alone writes the run folder, metrics, checkpoints and the
//! reference caches and runs the evaluations; the manifest records `world_size` and
//! `backend`, and a resume with another world size is refused. Linear aggregation over pairs
//! labelled in every dimension makes W ranks × batch b the same run as one process × batch
//! W·b (tested); otherwise the averaged gradient is the usual data-parallel approximation.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use panacea_core::checkpoint::{load_adapter, save_adapter, AdapterFolderConfig, BaseModelId};
use panacea_core::config::{parse_config, to_yaml};
use panacea_core::device::DType;
use panacea_core::preference::{PreferenceSampler, PreferenceVector, StepPreference};
use panacea_core::seed::{seed_everything, RunRng, RunRngState};
use panacea_data::PairRecord;
use panacea_lm::{CausalLm, Llama, LoadedModel};
use panacea_run::{
    latest_checkpoint, Event, Manifest, MemoryEstimate, Observer, RunDir, RunError, RunOptions,
    Trained, CONFIG_FILE,
};
use panacea_shim::dist::{ProcessGroup, ReduceOp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::DpoRunConfig;
use crate::data::{encode_pairs, EncodeReport, EncodedPair, PairBatch, PairLoader};
use crate::pair_files::{read_pair_files, PairFiles};
use crate::ref_cache::{hash_pairs, hash_var_store, CacheStatus, RefCacheKey, RefLogpCache};
use crate::trainer::{DpoStepMetrics, DpoTrainer};
use crate::DpoError;

/// The steering report written into the run folder after the last step (when held-out pairs
/// labelled in every dimension exist).
pub const FINAL_EVAL_FILE: &str = "final_eval.json";

/// The job's name in manifests, run folders and resume checks.
pub const JOB: &str = "train-dpo";

/// Tokenisation report of a run's pairs, written as `dpo_data.json` in the run folder.
pub const DATA_REPORT_FILE: &str = "dpo_data.json";

/// The loop's own state, saved as the loop state of every checkpoint.
#[derive(Serialize, Deserialize)]
struct LoopState {
    step: u64,
    rng: RunRngState,
    loader: PairLoader,
}

/// Trains a preference-conditioned SVD-LoRA adapter with multi-objective DPO as `cfg` says,
/// in a new run folder under `opts.runs_dir` (named `opts.name`, else `train-dpo`), or
/// continuing `opts.resume` from its newest complete checkpoint (`cfg` may then differ from
/// the run's saved config only in the keys panacea-run allows to change on resume).
///
/// Progress goes to `observer`; nothing is printed. When `opts.stop` is set the job finishes
/// its step, writes a checkpoint and returns with `interrupted`. A NaN or infinite loss,
/// gradient norm or parameter stops it with [`DpoError::NonFinite`] before anything of that
/// step is saved.
pub fn train_dpo(
    cfg: &DpoRunConfig,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Trained, DpoError> {
    train_dpo_data_parallel(cfg, opts, observer, None)
}

/// [`train_dpo`] as one rank of the data-parallel `group` (see the module docs; `None` is
/// [`train_dpo`]). Every rank calls it with the same `cfg` and `opts`. On ranks other than 0
/// the returned [`Trained`] names rank 0's run folder and no checkpoint (they write none). A
/// rank that fails makes the others fail at their next collective, within the group's
/// timeout.
pub fn train_dpo_data_parallel(
    cfg: &DpoRunConfig,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    group: Option<&ProcessGroup>,
) -> Result<Trained, DpoError> {
    // 1. Device, threads, seed.
    let k = cfg.k();
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    let main = rank == 0;
    let device = match group {
        Some(g) => g.device_for(cfg.device.resolve()?),
        None => cfg.device.resolve()?,
    };
    if cfg.threads > 0 {
        tch::set_num_threads(i32::try_from(cfg.threads).unwrap_or(i32::MAX));
    }
    observer.on_event(&Event::Message(&format!(
        "running on {device:?}, dtype {}, {k} objectives {:?}",
        cfg.dtype, cfg.objectives
    )));
    let mut rng = seed_everything(cfg.seed);
    // A resumed run folder is checked (world size, job, config changes, a checkpoint) before
    // anything slow is loaded; every rank checks the world size, rank 0 the rest.
    if let Some(dir) = &opts.resume {
        if let Ok(m) = Manifest::read(dir) {
            m.check_world_size(dir, world)?;
        }
    }
    let resumed = match &opts.resume {
        Some(dir) if main => Some(resume_run(dir, cfg, &opts.command)?),
        _ => None,
    };

    // 2. Model: the frozen base, and the policy view with the SVD-LoRA adapter on it.
    observer.on_event(&Event::Phase(&format!("loading model {}", cfg.model)));
    let loaded = load_base(cfg, device)?;
    if loaded.chat_template.is_fallback() {
        observer.on_event(&Event::Message(&format!(
            "{} has no chat template of its own: prompts are rendered as ChatML",
            cfg.model
        )));
    }
    let base_hash = hash_var_store(&loaded.base_vs)?;
    let adapter_vs = tch::nn::VarStore::new(device);
    let policy: Llama = loaded.model.with_adapter(Some((&adapter_vs.root(), &cfg.adapter)));
    let folder_cfg = AdapterFolderConfig::new(
        &cfg.adapter,
        &cfg.objectives,
        BaseModelId { name: cfg.model.clone(), hash: base_hash.clone() },
    )?;

    // 3. Pairs: read, split by prompt, tokenise (ChatML prompt + response + EOS), drop and
    //    count the unusable.
    let pairs = load_pair_sets(cfg, &loaded, observer)?;
    let (train, eval) = (&pairs.train, pairs.eval.as_deref());

    // 4. Reference log-prob caches (train and eval), keyed by data, base weights and settings.
    let mut train_cache = open_ref_cache(cfg, device, &base_hash, train, "train", observer);
    let mut eval_cache =
        eval.and_then(|e| open_ref_cache(cfg, device, &base_hash, e, "eval", observer));

    // 5. Trainer, run folder (new or resumed).
    let mut trainer = DpoTrainer::new(policy, adapter_vs, cfg.trainer_config(), k)?;
    let global_batch = cfg.train.batch_size * world;
    if world > 1 && train.len() < global_batch {
        return Err(DpoError::Data(format!(
            "{} training pairs cannot fill one step of {world} ranks × train.batch_size {} \
             (train.batch_size is per rank); hint: a smaller batch or fewer ranks",
            train.len(),
            cfg.train.batch_size
        )));
    }
    let mut loader = PairLoader::new(train.len(), global_batch)?;
    let mut start = 0;
    // Rank 0 opens the run folder (resumed or new); the other ranks learn its path and, on a
    // resume, which checkpoint it continues from.
    let (mut run, resume_from) = match resumed {
        Some((run, ckpt)) => (Some(run), Some(ckpt)),
        None if main => {
            (Some(create_run(cfg, opts, device, world, group, &pairs, &base_hash)?), None)
        }
        None => (None, None),
    };
    let mut run_path = run.as_ref().map(|r| r.path().to_owned()).unwrap_or_default();
    let mut resume_from = resume_from;
    if let Some(g) = group {
        let path = run_path.to_string_lossy().into_owned();
        run_path = PathBuf::from(
            String::from_utf8_lossy(&g.broadcast_bytes(path.as_bytes(), 0)?).into_owned(),
        );
        let step = resume_from.as_ref().map_or(String::new(), |c| c.step.to_string());
        let step = String::from_utf8_lossy(&g.broadcast_bytes(step.as_bytes(), 0)?).into_owned();
        if !main && !step.is_empty() {
            let ckpt = latest_checkpoint(&run_path)?.filter(|c| c.step.to_string() == step);
            resume_from = Some(ckpt.ok_or_else(|| {
                DpoError::Data(format!(
                    "rank {rank}: rank 0 resumes {} from step {step}, which this rank does not \
                     find; hint: every rank must see the same run folder",
                    run_path.display()
                ))
            })?);
        }
    }
    if let Some(ckpt) = resume_from {
        let state: LoopState = ckpt.loop_state()?;
        load_adapter(&ckpt.dir, &trainer.adapter_vs, &folder_cfg)?;
        trainer.restore_state(&ckpt.dir)?;
        rng = RunRng::from_state(&state.rng);
        loader = state.loader;
        start = state.step;
    }
    if let Some(g) = group {
        trainer.broadcast_adapter(g)?;
    }
    let steps = cfg.train.steps;
    observer.on_event(&Event::MemoryEstimate(&memory_estimate(cfg, &trainer.model.config)));
    observer.on_event(&Event::Started {
        job: JOB,
        run_dir: &run_path,
        start_step: start,
        total_steps: steps,
    });

    // 6. The loop.
    if start == 0 && main {
        // Before the first step the policy is the reference (σ = s = 0), so only the base
        // model's ranking accuracy is new information; it also fills the eval reference cache.
        if let Some(pairs) = eval {
            let line = evaluate_base(&trainer, pairs, cfg, &mut eval_cache)?;
            observer.on_event(&Event::Message(&line.human));
            log_metrics(&mut run, &line.json)?;
        }
    }
    let mut checkpoint = None;
    for step in start..steps {
        let t0 = Instant::now();
        // The global batch, the same on every rank; this rank's shard of it.
        let idx = loader.next_batch(train.len(), &mut rng.data);
        let per_rank = idx.len() / world;
        let shard = rank * per_rank..(rank + 1) * per_rank;
        let rows: Vec<&EncodedPair> = idx[shard.clone()].iter().map(|&i| &train[i]).collect();
        let batch =
            PairBatch::collate(&rows, k, loaded.tokenizer.pad_id, cfg.dpo.seq_logp, device)?;
        let cache = train_cache.as_mut();
        let m = if cfg.train.preference_per_row {
            let prefs = cfg.preference.sample_rows(k, idx.len(), &mut rng.preference)?;
            let pref = StepPreference::PerRow(&prefs[shard]);
            trainer.step_data_parallel(&batch, pref, cache, group)?
        } else {
            let pref = cfg.preference.sample(k, &mut rng.preference)?;
            trainer.step_data_parallel(&batch, StepPreference::Shared(&pref), cache, group)?
        };
        if let Some(why) = trainer.take_graph_note() {
            // Once per run: `train.cuda_graphs` asked for graphs and this step ran without.
            let line = format!("train.cuda_graphs: training eagerly (same numbers): {why}");
            observer.on_event(&Event::Message(&line));
        }
        let (m, interrupted) = reduce_step_metrics(group, m, opts.stop.is_requested())?;
        let done = step + 1;
        let ms = t0.elapsed().as_millis();
        let summary = format!("loss {:.3} acc {:?}", m.loss, round2(&m.accuracy_per_obj));
        observer.on_event(&Event::Step { step: done, summary: &summary });
        if main && (done % cfg.train.log_every == 0 || done == steps) {
            let mut j = BTreeMap::new();
            j.insert("step".to_owned(), json!(done));
            j.insert("epoch".to_owned(), json!(loader.epoch()));
            j.insert("dpo/loss".to_owned(), json!(m.loss));
            for (i, name) in cfg.objectives.iter().enumerate() {
                j.insert(format!("dpo/loss/{name}"), json!(m.loss_per_obj[i]));
                j.insert(format!("dpo/accuracy/{name}"), json!(m.accuracy_per_obj[i]));
                j.insert(format!("dpo/pref/{name}"), json!(m.pref[i]));
            }
            j.insert("dpo/margin".to_owned(), json!(m.margin_mean));
            j.insert("dpo/reward/response_0".to_owned(), json!(m.reward_mean[0]));
            j.insert("dpo/reward/response_1".to_owned(), json!(m.reward_mean[1]));
            j.insert("dpo/grad_norm".to_owned(), json!(m.grad_norm));
            j.insert("dpo/lr".to_owned(), json!(m.lr));
            j.insert("dpo/ref_from_cache".to_owned(), json!(m.ref_from_cache));
            j.insert("time/step_ms".to_owned(), json!(ms));
            if group.is_some() {
                j.insert("time/allreduce_ms".to_owned(), json!(m.grad_sync_ms));
            }
            j.insert(
                "time/pairs_per_s".to_owned(),
                json!(m.pairs as f64 * 1000.0 / ms.max(1) as f64),
            );
            log_metrics(&mut run, &json!(j))?;
            let per: Vec<String> = cfg
                .objectives
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    format!(
                        "loss[{n}] {:.3} acc[{n}] {:.2}",
                        m.loss_per_obj[i], m.accuracy_per_obj[i]
                    )
                })
                .collect();
            observer.on_event(&Event::Message(&format!(
                "step {done} | loss {:.4} | {} | margin {:.3} | pref {:?} | {ms} ms",
                m.loss,
                per.join(" "),
                m.margin_mean,
                round2(&m.pref)
            )));
        }
        let last = done == steps;
        if main && ((cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0) || last) {
            if let Some(pairs) = eval {
                let line = evaluate(&trainer, pairs, cfg, &mut eval_cache, done)?;
                observer.on_event(&Event::Message(&line.human));
                log_metrics(&mut run, &line.json)?;
            }
        }
        let save = (cfg.train.save_every > 0 && done % cfg.train.save_every == 0) || last;
        if let Some(run) = run.as_mut().filter(|_| save || interrupted) {
            let state = LoopState { step: done, rng: rng.state(), loader: loader.clone() };
            let ckpt = run.save_checkpoint(done, &state, |dir| {
                save_adapter(dir, &trainer.adapter_vs, &folder_cfg)?;
                trainer.save_state(dir)
            })?;
            for c in [&mut train_cache, &mut eval_cache].into_iter().flatten() {
                c.save()?;
            }
            observer.on_event(&Event::Checkpoint { step: done, dir: &ckpt.dir });
            checkpoint = Some(ckpt.dir);
        }
        if interrupted {
            observer.on_event(&Event::Finished {
                run_dir: &run_path,
                step: done,
                interrupted: true,
            });
            return Ok(Trained { run_dir: run_path, step: done, checkpoint, interrupted: true });
        }
    }
    // After training: does λ steer the held-out ranking accuracies? (Pairs labelled in every
    // dimension; without enough of them the report is skipped and the run says why.)
    if let (Some(pairs), Some(run)) = (eval, run.as_mut()) {
        observer.on_event(&Event::Phase("final evaluation: held-out pairs over a λ grid"));
        match steering_evaluation(&trainer, pairs, cfg, &mut eval_cache)? {
            Ok(report) => {
                observer.on_event(&Event::Message(&report.to_text()));
                run.write_json(FINAL_EVAL_FILE, &serde_json::json!({ "steering": report }))?;
            }
            Err(why) => observer.on_event(&Event::Message(&why)),
        }
    }
    // The last step always writes a checkpoint (a resume needs steps > the checkpoint's).
    observer.on_event(&Event::Finished { run_dir: &run_path, step: steps, interrupted: false });
    Ok(Trained { run_dir: run_path, step: steps, checkpoint, interrupted: false })
}

/// Creates the run folder of a new run (rank 0): config, command, manifest (with the world
/// size and backend), and the tokenisation report.
fn create_run(
    cfg: &DpoRunConfig,
    opts: &RunOptions,
    device: tch::Device,
    world: usize,
    group: Option<&ProcessGroup>,
    pairs: &PairSets,
    base_hash: &str,
) -> Result<RunDir, DpoError> {
    let name = opts.name.as_deref().unwrap_or(JOB);
    let run = RunDir::create(&opts.runs_dir, name, &to_yaml(cfg)?, &opts.command)?;
    let mut manifest = Manifest::now(JOB, format!("{device:?}"), cfg.seed);
    manifest.world_size = world;
    manifest.backend = group.map(|g| g.backend().name().to_owned());
    let files = std::iter::once(&cfg.data.train).chain(cfg.data.eval.as_ref());
    for file in files.flat_map(|f| cfg.data.pair_files(f)) {
        let p = resolve_data_path(&file.path, cfg.config_dir.as_deref())?;
        let hash = panacea_run::sha256_file(&p)?;
        manifest.data_hashes.push((p.display().to_string(), hash));
    }
    run.write_manifest(&manifest)?;
    let info = json!({
        "base_model": cfg.model,
        "base_model_hash": base_hash,
        "train_pairs": pairs.train_report,
        "eval_pairs": pairs.eval_report,
    });
    run.write_json(DATA_REPORT_FILE, &info)?;
    Ok(run)
}

/// Appends a metrics row when this process writes the run folder (rank 0).
fn log_metrics(run: &mut Option<RunDir>, row: &Value) -> Result<(), DpoError> {
    if let Some(run) = run.as_mut() {
        run.log_metrics(row)?;
    }
    Ok(())
}

/// The step's metrics over every rank, and whether any rank's stop flag is set, in one
/// all-reduce of a few host numbers: losses, margins, rewards and λ are means of the ranks'
/// means (every shard has the same size), accuracies are weighted by labelled pairs, counts
/// are summed. The gradient norm and rate are already the same on every rank. Without a
/// group: `m` and `stop` unchanged.
fn reduce_step_metrics(
    group: Option<&ProcessGroup>,
    mut m: DpoStepMetrics,
    stop: bool,
) -> Result<(DpoStepMetrics, bool), DpoError> {
    let Some(g) = group else { return Ok((m, stop)) };
    let k = m.loss_per_obj.len();
    let mut v = vec![
        m.loss,
        m.margin_mean,
        m.reward_mean[0],
        m.reward_mean[1],
        m.pairs as f64,
        f64::from(u8::from(m.ref_from_cache)),
        f64::from(u8::from(stop)),
        m.grad_sync_ms,
    ];
    v.extend(&m.loss_per_obj);
    v.extend(m.accuracy_per_obj.iter().zip(&m.labelled_per_obj).map(|(a, n)| a * n));
    v.extend(&m.labelled_per_obj);
    v.extend(&m.pref);
    g.all_reduce_f64(&mut v, ReduceOp::Sum)?;
    let w = g.world_size() as f64;
    m.loss = v[0] / w;
    m.margin_mean = v[1] / w;
    m.reward_mean = [v[2] / w, v[3] / w];
    m.pairs = v[4].round() as usize;
    m.ref_from_cache = v[5] == w;
    let stop = v[6] > 0.0;
    m.grad_sync_ms = v[7] / w;
    let per_obj = &v[8..];
    m.loss_per_obj = per_obj[..k].iter().map(|x| x / w).collect();
    m.labelled_per_obj = per_obj[2 * k..3 * k].to_vec();
    m.accuracy_per_obj = (0..k).map(|i| per_obj[k + i] / m.labelled_per_obj[i].max(1.0)).collect();
    m.pref = per_obj[3 * k..].iter().map(|x| x / w).collect();
    Ok((m, stop))
}

/// Re-opens `dir` for `cfg`: the run's saved config and `cfg` go to panacea-run's resume
/// check (only resumable keys may differ), after making sure the folder is a `train-dpo` run,
/// so a run of another job is named as such instead of failing to parse as a DPO config.
fn resume_run(
    dir: &Path,
    cfg: &DpoRunConfig,
    command: &str,
) -> Result<(RunDir, panacea_run::Checkpoint), DpoError> {
    if let Ok(m) = Manifest::read(dir) {
        if m.job != JOB {
            return Err(RunError::WrongJob {
                path: dir.to_owned(),
                expected: JOB.to_owned(),
                found: m.job,
            }
            .into());
        }
    }
    let saved_path = dir.join(CONFIG_FILE);
    let saved_text = std::fs::read_to_string(&saved_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DpoError::Run(RunError::NotARunFolder { path: dir.to_owned() })
        } else {
            DpoError::Io { what: "reading", path: saved_path.clone(), source }
        }
    })?;
    let saved: DpoRunConfig = parse_config(&saved_text, &saved_path.display().to_string(), &[])?;
    let as_json = |c: &DpoRunConfig| {
        serde_json::to_value(c).map_err(|e| DpoError::Data(format!("config as JSON: {e}")))
    };
    let (run, ckpt) =
        RunDir::resume(dir, JOB, &as_json(&saved)?, &as_json(cfg)?, &to_yaml(cfg)?, command)?;
    Ok((run, ckpt))
}

/// The frozen base model and its tokenizer: `cfg.model` loaded from the model cache, a GGUF
/// file or a model folder, or for `tiny-random` a 2-layer random Llama initialised from
/// `cfg.seed` (SmolLM2 tokenizer).
pub fn load_base(cfg: &DpoRunConfig, device: tch::Device) -> Result<LoadedModel, DpoError> {
    let loaded = if cfg.model == panacea_lm::TINY_RANDOM {
        panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())
    } else {
        panacea_lm::load_model(&cfg.model, device, cfg.dtype.kind())
    };
    loaded.map_err(|source| DpoError::Model { name: cfg.model.clone(), source })
}

/// Where a data path of a config points: an absolute path as it is; a relative one against
/// `config_dir` (the config file's folder) when given, then the current folder, then this
/// workspace (so the bundled configs' `data/...` paths work from any folder of a source
/// checkout). Fails naming every place tried.
pub fn resolve_data_path(path: &Path, config_dir: Option<&Path>) -> Result<PathBuf, DpoError> {
    let mut candidates = Vec::new();
    if path.is_absolute() {
        candidates.push(path.to_owned());
    } else {
        candidates.extend(config_dir.map(|d| d.join(path)));
        candidates.push(path.to_owned());
        candidates.push(panacea_data::workspace_path(&path.to_string_lossy()));
    }
    candidates.dedup();
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(DpoError::DataPath { path: path.to_owned(), tried: candidates }),
    }
}

/// The tokenised pair sets of a run and what tokenisation kept.
struct PairSets {
    train: Vec<EncodedPair>,
    train_report: EncodeReport,
    eval: Option<Vec<EncodedPair>>,
    eval_report: Option<EncodeReport>,
}

/// Reads `data.train` (and `data.eval`, or splits off every `eval_prompt_stride`-th prompt),
/// tokenises both and reports what was kept.
fn load_pair_sets(
    cfg: &DpoRunConfig,
    loaded: &LoadedModel,
    observer: &mut dyn Observer,
) -> Result<PairSets, DpoError> {
    let mut train_records = read_pairs(cfg, &cfg.data.train, observer)?;
    let eval_records = match &cfg.data.eval {
        Some(p) => Some(read_pairs(cfg, p, observer)?),
        None if cfg.data.eval_prompt_stride > 0 => {
            let (train_part, eval_part) =
                split_by_prompt(std::mem::take(&mut train_records), cfg.data.eval_prompt_stride);
            train_records = train_part;
            if train_records.is_empty() || eval_part.is_empty() {
                return Err(DpoError::Data(format!(
                    "data.eval_prompt_stride = {} leaves an empty split of {}; hint: a smaller \
                     stride, or data.eval",
                    cfg.data.eval_prompt_stride, cfg.data.train
                )));
            }
            Some(eval_part)
        }
        None => None,
    };
    let (train, train_report) =
        encode(cfg, loaded, train_records, cfg.data.max_train_pairs, "train", observer)?;
    let (eval, eval_report) = match eval_records {
        Some(r) => {
            // Interleaved so that a `max_eval_pairs` cap keeps pairs of every eval prompt
            // (the file holds each prompt's pairs in a run).
            let (pairs, report) = encode(
                cfg,
                loaded,
                interleave_by_prompt(r),
                cfg.data.max_eval_pairs,
                "eval",
                observer,
            )?;
            (Some(pairs), Some(report))
        }
        None => (None, None),
    };
    Ok(PairSets { train, train_report, eval, eval_report })
}

/// The records of `data.train` or `data.eval`; skipped lines (with `data.skip_invalid`) become
/// a warning per file.
fn read_pairs(
    cfg: &DpoRunConfig,
    files: &PairFiles,
    observer: &mut dyn Observer,
) -> Result<Vec<PairRecord>, DpoError> {
    let (records, reports) = read_pair_files(cfg, files)?;
    for (path, report) in reports.iter().filter(|(_, r)| r.skipped > 0) {
        observer.on_event(&Event::Warning(&format!(
            "{}: skipped {} malformed record(s) of {}; first:\n  {}",
            path.display(),
            report.skipped,
            report.records + report.skipped + report.blank_lines + report.dropped_identical,
            report.first_errors.join("\n  ")
        )));
    }
    Ok(records)
}

/// Tokenises at most `limit` records (0 = all); fails when none is usable.
fn encode(
    cfg: &DpoRunConfig,
    loaded: &LoadedModel,
    mut records: Vec<PairRecord>,
    limit: usize,
    what: &str,
    observer: &mut dyn Observer,
) -> Result<(Vec<EncodedPair>, EncodeReport), DpoError> {
    if limit > 0 {
        records.truncate(limit);
    }
    let (pairs, report) = encode_pairs(
        &records,
        cfg.k(),
        &loaded.tokenizer,
        &loaded.chat_template,
        cfg.data.max_len,
    )?;
    observer.on_event(&Event::Message(&format!(
        "{what} pairs: {} kept, {} dropped (identical {}, unlabelled {}, prompt too long {}), {} \
         truncated, labelled per objective {:?}",
        report.kept,
        report.dropped(),
        report.dropped_identical,
        report.dropped_unlabelled,
        report.dropped_prompt_too_long,
        report.truncated,
        report.labelled_per_obj
    )));
    if pairs.is_empty() {
        return Err(DpoError::Data(format!(
            "no usable {what} pairs (every pair was dropped: see the counts above); hint: raise \
             data.max_len or check the labels"
        )));
    }
    Ok((pairs, report))
}

/// The reference log-prob cache of `pairs`, unless `ref_cache.enabled` is off. Its key covers
/// the encoded pairs, the base weights and everything else that changes the numbers (the
/// sequence log-prob variant, the dtype, the device kind).
fn open_ref_cache(
    cfg: &DpoRunConfig,
    device: tch::Device,
    base_hash: &str,
    pairs: &[EncodedPair],
    what: &str,
    observer: &mut dyn Observer,
) -> Option<RefLogpCache> {
    if !cfg.ref_cache.enabled {
        return None;
    }
    let settings = format!(
        "seq_logp={:?} dtype={} device={}",
        cfg.dpo.seq_logp,
        cfg.dtype,
        if device.is_cuda() { "cuda" } else { "cpu" }
    );
    let dir = cfg.ref_cache.dir.clone().unwrap_or_else(|| {
        panacea_lm::load::cache_root()
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("dpo-ref-logp")
    });
    let key = RefCacheKey { data: hash_pairs(pairs), base_model: base_hash.to_owned(), settings };
    let (cache, status) = RefLogpCache::open(&dir, key);
    let line = match status {
        CacheStatus::New => format!("{what} reference cache: new ({})", cache.path().display()),
        CacheStatus::Loaded { entries } => {
            format!("{what} reference cache: {entries} pairs ({})", cache.path().display())
        }
        CacheStatus::Invalidated { reason } => {
            format!("{what} reference cache: invalidated, rebuilding ({reason})")
        }
    };
    observer.on_event(&Event::Message(&line));
    Some(cache)
}

/// One evaluation record: a log line and the metrics.jsonl object.
struct EvalLine {
    human: String,
    json: Value,
}

/// The eval pairs collated in training-sized batches.
fn eval_batches<'a>(
    pairs: &'a [EncodedPair],
    cfg: &'a DpoRunConfig,
    dev: tch::Device,
) -> impl Iterator<Item = Result<PairBatch, DpoError>> + 'a {
    pairs.chunks(cfg.train.batch_size.max(1)).map(move |chunk| {
        let rows: Vec<&EncodedPair> = chunk.iter().collect();
        PairBatch::collate(&rows, cfg.k(), 0, cfg.dpo.seq_logp, dev)
    })
}

/// Implicit-reward and likelihood-ranking accuracy per objective on the eval pairs under each
/// vertex λ = e_j and the centre, pooled over batches (weighted by labelled pairs).
fn evaluate(
    trainer: &DpoTrainer<Llama>,
    pairs: &[EncodedPair],
    cfg: &DpoRunConfig,
    cache: &mut Option<RefLogpCache>,
    step: u64,
) -> Result<EvalLine, DpoError> {
    let k = cfg.k();
    let dev = trainer.model.device();
    let mut j = BTreeMap::new();
    j.insert("step".to_owned(), json!(step));
    let mut human = format!("eval step {step} |");
    // The vertices e_v and the centre: their policy ranking accuracies form a small front whose
    // hypervolume (reference 0: accuracies lie in [0, 1]) is logged as `eval/hv` each evaluation.
    let mut front: Vec<Vec<f64>> = Vec::with_capacity(k + 1);
    for v in 0..=k {
        let pref =
            if v < k { PreferenceVector::vertex(k, v)? } else { PreferenceVector::uniform(k)? };
        let mut acc = vec![0.0; k];
        let mut policy_rank = vec![0.0; k];
        let mut base_rank = vec![0.0; k];
        let mut loss = vec![0.0; k];
        let mut count = vec![0.0; k];
        for batch in eval_batches(pairs, cfg, dev) {
            let m = trainer.evaluate(&batch?, StepPreference::Shared(&pref), cache.as_mut())?;
            for i in 0..k {
                let n = m.labelled_per_obj[i];
                acc[i] += m.accuracy_per_obj[i] * n;
                policy_rank[i] += m.policy_ranking_accuracy_per_obj[i] * n;
                base_rank[i] += m.base_ranking_accuracy_per_obj[i] * n;
                loss[i] += m.loss_per_obj[i] * n;
                count[i] += n;
            }
        }
        let tag = cfg.objectives.get(v).map_or("mid", String::as_str);
        front.push((0..k).map(|i| policy_rank[i] / count[i].max(1.0)).collect());
        human.push_str(&format!(" pref=e[{tag}]:"));
        for (i, name) in cfg.objectives.iter().enumerate() {
            let n = count[i].max(1.0);
            j.insert(format!("eval/e_{tag}/accuracy/{name}"), json!(acc[i] / n));
            j.insert(format!("eval/e_{tag}/ranking_accuracy/{name}"), json!(policy_rank[i] / n));
            j.insert(format!("eval/base/ranking_accuracy/{name}"), json!(base_rank[i] / n));
            j.insert(format!("eval/e_{tag}/loss/{name}"), json!(loss[i] / n));
            human.push_str(&format!(
                " acc[{name}] {:.2} rank[{name}] {:.2} (base {:.2})",
                acc[i] / n,
                policy_rank[i] / n,
                base_rank[i] / n
            ));
        }
    }
    log_accuracy_hv(&front, &mut j, &mut human)?;
    Ok(EvalLine { human, json: json!(j) })
}

/// The steering report of a trained DPO adapter on held-out pairs: the objective vector of a
/// pair is, per dimension, 1 when the likelihood ranks it as labelled and 0 otherwise (so the
/// means are ranking accuracies), for the base model and for every λ of
/// [`PreferenceSampler::steering_grid`]; intervals come from a paired bootstrap over pairs.
/// Only pairs labelled in every dimension take part; `Ok(Err(reason))` when fewer than 4 are.
pub fn steering_evaluation(
    trainer: &DpoTrainer<Llama>,
    pairs: &[EncodedPair],
    cfg: &DpoRunConfig,
    cache: &mut Option<RefLogpCache>,
) -> Result<Result<panacea_eval::SteeringReport, String>, DpoError> {
    let k = cfg.k();
    let dev = trainer.model.device();
    let grid = PreferenceSampler::steering_grid(k)?;
    let host = |t: &tch::Tensor| -> Result<Vec<Vec<f64>>, DpoError> {
        Ok(Vec::try_from(t.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu))?)
    };
    let mut base: Vec<Vec<f64>> = Vec::new();
    let mut per_pref: Vec<Vec<Vec<f64>>> = vec![Vec::new(); grid.len()];
    for batch in eval_batches(pairs, cfg, dev) {
        let batch = batch?;
        // Pairs labelled in every dimension; the reference ranking is computed once per batch.
        let keep: Vec<bool> = host(&batch.labels.ne(0).to_kind(tch::Kind::Float))?
            .iter()
            .map(|r| r.iter().all(|&x| x > 0.0))
            .collect();
        let kept =
            |rows: Vec<Vec<f64>>| rows.into_iter().zip(&keep).filter(|(_, &k)| k).map(|(r, _)| r);
        let (reference, _) = trainer.reference_logps(&batch, cache.as_mut())?; // [2B]
        base.extend(kept(host(&crate::loss::ranking_wins(&reference, &batch.labels)?)?));
        for (g, pref) in grid.iter().enumerate() {
            let wins = trainer.policy_ranking_wins(&batch, StepPreference::Shared(pref))?;
            per_pref[g].extend(kept(host(&wins)?));
        }
    }
    if base.len() < 4 {
        return Ok(Err(format!(
            "steering report skipped: {} held-out pairs are labelled in all {k} dimensions, at \
             least 8 are needed",
            base.len()
        )));
    }
    let prefs: Vec<Vec<f64>> = grid.iter().map(|p| p.as_slice().to_vec()).collect();
    let options = panacea_eval::BootstrapOptions { seed: cfg.seed, ..Default::default() };
    Ok(Ok(panacea_eval::steering_report(&cfg.objectives, &prefs, &base, &per_pref, &options)?))
}

/// Logs `eval/hv`: the hypervolume of ranking-accuracy points (reference 0: accuracies lie in
/// [0, 1]).
fn log_accuracy_hv(
    front: &[Vec<f64>],
    j: &mut BTreeMap<String, Value>,
    human: &mut String,
) -> Result<(), DpoError> {
    let k = front.first().map_or(0, Vec::len);
    let hv = panacea_eval::hypervolume(
        front,
        panacea_eval::Sense::Max,
        &panacea_eval::RefPoint::Explicit(vec![0.0; k]),
    )?;
    j.insert("eval/hv".to_owned(), json!(hv.value));
    human.push_str(&format!(" | hv {:.4}", hv.value));
    Ok(())
}

/// The base model's likelihood-ranking accuracy per objective on the eval pairs (step 0;
/// the implicit reward is 0 for every pair there, so its accuracy is not logged).
fn evaluate_base(
    trainer: &DpoTrainer<Llama>,
    pairs: &[EncodedPair],
    cfg: &DpoRunConfig,
    cache: &mut Option<RefLogpCache>,
) -> Result<EvalLine, DpoError> {
    let k = cfg.k();
    let dev = trainer.model.device();
    let (mut base_rank, mut count) = (vec![0.0; k], vec![0.0; k]);
    for batch in eval_batches(pairs, cfg, dev) {
        let batch = batch?;
        let (reference, _) = trainer.reference_logps(&batch, cache.as_mut())?; // [2B]
        let rank = crate::loss::ranking_accuracy(&reference, &batch.labels)?; // [K]
        let labelled =
            batch.labels.ne(0).sum_dim_intlist([0i64].as_slice(), false, tch::Kind::Float); // [K]
        for i in 0..k {
            let n = labelled.double_value(&[i as i64]);
            base_rank[i] += rank.double_value(&[i as i64]) * n;
            count[i] += n;
        }
    }
    let mut j = BTreeMap::new();
    j.insert("step".to_owned(), json!(0));
    let mut human = format!("eval step 0 | {} pairs |", pairs.len());
    for (i, name) in cfg.objectives.iter().enumerate() {
        let acc = base_rank[i] / count[i].max(1.0);
        j.insert(format!("eval/base/ranking_accuracy/{name}"), json!(acc));
        human.push_str(&format!(" base rank[{name}] {acc:.2}"));
    }
    // The start of the `eval/hv` curve: every λ ranks like the base here, so the front is the
    // base's one point.
    let base_point: Vec<f64> = (0..k).map(|i| base_rank[i] / count[i].max(1.0)).collect();
    log_accuracy_hv(&[base_point], &mut j, &mut human)?;
    Ok(EvalLine { human, json: json!(j) })
}

/// Records reordered round-robin over prompts (first pair of every prompt, then the second,
/// ...), each prompt's pairs keeping their order; prompts in first-appearance order.
pub fn interleave_by_prompt(records: Vec<PairRecord>) -> Vec<PairRecord> {
    let mut groups: Vec<Vec<PairRecord>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in records {
        let g = *index.entry(r.prompt.clone()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(r);
    }
    let mut iters: Vec<_> = groups.into_iter().map(|g| g.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        out.extend(iters.iter_mut().filter_map(Iterator::next));
        if out.len() == before {
            return out;
        }
    }
}

/// Splits records by prompt: the prompts with first-appearance index i where i % stride ==
/// stride − 1 (and all their pairs) go to the second list.
pub fn split_by_prompt(
    records: Vec<PairRecord>,
    stride: usize,
) -> (Vec<PairRecord>, Vec<PairRecord>) {
    let mut order: BTreeMap<String, usize> = BTreeMap::new();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for r in records {
        let next = order.len();
        let i = *order.entry(r.prompt.clone()).or_insert(next);
        if i % stride == stride - 1 {
            eval.push(r);
        } else {
            train.push(r);
        }
    }
    (train, eval)
}

fn round2(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 100.0).round() / 100.0).collect()
}

/// The memory one training step of `cfg` is estimated to need on a model of architecture
/// `model` ([`panacea_lm::memory_plan`]): the frozen base in `cfg.dtype`, the adapter with its
/// AdamW state, and the activations of one policy forward with a graph, a micro-batch
/// (`dpo.micro_batch_size`, or the whole `train.batch_size`) of pairs, counted as two
/// sequences each of the full `data.max_len` tokens, every position scored (an upper bound:
/// packing the shared prompt and shorter pairs need less), with or without
/// `train.activation_checkpointing`. Reference log-probs run without a graph and keep nothing.
pub fn step_memory_plan(
    cfg: &DpoRunConfig,
    model: &panacea_lm::LlamaConfig,
) -> panacea_lm::MemoryPlan {
    let pairs = match cfg.dpo.micro_batch_size {
        0 => cfg.train.batch_size,
        m => m.min(cfg.train.batch_size),
    };
    pair_step_memory_plan(
        model,
        &cfg.adapter,
        pairs as i64,
        cfg.data.max_len as i64,
        cfg.dtype.kind().elt_size_in_bytes() as i64,
        cfg.train.activation_checkpointing,
    )
}

/// [`step_memory_plan`] from its parts: `pairs` pairs per forward of `max_len` tokens each
/// sequence, base weights of `base_bytes` bytes an element.
pub fn pair_step_memory_plan(
    model: &panacea_lm::LlamaConfig,
    adapter: &panacea_core::adapter::SvdLoraConfig,
    pairs: i64,
    max_len: i64,
    base_bytes: i64,
    checkpointing: bool,
) -> panacea_lm::MemoryPlan {
    panacea_lm::memory_plan(&panacea_lm::MemoryPlanInput {
        config: model,
        adapter,
        batch: 2 * pairs,
        seq_len: max_len,
        head_tokens: 2 * pairs * max_len,
        trained_adapters: 1,
        base_bytes,
        checkpointing,
        padded: true,
    })
}

/// [`step_memory_plan`] as the job reports it.
fn memory_estimate(cfg: &DpoRunConfig, model: &panacea_lm::LlamaConfig) -> MemoryEstimate {
    let pairs = match cfg.dpo.micro_batch_size {
        0 => cfg.train.batch_size,
        m => m.min(cfg.train.batch_size),
    };
    pair_memory_estimate(
        model,
        &cfg.adapter,
        pairs as i64,
        cfg.data.max_len as i64,
        cfg.dtype,
        cfg.train.activation_checkpointing,
    )
}

/// [`pair_step_memory_plan`] as [`Event::MemoryEstimate`] reports it: the parts, and the shape
/// in words. `dtype` is the base weights'.
pub fn pair_memory_estimate(
    model: &panacea_lm::LlamaConfig,
    adapter: &panacea_core::adapter::SvdLoraConfig,
    pairs: i64,
    max_len: i64,
    dtype: DType,
    checkpointing: bool,
) -> MemoryEstimate {
    let base_bytes = dtype.kind().elt_size_in_bytes() as i64;
    let plan = pair_step_memory_plan(model, adapter, pairs, max_len, base_bytes, checkpointing);
    let shape = format!(
        "{pairs} pairs a forward (2 × {pairs} sequences of ≤ {max_len} tokens), {dtype} base \
         weights, activation checkpointing {}",
        if checkpointing { "on" } else { "off" }
    );
    MemoryEstimate::new(shape, plan.parts())
}
