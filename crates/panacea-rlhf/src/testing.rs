//! Toy objectives and a tiny random-init policy for tests and smoke runs: the objectives read
//! response token ids, so no tokenizer or scorer files are needed, and a test runs real PPO
//! steps in seconds.

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{init_random, Llama, LlamaConfig};
use tch::{nn, Device, Kind};

use crate::rollout::{RewardSource, RolloutView};
use crate::RlhfError;

/// Fraction of a row's response tokens whose id is even (higher is better); 0 for an empty
/// response.
#[derive(Debug, Default)]
pub struct EvenTokenFraction;

/// Fraction of a row's response tokens whose id is odd (higher is better): in direct conflict
/// with [`EvenTokenFraction`], which gives a two-objective front with a known direction.
#[derive(Debug, Default)]
pub struct OddTokenFraction;

/// Negative response length in tokens (higher is better: shorter).
#[derive(Debug, Default)]
pub struct NegativeLength;

fn parity_fraction(view: &RolloutView<'_>, parity: i64) -> Result<Vec<f64>, RlhfError> {
    let mask = view.response_mask.to_kind(Kind::Double); // [B, N]
    let hit = view.response_ids.remainder(2).eq(parity).to_kind(Kind::Double) * &mask; // [B, N]
    let count = hit.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double); // [B]
    let len = mask.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double).clamp_min(1.0); // [B]
    Ok(Vec::try_from((count / len).to_device(Device::Cpu))?)
}

impl RewardSource for EvenTokenFraction {
    fn name(&self) -> &str {
        "even"
    }
    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        parity_fraction(view, 0)
    }
}

impl RewardSource for OddTokenFraction {
    fn name(&self) -> &str {
        "odd"
    }
    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        parity_fraction(view, 1)
    }
}

impl RewardSource for NegativeLength {
    fn name(&self) -> &str {
        "short"
    }
    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        let len = view.response_mask.to_kind(Kind::Double).sum_dim_intlist(
            [-1i64].as_slice(),
            false,
            Kind::Double,
        ); // [B]
        Ok(Vec::try_from((-len).to_device(Device::Cpu))?)
    }
}

/// A tiny random-init policy on the CPU: (base VarStore, adapter VarStore, model). The base
/// has [`LlamaConfig::tiny`]'s shapes (2 layers, D = 64, the real 49,152-token vocabulary).
pub fn tiny_policy(adapter: &SvdLoraConfig, seed: i64) -> (nn::VarStore, nn::VarStore, Llama) {
    tiny_policy_with(&LlamaConfig::tiny(), adapter, seed)
}

/// [`LlamaConfig::tiny`] with a 16-token vocabulary: a random-init policy then puts visible
/// probability on every token, so token-level toy rewards give a learning signal from step 1
/// (with 49,152 tokens each one starts near 2·10⁻⁵).
pub fn toy_vocab_config() -> LlamaConfig {
    LlamaConfig { vocab_size: 16, ..LlamaConfig::tiny() }
}

/// A random-init policy of the given shape on the CPU: (base VarStore, adapter VarStore, model).
pub fn tiny_policy_with(
    config: &LlamaConfig,
    adapter: &SvdLoraConfig,
    seed: i64,
) -> (nn::VarStore, nn::VarStore, Llama) {
    let base_vs = nn::VarStore::new(Device::Cpu);
    let adapter_vs = nn::VarStore::new(Device::Cpu);
    // The adapter's U and V are drawn from libtorch's global generator while the model is
    // built; seed it first so the policy does not depend on what ran before.
    tch::manual_seed(seed);
    let model = Llama::new(&base_vs.root(), Some((&adapter_vs.root(), adapter)), config);
    init_random(&base_vs, seed);
    (base_vs, adapter_vs, model)
}
