//! Activation checkpointing per decoder layer ([`Llama::hidden_states_checkpointed`]): the same
//! hidden states and the same adapter gradients as the plain forward and backward.

use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_lm::{init_random, CausalLm, Llama, LlamaConfig};
use rand::{Rng, SeedableRng};
use tch::{nn, Device, Kind, Tensor};

use crate::common::{max_abs_diff, setup};

/// A 3-layer model (D = 64, V = 256) with a 2-objective adapter whose every variable is
/// random (the adapter's own init leaves some factors at zero, whose gradients would not
/// test much).
fn model_with_adapter() -> (nn::VarStore, nn::VarStore, Llama) {
    setup();
    let base_vs = nn::VarStore::new(Device::Cpu);
    let cfg = LlamaConfig { num_hidden_layers: 3, vocab_size: 256, ..LlamaConfig::tiny() };
    let base = Llama::new(&base_vs.root(), None, &cfg);
    init_random(&base_vs, 11);
    let adapter_vs = nn::VarStore::new(Device::Cpu);
    let a = SvdLoraConfig {
        rank: 4,
        alpha: 8.0,
        n_objectives: 2,
        target_modules: panacea_core::adapter::default_targets(),
        init_std: 0.02,
    };
    let model = base.with_adapter(Some((&adapter_vs.root(), &a)));
    tch::manual_seed(5);
    tch::no_grad(|| {
        for (_, v) in adapter_vs.variables() {
            v.shallow_clone().copy_(&(Tensor::randn_like(&v) * 0.1));
        }
    });
    (base_vs, adapter_vs, model)
}

/// Σ w ⊙ log-softmax(logits) with fixed random weights: every position and vocabulary entry
/// contributes.
fn loss_of(model: &Llama, hidden: &Tensor, weights: &Tensor) -> Tensor {
    (model.lm_head(hidden).log_softmax(-1, Kind::Float) * weights).sum(Kind::Float)
}

fn grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut g: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, v)| (n, v.grad().copy())).collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    g
}

fn zero_grads(vs: &nn::VarStore) {
    for mut v in vs.trainable_variables() {
        v.zero_grad();
    }
}

#[test]
fn checkpointed_gradients_equal_the_plain_ones() {
    let (_base_vs, adapter_vs, model) = model_with_adapter();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (b, t) = (3, 10);
    let ids: Vec<i64> = (0..b * t).map(|_| rng.gen_range(0..256)).collect();
    let ids = Tensor::from_slice(&ids).view([b, t]);
    let pref = Tensor::from_slice(&[0.3f32, 0.7, 1.0, 0.0, 0.5, 0.5]).view([b, 2]);
    let weights = Tensor::randn([b, t, 256], (Kind::Float, Device::Cpu));
    // Unpadded rows, and rows 1 and 2 left-padded by 3 and 7 tokens.
    let full = Tensor::ones([b, t], (Kind::Int64, Device::Cpu));
    let padded = full.copy();
    let _ = padded.get(1).narrow(0, 0, 3).fill_(0);
    let _ = padded.get(2).narrow(0, 0, 7).fill_(0);
    for mask in [&full, &padded] {
        let adapter = Adapter::On { pref: &pref };
        zero_grads(&adapter_vs);
        let plain_hidden = model.hidden_states(&ids, mask, adapter);
        let plain_loss = loss_of(&model, &plain_hidden, &weights);
        plain_loss.backward();
        let plain = grads(&adapter_vs);

        zero_grads(&adapter_vs);
        let ck = model.hidden_states_checkpointed(&ids, mask, adapter);
        let loss = loss_of(&model, &ck.hidden, &weights);
        assert!(max_abs_diff(&ck.hidden, &plain_hidden) <= 1e-6, "forward differs");
        assert!((f64::try_from(&loss - &plain_loss).expect("loss")).abs() <= 1e-3);
        loss.backward();
        ck.backward();
        let checkpointed = grads(&adapter_vs);

        assert_eq!(plain.len(), checkpointed.len());
        assert!(plain.len() >= 3 * 7, "every layer's adapted projections are trainable");
        let (mut largest, mut worst) = (0.0f64, 0.0f64);
        for ((name, p), (_, c)) in plain.iter().zip(&checkpointed) {
            let scale = f64::try_from(p.abs().max()).expect("max");
            largest = largest.max(scale);
            let d = max_abs_diff(p, c);
            worst = worst.max(d);
            assert!(
                d <= 1e-6 * scale.max(1.0),
                "{name}: max |Δgrad| = {d:e} (max |grad| {scale:e})"
            );
        }
        assert!(largest > 1e-3, "the gradients are not trivially zero: {largest}");
        eprintln!("max |Δgrad| {worst:e} over gradients up to {largest:e}");
    }
}

/// A loss that does not read the hidden states leaves nothing to recompute.
#[test]
fn checkpointed_backward_without_a_gradient_does_nothing() {
    let (_base_vs, adapter_vs, model) = model_with_adapter();
    let ids = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
    let mask = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
    let pref = Tensor::from_slice(&[0.5f32, 0.5]);
    let ck = model.hidden_states_checkpointed(&ids, &mask, Adapter::On { pref: &pref });
    ck.backward();
    for (name, v) in adapter_vs.variables() {
        assert!(!v.grad().defined(), "{name} got a gradient");
    }
}
