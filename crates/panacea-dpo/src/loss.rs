//! The multi-objective DPO loss (Panacea, arXiv 2402.02030, §3.1 DPO objective J_i, aggregated
//! with Eq. 6 (linear) or Eq. 7 (Tchebycheff); docs/method.md, "Multi-objective DPO").
//!
//! ```text
//! h_j   = log π_θ(y_j|x) − log π_ref(y_j|x)            j ∈ {0, 1}   (implicit reward / β)
//! L_i   = −log σ( β · t_i · (h_0 − h_1) )               sigmoid (default; DPO)
//! L_i   = ( t_i · (h_0 − h_1) − 1/(2β) )²               IPO (Azar et al. 2023, Eq. 17)
//! acc_i = mean over labelled pairs of 1[ t_i · (h_0 − h_1) > 0 ]
//! L     = Σ_i λ_i L̄_i   or   max_i λ_i L̄_i              L̄_i = batch mean over rows labelled in i
//! ```
//!
//! t_i = +1 when response 0 wins in dimension i, −1 when response 1 wins and 0 when the pair has
//! no label there; unlabelled entries are masked out of L̄_i and acc_i. The aggregation (per-
//! dimension masked means first, then LS or max with z = 0) is panacea-core's
//! [`Aggregation::aggregate_losses`], called exactly once, here.

use panacea_core::aggregation::{dimension_means, Aggregation};
use panacea_core::ops::masked_mean_dim;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::DpoError;

/// The per-dimension pairwise loss. A serde enum: `sigmoid` or `ipo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// −log σ(β·t·(h_0 − h_1)): the DPO loss (Rafailov et al. 2023, Eq. 7).
    #[default]
    Sigmoid,
    /// (t·(h_0 − h_1) − 1/(2β))²: IPO (Azar et al. 2023, Eq. 17), which regresses the margin
    /// to 1/(2β) instead of pushing it to infinity.
    Ipo,
}

/// Everything [`mo_dpo_loss`] computes. Only `loss` carries the graph that training needs;
/// the rest are for metrics (convert them to f64 on log steps only: that syncs the device).
#[derive(Debug)]
pub struct DpoLossOutput {
    /// The aggregated loss L, a scalar (f32).
    pub loss: Tensor,
    /// Per-pair, per-dimension losses L_{b,i}, 0 where unlabelled: [B, K].
    pub per_pair: Tensor,
    /// Where a pair has a label: [B, K] (bool).
    pub label_mask: Tensor,
    /// L̄_i, the masked batch mean of each dimension (0 without any label): [K].
    pub loss_per_obj: Tensor,
    /// Implicit-reward accuracy per dimension over labelled pairs (0 without any label): [K].
    pub accuracy_per_obj: Tensor,
    /// Labelled pairs per dimension: [K] (f32 counts).
    pub labelled_per_obj: Tensor,
    /// h_0 − h_1 per pair: [B].
    pub margin: Tensor,
    /// h_j = log π_θ − log π_ref per sequence, rows [response 0 of every pair; response 1]: [2B].
    pub implicit_reward: Tensor,
}

/// The multi-objective DPO loss of one batch.
///
/// - `policy_logp`, `ref_logp`: sequence log-probs [2B], rows 0..B the pairs' response 0 and
///   rows B..2B their response 1 (the concatenated batch).
/// - `labels`: [B, K] with entries in {+1, −1, 0} (any numeric kind).
/// - `pref`: λ as [K], or [B, K] for one preference per pair (see
///   [`Aggregation::aggregate_losses`] for how mixed rows are grouped).
/// - `beta` > 0.
pub fn mo_dpo_loss(
    policy_logp: &Tensor,
    ref_logp: &Tensor,
    labels: &Tensor,
    pref: &Tensor,
    beta: f64,
    loss: DpoLoss,
    aggregation: &Aggregation,
) -> Result<DpoLossOutput, DpoError> {
    let ls = labels.size();
    let [b, k] = ls[..] else {
        return Err(DpoError::shape("labels [B, K]", vec![-1, -1], ls));
    };
    if policy_logp.size() != [2 * b] {
        return Err(DpoError::shape("policy log-probs [2B]", vec![2 * b], policy_logp.size()));
    }
    if ref_logp.size() != [2 * b] {
        return Err(DpoError::shape("reference log-probs [2B]", vec![2 * b], ref_logp.size()));
    }
    if !(beta.is_finite() && beta > 0.0) {
        return Err(DpoError::Data(format!("dpo beta must be a finite number > 0, got {beta}")));
    }
    let h = policy_logp.to_kind(Kind::Float) - ref_logp.to_kind(Kind::Float); // [2B]
    let margin = h.narrow(0, 0, b) - h.narrow(0, b, b); // [B]
    let t = labels.to_kind(Kind::Float); // [B, K]
    let mask = t.ne(0.0); // [B, K]
    let z = &t * margin.unsqueeze(1); // [B, K]  t_i·(h_0 − h_1)
    let raw = match loss {
        DpoLoss::Sigmoid => -(&z * beta).log_sigmoid(), // [B, K]
        DpoLoss::Ipo => (&z - 1.0 / (2.0 * beta)).square(), // [B, K]
    };
    // Multiply rather than index so masked entries are exact zeros with zero gradient.
    let per_pair = raw * mask.to_kind(Kind::Float); // [B, K]
    let total = aggregation.aggregate_losses(&per_pair, &mask, pref)?; // []
    let (loss_per_obj, accuracy_per_obj, labelled_per_obj) = tch::no_grad(|| {
        let means = dimension_means(&per_pair, &mask); // [K]
        let acc = masked_mean_dim(&z.gt(0.0).to_kind(Kind::Float), &mask, 0); // [K]
        let count =
            mask.to_kind(Kind::Float).sum_dim_intlist([0i64].as_slice(), false, Kind::Float); // [K]
        (means, acc, count)
    });
    debug_assert_eq!(loss_per_obj.size(), [k]);
    Ok(DpoLossOutput {
        loss: total,
        per_pair,
        label_mask: mask,
        loss_per_obj,
        accuracy_per_obj,
        labelled_per_obj,
        margin: margin.detach(),
        implicit_reward: h.detach(),
    })
}

/// Likelihood-ranking wins per pair and dimension: 1[t_i·(v_0 − v_1) > 0] as 1.0/0.0 for
/// per-sequence values `logp` [2B] (rows as in [`mo_dpo_loss`]) and labels [B, K] → [B, K]
/// (0 where a pair is unlabelled in a dimension).
pub fn ranking_wins(logp: &Tensor, labels: &Tensor) -> Result<Tensor, DpoError> {
    let ls = labels.size();
    let [b, _] = ls[..] else {
        return Err(DpoError::shape("labels [B, K]", vec![-1, -1], ls));
    };
    if logp.size() != [2 * b] {
        return Err(DpoError::shape("log-probs [2B]", vec![2 * b], logp.size()));
    }
    let lp = logp.to_kind(Kind::Float).detach();
    let diff = lp.narrow(0, 0, b) - lp.narrow(0, b, b); // [B]
    let t = labels.to_kind(Kind::Float); // [B, K]
    Ok((&t * diff.unsqueeze(1)).gt(0.0).to_kind(Kind::Float)) // [B, K]
}

/// Likelihood-ranking accuracy per dimension: the mean of [`ranking_wins`] over the pairs
/// labelled in each dimension → [K]. With reference log-probs this is how often the base model
/// already prefers the winner.
pub fn ranking_accuracy(logp: &Tensor, labels: &Tensor) -> Result<Tensor, DpoError> {
    let win = ranking_wins(logp, labels)?; // [B, K]
    Ok(masked_mean_dim(&win, &labels.ne(0), 0)) // [K]
}

#[cfg(test)]
mod tests {
    //! Reference values are hand computations, written out next to each case; the decimals
    //! come from Python's `math` (softplus(−z) = log1p(exp(−z)), σ(x) = 1/(1+exp(−x))).
    use super::*;

    fn t1(v: &[f64]) -> Tensor {
        Tensor::from_slice(v).to_kind(Kind::Float)
    }

    fn t2(v: &[f64], k: i64) -> Tensor {
        t1(v).view([-1, k])
    }

    fn vals(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("to host")
    }

    #[track_caller]
    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 2e-6, "got {got:?}, want {want:?}");
        }
    }

    /// Two pairs, two dimensions, pair 1 unlabelled in dimension 1.
    ///
    /// policy = [−1, −2 | −3, −1], ref = [−1.5, −2 | −2.5, −1.5]
    /// h = [0.5, 0 | −0.5, 0.5] → margins: pair 0: 0.5 − (−0.5) = 1.0; pair 1: 0 − 0.5 = −0.5.
    /// labels [[+1, −1], [+1, 0]] → z = t·margin = [[1, −1], [−0.5, masked]].
    /// β = 1, sigmoid: L = softplus(−z):
    ///   L[0,0] = log(1+e^−1) = 0.31326168751822286, L[0,1] = log(1+e) = 1.3132616875182228,
    ///   L[1,0] = log(1+e^0.5) = 0.9740769841801067.
    /// L̄ = [(0.31326168751822286 + 0.9740769841801067)/2, 1.3132616875182228]
    ///   = [0.6436693358491647, 1.3132616875182228].
    /// acc = [1/2 (z = 1 > 0, z = −0.5 not), 0/1].
    fn two_pair_case() -> (Tensor, Tensor, Tensor) {
        let policy = t1(&[-1.0, -2.0, -3.0, -1.0]).set_requires_grad(true);
        let reference = t1(&[-1.5, -2.0, -2.5, -1.5]);
        let labels = t2(&[1.0, -1.0, 1.0, 0.0], 2);
        (policy, reference, labels)
    }

    #[test]
    fn linear_sigmoid_with_a_masked_dimension_matches_hand_values() {
        let (policy, reference, labels) = two_pair_case();
        let pref = t1(&[0.25, 0.75]);
        let out = mo_dpo_loss(
            &policy,
            &reference,
            &labels,
            &pref,
            1.0,
            DpoLoss::Sigmoid,
            &Aggregation::Linear,
        )
        .expect("loss");
        // LS = 0.25·0.6436693358491647 + 0.75·1.3132616875182228 = 1.1458635996009583.
        close(&vals(&out.loss), &[1.1458635996009583]);
        close(&vals(&out.loss_per_obj), &[0.6436693358491647, 1.3132616875182228]);
        close(&vals(&out.accuracy_per_obj), &[0.5, 0.0]);
        close(&vals(&out.labelled_per_obj), &[2.0, 1.0]);
        close(&vals(&out.margin), &[1.0, -0.5]);
        // The masked entry is an exact zero.
        close(
            &vals(&out.per_pair),
            &[0.31326168751822286, 1.3132616875182228, 0.9740769841801067, 0.0],
        );
        out.loss.backward();
        // d/d lp of row 0 (pair 0, response 0): dim 0: 0.25 · ½ · (−σ(−1)) · (+1)
        //   + dim 1: 0.75 · 1 · (−σ(1)) · (−1) = 0.5146762563012544.
        // Row 1 (pair 1, response 0): dim 0 only: 0.25 · ½ · (−σ(0.5)) = −0.07780741640023182.
        // Rows 2, 3 (responses 1) are the negatives: h_1 enters the margin with a minus sign.
        close(
            &vals(&policy.grad()),
            &[0.5146762563012544, -0.07780741640023182, -0.5146762563012544, 0.07780741640023182],
        );
    }

    #[test]
    fn tchebycheff_sigmoid_takes_the_max_of_weighted_means() {
        let (policy, reference, labels) = two_pair_case();
        let pref = t1(&[0.25, 0.75]);
        let agg = Aggregation::tchebycheff_zero(2);
        let out = mo_dpo_loss(&policy, &reference, &labels, &pref, 1.0, DpoLoss::Sigmoid, &agg)
            .expect("loss");
        // max(0.25·0.6436693358491647, 0.75·1.3132616875182228) = 0.9849462656386672.
        close(&vals(&out.loss), &[0.9849462656386672]);
        out.loss.backward();
        // Only dimension 1 (the arg-max) carries gradient, and only pair 0 is labelled there:
        // d/d lp_row0 = 0.75 · (−σ(1)) · (−1) = 0.5482939339725037; pair 1 gets nothing.
        close(&vals(&policy.grad()), &[0.5482939339725037, 0.0, -0.5482939339725037, 0.0]);
    }

    #[test]
    fn tchebycheff_tie_splits_the_gradient_between_tied_dimensions() {
        // One pair labelled +1 in both dimensions: policy [−1 | −3], ref [−1.5 | −2.5],
        // margin = 0.5 − (−0.5) = 1, so L̄ = [0.31326168751822286; 2] and with λ = (½, ½) the
        // two weighted means tie at 0.15663084375911143.
        let policy = t1(&[-1.0, -3.0]).set_requires_grad(true);
        let reference = t1(&[-1.5, -2.5]);
        let labels = t2(&[1.0, 1.0], 2);
        let pref = t1(&[0.5, 0.5]);
        let agg = Aggregation::tchebycheff_zero(2);
        let out = mo_dpo_loss(&policy, &reference, &labels, &pref, 1.0, DpoLoss::Sigmoid, &agg)
            .expect("loss");
        close(&vals(&out.loss), &[0.15663084375911143]);
        out.loss.backward();
        // The tied terms are averaged: each gets ½ of the max's gradient, so
        // d/d lp_0 = 2 · (½ · ½) · (−σ(−1)) = −0.13447071068499755 — half of what LS would give
        // (LS: 2 · ½ · (−σ(−1))).
        close(&vals(&policy.grad()), &[-0.13447071068499755, 0.13447071068499755]);
    }

    #[test]
    fn three_objectives_ipo_matches_hand_values() {
        // Same margins as `two_pair_case` (1.0 and −0.5). β = 0.5, so 1/(2β) = 1.
        // labels [[+1, −1, 0], [−1, 0, +1]] → z = [[1, −1, –], [0.5, –, −0.5]]
        // L = (z − 1)² = [[0, 4, –], [0.25, –, 2.25]] → L̄ = [0.125, 4, 2.25].
        // acc = [2/2, 0/1, 0/1].
        let (policy, reference, _) = two_pair_case();
        let labels = t2(&[1.0, -1.0, 0.0, -1.0, 0.0, 1.0], 3);
        let pref = t1(&[0.2, 0.3, 0.5]);
        let ls = mo_dpo_loss(
            &policy,
            &reference,
            &labels,
            &pref,
            0.5,
            DpoLoss::Ipo,
            &Aggregation::Linear,
        )
        .expect("loss");
        // LS = 0.2·0.125 + 0.3·4 + 0.5·2.25 = 0.025 + 1.2 + 1.125 = 2.35.
        close(&vals(&ls.loss), &[2.35]);
        close(&vals(&ls.loss_per_obj), &[0.125, 4.0, 2.25]);
        close(&vals(&ls.accuracy_per_obj), &[1.0, 0.0, 0.0]);
        let agg = Aggregation::tchebycheff_zero(3);
        let tche = mo_dpo_loss(&policy, &reference, &labels, &pref, 0.5, DpoLoss::Ipo, &agg)
            .expect("loss");
        // Tche = max(0.025, 1.2, 1.125) = 1.2.
        close(&vals(&tche.loss), &[1.2]);
    }

    #[test]
    fn a_zero_weight_removes_its_dimension() {
        let (policy, reference, labels) = two_pair_case();
        let pref = t1(&[1.0, 0.0]);
        for agg in [Aggregation::Linear, Aggregation::tchebycheff_zero(2)] {
            let out = mo_dpo_loss(&policy, &reference, &labels, &pref, 1.0, DpoLoss::Sigmoid, &agg)
                .expect("loss");
            // Only L̄_0 = 0.6436693358491647 remains, for both aggregations.
            close(&vals(&out.loss), &[0.6436693358491647]);
        }
    }

    #[test]
    fn ranking_accuracy_counts_wins_over_labelled_pairs() {
        // Pair 0: v_0 − v_1 = −1 − (−3) = 2; pair 1: −2 − (−1) = −1.
        // labels [[+1, −1], [+1, 0]] → dim 0: wins {yes, no} = ½; dim 1: {no} = 0.
        let (policy, _, labels) = two_pair_case();
        close(&vals(&ranking_accuracy(&policy, &labels).expect("acc")), &[0.5, 0.0]);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let (policy, reference, labels) = two_pair_case();
        let pref = t1(&[0.5, 0.5]);
        let short = t1(&[-1.0, -2.0, -3.0]);
        let err = mo_dpo_loss(
            &short,
            &reference,
            &labels,
            &pref,
            1.0,
            DpoLoss::Sigmoid,
            &Aggregation::Linear,
        );
        assert!(matches!(err, Err(DpoError::Shape { .. })), "{err:?}");
        let bad_pref = t1(&[1.0]);
        let err = mo_dpo_loss(
            &policy,
            &reference,
            &labels,
            &bad_pref,
            1.0,
            DpoLoss::Sigmoid,
            &Aggregation::Linear,
        );
        assert!(matches!(err, Err(DpoError::Core(_))), "{err:?}");
        let err = mo_dpo_loss(
            &policy,
            &reference,
            &labels,
            &pref,
            0.0,
            DpoLoss::Sigmoid,
            &Aggregation::Linear,
        );
        assert!(matches!(err, Err(DpoError::Data(_))), "{err:?}");
    }
}
