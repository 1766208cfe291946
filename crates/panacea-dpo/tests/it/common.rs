//! Shared test helpers: a tiny random-init Llama with an SVD-LoRA adapter, and synthetic pairs.

use panacea_core::adapter::SvdLoraConfig;
use panacea_dpo::{
    DpoSettings, DpoTrainer, DpoTrainerConfig, EncodedPair, OptimConfig, PairBatch, SeqLogp,
};
use panacea_lm::{init_random, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

/// The EOS of [`LlamaConfig::tiny`].
pub(crate) const EOS: i64 = 2;

/// A tiny Llama (2 layers, d = 64) with a rank-4 SVD-LoRA adapter for `k` objectives, and its
/// trainer. Deterministic for a given `seed`. Returns the base VarStore too.
pub(crate) fn tiny_trainer(
    k: usize,
    settings: DpoTrainerConfig,
    seed: i64,
) -> (nn::VarStore, DpoTrainer<Llama>) {
    tiny_trainer_with(&LlamaConfig::tiny(), k, settings, seed)
}

/// [`tiny_trainer`] with another model shape (e.g. a toy vocabulary).
pub(crate) fn tiny_trainer_with(
    config: &LlamaConfig,
    k: usize,
    settings: DpoTrainerConfig,
    seed: i64,
) -> (nn::VarStore, DpoTrainer<Llama>) {
    tiny_trainer_on(config, k, settings, seed, Device::Cpu)
}

/// [`tiny_trainer_with`] on `device`.
pub(crate) fn tiny_trainer_on(
    config: &LlamaConfig,
    k: usize,
    settings: DpoTrainerConfig,
    seed: i64,
    device: Device,
) -> (nn::VarStore, DpoTrainer<Llama>) {
    panacea_core::device::init_torch();
    tch::manual_seed(seed);
    let base_vs = nn::VarStore::new(device);
    let adapter_vs = nn::VarStore::new(device);
    let cfg = SvdLoraConfig { rank: 4, alpha: 8.0, ..SvdLoraConfig::new(k as i64) };
    let model = Llama::new(&base_vs.root(), Some((&adapter_vs.root(), &cfg)), config);
    init_random(&base_vs, seed);
    let trainer = DpoTrainer::new(model, adapter_vs, settings, k).expect("trainer");
    (base_vs, trainer)
}

/// Trainer settings for the tiny tests: β = 0.5, learning rate `lr`, clip at 10, the rest
/// default (linear aggregation, one forward per batch, no warm-up).
pub(crate) fn settings(lr: f64) -> DpoTrainerConfig {
    DpoTrainerConfig {
        dpo: DpoSettings { beta: 0.5, ..DpoSettings::default() },
        optim: OptimConfig { lr, max_grad_norm: 10.0, ..OptimConfig::default() },
        ..DpoTrainerConfig::default()
    }
}

/// [`settings`] with `micro_batch_size` and `aggregation`.
pub(crate) fn settings_with(
    lr: f64,
    micro_batch_size: usize,
    aggregation: panacea_core::aggregation::Aggregation,
) -> DpoTrainerConfig {
    let mut s = settings(lr);
    s.dpo.micro_batch_size = micro_batch_size;
    s.aggregation = aggregation;
    s
}

/// A pair from token lists (EOS appended by `EncodedPair::new`).
pub(crate) fn pair(
    index: usize,
    prompt: &[i64],
    r0: &[i64],
    r1: &[i64],
    labels: &[i8],
) -> EncodedPair {
    EncodedPair::new(index, prompt, [r0, r1], EOS, labels.to_vec(), 64)
        .expect("valid labels")
        .expect("pair kept")
}

/// Four pairs of different lengths, two dimensions, one label masked.
pub(crate) fn mixed_pairs() -> Vec<EncodedPair> {
    vec![
        pair(0, &[100, 101, 102], &[200, 201], &[300, 301, 302, 303], &[1, -1]),
        pair(1, &[110, 111], &[210, 211, 212], &[310], &[-1, 0]),
        pair(2, &[120, 121, 122, 123], &[220], &[320, 321], &[1, 1]),
        pair(3, &[130], &[230, 231, 232, 233, 234], &[330, 331], &[-1, 1]),
    ]
}

/// Collates pairs with two objectives' labels.
pub(crate) fn batch(pairs: &[EncodedPair], k: usize) -> PairBatch {
    let refs: Vec<&EncodedPair> = pairs.iter().collect();
    PairBatch::collate(&refs, k, 0, SeqLogp::ResponseSum, Device::Cpu).expect("batch")
}

/// Deep copies of every variable of `vs`, sorted by name.
pub(crate) fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest absolute entry of a tensor.
pub(crate) fn max_abs(t: &Tensor) -> f64 {
    f64::try_from(t.abs().max().to_kind(Kind::Double)).expect("scalar")
}

/// Sets σ and s of every adapter layer to non-zero values, so that U and V get gradients too.
pub(crate) fn perturb_diagonal(trainer: &panacea_dpo::DpoTrainer<panacea_lm::Llama>) {
    tch::no_grad(|| {
        let mut vars: Vec<(String, Tensor)> = trainer.adapter_vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (name, v)) in vars.iter().enumerate() {
            if name.ends_with("svd_lora_sigma") || name.ends_with("svd_lora_pref_scale") {
                let _ = v.shallow_clone().fill_(0.05 + 0.01 * (i % 7) as f64);
            }
        }
    });
}

/// The adapter gradients, sorted by name.
pub(crate) fn grads(trainer: &panacea_dpo::DpoTrainer<panacea_lm::Llama>) -> Vec<(String, Tensor)> {
    let mut g: Vec<(String, Tensor)> = trainer
        .adapter_vs
        .variables()
        .into_iter()
        .map(|(n, v)| (n, v.grad().detach().copy()))
        .collect();
    g.sort_by(|a, b| a.0.cmp(&b.0));
    g
}
