//! The Llama-family architecture settings, read from a Hugging Face `config.json` or built from
//! GGUF metadata ([`crate::gguf`]).
//!
//! `config.json` is read as transformers 4.x writes it (top-level `rope_theta`, `rope_scaling`)
//! and as 5.x writes it (`rope_parameters`, which holds θ and the scaling together). HF files
//! carry dozens of generation and tooling fields that do not change the network, so unknown
//! keys are ignored; but every key that *does* change the network is read, and a value the
//! model does not implement (a RoPE type, a sliding window in effect, logit soft-capping, MLP
//! biases, a non-SiLU activation, quantised weights, ...) is an error naming the key. A wrong
//! RoPE or attention pattern still produces fluent-looking text, so nothing is ignored silently.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::LmError;

/// The `model_type` values this crate loads. All share the Llama block (pre-norm RMSNorm,
/// rotate-half RoPE, grouped-query attention, SwiGLU); they differ in q/k/v biases (qwen2) and
/// per-head q/k RMSNorm (qwen3).
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// RoPE frequency scaling (HF `rope_scaling` / `rope_parameters` with a non-default
/// `rope_type`). Serialised as HF writes it: `{"rope_type": "llama3", "factor": 32.0, ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Position interpolation: every inverse frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's scaling: low frequencies (wavelength above
    /// `original_max_position_embeddings / low_freq_factor`) divided by `factor`, high ones
    /// (wavelength below `.. / high_freq_factor`) kept, a linear blend in between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Where the low band begins (as a divisor of the original context).
        low_freq_factor: f64,
        /// Where the high band begins (as a divisor of the original context).
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

impl RopeScaling {
    /// Applies the scaling to the default inverse frequencies θ^(-2i/hd), in f64 (HF
    /// `_compute_llama3_parameters` / `_compute_linear_scaling_rope_parameters`).
    pub fn apply(&self, inv_freq: &mut [f64]) {
        match *self {
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old,
            } => {
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = std::f64::consts::TAU / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
    }
}

/// Architecture of a Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// One of [`SUPPORTED_MODEL_TYPES`].
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
    /// RoPE frequency scaling, when the model uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
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
    /// End-of-sequence token id (the first one, where config.json lists several; the whole
    /// list comes from generation_config.json, see [`crate::load::Pretrained::from_dir`]).
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
            rope_scaling: None,
            vocab_size: 49_152,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    /// Reads and validates a Hugging Face `config.json` (see the module docs for what is read
    /// and what is refused).
    pub fn from_json_file(path: &Path) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        Self::from_hf_json(&text).map_err(|message| LmError::Format {
            path: path.to_owned(),
            offset: None,
            tensor: None,
            message,
        })
    }

    /// Parses and validates the text of a Hugging Face `config.json`; the message names every
    /// offending key.
    pub fn from_hf_json(text: &str) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("config.json is not JSON: {e}"))?;
        let obj = doc.as_object().ok_or("config.json is not a JSON object")?;
        let mut problems = Vec::new();
        let cfg = parse_hf(obj, &mut problems);
        if let Some(cfg) = &cfg {
            if let Err(p) = cfg.validate() {
                problems.push(p);
            }
        }
        match cfg {
            Some(cfg) if problems.is_empty() => Ok(cfg),
            _ => Err(problems.join("; ")),
        }
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

    /// Whether queries and keys get a per-head RMSNorm before RoPE (Qwen3's `q_norm`/`k_norm`).
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// RoPE inverse frequencies θ^(-2i/hd) with the scaling applied, [hd/2], in f64; `None`
    /// without scaling (the forward then computes the plain ones on the device).
    pub fn scaled_inv_freq(&self) -> Option<Vec<f64>> {
        let scaling = self.rope_scaling.as_ref()?;
        let hd = self.head_dim();
        let mut f: Vec<f64> =
            (0..hd / 2).map(|i| self.rope_theta.powf(-(2 * i) as f64 / hd as f64)).collect();
        scaling.apply(&mut f);
        Some(f)
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
        if !SUPPORTED_MODEL_TYPES.contains(&self.model_type.as_str()) {
            problems.push(format!(
                "model_type = {:?} is not supported (supported: {})",
                self.model_type,
                SUPPORTED_MODEL_TYPES.join(", ")
            ));
        }
        match &self.rope_scaling {
            Some(RopeScaling::Linear { factor }) if factor.is_nan() || *factor <= 0.0 => {
                problems.push(format!("rope_scaling.factor = {factor} must be positive"))
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                if !(*factor > 0.0
                    && *low_freq_factor > 0.0
                    && *original_max_position_embeddings > 0.0)
                {
                    problems.push(format!("rope_scaling: factor = {factor}, low_freq_factor = {low_freq_factor} and original_max_position_embeddings = {original_max_position_embeddings} must be positive"));
                }
                if high_freq_factor.is_nan() || high_freq_factor <= low_freq_factor {
                    problems.push(format!("rope_scaling: high_freq_factor = {high_freq_factor} must exceed low_freq_factor = {low_freq_factor}"));
                }
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Reads the keys of an HF config object; pushes one message per problem. `None` when a
/// required size is missing.
fn parse_hf(obj: &Map<String, Value>, problems: &mut Vec<String>) -> Option<LlamaConfig> {
    let model_type = match obj.get("model_type") {
        None | Some(Value::Null) => default_model_type(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            problems.push(format!("model_type = {v} is not a string"));
            return None;
        }
    };
    if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
        // Nothing else is meaningful for an unknown family.
        problems.push(format!(
            "model_type = {model_type:?} is not supported (supported: {})",
            SUPPORTED_MODEL_TYPES.join(", ")
        ));
        return None;
    }
    let int = |key: &str, problems: &mut Vec<String>| {
        typed(obj, key, "an integer", Value::as_i64, problems)
    };
    let float = |key: &str, problems: &mut Vec<String>| {
        typed(obj, key, "a number", Value::as_f64, problems)
    };
    let flag = |key: &str, problems: &mut Vec<String>| {
        typed(obj, key, "true or false", Value::as_bool, problems)
    };
    let hidden_size = int("hidden_size", problems);
    let intermediate_size = int("intermediate_size", problems);
    let num_hidden_layers = int("num_hidden_layers", problems);
    let num_attention_heads = int("num_attention_heads", problems);
    let vocab_size = int("vocab_size", problems);
    let num_key_value_heads = int("num_key_value_heads", problems);
    let head_dim = int("head_dim", problems);
    let max_position_embeddings =
        int("max_position_embeddings", problems).unwrap_or_else(default_max_pos);
    let bos_token_id = int("bos_token_id", problems);
    let eos_token_id = match token_ids(obj.get("eos_token_id")) {
        Ok(ids) => ids.first().copied(),
        Err(v) => {
            problems.push(format!("eos_token_id = {v} is neither an id nor a list of ids"));
            None
        }
    };
    let rms_norm_eps = float("rms_norm_eps", problems).unwrap_or_else(default_eps);
    let top_theta = float("rope_theta", problems);
    let tie_word_embeddings = flag("tie_word_embeddings", problems).unwrap_or(false);
    let attention_bias = flag("attention_bias", problems).unwrap_or(false);
    let mlp_bias = flag("mlp_bias", problems).unwrap_or(false);
    let use_sliding_window = flag("use_sliding_window", problems);
    let rope_interleaved = flag("rope_interleaved", problems).unwrap_or(false);

    // Settings that change the network and are not implemented: refuse, naming the key.
    if mlp_bias {
        problems.push(
            "mlp_bias = true is not supported (the MLP projections have no biases here)".into(),
        );
    }
    if rope_interleaved {
        problems.push("rope_interleaved = true is not supported (rotate-half RoPE only)".into());
    }
    if model_type == "mistral" && attention_bias {
        problems.push("attention_bias = true: Mistral's attention has no biases".into());
    }
    match obj.get("hidden_act") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "silu" || s == "swish" => {}
        Some(v) => {
            problems.push(format!("hidden_act = {v} is not supported (SwiGLU with silu only)"))
        }
    }
    for key in ["attn_logit_softcapping", "final_logit_softcapping", "quantization_config"] {
        if obj.get(key).is_some_and(|v| !v.is_null()) {
            problems.push(format!("{key} = {} is not supported", obj[key]));
        }
    }
    if let Some(v) = obj.get("partial_rotary_factor").filter(|v| !v.is_null()) {
        if v.as_f64() != Some(1.0) {
            problems.push(format!(
                "partial_rotary_factor = {v} is not supported (RoPE on the whole head only)"
            ));
        }
    }
    // A sliding window restricts attention once a sequence is longer than the window: refuse
    // one that can be in effect. Mistral applies its `sliding_window` whenever it is set;
    // Qwen2/Qwen3 only with `use_sliding_window: true`.
    let window = int("sliding_window", problems);
    let window_on = use_sliding_window.unwrap_or(model_type == "mistral");
    if let Some(w) = window.filter(|&w| window_on && w < max_position_embeddings) {
        problems.push(format!(
            "sliding_window = {w} (< max_position_embeddings = {max_position_embeddings}) is not \
             supported: attention here is full causal (hint: a model whose window is never \
             reached can set it to null)"
        ));
    }
    if let Some(types) = obj.get("layer_types").filter(|v| !v.is_null()) {
        let all_full = types
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_str() == Some("full_attention")));
        if !all_full {
            problems.push(format!(
                "layer_types = {types} is not supported: only \"full_attention\" layers are implemented"
            ));
        }
    }

    // RoPE: 4.x writes `rope_theta` and `rope_scaling` at the top; 5.x one `rope_parameters`
    // object holding θ and the scaling (older 5.x previews: per layer type, which we refuse).
    let mut rope_theta = top_theta;
    let mut rope_scaling = None;
    for key in ["rope_scaling", "rope_parameters"] {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else { continue };
        let Some(params) = v.as_object() else {
            problems.push(format!("{key} = {v} is not an object"));
            continue;
        };
        if let Some(theta) = params.get("rope_theta").filter(|v| !v.is_null()) {
            match (theta.as_f64(), rope_theta) {
                (None, _) => problems.push(format!("{key}.rope_theta = {theta} is not a number")),
                (Some(t), Some(prev)) if t != prev => problems.push(format!(
                    "{key}.rope_theta = {t} contradicts rope_theta = {prev} given elsewhere"
                )),
                (Some(t), _) => rope_theta = Some(t),
            }
        }
        match parse_rope(key, params) {
            Ok(Some(s)) => {
                if rope_scaling.as_ref().is_some_and(|prev| prev != &s) {
                    problems.push(format!("{key} contradicts the RoPE scaling given elsewhere"));
                }
                rope_scaling = Some(s);
            }
            Ok(None) => {}
            Err(p) => problems.push(p),
        }
    }
    let rope_theta = rope_theta.unwrap_or_else(default_theta);
    let mut required = |key: &str, v: Option<i64>| {
        if v.is_none() && obj.get(key).is_none_or(Value::is_null) {
            problems.push(format!("{key} is missing"));
        }
        v
    };
    Some(LlamaConfig {
        hidden_size: required("hidden_size", hidden_size)?,
        intermediate_size: required("intermediate_size", intermediate_size)?,
        num_hidden_layers: required("num_hidden_layers", num_hidden_layers)?,
        num_attention_heads: required("num_attention_heads", num_attention_heads)?,
        vocab_size: required("vocab_size", vocab_size)?,
        model_type,
        num_key_value_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling,
        max_position_embeddings,
        tie_word_embeddings,
        attention_bias,
        bos_token_id,
        eos_token_id,
    })
}

/// `obj[key]` read by `get`; None when absent or null; a message when of another type.
fn typed<T>(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
    get: impl Fn(&Value) -> Option<T>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let v = obj.get(key).filter(|v| !v.is_null())?;
    let t = get(v);
    if t.is_none() {
        problems.push(format!("{key} = {v} is not {what}"));
    }
    t
}

/// One RoPE parameter object (`rope_scaling` or `rope_parameters`): its type (`rope_type`, or
/// the older `type`) and the parameters that type uses. Keys that no implemented type reads
/// are refused, so a scaling parameter is never dropped.
fn parse_rope(key: &str, params: &Map<String, Value>) -> Result<Option<RopeScaling>, String> {
    let ty = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |name: &str| -> Result<f64, String> {
        params
            .get(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{key}.{name} is missing or not a number (rope_type {ty:?})"))
    };
    let (scaling, used): (Option<RopeScaling>, &[&str]) = match ty {
        "default" => (None, &[]),
        "linear" => (Some(RopeScaling::Linear { factor: num("factor")? }), &["factor"]),
        "llama3" => (
            Some(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            }),
            &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        ),
        other => {
            return Err(format!(
                "{key}.rope_type = {other:?} is not supported (supported: default, linear, llama3)"
            ))
        }
    };
    for (name, v) in params {
        let known = matches!(name.as_str(), "rope_type" | "type" | "rope_theta")
            || used.contains(&name.as_str());
        if !known && !v.is_null() {
            return Err(format!(
                "{key}.{name} = {v} is not supported with rope_type {ty:?} (it would be ignored)"
            ));
        }
    }
    Ok(scaling)
}

/// `eos_token_id` as HF writes it: absent/null, one id, or a list of ids. Err holds the value.
pub fn token_ids(v: Option<&Value>) -> Result<Vec<i64>, Value> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Number(n)) => {
            n.as_i64().map(|i| vec![i]).ok_or_else(|| Value::Number(n.clone()))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(Value::as_i64)
            .collect::<Option<_>>()
            .ok_or_else(|| Value::Array(a.clone())),
        Some(other) => Err(other.clone()),
    }
}
