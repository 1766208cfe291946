//! Per-token rewards with the KL penalty (step 4 of a PPO step, as in safe-rlhf's
//! `ppo/trainer.py::add_kl_divergence_regularization`) and the running per-objective score
//! optional running per-objective score normaliser applied to the utilities before they are
//! shaped (this project's addition, `ppo.normalise_scores`, off by default: objectives on
//! different scales then weigh alike under λ, at the price of a trade-off that drifts with
//! the statistics).
//!
//! ```text
//! kl_t    = old_lp_t − ref_lp_t
//! u_{t,i} = clamp(−β·kl_t + 1[t = last response token]·û_i, −clip, +clip)
//! ```
//!
//! The clamp is applied after the score is added. One formula serves every objective because
//! costs have already been turned into utilities (`Objective::utility`, the only negation).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Per-token utilities and the per-token KL they were shaped with.
#[derive(Debug)]
pub struct ShapedRewards {
    /// u: [B, A, K], zero outside the action mask.
    pub rewards: Tensor,
    /// kl_t = old_lp − ref_lp: [B, A], zero outside the action mask.
    pub kl: Tensor,
}

/// One-hot marker of each row's last action token: [B, A] (all zero for an empty row).
pub fn last_token_mask(act_mask: &Tensor) -> Tensor {
    let mask = act_mask.to_kind(Kind::Float); // [B, A]
    let a = mask.size()[1];
    let pos = Tensor::arange(a, (Kind::Float, mask.device())) + 1.0; // [A]
    let last = (&mask * pos).argmax(-1, true); // [B, 1]
    let onehot = mask.zeros_like().scatter_value(-1, &last, 1.0); // [B, A]
    onehot * mask
}

/// Shapes the per-token rewards. `old_lp`, `ref_lp` and `act_mask` are [B, A]; `scores` is
/// [B, K] (normalised, scaled utilities); `kl_coef` is β; `clip` the symmetric clamp.
pub fn shape_rewards(
    old_lp: &Tensor,
    ref_lp: &Tensor,
    act_mask: &Tensor,
    scores: &Tensor,
    kl_coef: f64,
    clip: f64,
) -> ShapedRewards {
    let mask = act_mask.to_kind(Kind::Float); // [B, A]
    let kl = (old_lp.to_kind(Kind::Float) - ref_lp.to_kind(Kind::Float)) * &mask; // [B, A]
    let last = last_token_mask(&mask); // [B, A]
    let score_part = last.unsqueeze(-1) * scores.to_kind(Kind::Float).unsqueeze(1); // [B, A, K]
    let rewards =
        (score_part - (&kl * kl_coef).unsqueeze(-1)).clamp(-clip, clip) * mask.unsqueeze(-1); // [B, A, K]
    ShapedRewards { rewards, kl }
}

/// Running mean and variance of each objective's raw utility (Chan et al.'s parallel update),
/// used to normalise scores before they enter the rewards. Saved with checkpoints so a resumed
/// run normalises exactly as an uninterrupted one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreNormaliser {
    /// Number of scores seen per objective (the same for all of them).
    pub count: f64,
    /// Running mean per objective: [K].
    pub mean: Vec<f64>,
    /// Running sum of squared deviations per objective: [K].
    pub m2: Vec<f64>,
    /// Added to the standard deviation before dividing.
    pub eps: f64,
}

impl ScoreNormaliser {
    /// An empty normaliser for `k` objectives.
    pub fn new(k: usize) -> Self {
        Self { count: 0.0, mean: vec![0.0; k], m2: vec![0.0; k], eps: 1e-8 }
    }

    /// Number of objectives.
    pub fn k(&self) -> usize {
        self.mean.len()
    }

    /// Population standard deviation per objective (1 before any data).
    pub fn std(&self) -> Vec<f64> {
        self.m2
            .iter()
            .map(|m2| if self.count > 0.0 { (m2 / self.count).sqrt() } else { 1.0 })
            .collect()
    }

    /// Adds a batch of rows (each of length K) to the statistics.
    pub fn update(&mut self, rows: &[Vec<f64>]) {
        if rows.is_empty() {
            return;
        }
        let n_b = rows.len() as f64;
        for i in 0..self.k() {
            let mean_b = rows.iter().map(|r| r[i]).sum::<f64>() / n_b;
            let m2_b = rows.iter().map(|r| (r[i] - mean_b).powi(2)).sum::<f64>();
            let n = self.count + n_b;
            let delta = mean_b - self.mean[i];
            self.mean[i] += delta * n_b / n;
            self.m2[i] += m2_b + delta * delta * self.count * n_b / n;
        }
        self.count += n_b;
    }

    /// (x − mean)/(std + eps) per objective.
    pub fn normalise(&self, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let std = self.std();
        rows.iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, x)| (x - self.mean[i]) / (std[i] + self.eps))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec2(t: &Tensor) -> Vec<f64> {
        Vec::try_from(t.flatten(0, -1).to_kind(Kind::Double)).expect("to vec")
    }

    #[test]
    fn kl_shaping_adds_score_at_last_token_then_clamps() {
        panacea_core::device::init_torch();
        // B = 2, A = 3, K = 2, β = 0.5, clip = 10.
        // Row 0: mask [1, 1, 0] (last action token t = 1), kl = [0.2, −0.4, *]
        //   t0: −0.5·0.2 = −0.1 for both objectives
        //   t1: −0.5·(−0.4) = 0.2, plus scores [3, 20] → [3.2, 20.2] → clamp → [3.2, 10]
        //   t2: masked → 0
        // Row 1: mask [0, 1, 1], kl = [*, 0, 1], scores [−1, 0]
        //   t1: 0;  t2: −0.5 + [−1, 0] = [−1.5, −0.5]
        let old = Tensor::from_slice(&[0.2f32, -0.4, 7.0, 3.0, 0.0, 1.0]).view([2, 3]);
        let reference = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 0.0, 1.0, 1.0]).view([2, 3]);
        let scores = Tensor::from_slice(&[3.0f32, 20.0, -1.0, 0.0]).view([2, 2]);
        let out = shape_rewards(&old, &reference, &mask, &scores, 0.5, 10.0);
        let want = [-0.1, -0.1, 3.2, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.5, -0.5];
        for (g, w) in vec2(&out.rewards).iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{:?}", vec2(&out.rewards));
        }
        assert_eq!(vec2(&out.kl)[2], 0.0);
    }

    #[test]
    fn normaliser_matches_batch_statistics() {
        // Two batches of K = 2 scores: objective 0 sees 1, 2, 3, 4 (mean 2.5, population
        // variance 1.25); objective 1 sees 10, 10, 10, 30 (mean 15, variance 75).
        let mut n = ScoreNormaliser::new(2);
        n.update(&[vec![1.0, 10.0], vec![2.0, 10.0]]);
        n.update(&[vec![3.0, 10.0], vec![4.0, 30.0]]);
        assert_eq!(n.count, 4.0);
        assert!((n.mean[0] - 2.5).abs() < 1e-12 && (n.mean[1] - 15.0).abs() < 1e-12);
        let std = n.std();
        assert!((std[0] - 1.25f64.sqrt()).abs() < 1e-12 && (std[1] - 75f64.sqrt()).abs() < 1e-12);
        // 4 → (4 − 2.5)/√1.25 = 1.3416408; 30 → 15/√75 = 1.7320508
        let z = n.normalise(&[vec![4.0, 30.0]]);
        assert!((z[0][0] - 1.341_640_786).abs() < 1e-7 && (z[0][1] - 1.732_050_808).abs() < 1e-7);
        let json = serde_json::to_string(&n).expect("serialise");
        let back: ScoreNormaliser = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, n);
    }
}
