//! `panacea train-ppo`: preference-conditioned multi-objective PPO (Panacea, arXiv 2402.02030).
//!
//! [`run`] is the whole training loop, top to bottom (style.md §3.1): draw a prompt batch, draw
//! λ **before** generation, call `PpoTrainer::step`, log, checkpoint. After the last step it
//! generates greedily on held-out prompts under each vertex preference e_j (and the base model)
//! and prints the objective vectors, which is where the Panacea property shows: e_j should
//! favour objective j.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use panacea_core::checkpoint::{load_adapter, save_adapter, AdapterFolderConfig, BaseModelId};
use panacea_core::config::{parse_config, to_yaml};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::objective::utilities;
use panacea_core::seed::RunRngState;
use panacea_core::{seed_everything, Adapter, PreferenceSampler, PreferenceVector, RunRng};
use panacea_data::{
    ConciseScorer, HarmlessScorer, LengthMeasure, NegativeScorer, PositiveScorer, PromptSet, Split,
};
use panacea_lm::generate::response_texts;
use panacea_lm::{
    generate_ids, init_random, ChatTemplate, GenerateConfig, Llama, LlamaConfig, Pretrained,
    Sampling, Tokenizer,
};
use panacea_rlhf::config::{BundledSet, PromptSource, SourceConfig, TrainPpoConfig};
use panacea_rlhf::rollout::{score_all, ModelSource, RewardSource, RolloutView, ScorerSource};
use panacea_rlhf::score::load_score_model;
use panacea_rlhf::testing::{EvenTokenFraction, NegativeLength, OddTokenFraction};
use panacea_rlhf::{PpoParts, PpoTrainer, PromptBatch};
use rand::seq::SliceRandom;
use rand::Rng;
use tch::{nn, Kind, Tensor};

use crate::interrupt::Interrupt;
use crate::progress::Progress;
use crate::run_dir::{self, Manifest, RunDir};

/// The embedded default: SmolLM2-135M, the bundled benign prompts, two built-in objectives,
/// sized for a 2-core CPU.
const DEFAULT_CONFIG: &str = include_str!("../../../configs/ppo-default.yaml");

/// Flags of `panacea train-ppo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config (default: the embedded configs/ppo-default.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.steps=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`); adapters,
    /// critic, heads and optimiser state stay f32.
    #[arg(long)]
    dtype: Option<DType>,
    /// Continue the run in this folder from its newest checkpoint (its config.yaml is used;
    /// `--set` may still override, e.g. `--set train.steps=40` to train longer).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Folder that receives the run folder.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// The run folder's name after its date (default: the config file's stem).
    #[arg(long)]
    name: Option<String>,
}

impl Args {
    /// A new run of `config` with `set` overrides in `runs_dir/<date>-<name>` (eval-front's
    /// baselines).
    pub(crate) fn new_run(
        config: PathBuf,
        set: Vec<String>,
        device: Option<DeviceChoice>,
        runs_dir: PathBuf,
        name: String,
    ) -> Self {
        Self {
            config: Some(config),
            set,
            device,
            dtype: None,
            resume: None,
            runs_dir,
            name: Some(name),
        }
    }
}

/// How a training run ended.
pub(crate) struct Trained {
    /// Its run folder.
    pub(crate) run_dir: PathBuf,
    /// True when Ctrl-C stopped it before the last step.
    pub(crate) interrupted: bool,
}

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

/// `panacea train-ppo`.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let t = train(args)?;
    Ok(if t.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// The training loop; returns the run folder.
pub(crate) fn train(args: Args) -> Result<Trained> {
    // Config: struct defaults < YAML < --set, validated in one pass.
    let (yaml, source, stem) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            let p = dir.join("config.yaml");
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}; hint: pass a run folder", p.display()))?;
            (text, p.display().to_string(), String::new())
        }
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            let stem = p.file_stem().map_or("ppo".into(), |s| s.to_string_lossy().into_owned());
            (text, p.display().to_string(), stem)
        }
        (None, None) => {
            (DEFAULT_CONFIG.to_owned(), "<embedded ppo-default.yaml>".into(), "ppo-default".into())
        }
    };
    let mut cfg: TrainPpoConfig = parse_config(&yaml, &source, &args.set)?;
    if let Some(dtype) = args.dtype {
        // Before the config is saved, so the run folder (and a resume) records it.
        cfg.dtype = dtype;
    }
    let device = match args.device {
        Some(d) => d,
        None => cfg.device.parse().context("config `device`")?,
    }
    .resolve()?;
    tracing::info!("running on {device:?}, dtype {}, seed {}", cfg.dtype, cfg.seed);
    let mut rng = seed_everything(cfg.seed);
    let k = cfg.objectives.len();

    // Model, prompts, reward sources, trainer.
    let (base_vs, policy, adapter_vs, tokenizer) = load_policy(&cfg, device)?;
    let (train_prompts, eval_prompts, data_files) = load_prompts(&cfg, &tokenizer)?;
    let mut trainer = build_trainer(&cfg, &tokenizer, policy, adapter_vs, cfg.train.steps)?;
    tracing::info!(
        "{} train / {} eval prompts; base {} tensors frozen; adapter {} tensors trainable",
        train_prompts.len(),
        eval_prompts.len(),
        base_vs.variables().len(),
        trainer.adapter_vs.trainable_variables().len()
    );

    // Run folder.
    // The same recipe as DPO, so PPO and DPO adapters of one base carry the same base hash.
    let base_hash = panacea_dpo::ref_cache::hash_var_store(&base_vs)?;
    let folder_cfg = AdapterFolderConfig::new(
        &cfg.model.adapter,
        &cfg.objectives.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        BaseModelId { name: cfg.model.name.clone(), hash: base_hash.clone() },
    )?;
    let n_train = train_prompts.len();
    let (mut run, start, mut cursor) = match &args.resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let (step, ckpt, state): (u64, PathBuf, LoopState) =
                run.latest_checkpoint()?.with_context(|| {
                    format!("{} has no complete checkpoint to resume from", dir.display())
                })?;
            load_adapter(&ckpt, &trainer.adapter_vs, &folder_cfg)?;
            trainer.restore_state(&ckpt)?;
            if state.cursor.order.len() != n_train {
                bail!(
                    "{}: the checkpoint's data cursor covers {} prompts, the data now has {n_train}; \
                     hint: the prompt files changed since the run started",
                    ckpt.display(),
                    state.cursor.order.len()
                );
            }
            rng = RunRng::from_state(&state.rng);
            eprintln!("resuming {} from step {step}", run.path.display());
            (run, step, state.cursor)
        }
        None => {
            let name = args.name.as_deref().unwrap_or(&stem);
            let run = RunDir::create(&args.runs_dir, name, &to_yaml(&cfg)?)?;
            let mut data_hashes = vec![("base model weights".to_owned(), base_hash)];
            for f in &data_files {
                data_hashes.push((f.display().to_string(), run_dir::sha256_file(f)?));
            }
            run.write_manifest(&Manifest {
                job: "train-ppo".into(),
                git_hash: run_dir::git_hash(),
                libtorch_version: run_dir::libtorch_version(),
                device: format!("{device:?}"),
                seed: cfg.seed,
                data_hashes,
                started_utc: run_dir::utc_stamp(run_dir::now_secs()).1,
            })?;
            (run, 0, PromptCursor::new(n_train))
        }
    };
    eprintln!("run folder: {}", run.path.display());
    let interrupt = Interrupt::install()?;

    // The loop.
    let names: Vec<String> = cfg.objectives.iter().map(|o| o.name.clone()).collect();
    let progress = Progress::new(cfg.train.steps, start);
    let save =
        |run: &RunDir, trainer: &PpoTrainer, step: u64, rng: &RunRng, cursor: &PromptCursor| {
            let state = LoopState { step, rng: rng.state(), cursor: cursor.clone() };
            run.save_checkpoint(step, &state, |dir| {
                save_adapter(dir, &trainer.adapter_vs, &folder_cfg)?;
                Ok(trainer.save_state(dir)?)
            })
        };
    // The hypervolume curve: a small λ grid on a few eval prompts, against a reference fixed
    // by the base model's vector (so values are comparable across steps and resumes).
    let hv_prompts = &eval_prompts[..eval_prompts.len().min(cfg.train.hv_prompts)];
    let hv_grid = PreferenceSampler::DasDennis { h: 2 }.grid(k)?;
    let hv_reference: Option<Vec<f64>> = if cfg.train.hv_every > 0 {
        let base = evaluate(
            &trainer,
            hv_prompts,
            None,
            cfg.ppo.rollout.max_new_tokens,
            cfg.train.batch_size,
        )?;
        Some(base.iter().map(|x| x - 1.0).collect())
    } else {
        None
    };
    for step in start + 1..=cfg.train.steps {
        let t0 = Instant::now();
        let batch = cursor.next_batch(&train_prompts, cfg.train.batch_size, &mut rng.data);
        // λ is drawn before generation and fixed for the whole step (per row when configured).
        let prefs = if cfg.train.preference_per_row {
            cfg.preference.sample_rows(k, batch.len(), &mut rng.preference)?
        } else {
            vec![cfg.preference.sample(k, &mut rng.preference)?]
        };
        let m =
            trainer.step(&batch, &prefs, &mut rng).with_context(|| format!("PPO step {step}"))?;
        let ms = t0.elapsed().as_millis();
        let scores: Vec<String> =
            names.iter().zip(&m.score_mean).map(|(n, s)| format!("{n} {s:.3}")).collect();
        progress.step(format!("{} | kl {:.3}", scores.join(" "), m.kl));
        if step % cfg.train.log_every == 0 || step == cfg.train.steps {
            let mut json = m.to_json(&trainer.objectives);
            json["time_ms"] = serde_json::json!(ms);
            run.log_metrics(&json)?;
            let scores: Vec<String> = names
                .iter()
                .zip(&m.score_mean)
                .map(|(n, s)| format!("score[{n}] {s:.3}"))
                .collect();
            progress.println(&format!(
                "step {step} | loss {:.3} | vloss {:.3} | kl {:.3} | {} | pref {:?} | len {:.1} | {ms} ms",
                m.policy_loss,
                m.value_loss,
                m.kl,
                scores.join(" "),
                m.pref.iter().map(|p| (p * 100.0).round() / 100.0).collect::<Vec<_>>(),
                m.response_len
            ));
        }
        if let Some(reference) = hv_reference.as_ref().filter(|_| step % cfg.train.hv_every == 0) {
            let mut front = Vec::with_capacity(hv_grid.len());
            for pref in &hv_grid {
                let max_new = cfg.ppo.rollout.max_new_tokens;
                front.push(evaluate(
                    &trainer,
                    hv_prompts,
                    Some(pref),
                    max_new,
                    cfg.train.batch_size,
                )?);
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
            progress.println(&format!(
                "step {step} | hypervolume {:.4} over {} λ × {} prompts (reference {})",
                hv.value,
                hv_grid.len(),
                hv_prompts.len(),
                fmt_vec(reference)
            ));
        }
        let interrupted = interrupt.requested();
        if (cfg.train.save_every > 0 && step % cfg.train.save_every == 0)
            || step == cfg.train.steps
            || interrupted
        {
            let dir = save(&run, &trainer, step, &rng, &cursor)?;
            progress.println(&format!("checkpoint {}", dir.display()));
        }
        if interrupted {
            progress.finish();
            eprintln!(
                "interrupted after step {step}; continue with `panacea train-ppo --resume {}`",
                run.path.display()
            );
            return Ok(Trained { run_dir: run.path.clone(), interrupted: true });
        }
    }
    progress.finish();

    // After training: greedy responses on held-out prompts under the base model and under
    // each vertex preference, scored by every objective.
    let eval = &eval_prompts[..eval_prompts.len().min(cfg.train.eval_prompts)];
    let mut report = serde_json::Map::new();
    let base_vec =
        evaluate(&trainer, eval, None, cfg.ppo.rollout.max_new_tokens, cfg.train.batch_size)?;
    eprintln!(
        "objective vectors on {} held-out prompts (mean utility; {}):",
        eval.len(),
        names.join(", ")
    );
    eprintln!("  base model        {}", fmt_vec(&base_vec));
    report.insert("base".into(), serde_json::json!(base_vec));
    for (j, name) in names.iter().enumerate() {
        let pref = PreferenceVector::vertex(k, j)?;
        let v = evaluate(
            &trainer,
            eval,
            Some(&pref),
            cfg.ppo.rollout.max_new_tokens,
            cfg.train.batch_size,
        )?;
        eprintln!("  λ = e_{} ({:<8}) {}", j + 1, name, fmt_vec(&v));
        report.insert(format!("e{}", j + 1), serde_json::json!(v));
    }
    report.insert("objectives".into(), serde_json::json!(names));
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
    run_dir::write_atomic(&run.file("final_eval.json"), format!("{text}\n").as_bytes())?;
    eprintln!("done: {}", run.path.display());
    Ok(Trained { run_dir: run.path.clone(), interrupted: false })
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:+.4}")).collect();
    format!("[{}]", parts.join(", "))
}

/// Loads (or, for `tiny-random`, creates) the base model with the policy adapter. The base
/// store is converted to `cfg.dtype` here, before the critic and score models take their views
/// of it (views made earlier would keep the f32 tensors); the adapter store stays f32.
fn load_policy(
    cfg: &TrainPpoConfig,
    device: tch::Device,
) -> Result<(nn::VarStore, Llama, nn::VarStore, Tokenizer)> {
    let mut base_vs = nn::VarStore::new(device);
    let adapter_vs = nn::VarStore::new(device);
    let adapter = (&adapter_vs.root(), &cfg.model.adapter);
    if cfg.model.name == crate::tiny_random::NAME {
        let dir = panacea_lm::resolve_model("smollm2-135m")
            .context("tiny-random uses the SmolLM2 tokenizer")?;
        let tok = Tokenizer::from_file(&dir.join("tokenizer.json"), 2)?;
        let policy = Llama::new(&base_vs.root(), Some(adapter), &LlamaConfig::tiny());
        init_random(&base_vs, cfg.model.init_seed);
        if cfg.dtype == DType::Bf16 {
            base_vs.bfloat16();
        }
        return Ok((base_vs, policy, adapter_vs, tok));
    }
    let pre = Pretrained::load(&cfg.model.name)
        .with_context(|| format!("loading model {}", cfg.model.name))?;
    let policy = pre.build(&mut base_vs, Some(adapter), cfg.dtype.kind())?;
    base_vs.freeze();
    Ok((base_vs, policy, adapter_vs, pre.tokenizer.clone()))
}

/// A rendered prompt and its token ids.
type Prompt = (String, Vec<i64>);

/// The train and eval prompts, rendered and tokenised, and the data files read.
fn load_prompts(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
) -> Result<(Vec<Prompt>, Vec<Prompt>, Vec<PathBuf>)> {
    let (records, files) = match &cfg.data.prompts {
        PromptSource::Bundled { sets } => {
            let mut recs = Vec::new();
            let mut files = Vec::new();
            for s in sets {
                let set = match s {
                    BundledSet::Benign => PromptSet::Benign,
                    BundledSet::Harmful => PromptSet::Harmful,
                };
                recs.extend(set.load()?);
                files.push(set.bundled_path());
            }
            (recs, files)
        }
        PromptSource::File { path } => (panacea_data::load_prompts(path)?, vec![path.clone()]),
    };
    let template = ChatTemplate::default();
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for r in records {
        let text = if cfg.data.chat_template { template.user_prompt(&r.prompt) } else { r.prompt };
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
        bail!(
            "only {} train and {} eval prompts fit data.max_prompt_tokens = {}; hint: raise it \
             or lower train.batch_size",
            train.len(),
            eval.len(),
            cfg.data.max_prompt_tokens
        );
    }
    Ok((train, eval, files))
}

/// The PPO trainer of `cfg` around `policy` (its adapter in `adapter_vs`), with one reward
/// source per objective, for a run of `total_steps`.
fn build_trainer(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    policy: Llama,
    adapter_vs: nn::VarStore,
    total_steps: u64,
) -> Result<PpoTrainer> {
    let parts = PpoParts {
        critic_adapter: cfg.model.adapter.clone(),
        objectives: cfg.objectives.iter().map(|o| o.objective()).collect(),
        sources: build_sources(cfg, tok, &policy)?,
        eos_id: tok.eos_id,
        pad_id: tok.pad_id,
        tokenizer: Some(tok.clone()),
        total_steps,
        policy,
        adapter_vs,
    };
    Ok(PpoTrainer::new(cfg.ppo.clone(), parts)?)
}

/// One reward source per objective.
fn build_sources(
    cfg: &TrainPpoConfig,
    tok: &Tokenizer,
    base: &Llama,
) -> Result<Vec<Box<dyn RewardSource>>> {
    let mut out: Vec<Box<dyn RewardSource>> = Vec::new();
    for o in &cfg.objectives {
        let src: Box<dyn RewardSource> = match &o.source {
            SourceConfig::Positive => Box::new(ScorerSource(Box::new(PositiveScorer::new()))),
            SourceConfig::Negative => Box::new(ScorerSource(Box::new(NegativeScorer::new()))),
            SourceConfig::Harmless => {
                Box::new(ScorerSource(Box::new(HarmlessScorer::load_bundled()?)))
            }
            SourceConfig::Concise { r_max, c } => {
                let t = tok.clone();
                let len = LengthMeasure::Custom(Box::new(move |text: &str| {
                    t.encode(text).map(|ids| ids.len()).unwrap_or(0)
                }));
                Box::new(ScorerSource(Box::new(ConciseScorer::new(*r_max, *c, len)?)))
            }
            SourceConfig::ScoreModel { path } => {
                let mut vs = nn::VarStore::new(panacea_lm::CausalLm::device(base));
                let (model, meta) = load_score_model(path, base, &mut vs)
                    .with_context(|| format!("objective {}", o.name))?;
                if meta.kind != o.kind {
                    bail!(
                        "objective {} is a {:?} but the score model in {} was trained as a {:?}",
                        o.name,
                        o.kind,
                        path.display(),
                        meta.kind
                    );
                }
                vs.freeze();
                Box::new(ModelSource { name: o.name.clone(), model })
            }
            SourceConfig::EvenTokens => Box::new(EvenTokenFraction),
            SourceConfig::OddTokens => Box::new(OddTokenFraction),
            SourceConfig::NegativeLength => Box::new(NegativeLength),
        };
        out.push(src);
    }
    Ok(out)
}

/// The data cursor: a shuffled order of the train prompts, reshuffled each pass.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct PromptCursor {
    order: Vec<usize>,
    pos: usize,
}

impl PromptCursor {
    fn new(n: usize) -> Self {
        Self { order: (0..n).collect(), pos: n }
    }

    fn next_batch(&mut self, prompts: &[Prompt], b: usize, rng: &mut impl Rng) -> PromptBatch {
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

/// Mean utility per objective of greedy responses to `prompts` under `pref` (None: the base
/// model, `Adapter::Off`).
fn evaluate(
    t: &PpoTrainer,
    prompts: &[Prompt],
    pref: Option<&PreferenceVector>,
    max_new_tokens: i64,
    batch_size: usize,
) -> Result<Vec<f64>> {
    let tok = t.tokenizer().context("evaluation needs the tokenizer")?;
    let gen_cfg = GenerateConfig {
        max_new_tokens,
        sampling: Sampling::Greedy,
        eos_ids: tok.eos_ids.clone(),
        pad_id: tok.pad_id,
    };
    let device = panacea_lm::CausalLm::device(&t.policy);
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
        let g = tch::no_grad(|| generate_ids(&t.policy, &ids, adapter, &gen_cfg, &mut unused))?;
        let responses = response_texts(&g, tok)?;
        let view = RolloutView::of(&g, &texts, &responses);
        rows.extend(score_all(t.sources(), &view)?);
    }
    let k = t.objectives.len();
    let raw = Tensor::from_slice(&rows.concat()).view([rows.len() as i64, k as i64]);
    let util = utilities(&t.objectives, &raw)?.mean_dim([0i64].as_slice(), false, Kind::Double);
    Ok(Vec::try_from(util)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The learned-reward path end to end on the tiny configs: `train-rm` writes two score
    /// models, `train-ppo` trains one step with them and leaves a checkpoint folder and the
    /// final objective vectors. Needs the cached SmolLM2 tokenizer (`cargo xtask fetch-model
    /// smollm2-135m`); without it the test says so and checks nothing else.
    #[test]
    fn tiny_learned_reward_pipeline_runs_end_to_end() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let runs = std::env::temp_dir().join(format!("panacea-tiny-ppo-{}", std::process::id()));
        let rm = crate::train_rm::Args::for_test(
            root.join("configs/tiny/rm.yaml"),
            vec![format!("data.path={}", root.join("data/tiny/pairs_generic.jsonl").display())],
            runs.clone(),
        );
        crate::train_rm::run(rm).expect("train-rm");
        let rm_dir = std::fs::read_dir(&runs)
            .expect("runs")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("train-rm"))
            .expect("rm run folder");
        let args = Args {
            config: Some(root.join("configs/tiny/ppo-learned.yaml")),
            set: vec![
                format!("objectives.0.source.path={}", rm_dir.join("score-helpful").display()),
                format!("objectives.1.source.path={}", rm_dir.join("score-harmless").display()),
                "train.steps=1".into(),
                "train.eval_prompts=2".into(),
                "train.hv_every=1".into(),
                "train.hv_prompts=2".into(),
            ],
            device: Some(DeviceChoice::Cpu),
            dtype: None,
            resume: None,
            runs_dir: runs.clone(),
            name: None,
        };
        run(args).expect("train-ppo");
        let ppo_dir = std::fs::read_dir(&runs)
            .expect("runs")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("ppo-learned"))
            .expect("ppo run folder");
        for f in ["config.yaml", "command.txt", "manifest.json", "metrics.jsonl", "final_eval.json"]
        {
            assert!(ppo_dir.join(f).is_file(), "{f} missing");
        }
        let metrics = std::fs::read_to_string(ppo_dir.join("metrics.jsonl")).expect("metrics");
        let hv: Vec<f64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["eval/hv"].as_f64())
            .collect();
        assert_eq!(hv.len(), 1, "one hypervolume point at step 1:\n{metrics}");
        assert!(hv[0].is_finite() && hv[0] >= 0.0);
        let ck = ppo_dir.join("checkpoints/step-000001");
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
        std::fs::remove_dir_all(&runs).expect("clean up");
    }

    /// `--dtype bf16` (here `--set dtype=bf16`): the base weights are bf16, one PPO step runs
    /// with finite losses, and everything that trains stays f32 (issue #10): the policy
    /// adapter, the critic (adapter and value heads) and both optimisers' moments.
    #[test]
    fn bf16_base_trains_with_f32_adapter_critic_and_optimiser() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let yaml = std::fs::read_to_string(root.join("configs/tiny/ppo.yaml")).expect("config");
        let cfg: TrainPpoConfig =
            parse_config(&yaml, "configs/tiny/ppo.yaml", &["dtype=bf16".to_owned()])
                .expect("config");
        assert_eq!(cfg.dtype, DType::Bf16);
        let (base_vs, policy, adapter_vs, tok) =
            load_policy(&cfg, tch::Device::Cpu).expect("policy");
        assert_eq!(policy.kind(), Kind::BFloat16);
        for (name, t) in base_vs.variables() {
            assert_eq!(t.kind(), Kind::BFloat16, "base variable {name}");
        }
        let (train_prompts, _, _) = load_prompts(&cfg, &tok).expect("prompts");
        let mut trainer = build_trainer(&cfg, &tok, policy, adapter_vs, 1).expect("trainer");
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
        let m = trainer.step(&batch, &prefs, &mut rng).expect("bf16 PPO step");
        for (what, x) in
            [("policy loss", m.policy_loss), ("value loss", m.value_loss), ("kl", m.kl)]
        {
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
        let dir = std::env::temp_dir().join(format!("panacea-ppo-bf16-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
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

    /// A run stopped after step 2 and resumed ends on the same bits as the uninterrupted run:
    /// the tiny config runs 4 steps with checkpoints at 2 and 4; a copy of its folder without
    /// the step-4 checkpoint stands for a run killed after step 2, and is resumed.
    #[test]
    fn resumed_cli_run_matches_the_uninterrupted_one_bit_for_bit() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let runs = std::env::temp_dir().join(format!("panacea-ppo-resume-{}", std::process::id()));
        let args = |resume: Option<PathBuf>| Args {
            config: resume.is_none().then(|| root.join("configs/tiny/ppo.yaml")),
            set: vec![
                "train.steps=4".into(),
                "train.save_every=2".into(),
                "train.preference_per_row=true".into(),
            ],
            device: Some(DeviceChoice::Cpu),
            dtype: None,
            resume,
            runs_dir: runs.clone(),
            name: None,
        };
        run(args(None)).expect("uninterrupted run");
        let straight =
            std::fs::read_dir(&runs).expect("runs").flatten().next().expect("run").path();
        let killed = runs.join("killed");
        std::fs::create_dir_all(killed.join("checkpoints")).expect("mkdir");
        for f in ["config.yaml", "manifest.json"] {
            std::fs::copy(straight.join(f), killed.join(f)).expect("copy");
        }
        let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).expect("metrics");
        let first_two: Vec<&str> = metrics.lines().take(2).collect();
        std::fs::write(killed.join("metrics.jsonl"), format!("{}\n", first_two.join("\n")))
            .expect("write");
        let step2 = straight.join("checkpoints/step-000002");
        let copy2 = killed.join("checkpoints/step-000002");
        std::fs::create_dir_all(&copy2).expect("mkdir");
        for e in std::fs::read_dir(&step2).expect("step 2").flatten() {
            std::fs::copy(e.path(), copy2.join(e.file_name())).expect("copy");
        }
        run(args(Some(killed.clone()))).expect("resumed run");
        // The resumed run continued at step 3 rather than starting over.
        let steps: Vec<u64> = std::fs::read_to_string(killed.join("metrics.jsonl"))
            .expect("metrics")
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                    .as_u64()
                    .expect("step")
            })
            .collect();
        assert_eq!(steps, [1, 2, 3, 4]);
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
}
