//! `model: tiny-random`: the quick base of the tests' training runs — a 2-layer D = 64 Llama
//! ([`LlamaConfig::tiny`]) initialised from a seed, with the real SmolLM2 tokenizer.

use anyhow::{Context, Result};
use panacea_core::device::DType;
use panacea_lm::{
    init_random, ChatTemplate, Llama, LlamaConfig, LoadedModel, PromptTemplate, Tokenizer,
};

/// The model name that selects it in the trainers' configs.
pub(crate) const NAME: &str = "tiny-random";

/// The frozen tiny base on `device`, initialised from `seed`, its weights in `dtype` (converted
/// here, before any score model or adapter view takes the variables).
pub(crate) fn base(device: tch::Device, seed: i64, dtype: DType) -> Result<LoadedModel> {
    let dir = panacea_lm::resolve_model("smollm2-135m")
        .context("tiny-random uses the SmolLM2 tokenizer")?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2)?;
    let mut base_vs = tch::nn::VarStore::new(device);
    let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
    init_random(&base_vs, seed);
    if dtype == DType::Bf16 {
        base_vs.bfloat16();
    }
    base_vs.freeze();
    let chat_template = PromptTemplate::ChatMlFallback(ChatTemplate::default());
    Ok(LoadedModel { base_vs, model, tokenizer, chat_template })
}
