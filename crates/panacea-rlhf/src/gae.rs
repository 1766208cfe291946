//! Generalised advantage estimation per objective (Schulman et al. 2016, Eq. 16; safe-rlhf
//! `rl_trainer.get_advantages_and_returns`), run independently on each of the K utility streams
//! and aggregated afterwards with the step's preference: one advantage per objective, one
//! aggregation call ([`panacea_core::Aggregation::aggregate`]).
//!
//! ```text
//! δ_{t,i} = u_{t,i} + γ V_{t+1,i} − V_{t,i}
//! A_{t,i} = δ_{t,i} + γ λ_GAE A_{t+1,i}
//! R_{t,i} = A_{t,i} + V_{t,i}
//! ```
//!
//! Rewards and values are zero outside the action mask, so V after a row's last response token
//! is 0 and nothing leaks in from padding; advantages and returns are zero outside the mask.

use tch::{Kind, Tensor};

/// Per-objective advantages and returns.
#[derive(Debug)]
pub struct Advantages {
    /// A: [B, A, K], zero outside the action mask.
    pub advantages: Tensor,
    /// R = A + V: [B, A, K], the critic targets, zero outside the action mask.
    pub returns: Tensor,
}

/// GAE over the action positions of every row and objective.
///
/// `values` and `rewards` are [B, A, K], `act_mask` is [B, A] (1 on response tokens up to and
/// including EOS). `gamma` is the discount, `gae_lambda` the GAE trace parameter (named so to
/// keep it apart from the preference λ).
pub fn gae(
    values: &Tensor,
    rewards: &Tensor,
    act_mask: &Tensor,
    gamma: f64,
    gae_lambda: f64,
) -> Advantages {
    let mask = act_mask.to_kind(Kind::Float).unsqueeze(-1); // [B, A, 1]
    let values = values.to_kind(Kind::Float) * &mask; // [B, A, K]
    let rewards = rewards.to_kind(Kind::Float) * &mask; // [B, A, K]
    let n = values.size()[1];
    let mut last = values.select(1, 0).zeros_like(); // [B, K], A_{t+1}
    let mut out = Vec::with_capacity(n as usize);
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values.select(1, t + 1) } else { last.zeros_like() }; // [B, K]
        let delta = rewards.select(1, t) + next_v * gamma - values.select(1, t); // [B, K]

        // Masking here keeps prompt positions (before the response) at zero advantage.
        last = (delta + &last * (gamma * gae_lambda)) * mask.select(1, t); // [B, K]
        out.push(last.shallow_clone());
    }
    out.reverse();
    let advantages = Tensor::stack(&out, 1); // [B, A, K]
    let returns = (&advantages + &values) * &mask; // [B, A, K]
    Advantages { advantages, returns }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t3(data: &[f32], b: i64, a: i64, k: i64) -> Tensor {
        Tensor::from_slice(data).view([b, a, k])
    }

    fn close(t: &Tensor, want: &[f64]) {
        let got: Vec<f64> = Vec::try_from(t.flatten(0, -1).to_kind(Kind::Double)).expect("to vec");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn two_step_episode_matches_hand_computation() {
        panacea_core::device::init_torch();
        // One row, A = 3 positions: a prompt position (mask 0) then a two-token response.
        // γ = 0.9, λ_GAE = 0.5, K = 1. V = [*, 1.0, 2.0], u = [*, 0.5, 3.0]; * is masked out.
        // t = 2 (last): δ = 3.0 + 0.9·0 − 2.0 = 1.0;            A = 1.0;           R = 3.0
        // t = 1:        δ = 0.5 + 0.9·2.0 − 1.0 = 1.3;          A = 1.3 + 0.45·1.0 = 1.75;  R = 2.75
        // t = 0: masked, A = R = 0.
        let v = t3(&[7.0, 1.0, 2.0], 1, 3, 1);
        let u = t3(&[9.0, 0.5, 3.0], 1, 3, 1);
        let mask = Tensor::from_slice(&[0.0f32, 1.0, 1.0]).view([1, 3]);
        let out = gae(&v, &u, &mask, 0.9, 0.5);
        close(&out.advantages, &[0.0, 1.75, 1.0]);
        close(&out.returns, &[0.0, 2.75, 3.0]);
    }

    #[test]
    fn objectives_and_padding_are_independent() {
        panacea_core::device::init_torch();
        // K = 2, γ = 1, λ_GAE = 1: A_t = Σ_{s≥t} u_s − V_t over the response.
        // Row: response at t = 0, 1; t = 2 is padding after EOS (mask 0) holding junk.
        // Objective 0: u = [0, 1], V = [0.5, 0.25]  → A_1 = 1 − 0.25 = 0.75, A_0 = 1 − 0.5 = 0.5
        // Objective 1: u = [−1, 2], V = [0, 0]      → A_1 = 2, A_0 = 1
        let v = t3(&[0.5, 0.0, 0.25, 0.0, 100.0, 100.0], 1, 3, 2);
        let u = t3(&[0.0, -1.0, 1.0, 2.0, 50.0, 50.0], 1, 3, 2);
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 0.0]).view([1, 3]);
        let out = gae(&v, &u, &mask, 1.0, 1.0);
        close(&out.advantages, &[0.5, 1.0, 0.75, 2.0, 0.0, 0.0]);
        close(&out.returns, &[1.0, 1.0, 1.0, 2.0, 0.0, 0.0]);
        assert_eq!(out.advantages.device(), Device::Cpu);
    }
}
