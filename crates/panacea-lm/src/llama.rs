//! The Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2, Qwen3) in tch, written after
//! Hugging Face `modeling_llama.py`: RMSNorm, grouped-query attention with rotate-half RoPE
//! (optionally Llama-3 or linear frequency scaling), SwiGLU MLP, tied or untied LM head,
//! optional q/k/v biases (Qwen2) and per-head q/k RMSNorm before RoPE (Qwen3).
//!
//! Every projection is a [`SvdLoraLinear`] whose frozen weight lives in the base VarStore under
//! its Hugging Face name (`model.layers.{i}.self_attn.q_proj.weight`, ...), so safetensors load
//! without renaming; the adapter, when there is one, lives in a second VarStore under the same
//! names. Left padding is handled by position ids taken from the attention mask and by a
//! combined causal + padding mask, so a padded row computes exactly what it would alone.
//!
//! For inference, [`Llama::fuse_projections`] (called by [`crate::load_model`]) re-lays out the
//! frozen weights in place: q/k/v and gate/up each become one buffer (rows stacked on a CPU
//! with the small-M decode kernel, pre-transposed elsewhere) that an adapter-free forward
//! multiplies in one GEMM, and every variable becomes a view into its buffer (same name, shape
//! and values, no second copy). With [`Llama::set_grouped_adapters`] (opt-in), an adapted
//! forward uses the same buffers: the group's base GEMM, then one skinny GEMM pair for all of
//! the group's adapters ([`panacea_core::adapter::FoldedGroup`]). The adapter
//! variables keep their per-projection names and shapes, so checkpoints do not change.

use panacea_core::adapter::{
    frozen_var, Adapter, FoldedGroup, SvdLora, SvdLoraConfig, SvdLoraLinear,
};
use panacea_core::ops::grad_enabled;
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
        Self { weight: frozen_var(p, "weight", &[d], 1.0), eps }
    }

    fn shared(&self) -> Self {
        Self { weight: self.weight.shallow_clone(), eps: self.eps }
    }

    /// x [.., D] → [.., D].
    /// libtorch's `rms_norm` accumulates in f32 for bf16 inputs and is one fused kernel on CUDA
    /// (six element-wise launches otherwise, each a pass over [.., D]).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let d = x.size().last().copied().unwrap_or(1);
        x.rms_norm([d], Some(&self.weight), self.eps)
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

/// Projections that read the same input (q/k/v, or gate/up), stored as one buffer so that an
/// adapter-free forward is a single GEMM whose weight streams row by row: on a CPU with the
/// small-M kernel ([`panacea_core::small_gemm`]) the members' rows stacked, [Σ d_out, d_in]
/// (its layout), elsewhere pre-transposed, [d_in, Σ d_out] (what libtorch's BLAS streams
/// fastest for one row, benches/README.md).
///
/// The members keep their Hugging Face variables, shapes and names: each member's weight
/// (and bias) is made a view into the buffer with `set_data`, so the VarStore, every
/// [`Llama::with_adapter`] view and the loaders see the same memory and no weight is stored
/// twice. If a variable is later replaced (a dtype or device conversion of the VarStore), its
/// data pointer no longer matches the one recorded here and the forward falls back to the
/// members, so a stale buffer is never read.
#[derive(Debug)]
struct FusedProj {
    /// [Σ d_out, d_in], ready for `linear`: contiguous (rows stacked) or with strides
    /// (1, Σ d_out) (the transposed view of a [d_in, Σ d_out] buffer), see [`stack_rows`].
    weight: Tensor,
    /// [Σ d_out] when the members have biases (also views of one buffer).
    bias: Option<Tensor>,
    /// Each member's weight (and bias) data pointer right after fusing.
    ptrs: Vec<(usize, usize)>,
    /// Whether an adapted forward adds the members' adapters as one group
    /// ([`FusedProj::forward_grouped`]); off by default ([`Llama::set_grouped_adapters`]).
    group_adapters: bool,
}

/// A group's adapters folded once for one preference ([`Llama::with_prepared_adapter`]), the
/// group counterpart of [`SvdLoraLinear::prepare`].
#[derive(Debug)]
struct PreparedGroup {
    /// Address and shape of the preference tensor it was prepared for.
    pref_ptr: usize,
    pref_size: Vec<i64>,
    folded: FoldedGroup,
}

impl PreparedGroup {
    fn new(members: &[&SvdLoraLinear], pref: &Tensor) -> Option<Self> {
        let kind = members.first()?.weight.kind();
        let folded = tch::no_grad(|| FoldedGroup::new(&group_members(members), pref, kind))?;
        Some(Self { pref_ptr: pref.data_ptr() as usize, pref_size: pref.size(), folded })
    }

    /// Whether it serves a forward of x under this very `pref` (grad mode off, as for the
    /// per-projection prepared factors).
    fn hit(&self, pref: &Tensor, x: &Tensor) -> bool {
        !grad_enabled()
            && pref.data_ptr() as usize == self.pref_ptr
            && pref.size() == self.pref_size
            && x.kind() == self.folded.kind()
    }
}

/// (adapter, d_out) of each member, in the fused output's column order.
fn group_members<'a>(members: &[&'a SvdLoraLinear]) -> Vec<(Option<&'a SvdLora>, i64)> {
    members.iter().map(|m| (m.lora.as_ref(), m.weight.size()[0])).collect()
}

impl FusedProj {
    /// Re-lays out `members` (same d_in, kind and device; all with or all without bias) into
    /// one buffer (see [`stack_rows`]). Returns None when they cannot share one.
    fn new(members: &[&SvdLoraLinear]) -> Option<Self> {
        let first = members.first()?;
        let (kind, dev) = (first.weight.kind(), first.weight.device());
        let d_in = *first.weight.size().get(1)?;
        let has_bias = first.bias.is_some();
        let ok = members.iter().all(|m| {
            let s = m.weight.size();
            s.len() == 2
                && s[1] == d_in
                && m.weight.kind() == kind
                && m.weight.device() == dev
                && m.bias.is_some() == has_bias
                && !m.weight.requires_grad()
        });
        if !ok {
            return None;
        }
        let sizes: Vec<i64> = members.iter().map(|m| m.weight.size()[0]).collect();
        let total: i64 = sizes.iter().sum();
        let rows = stack_rows(dev);
        let weight = if rows {
            Tensor::empty([total, d_in], (kind, dev)) // [Σ d_out, d_in]
        } else {
            Tensor::empty([d_in, total], (kind, dev)).tr() // [Σ d_out, d_in], strides (1, Σ)
        };
        let bias = has_bias.then(|| Tensor::empty([total], (kind, dev)));
        let mut ptrs = Vec::with_capacity(members.len());
        let mut off = 0;
        tch::no_grad(|| {
            for (m, &o) in members.iter().zip(&sizes) {
                let mut block = weight.narrow(0, off, o); // [o, d_in]
                block.copy_(&m.weight);
                m.weight.shallow_clone().set_data(&block);
                let bias_ptr = match (&bias, &m.bias) {
                    (Some(fb), Some(mb)) => {
                        let mut part = fb.narrow(0, off, o);
                        part.copy_(mb);
                        mb.shallow_clone().set_data(&part);
                        mb.data_ptr() as usize
                    }
                    _ => 0,
                };
                ptrs.push((m.weight.data_ptr() as usize, bias_ptr));
                off += o;
            }
        });
        Some(Self { weight, bias, ptrs, group_adapters: false })
    }

    fn shared(&self) -> Self {
        Self {
            weight: self.weight.shallow_clone(),
            bias: self.bias.as_ref().map(Tensor::shallow_clone),
            ptrs: self.ptrs.clone(),
            group_adapters: self.group_adapters,
        }
    }

    /// Whether every member still lives in the buffer.
    fn intact(&self, members: &[&SvdLoraLinear]) -> bool {
        members.len() == self.ptrs.len()
            && members.iter().zip(&self.ptrs).all(|(m, &(w, b))| {
                m.weight.data_ptr() as usize == w
                    && m.bias.as_ref().map_or(0, |b| b.data_ptr() as usize) == b
            })
    }

    /// Whether the fused GEMM computes exactly what the members would under `adapter`: no
    /// member adds an adapter term, and every member still lives in the buffer.
    fn usable(&self, members: &[&SvdLoraLinear], adapter: Adapter<'_>) -> bool {
        let adapted =
            matches!(adapter, Adapter::On { .. }) && members.iter().any(|m| m.lora.is_some());
        !adapted && self.intact(members)
    }

    /// Whether [`FusedProj::forward_grouped`] runs the group under `adapter` (up to the
    /// adapters' configs agreeing, see [`FoldedGroup::new`]).
    fn groups(&self, members: &[&SvdLoraLinear], adapter: Adapter<'_>) -> bool {
        matches!(adapter, Adapter::On { .. })
            && self.group_adapters
            && members.iter().any(|m| m.lora.is_some())
            && !members.iter().any(|m| m.is_merged())
            && self.intact(members)
    }

    /// The members' outputs side by side, [.., Σ d_out], adapters included, from one base GEMM
    /// and one skinny GEMM pair for the whole group ([`FoldedGroup`]), or `None` where the
    /// group cannot stand in for the members: no adapter term applies (see
    /// [`FusedProj::usable`]), a member holds a merged weight (its per-projection forward
    /// decides whether the merge applies), the buffer was replaced, or grouping is off.
    /// `prepared` factors are used when they were made for this very `pref`.
    fn forward_grouped(
        &self,
        members: &[&SvdLoraLinear],
        x: &Tensor,
        adapter: Adapter<'_>,
        prepared: Option<&PreparedGroup>,
    ) -> Option<Tensor> {
        let Adapter::On { pref } = adapter else { return None };
        if !self.groups(members, adapter) {
            return None;
        }
        if let Some(p) = prepared.filter(|p| p.hit(pref, x)) {
            return Some(p.folded.add_to(&self.forward(x), x));
        }
        let folded = FoldedGroup::new(&group_members(members), pref, x.kind())?;
        Some(folded.add_to(&self.forward(x), x)) // [.., Σ d_out]
    }

    /// x [.., d_in] → the members' outputs side by side, [.., Σ d_out].
    fn forward(&self, x: &Tensor) -> Tensor {
        panacea_core::small_gemm::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// Re-lays out one projection as a pre-transposed [d_in, d_out] buffer (its variable becomes
/// the transposed view): MKL streams it faster than the [d_out, d_in] layout for one input
/// row (a GEMV) on the bench machine, and no slower for a few rows (benches/README.md). Not
/// where the small-M kernel runs (see [`stack_rows`]): it wants the [d_out, d_in] rows.
fn pretranspose(lin: &SvdLoraLinear) {
    if !stack_rows(lin.weight.device()) {
        let _ = FusedProj::new(&[lin]);
    }
}

/// Whether fused weights keep `nn.Linear`'s row layout on `dev`: yes where the small-M kernel
/// ([`panacea_core::small_gemm`]) runs, because it streams contiguous weight rows; a variant of
/// it for the pre-transposed layout was 1.2–1.5× slower at batch 8 (its strided reads defeat
/// the TLB and the prefetcher; benches/README.md, "LM decode"). Elsewhere (GPU, several
/// intra-op threads at load time) the pre-transposed layout libtorch's BLAS prefers stays.
fn stack_rows(dev: Device) -> bool {
    panacea_core::small_gemm::kernel_active(dev)
}

/// Which keys each query sees in [`Attention::forward`].
#[derive(Clone, Copy, Debug)]
enum Attend<'a> {
    /// Query i sees keys 0..=i (t = S: a full forward without padding).
    Causal,
    /// Every query sees every key (one new token over an unpadded cache).
    Everything,
    /// An explicit boolean mask [B or 1, 1, t, S] (true = attend): padding, or chunks.
    Masked(&'a Tensor),
}

/// Where a forward with a KV cache writes its new keys and values, and which cached ones it
/// reads.
#[derive(Clone, Copy, Debug)]
enum CacheSlot<'a> {
    /// The t new positions go to columns `len..len + t`; attention reads columns
    /// `0..len + t` (shapes follow `len`, a host number).
    Append(&'a LayerCache, i64),
    /// One new position per row goes to the column held in a [1] i64 device tensor, and
    /// attention reads the whole capacity (the mask says which columns count): every shape is
    /// fixed and the column is read on the device, so the step can be captured once and
    /// replayed at every column ([`crate::static_decode`]).
    Column(&'a LayerCache, &'a Tensor),
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
    /// Qwen3's per-head RMSNorm of the queries, [hd], applied before RoPE.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3's per-head RMSNorm of the keys, [hd], applied before RoPE.
    pub k_norm: Option<RmsNorm>,
    /// q/k/v in one buffer, after [`Llama::fuse_projections`].
    qkv: Option<FusedProj>,
    /// q/k/v's adapters folded as one group ([`Llama::with_prepared_adapter`]).
    qkv_prepared: Option<PreparedGroup>,
    n_heads: i64,
    n_kv_heads: i64,
    head_dim: i64,
}

/// x·cos + rotate_half(x)·sin with rotate_half(x) = [-x2, x1] (HF `apply_rotary_pos_emb`),
/// computed as x·cos + [x2, x1]·[-sin1, sin2]: `sin_signed` carries the sign (see
/// [`Llama::rope`]), so the swap of the halves is a single flip. x [B, h, t, hd].
fn apply_rope(x: &Tensor, cos: &Tensor, sin_signed: &Tensor) -> Tensor {
    let s = x.size();
    let swapped = x.view([s[0], s[1], s[2], 2, s[3] / 2]).flip([3]).view(s.as_slice()); // [x2, x1]
    x * cos + swapped * sin_signed
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
            q_norm: c.qk_norm().then(|| RmsNorm::new(&base.sub("q_norm"), hd, c.rms_norm_eps)),
            k_norm: c.qk_norm().then(|| RmsNorm::new(&base.sub("k_norm"), hd, c.rms_norm_eps)),
            qkv: None,
            qkv_prepared: None,
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
            q_norm: self.q_norm.as_ref().map(RmsNorm::shared),
            k_norm: self.k_norm.as_ref().map(RmsNorm::shared),
            qkv: self.qkv.as_ref().map(FusedProj::shared),
            qkv_prepared: None,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
        }
    }

    /// x [B, t, D], cos/sin [B or 1, 1, t, hd] (sin signed, see [`Llama::rope`]) → [B, t, D].
    /// With a cache the new keys/values are written at `cache.len..cache.len + t` and the
    /// attention reads the first S = len + t cached positions.
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attend: Attend<'_>,
        cache: Option<CacheSlot<'_>>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let (h, hkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |y: &Tensor, n: i64| y.view([b, t, n, hd]).transpose(1, 2);
        let members = [&self.q_proj, &self.k_proj, &self.v_proj];
        // Qwen3 normalises each query and key head before RoPE.
        let norm = |y: Tensor, n: &Option<RmsNorm>| match n {
            Some(n) => n.forward(&y),
            None => y,
        };
        let qk_norm = self.q_norm.is_some() || self.k_norm.is_some();
        // q, k and v side by side from one base GEMM (plus, under an adapter, one skinny
        // GEMM pair for the three adapters), or None: one projection at a time.
        let fused = self.qkv.as_ref().and_then(|f| {
            if f.usable(&members, adapter) {
                Some(f.forward(x))
            } else {
                f.forward_grouped(&members, x, adapter, self.qkv_prepared.as_ref())
            }
        }); // [B, t, (H + 2·Hkv)·hd]
        let (q, k, v) = match fused {
            Some(y) if !qk_norm => {
                // One RoPE for q and k together.
                let qk = apply_rope(&heads(&y.narrow(2, 0, (h + hkv) * hd), h + hkv), cos, sin);
                let v = heads(&y.narrow(2, (h + hkv) * hd, hkv * hd), hkv);
                (qk.narrow(1, 0, h), qk.narrow(1, h, hkv), v)
            }
            Some(y) => {
                // The q and k heads have their own norms, so two RoPEs.
                let q = norm(heads(&y.narrow(2, 0, h * hd), h), &self.q_norm);
                let k = norm(heads(&y.narrow(2, h * hd, hkv * hd), hkv), &self.k_norm);
                let v = heads(&y.narrow(2, (h + hkv) * hd, hkv * hd), hkv);
                (apply_rope(&q, cos, sin), apply_rope(&k, cos, sin), v)
            }
            None => (
                apply_rope(
                    &norm(heads(&self.q_proj.forward(x, adapter), h), &self.q_norm),
                    cos,
                    sin,
                ),
                apply_rope(
                    &norm(heads(&self.k_proj.forward(x, adapter), hkv), &self.k_norm),
                    cos,
                    sin,
                ),
                heads(&self.v_proj.forward(x, adapter), hkv),
            ),
        }; // [B, H, t, hd], [B, Hkv, t, hd] ×2
        let (k, v) = match cache {
            Some(CacheSlot::Append(c, len)) => {
                c.k.narrow(2, len, t).copy_(&k);
                c.v.narrow(2, len, t).copy_(&v);
                (c.k.narrow(2, 0, len + t), c.v.narrow(2, 0, len + t)) // [B, Hkv, S, hd]
            }
            Some(CacheSlot::Column(c, col)) => {
                let _ = c.k.shallow_clone().index_copy_(2, col, &k); // k [B, Hkv, 1, hd]
                let _ = c.v.shallow_clone().index_copy_(2, col, &v);
                (c.k.shallow_clone(), c.v.shallow_clone()) // [B, Hkv, capacity, hd]
            }
            None => (k, v),
        };
        let (mask, is_causal) = match attend {
            Attend::Causal => (None, true),
            Attend::Everything => (None, false),
            Attend::Masked(m) => (Some(m), false),
        };
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            is_causal,
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
    /// gate/up in one buffer, after [`Llama::fuse_projections`].
    gate_up: Option<FusedProj>,
    /// gate/up's adapters folded as one group ([`Llama::with_prepared_adapter`]).
    gate_up_prepared: Option<PreparedGroup>,
}

impl Mlp {
    fn new(base: &nn::Path, adapter: Option<(&nn::Path, &SvdLoraConfig)>, c: &LlamaConfig) -> Self {
        let (d, f) = (c.hidden_size, c.intermediate_size);
        Self {
            gate_proj: proj(base, adapter, "gate_proj", d, f, false),
            up_proj: proj(base, adapter, "up_proj", d, f, false),
            down_proj: proj(base, adapter, "down_proj", f, d, false),
            gate_up: None,
            gate_up_prepared: None,
        }
    }

    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self {
        Self {
            gate_proj: reproj(&self.gate_proj, adapter, "gate_proj"),
            up_proj: reproj(&self.up_proj, adapter, "up_proj"),
            down_proj: reproj(&self.down_proj, adapter, "down_proj"),
            gate_up: self.gate_up.as_ref().map(FusedProj::shared),
            gate_up_prepared: None,
        }
    }

    /// x [B, t, D] → [B, t, D].
    fn forward(&self, x: &Tensor, adapter: Adapter<'_>) -> Tensor {
        let members = [&self.gate_proj, &self.up_proj];
        // gate and up side by side from one base GEMM (plus one skinny GEMM pair for both
        // adapters), or None: one projection at a time.
        let fused = self.gate_up.as_ref().and_then(|f| {
            if f.usable(&members, adapter) {
                Some(f.forward(x))
            } else {
                f.forward_grouped(&members, x, adapter, self.gate_up_prepared.as_ref())
            }
        });
        let (g, u) = match fused {
            Some(gu) => {
                // [B, t, 2F]
                let ff = gu.size()[2] / 2;
                (gu.narrow(2, 0, ff).silu(), gu.narrow(2, ff, ff))
            }
            None => (self.gate_proj.forward(x, adapter).silu(), self.up_proj.forward(x, adapter)),
        }; // [B, t, F] each
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
        attend: Attend<'_>,
        cache: Option<CacheSlot<'_>>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let h = x + self.self_attn.forward(
            &self.input_layernorm.forward(x),
            cos,
            sin,
            attend,
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
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
}

/// A preallocated key/value cache for incremental decoding. Tensors are allocated once for
/// `capacity` positions; each forward writes its new positions in place.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) len: i64,
    pub(crate) capacity: i64,
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

    /// Like [`KvCache::new`], but an allocation libtorch refuses (too large for the device's
    /// memory) is an error instead of a panic.
    pub fn try_new(model: &Llama, batch: i64, capacity: i64) -> Result<Self, crate::LmError> {
        let c = &model.config;
        let shape = [batch, c.kv_heads(), capacity, c.head_dim()];
        let opts = (model.kind(), model.device());
        let layers = (0..c.num_hidden_layers)
            .map(|_| {
                Ok(LayerCache {
                    k: Tensor::f_zeros(shape, opts)?,
                    v: Tensor::f_zeros(shape, opts)?,
                })
            })
            .collect::<Result<_, crate::LmError>>()?;
        Ok(Self { layers, len: 0, capacity })
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
    /// RoPE inverse frequencies [hd/2] (f32) when the config scales them
    /// ([`LlamaConfig::scaled_inv_freq`]); `None`: θ^(-2i/hd), computed in [`Llama::rope`].
    scaled_inv_freq: Option<Tensor>,
}

impl Llama {
    /// Creates the model's variables: frozen base weights (zeros, norms ones; load or
    /// [`init_random`] them) under `base` with Hugging Face names, in the kind of `base`'s
    /// VarStore (f32 unless set with `VarStore::set_kind` beforehand, as
    /// [`crate::random_llama`] does), and SVD-LoRA variables under `adapter` for the
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
            frozen_var(&model.sub("embed_tokens"), "weight", &[c.vocab_size, c.hidden_size], 0.0);
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
            frozen_var(&base.sub("lm_head"), "weight", &[c.vocab_size, c.hidden_size], 0.0)
        };
        let scaled_inv_freq = c.scaled_inv_freq().map(|f| {
            let f: Vec<f32> = f.iter().map(|&x| x as f32).collect();
            Tensor::from_slice(&f).to_device(base.device())
        });
        Self { config: c.clone(), embed_tokens, layers, norm, lm_head, scaled_inv_freq }
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
            scaled_inv_freq: self.scaled_inv_freq.as_ref().map(Tensor::shallow_clone),
        }
    }

    /// Re-lays out the frozen base weights for fast inference, in place and without a second
    /// copy: q/k/v and gate/up each become one buffer (one GEMM each when no adapter term
    /// applies); off the small-M kernel's path the buffers and o/down are pre-transposed
    /// (see [`stack_rows`]). Every variable keeps its name, shape and values (it becomes a view
    /// into the buffer), so outputs only change by floating-point summation order.
    /// [`crate::load_model`] calls it after the dtype conversion; call it again after
    /// converting the base VarStore (the forward notices the conversion and falls back to the
    /// per-projection path until then). Views from [`Llama::with_adapter`] created afterwards
    /// share the fused buffers.
    pub fn fuse_projections(&mut self) {
        for l in &mut self.layers {
            let a = &mut l.self_attn;
            a.qkv = FusedProj::new(&[&a.q_proj, &a.k_proj, &a.v_proj]);
            pretranspose(&a.o_proj);
            let m = &mut l.mlp;
            m.gate_up = FusedProj::new(&[&m.gate_proj, &m.up_proj]);
            pretranspose(&m.down_proj);
        }
    }

    /// Turns the grouped adapters of q/k/v and gate/up on or off (the default). With them on,
    /// an adapted forward of a fused model ([`Llama::fuse_projections`]) runs one base GEMM
    /// and one skinny GEMM pair per group ([`FoldedGroup`]); off, each projection runs its
    /// own base GEMM and adapter pair. Both compute the same function, equal within f32
    /// rounding (tested), not bit for bit: grouping stays opt-in until a GPU run shows it
    /// faster (on a CPU it was within noise at D = 256, benches/README.md), so that training
    /// runs keep reproducing their recorded numbers to the last digit.
    pub fn set_grouped_adapters(&mut self, on: bool) {
        for l in &mut self.layers {
            let groups = [l.self_attn.qkv.as_mut(), l.mlp.gate_up.as_mut()];
            for f in groups.into_iter().flatten() {
                f.group_adapters = on;
            }
        }
    }

    /// How many q/k/v and gate/up groups (two per layer at most) an adapted forward under
    /// `adapter` runs as one group ([`Llama::set_grouped_adapters`]). Per layer and adapted
    /// group that is one base GEMM and two skinny adapter GEMMs, instead of one base GEMM and
    /// two adapter GEMMs per projection (q/k/v: 3 GEMMs instead of 9; gate/up: 3 instead
    /// of 6).
    pub fn adapter_groups_in_use(&self, adapter: Adapter<'_>) -> usize {
        let group = |f: &Option<FusedProj>, members: &[&SvdLoraLinear]| {
            usize::from(f.as_ref().is_some_and(|f| f.groups(members, adapter)))
        };
        self.layers
            .iter()
            .map(|l| {
                let (a, m) = (&l.self_attn, &l.mlp);
                group(&a.qkv, &[&a.q_proj, &a.k_proj, &a.v_proj])
                    + group(&m.gate_up, &[&m.gate_proj, &m.up_proj])
            })
            .sum()
    }

    /// Whether every layer's fused q/k/v and gate/up buffers are in use (see
    /// [`Llama::fuse_projections`]).
    pub fn is_fused(&self) -> bool {
        self.layers.iter().all(|l| {
            let a = &l.self_attn;
            let m = &l.mlp;
            a.qkv
                .as_ref()
                .is_some_and(|f| f.usable(&[&a.q_proj, &a.k_proj, &a.v_proj], Adapter::Off))
                && m.gate_up
                    .as_ref()
                    .is_some_and(|f| f.usable(&[&m.gate_proj, &m.up_proj], Adapter::Off))
        })
    }

    /// Every projection of every layer (q, k, v, o, gate, up, down), in layer order.
    pub fn linears(&self) -> impl Iterator<Item = &SvdLoraLinear> {
        self.layers.iter().flat_map(|l| {
            let (a, m) = (&l.self_attn, &l.mlp);
            [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj, &m.gate_proj, &m.up_proj, &m.down_proj]
        })
    }

    /// [`Llama::linears`], mutable.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = &mut SvdLoraLinear> {
        self.layers.iter_mut().flat_map(|l| {
            let (a, m) = (&mut l.self_attn, &mut l.mlp);
            [
                &mut a.q_proj,
                &mut a.k_proj,
                &mut a.v_proj,
                &mut a.o_proj,
                &mut m.gate_proj,
                &mut m.up_proj,
                &mut m.down_proj,
            ]
        })
    }

    /// Runs `f` with every adapter's factors prepared for `pref` ([K] or [B, K]; see
    /// [`SvdLoraLinear::prepare`]) and drops them afterwards, so they cannot outlive the λ or
    /// the adapter values they were made from. For no-grad loops that call the model many times
    /// under `Adapter::On { pref }` with this same tensor, like generation; results are equal to
    /// the unprepared forward.
    pub fn with_prepared_adapter<R>(
        &mut self,
        pref: &Tensor,
        f: impl FnOnce(&Llama) -> R,
    ) -> Result<R, crate::LmError> {
        let prepared = self.linears_mut().try_for_each(|l| l.prepare(pref));
        if prepared.is_ok() {
            // The groups' factors too (the shape was checked by the members' `prepare`).
            for l in &mut self.layers {
                let (a, m) = (&mut l.self_attn, &mut l.mlp);
                a.qkv_prepared = PreparedGroup::new(&[&a.q_proj, &a.k_proj, &a.v_proj], pref);
                m.gate_up_prepared = PreparedGroup::new(&[&m.gate_proj, &m.up_proj], pref);
            }
        }
        let out = prepared.map(|()| f(self));
        self.linears_mut().for_each(SvdLoraLinear::unprepare);
        for l in &mut self.layers {
            l.self_attn.qkv_prepared = None;
            l.mlp.gate_up_prepared = None;
        }
        out.map_err(|e| crate::LmError::Invalid(format!("preparing the adapter: {e}")))
    }

    /// The dtype of the base weights (activations use it too).
    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// cos/sin tables for positions [B or 1, t] → [B or 1, 1, t, hd] each, in f32 then cast to the model
    /// dtype. The sin table's first half is negated (the sign of rotate_half, see `apply_rope`).
    fn rope(&self, positions: &Tensor) -> (Tensor, Tensor) {
        let hd = self.config.head_dim();
        let dev = positions.device();
        let inv_freq = match &self.scaled_inv_freq {
            Some(f) => f.to_device(dev), // [hd/2]
            None => (Tensor::arange_start_step(0, hd, 2, (Kind::Float, dev)) / hd as f64)
                .multiply_scalar(-(self.config.rope_theta.ln()))
                .exp(), // [hd/2] = θ^(-2i/hd)
        };
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq; // [B, t, hd/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1); // [B, 1, t, hd]
        let sin = emb.sin();
        let _ = sin.narrow(-1, 0, hd / 2).neg_(); // [-sin1, sin2]
        (emb.cos().to_kind(self.kind()), sin.to_kind(self.kind()))
    }

    /// The shared body of the full and the cached forward. ids [B, t]; mask [B, S] covers the
    /// `start` cached positions and the t new ones (S = start + t); `None` means every one of
    /// them is a real token (no padding anywhere).
    fn body(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let t = ids.size()[1];
        let start = cache.as_deref().map_or(0, |c| c.len);
        let s = start + t;
        let dev = ids.device();
        let mask = mask.map(|m| m.to_device(dev));
        // Unpadded rows need no boolean mask: `is_causal` (or no mask at all for one new token)
        // lets SDPA pick its fused kernels (flash on CUDA), which refuse one. Checking a given
        // mask costs one host sync, so only the first (prefill) call does it.
        let unpadded = match &mask {
            None => true,
            Some(m) => start == 0 && bool::try_from(m.ne(0).all()).unwrap_or(false),
        };
        let padded = mask.as_ref().filter(|_| !unpadded); // [B, S]
        let positions = match padded {
            // Positions count real tokens only, so left padding does not shift them.
            Some(m) => {
                let all = (m.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0); // [B, S]
                all.narrow(1, start, t) // [B, t]
            }
            None => Tensor::arange_start(start, s, (Kind::Int64, dev)).unsqueeze(0), // [1, t]
        };
        let (cos, sin) = self.rope(&positions);
        let key_idx = || Tensor::arange(s, (Kind::Int64, dev)); // [S]
        let query_idx = || Tensor::arange_start(start, s, (Kind::Int64, dev)); // [t]
        let causal = || key_idx().unsqueeze(0).le_tensor(&query_idx().unsqueeze(1)); // [t, S]
        let explicit = match padded {
            // [B, 1, t, S]. A padding query would otherwise see no key at all (NaN): it sees
            // itself.
            Some(m) => {
                let valid = m.to_kind(Kind::Bool).unsqueeze(1); // [B, 1, S]
                let diag = key_idx().unsqueeze(0).eq_tensor(&query_idx().unsqueeze(1)); // [t, S]
                Some(causal().logical_and(&valid).logical_or(&diag).unsqueeze(1))
            }
            // [1, 1, t, S]: a chunk after cached tokens still needs its causal part spelled out.
            None => (start > 0 && t > 1).then(|| causal().view([1, 1, t, s])),
        };
        let attend = match &explicit {
            Some(m) => Attend::Masked(m),
            None if start == 0 => Attend::Causal,
            None => Attend::Everything,
        };
        self.decoder(ids, &cos, &sin, attend, cache, adapter)
    }

    /// [`CausalLm::hidden_states`] with activation checkpointing per decoder layer: the layers
    /// run without autograd and keep only their inputs ([B, T, D] each); the returned
    /// [`Checkpointed::hidden`] takes part in the caller's graph from the last layer's output
    /// on (the final norm). After `loss.backward()`, [`Checkpointed::backward`] recomputes each
    /// layer from its saved input, last first, and backpropagates through it alone, so that at
    /// most one layer's activations are alive at a time. The gradients equal the plain
    /// forward's (the same operations on the same inputs; the model has no dropout).
    ///
    /// Why two calls: libtorch's autograd would run the recomputation inside one `backward`
    /// through a custom `autograd::Function`, which tch cannot define (it has no custom
    /// backward hooks), so the caller drives the second half itself.
    pub fn hidden_states_checkpointed(
        &self,
        ids: &Tensor,
        attention_mask: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_> {
        let t = ids.size()[1];
        let dev = ids.device();
        let mask = attention_mask.to_device(dev); // [B, T]
        let unpadded = bool::try_from(mask.ne(0).all()).unwrap_or(false);
        let (positions, explicit) = if unpadded {
            (Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0), None) // [1, T]
        } else {
            let positions = (mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0);
            let idx = Tensor::arange(t, (Kind::Int64, dev));
            let causal = idx.unsqueeze(0).le_tensor(&idx.unsqueeze(1)); // [T, T]
            let diag = idx.unsqueeze(0).eq_tensor(&idx.unsqueeze(1)); // [T, T]
            let valid = mask.to_kind(Kind::Bool).unsqueeze(1); // [B, 1, T]
            (positions, Some(causal.logical_and(&valid).logical_or(&diag).unsqueeze(1)))
        };
        let (cos, sin) = self.rope(&positions);
        self.checkpointed(ids, cos, sin, explicit, adapter)
    }

    /// [`Llama::hidden_states_packed`] with activation checkpointing per decoder layer, as
    /// [`Llama::hidden_states_checkpointed`] does it: ids [B, L], positions [B, L] (i64),
    /// attend [B, 1, L, L] (bool) → [`Checkpointed::hidden`] [B, L, D].
    pub fn hidden_states_packed_checkpointed(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_> {
        let (cos, sin) = self.rope(positions);
        self.checkpointed(ids, cos, sin, Some(attend.shallow_clone()), adapter)
    }

    /// The layers without autograd, keeping each one's input, then the final norm in the
    /// caller's graph (the shared body of the checkpointed forwards). `explicit`: the
    /// [B, 1, T, T] attention mask, `None` for causal attention.
    fn checkpointed(
        &self,
        ids: &Tensor,
        cos: Tensor,
        sin: Tensor,
        explicit: Option<Tensor>,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_> {
        let pref = match adapter {
            Adapter::Off => None,
            Adapter::On { pref } => Some(pref.shallow_clone()),
        };
        let mut inputs = Vec::with_capacity(self.layers.len());
        let last = tch::no_grad(|| {
            let attend = explicit.as_ref().map_or(Attend::Causal, Attend::Masked);
            let mut x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false); // [B, T, D]
            for layer in &self.layers {
                inputs.push(x.shallow_clone());
                x = layer.forward(&x, &cos, &sin, attend, None, adapter);
            }
            x
        });
        let last = last.detach().set_requires_grad(true); // [B, T, D], a leaf
        let hidden = self.norm.forward(&last); // [B, T, D]
        Checkpointed { model: self, hidden, last, inputs, cos, sin, explicit, pref }
    }

    /// Embedding, every layer and the final norm: ids [B, t] → [B, t, D], advancing `cache`.
    fn decoder(
        &self,
        ids: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        attend: Attend<'_>,
        cache: Option<&mut KvCache>,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let mut x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false); // [B, t, D]
        for (i, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref().map(|c| CacheSlot::Append(&c.layers[i], c.len));
            x = layer.forward(&x, cos, sin, attend, c, adapter);
        }
        if let Some(c) = cache {
            c.len += ids.size()[1];
        }
        self.norm.forward(&x) // [B, t, D]
    }

    /// One decode step over a fixed-capacity cache with every shape static: ids [B, 1] (the
    /// token each row feeds), positions [B, 1] (its RoPE position, i64), col [1] (i64, the
    /// cache column it is written to, the same for every row), keys [B, capacity] (bool, the
    /// cache columns this token attends to, its own column included) → final hidden states
    /// [B, 1, D]. Nothing here reads a value on the host or sizes a tensor from one, so the
    /// step can be captured as a CUDA graph ([`crate::static_decode`]).
    pub(crate) fn decode_step_static(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        col: &Tensor,
        keys: &Tensor,
        cache: &KvCache,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let (cos, sin) = self.rope(positions); // [B, 1, 1, hd]
        let (b, capacity) = (keys.size()[0], keys.size()[1]);
        let mask = keys.view([b, 1, 1, capacity]);
        let mut x = Tensor::embedding(&self.embed_tokens, ids, -1, false, false); // [B, 1, D]
        for (layer, c) in self.layers.iter().zip(&cache.layers) {
            let slot = Some(CacheSlot::Column(c, col));
            x = layer.forward(&x, &cos, &sin, Attend::Masked(&mask), slot, adapter);
        }
        self.norm.forward(&x) // [B, 1, D]
    }

    /// Final hidden states of packed rows, whose tokens carry explicit RoPE positions and an
    /// explicit attention pattern — several sequences sharing a prefix in one row, like the two
    /// responses of a DPO pair after their common prompt. ids [B, L], positions [B, L] (i64),
    /// attend [B, 1, L, L] (bool, true = query row may attend key column; every query must see
    /// at least one key) → [B, L, D]. The same layers as every other forward, so a token
    /// computes exactly what it computes in its own unpacked row.
    pub fn hidden_states_packed(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Tensor {
        let (cos, sin) = self.rope(positions);
        self.decoder(ids, &cos, &sin, Attend::Masked(attend), None, adapter)
    }

    /// Checks that t new tokens for `b` rows fit `cache`.
    fn check_cache(&self, b: i64, t: i64, cache: &KvCache) -> Result<(), crate::LmError> {
        let want = cache.len + t;
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
        Ok(())
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
        self.check_cache(b, t, cache)?;
        Ok(self.body(ids, Some(mask), Some(cache), adapter))
    }

    /// [`Llama::forward_cached`] for rows without padding: every cached position and every new
    /// token is real. No mask is built, so one new token attends through SDPA's unmasked
    /// (flash-decoding) kernels on CUDA, and nothing syncs with the host.
    pub fn forward_cached_unpadded(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        adapter: Adapter<'_>,
    ) -> Result<Tensor, crate::LmError> {
        let (b, t) = (ids.size()[0], ids.size()[1]);
        self.check_cache(b, t, cache)?;
        Ok(self.body(ids, None, Some(cache), adapter))
    }
}

/// A checkpointed forward ([`Llama::hidden_states_checkpointed`]): the final hidden states and
/// what the second half of the backward pass needs.
#[derive(Debug)]
pub struct Checkpointed<'m> {
    model: &'m Llama,
    /// Final hidden states [B, T, D], in the caller's graph from the last layer's output on.
    pub hidden: Tensor,
    /// The last layer's output [B, T, D]: the leaf where the caller's backward stops.
    last: Tensor,
    /// Each layer's input [B, T, D], without autograd history.
    inputs: Vec<Tensor>,
    cos: Tensor,
    sin: Tensor,
    /// [B, 1, T, T] when rows are padded; `None`: causal.
    explicit: Option<Tensor>,
    pref: Option<Tensor>,
}

impl Checkpointed<'_> {
    /// The second half of the backward pass, after the caller's `loss.backward()` reached
    /// [`Checkpointed::hidden`]: each layer, last first, is run again with autograd from its
    /// saved input, and the vector–Jacobian product with the gradient arriving at its output
    /// is backpropagated through it (Σ y ⊙ g has gradient g at y), accumulating into the
    /// adapter's `.grad` and handing the input's gradient to the layer before. Nothing to do
    /// when no gradient reached `hidden` (e.g. the loss did not use it).
    pub fn backward(self) {
        let grad = self.last.grad();
        if !grad.defined() {
            return;
        }
        let adapter = match &self.pref {
            Some(pref) => Adapter::On { pref },
            None => Adapter::Off,
        };
        let attend = self.explicit.as_ref().map_or(Attend::Causal, Attend::Masked);
        let mut g = grad; // [B, T, D]
        for (i, (layer, input)) in self.model.layers.iter().zip(&self.inputs).enumerate().rev() {
            // The first layer's input is the frozen embedding: no gradient needed there.
            let x = input.detach().set_requires_grad(i > 0);
            let y = layer.forward(&x, &self.cos, &self.sin, attend, None, adapter); // [B, T, D]
            if !y.requires_grad() {
                return; // nothing trainable below this point
            }
            (&y * &g).sum(y.kind()).backward();
            if i > 0 {
                g = x.grad();
            }
        }
    }
}

impl CausalLm for Llama {
    fn hidden_states(&self, ids: &Tensor, attention_mask: &Tensor, adapter: Adapter<'_>) -> Tensor {
        self.body(ids, Some(attention_mask), None, adapter)
    }

    fn hidden_states_checkpointed(
        &self,
        ids: &Tensor,
        attention_mask: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_> {
        Llama::hidden_states_checkpointed(self, ids, attention_mask, adapter)
    }

    fn lm_head(&self, hidden: &Tensor) -> Tensor {
        let size = hidden.size();
        let d = size.last().copied().unwrap_or(1);
        let rows = hidden.numel() as i64 / d.max(1);
        if let Some(y) = panacea_core::small_gemm::try_linear_f32(hidden, &self.lm_head, None) {
            return y; // [.., V], f32
        }
        if self.lm_head.device() == Device::Cpu && (2..=32).contains(&rows) {
            // A few rows (batched decoding): W·hᵀ streams the [V, D] head about 1.3× faster
            // than h·Wᵀ in libtorch's CPU BLAS (benches/README.md, "LM decode").
            let mut out = size[..size.len() - 1].to_vec();
            out.push(self.config.vocab_size);
            let y = self.lm_head.matmul(&hidden.reshape([rows, d]).tr()); // [V, rows]
            return y.tr().to_kind(Kind::Float).contiguous().view(out.as_slice());
            // [.., V]
        }
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
