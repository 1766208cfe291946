//! `model: tiny-random`: the quick base of tests and smoke runs — a 2-layer D = 64 Llama
//! ([`LlamaConfig::tiny`]) initialised from a seed, with the real SmolLM2 tokenizer (so prompts,
//! chat templates and scorers behave as with the real model, only faster).

use tch::Kind;

use crate::{
    init_random, resolve_model, ChatTemplate, Llama, LlamaConfig, LmError, LoadedModel,
    PromptTemplate, Tokenizer,
};

/// The model name that selects it wherever a model name is accepted.
pub const TINY_RANDOM: &str = "tiny-random";

/// The frozen tiny base on `device`, initialised from `seed`, its weights in `kind` (f32 or
/// bf16; converted here, before any adapter or score model takes views of the variables).
/// Needs the SmolLM2 tokenizer in the model cache (`cargo xtask fetch-model smollm2-135m`).
pub fn tiny_random_model(
    device: tch::Device,
    seed: i64,
    kind: Kind,
) -> Result<LoadedModel, LmError> {
    let dir = resolve_model("smollm2-135m").map_err(|e| LmError::ModelNotFound {
        name: TINY_RANDOM.to_owned(),
        message: format!("it uses the SmolLM2 tokenizer, which is missing: {e}"),
    })?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2)?;
    let mut base_vs = tch::nn::VarStore::new(device);
    let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
    init_random(&base_vs, seed);
    if kind == Kind::BFloat16 {
        base_vs.bfloat16();
    }
    base_vs.freeze();
    // The SmolLM2 tokenizer without its folder's template: ChatML, as SmolLM2's own template is.
    let chat_template = PromptTemplate::ChatMlFallback(ChatTemplate::default());
    Ok(LoadedModel { base_vs, model, tokenizer, chat_template })
}
