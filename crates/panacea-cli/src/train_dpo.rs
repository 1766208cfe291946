//! `panacea train-dpo`: multi-objective DPO with a preference-conditioned SVD-LoRA adapter
//! (Panacea, arXiv 2402.02030; method.md §7). The training loop is [`train`], top to bottom:
//! config → device → model + adapter → pairs → reference cache → run folder → loop (batch, λ,
//! `DpoTrainer::step`, metrics, evaluation, checkpoints) → final evaluation and checkpoint.
//! [`run`] is the subcommand around it; `eval-front --compare` calls [`train`] for its
//! baselines ([`Args::new_run`]).
//!
//! Without `--config` the embedded default (`configs/dpo-default.yaml`: SmolLM2-135M, the
//! bundled pairs, two objectives, CPU) runs. `model: tiny-random` is a 2-layer D = 64 Llama
//! initialised from the config's `seed`, with the SmolLM2 tokenizer (tests only, as in
//! train-ppo and train-rm). `--resume RUN_DIR` continues a run from its last checkpoint: the
//! adapter, AdamW's moments, the step, the data order and the RNG streams are restored. Ctrl-C
//! finishes the step, writes a checkpoint and exits with code 130.
//!
//! Run folder (the shared [`crate::run_dir::RunDir`]): `config.yaml` (resolved), `command.txt`,
//! `manifest.json`, `metrics.jsonl`, `.gitignore`, plus `dpo_data.json` (what tokenisation kept
//! and dropped, the base-model hash) and `checkpoints/step-NNNNNN/` (the native adapter folder
//! files, `optim.safetensors` and `trainer_state.json`, staged and renamed into place by
//! [`crate::run_dir::RunDir::save_checkpoint`], the layout PPO uses too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use panacea_core::checkpoint::{load_adapter, save_adapter, AdapterFolderConfig, BaseModelId};
use panacea_core::config::{parse_config, to_yaml};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::preference::PreferenceVector;
use panacea_core::seed::{seed_everything, RunRng, RunRngState};
use panacea_data::ReadOptions;
use panacea_dpo::data::{encode_pairs, EncodeReport};
use panacea_dpo::ref_cache::{hash_pairs, hash_var_store, CacheStatus};
use panacea_dpo::{
    DpoRunConfig, DpoTrainer, EncodedPair, PairBatch, PairLoader, RefCacheKey, RefLogpCache,
    StepPreference,
};
use panacea_lm::{ChatTemplate, Llama, LoadedModel};
use serde::{Deserialize, Serialize};

use crate::progress::Progress;
use crate::run_dir::{
    git_hash, libtorch_version, now_secs, sha256_file, utc_stamp, write_atomic, Manifest, RunDir,
};
use crate::train_ppo::Trained;

/// The embedded default run (`configs/dpo-default.yaml`).
const DEFAULT_CONFIG: &str = include_str!("../../../configs/dpo-default.yaml");

/// Flags of `panacea train-dpo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config; without it the embedded default runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.steps=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`); the
    /// adapter, the losses and the optimiser state stay f32.
    #[arg(long)]
    dtype: Option<DType>,
    /// Skip malformed pair lines (counted and reported, the first few by file and line)
    /// instead of stopping at the first one.
    #[arg(long)]
    skip_invalid: bool,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Parent folder of new run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// The run folder's name after its date (default: the config file's stem).
    #[arg(long)]
    name: Option<String>,
}

impl Args {
    /// A new run of `config` with `sets` overrides in `runs_dir/<date>-<name>` (eval-front's
    /// baselines).
    pub(crate) fn new_run(
        config: PathBuf,
        sets: Vec<String>,
        device: Option<DeviceChoice>,
        runs_dir: PathBuf,
        name: String,
    ) -> Self {
        Self {
            config: Some(config),
            sets,
            device,
            dtype: None,
            skip_invalid: false,
            resume: None,
            runs_dir,
            name: Some(name),
        }
    }
}

/// AdamW's moments in a checkpoint folder.
const OPTIM_FILE: &str = "optim.safetensors";

/// Saved with every checkpoint: what a resumed run needs besides the adapter and the moments.
#[derive(Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    rng: RunRngState,
    loader: PairLoader,
}

/// `panacea train-dpo`.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let t = train(args)?;
    Ok(if t.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// The training loop; returns the run folder and whether Ctrl-C stopped it early.
pub(crate) fn train(args: Args) -> Result<Trained> {
    // 1. Config: file (or the embedded default, or the resumed run's), overrides, validation.
    let (text, source) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            let p = dir.join("config.yaml");
            (std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?, p)
        }
        (None, Some(p)) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.clone(),
        ),
        (None, None) => (DEFAULT_CONFIG.to_owned(), PathBuf::from("dpo-default.yaml")),
    };
    let mut cfg: DpoRunConfig = parse_config(&text, &source.display().to_string(), &args.sets)?;
    if let Some(d) = args.device {
        cfg.device = d;
    }
    if let Some(dtype) = args.dtype {
        // Before the config is saved, so the run folder (and a resume) records it.
        cfg.dtype = dtype;
    }
    let k = cfg.k();
    let device = cfg.device.resolve()?;
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    eprintln!("running on {device:?}, dtype {}, {} objectives {:?}", cfg.dtype, k, cfg.objectives);
    let mut rng = seed_everything(cfg.seed);

    // 2. Model: the frozen base, and the policy view with the SVD-LoRA adapter on it.
    let loaded = load_base(&cfg, device)?;
    let base_hash = hash_var_store(&loaded.base_vs)?;
    let adapter_vs = tch::nn::VarStore::new(device);
    let policy: Llama = loaded.model.with_adapter(Some((&adapter_vs.root(), &cfg.adapter)));
    let folder_cfg = AdapterFolderConfig::new(
        &cfg.adapter,
        &cfg.objectives,
        BaseModelId { name: cfg.model.clone(), hash: base_hash.clone() },
    )?;

    // 3. Pairs: read, tokenise (ChatML prompt + response + EOS), drop and count the unusable.
    let template = ChatTemplate::default();
    let load = |path: &Path| -> Result<Vec<panacea_data::PairRecord>> {
        let path = resolve_data_path(path);
        let opts = ReadOptions {
            format: cfg.data.format,
            dims: cfg.objectives.clone(),
            skip_invalid: args.skip_invalid,
        };
        crate::train_rm::load_pairs_reporting(&path, opts)
    };
    let encode = |mut records: Vec<panacea_data::PairRecord>,
                  limit: usize,
                  what: &str|
     -> Result<(Vec<EncodedPair>, EncodeReport)> {
        if limit > 0 {
            records.truncate(limit);
        }
        let (pairs, report) =
            encode_pairs(&records, k, &loaded.tokenizer, &template, cfg.data.max_len)?;
        eprintln!(
            "{what} pairs: {} kept, {} dropped (identical {}, unlabelled {}, prompt too long {}), \
             {} truncated, labelled per objective {:?}",
            report.kept,
            report.dropped(),
            report.dropped_identical,
            report.dropped_unlabelled,
            report.dropped_prompt_too_long,
            report.truncated,
            report.labelled_per_obj
        );
        if pairs.is_empty() {
            bail!("no usable {what} pairs");
        }
        Ok((pairs, report))
    };
    let mut train_records = load(&cfg.data.train)?;
    let eval_records = match &cfg.data.eval {
        Some(p) => Some(load(p)?),
        None if cfg.data.eval_prompt_stride > 0 => {
            let (train_part, eval_part) =
                split_by_prompt(std::mem::take(&mut train_records), cfg.data.eval_prompt_stride);
            train_records = train_part;
            if train_records.is_empty() || eval_part.is_empty() {
                bail!(
                    "data.eval_prompt_stride = {} leaves an empty split of {}",
                    cfg.data.eval_prompt_stride,
                    cfg.data.train.display()
                );
            }
            Some(eval_part)
        }
        None => None,
    };
    let (train, train_report) = encode(train_records, cfg.data.max_train_pairs, "train")?;
    let (eval, eval_report) = match eval_records {
        Some(r) => {
            // Interleaved so that a `max_eval_pairs` cap keeps pairs of every eval prompt
            // (the file holds each prompt's pairs in a run).
            let (pairs, report) = encode(interleave_by_prompt(r), cfg.data.max_eval_pairs, "eval")?;
            (Some(pairs), Some(report))
        }
        None => (None, None),
    };

    // 4. Reference log-prob caches (train and eval), keyed by data, base weights and settings.
    let settings_key = format!(
        "seq_logp={:?} dtype={} device={}",
        cfg.dpo.seq_logp,
        cfg.dtype,
        if device.is_cuda() { "cuda" } else { "cpu" }
    );
    let cache_dir = cfg.ref_cache.dir.clone().unwrap_or_else(|| {
        panacea_lm::load::cache_root()
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("dpo-ref-logp")
    });
    let open_cache = |pairs: &[EncodedPair], what: &str| -> Option<RefLogpCache> {
        if !cfg.ref_cache.enabled {
            return None;
        }
        let key = RefCacheKey {
            data: hash_pairs(pairs),
            base_model: base_hash.clone(),
            settings: settings_key.clone(),
        };
        let (cache, status) = RefLogpCache::open(&cache_dir, key);
        match status {
            CacheStatus::New => {
                eprintln!("{what} reference cache: new ({})", cache.path().display())
            }
            CacheStatus::Loaded { entries } => {
                eprintln!("{what} reference cache: {entries} pairs ({})", cache.path().display())
            }
            CacheStatus::Invalidated { reason } => {
                eprintln!("{what} reference cache: invalidated, rebuilding ({reason})")
            }
        }
        Some(cache)
    };
    let mut train_cache = open_cache(&train, "train");
    let mut eval_cache = eval.as_deref().and_then(|e| open_cache(e, "eval"));

    // 5. Trainer, run folder, resume.
    let mut trainer = DpoTrainer::new(policy, adapter_vs, cfg.dpo.clone(), k)?;
    let mut loader = PairLoader::new(train.len(), cfg.train.batch_size)?;
    let mut start = 0;
    let mut run = match &args.resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let (_, ckpt, state): (u64, PathBuf, TrainerState) = run
                .latest_checkpoint()?
                .with_context(|| format!("{} has no checkpoint to resume from", dir.display()))?;
            load_adapter(&ckpt, &trainer.adapter_vs, &folder_cfg)?;
            trainer.restore_optimizer(&ckpt.join(OPTIM_FILE), state.step)?;
            rng = RunRng::from_state(&state.rng);
            loader = state.loader;
            start = state.step;
            eprintln!("resuming {} from step {start}", dir.display());
            run
        }
        None => {
            let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned());
            let name = args.name.clone().or(stem).unwrap_or_default();
            let run = RunDir::create(&args.runs_dir, &name, &to_yaml(&cfg)?)?;
            let mut data_hashes = Vec::new();
            for p in std::iter::once(&cfg.data.train).chain(cfg.data.eval.as_ref()) {
                let p = resolve_data_path(p);
                data_hashes.push((p.display().to_string(), sha256_file(&p)?));
            }
            run.write_manifest(&Manifest {
                job: "train-dpo".into(),
                git_hash: git_hash(),
                libtorch_version: libtorch_version(),
                device: format!("{device:?}"),
                seed: cfg.seed,
                data_hashes,
                started_utc: utc_stamp(now_secs()).1,
            })?;
            let info = serde_json::json!({
                "base_model": cfg.model,
                "base_model_hash": base_hash,
                "train_pairs": train_report,
                "eval_pairs": eval_report,
            });
            write_atomic(
                &run.file("dpo_data.json"),
                serde_json::to_string_pretty(&info)?.as_bytes(),
            )?;
            run
        }
    };
    eprintln!("run folder {}", run.path.display());
    let interrupt = crate::interrupt::Interrupt::install()?;

    // 6. The loop.
    let steps = cfg.train.steps;
    let bar = Progress::new(steps as u64, start as u64);
    let evaluate = |trainer: &DpoTrainer<Llama>, cache: &mut Option<RefLogpCache>, step: usize| {
        eval.as_deref().map(|pairs| evaluate(trainer, pairs, &cfg, cache, step)).transpose()
    };
    if start == 0 {
        // Before the first step the policy is the reference (σ = s = 0), so only the base
        // model's ranking accuracy is new information; it also fills the eval reference cache.
        if let Some(pairs) = eval.as_deref() {
            let line = evaluate_base(&trainer, pairs, &cfg, &mut eval_cache)?;
            bar.println(&line.human);
            run.log_metrics(&line.json)?;
        }
    }
    for step in start..steps {
        let t0 = Instant::now();
        let idx = loader.next_batch(train.len(), &mut rng.data);
        let rows: Vec<&EncodedPair> = idx.iter().map(|&i| &train[i]).collect();
        let batch =
            PairBatch::collate(&rows, k, loaded.tokenizer.pad_id, cfg.dpo.seq_logp, device)?;
        let m = if cfg.train.per_pair_preference {
            let prefs = cfg.preference.sample_rows(k, rows.len(), &mut rng.preference)?;
            trainer.step(&batch, StepPreference::PerRow(&prefs), train_cache.as_mut())?
        } else {
            let pref = cfg.preference.sample(k, &mut rng.preference)?;
            trainer.step(&batch, StepPreference::Shared(&pref), train_cache.as_mut())?
        };
        let done = step + 1;
        let ms = t0.elapsed().as_millis();
        bar.step(format!("loss {:.3} acc {:?}", m.loss, round2(&m.accuracy_per_obj)));
        if done % cfg.train.log_every == 0 || done == steps {
            let mut j = BTreeMap::new();
            j.insert("step".to_owned(), serde_json::json!(done));
            j.insert("epoch".to_owned(), serde_json::json!(loader.epoch()));
            j.insert("dpo/loss".to_owned(), serde_json::json!(m.loss));
            for (i, name) in cfg.objectives.iter().enumerate() {
                j.insert(format!("dpo/loss/{name}"), serde_json::json!(m.loss_per_obj[i]));
                j.insert(format!("dpo/accuracy/{name}"), serde_json::json!(m.accuracy_per_obj[i]));
                j.insert(format!("dpo/pref/{name}"), serde_json::json!(m.pref[i]));
            }
            j.insert("dpo/margin".to_owned(), serde_json::json!(m.margin_mean));
            j.insert("dpo/reward/response_0".to_owned(), serde_json::json!(m.reward_mean[0]));
            j.insert("dpo/reward/response_1".to_owned(), serde_json::json!(m.reward_mean[1]));
            j.insert("dpo/grad_norm".to_owned(), serde_json::json!(m.grad_norm));
            j.insert("dpo/lr".to_owned(), serde_json::json!(m.lr));
            j.insert("dpo/ref_from_cache".to_owned(), serde_json::json!(m.ref_from_cache));
            j.insert("time/step_ms".to_owned(), serde_json::json!(ms));
            j.insert(
                "time/pairs_per_s".to_owned(),
                serde_json::json!(m.pairs as f64 * 1000.0 / ms.max(1) as f64),
            );
            run.log_metrics(&serde_json::to_value(&j)?)?;
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
            bar.println(&format!(
                "step {done} | loss {:.4} | {} | margin {:.3} | pref {:?} | {ms} ms",
                m.loss,
                per.join(" "),
                m.margin_mean,
                round2(&m.pref)
            ));
        }
        let last = done == steps;
        if (cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0) || last {
            if let Some(line) = evaluate(&trainer, &mut eval_cache, done)? {
                bar.println(&line.human);
                run.log_metrics(&line.json)?;
            }
        }
        let interrupted = interrupt.requested();
        if (cfg.train.save_every > 0 && done % cfg.train.save_every == 0) || last || interrupted {
            let state = TrainerState { step: done, rng: rng.state(), loader: loader.clone() };
            let dir = run.save_checkpoint(done as u64, &state, |dir| {
                save_adapter(dir, &trainer.adapter_vs, &folder_cfg)?;
                Ok(trainer.save_optimizer(&dir.join(OPTIM_FILE))?)
            })?;
            for c in [&mut train_cache, &mut eval_cache].into_iter().flatten() {
                c.save()?;
            }
            bar.println(&format!("saved {}", dir.display()));
        }
        if interrupted {
            bar.finish();
            eprintln!(
                "interrupted after step {done}; continue with `panacea train-dpo --resume {}`",
                run.path.display()
            );
            return Ok(Trained { run_dir: run.path.clone(), interrupted: true });
        }
    }
    bar.finish();
    eprintln!("done: {steps} steps; run folder {}", run.path.display());
    Ok(Trained { run_dir: run.path.clone(), interrupted: false })
}

/// The frozen base model and its tokenizer: `cfg.model` loaded from the cache, or for
/// `tiny-random` a 2-layer random Llama initialised from `cfg.seed` (SmolLM2 tokenizer).
pub(crate) fn load_base(cfg: &DpoRunConfig, device: tch::Device) -> Result<LoadedModel> {
    if cfg.model == panacea_lm::TINY_RANDOM {
        return Ok(panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())?);
    }
    panacea_lm::load_model(&cfg.model, device, cfg.dtype.kind())
        .with_context(|| format!("loading model {}", cfg.model))
}

/// One evaluation record: a log line and the metrics.jsonl object.
struct EvalLine {
    human: String,
    json: serde_json::Value,
}

/// The eval pairs collated in training-sized batches.
fn eval_batches<'a>(
    pairs: &'a [EncodedPair],
    cfg: &'a DpoRunConfig,
    dev: tch::Device,
) -> impl Iterator<Item = Result<PairBatch>> + 'a {
    pairs.chunks(cfg.train.batch_size.max(1)).map(move |chunk| {
        let rows: Vec<&EncodedPair> = chunk.iter().collect();
        Ok(PairBatch::collate(&rows, cfg.k(), 0, cfg.dpo.seq_logp, dev)?)
    })
}

/// Implicit-reward and likelihood-ranking accuracy per objective on the eval pairs under each
/// vertex λ = e_j, pooled over batches (weighted by labelled pairs).
fn evaluate(
    trainer: &DpoTrainer<Llama>,
    pairs: &[EncodedPair],
    cfg: &DpoRunConfig,
    cache: &mut Option<RefLogpCache>,
    step: usize,
) -> Result<EvalLine> {
    let k = cfg.k();
    let dev = panacea_lm::CausalLm::device(&trainer.model);
    let mut j = BTreeMap::new();
    j.insert("step".to_owned(), serde_json::json!(step));
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
            j.insert(format!("eval/e_{tag}/accuracy/{name}"), serde_json::json!(acc[i] / n));
            j.insert(
                format!("eval/e_{tag}/ranking_accuracy/{name}"),
                serde_json::json!(policy_rank[i] / n),
            );
            j.insert(
                format!("eval/base/ranking_accuracy/{name}"),
                serde_json::json!(base_rank[i] / n),
            );
            j.insert(format!("eval/e_{tag}/loss/{name}"), serde_json::json!(loss[i] / n));
            human.push_str(&format!(
                " acc[{name}] {:.2} rank[{name}] {:.2} (base {:.2})",
                acc[i] / n,
                policy_rank[i] / n,
                base_rank[i] / n
            ));
        }
    }
    log_accuracy_hv(&front, &mut j, &mut human)?;
    Ok(EvalLine { human, json: serde_json::to_value(&j)? })
}

/// Logs `eval/hv`: the hypervolume of ranking-accuracy points (reference 0: accuracies lie in
/// [0, 1]).
fn log_accuracy_hv(
    front: &[Vec<f64>],
    j: &mut BTreeMap<String, serde_json::Value>,
    human: &mut String,
) -> Result<()> {
    let k = front.first().map_or(0, Vec::len);
    let hv = panacea_eval::hypervolume(
        front,
        panacea_eval::Sense::Max,
        &panacea_eval::RefPoint::Explicit(vec![0.0; k]),
    )?;
    j.insert("eval/hv".to_owned(), serde_json::json!(hv.value));
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
) -> Result<EvalLine> {
    let k = cfg.k();
    let dev = panacea_lm::CausalLm::device(&trainer.model);
    let (mut base_rank, mut count) = (vec![0.0; k], vec![0.0; k]);
    for batch in eval_batches(pairs, cfg, dev) {
        let batch = batch?;
        let (reference, _) = trainer.reference_logps(&batch, cache.as_mut())?; // [2B]
        let rank = panacea_dpo::loss::ranking_accuracy(&reference, &batch.labels)?; // [K]
        let labelled =
            batch.labels.ne(0).sum_dim_intlist([0i64].as_slice(), false, tch::Kind::Float); // [K]
        for i in 0..k {
            let n = labelled.double_value(&[i as i64]);
            base_rank[i] += rank.double_value(&[i as i64]) * n;
            count[i] += n;
        }
    }
    let mut j = BTreeMap::new();
    j.insert("step".to_owned(), serde_json::json!(0));
    let mut human = format!("eval step 0 | {} pairs |", pairs.len());
    for (i, name) in cfg.objectives.iter().enumerate() {
        let acc = base_rank[i] / count[i].max(1.0);
        j.insert(format!("eval/base/ranking_accuracy/{name}"), serde_json::json!(acc));
        human.push_str(&format!(" base rank[{name}] {acc:.2}"));
    }
    // The start of the `eval/hv` curve: every λ ranks like the base here, so the front is the
    // base's one point.
    let base_point: Vec<f64> = (0..k).map(|i| base_rank[i] / count[i].max(1.0)).collect();
    log_accuracy_hv(&[base_point], &mut j, &mut human)?;
    Ok(EvalLine { human, json: serde_json::to_value(&j)? })
}

/// Records reordered round-robin over prompts (first pair of every prompt, then the second,
/// ...), each prompt's pairs keeping their order; prompts in first-appearance order.
fn interleave_by_prompt(records: Vec<panacea_data::PairRecord>) -> Vec<panacea_data::PairRecord> {
    let mut groups: Vec<Vec<panacea_data::PairRecord>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
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
fn split_by_prompt(
    records: Vec<panacea_data::PairRecord>,
    stride: usize,
) -> (Vec<panacea_data::PairRecord>, Vec<panacea_data::PairRecord>) {
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

/// A data path as given, else relative to the workspace (so the embedded default works from
/// any working directory of a source checkout).
pub(crate) fn resolve_data_path(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        p.to_owned()
    } else {
        let w = panacea_data::workspace_path(&p.to_string_lossy());
        if w.exists() {
            w
        } else {
            p.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_default_config_is_valid() {
        let cfg: panacea_dpo::DpoRunConfig =
            panacea_core::config::parse_config(super::DEFAULT_CONFIG, "dpo-default.yaml", &[])
                .expect("the embedded default parses and validates");
        assert_eq!(cfg.k(), 2);
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
            line,
        }
    }

    #[test]
    fn split_by_prompt_moves_whole_prompts() {
        // Prompts in first-appearance order: x (0), y (1), z (2), w (3); stride 2 → y and w.
        let records = ["x", "y", "x", "z", "y", "w"].map(|p| record(p, 1)).to_vec();
        let (train, eval) = super::split_by_prompt(records, 2);
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
        let lines: Vec<usize> =
            super::interleave_by_prompt(records).iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 4, 5, 2, 6, 3]);
    }
}
