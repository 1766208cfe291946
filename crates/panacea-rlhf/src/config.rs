//! Settings of one PPO step ([`PpoConfig`]), of a whole `train-ppo` run ([`TrainPpoConfig`]:
//! model, prompts, objectives and their scorers, preference sampler, loop) and of a
//! `train-rm` run ([`TrainRmConfig`]). Defaults exist only where they are safe; paths,
//! objectives and K have none.
//!
//! The keys follow the workspace's one config vocabulary (`configs/README.md`): `model`,
//! `seed`, `device`, `dtype`, `threads`, `adapter`, `objectives`, `preference`,
//! `aggregation`, `train.*` and `optim.*` mean the same in every job. Keys of earlier versions
//! are listed in each config's [`Validate::renamed_keys`] table and fail with the new name.

use serde::{Deserialize, Serialize};

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::aggregation::Aggregation;
use panacea_core::config::RenamedKey;
use panacea_core::config::{Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::objective::{Objective, ObjectiveKind};
use panacea_core::preference::PreferenceSampler;
use panacea_data::{PairFormat, ScorerSpec};

use crate::lagrange::LagrangeConfig;

/// Generation settings of the rollout (`rollout:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// Most response tokens per prompt, ≥ 1.
    #[serde(default = "d_max_new")]
    pub max_new_tokens: i64,
    /// Sampling temperature, > 0 (safe-rlhf: 1.0).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Keep only the k most likely tokens (none: all).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Nucleus threshold in (0, 1] (none: 1.0).
    #[serde(default)]
    pub top_p: Option<f64>,
}

/// PPO's own coefficients (`ppo:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoSettings {
    /// β_KL, ≥ 0 (safe-rlhf: 0.02).
    #[serde(default = "d_kl")]
    pub kl_coef: f64,
    /// ε of the clipped ratio, in (0, 1).
    #[serde(default = "d_clip_ratio")]
    pub clip_ratio: f64,
    /// Half-width of the value clip around the old values, > 0.
    #[serde(default = "d_clip_value")]
    pub clip_value: f64,
    /// Symmetric clamp of per-token rewards, > 0.
    #[serde(default = "d_clip_score")]
    pub clip_score: f64,
    /// γ, in (0, 1].
    #[serde(default = "one")]
    pub gamma: f64,
    /// λ_GAE, in [0, 1].
    #[serde(default = "d_gae_lambda")]
    pub gae_lambda: f64,
    /// PPO epochs over each rollout, ≥ 1.
    #[serde(default = "d_one_usize")]
    pub update_iters: usize,
    /// Rows per minibatch; must divide the rollout batch.
    #[serde(default = "d_mini")]
    pub mini_batch_size: usize,
    /// Whiten the aggregated advantages over the rollout (off in safe-rlhf).
    #[serde(default)]
    pub whiten_advantages: bool,
    /// Running mean/std normalisation of each objective's utility. Off by default: the paper's
    /// form is each raw utility times its objective's fixed `scale`, so the trade-off a λ
    /// produces does not drift as statistics move and inner products stay comparable. Saved
    /// with the run's config either way.
    #[serde(default)]
    pub normalise_scores: bool,
}

/// Optimiser settings (`optim:`): AdamW(0.9, 0.95) for both actor and critic, linear warm-up,
/// then cosine (actor) or constant (critic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak actor (adapter) learning rate, > 0.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Critic learning rate, > 0.
    #[serde(default = "d_critic_lr")]
    pub critic_lr: f64,
    /// Actor weight decay on U and V (σ and s never decay), ≥ 0.
    #[serde(default)]
    pub weight_decay: f64,
    /// Critic weight decay, ≥ 0.
    #[serde(default)]
    pub critic_weight_decay: f64,
    /// Fraction of the steps spent in linear warm-up, in [0, 1).
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip, > 0.
    #[serde(default = "one")]
    pub max_grad_norm: f64,
    /// Actor learning-rate multipliers per adapter parameter kind (`sigma`, `pref_scale`,
    /// `vectors`), each ≥ 0, default 1.
    #[serde(default)]
    pub lr_multipliers: panacea_core::optim::AdapterLrMultipliers,
}

/// Everything [`crate::trainer::PpoTrainer`] needs (built from a run's config by
/// [`TrainPpoConfig::trainer_config`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoConfig {
    /// Rollout generation.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// PPO coefficients.
    #[serde(default)]
    pub ppo: PpoSettings,
    /// Optimisers and schedules.
    #[serde(default)]
    pub optim: OptimConfig,
    /// How per-objective advantages are scalarised with λ: linear (the default), or
    /// Tchebycheff, which follows the worst dimension of each row from batch-level estimates
    /// of J against the ideal point (`ideal`, in scaled utility units, or the running maximum
    /// of the batch estimates when omitted).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Optional PPO-Lagrangian constraint on one cost objective.
    #[serde(default)]
    pub lagrange: Option<LagrangeConfig>,
    /// Activation checkpointing per decoder layer in the actor's and the critic's training
    /// forward (a run's `train.activation_checkpointing`, [`TrainConfig`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn d_max_new() -> i64 {
    64
}
fn d_kl() -> f64 {
    0.02
}
fn d_clip_ratio() -> f64 {
    0.2
}
fn d_clip_value() -> f64 {
    5.0
}
fn d_clip_score() -> f64 {
    50.0
}
fn d_gae_lambda() -> f64 {
    0.95
}
fn d_one_usize() -> usize {
    1
}
fn d_mini() -> usize {
    4
}
fn d_lr() -> f64 {
    1e-3
}
fn d_critic_lr() -> f64 {
    1e-3
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self { max_new_tokens: d_max_new(), temperature: 1.0, top_k: None, top_p: None }
    }
}

impl Default for PpoSettings {
    fn default() -> Self {
        Self {
            kl_coef: d_kl(),
            clip_ratio: d_clip_ratio(),
            clip_value: d_clip_value(),
            clip_score: d_clip_score(),
            gamma: 1.0,
            gae_lambda: d_gae_lambda(),
            update_iters: 1,
            mini_batch_size: d_mini(),
            whiten_advantages: false,
            normalise_scores: false,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            critic_lr: d_critic_lr(),
            weight_decay: 0.0,
            critic_weight_decay: 0.0,
            warmup_ratio: 0.0,
            max_grad_norm: 1.0,
            lr_multipliers: Default::default(),
        }
    }
}

impl OptimConfig {
    /// Warm-up length in steps for a run of `total` steps.
    pub fn warmup_steps(&self, total: u64) -> u64 {
        (self.warmup_ratio * total as f64).ceil() as u64
    }

    /// Actor learning rate at 1-based `step` of `total`: linear warm-up to `lr`, then
    /// cosine decay to 0 at `total`.
    pub fn actor_lr_at(&self, step: u64, total: u64) -> f64 {
        let warm = self.warmup_steps(total);
        if step <= warm && warm > 0 {
            return self.lr * step as f64 / warm as f64;
        }
        let span = total.saturating_sub(warm).max(1) as f64;
        let progress = ((step - warm) as f64 / span).clamp(0.0, 1.0);
        // Cosine from the peak at the end of warm-up towards 0; the first post-warm-up step
        // already moves a little, so the last step (progress 1) would be 0: keep a floor of
        // one step's worth so no step is wasted.
        let floor = 1.0 / span;
        self.lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(floor * 0.5)
    }

    /// Critic learning rate at `step` of `total`: linear warm-up, then constant.
    pub fn critic_lr_at(&self, step: u64, total: u64) -> f64 {
        let warm = self.warmup_steps(total);
        if step <= warm && warm > 0 {
            self.critic_lr * step as f64 / warm as f64
        } else {
            self.critic_lr
        }
    }
}

impl Validate for RolloutConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(self.max_new_tokens >= 1, "max_new_tokens", "must be ≥ 1");
        v.positive(self.temperature, "temperature");
        if let Some(k) = self.top_k {
            v.check(k >= 1, "top_k", format!("must be ≥ 1, got {k}"));
        }
        if let Some(p) = self.top_p {
            v.check(p > 0.0 && p <= 1.0, "top_p", format!("must lie in (0, 1], got {p}"));
        }
    }
}

impl Validate for PpoSettings {
    fn validate(&self, v: &mut Validator) {
        v.in_range(self.kl_coef, "kl_coef", 0.0, f64::MAX);
        v.check(
            self.clip_ratio > 0.0 && self.clip_ratio < 1.0,
            "clip_ratio",
            format!("must lie in (0, 1), got {}", self.clip_ratio),
        );
        v.positive(self.clip_value, "clip_value");
        v.positive(self.clip_score, "clip_score");
        v.check(
            self.gamma > 0.0 && self.gamma <= 1.0,
            "gamma",
            format!("must lie in (0, 1], got {}", self.gamma),
        );
        v.in_range(self.gae_lambda, "gae_lambda", 0.0, 1.0);
        v.check(self.update_iters >= 1, "update_iters", "must be ≥ 1");
        v.check(self.mini_batch_size >= 1, "mini_batch_size", "must be ≥ 1");
    }
}

impl Validate for OptimConfig {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.lr, "lr");
        v.positive(self.critic_lr, "critic_lr");
        v.in_range(self.weight_decay, "weight_decay", 0.0, 1.0);
        v.in_range(self.critic_weight_decay, "critic_weight_decay", 0.0, 1.0);
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

impl Validate for PpoConfig {
    fn validate(&self, v: &mut Validator) {
        v.section("rollout", &self.rollout);
        v.section("ppo", &self.ppo);
        v.section("optim", &self.optim);
        v.section("aggregation", &self.aggregation);
        if let Some(l) = &self.lagrange {
            v.section("lagrange", l);
        }
    }
}

/// Where the training prompts come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromptSource {
    /// The bundled prompt sets of panacea-data (train split for training, eval split for the
    /// final comparison).
    Bundled {
        /// `benign`, `harmful` or both.
        sets: Vec<BundledSet>,
    },
    /// A prompt file: JSON Lines, `.jsonl.gz` or parquet, one prompt per line or row in a
    /// `prompt` column, with optional `id` and `split` (`train`/`eval`; without one, the hash
    /// rule of [`panacea_data::split_of`]) and other columns ignored
    /// ([`panacea_data::load_prompt_file`]).
    File {
        /// The file.
        path: std::path::PathBuf,
        /// How it is stored: `auto` (default: by extension, `.parquet`, `.gz`, else JSON
        /// Lines), `jsonl`, `jsonl-gz` or `parquet` — the pair files' `file_format`.
        #[serde(default, skip_serializing_if = "is_auto")]
        file_format: panacea_data::FileFormat,
    },
}

fn is_auto(f: &panacea_data::FileFormat) -> bool {
    *f == panacea_data::FileFormat::Auto
}

/// A bundled prompt set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundledSet {
    /// Everyday instructions.
    Benign,
    /// Prompts a model should refuse.
    Harmful,
}

/// Prompt data settings (`data:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The prompt source (both splits: train prompts for rollouts, eval prompts for the
    /// hypervolume curve and the final comparison).
    pub prompts: PromptSource,
    /// Render prompts as one user turn through the model's own chat template (ChatML, reported,
    /// when the model has none).
    #[serde(default = "yes")]
    pub chat_template: bool,
    /// Prompts longer than this many tokens are dropped, ≥ 2.
    #[serde(default = "d_max_prompt")]
    pub max_prompt_tokens: usize,
    /// Skip malformed lines (parquet: rows) of a prompt file (counted and reported as a
    /// warning, the first few by file, line and field) instead of stopping at the first one,
    /// as for pair files. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_invalid: bool,
}

/// One objective: what it is called, whether it is a reward or a cost, its scale and scorer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// Short name (logs, metrics, fronts).
    pub name: String,
    /// Reward or cost. Only a learned score model can be a cost: every built-in scorer
    /// returns a higher-is-better utility.
    pub kind: ObjectiveKind,
    /// Multiplier on the normalised utility, > 0.
    #[serde(default = "one")]
    pub scale: f64,
    /// The score function.
    pub source: ScorerSpec,
}

impl ObjectiveSpec {
    /// The core objective.
    pub fn objective(&self) -> Objective {
        Objective { name: self.name.clone(), kind: self.kind, scale: self.scale }
    }
}

/// Loop settings (`train:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of PPO steps, ≥ 1.
    pub steps: u64,
    /// Prompts per step (rollout batch), a multiple of `ppo.mini_batch_size`.
    pub batch_size: usize,
    /// Log every N steps.
    #[serde(default = "d_one_u64")]
    pub log_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Every N steps (0: never), greedy answers to `hv_prompts` eval prompts under the
    /// Das–Dennis λ grid with H = 2 (K = 2: e_1, (½, ½), e_2) give a front whose hypervolume
    /// is logged as `eval/hv` (reference: the base model's vector minus 1 in every objective).
    #[serde(default)]
    pub eval_every: u64,
    /// Eval prompts answered for the hypervolume curve, ≥ 1.
    #[serde(default = "d_hv_prompts")]
    pub hv_prompts: usize,
    /// Eval prompts used for the final comparison of the vertices e_j with the base (greedy),
    /// ≥ 1.
    #[serde(default = "d_eval_prompts")]
    pub eval_prompts: usize,
    /// Draw one λ per prompt row instead of one per step: each rollout then covers several
    /// points of the simplex, and each row keeps its λ through the whole step. The paper
    /// shares one λ per step (false).
    #[serde(default)]
    pub preference_per_row: bool,
    /// Activation checkpointing per decoder layer in the actor's and the critic's training
    /// forward: keep only each layer's input and recompute the layer in the backward pass (the
    /// same gradients, less memory, about one more forward of time). Default false; the same
    /// key in every trainer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
    /// The training step under CUDA graphs at bucketed shapes (the same key, type and meaning
    /// as in train-dpo; configs/README.md). Default false. The PPO update has no graphed
    /// step yet: with true the run says so once and trains eagerly (the numbers of false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graphs: bool,
}

fn d_hv_prompts() -> usize {
    4
}

/// The whole `train-ppo` config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPpoConfig {
    /// The base model: a short name from the model cache (`smollm2-135m`), a model folder or
    /// GGUF file, or `tiny-random` (panacea-lm's 2-layer random-init Llama with the SmolLM2
    /// tokenizer, initialised from `seed`).
    pub model: String,
    /// The run's one seed (RNG streams, libtorch's generator, the tiny-random init).
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d_device")]
    pub device: DeviceChoice,
    /// Weight dtype of the frozen base (`f32` or `bf16`). The policy and critic adapters, the
    /// value and score heads, the optimiser moments, log-probs and losses stay f32 whatever
    /// this is.
    #[serde(default)]
    pub dtype: DType,
    /// libtorch intra-op threads (0: libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// The policy adapter (its `n_objectives` must equal the number of objectives; the critic
    /// uses the same settings).
    pub adapter: SvdLoraConfig,
    /// The objectives, in preference order (K = their number).
    pub objectives: Vec<ObjectiveSpec>,
    /// How λ is drawn each step (drawn before generation, fixed through the step).
    #[serde(default)]
    pub preference: PreferenceSampler,
    /// How per-objective advantages are scalarised with λ (linear by default; Tchebycheff is
    /// experimental and needs an ideal point on normalised scores).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Prompt data.
    pub data: DataConfig,
    /// The loop.
    pub train: TrainConfig,
    /// Rollout generation.
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// PPO coefficients.
    #[serde(default)]
    pub ppo: PpoSettings,
    /// Optimisers and schedules.
    #[serde(default)]
    pub optim: OptimConfig,
    /// Optional PPO-Lagrangian constraint on one cost objective.
    #[serde(default)]
    pub lagrange: Option<LagrangeConfig>,
}

impl TrainPpoConfig {
    /// The settings of [`crate::trainer::PpoTrainer`].
    pub fn trainer_config(&self) -> PpoConfig {
        PpoConfig {
            rollout: self.rollout.clone(),
            ppo: self.ppo.clone(),
            optim: self.optim.clone(),
            aggregation: self.aggregation.clone(),
            lagrange: self.lagrange.clone(),
            activation_checkpointing: self.train.activation_checkpointing,
        }
    }

    /// The objective names, in preference order.
    pub fn objective_names(&self) -> Vec<String> {
        self.objectives.iter().map(|o| o.name.clone()).collect()
    }

    /// The memory one PPO update is estimated to need on a model of architecture `model`
    /// ([`panacea_lm::memory_plan`]): the frozen base in `dtype`, the actor's and the critic's
    /// adapters with their AdamW state, and one minibatch forward with a graph
    /// (`ppo.mini_batch_size` rows of `data.max_prompt_tokens + rollout.max_new_tokens` tokens,
    /// an upper bound; the head scores the response positions), with or without
    /// `train.activation_checkpointing`. Rollout generation, its KV cache and learned score
    /// models are not counted.
    pub fn step_memory_plan(&self, model: &panacea_lm::LlamaConfig) -> panacea_lm::MemoryPlan {
        let rows = self.ppo.mini_batch_size as i64;
        let new = self.rollout.max_new_tokens.max(0);
        panacea_lm::memory_plan(&panacea_lm::MemoryPlanInput {
            config: model,
            adapter: &self.adapter,
            batch: rows,
            seq_len: self.data.max_prompt_tokens as i64 + new,
            head_tokens: rows * new,
            trained_adapters: 2,
            base_bytes: self.dtype.kind().elt_size_in_bytes() as i64,
            checkpointing: self.train.activation_checkpointing,
            padded: true,
        })
    }

    /// [`TrainPpoConfig::step_memory_plan`] as the job reports it.
    pub fn memory_estimate(&self, model: &panacea_lm::LlamaConfig) -> panacea_run::MemoryEstimate {
        let shape = format!(
            "minibatches of {} rows of ≤ {} + {} tokens, {} base weights, activation \
             checkpointing {}",
            self.ppo.mini_batch_size,
            self.data.max_prompt_tokens,
            self.rollout.max_new_tokens,
            self.dtype,
            on_off(self.train.activation_checkpointing)
        );
        panacea_run::MemoryEstimate::new(shape, self.step_memory_plan(model).parts())
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn d_max_prompt() -> usize {
    96
}
fn d_one_u64() -> u64 {
    1
}
fn d_eval_prompts() -> usize {
    16
}
fn d_device() -> DeviceChoice {
    DeviceChoice::Auto
}

/// Keys of `train-ppo` configs before the shared vocabulary, most specific first.
const PPO_RENAMED: &[RenamedKey] = &[
    RenamedKey { old: "model.name", new: "model", note: "`model` is now the model name itself" },
    RenamedKey { old: "model.adapter", new: "adapter", note: "" },
    RenamedKey {
        old: "model.init_seed",
        new: "seed",
        note: "tiny-random is initialised from the run's seed",
    },
    RenamedKey { old: "ppo.rollout", new: "rollout", note: "" },
    RenamedKey { old: "ppo.ppo", new: "ppo", note: "the PPO coefficients moved up one level" },
    RenamedKey { old: "ppo.optim.actor_lr", new: "optim.lr", note: "" },
    RenamedKey { old: "ppo.optim.grad_clip", new: "optim.max_grad_norm", note: "" },
    RenamedKey { old: "ppo.optim", new: "optim", note: "" },
    RenamedKey { old: "ppo.aggregation", new: "aggregation", note: "" },
    RenamedKey { old: "ppo.lagrange", new: "lagrange", note: "" },
    RenamedKey { old: "train.hv_every", new: "train.eval_every", note: "" },
];

/// Records a problem for every objective problem shared by PPO and score-model configs:
/// empty or repeated names.
fn check_objective_names<'a>(v: &mut Validator, names: impl Iterator<Item = &'a str>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, name) in names.enumerate() {
        let key = format!("objectives.{i}.name");
        v.check(!name.trim().is_empty(), &key, "must not be empty");
        v.check(!seen.contains(&name), &key, format!("`{name}` is named twice"));
        seen.push(name);
    }
}

impl Validate for TrainPpoConfig {
    fn validate(&self, v: &mut Validator) {
        let k = self.objectives.len();
        v.check(!self.model.trim().is_empty(), "model", "must name a model");
        v.check(k >= 1, "objectives", "give at least one objective");
        v.check(
            self.adapter.n_objectives == k as i64,
            "adapter.n_objectives",
            format!("must equal the number of objectives ({k}), got {}", self.adapter.n_objectives),
        );
        v.check(self.adapter.rank >= 1, "adapter.rank", "must be ≥ 1");
        v.positive(self.adapter.alpha, "adapter.alpha");
        v.positive(self.adapter.init_std, "adapter.init_std");
        check_objective_names(v, self.objectives.iter().map(|o| o.name.as_str()));
        for (i, o) in self.objectives.iter().enumerate() {
            let key = format!("objectives.{i}");
            v.positive(o.scale, &format!("{key}.scale"));
            for (sub, message) in o.source.problems() {
                v.problem(&format!("{key}.source.{sub}"), message);
            }
            v.check(
                o.kind == ObjectiveKind::Reward || o.source.is_learned(),
                &format!("{key}.kind"),
                format!(
                    "`cost` with the built-in scorer `{}`, which returns a higher-is-better \
                     utility that a cost would negate; hint: declare it `reward` (for the \
                     opposite direction use a scorer that measures it, e.g. `negative` for \
                     `positive`), or use a learned cost model (`kind: score_model`)",
                    o.source.kind_name()
                ),
            );
        }
        if let Err(e) = self.preference.check(k) {
            v.problem("preference", e.to_string());
        }
        v.section("aggregation", &self.aggregation);
        if let Aggregation::Tchebycheff { ideal } = &self.aggregation {
            v.check(
                ideal.is_empty() || ideal.len() == k,
                "aggregation.ideal",
                format!(
                    "give {k} entries (one per objective), or none for the running maximum of \
                     the batch estimates; got {}",
                    ideal.len()
                ),
            );
        }
        if let Some(l) = &self.lagrange {
            v.section("lagrange", l);
            v.check(
                l.objective < k && self.objectives[l.objective].kind == ObjectiveKind::Cost,
                "lagrange.objective",
                format!("must index a cost objective (0..{k})"),
            );
        }
        v.check(self.train.steps >= 1, "train.steps", "must be ≥ 1");
        v.check(self.train.log_every >= 1, "train.log_every", "must be ≥ 1");
        v.check(self.train.eval_prompts >= 1, "train.eval_prompts", "must be ≥ 1");
        v.check(self.train.hv_prompts >= 1, "train.hv_prompts", "must be ≥ 1");
        let mb = self.ppo.mini_batch_size;
        v.check(
            self.train.batch_size >= 1 && mb >= 1 && self.train.batch_size.is_multiple_of(mb),
            "train.batch_size",
            format!(
                "must be a positive multiple of ppo.mini_batch_size ({mb}), got {}",
                self.train.batch_size
            ),
        );
        v.check(self.data.max_prompt_tokens >= 2, "data.max_prompt_tokens", "must be ≥ 2");
        match &self.data.prompts {
            PromptSource::Bundled { sets } => {
                v.check(!sets.is_empty(), "data.prompts.sets", "name at least one set");
            }
            PromptSource::File { path, .. } => {
                v.check(
                    path.is_file(),
                    "data.prompts.path",
                    format!("{} is not a file", path.display()),
                );
            }
        }
        v.section("rollout", &self.rollout);
        v.section("ppo", &self.ppo);
        v.section("optim", &self.optim);
    }

    fn renamed_keys() -> &'static [RenamedKey] {
        PPO_RENAMED
    }
}

/// The pair file of a score-model run (`data:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmDataConfig {
    /// The pairs: a file (JSON Lines, `.jsonl.gz` or parquet), or a list of files with settings
    /// of their own (`{path, format, file_format, labels}`), as `train-dpo`'s `data.train`
    /// ([`panacea_data::PairFiles`]); the files' records are read in order and concatenated.
    pub train: panacea_data::PairFiles,
    /// `generic`, `pku-saferlhf`, `hh-rlhf` or `trl` (of a list's files, the default).
    pub format: PairFormat,
    /// How the files are stored: `auto` (default: by extension, `.parquet`, `.gz`, else JSON
    /// Lines), `jsonl`, `jsonl-gz` or `parquet` (as in `train-dpo`; of a list's files, the
    /// default).
    #[serde(default, skip_serializing_if = "is_auto")]
    pub file_format: panacea_data::FileFormat,
    /// Objective → the column that labels it (`better_response_id`, `safer_response_id`,
    /// `chosen`, `prefs.<key>`, by schema), as in `train-dpo` (of a list's files, the default).
    /// Empty (default): the schema's own rule. Every objective must be labelled by some file: a
    /// score model learns from its labels alone.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Fraction of pairs held out for evaluation, in (0, 1).
    #[serde(default = "d_eval_fraction")]
    pub eval_fraction: f64,
    /// Render prompts as one user turn through the model's own chat template (ChatML, reported,
    /// when the model has none).
    #[serde(default = "yes")]
    pub chat_template: bool,
    /// Sequences are cut to this many tokens (from the left, keeping the response end), ≥ 4.
    #[serde(default = "d_rm_max_len")]
    pub max_len: usize,
    /// Skip malformed lines (counted and reported) instead of stopping at the first one.
    #[serde(default)]
    pub skip_invalid: bool,
}

/// One score model to train: a pair-file dimension and whether it scores a reward or a cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmObjective {
    /// The pair file's dimension (label) to train on; the model folder is `score-<name>`.
    pub name: String,
    /// Reward (higher is better) or cost (higher is worse).
    pub kind: ObjectiveKind,
}

/// Score-model loop settings (`train:`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmTrainConfig {
    /// Passes over the train pairs, ≥ 1.
    pub epochs: usize,
    /// Pairs per step, ≥ 1.
    pub batch_size: usize,
    /// η of the score regulariser η·mean(r²), ≥ 0.
    #[serde(default)]
    pub eta: f64,
    /// Activation checkpointing per decoder layer ([`panacea_lm::Llama::hidden_states_checkpointed`]):
    /// keep only each layer's input and recompute the layer in the backward pass (the same
    /// gradients, less memory, about one more forward of time). Default false; the same key in
    /// every trainer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub activation_checkpointing: bool,
}

/// Score-model optimiser settings (`optim:`): Adam(0.9, 0.95), constant learning rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmOptimConfig {
    /// Learning rate, > 0.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// Global gradient-norm clip, > 0.
    #[serde(default = "one")]
    pub max_grad_norm: f64,
}

impl Default for RmOptimConfig {
    fn default() -> Self {
        Self { lr: d_lr(), max_grad_norm: 1.0 }
    }
}

/// The whole `train-rm` config file: one score model per objective on one pair file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRmConfig {
    /// The base model (as in [`TrainPpoConfig::model`]); a PPO run that uses the score models
    /// must load the same base (for `tiny-random`: the same `seed`).
    pub model: String,
    /// The run's one seed (pair shuffle, head init, the tiny-random init).
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "d_device")]
    pub device: DeviceChoice,
    /// Weight dtype of the frozen base; the score adapters, heads, optimiser and losses stay
    /// f32.
    #[serde(default)]
    pub dtype: DType,
    /// libtorch intra-op threads (0: libtorch's default).
    #[serde(default)]
    pub threads: usize,
    /// Each score model's adapter; `n_objectives` must be 1 (score models are not
    /// preference-conditioned: the one preference slot is held at 1).
    pub adapter: SvdLoraConfig,
    /// The pair file.
    pub data: RmDataConfig,
    /// The dimensions to train, one score model each.
    pub objectives: Vec<RmObjective>,
    /// The loop.
    pub train: RmTrainConfig,
    /// The optimiser.
    #[serde(default)]
    pub optim: RmOptimConfig,
}

impl TrainRmConfig {
    /// The pair files of `data.train`, with the section's `format`, `file_format` and
    /// `labels` where a list entry gives none.
    pub fn pair_files(&self) -> Vec<panacea_data::PairFile> {
        self.data.train.resolve(self.data.format, self.data.file_format, &self.data.labels)
    }

    /// The memory one score-model step is estimated to need on a model of architecture
    /// `model` ([`panacea_lm::memory_plan`]): the frozen base in `dtype`, one score model's
    /// adapter with its optimiser state, and the forwards of a batch of `train.batch_size`
    /// pairs (two sequences each of ≤ `data.max_len` tokens; the scalar head reads one
    /// position, so no vocabulary-sized logits), with or without
    /// `train.activation_checkpointing`.
    pub fn step_memory_plan(&self, model: &panacea_lm::LlamaConfig) -> panacea_lm::MemoryPlan {
        panacea_lm::memory_plan(&panacea_lm::MemoryPlanInput {
            config: model,
            adapter: &self.adapter,
            batch: 2 * self.train.batch_size as i64,
            seq_len: self.data.max_len as i64,
            head_tokens: 0,
            trained_adapters: 1,
            base_bytes: self.dtype.kind().elt_size_in_bytes() as i64,
            checkpointing: self.train.activation_checkpointing,
            padded: true,
        })
    }

    /// [`TrainRmConfig::step_memory_plan`] as the job reports it.
    pub fn memory_estimate(&self, model: &panacea_lm::LlamaConfig) -> panacea_run::MemoryEstimate {
        let shape = format!(
            "batches of {} pairs (2 × {} sequences of ≤ {} tokens), {} base weights, activation \
             checkpointing {}",
            self.train.batch_size,
            self.train.batch_size,
            self.data.max_len,
            self.dtype,
            on_off(self.train.activation_checkpointing)
        );
        panacea_run::MemoryEstimate::new(shape, self.step_memory_plan(model).parts())
    }
}

fn d_eval_fraction() -> f64 {
    0.2
}
fn d_rm_max_len() -> usize {
    128
}

/// Keys of `train-rm` configs before the shared vocabulary.
const RM_RENAMED: &[RenamedKey] = &[
    RenamedKey { old: "model.name", new: "model", note: "`model` is now the model name itself" },
    RenamedKey {
        old: "model.rank",
        new: "adapter.rank",
        note: "the adapter is `adapter: { rank, alpha, n_objectives: 1 }`",
    },
    RenamedKey {
        old: "model.alpha",
        new: "adapter.alpha",
        note: "the adapter is `adapter: { rank, alpha, n_objectives: 1 }`",
    },
    RenamedKey { old: "data.path", new: "data.train", note: "" },
    RenamedKey { old: "data.max_tokens", new: "data.max_len", note: "" },
    RenamedKey {
        old: "models",
        new: "objectives",
        note: "entries are `{ name, kind }` (`dim` is now `name`)",
    },
    RenamedKey { old: "train.lr", new: "optim.lr", note: "" },
];

impl Validate for TrainRmConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(!self.model.trim().is_empty(), "model", "must name a model");
        v.check(self.adapter.rank >= 1, "adapter.rank", "must be ≥ 1");
        v.positive(self.adapter.alpha, "adapter.alpha");
        v.positive(self.adapter.init_std, "adapter.init_std");
        v.check(
            self.adapter.n_objectives == 1,
            "adapter.n_objectives",
            format!(
                "must be 1 (a score model has one preference slot held at 1), got {}",
                self.adapter.n_objectives
            ),
        );
        let files = self.pair_files();
        v.check(!files.is_empty(), "data.train", "give at least one pair file");
        for (i, file) in files.iter().enumerate() {
            v.check(
                file.path.is_file(),
                &self.data.train.path_key("data.train", i),
                format!("{} is not a file", file.path.display()),
            );
        }
        v.check(
            self.data.eval_fraction > 0.0 && self.data.eval_fraction < 1.0,
            "data.eval_fraction",
            format!("must lie in (0, 1), got {}", self.data.eval_fraction),
        );
        v.check(self.data.max_len >= 4, "data.max_len", "must be ≥ 4");
        v.check(!self.objectives.is_empty(), "objectives", "name at least one dimension to train");
        check_objective_names(v, self.objectives.iter().map(|o| o.name.as_str()));
        let names: Vec<String> = self.objectives.iter().map(|o| o.name.clone()).collect();
        if !names.is_empty() {
            // Per objective, whether some file labels it (`None` once a file's labels fail).
            let mut labelled = Some(vec![false; names.len()]);
            for (i, file) in files.iter().enumerate() {
                match panacea_data::LabelSource::resolve(file.format, &names, &file.labels) {
                    Ok(sources) => {
                        for (l, s) in labelled.iter_mut().flatten().zip(&sources) {
                            *l |= *s != panacea_data::LabelSource::Unlabelled;
                        }
                    }
                    Err(e) => {
                        v.problem(
                            &self.data.train.labels_key("data.train", i),
                            format!(
                                "{} ({}): {e}",
                                file.path.display(),
                                file.format.display_name()
                            ),
                        );
                        labelled = None;
                    }
                }
            }
            for (name, _) in names.iter().zip(labelled.iter().flatten()).filter(|(_, l)| !**l) {
                v.problem(
                    "data.labels",
                    format!(
                        "objective `{name}` is labelled by no column, and a score model learns \
                         from its labels alone; hint: map it, e.g. {name}: chosen (or drop the \
                         objective)"
                    ),
                );
            }
        }
        v.check(self.train.epochs >= 1, "train.epochs", "must be ≥ 1");
        v.check(self.train.batch_size >= 1, "train.batch_size", "must be ≥ 1");
        v.in_range(self.train.eta, "train.eta", 0.0, f64::MAX);
        v.positive(self.optim.lr, "optim.lr");
        v.positive(self.optim.max_grad_norm, "optim.max_grad_norm");
    }

    fn renamed_keys() -> &'static [RenamedKey] {
        RM_RENAMED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        // 100 steps, 3 % warm-up → 3 warm-up steps: 1/3, 2/3, 1 of the peak; then cosine.
        let o = OptimConfig { lr: 1.0, warmup_ratio: 0.03, ..OptimConfig::default() };
        assert!((o.actor_lr_at(1, 100) - 1.0 / 3.0).abs() < 1e-12);
        assert!((o.actor_lr_at(3, 100) - 1.0).abs() < 1e-12);
        // Halfway through the cosine part (step 3 + 48.5): 0.5 · (1 + cos(π/2)) = 0.5.
        let mid = o.actor_lr_at(3 + 97 / 2, 100);
        assert!((mid - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos())).abs() < 1e-12);
        assert!(o.actor_lr_at(100, 100) > 0.0 && o.actor_lr_at(100, 100) < 0.01);
        assert!((o.critic_lr_at(50, 100) - o.critic_lr).abs() < 1e-12);
    }
}
