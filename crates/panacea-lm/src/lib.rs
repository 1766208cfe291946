//! panacea-lm: the causal language model that Panacea (arXiv 2402.02030) adapts.
//!
//! - [`llama`]: the Llama-family decoder whose projections are panacea-core SVD-LoRA layers.
//! - [`config`]: its architecture settings (HF `config.json` or GGUF metadata).
//! - [`error`]: the crate's typed error.
//!
//! Every forward takes an [`Adapter`] argument: `Adapter::Off` is the frozen base (the
//! reference model), `Adapter::On { pref }` the preference-conditioned policy.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod error;
pub mod llama;

pub use config::LlamaConfig;
pub use error::LmError;
pub use llama::{init_random, KvCache, Llama};
pub use panacea_core::adapter::Adapter;

use tch::Tensor;

/// Every causal LM of the project (the real Llama, and tiny random-init ones for tests).
pub trait CausalLm {
    /// Final hidden states after the last norm: ids [B, T] (i64), attention_mask [B, T]
    /// (1 = token, 0 = left padding) → [B, T, D].
    fn hidden_states(&self, ids: &Tensor, attention_mask: &Tensor, adapter: Adapter<'_>) -> Tensor;

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
