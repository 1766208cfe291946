//! `panacea train-rm`: trains one score model per objective dimension on preference pairs
//! (method.md §5): the LM backbone with its own adapter plus a scalar head, Bradley–Terry loss
//! (reward or cost: a cost model learns C(loser) > C(winner)), Adam(0.9, 0.95), and reports the
//! held-out pairwise accuracy. Each model is saved as a folder that a PPO config uses through
//! `source: { kind: score_model, path: ... }`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use panacea_core::config::{parse_config, to_yaml, Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::{seed_everything, ObjectiveKind};
use panacea_data::{load_pairs, PairFormat, ReadOptions};
use panacea_lm::{ChatTemplate, Pretrained};
use panacea_rlhf::score::{
    pair_loss, save_score_model, score_adapter_config, LmScoreModel, ScoreModelMeta, ScorePairBatch,
};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};

use crate::run_dir::{self, Manifest, RunDir};

/// The base model of the score models.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RmModel {
    /// Short name, folder, GGUF file, or `tiny-random` (SmolLM2 tokenizer, random 2-layer body).
    name: String,
    /// Adapter rank k (the adapter has one fixed preference slot: rank k + 1).
    #[serde(default = "d_rank")]
    rank: i64,
    /// Adapter α.
    #[serde(default = "d_alpha")]
    alpha: f64,
}

/// The pair file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RmData {
    /// A JSONL pair file.
    path: PathBuf,
    /// `generic`, `pku-saferlhf` or `hh-rlhf`.
    format: PairFormat,
    /// Fraction of pairs held out for evaluation, in (0, 1).
    #[serde(default = "d_eval_fraction")]
    eval_fraction: f64,
    /// Render prompts with the ChatML template.
    #[serde(default = "d_true")]
    chat_template: bool,
    /// Sequences are cut to this many tokens (from the left, keeping the response end), ≥ 4.
    #[serde(default = "d_max_tokens")]
    max_tokens: usize,
}

/// One score model to train.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RmTarget {
    /// The pair file's dimension (label) to train on.
    dim: String,
    /// Reward (higher is better) or cost (higher is worse).
    kind: ObjectiveKind,
}

/// Optimisation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RmTrain {
    /// Passes over the train pairs, ≥ 1.
    epochs: usize,
    /// Pairs per step, ≥ 1.
    batch_size: usize,
    /// Adam learning rate, > 0.
    #[serde(default = "d_lr")]
    lr: f64,
    /// η of the score regulariser η·mean(r²), ≥ 0.
    #[serde(default)]
    eta: f64,
}

/// The `train-rm` config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainRmConfig {
    #[serde(default = "d_seed")]
    seed: u64,
    #[serde(default = "d_device")]
    device: String,
    /// Weight dtype of the frozen base (`f32` or `bf16`; `--dtype` overrides it); the score
    /// adapters, heads, optimiser and losses stay f32.
    #[serde(default)]
    dtype: DType,
    model: RmModel,
    data: RmData,
    models: Vec<RmTarget>,
    train: RmTrain,
}

fn d_rank() -> i64 {
    8
}
fn d_alpha() -> f64 {
    32.0
}
fn d_eval_fraction() -> f64 {
    0.2
}
fn d_true() -> bool {
    true
}
fn d_max_tokens() -> usize {
    128
}
fn d_lr() -> f64 {
    1e-3
}
fn d_seed() -> u64 {
    1
}
fn d_device() -> String {
    "cpu".into()
}

impl Validate for TrainRmConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(self.model.rank >= 1, "model.rank", "must be ≥ 1");
        v.positive(self.model.alpha, "model.alpha");
        v.check(
            self.data.path.is_file(),
            "data.path",
            format!("{} is not a file", self.data.path.display()),
        );
        v.check(
            self.data.eval_fraction > 0.0 && self.data.eval_fraction < 1.0,
            "data.eval_fraction",
            "must lie in (0, 1)",
        );
        v.check(self.data.max_tokens >= 4, "data.max_tokens", "must be ≥ 4");
        v.check(!self.models.is_empty(), "models", "name at least one dimension to train");
        v.check(self.train.epochs >= 1, "train.epochs", "must be ≥ 1");
        v.check(self.train.batch_size >= 1, "train.batch_size", "must be ≥ 1");
        v.positive(self.train.lr, "train.lr");
        v.in_range(self.train.eta, "train.eta", 0.0, f64::MAX);
    }
}

/// Flags of `panacea train-rm`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value, e.g. `--set train.epochs=2` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`).
    #[arg(long)]
    dtype: Option<DType>,
    /// Skip malformed pair lines (counted and reported, the first few by file and line)
    /// instead of stopping at the first one.
    #[arg(long)]
    skip_invalid: bool,
    /// Folder that receives the run folder.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
}

#[cfg(test)]
impl Args {
    /// Flags for tests.
    pub(crate) fn for_test(config: PathBuf, set: Vec<String>, runs_dir: PathBuf) -> Self {
        Self {
            config,
            set,
            device: Some(DeviceChoice::Cpu),
            dtype: None,
            skip_invalid: false,
            runs_dir,
        }
    }
}

/// Reads a pair file with `opts`; with `skip_invalid`, says how many lines were skipped and
/// shows the first reasons (file, line, field), so nothing is dropped silently.
pub(crate) fn load_pairs_reporting(
    path: &std::path::Path,
    opts: ReadOptions,
) -> Result<Vec<panacea_data::PairRecord>> {
    let (records, report) =
        load_pairs(path, opts).with_context(|| format!("reading pairs {}", path.display()))?;
    if report.skipped > 0 {
        eprintln!(
            "{}: skipped {} malformed line(s) of {}; first:",
            path.display(),
            report.skipped,
            report.records + report.skipped + report.blank_lines
        );
        for e in &report.first_errors {
            eprintln!("  {e}");
        }
    }
    Ok(records)
}

/// (winner ids, loser ids, (winner is safe, loser is safe)) of one labelled pair.
type LabelledPair = (Vec<i64>, Vec<i64>, Option<(bool, bool)>);

/// Trains every configured score model in turn.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let yaml = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading config {}", args.config.display()))?;
    let mut cfg: TrainRmConfig =
        parse_config(&yaml, &args.config.display().to_string(), &args.set)?;
    if let Some(dtype) = args.dtype {
        cfg.dtype = dtype;
    }
    let device = match args.device {
        Some(d) => d,
        None => cfg.device.parse().context("config `device`")?,
    }
    .resolve()?;
    let mut rng = seed_everything(cfg.seed);

    // The frozen base and the tokenizer.
    let (_base_vs, base, tok) = if cfg.model.name == panacea_lm::TINY_RANDOM {
        // In cfg.dtype before the score models take their views of the base.
        let loaded = panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())?;
        (loaded.base_vs, loaded.model, loaded.tokenizer)
    } else {
        let mut base_vs = nn::VarStore::new(device);
        let pre = Pretrained::load(&cfg.model.name)?;
        let m = pre.build(&mut base_vs, None, cfg.dtype.kind())?;
        base_vs.freeze();
        (base_vs, m, pre.tokenizer.clone())
    };

    // Pairs → token ids of prompt + response (+ EOS), split by a seeded shuffle.
    let dims: Vec<String> = cfg.models.iter().map(|m| m.dim.clone()).collect();
    let opts = ReadOptions {
        format: cfg.data.format,
        dims: dims.clone(),
        skip_invalid: args.skip_invalid,
    };
    let mut records = load_pairs_reporting(&cfg.data.path, opts)?;
    records.shuffle(&mut rng.data);
    let n_eval = ((records.len() as f64 * cfg.data.eval_fraction).round() as usize).max(1);
    if records.len() < n_eval + 1 {
        bail!("{} pairs are too few to hold out {n_eval} for evaluation", records.len());
    }
    let template = ChatTemplate::default();
    let encode = |prompt: &str, response: &str| -> Result<Vec<i64>> {
        let p = if cfg.data.chat_template { template.user_prompt(prompt) } else { prompt.into() };
        let mut ids = tok.encode(&format!("{p}{response}"))?;
        ids.push(tok.eos_id);
        let cut = ids.len().saturating_sub(cfg.data.max_tokens);
        Ok(ids[cut..].to_vec())
    };
    let mut encoded = Vec::with_capacity(records.len());
    for r in &records {
        encoded.push((encode(&r.prompt, &r.response_0)?, encode(&r.prompt, &r.response_1)?));
    }

    let mut run = RunDir::create(&args.runs_dir, "train-rm", &to_yaml(&cfg)?)?;
    run.write_manifest(&Manifest {
        job: "train-rm".into(),
        git_hash: run_dir::git_hash(),
        libtorch_version: run_dir::libtorch_version(),
        device: format!("{device:?}"),
        seed: cfg.seed,
        data_hashes: vec![(
            cfg.data.path.display().to_string(),
            run_dir::sha256_file(&cfg.data.path)?,
        )],
        started_utc: run_dir::utc_stamp(run_dir::now_secs()).1,
    })?;
    eprintln!("run folder: {}", run.path.display());

    for (d, target) in cfg.models.iter().enumerate() {
        // (winner, loser) token ids of pairs labelled in this dimension, with the pair's
        // (winner is safe, loser is safe) labels where the file has them.
        let side = |i: usize| -> Option<LabelledPair> {
            let (a, b) = &encoded[i];
            let s = records[i].safety;
            match records[i].labels[d] {
                1 => Some((a.clone(), b.clone(), s.map(|s| (s[0], s[1])))),
                -1 => Some((b.clone(), a.clone(), s.map(|s| (s[1], s[0])))),
                _ => None,
            }
        };
        let eval: Vec<_> = (0..n_eval).filter_map(side).collect();
        let mut train: Vec<_> = (n_eval..records.len()).filter_map(side).collect();
        if train.is_empty() || eval.is_empty() {
            bail!(
                "dimension {} has {} train and {} eval labelled pairs",
                target.dim,
                train.len(),
                eval.len()
            );
        }
        // A cost model uses safe-rlhf's cost loss with the safety-sign terms when every pair
        // has safety labels (PKU-SafeRLHF's is_response_*_safe); otherwise Bradley–Terry on
        // costs, said once here.
        let sign_terms =
            target.kind == ObjectiveKind::Cost && train.iter().chain(&eval).all(|p| p.2.is_some());
        if target.kind == ObjectiveKind::Cost && !sign_terms {
            eprintln!(
                "{}: some pairs have no safety labels, so the cost model trains with \
                 Bradley–Terry only (no sign terms); PKU-SafeRLHF files carry them",
                target.dim
            );
        }
        let vs = nn::VarStore::new(device);
        let adapter = score_adapter_config(cfg.model.rank, cfg.model.alpha);
        let model = LmScoreModel::new(&base, &vs.root(), &adapter);
        let mut opt = nn::Adam { beta1: 0.9, beta2: 0.95, wd: 0.0, ..Default::default() }
            .build(&vs, cfg.train.lr)?;
        // Reward: the winner scores higher (BT). Cost with sign terms: `cost_loss(safer,
        // unsafer)` takes the winner (the safer response) first. Cost without: BT with the
        // loser (the less safe response) as the higher-scoring side.
        let batch_of = |pairs: &[LabelledPair]| -> Result<ScorePairBatch> {
            let w: Vec<Vec<i64>> = pairs.iter().map(|p| p.0.clone()).collect();
            let l: Vec<Vec<i64>> = pairs.iter().map(|p| p.1.clone()).collect();
            if sign_terms {
                let safety: Vec<(bool, bool)> = pairs.iter().filter_map(|p| p.2).collect();
                return Ok(ScorePairBatch::from_tokens(&w, &l, Some(&safety), tok.pad_id, device)?);
            }
            let (hi, lo) = match target.kind {
                ObjectiveKind::Reward => (w, l),
                ObjectiveKind::Cost => (l, w),
            };
            Ok(ScorePairBatch::from_tokens(&hi, &lo, None, tok.pad_id, device)?)
        };
        let eval_batch = batch_of(&eval)?;
        let mut step = 0u64;
        for epoch in 1..=cfg.train.epochs {
            train.shuffle(&mut rng.data);
            for chunk in train.chunks(cfg.train.batch_size) {
                step += 1;
                let out = pair_loss(&model, &batch_of(chunk)?, cfg.train.eta);
                let loss = out.loss.double_value(&[]);
                if !loss.is_finite() {
                    bail!("{}: loss is {loss} at step {step}; nothing was saved", target.dim);
                }
                opt.zero_grad();
                out.loss.backward();
                opt.clip_grad_norm(1.0);
                opt.step();
                run.log_metrics(&serde_json::json!({
                    "step": step,
                    format!("rm/loss/{}", target.dim): loss,
                    format!("rm/accuracy/{}", target.dim): out.accuracy.double_value(&[]),
                }))?;
            }
            let ev = tch::no_grad(|| pair_loss(&model, &eval_batch, 0.0));
            let acc = ev.accuracy.double_value(&[]);
            let sign_acc = ev.sign_accuracy.as_ref().map(|t| t.double_value(&[]));
            eprintln!(
                "{} epoch {epoch}: eval loss {:.4}, pairwise accuracy {:.3}{} on {} held-out pairs",
                target.dim,
                ev.loss.double_value(&[]),
                acc,
                sign_acc.map_or(String::new(), |a| format!(", sign accuracy {a:.3}")),
                eval.len()
            );
            if epoch == cfg.train.epochs {
                let dir = run.file(&format!("score-{}", target.dim));
                let meta = ScoreModelMeta {
                    adapter: adapter.clone(),
                    kind: target.kind,
                    base_model: cfg.model.name.clone(),
                    eval_accuracy: Some(acc),
                    eval_sign_accuracy: sign_acc,
                };
                save_score_model(&dir, &vs, &meta)?;
                run.log_metrics(&serde_json::json!({
                    format!("rm/eval_accuracy/{}", target.dim): acc,
                    format!("rm/eval_sign_accuracy/{}", target.dim): sign_acc,
                    "folder": dir.display().to_string(),
                }))?;
                eprintln!("saved {}", dir.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A malformed line stops the run with its file and line number; `--skip-invalid` trains
    /// on the rest instead. Needs the cached SmolLM2 tokenizer.
    #[test]
    fn malformed_pair_line_fails_by_default_and_is_skipped_on_request() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let dir = std::env::temp_dir().join(format!("panacea-rm-skip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good =
            std::fs::read_to_string(root.join("data/tiny/pairs_generic.jsonl")).expect("pairs");
        let mut lines: Vec<&str> = good.lines().collect();
        lines.insert(2, r#"{"prompt": "hi", "response_0": "a"}"#);
        let data = dir.join("pairs.jsonl");
        std::fs::write(&data, lines.join("\n") + "\n").expect("write");
        let args = |skip: bool| {
            let mut a = Args::for_test(
                root.join("configs/tiny/rm.yaml"),
                vec![format!("data.path={}", data.display()), "train.epochs=1".into()],
                dir.join("runs"),
            );
            a.skip_invalid = skip;
            a
        };
        let err = format!("{:#}", run(args(false)).expect_err("a malformed line must fail"));
        assert!(err.contains("pairs.jsonl:3") && err.contains("response_1"), "{err}");
        run(args(true)).expect("skipping the malformed line");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Trained on a PKU-SafeRLHF file, the harmless cost model uses the safety-sign terms and
    /// records its held-out sign accuracy; the generic file (no safety labels) gives none.
    #[test]
    fn cost_model_uses_safety_signs_when_the_file_has_them() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let runs = std::env::temp_dir().join(format!("panacea-rm-sign-{}", std::process::id()));
        let sign_accuracy = |data: &str, format: &str| {
            let before: Vec<PathBuf> = std::fs::read_dir(&runs)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            let args = Args::for_test(
                root.join("configs/tiny/rm.yaml"),
                vec![
                    format!("data.path={}", root.join(data).display()),
                    format!("data.format={format}"),
                    "train.epochs=1".into(),
                ],
                runs.clone(),
            );
            run(args).expect("train-rm");
            let run_dir = std::fs::read_dir(&runs)
                .expect("runs")
                .flatten()
                .map(|e| e.path())
                .find(|p| !before.contains(p))
                .expect("new run folder");
            let meta: ScoreModelMeta = serde_json::from_str(
                &std::fs::read_to_string(run_dir.join("score-harmless/score_model.json"))
                    .expect("meta"),
            )
            .expect("parse meta");
            assert_eq!(meta.kind, ObjectiveKind::Cost);
            meta.eval_sign_accuracy
        };
        let with = sign_accuracy("data/tiny/pairs_pku.jsonl", "pku-saferlhf");
        assert!(with.is_some_and(|a| (0.0..=1.0).contains(&a)), "{with:?}");
        assert_eq!(sign_accuracy("data/tiny/pairs_generic.jsonl", "generic"), None);
        std::fs::remove_dir_all(&runs).expect("clean up");
    }
}
