//! Random-initialised models of any architecture a Hugging Face `config.json` describes, for
//! measuring memory and speed at real sizes without the weights (an 8B checkpoint is 16 GB to
//! fetch; its random twin is made on the GPU in a second). The model spec `random:PATH`, PATH
//! a config.json (e.g. `configs/shapes/llama-3.1-8b.json`), selects one wherever
//! [`crate::load_model`] resolves a model.
//!
//! The base is built directly in the target dtype on the target device: never an f32 copy
//! first (32 GB for an 8B model), never a host-side draw (billions of values through one CPU
//! core), and nothing is written to disk.

use std::path::Path;

use tch::{nn, Kind};

use crate::{
    resolve_model, ChatTemplate, Llama, LlamaConfig, LmError, LoadedModel, PromptTemplate,
    Tokenizer,
};

/// The prefix of a model spec naming a config.json to build a random model of.
pub const RANDOM_MODEL_PREFIX: &str = "random:";

/// The seed of the weights a `random:PATH` spec loads: fixed, so that every command (training,
/// evaluation, serving) sees the same base for the same config on the same device type, as
/// it would with a real model folder.
pub const RANDOM_MODEL_SEED: i64 = 0;

/// The config.json path of a `random:PATH` model spec; `None` for any other spec.
pub fn random_model_config(spec: &str) -> Option<&Path> {
    spec.strip_prefix(RANDOM_MODEL_PREFIX).map(Path::new)
}

/// A frozen Llama-family base of architecture `config` on `device`, every weight made in
/// `kind` (f32, bf16 or f16) and drawn there with libtorch's generator seeded by `seed`:
/// norms 1, every other weight (biases included) N(0, 0.02²), as [`crate::init_random`]
/// draws them. The same seed gives the same weights on the same device type; a CPU and a
/// GPU draw different ones. Seeding resets libtorch's process-wide generator (as
/// `tch::manual_seed` does), so draws made after this call (an adapter's init) are seeded too.
///
/// The projections are fused as [`crate::load_model`] fuses them, so an adapter view
/// ([`Llama::with_adapter`]) runs the same kernels and holds the same buffers as on a loaded
/// model. Like [`Llama::new`], it panics when the device cannot hold the weights.
pub fn random_llama(
    config: &LlamaConfig,
    device: tch::Device,
    kind: Kind,
    seed: i64,
) -> Result<(nn::VarStore, Llama), LmError> {
    if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
        return Err(LmError::Invalid(format!("model dtype {kind:?} (f32, bf16 or f16)")));
    }
    config.validate().map_err(LmError::Invalid)?;
    let mut base_vs = nn::VarStore::new(device);
    // On an empty store this only sets the kind every variable made afterwards gets.
    base_vs.set_kind(kind);
    let mut model = Llama::new(&base_vs.root(), None, config);
    tch::manual_seed(seed);
    let vars = base_vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    // Sorted, so that the draw order, and with it the weights, does not depend on HashMap
    // iteration order.
    names.sort();
    tch::no_grad(|| -> Result<(), LmError> {
        for name in names {
            if !name.ends_with("norm.weight") {
                let _ = vars[name].shallow_clone().f_normal_(0.0, 0.02)?;
            }
        }
        Ok(())
    })?;
    base_vs.freeze();
    model.fuse_projections();
    Ok((base_vs, model))
}

/// [`random_llama`] of the architecture in the Hugging Face `config.json` at `config_json`,
/// with the SmolLM2 tokenizer and its ChatML template (as [`crate::tiny_random_model`]), so
/// that every command can run on it. Needs the SmolLM2 tokenizer in the model cache and a
/// vocabulary at least as large as the tokenizer's 49,152 ids.
pub fn random_model_of_config(
    config_json: &Path,
    device: tch::Device,
    kind: Kind,
    seed: i64,
) -> Result<LoadedModel, LmError> {
    let config = LlamaConfig::from_json_file(config_json)?;
    let spec = format!("{RANDOM_MODEL_PREFIX}{}", config_json.display());
    let dir = resolve_model("smollm2-135m").map_err(|e| LmError::ModelNotFound {
        name: spec.clone(),
        message: format!("it uses the SmolLM2 tokenizer, which is missing: {e}"),
    })?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2)?;
    if tokenizer.vocab_size() as i64 > config.vocab_size {
        return Err(LmError::Format {
            path: config_json.to_owned(),
            offset: None,
            tensor: None,
            message: format!(
                "vocab_size = {} is smaller than the {} ids of the SmolLM2 tokenizer that \
                 random models use; hint: a vocabulary of at least {} tokens",
                config.vocab_size,
                tokenizer.vocab_size(),
                tokenizer.vocab_size()
            ),
        });
    }
    let (base_vs, model) = random_llama(&config, device, kind, seed)?;
    let chat_template = PromptTemplate::ChatMlFallback(ChatTemplate::default());
    Ok(LoadedModel { base_vs, model, tokenizer, chat_template })
}
