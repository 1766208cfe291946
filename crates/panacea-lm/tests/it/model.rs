//! Structural tests of the Llama forward on a tiny random-init model.

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{init_random, Adapter, CausalLm, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

fn tiny(seed: i64) -> (nn::VarStore, Llama) {
    panacea_core::device::init_torch();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), None, &LlamaConfig::tiny());
    init_random(&vs, seed);
    (vs, model)
}

#[test]
fn logits_have_the_expected_shape_and_are_finite() {
    let (_vs, model) = tiny(0);
    let ids = Tensor::from_slice(&[5i64, 6, 7, 8, 9, 10]).view([2, 3]);
    let mask = Tensor::ones([2, 3], (Kind::Int64, Device::Cpu));
    let logits = model.logits(&ids, &mask, Adapter::Off);
    assert_eq!(logits.size(), [2, 3, 49_152]);
    assert_eq!(logits.kind(), Kind::Float);
    assert!(bool::try_from(logits.isfinite().all()).unwrap_or(false));
}

#[test]
fn second_adapter_view_shares_the_base_and_starts_equal() {
    let (vs, model) = tiny(1);
    let avs = nn::VarStore::new(Device::Cpu);
    let cfg = SvdLoraConfig::new(2);
    let view = model.with_adapter(Some((&avs.root(), &cfg)));
    // Same storage: no second copy of the weights.
    assert_eq!(model.embed_tokens.data_ptr(), view.embed_tokens.data_ptr());
    assert!(vs.variables().len() > 10);
    assert!(avs.variables().keys().any(|k| k.ends_with("q_proj.svd_lora_u")));
    let ids = Tensor::from_slice(&[11i64, 12, 13, 14]).view([1, 4]);
    let mask = Tensor::ones([1, 4], (Kind::Int64, Device::Cpu));
    let pref = Tensor::from_slice(&[0.3f32, 0.7]);
    let a = model.logits(&ids, &mask, Adapter::Off);
    let b = view.logits(&ids, &mask, Adapter::On { pref: &pref });
    // σ and s start at 0, so the adapted model equals the base at init.
    let diff = f64::try_from((a - b).abs().max()).unwrap_or(f64::NAN);
    assert!(diff < 1e-6, "max diff {diff}");
}
