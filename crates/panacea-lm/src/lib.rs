//! panacea-lm: the causal language model that Panacea (arXiv 2402.02030) adapts.
//!
//! - [`llama`]: the Llama-family decoder whose projections are panacea-core SVD-LoRA layers.
//! - [`config`]: its architecture settings (HF `config.json` or GGUF metadata).
//! - [`gguf`], [`dequant`]: the bounds-checked GGUF v3 reader and ggml dequantisation.
//! - [`safetensors`]: reading and writing HF safetensors.
//! - [`load`]: resolving a path or short name (`smollm2-135m`) and loading it.
//! - [`random_model`], [`tiny_random`]: random-initialised models, of any config.json's shape
//!   (`random:PATH`) or the tiny test one (`tiny-random`).
//! - [`generate`]: batched KV-cache generation and sequence likelihoods.
//! - [`batch_decode`]: continuous batching, rows joining and leaving a decode batch between steps.
//! - [`tokenizer`], [`chat`]: the tokenizer (from tokenizer.json or GGUF metadata), the model's
//!   own Jinja chat template and the ChatML fallback.
//! - [`error`]: the crate's typed error.
//! - [`bench_prompts`]: the prompts every decode benchmark uses.
//! - [`static_decode`], [`graph_step`]: decoding and training steps at fixed shapes, captured
//!   as CUDA graphs where available (eager elsewhere).
//!
//! Every forward takes an [`Adapter`] argument: `Adapter::Off` is the frozen base (the
//! reference model), `Adapter::On { pref }` the preference-conditioned policy.
//!
//! ```no_run
//! use panacea_lm::{generate, load_model, Adapter, GenerateConfig};
//!
//! # fn main() -> Result<(), panacea_lm::LmError> {
//! // A short name from the model cache, a GGUF file, or a Hugging Face model folder.
//! let m = load_model("smollm2-135m", tch::Device::Cpu, tch::Kind::Float)?;
//! let prompt = m.chat_template.user_prompt("What is the capital of France?")?;
//! let cfg = GenerateConfig::greedy(&m.tokenizer, 32);
//! let mut rng = rand::rngs::mock::StepRng::new(0, 0); // greedy decoding draws nothing
//! let out = generate(&m.model, &m.tokenizer, &[prompt], Adapter::Off, &cfg, &mut rng)?;
//! println!("{}", out.texts[0]);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod batch_decode;
pub mod bench_prompts;
pub mod chat;
pub mod config;
pub mod dequant;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod graph_step;
pub mod llama;
pub mod load;
pub mod memory;
pub mod random_model;
pub mod safetensors;
pub mod static_decode;
pub mod tiny_random;
pub mod tokenizer;

pub use batch_decode::SlotBatch;
pub use chat::{ChatTemplate, JinjaChatTemplate, Message, PromptTemplate, Role, TemplateClock};
pub use config::{LlamaConfig, RopeScaling};
pub use error::LmError;
pub use generate::{
    choose_tokens, generate, generate_ids, generate_ids_per_row, generate_per_row, GenerateConfig,
    Generation, Sampling,
};
pub use graph_step::{bucket_len, GraphedStep, StepRun};
pub use llama::{init_random, Checkpointed, KvCache, Llama};
pub use load::{load_model, resolve_model, LoadedModel, Pretrained};
pub use memory::{memory_plan, MemoryPlan, MemoryPlanInput};
pub use panacea_core::adapter::Adapter;
pub use random_model::{
    random_llama, random_model_config, random_model_of_config, RANDOM_MODEL_PREFIX,
    RANDOM_MODEL_SEED,
};
pub use static_decode::StaticDecoder;
pub use tiny_random::{tiny_random_model, TINY_RANDOM};
pub use tokenizer::Tokenizer;

use tch::Tensor;

/// Every causal LM of the project (the real Llama, and tiny random-init ones for tests).
pub trait CausalLm {
    /// Final hidden states after the last norm: ids [B, T] (i64), attention_mask [B, T]
    /// (1 = token, 0 = left padding) → [B, T, D].
    fn hidden_states(&self, ids: &Tensor, attention_mask: &Tensor, adapter: Adapter<'_>) -> Tensor;

    /// [`CausalLm::hidden_states`] with activation checkpointing per decoder layer
    /// (`train.activation_checkpointing` of every trainer): [`Checkpointed::hidden`] [B, T, D]
    /// takes part in the caller's graph from the last layer's output on, and
    /// [`Checkpointed::backward`], run after the caller's backward, recomputes the layers and
    /// completes the gradient ([`Llama::hidden_states_checkpointed`]).
    fn hidden_states_checkpointed(
        &self,
        ids: &Tensor,
        attention_mask: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_>;

    /// LM head: [.., D] → logits [.., V] (f32).
    fn lm_head(&self, hidden: &Tensor) -> Tensor;

    /// ids/mask → logits [B, T, V] (f32).
    fn logits(&self, ids: &Tensor, attention_mask: &Tensor, adapter: Adapter<'_>) -> Tensor {
        self.lm_head(&self.hidden_states(ids, attention_mask, adapter))
    }

    /// D.
    fn hidden_size(&self) -> i64;

    /// V.
    fn vocab_size(&self) -> i64;

    /// Where the model's weights live.
    fn device(&self) -> tch::Device;
}
