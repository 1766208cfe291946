//! A small, bounds-checked reader for GGUF v3 files (docs/models.md, §1.2–1.6), and the
//! conversion of a llama/qwen2 GGUF into Hugging Face-named f32 tensors and a [`LlamaConfig`].
//!
//! Layout (little-endian): `"GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv × {string key,
//! u32 type, value} | n_tensors × {string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64
//! offset} | padding to general.alignment | tensor data`. Every length and offset is checked
//! against the file size, so hostile bytes give an error naming the file, offset and tensor,
//! never a panic or a huge allocation.
//!
//! The llama.cpp converter permutes the rows of `attn_q`/`attn_k` for the `llama` architecture
//! (interleaved-pair RoPE); [`to_hf_tensors`] undoes it so the rotate-half RoPE of
//! [`crate::llama`] is correct. `qwen2` files are not permuted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::config::LlamaConfig;
use crate::dequant::{dequantize, GgmlType, SUPPORTED_TYPES};
use crate::error::LmError;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an integer, when it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::U64(v) => i64::try_from(v).ok(),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F64(v) => Some(v),
            Self::U64(v) => Some(v as f64),
            Self::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array, when it is one.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's directory entry.
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as stored: ne0 (innermost) first.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub start: u64,
    /// Byte length of the data.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// The row-major shape in Hugging Face order (dims reversed).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: metadata and the tensor directory.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    /// The file (for error messages).
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensors in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute offset of the tensor data section.
    pub data_start: u64,
}

/// Arrays nest at most this deep; real files use depth 1.
const MAX_DEPTH: usize = 4;

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, offset: usize, tensor: Option<&str>, message: impl Into<String>) -> LmError {
        LmError::Format {
            path: self.path.to_owned(),
            offset: Some(offset as u64),
            tensor: tensor.map(str::to_owned),
            message: message.into(),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], LmError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n));
        match end {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(self.err(
                self.pos,
                None,
                format!(
                    "truncated: {what} needs {n} bytes but the file has {} bytes left \
                     (hint: the download is incomplete or corrupt; fetch it again)",
                    self.bytes.len() - self.pos.min(self.bytes.len())
                ),
            )),
        }
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LmError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, LmError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LmError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, LmError> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.err(at, None, format!("{what} is not UTF-8: {e}")))
    }

    /// A value of type `ty`.
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, LmError> {
        let at = self.pos;
        Ok(match ty {
            0 => GgufValue::U64(u64::from(self.arr::<1>(key)?[0])),
            1 => GgufValue::I64(i64::from(self.arr::<1>(key)?[0] as i8)),
            2 => GgufValue::U64(u64::from(u16::from_le_bytes(self.arr(key)?))),
            3 => GgufValue::I64(i64::from(i16::from_le_bytes(self.arr(key)?))),
            4 => GgufValue::U64(u64::from(self.u32(key)?)),
            5 => GgufValue::I64(i64::from(i32::from_le_bytes(self.arr(key)?))),
            6 => GgufValue::F64(f64::from(f32::from_le_bytes(self.arr(key)?))),
            7 => match self.arr::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(at, None, format!("{key}: bool byte {b} is not 0 or 1"))),
            },
            8 => GgufValue::Str(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(at, None, format!("{key}: arrays nested too deeply")));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                // Every element takes at least one byte, so a count beyond the bytes left is
                // corrupt; checking it first bounds the allocation.
                let left = (self.bytes.len() - self.pos) as u64;
                if count > left {
                    return Err(self.err(
                        at,
                        None,
                        format!("{key}: array of {count} elements but only {left} bytes left"),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.arr(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.arr(key)?)),
            t => {
                return Err(self.err(
                    at,
                    None,
                    format!("{key}: unknown metadata value type {t} (known: 0..=12)"),
                ))
            }
        })
    }
}

impl GgufHeader {
    /// Parses the header of a GGUF file held in `bytes` (the whole file, so that tensor
    /// extents can be checked). `path` only labels errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, LmError> {
        let mut c = Cursor { bytes, pos: 0, path };
        let magic = c.arr::<4>("magic")?;
        if &magic != b"GGUF" {
            return Err(c.err(
                0,
                None,
                format!("not a GGUF file: magic {magic:?}, expected \"GGUF\""),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(
                4,
                None,
                format!("GGUF version {version} is not supported (2 or 3)"),
            ));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let left = (bytes.len() - c.pos) as u64;
        // A key/value pair takes at least 12 bytes and a tensor entry at least 24.
        if n_kv > left / 12 || n_tensors > left / 24 {
            return Err(c.err(
                8,
                None,
                format!("{n_tensors} tensors and {n_kv} metadata pairs cannot fit in {left} bytes"),
            ));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_i64() {
                Some(a) if a > 0 && a <= 1 << 20 && (a & (a - 1)) == 0 => a as u64,
                _ => {
                    return Err(c.err(
                        0,
                        None,
                        format!("general.alignment {v:?} is not a power of two"),
                    ))
                }
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = c.pos;
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(c.err(
                    at,
                    Some(&name),
                    format!("{n_dims} dimensions (expected 1 to 4)"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&name)?);
            }
            let ty_id = c.u32(&name)?;
            let offset = c.u64(&name)?;
            raw.push((at, name, dims, ty_id, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (at, name, dims, ty_id, offset) in raw {
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
                c.err(
                    at,
                    Some(&name),
                    format!("unsupported ggml type {ty_id} (supported: {SUPPORTED_TYPES})"),
                )
            })?;
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let bs = ty.block_size() as u64;
            let n_bytes = match numel {
                Some(n) if n > 0 && n % bs == 0 && dims[0] % bs == 0 => {
                    (n / bs).checked_mul(ty.block_bytes() as u64)
                }
                _ => None,
            };
            let Some(n_bytes) = n_bytes else {
                return Err(c.err(
                    at,
                    Some(&name),
                    format!("dims {dims:?} do not form whole {} blocks of {bs} weights", ty.name()),
                ));
            };
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => {
                    tensors.push(GgufTensorInfo { name, dims, ty, start, n_bytes })
                }
                _ => {
                    return Err(c.err(
                        at,
                        Some(&name),
                        format!(
                            "data at offset {offset} + {n_bytes} bytes runs past the end of the \
                             file ({file_len} bytes; data section starts at {data_start}); the \
                             file is truncated"
                        ),
                    ))
                }
            }
        }
        Ok(Self { path: path.to_owned(), version, metadata, tensors, data_start })
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&GgufValue, LmError> {
        self.metadata.get(key).ok_or_else(|| self.missing(key, "is missing"))
    }

    fn missing(&self, key: &str, what: &str) -> LmError {
        LmError::Format {
            path: self.path.clone(),
            offset: None,
            tensor: None,
            message: format!("metadata key {key} {what}"),
        }
    }

    fn int(&self, key: &str) -> Result<i64, LmError> {
        self.get(key)?.as_i64().ok_or_else(|| self.missing(key, "is not an integer"))
    }

    fn float(&self, key: &str) -> Result<f64, LmError> {
        self.get(key)?.as_f64().ok_or_else(|| self.missing(key, "is not a number"))
    }

    /// `general.architecture` (`llama`, `qwen2`, ...).
    pub fn architecture(&self) -> Result<&str, LmError> {
        self.get("general.architecture")?
            .as_str()
            .ok_or_else(|| self.missing("general.architecture", "is not a string"))
    }

    /// The tensor entry called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The architecture as a [`LlamaConfig`] (llama and qwen2 only).
    pub fn llama_config(&self) -> Result<LlamaConfig, LmError> {
        let arch = self.architecture()?.to_owned();
        if arch != "llama" && arch != "qwen2" {
            return Err(LmError::Format {
                path: self.path.clone(),
                offset: None,
                tensor: None,
                message: format!(
                    "architecture {arch:?} is not supported (supported: llama, qwen2)"
                ),
            });
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_heads = self.int(&k("attention.head_count"))?;
        let hidden = self.int(&k("embedding_length"))?;
        let vocab = match self.metadata.get(&k("vocab_size")).and_then(GgufValue::as_i64) {
            Some(v) => v,
            None => self
                .get("tokenizer.ggml.tokens")?
                .as_array()
                .map(|a| a.len() as i64)
                .ok_or_else(|| self.missing("tokenizer.ggml.tokens", "is not an array"))?,
        };
        let opt_int = |key: &str| self.metadata.get(key).and_then(GgufValue::as_i64);
        let cfg = LlamaConfig {
            model_type: arch.clone(),
            hidden_size: hidden,
            intermediate_size: self.int(&k("feed_forward_length"))?,
            num_hidden_layers: self.int(&k("block_count"))?,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(opt_int(&k("attention.head_count_kv")).unwrap_or(n_heads)),
            head_dim: opt_int(&k("attention.key_length")),
            rms_norm_eps: self.float(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: self
                .metadata
                .get(&k("rope.freq_base"))
                .and_then(GgufValue::as_f64)
                .unwrap_or(10_000.0),
            rope_scaling: None,
            vocab_size: vocab,
            max_position_embeddings: opt_int(&k("context_length")).unwrap_or(2048),
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            attention_bias: self.tensor("blk.0.attn_q.bias").is_some(),
            bos_token_id: opt_int("tokenizer.ggml.bos_token_id"),
            eos_token_id: opt_int("tokenizer.ggml.eos_token_id"),
        };
        cfg.validate().map_err(|message| LmError::Format {
            path: self.path.clone(),
            offset: None,
            tensor: None,
            message: format!("metadata gives an invalid architecture: {message}"),
        })?;
        Ok(cfg)
    }
}

/// Decodes one tensor of `bytes` (the whole file) into f32 with the Hugging Face shape.
pub fn dequantize_tensor(
    header: &GgufHeader,
    bytes: &[u8],
    info: &GgufTensorInfo,
) -> Result<Tensor, LmError> {
    // parse() checked start + n_bytes <= file length; re-check in case `bytes` is another file.
    let (start, end) = (info.start as usize, (info.start + info.n_bytes) as usize);
    let src = bytes.get(start..end).ok_or_else(|| LmError::Format {
        path: header.path.clone(),
        offset: Some(info.start),
        tensor: Some(info.name.clone()),
        message: format!("data runs past the end of the file ({} bytes)", bytes.len()),
    })?;
    let mut out = vec![0f32; info.numel() as usize];
    if !dequantize(info.ty, src, &mut out) {
        return Err(LmError::Format {
            path: header.path.clone(),
            offset: Some(info.start),
            tensor: Some(info.name.clone()),
            message: format!("{} bytes do not decode as {}", src.len(), info.ty.name()),
        });
    }
    Ok(Tensor::from_slice(&out).view(info.shape().as_slice()))
}

/// The Hugging Face name of a GGUF tensor name, or `None` for tensors the model does not use.
pub fn hf_name(gguf: &str) -> Option<String> {
    let simple = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(s) = simple {
        return Some(s.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's Q/K row permutation: GGUF row `head·h + 2i + j` holds HF row
/// `head·h + j·h/2 + i`. View the rows as [n, h/2, 2, ..], swap axes 1 and 2, flatten back.
/// Works for weights [out, in] and biases [out].
pub fn unpermute_rows(t: &Tensor, n_heads: i64) -> Tensor {
    let size = t.size();
    let out = size[0];
    let h = out / n_heads;
    let mut view = vec![n_heads, h / 2, 2];
    view.extend_from_slice(&size[1..]);
    let mut perm: Vec<i64> = vec![0, 2, 1];
    perm.extend((3..view.len() as i64).collect::<Vec<_>>());
    t.view(view.as_slice()).permute(perm.as_slice()).contiguous().view(size.as_slice())
}

/// Dequantises every tensor the model uses into f32 with its Hugging Face name and layout
/// (Q/K rows un-permuted for `llama`), sorted by name.
pub fn to_hf_tensors(
    header: &GgufHeader,
    bytes: &[u8],
    config: &LlamaConfig,
) -> Result<Vec<(String, Tensor)>, LmError> {
    let permuted = config.model_type == "llama";
    let mut out = Vec::new();
    for info in &header.tensors {
        let Some(name) = hf_name(&info.name) else { continue };
        let mut t = dequantize_tensor(header, bytes, info)?;
        if permuted {
            if name.contains("self_attn.q_proj.") {
                t = unpermute_rows(&t, config.num_attention_heads);
            } else if name.contains("self_attn.k_proj.") {
                t = unpermute_rows(&t, config.kv_heads());
            }
        }
        debug_assert_eq!(t.kind(), Kind::Float);
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("blk.3.attn_k.bias").as_deref(),
            Some("model.layers.3.self_attn.k_proj.bias")
        );
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_follows_the_row_formula() {
        // 2 heads of h = 4, 1 column: GGUF row g = head·4 + 2i + j ↦ HF row head·4 + j·2 + i.
        let g = Tensor::arange(8, (Kind::Float, tch::Device::Cpu)).view([8, 1]);
        let hf = unpermute_rows(&g, 2);
        let got: Vec<f32> = Vec::try_from(hf.view([8])).unwrap_or_default();
        // HF row f holds GGUF row g(f): f = head·4 + j·2 + i → g = head·4 + 2i + j.
        assert_eq!(got, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
