//! Settings of one PPO step (method.md §6.6). The CLI's run config nests this struct; every
//! field has a safe default except where noted.

use serde::{Deserialize, Serialize};

use panacea_core::aggregation::Aggregation;
use panacea_core::config::{Validate, Validator};

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
