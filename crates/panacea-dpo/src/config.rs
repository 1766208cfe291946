//! Settings of multi-objective DPO: [`DpoTrainerConfig`] for the trainer (the `dpo` and `optim`
//! sections and the aggregation) and [`DpoRunConfig`] for a whole run (model, data, adapter,
//! preference sampling, schedule). Strict YAML through panacea-core's config loader: unknown
//! keys are errors, keys of earlier versions fail naming their new spelling, and one validation
//! pass lists every problem.

use std::collections::BTreeMap;
use std::path::PathBuf;

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::aggregation::Aggregation;
use panacea_core::config::{RenamedKey, Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::preference::PreferenceSampler;
use panacea_data::{FileFormat, PairFormat};
use serde::{Deserialize, Serialize};

use crate::data::SeqLogp;
use crate::loss::DpoLoss;
use crate::pair_files::{validate_files, PairFiles};

fn default_beta() -> f64 {
    0.1
}

/// The `dpo` section: the loss and how a batch is run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoSettings {
    /// β > 0, the KL strength (safe-rlhf's `scale_coeff` default 0.1 [ref]).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// `sigmoid` (DPO, default) or `ipo`.
    #[serde(default)]
    pub loss: DpoLoss,
    /// `response_sum` (default) or `from_divergence`; see [`SeqLogp`].
    #[serde(default)]
    pub seq_logp: SeqLogp,
    /// Pairs per forward; the batch is accumulated over micro-batches. 0 = the whole batch.
    #[serde(default)]
    pub micro_batch_size: usize,
}

impl Default for DpoSettings {
    fn default() -> Self {
        Self {
            beta: default_beta(),
            loss: DpoLoss::default(),
            seq_logp: SeqLogp::default(),
            micro_batch_size: 0,
        }
    }
}

impl Validate for DpoSettings {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.beta, "beta");
    }
}

fn default_lr() -> f64 {
    1e-3
}
fn default_max_grad_norm() -> f64 {
    1.0
}

/// The `optim` section: AdamW over the adapter alone, linear warm-up then a constant rate. The
/// keys, types and defaults are the ones every panacea job uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate of the adapter, > 0 (default 1e-3; the paper's DPO runs use 1e-4 to
    /// 1e-3).
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Decoupled weight decay of U and V (σ and s never decay), ≥ 0 (default 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Fraction of `train.steps` spent in linear warm-up, in [0, 1) (default 0: none). The
    /// warm-up lasts ⌈ratio · steps⌉ steps.
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Global L2 gradient-norm clip, > 0 (default 1.0).
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Learning-rate multipliers per adapter parameter kind (`sigma`, `pref_scale`, `vectors`),
    /// each ≥ 0, default 1.
    #[serde(default)]
    pub lr_multipliers: panacea_core::optim::AdapterLrMultipliers,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            max_grad_norm: default_max_grad_norm(),
            lr_multipliers: Default::default(),
        }
    }
}

impl OptimConfig {
    /// Warm-up length in steps for a run of `total` steps: ⌈warmup_ratio · total⌉.
    pub fn warmup_steps(&self, total: u64) -> u64 {
        (self.warmup_ratio * total as f64).ceil() as u64
    }

    /// The learning rate of 1-based step `step` of `total`: `lr · step / warmup` during the
    /// warm-up, then `lr`.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let warm = self.warmup_steps(total);
        if warm == 0 {
            self.lr
        } else {
            self.lr * (step as f64 / warm as f64).min(1.0)
        }
    }
}

impl Validate for OptimConfig {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.lr, "lr");
        v.check(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight_decay",
            format!("must be finite and ≥ 0, got {}", self.weight_decay),
        );
        v.check(
            (0.0..1.0).contains(&self.warmup_ratio),
            "warmup_ratio",
            format!("must lie in [0, 1), got {}", self.warmup_ratio),
        );
        v.positive(self.max_grad_norm, "max_grad_norm");
        for (key, m) in self.lr_multipliers.named() {
            v.in_range(m, &format!("lr_multipliers.{key}"), 0.0, 1000.0);
        }
    }
}

/// Everything [`crate::trainer::DpoTrainer`] needs besides the model: the `dpo` and `optim`
/// sections, the aggregation and the run's length (the warm-up is a fraction of it).
#[derive(Clone, Debug, PartialEq)]
pub struct DpoTrainerConfig {
    /// Loss and batching.
    pub dpo: DpoSettings,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// `linear` (default) or `tchebycheff` with the ideal point z = 0 (per-objective DPO
    /// losses are ≥ 0, so 0 is the best each can reach).
    pub aggregation: Aggregation,
    /// The run's total optimiser steps.
    pub total_steps: u64,
    /// Activation checkpointing per decoder layer in the policy forward
    /// ([`DpoTrainConfig::activation_checkpointing`]).
    pub activation_checkpointing: bool,
    /// Steps at bucketed shapes replayed from CUDA graphs where possible
    /// ([`DpoTrainConfig::cuda_graphs`]).
    pub cuda_graphs: bool,
}

impl Default for DpoTrainerConfig {
    fn default() -> Self {
        Self {
            dpo: DpoSettings::default(),
            optim: OptimConfig::default(),
            aggregation: Aggregation::default(),
            total_steps: 1,
            activation_checkpointing: false,
            cuda_graphs: false,
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
    /// Training pairs: a file (JSON Lines, `.jsonl.gz` or parquet), or a list of files with
    /// settings of their own ([`PairFiles`]). A relative path is looked up against the config
    /// file's folder (or the current folder), then the workspace
    /// ([`crate::job::resolve_data_path`]).
    pub train: PairFiles,
    /// Evaluation pairs, in the same forms; without it (and without `eval_prompt_stride`) no
    /// evaluation runs.
    #[serde(default)]
    pub eval: Option<PairFiles>,
    /// Without `eval`: every n-th distinct prompt of the training file (in order of first
    /// appearance: prompts n−1, 2n−1, …), with all its pairs, becomes the evaluation split and
    /// leaves training. Whole prompts move, so no prompt is in both splits. 0 = no evaluation.
    #[serde(default)]
    pub eval_prompt_stride: usize,
    /// `generic`, `pku-saferlhf`, `hh-rlhf` or `trl` (of a list's files, the default).
    pub format: PairFormat,
    /// How the files are stored: `auto` (default: by extension, `.parquet`, `.gz`, else JSON
    /// Lines), `jsonl`, `jsonl-gz` or `parquet` (of a list's files, the default).
    #[serde(default, skip_serializing_if = "is_auto")]
    pub file_format: FileFormat,
    /// Objective → the column that labels it (`better_response_id`, `safer_response_id`,
    /// `chosen`, `prefs.<key>`, by schema); objectives left out are unlabelled in the file.
    /// Empty (default): the schema's own rule. Of a list's files, the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Use at most this many training pairs (the file's first ones); 0 = all.
    #[serde(default)]
    pub max_train_pairs: usize,
    /// Use at most this many evaluation pairs; 0 = all.
    #[serde(default)]
    pub max_eval_pairs: usize,
    /// Token limit of prompt + response + EOS (default 256).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Skip malformed lines (parquet: rows) of the pair files, in every file format (counted
    /// and reported as warnings, the first few by file and line) instead of stopping at the
    /// first one (default false).
    #[serde(default)]
    pub skip_invalid: bool,
}

fn is_auto(f: &FileFormat) -> bool {
    *f == FileFormat::Auto
}

fn default_log_every() -> u64 {
    1
}

/// The `train` section: the schedule of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoTrainConfig {
    /// Optimiser steps.
    pub steps: u64,
    /// Pairs per step of each process: a data-parallel run of W ranks trains on W ×
    /// batch_size pairs a step (`job`, "Data parallel").
    pub batch_size: usize,
    /// Write a metrics line every this many steps (default 1).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Save a checkpoint every this many steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub save_every: u64,
    /// Evaluate the held-out pairs every this many steps; 0 = only before the first step and
    /// after the last.
    #[serde(default)]
    pub eval_every: u64,
    /// One preference per pair (mixed batches) instead of one per batch (default false).
    #[serde(default)]
    pub preference_per_row: bool,
    /// Activation checkpointing per decoder layer in the policy forward: keep only each
    /// layer's input and recompute the layer in the backward pass (the same gradients, less
    /// memory, about one more forward of time). Default false; the same key in every trainer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
    /// Capture the training step (forward, backward, clipping and AdamW) as a CUDA graph per
    /// bucket of padded shapes and replay it (`DpoTrainer::step_graphed`): fewer kernel
    /// launches, the same numbers within f32 rounding. Default false (every number stays
    /// bit-identical). Where graphs cannot run (a CPU, per-row λ, micro-batches, activation
    /// checkpointing, data parallelism) the run says why once and trains eagerly with the
    /// numbers of `false`. The same key in every trainer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graphs: bool,
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

/// A whole multi-objective DPO run ([`crate::train_dpo`], `panacea train-dpo`). The keys mean
/// the same as in every other panacea job (configs/README.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoRunConfig {
    /// Base model: a short name (`smollm2-135m`), a GGUF file, a model folder, or `tiny-random`
    /// (a 2-layer Llama initialised from `seed`, for tests and smoke runs).
    pub model: String,
    /// Weight dtype of the base (`f32` or `bf16`); the adapter, the losses and the optimiser
    /// state stay f32.
    #[serde(default)]
    pub dtype: DType,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: DeviceChoice,
    /// The run's one seed (the tiny-random base included).
    #[serde(default)]
    pub seed: u64,
    /// CPU threads for libtorch (0 = libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Objective (pair dimension) names, in preference order; K = their number. Each entry is
    /// a name or `{name: ...}`.
    #[serde(deserialize_with = "objective_names")]
    pub objectives: Vec<String>,
    /// The pairs.
    pub data: DpoDataConfig,
    /// The SVD-LoRA adapter; `n_objectives` must equal K.
    pub adapter: SvdLoraConfig,
    /// Loss and batching.
    #[serde(default)]
    pub dpo: DpoSettings,
    /// Optimiser and schedule.
    #[serde(default)]
    pub optim: OptimConfig,
    /// How the per-objective losses are combined under λ: `{ kind: linear }` (default) or
    /// `{ kind: tchebycheff, ideal: [0.0, …] }` (the ideal must be 0: DPO losses are ≥ 0).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Training preferences (default Dirichlet with vertex probability 0.2).
    #[serde(default)]
    pub preference: PreferenceSampler,
    /// Schedule.
    pub train: DpoTrainConfig,
    /// Reference log-prob cache.
    #[serde(default)]
    pub ref_cache: RefCacheConfig,
    /// The folder of the config file, against which relative data paths are looked up first;
    /// not part of the YAML (set it after loading a file; `None`: the current folder).
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

/// One `objectives` entry: a bare name, or `{name}` like the other jobs' objective entries.
#[derive(Deserialize)]
#[serde(untagged)]
enum ObjectiveName {
    Bare(String),
    Named(NamedObjective),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedObjective {
    name: String,
}

fn objective_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let entries: Vec<ObjectiveName> = Vec::deserialize(d)?;
    Ok(entries
        .into_iter()
        .map(|e| match e {
            ObjectiveName::Bare(name) | ObjectiveName::Named(NamedObjective { name }) => name,
        })
        .collect())
}

impl DpoRunConfig {
    /// K.
    pub fn k(&self) -> usize {
        self.objectives.len()
    }

    /// What the trainer needs of this config.
    pub fn trainer_config(&self) -> DpoTrainerConfig {
        DpoTrainerConfig {
            dpo: self.dpo.clone(),
            optim: self.optim.clone(),
            aggregation: self.aggregation.clone(),
            total_steps: self.train.steps,
            activation_checkpointing: self.train.activation_checkpointing,
            cuda_graphs: self.train.cuda_graphs,
        }
    }
}

/// Keys that earlier versions of this config spelled differently.
const RENAMED_KEYS: &[RenamedKey] = &[
    RenamedKey { old: "dpo.lr", new: "optim.lr", note: "" },
    RenamedKey { old: "dpo.max_grad_norm", new: "optim.max_grad_norm", note: "" },
    RenamedKey {
        old: "dpo.warmup_steps",
        new: "optim.warmup_ratio",
        note: "a fraction of train.steps now (warmup_steps / steps; 0 stays 0)",
    },
    RenamedKey { old: "dpo.aggregation", new: "aggregation", note: "a top-level key now" },
    RenamedKey { old: "train.per_pair_preference", new: "train.preference_per_row", note: "" },
];

impl Validate for DpoRunConfig {
    fn renamed_keys() -> &'static [RenamedKey] {
        RENAMED_KEYS
    }

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
        v.section("adapter", &self.adapter);
        v.check(
            self.adapter.n_objectives == k as i64,
            "adapter.n_objectives",
            format!("is {} but there are {k} objectives", self.adapter.n_objectives),
        );
        v.section("dpo", &self.dpo);
        v.section("optim", &self.optim);
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
        if let Err(e) = self.aggregation.check(k) {
            v.problem("aggregation.ideal", format!("{e}; hint: one zero per objective"));
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
        let labelled =
            validate_files(&self.data, &self.data.train, "data.train", &self.objectives, v);
        let labelled = labelled.unwrap_or_else(|| vec![true; k]);
        for (name, _) in self.objectives.iter().zip(&labelled).filter(|(_, l)| !**l) {
            v.problem(
                "data.train",
                format!(
                    "no training file labels objective `{name}`; hint: map it to a column in \
                     data.labels or in a file's labels, e.g. {name}: chosen"
                ),
            );
        }
        if let Some(eval) = &self.data.eval {
            validate_files(&self.data, eval, "data.eval", &self.objectives, v);
        }
        v.check(self.train.steps >= 1, "train.steps", "must be ≥ 1");
        v.check(self.train.batch_size >= 1, "train.batch_size", "must be ≥ 1");
        v.check(self.train.log_every >= 1, "train.log_every", "must be ≥ 1");
        let m = self.dpo.micro_batch_size;
        v.check(
            m == 0 || self.train.batch_size.is_multiple_of(m),
            "dpo.micro_batch_size",
            format!("{m} must divide train.batch_size {} (or be 0)", self.train.batch_size),
        );
    }
}
