//! PPO's clipped surrogate losses (Schulman et al. 2017, Eq. 7; safe-rlhf `ppo/trainer.py`
//! `actor_loss_fn` / `critic_loss_fn`), the last stage of a PPO step:
//!
//! ```text
//! ρ_t        = exp(lp_t − old_lp_t)
//! L_actor    = −masked_mean( min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) )
//! L_critic_i = 0.5 · masked_mean( max((V_i − R_i)², (clip(V_i, V_old,i ± c) − R_i)²) )
//! L_critic   = mean_i L_critic_i
//! ```
//!
//! masked_mean ([`panacea_core::ops::masked_mean`]) is Σ(x·mask)/Σmask over the whole minibatch
//! (not a mean of per-row means), as in safe-rlhf. Losses are computed in f32.

use panacea_core::ops::masked_mean;
use tch::{Kind, Tensor};

/// The clipped policy loss and its diagnostics.
#[derive(Debug)]
pub struct PolicyLoss {
    /// The scalar loss to minimise (has a graph through `lp`).
    pub loss: Tensor,
    /// Fraction of action tokens whose ratio was clipped (no graph).
    pub clip_frac: Tensor,
    /// k3 estimate of KL(old ‖ new) = E[(ρ − 1) − ln ρ] over action tokens (no graph).
    pub approx_kl: Tensor,
}

/// Clipped policy loss. `lp`, `old_lp`, `adv` and `act_mask` are [B, A]; `clip_ratio` is ε.
pub fn policy_loss(
    lp: &Tensor,
    old_lp: &Tensor,
    adv: &Tensor,
    act_mask: &Tensor,
    clip_ratio: f64,
) -> PolicyLoss {
    let log_ratio = lp - old_lp; // [B, A]
    let ratio = log_ratio.exp(); // [B, A]
    let surr1 = &ratio * adv; // [B, A]
    let surr2 = ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * adv; // [B, A]
    let loss = -masked_mean(&surr1.minimum(&surr2), act_mask);
    let (clip_frac, approx_kl) = tch::no_grad(|| {
        let clipped = (&ratio - 1.0).abs().gt(clip_ratio).to_kind(Kind::Float); // [B, A]
        let k3 = (&ratio - 1.0) - &log_ratio; // [B, A]
        (masked_mean(&clipped, act_mask), masked_mean(&k3, act_mask))
    });
    PolicyLoss { loss, clip_frac, approx_kl }
}

/// Clipped value loss averaged over the K objectives. `values`, `old_values` and `returns` are
/// [B, A, K]; `act_mask` is [B, A]; `clip_value` is the half-width of the clip around the old
/// values.
pub fn value_loss(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    act_mask: &Tensor,
    clip_value: f64,
) -> Tensor {
    let clipped =
        values.clamp_tensor(Some(&(old_values - clip_value)), Some(&(old_values + clip_value))); // [B, A, K]
    let l1 = (values - returns).square(); // [B, A, K]
    let l2 = (clipped - returns).square(); // [B, A, K]
    let worst = l1.maximum(&l2); // [B, A, K]
    let mask = act_mask.to_kind(values.kind()).unsqueeze(-1); // [B, A, 1]

    // Per objective: Σ_{b,t} x·mask / Σ mask, then the mean over K.
    let num = (&worst * &mask).sum_dim_intlist([0i64, 1].as_slice(), false, values.kind()); // [K]
    let den = mask.sum(values.kind()).clamp_min(1.0);
    (num / den).mean(values.kind()) * 0.5
}

/// [`policy_loss`] of some rows of a minibatch as their share of the whole minibatch's:
/// token sums divided by `tokens`, the minibatch's response tokens over every rank. The shares
/// of all rows sum to [`policy_loss`] of the minibatch (loss, clip fraction and approx KL
/// alike), so summing gradients over ranks gives the minibatch's gradient.
pub fn policy_loss_share(
    lp: &Tensor,
    old_lp: &Tensor,
    adv: &Tensor,
    act_mask: &Tensor,
    clip_ratio: f64,
    tokens: f64,
) -> PolicyLoss {
    let m = act_mask.to_kind(Kind::Float); // [B, A]
    let log_ratio = lp - old_lp; // [B, A]
    let ratio = log_ratio.exp(); // [B, A]
    let surr1 = &ratio * adv; // [B, A]
    let surr2 = ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio) * adv; // [B, A]
    let loss = -(surr1.minimum(&surr2) * &m).sum(Kind::Float) / tokens;
    let (clip_frac, approx_kl) = tch::no_grad(|| {
        let clipped = (&ratio - 1.0).abs().gt(clip_ratio).to_kind(Kind::Float); // [B, A]
        let k3 = (&ratio - 1.0) - &log_ratio; // [B, A]
        ((clipped * &m).sum(Kind::Float) / tokens, (k3 * &m).sum(Kind::Float) / tokens)
    });
    PolicyLoss { loss, clip_frac, approx_kl }
}

/// [`value_loss`] of some rows of a minibatch as their share of the whole minibatch's (see
/// [`policy_loss_share`]; `tokens` is the minibatch's response tokens over every rank).
pub fn value_loss_share(
    values: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    act_mask: &Tensor,
    clip_value: f64,
    tokens: f64,
) -> Tensor {
    let clipped =
        values.clamp_tensor(Some(&(old_values - clip_value)), Some(&(old_values + clip_value))); // [B, A, K]
    let l1 = (values - returns).square(); // [B, A, K]
    let l2 = (clipped - returns).square(); // [B, A, K]
    let worst = l1.maximum(&l2); // [B, A, K]
    let mask = act_mask.to_kind(values.kind()).unsqueeze(-1); // [B, A, 1]
    let num = (&worst * &mask).sum_dim_intlist([0i64, 1].as_slice(), false, values.kind()); // [K]
    (num / tokens).mean(values.kind()) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn policy_loss_matches_hand_computation() {
        panacea_core::device::init_torch();
        // Three action tokens, the third masked out. ε = 0.2.
        // t0: log ρ = ln 1.5 → ρ = 1.5, A = 2:  min(3.0, 1.2·2 = 2.4) = 2.4  (clipped)
        // t1: log ρ = ln 0.5 → ρ = 0.5, A = 1:  min(0.5, 0.8·1 = 0.8) = 0.5  (|ρ−1| > ε: counted)
        // t2: masked.
        // loss = −(2.4 + 0.5)/2 = −1.45; clip_frac = 2/2 = 1.
        // approx_kl = mean((1.5−1 − ln 1.5), (0.5−1 − ln 0.5)) = (0.0945349 + 0.1931472)/2
        //           = 0.1438410
        let old = Tensor::from_slice(&[0.0f64, 0.0, 0.0]).view([1, 3]);
        let lp = Tensor::from_slice(&[1.5f64.ln(), 0.5f64.ln(), 5.0]).view([1, 3]);
        let adv = Tensor::from_slice(&[2.0f64, 1.0, 100.0]).view([1, 3]);
        let mask = Tensor::from_slice(&[1.0f64, 1.0, 0.0]).view([1, 3]);
        let out = policy_loss(&lp, &old, &adv, &mask, 0.2);
        assert!((scalar(&out.loss) + 1.45).abs() < 1e-6);
        assert!((scalar(&out.clip_frac) - 1.0).abs() < 1e-6);
        assert!((scalar(&out.approx_kl) - 0.143_841_036_225_890_4).abs() < 1e-6);
    }

    #[test]
    fn value_loss_matches_hand_computation() {
        panacea_core::device::init_torch();
        // B = 1, A = 2 (both unmasked), K = 2, clip 0.5.
        // obj 0: t0: V 1.0, Vold 0.0, R 2.0 → clip(V) = 0.5; max((1−2)², (0.5−2)²) = 2.25
        //        t1: V 0.0, Vold 0.0, R 1.0 → unclipped; 1.0
        //        L_0 = 0.5 · (2.25 + 1.0)/2 = 0.8125
        // obj 1: t0: V 3.0, Vold 3.0, R 3.0 → 0;  t1: V −1, Vold 0, R −1 → clip −0.5: max(0, 0.25)
        //        L_1 = 0.5 · 0.25/2 = 0.0625
        // L = (0.8125 + 0.0625)/2 = 0.4375
        let v = Tensor::from_slice(&[1.0f64, 3.0, 0.0, -1.0]).view([1, 2, 2]);
        let vold = Tensor::from_slice(&[0.0f64, 3.0, 0.0, 0.0]).view([1, 2, 2]);
        let ret = Tensor::from_slice(&[2.0f64, 3.0, 1.0, -1.0]).view([1, 2, 2]);
        let mask = Tensor::from_slice(&[1.0f64, 1.0]).view([1, 2]);
        let l = value_loss(&v, &vold, &ret, &mask, 0.5);
        assert!((scalar(&l) - 0.4375).abs() < 1e-6, "{}", scalar(&l));
    }
}
