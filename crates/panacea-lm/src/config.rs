//! The Llama-family architecture settings, read from a Hugging Face `config.json` or built from
//! GGUF metadata ([`crate::gguf`]). Unknown `config.json` keys are ignored on purpose: HF files
//! carry dozens of generation and tooling fields that do not change the network.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::LmError;

/// Architecture of a Llama-family decoder (Llama, SmolLM2, Qwen2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `llama` or `qwen2` (Qwen2 adds q/k/v biases).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// D: residual stream width.
    pub hidden_size: i64,
    /// Inner width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Number of decoder layers.
    pub num_hidden_layers: i64,
    /// Number of query heads.
    pub num_attention_heads: i64,
    /// Number of key/value heads (grouped-query attention); equals the query heads when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Per-head width; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// ε of every RMSNorm.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base θ.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// V: vocabulary size.
    pub vocab_size: i64,
    /// Longest sequence the positional encoding was trained for.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// Whether the LM head reuses the token embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections carry biases (Qwen2 always does).
    #[serde(default)]
    pub attention_bias: bool,
    /// Beginning-of-sequence token id, when the model has one.
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id (generation stops on it).
    #[serde(default)]
    pub eos_token_id: Option<i64>,
}

fn default_model_type() -> String {
    "llama".to_owned()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> i64 {
    2048
}

impl LlamaConfig {
    /// A tiny random-init configuration for tests: 2 layers, D = 64, 4 heads (2 KV heads),
    /// FFN 128, the real 49,152-token vocabulary, tied embeddings, SmolLM2's θ and ε.
    pub fn tiny() -> Self {
        Self {
            model_type: "llama".to_owned(),
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            vocab_size: 49_152,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| LmError::Format {
            path: path.to_owned(),
            offset: None,
            tensor: None,
            message: format!("config.json: {e}"),
        })?;
        cfg.validate().map_err(|message| LmError::Format {
            path: path.to_owned(),
            offset: None,
            tensor: None,
            message,
        })?;
        Ok(cfg)
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> i64 {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v projections carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Checks the sizes fit together; the message lists every problem.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("vocab_size", self.vocab_size),
            ("head_dim", self.head_dim()),
        ] {
            if v <= 0 {
                problems.push(format!("{name} = {v} must be positive"));
            }
        }
        if self.kv_heads() > 0 && self.num_attention_heads % self.kv_heads() != 0 {
            problems.push(format!(
                "num_attention_heads = {} is not a multiple of num_key_value_heads = {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
            problems.push(format!("head_dim = {} must be even for RoPE", self.head_dim()));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            problems.push(format!(
                "rms_norm_eps = {} and rope_theta = {} must be positive",
                self.rms_norm_eps, self.rope_theta
            ));
        }
        if !matches!(self.model_type.as_str(), "llama" | "qwen2") {
            problems.push(format!(
                "model_type = {:?} is not supported (supported: llama, qwen2)",
                self.model_type
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
