//! The shared-prefix (packed) log-probs against the plain path: values, gradients and a whole
//! trainer step's loss and gradients, on the tiny random model with adapters that matter.

use panacea_core::aggregation::Aggregation;
use panacea_core::preference::PreferenceVector;
use panacea_dpo::trainer::sequence_logps;
use panacea_dpo::{
    mo_dpo_loss, shared_prefix_logps, EncodedPair, PairBatch, SeqLogp, StepPreference,
};
use panacea_lm::{Adapter, LlamaConfig};
use tch::{Device, Kind, Tensor};

use crate::common::{
    batch, grads, max_abs, mixed_pairs, pair, perturb_diagonal, tiny_trainer, tiny_trainer_with,
    EOS,
};

fn settings() -> panacea_dpo::DpoTrainerConfig {
    crate::common::settings(1e-3)
}

/// Pairs whose layouts stress the packing: responses that share leading tokens (the common
/// prefix is longer than the prompt), one response a prefix of the other, a truncated pair
/// (no EOS), a one-token prompt.
pub(crate) fn awkward_pairs() -> Vec<EncodedPair> {
    let truncated = EncodedPair::new(
        4,
        &[140, 141, 142],
        [&[240, 241, 242, 243, 244], &[340, 341]],
        EOS,
        vec![1, 1],
        6,
    )
    .expect("labels")
    .expect("kept");
    vec![
        pair(0, &[100, 101], &[200, 201, 202], &[200, 201, 303], &[1, -1]),
        pair(1, &[110, 111, 112], &[210], &[210, 211, 212], &[-1, 0]),
        pair(2, &[120], &[220, 221], &[320], &[1, 1]),
        pair(3, &[130, 131, 132, 133], &[230, 231, 232, 233, 234, 235], &[330], &[0, 1]),
        truncated,
    ]
}

/// The same pairs left-padded (padding at the start of each row): the packing reads the real
/// tokens from the attention mask, wherever the padding is.
fn left_padded(b: &PairBatch) -> PairBatch {
    let (rows, t) = (b.ids.size()[0], b.ids.size()[1]);
    let a = t - 1;
    let ids = Vec::<i64>::try_from(b.ids.reshape([-1])).expect("ids");
    let mask = Vec::<i64>::try_from(b.attention_mask.reshape([-1])).expect("mask");
    let resp = Vec::<bool>::try_from(b.response_mask.reshape([-1])).expect("resp");
    let (mut ids2, mut mask2, mut resp2) =
        (vec![0i64; ids.len()], vec![0i64; ids.len()], vec![false; resp.len()]);
    for r in 0..rows as usize {
        let (t, a) = (t as usize, a as usize);
        let n = mask[r * t..(r + 1) * t].iter().filter(|&&m| m != 0).count();
        let shift = t - n;
        for c in 0..n {
            ids2[r * t + shift + c] = ids[r * t + c];
            mask2[r * t + shift + c] = 1;
        }
        for c in 0..n.saturating_sub(1) {
            resp2[r * a + shift + c] = resp[r * a + c];
        }
    }
    PairBatch {
        index: b.index.clone(),
        ids: Tensor::from_slice(&ids2).view([rows, t]),
        attention_mask: Tensor::from_slice(&mask2).view([rows, t]),
        response_mask: Tensor::from_slice(&resp2).view([rows, a]),
        labels: b.labels.shallow_clone(),
    }
}

fn per_pair(b: usize) -> (Tensor, Tensor) {
    let prefs: Vec<PreferenceVector> = (0..b)
        .map(|i| {
            let w = 0.1 + 0.8 * i as f64 / b as f64;
            PreferenceVector::new(vec![w, 1.0 - w]).expect("pref")
        })
        .collect();
    let pairs = PreferenceVector::stack(&prefs, Device::Cpu).expect("stack"); // [B, K]
    let rows = Tensor::cat(&[&pairs, &pairs], 0); // [2B, K]
    (pairs, rows)
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    let scale = max_abs(b).max(1.0);
    let diff = max_abs(&(a - b));
    assert!(diff <= 1e-5 * scale, "{what}: packed vs plain differ by {diff} (scale {scale})");
}

#[test]
fn shared_prefix_logps_equal_the_plain_path() {
    let qwen = LlamaConfig { model_type: "qwen2".into(), ..LlamaConfig::tiny() };
    for (config, fused) in
        [(LlamaConfig::tiny(), false), (LlamaConfig::tiny(), true), (qwen, false)]
    {
        let (_base, mut trainer) = tiny_trainer_with(&config, 2, settings(), 5);
        if fused {
            // The loaded models are fused: the plain path then multiplies q/k/v in one GEMM.
            trainer.model.fuse_projections();
        }
        perturb_diagonal(&trainer);
        let shared = PreferenceVector::new(vec![0.3, 0.7]).expect("pref").to_tensor(Device::Cpu);
        for pairs in [mixed_pairs(), awkward_pairs()] {
            let refs: Vec<&EncodedPair> = pairs.iter().collect();
            let (pair_pref, row_pref) = per_pair(pairs.len());
            for variant in [SeqLogp::ResponseSum, SeqLogp::FromDivergence] {
                let b = PairBatch::collate(&refs, 2, 0, variant, Device::Cpu).expect("batch");
                for b in [left_padded(&b), b] {
                    let cases = [
                        (Adapter::Off, Adapter::Off, "off"),
                        (Adapter::On { pref: &shared }, Adapter::On { pref: &shared }, "shared λ"),
                        (
                            Adapter::On { pref: &pair_pref },
                            Adapter::On { pref: &row_pref },
                            "per-pair λ",
                        ),
                    ];
                    for (packed_adapter, plain_adapter, what) in cases {
                        let packed = tch::no_grad(|| {
                            shared_prefix_logps(&trainer.model, &b, packed_adapter)
                        });
                        let plain =
                            tch::no_grad(|| sequence_logps(&trainer.model, &b, plain_adapter));
                        assert_close(
                            &packed,
                            &plain,
                            &format!("{} fused {fused} {variant:?} {what}", config.model_type),
                        );
                    }
                }
            }
        }
    }
}

/// Pairs whose two sequences differ from the first token (no common prefix) gain nothing from
/// packing; the plain path then runs, with a per-pair λ expanded to both rows.
#[test]
fn pairs_without_a_common_prefix_give_the_plain_numbers() {
    let (_base, trainer) = tiny_trainer(2, settings(), 9);
    perturb_diagonal(&trainer);
    let pairs: Vec<EncodedPair> = (0..3)
        .map(|i| pair(i, &[], &[400 + i as i64, 401, 402], &[500 + i as i64, 501, 502], &[1, -1]))
        .collect();
    let b = batch(&pairs, 2);
    let (pair_pref, row_pref) = per_pair(pairs.len());
    let packed =
        tch::no_grad(|| shared_prefix_logps(&trainer.model, &b, Adapter::On { pref: &pair_pref }));
    let plain =
        tch::no_grad(|| sequence_logps(&trainer.model, &b, Adapter::On { pref: &row_pref }));
    assert_eq!(max_abs(&(packed - plain)), 0.0);
}

#[test]
fn shared_prefix_gradients_equal_the_plain_path() {
    let (_base, trainer) = tiny_trainer(2, settings(), 6);
    perturb_diagonal(&trainer);
    let b = batch(&awkward_pairs(), 2);
    let (pair_pref, row_pref) = per_pair(b.len());
    // Weights per row, so both responses' gradients (which meet in the shared prefix) count.
    let w = Tensor::linspace(-1.0, 2.0, 2 * b.len() as i64, (Kind::Float, Device::Cpu)); // [2B]
    let grad_of = |lp: Tensor| {
        for (_, v) in trainer.adapter_vs.variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        (lp * &w).sum(Kind::Float).backward();
        grads(&trainer)
    };
    let packed = grad_of(shared_prefix_logps(&trainer.model, &b, Adapter::On { pref: &pair_pref }));
    let plain = grad_of(sequence_logps(&trainer.model, &b, Adapter::On { pref: &row_pref }));
    let scale = plain.iter().map(|(_, g)| max_abs(g)).fold(0.0, f64::max);
    assert!(scale > 0.0, "no gradient at all");
    for ((name, a), (_, p)) in packed.iter().zip(&plain) {
        let diff = max_abs(&(a - p));
        assert!(diff <= 1e-4 * scale, "{name}: |Δgrad| {diff} (scale {scale})");
    }
}

/// The trainer's loss and adapter gradients (packed, any micro-batching) against the plain
/// implementation written out: reference and policy log-probs of unpacked rows, one loss,
/// one backward.
#[test]
fn a_trainer_step_has_the_loss_and_gradients_of_the_plain_implementation() {
    let prefs: Vec<PreferenceVector> = [[0.3, 0.7], [0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0.0, 1.0]]
        .iter()
        .map(|p| PreferenceVector::new(p.to_vec()).expect("pref"))
        .collect();
    for aggregation in [Aggregation::Linear, Aggregation::tchebycheff_zero(2)] {
        for micro in [0, 2] {
            let s = crate::common::settings_with(1e-3, micro, aggregation.clone());
            let (_base, mut trainer) = tiny_trainer(2, s.clone(), 8);
            perturb_diagonal(&trainer);
            let b = batch(&awkward_pairs(), 2);
            let (out, _) = trainer
                .accumulate_gradients(&b, StepPreference::PerRow(&prefs), None)
                .expect("grads");
            let step_grads = grads(&trainer);
            // The plain implementation on the same trainer (gradients zeroed first).
            for (_, v) in trainer.adapter_vs.variables() {
                let _ = v.grad().zero_();
            }
            let pair_pref = PreferenceVector::stack(&prefs, Device::Cpu).expect("stack"); // [B, K]
            let row_pref = Tensor::cat(&[&pair_pref, &pair_pref], 0); // [2B, K]
            let reference = tch::no_grad(|| sequence_logps(&trainer.model, &b, Adapter::Off));
            let lp = sequence_logps(&trainer.model, &b, Adapter::On { pref: &row_pref });
            let plain = mo_dpo_loss(
                &lp,
                &reference,
                &b.labels,
                &pair_pref,
                s.dpo.beta,
                s.dpo.loss,
                &s.aggregation,
            )
            .expect("loss");
            plain.loss.backward();
            let (l_step, l_plain) = (
                f64::try_from(&out.loss).expect("scalar"),
                f64::try_from(&plain.loss).expect("scalar"),
            );
            assert!(
                (l_step - l_plain).abs() < 1e-5 * l_plain.abs().max(1.0),
                "loss {l_step} vs {l_plain}"
            );
            let plain_grads = grads(&trainer);
            let scale = plain_grads.iter().map(|(_, g)| max_abs(g)).fold(0.0, f64::max);
            assert!(scale > 0.0, "no gradient at all");
            for ((name, a), (_, p)) in step_grads.iter().zip(&plain_grads) {
                let diff = max_abs(&(a - p));
                assert!(
                    diff <= 1e-4 * scale,
                    "{aggregation:?} micro {micro}: {name}: |Δgrad| {diff} (scale {scale})"
                );
            }
        }
    }
}
