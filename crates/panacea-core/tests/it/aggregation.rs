//! Linear and Tchebycheff aggregation against hand-computed values (each case's arithmetic is
//! written in its comment), including m = 3, masks, per-row λ and tied Tchebycheff terms.

use panacea_core::aggregation::{dimension_means, Aggregation};
use panacea_core::objective::{utilities, Objective};
use panacea_core::CoreError;
use tch::{Kind, Tensor};

use crate::setup;

fn t(values: &[f64], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values).to_kind(Kind::Float).view(shape)
}

#[track_caller]
fn assert_close(got: &Tensor, want: &[f64]) {
    let got: Vec<f64> = got.to_kind(Kind::Double).view([-1]).try_into().expect("to vec");
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

#[test]
fn linear_utilities_with_shared_and_per_row_preferences() {
    setup();
    let u = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    // λ = (0.7, 0.3): 0.7·1 + 0.3·2 = 1.3; 0.7·3 + 0.3·4 = 3.3.
    let got = Aggregation::Linear.aggregate(&u, &t(&[0.7, 0.3], &[2])).expect("ok");
    assert_close(&got, &[1.3, 3.3]);
    // Per-row λ: (1, 0)·(1, 2) = 1; (0.25, 0.75)·(3, 4) = 0.75 + 3 = 3.75.
    let rows = t(&[1.0, 0.0, 0.25, 0.75], &[2, 2]);
    let got = Aggregation::Linear.aggregate(&u, &rows).expect("ok");
    assert_close(&got, &[1.0, 3.75]);
}

#[test]
fn linear_advantages_with_action_axis() {
    setup();
    // adv [B=2, A=2, K=2]; row 0 λ = (1, 0) picks dimension 0, row 1 λ = (0.5, 0.5) averages.
    let adv = t(&[1.0, -1.0, 2.0, 0.0, 4.0, 2.0, -2.0, 6.0], &[2, 2, 2]);
    let rows = t(&[1.0, 0.0, 0.5, 0.5], &[2, 2]);
    let got = Aggregation::Linear.aggregate(&adv, &rows).expect("ok");
    assert_eq!(got.size(), [2, 2]);
    assert_close(&got, &[1.0, 2.0, 3.0, 2.0]);
}

#[test]
fn tchebycheff_utilities_use_the_ideal_point() {
    setup();
    // z = (5, 5), λ = (0.5, 0.5), u = (1, 2): min(0.5·(1−5), 0.5·(2−5)) = min(−2, −1.5) = −2.
    // u = (4, 0): min(−0.5, −2.5) = −2.5.
    let agg = Aggregation::Tchebycheff { ideal: vec![5.0, 5.0] };
    let got = agg.aggregate(&t(&[1.0, 2.0, 4.0, 0.0], &[2, 2]), &t(&[0.5, 0.5], &[2]));
    assert_close(&got.expect("ok"), &[-2.0, -2.5]);
    // A wrong-length ideal point is a shape error.
    let bad = Aggregation::Tchebycheff { ideal: vec![0.0; 3] };
    let err = bad.aggregate(&t(&[1.0, 2.0], &[1, 2]), &t(&[0.5, 0.5], &[2]));
    assert!(matches!(err, Err(CoreError::Shape { .. })));
    // `{kind: tchebycheff}` without an ideal point is z = 0: u = (1, 2), λ = (0.5, 0.5) →
    // min(0.5, 1.0) = 0.5, the same as an explicit zero ideal point.
    let omitted: Aggregation = serde_yaml::from_str("{kind: tchebycheff}").expect("yaml");
    let got = omitted.aggregate(&t(&[1.0, 2.0], &[1, 2]), &t(&[0.5, 0.5], &[2]));
    assert_close(&got.expect("ok"), &[0.5]);
    assert_close(
        &Aggregation::tchebycheff_zero(2)
            .aggregate(&t(&[1.0, 2.0], &[1, 2]), &t(&[0.5, 0.5], &[2]))
            .expect("ok"),
        &[0.5],
    );
}

#[test]
fn loss_aggregation_takes_dimension_means_first() {
    setup();
    // L = [[1, 2], [3, 4], [5, 6]], all labelled: L̄ = (3, 4).
    // LS, λ = (0.7, 0.3): 2.1 + 1.2 = 3.3. Tche (z = 0): max(2.1, 1.2) = 2.1.
    // A per-sample max would give mean(max(0.7, 0.6), max(2.1, 1.2), max(3.5, 1.8)) = 2.1 too
    // here, so a second case separates them below.
    let losses = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let mask = Tensor::ones([3, 2], (Kind::Bool, tch::Device::Cpu));
    let pref = t(&[0.7, 0.3], &[2]);
    assert_close(&Aggregation::Linear.aggregate_losses(&losses, &mask, &pref).expect("ok"), &[3.3]);
    let tche = Aggregation::tchebycheff_zero(2);
    assert_close(&tche.aggregate_losses(&losses, &mask, &pref).expect("ok"), &[2.1]);
    // L = [[4, 0], [0, 4]], λ = (0.5, 0.5): means first → L̄ = (2, 2) → max(1, 1) = 1;
    // per-sample max then mean would be mean(2, 2) = 2.
    let losses = t(&[4.0, 0.0, 0.0, 4.0], &[2, 2]);
    let mask = Tensor::ones([2, 2], (Kind::Bool, tch::Device::Cpu));
    let got = tche.aggregate_losses(&losses, &mask, &t(&[0.5, 0.5], &[2])).expect("ok");
    assert_close(&got, &[1.0]);
}

#[test]
fn masked_rows_drop_out_of_their_dimension() {
    setup();
    // mask [[1, 0], [1, 1], [0, 1]]: L̄_1 = (1 + 3)/2 = 2, L̄_2 = (4 + 6)/2 = 5.
    let losses = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let mask = t(&[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], &[3, 2]);
    assert_close(&dimension_means(&losses, &mask), &[2.0, 5.0]);
    // LS (0.5, 0.5): 1 + 2.5 = 3.5.
    let got = Aggregation::Linear.aggregate_losses(&losses, &mask, &t(&[0.5, 0.5], &[2]));
    assert_close(&got.expect("ok"), &[3.5]);
    // A dimension without any label contributes 0 (not NaN).
    let none = t(&[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[3, 2]);
    assert_close(&dimension_means(&losses, &none), &[3.0, 0.0]);
}

#[test]
fn three_objectives_and_tie_split_the_gradient() {
    setup();
    // m = 3, one row: L̄ = (1, 2, 3), λ = (0.5, 0.3, 0.2).
    // LS = 0.5 + 0.6 + 0.6 = 1.7. Tche = max(0.5, 0.6, 0.6) = 0.6, tied between dims 2 and 3,
    // so the gradient is split equally: ∂/∂L = (0, 0.3/2, 0.2/2) = (0, 0.15, 0.1).
    let losses = t(&[1.0, 2.0, 3.0], &[1, 3]).set_requires_grad(true);
    let mask = Tensor::ones([1, 3], (Kind::Bool, tch::Device::Cpu));
    let pref = t(&[0.5, 0.3, 0.2], &[3]);
    let ls = Aggregation::Linear.aggregate_losses(&losses, &mask, &pref).expect("ok");
    assert_close(&ls, &[1.7]);
    let tche = Aggregation::tchebycheff_zero(3).aggregate_losses(&losses, &mask, &pref);
    let tche = tche.expect("ok");
    assert_close(&tche, &[0.6]);
    tche.backward();
    assert_close(&losses.grad(), &[0.0, 0.15, 0.1]);
}

#[test]
fn tchebycheff_gradient_flows_only_through_the_arg_max() {
    setup();
    // L = [[1, 2], [3, 4], [5, 6]], λ = (0.7, 0.3): λ·L̄ = (2.1, 1.2), arg-max = dim 1.
    // ∂/∂L_{b,1} = 0.7/3 for every row, ∂/∂L_{b,2} = 0.
    let losses = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).set_requires_grad(true);
    let mask = Tensor::ones([3, 2], (Kind::Bool, tch::Device::Cpu));
    let loss = Aggregation::tchebycheff_zero(2)
        .aggregate_losses(&losses, &mask, &t(&[0.7, 0.3], &[2]))
        .expect("ok");
    loss.backward();
    let a = 0.7 / 3.0;
    assert_close(&losses.grad(), &[a, 0.0, a, 0.0, a, 0.0]);
}

#[test]
fn zero_weight_removes_a_dimension() {
    setup();
    // λ = (1, 0): a huge loss in dimension 2 does not matter. Tche = max(1·2, 0·100) = 2.
    let losses = t(&[2.0, 100.0], &[1, 2]);
    let mask = Tensor::ones([1, 2], (Kind::Bool, tch::Device::Cpu));
    let got =
        Aggregation::tchebycheff_zero(2).aggregate_losses(&losses, &mask, &t(&[1.0, 0.0], &[2]));
    assert_close(&got.expect("ok"), &[2.0]);
}

#[test]
fn per_row_preferences_group_rows_by_lambda() {
    setup();
    // Rows 0, 1 have λ_a = (0.5, 0.5), rows 2, 3 have λ_b = (1, 0).
    // L = [[2, 4], [4, 0], [1, 9], [3, 9]].
    // Group a: L̄ = (3, 2) → Tche max(1.5, 1) = 1.5, LS 2.5. Group b: L̄ = (2, 9) → Tche 2, LS 2.
    // Each group weighs 2/4: Tche = 0.5·1.5 + 0.5·2 = 1.75; LS = 0.5·2.5 + 0.5·2 = 2.25.
    let losses = t(&[2.0, 4.0, 4.0, 0.0, 1.0, 9.0, 3.0, 9.0], &[4, 2]);
    let mask = Tensor::ones([4, 2], (Kind::Bool, tch::Device::Cpu));
    let rows = t(&[0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0], &[4, 2]);
    let tche = Aggregation::tchebycheff_zero(2).aggregate_losses(&losses, &mask, &rows);
    assert_close(&tche.expect("ok"), &[1.75]);
    let ls = Aggregation::Linear.aggregate_losses(&losses, &mask, &rows);
    assert_close(&ls.expect("ok"), &[2.25]);
    // The same λ on every row is exactly the shared-λ batch-mean form.
    let same = t(&[0.7, 0.3, 0.7, 0.3, 0.7, 0.3, 0.7, 0.3], &[4, 2]);
    let shared = t(&[0.7, 0.3], &[2]);
    for agg in [Aggregation::Linear, Aggregation::tchebycheff_zero(2)] {
        let a = agg.aggregate_losses(&losses, &mask, &same).expect("ok");
        let b = agg.aggregate_losses(&losses, &mask, &shared).expect("ok");
        assert!(a.equal(&b));
    }
}

#[test]
fn shape_errors_are_reported() {
    setup();
    let losses = t(&[1.0, 2.0], &[1, 2]);
    let mask = Tensor::ones([1, 2], (Kind::Bool, tch::Device::Cpu));
    let err = Aggregation::Linear.aggregate_losses(&losses, &mask, &t(&[0.2, 0.3, 0.5], &[3]));
    assert!(matches!(err, Err(CoreError::Shape { .. })));
    let err =
        Aggregation::Linear.aggregate_losses(&losses, &t(&[1.0], &[1, 1]), &t(&[1.0, 0.0], &[2]));
    assert!(matches!(err, Err(CoreError::Shape { .. })));
}

#[test]
fn costs_are_negated_exactly_once() {
    setup();
    let objectives = [Objective::reward("helpful"), Objective::cost("harmful")];
    // scores (2, 3) → utilities (2, −3); (−1, −4) → (−1, 4).
    let scores = t(&[2.0, 3.0, -1.0, -4.0], &[2, 2]);
    assert_close(&utilities(&objectives, &scores).expect("ok"), &[2.0, -3.0, -1.0, 4.0]);
    assert_close(&objectives[1].utility(&t(&[3.0], &[1])), &[-3.0]);
    assert_eq!(objectives[1].utility_f64(3.0), -3.0);
    assert_eq!(objectives[0].utility_f64(3.0), 3.0);
    assert!(utilities(&objectives, &t(&[1.0, 2.0, 3.0], &[1, 3])).is_err());
}

#[test]
fn tchebycheff_policy_weights_pick_the_worst_dimension_from_batch_estimates() {
    // Batch estimates J = (0.75, 0.25, 0.5) against the ideal point z = (1, 1, 1): gaps
    // z − J = (0.25, 0.75, 0.5) (all exact in binary, so ties are exact).
    let (j, z) = ([0.75, 0.25, 0.5], [1.0, 1.0, 1.0]);
    let prefs = vec![
        // λ = (1/3, 1/3, 1/3): λ·gap = (0.083, 0.25, 0.167) → dimension 1, weight 1/3.
        vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
        // λ = (0.75, 0.25, 0): (0.1875, 0.1875, 0) → a tie; the larger λ wins: dimension 0.
        vec![0.75, 0.25, 0.0],
        // λ = (0.125, 0.125, 0.75): (0.03125, 0.09375, 0.375) → dimension 2, weight 0.75.
        vec![0.125, 0.125, 0.75],
    ];
    let cheb = Aggregation::Tchebycheff { ideal: vec![] };
    let w = cheb.advantage_weights(&prefs, &j, &z).expect("weights");
    assert_eq!(w, vec![vec![0.0, 1.0 / 3.0, 0.0], vec![0.75, 0.0, 0.0], vec![0.0, 0.0, 0.75]]);
    // Linear weights are λ itself.
    assert_eq!(Aggregation::Linear.advantage_weights(&prefs, &j, &z).expect("weights"), prefs);
    // Every gap 0 (first step, running-max ideal): the largest λ_i, then the lowest index.
    let w = cheb.advantage_weights(&[vec![0.5, 0.5, 0.0]], &j, &j).expect("weights");
    assert_eq!(w, vec![vec![0.5, 0.0, 0.0]]);
    // Shapes are checked.
    assert!(cheb.advantage_weights(&prefs, &j, &[1.0]).is_err());
    assert!(cheb.advantage_weights(&[vec![1.0]], &j, &z).is_err());
}
