//! Settings of one PPO step (method.md §6.6, [`PpoConfig`]) and of a whole `train-ppo` run
//! ([`TrainPpoConfig`]: model, prompts, objectives and their sources, preference sampler,
//! loop). Defaults exist only where they are safe; paths, objectives and K have none.

use serde::{Deserialize, Serialize};

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::aggregation::Aggregation;
use panacea_core::config::{Validate, Validator};
use panacea_core::device::DType;
use panacea_core::objective::{Objective, ObjectiveKind};
use panacea_core::preference::PreferenceSampler;

use crate::lagrange::LagrangeConfig;

/// Generation settings of the rollout (method.md §6.1 step 2).
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

/// PPO's own coefficients (method.md §6.1, §6.6).
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
    /// Running mean/std normalisation of each objective's utility.
    #[serde(default = "yes")]
    pub normalise_scores: bool,
}

/// Optimiser settings: Adam(0.9, 0.95) for both actor and critic, linear warm-up, then cosine
/// (actor) or constant (critic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak actor (adapter) learning rate, > 0.
    #[serde(default = "d_actor_lr")]
    pub actor_lr: f64,
    /// Critic learning rate, > 0.
    #[serde(default = "d_critic_lr")]
    pub critic_lr: f64,
    /// Actor weight decay on U and V (σ and s never decay), ≥ 0.
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Critic weight decay, ≥ 0.
    #[serde(default)]
    pub critic_weight_decay: f64,
    /// Fraction of the steps spent in linear warm-up, in [0, 1).
    #[serde(default = "d_warmup")]
    pub warmup_ratio: f64,
    /// Global gradient-norm clip, > 0.
    #[serde(default = "one")]
    pub grad_clip: f64,
}

/// Everything [`crate::trainer::PpoTrainer`] needs.
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
    /// How per-objective advantages are scalarised with λ (linear by default; Tchebycheff is
    /// experimental and needs an ideal point on normalised scores).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Optional PPO-Lagrangian constraint on one cost objective.
    #[serde(default)]
    pub lagrange: Option<LagrangeConfig>,
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
fn d_actor_lr() -> f64 {
    2e-3
}
fn d_critic_lr() -> f64 {
    1e-3
}
fn d_wd() -> f64 {
    0.01
}
fn d_warmup() -> f64 {
    0.03
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
            normalise_scores: true,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            actor_lr: d_actor_lr(),
            critic_lr: d_critic_lr(),
            weight_decay: d_wd(),
            critic_weight_decay: 0.0,
            warmup_ratio: d_warmup(),
            grad_clip: 1.0,
        }
    }
}

impl OptimConfig {
    /// Warm-up length in steps for a run of `total` steps.
    pub fn warmup_steps(&self, total: u64) -> u64 {
        (self.warmup_ratio * total as f64).ceil() as u64
    }

    /// Actor learning rate at 1-based `step` of `total`: linear warm-up to `actor_lr`, then
    /// cosine decay to 0 at `total`.
    pub fn actor_lr_at(&self, step: u64, total: u64) -> f64 {
        let warm = self.warmup_steps(total);
        if step <= warm && warm > 0 {
            return self.actor_lr * step as f64 / warm as f64;
        }
        let span = total.saturating_sub(warm).max(1) as f64;
        let progress = ((step - warm) as f64 / span).clamp(0.0, 1.0);
        // Cosine from the peak at the end of warm-up towards 0; the first post-warm-up step
        // already moves a little, so the last step (progress 1) would be 0: keep a floor of
        // one step's worth so no step is wasted.
        let floor = 1.0 / span;
        self.actor_lr * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(floor * 0.5)
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
        v.positive(self.actor_lr, "actor_lr");
        v.positive(self.critic_lr, "critic_lr");
        v.in_range(self.weight_decay, "weight_decay", 0.0, 1.0);
        v.in_range(self.critic_weight_decay, "critic_weight_decay", 0.0, 1.0);
        v.check(
            (0.0..1.0).contains(&self.warmup_ratio),
            "warmup_ratio",
            format!("must lie in [0, 1), got {}", self.warmup_ratio),
        );
        v.positive(self.grad_clip, "grad_clip");
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

/// Which base model to load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A short name from the model cache (`smollm2-135m`), a model folder or GGUF file, or
    /// `tiny-random` (a 2-layer D = 64 random-init Llama with the real SmolLM2 tokenizer, for
    /// smoke runs).
    pub name: String,
    /// The policy adapter (its `n_objectives` must equal the number of objectives).
    pub adapter: SvdLoraConfig,
    /// Seed of the `tiny-random` init.
    #[serde(default)]
    pub init_seed: i64,
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
    /// A prompt JSONL file in panacea-data's prompt schema (its `split` field is honoured).
    File {
        /// The file.
        path: std::path::PathBuf,
    },
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

/// Prompt data settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The prompt source.
    pub prompts: PromptSource,
    /// Render prompts with the ChatML template.
    #[serde(default = "yes")]
    pub chat_template: bool,
    /// Prompts longer than this many tokens are dropped, ≥ 2.
    #[serde(default = "d_max_prompt")]
    pub max_prompt_tokens: usize,
}

/// One objective's score function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// VADER compound sentiment of the response, in [−1, 1].
    Positive,
    /// Minus the VADER compound of the response, in [−1, 1] (in direct conflict with
    /// `positive`).
    Negative,
    /// 1 − p(toxic) of the response (alt-profanity-check export), in [0, 1].
    Harmless,
    /// The concise rule r_max if |y| ≤ c else r_max + 1 − |y|/c, |y| in tokens.
    Concise {
        /// r_max.
        #[serde(default = "d_r_max")]
        r_max: f64,
        /// c, in tokens, > 0.
        c: f64,
    },
    /// A learned reward or cost model folder written by `panacea train-rm`.
    ScoreModel {
        /// The folder.
        path: std::path::PathBuf,
    },
    /// Toy: fraction of even token ids in the response (tests and smoke runs).
    EvenTokens,
    /// Toy: fraction of odd token ids in the response.
    OddTokens,
    /// Toy: minus the response length in tokens.
    NegativeLength,
}

/// One objective: what it is called, whether it is a reward or a cost, its scale and source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// Short name (logs, metrics, fronts).
    pub name: String,
    /// Reward or cost.
    pub kind: ObjectiveKind,
    /// Multiplier on the normalised utility, > 0.
    #[serde(default = "one")]
    pub scale: f64,
    /// The score function.
    pub source: SourceConfig,
}

impl ObjectiveSpec {
    /// The core objective.
    pub fn objective(&self) -> Objective {
        Objective { name: self.name.clone(), kind: self.kind, scale: self.scale }
    }
}

/// Loop settings (owned by the CLI's loop).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of PPO steps, ≥ 1.
    pub steps: u64,
    /// Prompts per step (rollout batch), a multiple of `ppo.ppo.mini_batch_size`.
    pub batch_size: usize,
    /// Log every N steps.
    #[serde(default = "d_one_u64")]
    pub log_every: u64,
    /// Checkpoint every N steps (0: only at the end).
    #[serde(default)]
    pub save_every: u64,
    /// Eval prompts used for the final e_1 / e_2 comparison (greedy), ≥ 1.
    #[serde(default = "d_eval_prompts")]
    pub eval_prompts: usize,
    /// Draw one λ per prompt row instead of one per step (method.md §2.2, [ours]): each
    /// rollout then covers several points of the simplex, and each row keeps its λ through
    /// the whole step. The paper shares one λ per step (false).
    #[serde(default)]
    pub preference_per_row: bool,
    /// Every N steps (0: never), greedy answers to `hv_prompts` eval prompts under the
    /// Das–Dennis λ grid with H = 2 (K = 2: e_1, (½, ½), e_2) give a front whose hypervolume
    /// is logged as `eval/hv` (reference: the base model's vector minus 1 in every objective).
    #[serde(default)]
    pub hv_every: u64,
    /// Eval prompts answered for the hypervolume curve, ≥ 1.
    #[serde(default = "d_hv_prompts")]
    pub hv_prompts: usize,
}

fn d_hv_prompts() -> usize {
    4
}

/// The whole `train-ppo` config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainPpoConfig {
    /// The run's single seed.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (`--device` overrides it).
    #[serde(default = "d_device")]
    pub device: String,
    /// Weight dtype of the frozen base (`f32` or `bf16`; `--dtype` overrides it). The policy
    /// and critic adapters, the value and score heads, the optimiser moments, log-probs and
    /// losses stay f32 whatever this is (the DPO path does the same).
    #[serde(default)]
    pub dtype: DType,
    /// The base model and the policy adapter.
    pub model: ModelConfig,
    /// Prompt data.
    pub data: DataConfig,
    /// The objectives, in preference order (K = their number).
    pub objectives: Vec<ObjectiveSpec>,
    /// How λ is drawn each step (drawn before generation, fixed through the step).
    #[serde(default)]
    pub preference: PreferenceSampler,
    /// The loop.
    pub train: TrainConfig,
    /// PPO itself.
    #[serde(default)]
    pub ppo: PpoConfig,
}

fn d_max_prompt() -> usize {
    96
}
fn d_r_max() -> f64 {
    4.0
}
fn d_one_u64() -> u64 {
    1
}
fn d_eval_prompts() -> usize {
    16
}
fn d_seed() -> u64 {
    1
}
fn d_device() -> String {
    "cpu".into()
}

impl Validate for TrainPpoConfig {
    fn validate(&self, v: &mut Validator) {
        let k = self.objectives.len();
        v.check(k >= 1, "objectives", "give at least one objective");
        v.check(
            self.model.adapter.n_objectives == k as i64,
            "model.adapter.n_objectives",
            format!(
                "must equal the number of objectives ({k}), got {}",
                self.model.adapter.n_objectives
            ),
        );
        v.check(self.model.adapter.rank >= 1, "model.adapter.rank", "must be ≥ 1");
        v.check(!self.model.name.trim().is_empty(), "model.name", "must not be empty");
        for (i, o) in self.objectives.iter().enumerate() {
            let key = format!("objectives.{i}");
            v.check(!o.name.trim().is_empty(), &format!("{key}.name"), "must not be empty");
            v.positive(o.scale, &format!("{key}.scale"));
            if let SourceConfig::Concise { c, r_max } = &o.source {
                v.positive(*c, &format!("{key}.source.c"));
                v.check(r_max.is_finite(), &format!("{key}.source.r_max"), "must be finite");
            }
            if let SourceConfig::ScoreModel { path } = &o.source {
                v.check(
                    path.is_dir(),
                    &format!("{key}.source.path"),
                    format!(
                        "{} is not a folder; hint: run `panacea train-rm` first",
                        path.display()
                    ),
                );
            }
        }
        let mut names: Vec<&str> = self.objectives.iter().map(|o| o.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        v.check(names.len() == k, "objectives", "objective names must be unique");
        if let Err(e) = self.preference.check(k) {
            v.problem("preference", e.to_string());
        }
        if let Aggregation::Tchebycheff { ideal } = &self.ppo.aggregation {
            v.check(
                ideal.len() == k,
                "ppo.aggregation.ideal",
                format!("give {k} entries (one per objective), got {}", ideal.len()),
            );
        }
        if let Some(l) = &self.ppo.lagrange {
            v.check(
                l.objective < k && self.objectives[l.objective].kind == ObjectiveKind::Cost,
                "ppo.lagrange.objective",
                format!("must index a cost objective (0..{k})"),
            );
        }
        v.check(self.train.steps >= 1, "train.steps", "must be ≥ 1");
        v.check(self.train.log_every >= 1, "train.log_every", "must be ≥ 1");
        v.check(self.train.eval_prompts >= 1, "train.eval_prompts", "must be ≥ 1");
        v.check(self.train.hv_prompts >= 1, "train.hv_prompts", "must be ≥ 1");
        let mb = self.ppo.ppo.mini_batch_size;
        v.check(
            self.train.batch_size >= 1 && mb >= 1 && self.train.batch_size % mb == 0,
            "train.batch_size",
            format!(
                "must be a positive multiple of ppo.ppo.mini_batch_size ({mb}), got {}",
                self.train.batch_size
            ),
        );
        v.check(self.data.max_prompt_tokens >= 2, "data.max_prompt_tokens", "must be ≥ 2");
        match &self.data.prompts {
            PromptSource::Bundled { sets } => {
                v.check(!sets.is_empty(), "data.prompts.sets", "name at least one set");
            }
            PromptSource::File { path } => {
                v.check(
                    path.is_file(),
                    "data.prompts.path",
                    format!("{} is not a file", path.display()),
                );
            }
        }
        v.section("ppo", &self.ppo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        // 100 steps, 3 % warm-up → 3 warm-up steps: 1/3, 2/3, 1 of the peak; then cosine.
        let o = OptimConfig { actor_lr: 1.0, ..OptimConfig::default() };
        assert!((o.actor_lr_at(1, 100) - 1.0 / 3.0).abs() < 1e-12);
        assert!((o.actor_lr_at(3, 100) - 1.0).abs() < 1e-12);
        // Halfway through the cosine part (step 3 + 48.5): 0.5 · (1 + cos(π/2)) = 0.5.
        let mid = o.actor_lr_at(3 + 97 / 2, 100);
        assert!((mid - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos())).abs() < 1e-12);
        assert!(o.actor_lr_at(100, 100) > 0.0 && o.actor_lr_at(100, 100) < 0.01);
        assert!((o.critic_lr_at(50, 100) - o.critic_lr).abs() < 1e-12);
    }
}
