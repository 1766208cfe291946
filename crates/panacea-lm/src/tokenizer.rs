//! The tokenizer: a thin wrapper over Hugging Face `tokenizers` (pure-Rust regex backend), loaded
//! from a tokenizer.json or rebuilt from GGUF metadata (docs/models.md, §1.7: BPE vocab and merges,
//! CONTROL tokens as special added tokens, the pre-tokenizer chosen by `tokenizer.ggml.pre`,
//! ByteLevel post-processor and decoder).

use std::path::Path;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::error::LmError;
use crate::gguf::{GgufHeader, GgufValue};

/// The Qwen2 pre-tokenizer regex (llama.cpp `src/llama-vocab.cpp`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Llama-3 regex: Qwen2's with `\p{N}{1,3}`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// Builds the tokenizer.json text for a GGUF file's `tokenizer.ggml.*` metadata (BPE only).
pub fn tokenizer_json_from_gguf(header: &GgufHeader) -> Result<String, LmError> {
    let fmt = |message: String| LmError::Format {
        path: header.path.clone(),
        offset: None,
        tensor: None,
        message,
    };
    let model = header.get("tokenizer.ggml.model")?.as_str().unwrap_or_default();
    if model != "gpt2" {
        return Err(fmt(format!(
            "tokenizer.ggml.model {model:?} is not supported (supported: gpt2, i.e. byte-level BPE)"
        )));
    }
    let pre =
        header.metadata.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("gpt-2");
    let (normalizer, pre_tokenizer, ignore_merges) = match pre {
        "gpt-2" | "mpt" | "olmo" | "default" => (Value::Null, byte_level(true), false),
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            false,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
            false,
        ),
        "llama-bpe" | "llama3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
            true,
        ),
        other => {
            return Err(fmt(format!(
                "tokenizer.ggml.pre {other:?} is not supported (supported: gpt-2, mpt, olmo, \
                 smollm, starcoder, refact, codeshell, command-r, qwen2, deepseek-r1-qwen, \
                 llama-bpe, llama3)"
            )))
        }
    };
    let tokens = header
        .get("tokenizer.ggml.tokens")?
        .as_array()
        .ok_or_else(|| fmt("tokenizer.ggml.tokens is not an array".to_owned()))?;
    let types = header.metadata.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array);
    let merges = header
        .get("tokenizer.ggml.merges")?
        .as_array()
        .ok_or_else(|| fmt("tokenizer.ggml.merges is not an array".to_owned()))?;
    let mut vocab = Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let tok = tok.as_str().ok_or_else(|| fmt(format!("token {id} is not a string")))?;
        vocab.insert(tok.to_owned(), json!(id));
        let ty = types.and_then(|t| t.get(id)).and_then(GgufValue::as_i64).unwrap_or(1);
        // 3 = CONTROL → special; 4 = USER_DEFINED → normal added token.
        if ty == 3 || ty == 4 {
            added.push(json!({
                "id": id, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": ty == 4, "special": ty == 3,
            }));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.as_str().map(|s| json!(s)).ok_or_else(|| fmt(format!("merge {i} is not a string")))
        })
        .collect::<Result<_, _>>()?;
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
        },
    });
    serde_json::to_string(&doc).map_err(|e| LmError::Tokenizer(e.to_string()))
}

/// A text tokenizer with the model's special ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    json: String,
    /// The end-of-sequence id (the first of [`Tokenizer::eos_ids`]; appended after responses).
    pub eos_id: i64,
    /// Every id generation stops on: `eos_id` alone, or the list of the model's
    /// generation_config.json (see [`Tokenizer::with_eos_ids`]).
    pub eos_ids: Vec<i64>,
    /// Padding id (here the same as EOS: masks come from lengths, never from this id).
    pub pad_id: i64,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl Tokenizer {
    /// Parses tokenizer.json text. `eos_id` is the end-of-sequence id (SmolLM2: 2,
    /// `<|im_end|>`); padding uses the same id.
    pub fn from_json(json: &str, eos_id: i64) -> Result<Self, LmError> {
        let inner = tokenizers::Tokenizer::from_str(json)
            .map_err(|e| LmError::Tokenizer(format!("cannot parse tokenizer.json: {e}")))?;
        let n = inner.get_vocab_size(true) as i64;
        if !(0..n).contains(&eos_id) {
            return Err(LmError::Tokenizer(format!(
                "end-of-sequence id {eos_id} is outside the vocabulary (0..{n})"
            )));
        }
        Ok(Self { inner, json: json.to_owned(), eos_id, eos_ids: vec![eos_id], pad_id: eos_id })
    }

    /// Sets the ids generation stops on (the first becomes `eos_id`; padding keeps its id).
    /// Every id must be in the vocabulary, and there must be at least one.
    pub fn with_eos_ids(mut self, ids: Vec<i64>) -> Result<Self, LmError> {
        let n = self.vocab_size() as i64;
        let Some(&first) = ids.first() else {
            return Err(LmError::Tokenizer("the list of end-of-sequence ids is empty".into()));
        };
        if let Some(bad) = ids.iter().find(|&&i| !(0..n).contains(&i)) {
            return Err(LmError::Tokenizer(format!(
                "end-of-sequence id {bad} is outside the vocabulary (0..{n})"
            )));
        }
        self.eos_id = first;
        self.eos_ids = ids;
        Ok(self)
    }

    /// The text of token `id` (special tokens included), when it exists.
    pub fn token_text(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|i| self.inner.id_to_token(i))
    }

    /// Reads a tokenizer.json file.
    pub fn from_file(path: &Path, eos_id: i64) -> Result<Self, LmError> {
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        Self::from_json(&text, eos_id)
            .map_err(|e| LmError::Tokenizer(format!("{}: {e}", path.display())))
    }

    /// The tokenizer.json text (for writing next to converted weights).
    pub fn to_json(&self) -> &str {
        &self.json
    }

    /// Number of tokens, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Token ids of `text`. Special-token strings in the text (`<|im_start|>`) become their
    /// ids; no BOS is added (SmolLM2's `add_bos_token` is false).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, LmError> {
        let enc = self.inner.encode(text, false).map_err(|e| LmError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// Text of `ids`; with `skip_special`, special tokens are left out.
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String, LmError> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| LmError::Tokenizer(format!("bad token id {i}"))))
            .collect::<Result<_, _>>()?;
        self.inner.decode(&ids, skip_special).map_err(|e| LmError::Tokenizer(e.to_string()))
    }
}
