//! Settings of multi-objective DPO: [`DpoSettings`] for the trainer and [`DpoRunConfig`] for a
//! whole `panacea train-dpo` run (model, data, adapter, preference sampling, schedule). Strict
//! YAML through panacea-core's config loader: unknown keys are errors and one validation pass
//! lists every problem.

use std::path::PathBuf;

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::aggregation::Aggregation;
use panacea_core::config::{Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::preference::PreferenceSampler;
use panacea_data::PairFormat;
use serde::{Deserialize, Serialize};

use crate::data::SeqLogp;
use crate::loss::DpoLoss;

fn default_beta() -> f64 {
    0.1
}
fn default_lr() -> f64 {
    5e-4
}
fn default_max_grad_norm() -> f64 {
    1.0
}

/// The loss and optimiser settings of [`crate::trainer::DpoTrainer`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoSettings {
    /// β > 0, the KL strength (safe-rlhf's `scale_coeff` default 0.1 [ref]).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// `sigmoid` (DPO, default) or `ipo`.
    #[serde(default)]
    pub loss: DpoLoss,
    /// `{ kind: linear }` (default) or `{ kind: tchebycheff, ideal: [0.0, …] }`; on losses the
    /// ideal point is z = 0 (method.md §3.3), which validation enforces.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// `response_sum` (default) or `from_divergence`; see [`SeqLogp`].
    #[serde(default)]
    pub seq_logp: SeqLogp,
    /// Adam learning rate of the adapter (method.md §7.2: 1e-4 to 1e-3; default 5e-4).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Global L2 gradient-norm clip, > 0 (default 1.0).
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Pairs per forward; the batch is accumulated over micro-batches. 0 = the whole batch.
    #[serde(default)]
    pub micro_batch_size: usize,
    /// Steps of linear learning-rate warm-up (0 = none).
    #[serde(default)]
    pub warmup_steps: usize,
}

impl Default for DpoSettings {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            loss: DpoLoss::default(),
            aggregation: Aggregation::default(),
            seq_logp: SeqLogp::default(),
            lr: default_lr(),
            max_grad_norm: default_max_grad_norm(),
            micro_batch_size: 0,
            warmup_steps: 0,
        }
    }
}

impl Validate for DpoSettings {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.beta, "beta");
        v.positive(self.lr, "lr");
        v.positive(self.max_grad_norm, "max_grad_norm");
        v.section("aggregation", &self.aggregation);
        if let Aggregation::Tchebycheff { ideal } = &self.aggregation {
            v.check(
                ideal.iter().all(|z| *z == 0.0),
                "aggregation.ideal",
                format!(
                    "must be all zeros for DPO losses (L_i ≥ 0, so z = 0), got {ideal:?}; hint: \
                     ideal: [0.0, 0.0]"
                ),
            );
        }
    }
}

fn default_max_len() -> usize {
    256
}

/// Where the preference pairs come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoDataConfig {
    /// Training pairs (JSONL); relative paths are taken from the workspace root.
    pub train: PathBuf,
    /// Evaluation pairs (JSONL); without it no evaluation runs.
    #[serde(default)]
    pub eval: Option<PathBuf>,
    /// Without `eval`: every n-th distinct prompt of the training file (in order of first
    /// appearance: prompts n−1, 2n−1, …), with all its pairs, becomes the evaluation split and
    /// leaves training. Whole prompts move, so no prompt is in both splits. 0 = no evaluation.
    #[serde(default)]
    pub eval_prompt_stride: usize,
    /// `generic`, `pku-saferlhf` or `hh-rlhf`.
    pub format: PairFormat,
    /// Use at most this many training pairs (the file's first ones); 0 = all.
    #[serde(default)]
    pub max_train_pairs: usize,
    /// Use at most this many evaluation pairs; 0 = all.
    #[serde(default)]
    pub max_eval_pairs: usize,
    /// Token limit of prompt + response + EOS (default 256).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_log_every() -> usize {
    1
}

/// The schedule of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoTrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// Write a metrics line every this many steps (default 1).
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Evaluate every this many steps (and at the end); 0 = only at the start and the end.
    #[serde(default)]
    pub eval_every: usize,
    /// Save a checkpoint every this many steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub save_every: usize,
    /// One preference per pair (mixed batches) instead of one per batch.
    #[serde(default)]
    pub per_pair_preference: bool,
}

/// The reference log-prob cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefCacheConfig {
    /// Use the cache (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Folder of the cache files; default `<cache root>/dpo-ref-logp`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for RefCacheConfig {
    fn default() -> Self {
        Self { enabled: true, dir: None }
    }
}

/// A whole `panacea train-dpo` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoRunConfig {
    /// Base model: a short name (`smollm2-135m`), a GGUF file or a model folder.
    pub model: String,
    /// Weight dtype of the base (`f32` or `bf16`); losses are f32 whatever this is.
    #[serde(default)]
    pub dtype: DType,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; `--device` overrides it.
    #[serde(default)]
    pub device: DeviceChoice,
    /// The run's one seed.
    #[serde(default)]
    pub seed: u64,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Objective (dimension) names, in preference order; K = their number.
    pub objectives: Vec<String>,
    /// The pairs.
    pub data: DpoDataConfig,
    /// The SVD-LoRA adapter; `n_objectives` must equal K.
    pub adapter: SvdLoraConfig,
    /// Loss and optimiser.
    #[serde(default)]
    pub dpo: DpoSettings,
    /// Training preferences (default Dirichlet with vertex probability 0.2).
    #[serde(default)]
    pub preference: PreferenceSampler,
    /// Schedule.
    pub train: DpoTrainConfig,
    /// Reference log-prob cache.
    #[serde(default)]
    pub ref_cache: RefCacheConfig,
}

impl DpoRunConfig {
    /// K.
    pub fn k(&self) -> usize {
        self.objectives.len()
    }
}

impl Validate for DpoRunConfig {
    fn validate(&self, v: &mut Validator) {
        let k = self.k();
        v.check(
            !self.model.is_empty(),
            "model",
            "give a short name such as smollm2-135m or a path",
        );
        v.check(k >= 1, "objectives", "give at least one objective name");
        let mut names = self.objectives.clone();
        names.sort();
        names.dedup();
        v.check(names.len() == k, "objectives", "objective names must be distinct");
        v.check(
            self.adapter.n_objectives == k as i64,
            "adapter.n_objectives",
            format!("is {} but there are {k} objectives", self.adapter.n_objectives),
        );
        v.check(self.adapter.rank >= 1, "adapter.rank", "must be ≥ 1");
        v.section("dpo", &self.dpo);
        if let Err(e) = self.dpo.aggregation.check(k) {
            v.problem("dpo.aggregation.ideal", format!("{e}; hint: one zero per objective"));
        }
        v.section("preference", &self.preference);
        if let Err(e) = self.preference.check(k) {
            v.problem("preference", e.to_string());
        }
        v.check(
            !(self.data.eval.is_some() && self.data.eval_prompt_stride > 0),
            "data.eval_prompt_stride",
            "give either data.eval or data.eval_prompt_stride, not both",
        );
        v.check(
            self.data.eval_prompt_stride != 1,
            "data.eval_prompt_stride",
            "1 would move every prompt to evaluation; use 0 (none) or ≥ 2",
        );
        v.check(self.data.max_len >= 8, "data.max_len", "must be ≥ 8 tokens");
        v.check(self.train.steps >= 1, "train.steps", "must be ≥ 1");
        v.check(self.train.batch_size >= 1, "train.batch_size", "must be ≥ 1");
        v.check(self.train.log_every >= 1, "train.log_every", "must be ≥ 1");
        let m = self.dpo.micro_batch_size;
        v.check(
            m == 0 || self.train.batch_size % m == 0,
            "dpo.micro_batch_size",
            format!("{m} must divide train.batch_size {} (or be 0)", self.train.batch_size),
        );
    }
}
