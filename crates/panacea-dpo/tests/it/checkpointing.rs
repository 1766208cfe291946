//! `train.activation_checkpointing` in the DPO step: the policy forward recomputes each decoder
//! layer in the backward pass, and the step computes the same loss, gradients and update as the
//! plain one, on the packed (shared-prefix) path, the unpacked fallback and with micro-batches.

use panacea_core::aggregation::Aggregation;
use panacea_core::preference::{PreferenceVector, StepPreference};
use panacea_dpo::{DpoTrainer, DpoTrainerConfig, EncodedPair};
use panacea_lm::Llama;
use tch::{nn, Tensor};

use crate::common::{
    batch, grads, max_abs, mixed_pairs, pair, perturb_diagonal, settings_with, snapshot,
    tiny_trainer,
};

/// Two pairs without a common prefix (empty prompts, first tokens differ, equal lengths):
/// packing saves nothing, so the step takes the unpacked path. 4 rows of 9 tokens: more than
/// the 16 rows below which a forward without autograd takes panacea-core's small-GEMM kernel,
/// whose rounding differs from libtorch's (the comparison is of the checkpointing alone).
fn unshared_pairs() -> Vec<EncodedPair> {
    let r = |first: i64| -> Vec<i64> { (first..first + 8).collect() };
    vec![pair(0, &[], &r(200), &r(300), &[1, -1]), pair(1, &[], &r(210), &r(310), &[-1, 1])]
}

/// A trainer with the adapter's σ and s made non-zero (so that U and V get gradients).
fn trainer(micro_batch_size: usize, checkpointing: bool) -> (nn::VarStore, DpoTrainer<Llama>) {
    let settings = DpoTrainerConfig {
        activation_checkpointing: checkpointing,
        ..settings_with(1e-2, micro_batch_size, Aggregation::Linear)
    };
    let (base_vs, trainer) = tiny_trainer(2, settings, 17);
    perturb_diagonal(&trainer);
    (base_vs, trainer)
}

/// Largest |a − b| over two name-sorted lists of tensors, and the largest |a|.
fn worst_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for ((name, x), (other, y)) in a.iter().zip(b) {
        assert_eq!(name, other);
        diff = diff.max(max_abs(&(x - y)));
        scale = scale.max(max_abs(x));
    }
    (diff, scale)
}

/// One step of the plain and of the checkpointed trainer on the same pairs under a per-pair
/// λ: equal losses, equal gradients (f32 tolerance 1e-6 relative to the largest gradient;
/// the two paths run the same operations on the same inputs, so they agree to rounding), and
/// equal updated adapters.
fn assert_same_step(pairs: &[EncodedPair], micro_batch_size: usize) {
    let b = batch(pairs, 2);
    let pref: Vec<PreferenceVector> = (0..pairs.len())
        .map(|i| PreferenceVector::new(vec![0.2 + 0.15 * i as f64, 0.8 - 0.15 * i as f64]))
        .collect::<Result<_, _>>()
        .expect("preferences");
    // The same adapter in both (its random init draws from libtorch's global generator,
    // which parallel tests share): the second trainer takes the first one's values.
    let (_plain_base, plain) = trainer(micro_batch_size, false);
    let (_ck_base, checkpointed) = trainer(micro_batch_size, true);
    let start = snapshot(&plain.adapter_vs);
    tch::no_grad(|| {
        for (name, v) in checkpointed.adapter_vs.variables() {
            let (_, value) = start.iter().find(|(n, _)| *n == name).expect("same variables");
            v.shallow_clone().copy_(value);
        }
    });
    let mut results = Vec::new();
    for mut t in [plain, checkpointed] {
        let (out, _) =
            t.accumulate_gradients(&b, StepPreference::PerRow(&pref), None).expect("gradients");
        let loss = out.loss.double_value(&[]);
        let g = grads(&t);
        let metrics = t.step(&b, StepPreference::PerRow(&pref), None).expect("step");
        results.push((loss, g, metrics.loss, snapshot(&t.adapter_vs)));
    }
    let [(plain_loss, plain_g, plain_step, plain_vars), (ck_loss, ck_g, ck_step, ck_vars)] =
        <[_; 2]>::try_from(results).unwrap_or_else(|_| panic!("two runs"));
    assert!((plain_loss - ck_loss).abs() <= 1e-6, "loss {plain_loss} vs {ck_loss}");
    assert!((plain_step - ck_step).abs() <= 1e-6, "step loss {plain_step} vs {ck_step}");
    let (grad_diff, scale) = worst_difference(&plain_g, &ck_g);
    assert!(scale > 1e-4, "the gradients are not trivially zero: {scale:e}");
    assert!(grad_diff <= 1e-6 * scale.max(1.0), "max |Δgrad| {grad_diff:e} (max |grad| {scale:e})");
    let (var_diff, _) = worst_difference(&plain_vars, &ck_vars);
    assert!(var_diff <= 1e-6, "updated adapters differ by {var_diff:e}");
    eprintln!("max |Δgrad| {grad_diff:e} over gradients up to {scale:e}; max |Δθ| {var_diff:e}");
}

#[test]
fn checkpointed_dpo_step_equals_the_plain_step_on_packed_pairs() {
    assert_same_step(&mixed_pairs(), 0);
}

#[test]
fn checkpointed_dpo_step_equals_the_plain_step_with_micro_batches() {
    assert_same_step(&mixed_pairs(), 2);
}

#[test]
fn checkpointed_dpo_step_equals_the_plain_step_on_unpacked_pairs() {
    assert_same_step(&unshared_pairs(), 0);
}
