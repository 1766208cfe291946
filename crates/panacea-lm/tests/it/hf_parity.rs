//! Logits parity with Hugging Face transformers, one tiny random-initialised model folder per
//! family (tests/fixtures/models/, written by scripts/make_model_fixtures.py with
//! `save_pretrained`; the reference logits are transformers' own f32 forward):
//!
//! - llama3: `rope_scaling` of type llama3, tied head, three EOS ids, transformers-4.x config;
//! - mistral: untied head, bf16 weights in two shards with an index;
//! - qwen2: q/k/v biases, θ = 1e6 given only under transformers-5.x `rope_parameters`;
//! - qwen3: per-head q/k RMSNorm, head_dim ≠ hidden / heads, tied head.
//!
//! Each test loads the folder as a user would (`Pretrained::load`), checks the tokenizer gives
//! the script's ids, decodes the same greedy tokens from a left-padded batch through the KV
//! cache, and compares the logits of the whole batch (prompt and generated tokens, real
//! positions only) with transformers': max |Δ| ≤ 1e-4.

use std::path::PathBuf;

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{
    generate_ids, Adapter, CausalLm, GenerateConfig, Llama, LlamaConfig, Pretrained, Sampling,
};
use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};

const BOUND: f64 = 1e-4;

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(family)
}

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<String>,
    prompt_ids: Vec<Vec<i64>>,
    prompt_len: i64,
    new_tokens: i64,
    ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    eos_ids: Vec<i64>,
}

struct Fixture {
    pre: Pretrained,
    reference: Reference,
    /// transformers' logits [B, T, V].
    logits: Tensor,
}

fn load(family: &str) -> Fixture {
    crate::common::setup();
    let dir = fixture(family);
    let pre = Pretrained::load(dir.to_str().expect("utf-8 path")).expect("fixture folder loads");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let reference: Reference = serde_json::from_str(&text).expect("reference.json parses");
    let tensors = panacea_lm::safetensors::read(&dir.join("reference.safetensors"))
        .expect("reference.safetensors");
    let logits = tensors.into_iter().find(|(n, _)| n == "logits").expect("logits").1;
    Fixture { pre, reference, logits }
}

fn rows(v: &[Vec<i64>]) -> Tensor {
    let flat: Vec<i64> = v.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([v.len() as i64, v[0].len() as i64])
}

/// max |ours − transformers'| over the real (unmasked) positions of the reference batch.
fn max_logit_diff(model: &Llama, f: &Fixture) -> f64 {
    let ids = rows(&f.reference.ids);
    let mask = rows(&f.reference.attention_mask);
    let ours = tch::no_grad(|| model.logits(&ids, &mask, Adapter::Off)); // [B, T, V]
    assert_eq!(ours.size(), f.logits.size());
    let real = mask.to_kind(Kind::Float).unsqueeze(-1); // [B, T, 1]
    f64::try_from(((ours - &f.logits).abs() * real).max()).expect("scalar")
}

/// Everything one family's test checks; returns the max |Δlogit| for the report.
fn check_family(family: &str) -> f64 {
    let f = load(family);
    // The tokenizer.json the script trained gives the same ids here.
    for (text, want) in f.reference.prompts.iter().zip(&f.reference.prompt_ids) {
        assert_eq!(&f.pre.tokenizer.encode(text).expect("encode"), want, "{family}: {text:?}");
    }
    // Generation stops on every id generation_config.json lists.
    assert_eq!(f.pre.tokenizer.eos_ids, f.reference.eos_ids, "{family}: eos ids");
    assert!(!f.pre.chat_template.is_fallback(), "{family}: the folder's own template is used");

    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = f.pre.build(&mut vs, None, Kind::Float).expect("build");
    let diff = max_logit_diff(&model, &f);
    assert!(diff <= BOUND, "{family}: max |Δlogit| = {diff:e} > {BOUND:e}");

    // Greedy decoding through the KV cache from the left-padded prompts picks transformers'
    // tokens (EOS disabled, as in the script).
    let b = f.reference.ids.len();
    let p = f.reference.prompt_len as usize;
    let prompts: Vec<Vec<i64>> = f.reference.prompt_ids.clone();
    let cfg = GenerateConfig {
        max_new_tokens: f.reference.new_tokens,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id: f.pre.tokenizer.pad_id,
    };
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    let g = generate_ids(&model, &prompts, Adapter::Off, &cfg, &mut rng).expect("generate");
    let got: Vec<i64> = Vec::try_from(g.response_ids.reshape([-1])).expect("ids");
    let want: Vec<i64> = f.reference.ids.iter().flat_map(|r| r[p..].to_vec()).collect();
    assert_eq!(got, want, "{family}: greedy tokens of the {b} rows");
    eprintln!("{family}: max |Δlogit| vs transformers = {diff:.3e}");
    diff
}

#[test]
fn llama3_matches_transformers() {
    check_family("llama3");
}

#[test]
fn mistral_bf16_sharded_matches_transformers() {
    check_family("mistral");
    let f = load("mistral");
    assert!(f.pre.tensors.iter().all(|(_, t)| t.kind() == Kind::BFloat16), "bf16 on disk");
}

#[test]
fn qwen2_transformers5_config_matches_transformers() {
    check_family("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_family("qwen3");
}

/// The parity tests can fail: the same weights with the RoPE setting dropped (the bug of a
/// loader that ignores `rope_parameters` or `rope_scaling`) miss by far more than the bound.
#[test]
fn ignoring_the_rope_settings_breaks_parity() {
    for (family, drop) in [
        ("qwen2", &(|c: &mut LlamaConfig| c.rope_theta = 10_000.0) as &dyn Fn(&mut LlamaConfig)),
        ("llama3", &|c: &mut LlamaConfig| c.rope_scaling = None),
    ] {
        let mut f = load(family);
        drop(&mut f.pre.config);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let model = f.pre.build(&mut vs, None, Kind::Float).expect("build");
        let diff = max_logit_diff(&model, &f);
        assert!(diff > 100.0 * BOUND, "{family}: without its RoPE setting Δ = {diff:e}");
    }
}

/// Biases and q/k norms work on the adapter path too: a fresh SVD-LoRA adapter (σ = 0, so
/// W = W0) on every linear, under `Adapter::On`, gives the fused adapter-free logits.
#[test]
fn adapter_path_keeps_biases_and_qk_norms() {
    for family in ["qwen2", "qwen3"] {
        let f = load(family);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let adapter_vs = nn::VarStore::new(Device::Cpu);
        let acfg = SvdLoraConfig::new(2);
        let model =
            f.pre.build(&mut vs, Some((&adapter_vs.root(), &acfg)), Kind::Float).expect("build");
        assert!(model.linears().all(|l| l.lora.is_some()), "{family}: every linear adapted");
        let pref = Tensor::from_slice(&[0.3f32, 0.7]);
        let ids = rows(&f.reference.ids);
        let mask = rows(&f.reference.attention_mask);
        let on = tch::no_grad(|| model.logits(&ids, &mask, Adapter::On { pref: &pref }));
        let real = mask.to_kind(Kind::Float).unsqueeze(-1);
        let diff = f64::try_from(((on - &f.logits).abs() * real).max()).expect("scalar");
        assert!(diff <= BOUND, "{family}: adapter path max |Δlogit| = {diff:e}");
    }
}
