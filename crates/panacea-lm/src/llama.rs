//! The Llama-family decoder (Llama 2/3, SmolLM2, Qwen2) in tch, written after Hugging Face
//! `modeling_llama.py`: RMSNorm, grouped-query attention with rotate-half RoPE, SwiGLU MLP,
//! tied or untied LM head, optional q/k/v biases (Qwen2).
//!
//! Every projection is a [`SvdLoraLinear`] whose frozen weight lives in the base VarStore under
//! its Hugging Face name (`model.layers.{i}.self_attn.q_proj.weight`, ...), so safetensors load
//! without renaming; the adapter, when there is one, lives in a second VarStore under the same
//! names. Left padding is handled by position ids taken from the attention mask and by a
//! combined causal + padding mask, so a padded row computes exactly what it would alone.

use panacea_core::adapter::{Adapter, SvdLora, SvdLoraConfig, SvdLoraLinear};
use tch::{nn, Device, Kind, Tensor};

use crate::config::LlamaConfig;
use crate::CausalLm;

/// Root-mean-square layer norm, computed in f32 whatever the weights' dtype.
#[derive(Debug)]
pub struct RmsNorm {
    /// γ: [D], frozen.
    pub weight: Tensor,
    /// ε.
    pub eps: f64,
}

impl RmsNorm {
    fn new(p: &nn::Path, d: i64, eps: f64) -> Self {
        Self { weight: p.ones_no_train("weight", &[d]), eps }
    }

    fn shared(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), eps: self.eps }
    }

    /// x [.., D] → [.., D].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let ms = xf.square().mean_dim(-1, true, Kind::Float); // [.., 1]
        (xf * (ms + self.eps).rsqrt()).to_kind(kind) * &self.weight
    }
}

/// Builds one projection: frozen weight under `base/name`, adapter under `adapter/name` when
/// the adapter config targets `name`.
fn proj(
    base: &nn::Path,
    adapter: Option<(&nn::Path, &SvdLoraConfig)>,
    name: &str,
    d_in: i64,
    d_out: i64,
    bias: bool,
) -> SvdLoraLinear {
    let ap = adapter.filter(|(_, c)| c.targets(name)).map(|(p, c)| (p.sub(name), c));
    SvdLoraLinear::new(&base.sub(name), ap.as_ref().map(|(p, c)| (p, *c)), d_in, d_out, bias)
}

/// The same frozen projection (shared storage) with a fresh adapter, or none.
fn reproj(
    lin: &SvdLoraLinear,
    adapter: Option<(&nn::Path, &SvdLoraConfig)>,
    name: &str,
) -> SvdLoraLinear {
    let size = lin.weight.size(); // [d_out, d_in]
    let lora = adapter
        .filter(|(_, c)| c.targets(name))
        .map(|(p, c)| SvdLora::new(&p.sub(name), c, size[1], size[0]));
    // SvdLoraLinear has no constructor from existing tensors, so build an empty one in a
    // throwaway store and put the shared base tensors (and the new adapter) in its place.
    let scratch = nn::VarStore::new(Device::Cpu);
    let mut out = SvdLoraLinear::new(&scratch.root(), None, 0, 0, false);
    out.weight = lin.weight.shallow_clone();
    out.bias = lin.bias.as_ref().map(Tensor::shallow_clone);
    out.lora = lora;
    out
}

fn sub<'a>(
    adapter: Option<(&nn::Path<'a>, &'a SvdLoraConfig)>,
    name: &str,
) -> Option<(nn::Path<'a>, &'a SvdLoraConfig)> {
    adapter.map(|(p, c)| (p.sub(name), c))
}

/// Grouped-query self-attention with rotate-half RoPE.
#[derive(Debug)]
pub struct Attention {
    /// [H·hd, D].
    pub q_proj: SvdLoraLinear,
    /// [Hkv·hd, D].
    pub k_proj: SvdLoraLinear,
    /// [Hkv·hd, D].
    pub v_proj: SvdLoraLinear,
    /// [D, H·hd].
    pub o_proj: SvdLoraLinear,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
}

/// x·cos + rotate_half(x)·sin, rotate_half(x) = [-x2, x1] (HF `apply_rotary_pos_emb`).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[x2.neg(), x1], 3); // [B, H, t, hd]
    x * cos + rotated * sin
}

impl Attention {
    fn new(base: &nn::Path, adapter: Option<(&nn::Path, &SvdLoraConfig)>, c: &LlamaConfig) -> Self {
        let (d, hd, h, hkv) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads());
        let bias = c.qkv_bias();
        Self {
            q_proj: proj(base, adapter, "q_proj", d, h * hd, bias),
            k_proj: proj(base, adapter, "k_proj", d, hkv * hd, bias),
            v_proj: proj(base, adapter, "v_proj", d, hkv * hd, bias),
            o_proj: proj(base, adapter, "o_proj", h * hd, d, false),
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: hd,
        }
    }

    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self {
        Self {
            q_proj: reproj(&self.q_proj, adapter, "q_proj"),
            k_proj: reproj(&self.k_proj, adapter, "k_proj"),
            v_proj: reproj(&self.v_proj, adapter, "v_proj"),
            o_proj: reproj(&self.o_proj, adapter, "o_proj"),
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
        }
    }

    /// x [B, t, D], cos/sin [B, 1, t, hd], mask [B, 1, t, S] (true = attend) → [B, t, D].
    /// With a cache the new keys/values are written at `cache.len..cache.len + t` and the
    /// attention reads the first S = len + t cached positions.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&LayerCache, i64)>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads = |y: Tensor, n: i64| y.view([b, t, n, self.head_dim]).transpose(1, 2);
        let q = heads(self.q_proj.forward(x, adapter), self.n_heads); // [B, H, t, hd]
        let k = heads(self.k_proj.forward(x, adapter), self.n_kv_heads); // [B, Hkv, t, hd]
        let v = heads(self.v_proj.forward(x, adapter), self.n_kv_heads); // [B, Hkv, t, hd]
        let q = apply_rope(&q, cos, sin);
        let k = apply_rope(&k, cos, sin);
        let (k, v) = match cache {
            Some((c, len)) => {
                c.k.narrow(2, len, t).copy_(&k);
                c.v.narrow(2, len, t).copy_(&v);
                (c.k.narrow(2, 0, len + t), c.v.narrow(2, 0, len + t)) // [B, Hkv, S, hd]
            }
            None => (k, v),
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            0.0,
            false,
            None,
            self.n_heads != self.n_kv_heads,
        ); // [B, H, t, hd]
        let y = y.transpose(1, 2).reshape([b, t, self.n_heads * self.head_dim]); // [B, t, H·hd]
        self.o_proj.forward(&y, adapter) // [B, t, D]
    }
}

/// The SwiGLU MLP: down(silu(gate(x)) ⊙ up(x)).
#[derive(Debug)]
pub struct Mlp {
    /// [F, D].
    pub gate_proj: SvdLoraLinear,
    /// [F, D].
    pub up_proj: SvdLoraLinear,
    /// [D, F].
    pub down_proj: SvdLoraLinear,
}

impl Mlp {
    fn new(base: &nn::Path, adapter: Option<(&nn::Path, &SvdLoraConfig)>, c: &LlamaConfig) -> Self {
        let (d, f) = (c.hidden_size, c.intermediate_size);
        Self {
            gate_proj: proj(base, adapter, "gate_proj", d, f, false),
            up_proj: proj(base, adapter, "up_proj", d, f, false),
            down_proj: proj(base, adapter, "down_proj", f, d, false),
        }
    }

    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self {
        Self {
            gate_proj: reproj(&self.gate_proj, adapter, "gate_proj"),
            up_proj: reproj(&self.up_proj, adapter, "up_proj"),
            down_proj: reproj(&self.down_proj, adapter, "down_proj"),
        }
    }

    /// x [B, t, D] → [B, t, D].
    fn forward(&self, x: &Tensor, adapter: Adapter<'_>) -> Tensor {
        let g = self.gate_proj.forward(x, adapter).silu(); // [B, t, F]
        let u = self.up_proj.forward(x, adapter); // [B, t, F]
        self.down_proj.forward(&(g * u), adapter) // [B, t, D]
    }
}

/// One pre-norm decoder block.
#[derive(Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Self-attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: Mlp,
}

impl DecoderLayer {
    fn new(base: &nn::Path, adapter: Option<(&nn::Path, &SvdLoraConfig)>, c: &LlamaConfig) -> Self {
        let attn_a = sub(adapter, "self_attn");
        let mlp_a = sub(adapter, "mlp");
        Self {
            input_layernorm: RmsNorm::new(
                &base.sub("input_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            self_attn: Attention::new(
                &base.sub("self_attn"),
                attn_a.as_ref().map(|(p, c)| (p, *c)),
                c,
            ),
            post_attention_layernorm: RmsNorm::new(
                &base.sub("post_attention_layernorm"),
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: Mlp::new(&base.sub("mlp"), mlp_a.as_ref().map(|(p, c)| (p, *c)), c),
        }
    }

    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self {
        let attn_a = sub(adapter, "self_attn");
        let mlp_a = sub(adapter, "mlp");
        Self {
            input_layernorm: self.input_layernorm.shared(),
            self_attn: self.self_attn.with_adapter(attn_a.as_ref().map(|(p, c)| (p, *c))),
            post_attention_layernorm: self.post_attention_layernorm.shared(),
            mlp: self.mlp.with_adapter(mlp_a.as_ref().map(|(p, c)| (p, *c))),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<(&LayerCache, i64)>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let h = x + self.self_attn.forward(
            &self.input_layernorm.forward(x),
            cos,
            sin,
            mask,
            cache,
            adapter,
        ); // [B, t, D]
        let m = self.mlp.forward(&self.post_attention_layernorm.forward(&h), adapter);
        h + m // [B, t, D]
    }
}

/// Preallocated keys and values of one layer: [B, Hkv, capacity, hd] each.
#[derive(Debug)]
pub struct LayerCache {
    k: Tensor,
    v: Tensor,
}

/// A preallocated key/value cache for incremental decoding. Tensors are allocated once for
/// `capacity` positions; each forward writes its new positions in place.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: i64,
    capacity: i64,
}

impl KvCache {
    /// Allocates a cache for `batch` rows and `capacity` positions in the model's dtype.
    pub fn new(model: &Llama, batch: i64, capacity: i64) -> Self {
        let c = &model.config;
        let shape = [batch, c.kv_heads(), capacity, c.head_dim()];
        let opts = (model.kind(), model.device());
        let layers = (0..c.num_hidden_layers)
            .map(|_| LayerCache { k: Tensor::zeros(shape, opts), v: Tensor::zeros(shape, opts) })
            .collect();
        Self { layers, len: 0, capacity }
    }

    /// Number of positions filled so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of positions the cache can hold.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// Forgets the cached positions (the buffers are reused).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// A Llama-family causal language model.
#[derive(Debug)]
pub struct Llama {
    /// The architecture.
    pub config: LlamaConfig,
    /// [V, D], frozen.
    pub embed_tokens: Tensor,
    /// The decoder blocks.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// [V, D]; the embedding matrix itself (shared storage) when tied.
    pub lm_head: Tensor,
}

impl Llama {
    /// Creates the model's variables: frozen base weights (zeros; load or [`init_random`] them)
    /// under `base` with Hugging Face names, and SVD-LoRA variables under `adapter` for the
    /// projections its config targets.
    pub fn new(
        base: &nn::Path,
        adapter: Option<(&nn::Path, &SvdLoraConfig)>,
        config: &LlamaConfig,
    ) -> Self {
        let c = config;
        let model = base.sub("model");
        let model_a = sub(adapter, "model");
        let embed_tokens =
            model.sub("embed_tokens").zeros_no_train("weight", &[c.vocab_size, c.hidden_size]);
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let la = model_a.as_ref().map(|(p, c)| (p.sub("layers").sub(i.to_string()), *c));
                DecoderLayer::new(
                    &model.sub("layers").sub(i.to_string()),
                    la.as_ref().map(|(p, c)| (p, *c)),
                    c,
                )
            })
            .collect();
        let norm = RmsNorm::new(&model.sub("norm"), c.hidden_size, c.rms_norm_eps);
        let lm_head = if c.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            base.sub("lm_head").zeros_no_train("weight", &[c.vocab_size, c.hidden_size])
        };
        Self { config: c.clone(), embed_tokens, layers, norm, lm_head }
    }

    /// Another view of the same frozen base (every base tensor shares storage with `self`'s,
    /// so there is never a second copy of the weights) with its own adapter, or none. Score
    /// models and critics use this to put a second adapter on the policy's base. Convert the
    /// base VarStore's dtype or device before creating views: views made earlier keep the old
    /// tensors.
    pub fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Llama {
        let model_a = sub(adapter, "model");
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let la = model_a.as_ref().map(|(p, c)| (p.sub("layers").sub(i.to_string()), *c));
                l.with_adapter(la.as_ref().map(|(p, c)| (p, *c)))
            })
            .collect();
        Llama {
            config: self.config.clone(),
            embed_tokens: self.embed_tokens.shallow_clone(),
            layers,
            norm: self.norm.shared(),
            lm_head: self.lm_head.shallow_clone(),
        }
    }

    /// The dtype of the base weights (activations use it too).
    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// cos/sin tables for positions [B, t] → [B, 1, t, hd] each, in f32 then cast to the model dtype.
    fn rope(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let hd = self.config.head_dim();
        let dev = positions.device();
        let inv_freq = (Tensor::arange_start_step(0, hd, 2, (Kind::Float, dev)) / hd as f64)
            .multiply_scalar(-(self.config.rope_theta.ln()))
            .exp(); // [hd/2] = θ^(-2i/hd)
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq; // [B, t, hd/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1); // [B, 1, t, hd]
        (emb.cos().to_kind(self.kind()), emb.sin().to_kind(self.kind()))
    }

    /// The shared body of the full and the cached forward. ids [B, t]; mask [B, S] covers the
    /// `start` cached positions and the t new ones (S = start + t).
    fn body(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let t = ids.size()[1];
        let s = mask.size()[1];
        let start = s - t;
        let dev = ids.device();
        let mask = mask.to_device(dev);
        // Positions count real tokens only, so left padding does not shift them.
        let positions = (mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0); // [B, S]
        let positions = positions.narrow(1, start, t); // [B, t]
        let (cos, sin) = self.rope(&positions);
        let key_idx = Tensor::arange(s, (Kind::Int64, dev)); // [S]
        let query_idx = Tensor::arange_start(start, s, (Kind::Int64, dev)); // [t]
        let causal = key_idx.unsqueeze(0).le_tensor(&query_idx.unsqueeze(1)); // [t, S]
        let valid = mask.to_kind(Kind::Bool).unsqueeze(1); // [B, 1, S]
                                                           // A padding query would otherwise see no key at all (NaN); let it see itself.
        let diag = key_idx.unsqueeze(0).eq_tensor(&query_idx.unsqueeze(1)); // [t, S]
        let attn = causal.logical_and(&valid).logical_or(&diag).unsqueeze(1); // [B, 1, t, S]
        let mut x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false); // [B, t, D]
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref().map(|c| (&c.layers[i], c.len));
            x = layer.forward(&x, &cos, &sin, &attn, c, adapter);
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(&x) // [B, t, D]
    }

    /// Incremental forward: ids [B, t] are the next t tokens of every row; `mask` [B, len + t]
    /// covers everything cached so far plus these tokens. Writes their keys/values into
    /// `cache` and returns the final hidden states [B, t, D].
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        cache: &mut KvCache,
        adapter: Adapter<'_>,
    ) -> Result<Tensor, crate::LmError> {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        let want = cache.len + t;
        if mask.size() != [b, want] {
            return Err(crate::LmError::Invalid(format!(
                "forward_cached: mask must be [B, cached + t] = [{b}, {want}], got {:?}",
                mask.size()
            )));
        }
        if want > cache.capacity {
            return Err(crate::LmError::Invalid(format!(
                "forward_cached: {want} positions exceed the cache capacity {}",
                cache.capacity
            )));
        }
        if cache.layers.first().map(|l| l.k.size()[0]) != Some(b) && !cache.layers.is_empty() {
            return Err(crate::LmError::Invalid(format!(
                "forward_cached: batch {b} does not match the cache's batch"
            )));
        }
        Ok(self.body(ids, mask, Some(cache), adapter))
    }
}

impl CausalLm for Llama {
    fn hidden_states(&self, ids: &Tensor, attention_mask: &Tensor, adapter: Adapter<'_>) -> Tensor {
        self.body(ids, attention_mask, None, adapter)
    }

    fn lm_head(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.lm_head.tr()).to_kind(Kind::Float) // [.., V]
    }

    fn hidden_size(&self) -> i64 {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }

    fn device(&self) -> Device {
        self.embed_tokens.device()
    }
}

/// Fills every variable of a base VarStore with a seeded random init (normal, std 0.02, for
/// matrices and biases; norms stay at 1). Variables are visited in sorted name order and the
/// numbers come from a ChaCha8 stream on the host, not from libtorch's global generator, so the
/// same seed gives the same model even while other threads draw from libtorch (parallel tests).
/// For tests and throughput runs only.
pub fn init_random(base_vs: &nn::VarStore, seed: i64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64);
    let vars = base_vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| {
        for name in names {
            let v = &vars[name];
            if name.ends_with("norm.weight") {
                let _ = v.shallow_clone().fill_(1.0);
                continue;
            }
            // Box–Muller: two uniforms in (0, 1] give two independent standard normals.
            let n = v.numel();
            let mut values = Vec::with_capacity(n + 1);
            while values.len() < n {
                let u1: f64 = 1.0 - rng.gen::<f64>();
                let u2: f64 = rng.gen::<f64>();
                let r = (-2.0 * u1.ln()).sqrt();
                let angle = std::f64::consts::TAU * u2;
                values.push((0.02 * r * angle.cos()) as f32);
                values.push((0.02 * r * angle.sin()) as f32);
            }
            values.truncate(n);
            let t = Tensor::from_slice(&values).view(v.size().as_slice()).to_kind(v.kind());
            v.shallow_clone().copy_(&t);
        }
    });
}
