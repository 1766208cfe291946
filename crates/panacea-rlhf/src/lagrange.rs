//! PPO-Lagrangian on one cost dimension (Ray et al. 2019; safe-rlhf `ppo_lag/trainer.py`),
//! combined with preference conditioning:
//!
//! ```text
//! log μ ← log μ − lr · ∂/∂log μ [ −(J_c − d) · μ ] = log μ + lr · (J_c − d) · μ       (SGD)
//! A     = (A_r − μ · A_c) / (1 + μ)
//! ```
//!
//! J_c is the mean episode cost over a window of recent episodes, d the threshold. A_c is the
//! advantage of the cost-positive stream; since every stream here is a utility (−cost), A_c is
//! minus the constrained dimension's utility advantage, so A = (A_r + μ·A_u)/(1 + μ).
//!
//! How the multiplier and λ combine is this project's choice (the paper does not combine
//! them): A_r = Σ_i λ_i A_i is the λ-aggregated advantage over **all** K dimensions, the
//! constrained one included. At μ = 0 this is plain Panacea, and for every μ two different λ
//! give two different advantages. (Aggregating only the other dimensions, with λ renormalised
//! over them, would erase λ entirely with two objectives: the renormalised preference over
//! one free dimension is always [1].)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use panacea_core::config::{Validate, Validator};

/// Settings of the Lagrangian constraint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LagrangeConfig {
    /// Index of the constrained objective (must be a cost).
    pub objective: usize,
    /// d: the episode-cost threshold (cost units, before normalisation; 0 is the cost model's
    /// safe/unsafe boundary).
    #[serde(default)]
    pub threshold: f64,
    /// μ at the start, > 0.
    #[serde(default = "one")]
    pub lambda_init: f64,
    /// SGD learning rate on log μ, > 0.
    #[serde(default = "lambda_lr")]
    pub lambda_lr: f64,
    /// Upper bound on μ (none when absent).
    #[serde(default)]
    pub lambda_max: Option<f64>,
    /// Steps before μ starts to move.
    #[serde(default)]
    pub lambda_update_delay_steps: u64,
    /// Number of most recent episode costs averaged into J_c.
    #[serde(default = "window")]
    pub episode_cost_window_size: usize,
}

fn one() -> f64 {
    1.0
}
fn lambda_lr() -> f64 {
    0.1
}
fn window() -> usize {
    128
}

impl Validate for LagrangeConfig {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.lambda_init, "lambda_init");
        v.positive(self.lambda_lr, "lambda_lr");
        if let Some(max) = self.lambda_max {
            v.check(
                max.is_finite() && max >= self.lambda_init,
                "lambda_max",
                format!("must be finite and ≥ lambda_init ({}), got {max}", self.lambda_init),
            );
        }
        v.check(self.episode_cost_window_size > 0, "episode_cost_window_size", "must be ≥ 1");
    }
}

/// The multiplier's state: log μ and the window of recent episode costs. Serialisable so that
/// resume restores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lagrangian {
    /// log μ.
    pub log_mu: f64,
    /// Recent episode costs (cost-positive), oldest first.
    pub window: VecDeque<f64>,
    /// Number of updates requested so far.
    pub steps: u64,
}

impl Lagrangian {
    /// The initial state.
    pub fn new(cfg: &LagrangeConfig) -> Self {
        Self { log_mu: cfg.lambda_init.ln(), window: VecDeque::new(), steps: 0 }
    }

    /// μ.
    pub fn mu(&self) -> f64 {
        self.log_mu.exp()
    }

    /// Mean of the cost window (0 when empty).
    pub fn mean_cost(&self) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            self.window.iter().sum::<f64>() / self.window.len() as f64
        }
    }

    /// Records this step's episode costs, then takes one SGD step on log μ (after the delay).
    pub fn update(&mut self, cfg: &LagrangeConfig, episode_costs: &[f64]) {
        for &c in episode_costs {
            self.window.push_back(c);
            while self.window.len() > cfg.episode_cost_window_size {
                self.window.pop_front();
            }
        }
        self.steps += 1;
        if self.steps <= cfg.lambda_update_delay_steps {
            return;
        }
        let violation = self.mean_cost() - cfg.threshold;
        self.log_mu += cfg.lambda_lr * violation * self.mu();
        if let Some(max) = cfg.lambda_max {
            self.log_mu = self.log_mu.min(max.ln());
        }
    }
}

/// Combines the aggregated advantage of the free dimensions `a_r` with the constrained
/// dimension's *utility* advantage `a_u` (= −A_c): (A_r + μ·A_u)/(1 + μ). Works on tensors of
/// any matching shape ([B, A] in the trainer).
pub fn combine_advantages(a_r: &tch::Tensor, a_u: &tch::Tensor, mu: f64) -> tch::Tensor {
    (a_r + a_u * mu) / (1.0 + mu)
}

/// The actor's advantage [B, A] from per-objective advantages `adv` [B, A, K] and per-row
/// weights `weights` [B][K] ([`panacea_core::Aggregation::advantage_weights`]):
/// A_r = Σ_i w_{r,i} A_{r,i}, then, with a constraint `(c, μ)`, [`combine_advantages`] with
/// the constrained dimension's utility advantage A_c.
pub fn weighted_advantages(
    adv: &tch::Tensor,
    weights: &[Vec<f64>],
    constraint: Option<(usize, f64)>,
) -> tch::Tensor {
    let k = adv.size().last().copied().unwrap_or(0);
    let flat: Vec<f32> = weights.concat().iter().map(|&w| w as f32).collect();
    let w = tch::Tensor::from_slice(&flat).view([weights.len() as i64, k]).to_device(adv.device());
    let a_r = (adv.to_kind(tch::Kind::Float) * w.unsqueeze(1)).sum_dim_intlist(
        [-1i64].as_slice(),
        false,
        tch::Kind::Float,
    ); // [B, A]
    match constraint {
        Some((c, mu)) => combine_advantages(&a_r, &adv.select(2, c as i64), mu),
        None => a_r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LagrangeConfig {
        LagrangeConfig {
            objective: 1,
            threshold: 0.5,
            lambda_init: 1.0,
            lambda_lr: 0.1,
            lambda_max: Some(2.0),
            lambda_update_delay_steps: 1,
            episode_cost_window_size: 3,
        }
    }

    #[test]
    fn multiplier_follows_sgd_on_log_mu_with_delay_window_and_cap() {
        let c = cfg();
        let mut l = Lagrangian::new(&c);
        assert_eq!(l.log_mu, 0.0);
        // Step 1 is inside the delay: the window fills, μ stays 1.
        l.update(&c, &[1.0, 2.0]);
        assert_eq!(l.mu(), 1.0);
        // Step 2: window keeps the last 3 costs [2, 3, 4], mean 3; violation 2.5;
        // log μ = 0 + 0.1·2.5·1 = 0.25.
        l.update(&c, &[3.0, 4.0]);
        assert_eq!(l.window, VecDeque::from(vec![2.0, 3.0, 4.0]));
        assert!((l.log_mu - 0.25).abs() < 1e-12);
        // Step 3: costs far above the threshold push log μ past ln 2, so it is capped.
        l.update(&c, &[100.0, 100.0, 100.0]);
        assert!((l.log_mu - 2f64.ln()).abs() < 1e-12);
        // Step 4: satisfied constraint (mean cost −1 < 0.5) lowers μ: log μ = ln 2 + 0.1·(−1.5)·2
        l.update(&c, &[-1.0, -1.0, -1.0]);
        assert!((l.log_mu - (2f64.ln() - 0.3)).abs() < 1e-12);
    }

    #[test]
    fn combined_advantage_matches_formula() {
        panacea_core::device::init_torch();
        // A_r = 1, A_u = −2 (cost advantage +2), μ = 3: (1 + 3·(−2))/4 = −1.25.
        let a_r = tch::Tensor::from_slice(&[1.0f64]);
        let a_u = tch::Tensor::from_slice(&[-2.0f64]);
        let a = combine_advantages(&a_r, &a_u, 3.0);
        assert!((a.double_value(&[0]) + 1.25).abs() < 1e-12);
    }

    #[test]
    fn lambda_still_steers_with_the_constraint_on() {
        panacea_core::device::init_torch();
        // One row, one token, K = 2, objective 1 constrained with μ = 1:
        // A = (A_0, A_1) = (2, −1). λ = (1, 0): (1·2 + 0·(−1) + 1·(−1)) / 2 = 0.5;
        // λ = (0.25, 0.75): (0.5 − 0.75 − 1) / 2 = −0.625. (Renormalising λ over the free
        // dimension alone would give 0.5 for both.)
        let adv = tch::Tensor::from_slice(&[2.0f32, -1.0]).view([1, 1, 2]);
        let at = |pref: Vec<f64>| {
            weighted_advantages(&adv, &[pref], Some((1, 1.0))).double_value(&[0, 0])
        };
        assert!((at(vec![1.0, 0.0]) - 0.5).abs() < 1e-6);
        assert!((at(vec![0.25, 0.75]) + 0.625).abs() < 1e-6);
        // μ → 0 recovers the linear Panacea advantage λ·A.
        let plain = weighted_advantages(&adv, &[vec![0.25, 0.75]], Some((1, 0.0)));
        assert!((plain.double_value(&[0, 0]) - (0.5 - 0.75)).abs() < 1e-6);
    }
}
