//! [`train_ppo`]: a whole `train-ppo` job as one library call — model and adapter, prompts,
//! reward sources, run folder, the loop top to bottom (draw a prompt batch, draw λ **before**
//! generation, [`PpoTrainer::step`], log, evaluate, checkpoint), resume, stop flag, and the
//! final comparison of the vertex preferences e_j with the base model.
//!
//! **Data parallel** ([`train_ppo_data_parallel`] with a [`ProcessGroup`] of W ranks, e.g.
//! under `torchrun`): `train.batch_size` and `ppo.mini_batch_size` are per rank, so a step
//! trains on W × batch_size prompts in minibatches of W × mini_batch_size rows. Every rank
//! runs the same seeded streams: the cursor draws the global batch of W × batch_size prompts
//! and rank r takes the r-th run of batch_size of them; the per-row λ are drawn for the whole
//! global batch from the one preference stream and sliced the same way (a shared λ is drawn
//! once). Rank 0 broadcasts the initial (or resumed) adapter and critic, the step is
//! [`PpoTrainer::step_data_parallel`] (the whole batch's statistics and metrics; see
//! [`crate::trainer`]), and one tiny all-reduce per step shares the stop flags. Rank 0 alone
//! writes the run folder, metrics and checkpoints and runs the evaluations (the other ranks
//! wait for it in the next collective); the manifest records `world_size` and `backend`, and a
//! resume with another world size is refused. W ranks × batch b train the same adapter and
//! critic as one process × batch W·b, up to float summation order (tested). Metrics add
//! `time/allreduce_ms`: the step's gradient all-reduces on rank 0, waiting included.

use std::path::Path;
use std::time::Instant;

use panacea_core::checkpoint::{
    hash_var_store, load_adapter, save_adapter, AdapterFolderConfig, BaseModelId,
};
use panacea_core::config::to_yaml;
use panacea_core::objective::utilities;
use panacea_core::seed::RunRngState;
use panacea_core::{
    seed_everything, Adapter, PreferenceSampler, PreferenceVector, RunRng, StepPreference,
};
use panacea_data::{PromptSet, Split};
use panacea_lm::generate::response_texts;
use panacea_lm::{GenerateConfig, Llama, Pretrained, PromptTemplate, Sampling, Tokenizer};
use panacea_run::{
    latest_checkpoint, sha256_file, Checkpoint, Event, Manifest, Observer, RunDir, RunOptions,
    Trained, CONFIG_FILE,
};
use panacea_shim::dist::{ProcessGroup, ReduceOp};
use rand::seq::SliceRandom;
use rand::Rng;
use tch::{nn, Kind, Tensor};

use crate::config::{BundledSet, PromptSource, TrainPpoConfig};
use crate::policy::PpoPolicy;
use crate::rollout::{reward_source, score_all, RewardSource, RolloutView};
use crate::{PpoParts, PpoTrainer, PromptBatch, RlhfError};

/// The job name recorded in a PPO run's manifest.
pub const PPO_JOB: &str = "train-ppo";
/// The final comparison written into the run folder after the last step.
pub const FINAL_EVAL_FILE: &str = "final_eval.json";

/// The loop's own state, saved as `trainer_state.json` in every checkpoint folder beside the
/// adapter and the trainer's files ([`PpoTrainer::save_state`]).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopState {
    /// Steps completed.
    step: u64,
    /// Every RNG stream's position.
    rng: RunRngState,
    /// The data cursor (order of the current pass and position in it).
    cursor: PromptCursor,
}

/// Trains a preference-conditioned PPO adapter as `cfg` says, in a new run folder under
/// `opts.runs_dir` or continuing `opts.resume` from its newest checkpoint; progress and
/// messages go to `observer`, and `opts.stop` ends the run after the current step with a
/// checkpoint.
pub fn train_ppo(
    cfg: &TrainPpoConfig,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Trained, RlhfError> {
    train_ppo_data_parallel(cfg, opts, observer, None)
}

/// [`train_ppo`] as one rank of the data-parallel `group` (see the module docs; `None` is
/// [`train_ppo`]). Every rank calls it with the same `cfg` and `opts`. On ranks other than 0
/// the returned [`Trained`] names rank 0's run folder and no checkpoint (they write none). A
/// rank that fails makes the others fail at their next collective, within the group's
/// timeout.
pub fn train_ppo_data_parallel(
    cfg: &TrainPpoConfig,
    opts: &RunOptions,
    observer: &mut dyn Observer,
    group: Option<&ProcessGroup>,
) -> Result<Trained, RlhfError> {
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    let main = rank == 0;
    let device = match group {
        Some(g) => g.device_for(cfg.device.resolve()?),
        None => cfg.device.resolve()?,
    };
    // A resume is checked (world size, lock, job, config changes) before anything heavy is
    // loaded; every rank checks the world size, rank 0 the rest.
    if let Some(dir) = &opts.resume {
        if let Ok(m) = Manifest::read(dir) {
            m.check_world_size(dir, world)?;
        }
    }
    let resumed = match &opts.resume {
        Some(dir) if main => Some(resume_run(dir, cfg, &opts.command)?),
        _ => None,
    };
    observer.on_event(&Event::Message(&format!(
        "running on {device:?}, dtype {}, seed {}",
        cfg.dtype, cfg.seed
    )));
    let mut rng = seed_everything(cfg.seed);
    let k = cfg.objectives.len();

    // Model, prompts, reward sources, trainer.
    observer.on_event(&Event::Phase(&format!("loading {}", cfg.model)));
    let (base_vs, policy, adapter_vs, tokenizer, template) = load_policy(cfg, device)?;
    if cfg.data.chat_template && template.is_fallback() {
        observer.on_event(&Event::Message(&format!(
            "{} has no chat template of its own: prompts are rendered as ChatML",
            cfg.model
        )));
    }
    let ((train_prompts, eval_prompts, data_hashes), read) =
        load_prompts_with_report(cfg, &tokenizer, &template)?;
    if read.skipped > 0 {
        observer.on_event(&Event::Warning(&skipped_prompts_warning(cfg, &read)));
    }
    let sources = reward_sources(cfg, &tokenizer, &policy)?;
    let mut trainer = build_trainer(cfg, &tokenizer, policy, adapter_vs, sources)?;
    observer.on_event(&Event::MemoryEstimate(&cfg.memory_estimate(&trainer.policy.config)));
    if cfg.train.cuda_graphs {
        // Accepted for symmetry with train-dpo, whose step has a graphed form; the PPO
        // minibatch update does not yet.
        observer.on_event(&Event::Message(
            "train.cuda_graphs: training eagerly (same numbers): the PPO update has no graphed \
             step yet",
        ));
    }
    observer.on_event(&Event::Message(&format!(
        "{} train / {} eval prompts; base {} tensors frozen; adapter {} tensors trainable",
        train_prompts.len(),
        eval_prompts.len(),
        base_vs.variables().len(),
        trainer.adapter_vs.trainable_variables().len()
    )));

    // Run folder. The base hash follows the same recipe as DPO's, so PPO and DPO adapters of
    // one base carry the same hash.
    let base_hash = hash_var_store(&base_vs)?;
    let folder_cfg = AdapterFolderConfig::new(
        &cfg.adapter,
        &cfg.objective_names(),
        BaseModelId { name: cfg.model.clone(), hash: base_hash.clone() },
    )?;
    let n_train = train_prompts.len();
    let batch_size = cfg.train.batch_size;
    let global_batch = batch_size * world;
    if world > 1 && n_train < global_batch {
        return Err(RlhfError::Invalid {
            what: "prompts".into(),
            reason: format!(
                "{n_train} train prompts cannot fill one step of {world} ranks × \
                 train.batch_size {batch_size} (train.batch_size is per rank); hint: a smaller \
                 batch or fewer ranks"
            ),
        });
    }
    // Rank 0 opens the run folder (resumed or new); the other ranks learn its path and, on a
    // resume, which checkpoint it continues from.
    let (mut run, mut resume_from) = match resumed {
        Some((run, ckpt)) => (Some(run), Some(ckpt)),
        None if main => {
            let name = opts.name.as_deref().unwrap_or("train-ppo");
            let run = RunDir::create(&opts.runs_dir, name, &to_yaml(cfg)?, &opts.command)?;
            let mut manifest = Manifest::now(PPO_JOB, format!("{device:?}"), cfg.seed);
            manifest.world_size = world;
            manifest.backend = group.map(|g| g.backend().name().to_owned());
            manifest.data_hashes.push(("base model weights".to_owned(), base_hash));
            manifest.data_hashes.extend(data_hashes.iter().cloned());
            run.write_manifest(&manifest)?;
            (Some(run), None)
        }
        None => (None, None),
    };
    let mut run_path = run.as_ref().map(|r| r.path().to_owned()).unwrap_or_default();
    if let Some(g) = group {
        let path = run_path.to_string_lossy().into_owned();
        run_path = std::path::PathBuf::from(
            String::from_utf8_lossy(&g.broadcast_bytes(path.as_bytes(), 0)?).into_owned(),
        );
        let step = resume_from.as_ref().map_or(String::new(), |c| c.step.to_string());
        let step = String::from_utf8_lossy(&g.broadcast_bytes(step.as_bytes(), 0)?).into_owned();
        if !main && !step.is_empty() {
            let ckpt = latest_checkpoint(&run_path)?.filter(|c| c.step.to_string() == step);
            resume_from = Some(ckpt.ok_or_else(|| RlhfError::Invalid {
                what: format!("rank {rank}"),
                reason: format!(
                    "rank 0 resumes {} from step {step}, which this rank does not find; hint: \
                     every rank must see the same run folder",
                    run_path.display()
                ),
            })?);
        }
    }
    let (start, mut cursor) = match resume_from {
        Some(ckpt) => {
            load_adapter(&ckpt.dir, &trainer.adapter_vs, &folder_cfg)?;
            trainer.restore_state(&ckpt.dir)?;
            let state: LoopState = ckpt.loop_state()?;
            if state.cursor.order.len() != n_train {
                return Err(RlhfError::Invalid {
                    what: ckpt.dir.display().to_string(),
                    reason: format!(
                        "the checkpoint's data cursor covers {} prompts, the data now has \
                         {n_train}; hint: the prompt files changed since the run started",
                        state.cursor.order.len()
                    ),
                });
            }
            rng = RunRng::from_state(&state.rng);
            (ckpt.step, state.cursor)
        }
        None => (0, PromptCursor::new(n_train)),
    };
    if let Some(g) = group {
        trainer.broadcast_parameters(g)?;
    }
    observer.on_event(&Event::Started {
        job: PPO_JOB,
        run_dir: &run_path,
        start_step: start,
        total_steps: cfg.train.steps,
    });

    // The loop.
    let names = cfg.objective_names();
    let max_new = cfg.rollout.max_new_tokens;
    let save = |run: &RunDir,
                trainer: &PpoTrainer,
                step: u64,
                rng: &RunRng,
                cursor: &PromptCursor|
     -> Result<Checkpoint, RlhfError> {
        // Nothing non-finite is ever written: a broken parameter stops the run here.
        trainer.check_finite_parameters()?;
        let state = LoopState { step, rng: rng.state(), cursor: cursor.clone() };
        run.save_checkpoint(step, &state, |dir| -> Result<(), RlhfError> {
            save_adapter(dir, &trainer.adapter_vs, &folder_cfg)?;
            trainer.save_state(dir)
        })
    };
    // The hypervolume curve: a small λ grid on a few eval prompts, against a reference fixed
    // by the base model's vector (so values are comparable across steps and resumes).
    let hv_prompts = &eval_prompts[..eval_prompts.len().min(cfg.train.hv_prompts)];
    let hv_grid = PreferenceSampler::DasDennis { h: 2 }.grid(k)?;
    let hv_reference: Option<Vec<f64>> = if cfg.train.eval_every > 0 && main {
        observer.on_event(&Event::Phase("evaluating the base model for the hypervolume reference"));
        let base = evaluate(&trainer, hv_prompts, None, max_new, batch_size)?;
        Some(base.iter().map(|x| x - 1.0).collect())
    } else {
        None
    };
    let mut last_checkpoint = None;
    for step in start + 1..=cfg.train.steps {
        let t0 = Instant::now();
        // The global batch, the same on every rank; this rank's shard of it.
        let global = cursor.next_batch(&train_prompts, global_batch, &mut rng.data);
        let shard = rank * batch_size..(rank + 1) * batch_size;
        let batch = PromptBatch {
            prompts: global.prompts[shard.clone()].to_vec(),
            ids: global.ids[shard.clone()].to_vec(),
        };
        // λ is drawn before generation and fixed for the whole step (per row when configured,
        // for the whole global batch).
        let prefs = if cfg.train.preference_per_row {
            cfg.preference.sample_rows(k, global.len(), &mut rng.preference)?
        } else {
            vec![cfg.preference.sample(k, &mut rng.preference)?]
        };
        let pref = match prefs.as_slice() {
            [shared] => StepPreference::Shared(shared),
            rows => StepPreference::PerRow(&rows[shard]),
        };
        let m = trainer.step_data_parallel(&batch, pref, &mut rng, group)?;
        let ms = t0.elapsed().as_millis();
        let scores: Vec<String> =
            names.iter().zip(&m.score_mean).map(|(n, s)| format!("{n} {s:.3}")).collect();
        let summary = format!("{} | kl {:.3}", scores.join(" "), m.kl);
        observer.on_event(&Event::Step { step, summary: &summary });
        let logging =
            run.as_mut().filter(|_| step % cfg.train.log_every == 0 || step == cfg.train.steps);
        if let Some(run) = logging {
            let mut json = m.to_json(&trainer.objectives);
            json["time_ms"] = serde_json::json!(ms);
            if group.is_some() {
                json["time/allreduce_ms"] = serde_json::json!(trainer.grad_sync_ms());
            }
            run.log_metrics(&json)?;
            let scores: Vec<String> = names
                .iter()
                .zip(&m.score_mean)
                .map(|(n, s)| format!("score[{n}] {s:.3}"))
                .collect();
            observer.on_event(&Event::Message(&format!(
                "step {step} | loss {:.3} | vloss {:.3} | kl {:.3} | {} | pref {:?} | len {:.1} | {ms} ms",
                m.policy_loss,
                m.value_loss,
                m.kl,
                scores.join(" "),
                m.pref.iter().map(|p| (p * 100.0).round() / 100.0).collect::<Vec<_>>(),
                m.response_len
            )));
        }
        if let (Some(reference), Some(run)) =
            (hv_reference.as_ref().filter(|_| step % cfg.train.eval_every == 0), run.as_mut())
        {
            let mut front = Vec::with_capacity(hv_grid.len());
            for pref in &hv_grid {
                front.push(evaluate(&trainer, hv_prompts, Some(pref), max_new, batch_size)?);
            }
            let hv = panacea_eval::hypervolume(
                &front,
                panacea_eval::Sense::Max,
                &panacea_eval::RefPoint::Explicit(reference.clone()),
            )?;
            let mut json = serde_json::json!({"step": step, "eval/hv": hv.value});
            for (pref, point) in hv_grid.iter().zip(&front) {
                json[format!("eval/front/{pref}")] = serde_json::json!(point);
            }
            run.log_metrics(&json)?;
            observer.on_event(&Event::Message(&format!(
                "step {step} | hypervolume {:.4} over {} λ × {} prompts (reference {})",
                hv.value,
                hv_grid.len(),
                hv_prompts.len(),
                fmt_vec(reference)
            )));
        }
        let mut interrupted = opts.stop.is_requested();
        if let Some(g) = group {
            // Any rank's stop flag stops every rank after this step.
            let mut flag = [f64::from(u8::from(interrupted))];
            g.all_reduce_f64(&mut flag, ReduceOp::Max)?;
            interrupted = flag[0] > 0.0;
        }
        let saving = (cfg.train.save_every > 0 && step % cfg.train.save_every == 0)
            || step == cfg.train.steps
            || interrupted;
        if let Some(run) = run.as_ref().filter(|_| saving) {
            let ckpt = save(run, &trainer, step, &rng, &cursor)?;
            observer.on_event(&Event::Checkpoint { step, dir: &ckpt.dir });
            last_checkpoint = Some(ckpt.dir);
        }
        if interrupted {
            observer.on_event(&Event::Finished { run_dir: &run_path, step, interrupted: true });
            return Ok(Trained {
                run_dir: run_path,
                step,
                checkpoint: last_checkpoint,
                interrupted: true,
            });
        }
    }

    // After training: greedy responses on held-out prompts under the base model and under a
    // λ grid holding every vertex; the steering report checks each vertex against the base
    // and the other vertices with paired intervals, and measures per-λ control.
    let step = cfg.train.steps.max(start);
    let Some(run) = run else {
        // Rank 0 alone evaluates and writes.
        observer.on_event(&Event::Finished { run_dir: &run_path, step, interrupted: false });
        return Ok(Trained { run_dir: run_path, step, checkpoint: None, interrupted: false });
    };
    observer.on_event(&Event::Phase("final evaluation: the base model and a λ grid"));
    let eval = &eval_prompts[..eval_prompts.len().min(cfg.train.eval_prompts)];
    let steering = steering_evaluation(&trainer, eval, max_new, batch_size, cfg.seed)?;
    let mut report = serde_json::Map::new();
    report.insert("base".into(), serde_json::json!(steering.base));
    for (p, m) in steering.prefs.iter().zip(&steering.means) {
        if let Some(j) = panacea_eval::steering::vertex_of(p) {
            report.insert(format!("e{}", j + 1), serde_json::json!(m));
        }
    }
    report.insert("objectives".into(), serde_json::json!(names));
    report.insert("steering".into(), serde_json::json!(steering));
    run.write_json(FINAL_EVAL_FILE, &serde_json::Value::Object(report))?;
    observer.on_event(&Event::Message(&steering.to_text()));
    observer.on_event(&Event::Finished { run_dir: run.path(), step, interrupted: false });
    let checkpoint = match last_checkpoint {
        Some(dir) => Some(dir),
        None => panacea_run::latest_checkpoint(run.path())?.map(|c| c.dir),
    };
    Ok(Trained { run_dir: run.path().to_owned(), step, checkpoint, interrupted: false })
}

/// Re-opens the run folder `dir` for `requested`: its saved config is read through the config
/// parser (so keys of earlier versions are named), and [`RunDir::resume`] refuses changes that
/// a resumed run cannot make.
fn resume_run(
    dir: &Path,
    requested: &TrainPpoConfig,
    command: &str,
) -> Result<(RunDir, Checkpoint), RlhfError> {
    let saved = read_saved_config::<TrainPpoConfig>(dir)?;
    let as_json = |c: &TrainPpoConfig| {
        serde_json::to_value(c).map_err(|e| RlhfError::Invalid {
            what: "the resumed config".into(),
            reason: e.to_string(),
        })
    };
    Ok(RunDir::resume(
        dir,
        PPO_JOB,
        &as_json(&saved)?,
        &as_json(requested)?,
        &to_yaml(requested)?,
        command,
    )?)
}

/// The config saved in a run folder, parsed and validated like a new one.
pub(crate) fn read_saved_config<T>(dir: &Path) -> Result<T, RlhfError>
where
    T: serde::de::DeserializeOwned + panacea_core::config::Validate,
{
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(panacea_run::RunError::NotARunFolder { path: dir.to_owned() }.into());
    }
    Ok(panacea_core::config::load_config(&path, &[])?)
}

/// A loaded policy: (frozen base store, policy model, adapter store, tokenizer, the model's
/// chat template or the ChatML fallback).
pub type LoadedPolicy = (nn::VarStore, Llama, nn::VarStore, Tokenizer, PromptTemplate);

/// The prompts of a run: (train prompts, eval prompts, (what was read, its SHA-256) for the
/// manifest: a prompt file's path, or a bundled set's name, whose text is compiled in).
pub type LoadedPrompts = (Vec<Prompt>, Vec<Prompt>, Vec<(String, String)>);

/// Loads (or, for `tiny-random`, creates from `cfg.seed`) the base model with the policy
/// adapter. The base store is converted to `cfg.dtype` before the adapter, critic and score
/// models take their views of it (views made earlier would keep the f32 tensors); the adapter
/// store stays f32.
pub fn load_policy(cfg: &TrainPpoConfig, device: tch::Device) -> Result<LoadedPolicy, RlhfError> {
    let adapter_vs = nn::VarStore::new(device);
    let adapter = (&adapter_vs.root(), &cfg.adapter);
    if cfg.model == panacea_lm::TINY_RANDOM {
        let tiny = panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())?;
        let policy = tiny.model.with_adapter(Some(adapter));
        return Ok((tiny.base_vs, policy, adapter_vs, tiny.tokenizer, tiny.chat_template));
    }
    let mut base_vs = nn::VarStore::new(device);
    let pre = Pretrained::load(&cfg.model)?;
    let policy = pre.build(&mut base_vs, Some(adapter), cfg.dtype.kind())?;
    base_vs.freeze();
    Ok((base_vs, policy, adapter_vs, pre.tokenizer.clone(), pre.chat_template.clone()))
}

/// A rendered prompt and its token ids.
pub type Prompt = (String, Vec<i64>);

/// The train and eval prompts, rendered and tokenised, and the hashes of what was read. With
/// `data.chat_template` each prompt is one user turn through `template` (the model's own chat
/// template, or ChatML for a model without one) with the generation prompt; without it the
/// text is tokenised as it is.
pub fn load_prompts(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    template: &PromptTemplate,
) -> Result<LoadedPrompts, RlhfError> {
    load_prompts_with_report(cfg, tok, template).map(|(prompts, _)| prompts)
}

/// [`load_prompts`] with the prompt file's read report: with `data.skip_invalid` the
/// malformed lines it skipped, counted, the first few named by file, line and field (all
/// zero for the bundled sets, which are read strictly).
pub fn load_prompts_with_report(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    template: &PromptTemplate,
) -> Result<(LoadedPrompts, panacea_data::ReadReport), RlhfError> {
    let mut report = panacea_data::ReadReport::default();
    let (records, hashes) = match &cfg.data.prompts {
        PromptSource::Bundled { sets } => {
            let mut recs = Vec::new();
            let mut hashes = Vec::new();
            for s in sets {
                let set = match s {
                    BundledSet::Benign => PromptSet::Benign,
                    BundledSet::Harmful => PromptSet::Harmful,
                };
                recs.extend(set.load()?);
                let name = format!("bundled {}", set.file_name());
                hashes.push((name, panacea_run::sha256_hex(set.text().as_bytes())));
            }
            (recs, hashes)
        }
        PromptSource::File { path, file_format } => {
            let (records, read) =
                panacea_data::read_prompt_file(path, *file_format, cfg.data.skip_invalid)?;
            report = read;
            (records, vec![(path.display().to_string(), sha256_file(path)?)])
        }
    };
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for r in records {
        let text = if cfg.data.chat_template {
            template.user_prompt(&r.prompt).map_err(|e| RlhfError::Invalid {
                what: format!("prompt {}", r.id),
                reason: format!(
                    "the chat template refuses it: {e}; hint: set data.chat_template: false to \
                     tokenise prompts as they are"
                ),
            })?
        } else {
            r.prompt
        };
        let ids = tok.encode(&text)?;
        if ids.is_empty() || ids.len() > cfg.data.max_prompt_tokens {
            continue;
        }
        match r.split {
            Split::Train => train.push((text, ids)),
            Split::Eval => eval.push((text, ids)),
        }
    }
    if train.len() < cfg.train.batch_size || eval.is_empty() {
        return Err(RlhfError::Invalid {
            what: "prompts".into(),
            reason: format!(
                "only {} train and {} eval prompts fit data.max_prompt_tokens = {}; hint: raise \
                 it or lower train.batch_size",
                train.len(),
                eval.len(),
                cfg.data.max_prompt_tokens
            ),
        });
    }
    Ok(((train, eval, hashes), report))
}

/// The warning for the prompt lines that `data.skip_invalid` skipped.
fn skipped_prompts_warning(cfg: &TrainPpoConfig, read: &panacea_data::ReadReport) -> String {
    let file = match &cfg.data.prompts {
        PromptSource::File { path, .. } => path.display().to_string(),
        PromptSource::Bundled { .. } => "the bundled prompts".to_owned(),
    };
    format!(
        "{file}: skipped {} malformed prompt record(s) of {}; first:\n  {}",
        read.skipped,
        read.records + read.skipped + read.blank_lines,
        read.first_errors.join("\n  ")
    )
}

/// One reward source per objective, each built from its [`panacea_data::ScorerSpec`]
/// (learned score models are loaded onto `base`).
pub fn reward_sources(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    base: &Llama,
) -> Result<Vec<Box<dyn RewardSource>>, RlhfError> {
    cfg.objectives.iter().map(|o| reward_source(&o.name, o.kind, &o.source, tok, base)).collect()
}

/// The PPO trainer of `cfg` around `policy` (its adapter in `adapter_vs`), with one reward
/// source per objective.
pub fn build_trainer(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    policy: Llama,
    adapter_vs: nn::VarStore,
    sources: Vec<Box<dyn RewardSource>>,
) -> Result<PpoTrainer, RlhfError> {
    let parts = PpoParts {
        critic_adapter: cfg.adapter.clone(),
        objectives: cfg.objectives.iter().map(|o| o.objective()).collect(),
        sources,
        eos_ids: tok.eos_ids.clone(),
        pad_id: tok.pad_id,
        tokenizer: Some(tok.clone()),
        total_steps: cfg.train.steps,
        policy,
        adapter_vs,
    };
    PpoTrainer::new(cfg.trainer_config(), parts)
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:+.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The data cursor: a shuffled order of the train prompts, reshuffled each pass.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct PromptCursor {
    order: Vec<usize>,
    pos: usize,
}

impl PromptCursor {
    /// A cursor over `n` prompts whose first batch starts a shuffled pass.
    pub fn new(n: usize) -> Self {
        Self { order: (0..n).collect(), pos: n }
    }

    /// The next `b` prompts, reshuffling the order with `rng` at the start of each pass.
    pub fn next_batch(&mut self, prompts: &[Prompt], b: usize, rng: &mut impl Rng) -> PromptBatch {
        let mut batch = PromptBatch { prompts: Vec::with_capacity(b), ids: Vec::with_capacity(b) };
        while batch.len() < b {
            if self.pos >= self.order.len() {
                self.order.shuffle(rng);
                self.pos = 0;
            }
            let (text, ids) = &prompts[self.order[self.pos]];
            batch.prompts.push(text.clone());
            batch.ids.push(ids.clone());
            self.pos += 1;
        }
        batch
    }
}

/// The steering report of a trained policy: greedy answers to `prompts` under the base model
/// and under [`PreferenceSampler::steering_grid`], scored by every objective, compared with paired bootstrap
/// intervals over the prompts (1,000 resamples seeded with `seed`).
pub fn steering_evaluation<M: PpoPolicy>(
    t: &PpoTrainer<M>,
    prompts: &[Prompt],
    max_new_tokens: i64,
    batch_size: usize,
    seed: u64,
) -> Result<panacea_eval::SteeringReport, RlhfError> {
    let names: Vec<String> = t.objectives.iter().map(|o| o.name.clone()).collect();
    let base = evaluate_rows(t, prompts, None, max_new_tokens, batch_size)?;
    let grid = PreferenceSampler::steering_grid(names.len())?;
    let mut per_pref = Vec::with_capacity(grid.len());
    for pref in &grid {
        per_pref.push(evaluate_rows(t, prompts, Some(pref), max_new_tokens, batch_size)?);
    }
    let prefs: Vec<Vec<f64>> = grid.iter().map(|p| p.as_slice().to_vec()).collect();
    let options = panacea_eval::BootstrapOptions { seed, ..Default::default() };
    Ok(panacea_eval::steering_report(&names, &prefs, &base, &per_pref, &options)?)
}

/// Mean utility per objective of greedy responses to `prompts` under `pref` (None: the base
/// model, `Adapter::Off`).
fn evaluate<M: PpoPolicy>(
    t: &PpoTrainer<M>,
    prompts: &[Prompt],
    pref: Option<&PreferenceVector>,
    max_new_tokens: i64,
    batch_size: usize,
) -> Result<Vec<f64>, RlhfError> {
    let rows = evaluate_rows(t, prompts, pref, max_new_tokens, batch_size)?;
    let k = t.objectives.len();
    Ok((0..k).map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64).collect())
}

/// The utility vector [P][K] of the greedy response to each of `prompts` under `pref` (None:
/// the base model, `Adapter::Off`).
fn evaluate_rows<M: PpoPolicy>(
    t: &PpoTrainer<M>,
    prompts: &[Prompt],
    pref: Option<&PreferenceVector>,
    max_new_tokens: i64,
    batch_size: usize,
) -> Result<Vec<Vec<f64>>, RlhfError> {
    let tok = t.tokenizer().ok_or_else(|| RlhfError::Invalid {
        what: "evaluation".into(),
        reason: "needs the tokenizer to decode responses".into(),
    })?;
    let gen_cfg = GenerateConfig {
        max_new_tokens,
        sampling: Sampling::Greedy,
        eos_ids: tok.eos_ids.clone(),
        pad_id: tok.pad_id,
    };
    let device = t.policy.device();
    let mut rows: Vec<Vec<f64>> = Vec::new();
    // Greedy decoding draws nothing from the RNG; it is only there to satisfy the signature.
    let mut unused = rand::rngs::mock::StepRng::new(0, 0);
    for chunk in prompts.chunks(batch_size.max(1)) {
        let ids: Vec<Vec<i64>> = chunk.iter().map(|(_, i)| i.clone()).collect();
        let texts: Vec<String> = chunk.iter().map(|(p, _)| p.clone()).collect();
        let pref_t = pref.map(|p| {
            p.to_tensor(device)
                .to_kind(Kind::Float)
                .unsqueeze(0)
                .expand([ids.len() as i64, -1], false)
        });
        let adapter = match &pref_t {
            Some(p) => Adapter::On { pref: p },
            None => Adapter::Off,
        };
        let g = t.policy.generate(&ids, adapter, &gen_cfg, &mut unused)?;
        let responses = response_texts(&g, tok)?;
        let view = RolloutView::of(&g, &texts, &responses);
        rows.extend(score_all(t.sources(), &view)?);
    }
    let k = t.objectives.len();
    let raw = Tensor::from_slice(&rows.concat()).view([rows.len() as i64, k as i64]);
    let util = utilities(&t.objectives, &raw)?.to_kind(Kind::Double);
    Ok(Vec::try_from(util)?)
}
