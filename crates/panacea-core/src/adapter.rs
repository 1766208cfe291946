//! The SVD-LoRA preference adapter of Panacea (arXiv 2402.02030, Figure 2):
//!
//! ```text
//! W(λ) = W0 + c · U · diag(σ_1..σ_k, s·λ_1..s·λ_m) · Vᵀ        c = α / k
//! y    = x·W0ᵀ + b + c · ((x·V) ⊙ [σ; s·λ]) · Uᵀ
//! ```
//!
//! The preference λ is an argument of every forward ([`Adapter::On`]), never state stored in a
//! layer: the PPO ratio then always uses the λ a rollout was generated with, per-row λ comes for
//! free, and [`Adapter::Off`] is the frozen base, i.e. the reference model, without a second copy
//! of the weights.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::config::{Validate, Validator};
use crate::ops::grad_enabled;
use crate::CoreError;

/// Weight-decay group of U and V (the optimiser's default group).
pub const DECAY_GROUP: usize = 0;
/// Weight-decay group of σ and s: never decayed (docs/method.md, §10 item 4: decaying s pulls the
/// model back towards ignoring λ). Set it with `opt.set_weight_decay_group(NO_DECAY_GROUP, 0.0)`.
pub const NO_DECAY_GROUP: usize = 1;

/// Suffixes of the adapter variables of one adapted matrix, in the order U, V, σ, s.
pub const ADAPTER_VAR_SUFFIXES: [&str; 4] =
    ["svd_lora_u", "svd_lora_v", "svd_lora_sigma", "svd_lora_pref_scale"];

/// How a forward pass is conditioned.
#[derive(Clone, Copy, Debug)]
pub enum Adapter<'a> {
    /// The frozen base model (the reference policy): adapters contribute nothing.
    Off,
    /// The adapted model under preference `pref`: [K] for the whole batch or [B, K] for one
    /// preference per sequence. f32, on the model's device, never trainable.
    On {
        /// The preference vector(s).
        pref: &'a Tensor,
    },
}

/// Settings of the SVD-LoRA adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvdLoraConfig {
    /// k: learned singular values per adapted matrix.
    #[serde(default = "default_rank")]
    pub rank: i64,
    /// α; the adapter output is scaled by c = α / k (DeepSpeed-Chat's `lora_scaling / lora_dim`,
    /// not α / (k + m)).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// m: number of objectives, i.e. preference-carrying singular values.
    pub n_objectives: i64,
    /// Module names to adapt (the last path segment: `q_proj`, ..., `down_proj`).
    #[serde(default = "default_targets")]
    pub target_modules: Vec<String>,
    /// Standard deviation of the N(0, std²) init of U and V. σ and s start at 0, so the adapted
    /// model equals the base at step 0 for every λ.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
}

fn default_rank() -> i64 {
    8
}
fn default_alpha() -> f64 {
    512.0
}
fn default_init_std() -> f64 {
    0.02
}

/// The default target modules: every attention and MLP projection of a Llama block.
pub fn default_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        .map(str::to_owned)
        .to_vec()
}

impl SvdLoraConfig {
    /// A config with the defaults (k = 8, α = 512, all seven projections) for `m` objectives.
    pub fn new(n_objectives: i64) -> Self {
        Self {
            rank: default_rank(),
            alpha: default_alpha(),
            n_objectives,
            target_modules: default_targets(),
            init_std: default_init_std(),
        }
    }

    /// c = α / k.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Total adapter rank R = k + m.
    pub fn total_rank(&self) -> i64 {
        self.rank + self.n_objectives
    }

    /// Whether the module named `name` (last path segment) is adapted.
    pub fn targets(&self, name: &str) -> bool {
        self.target_modules.iter().any(|t| t == name)
    }

    /// Trainable parameters of one adapted [d_out, d_in] matrix: (d_in + d_out)·R + k + 1.
    pub fn params_per_matrix(&self, d_in: i64, d_out: i64) -> i64 {
        (d_in + d_out) * self.total_rank() + self.rank + 1
    }
}

impl Validate for SvdLoraConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(self.rank >= 1, "rank", format!("k must be ≥ 1, got {}", self.rank));
        v.check(
            self.n_objectives >= 1,
            "n_objectives",
            format!("m must be ≥ 1, got {}", self.n_objectives),
        );
        v.positive(self.alpha, "alpha");
        v.positive(self.init_std, "init_std");
        v.check(
            !self.target_modules.is_empty(),
            "target_modules",
            "must name at least one module, e.g. [q_proj, v_proj]",
        );
        for (i, t) in self.target_modules.iter().enumerate() {
            v.check(!t.trim().is_empty(), &format!("target_modules.{i}"), "must not be empty");
        }
    }
}

/// The trainable part of one adapted matrix. Lives in the adapter VarStore, always f32.
#[derive(Debug)]
pub struct SvdLora {
    /// U, left singular vectors: [d_out, R].
    pub u: Tensor,
    /// V, right singular vectors: [d_in, R].
    pub v: Tensor,
    /// σ, learned singular values: [k].
    pub sigma: Tensor,
    /// s, the per-matrix preference scale: [1].
    pub pref_scale: Tensor,
    /// c = α / k.
    pub scale: f64,
}

impl SvdLora {
    /// Creates the adapter variables under `p` (in the adapter VarStore).
    pub fn new(p: &nn::Path, cfg: &SvdLoraConfig, d_in: i64, d_out: i64) -> Self {
        let r = cfg.total_rank();
        let init = nn::Init::Randn { mean: 0.0, stdev: cfg.init_std };
        Self {
            u: p.set_group(DECAY_GROUP).var("svd_lora_u", &[d_out, r], init),
            v: p.set_group(DECAY_GROUP).var("svd_lora_v", &[d_in, r], init),
            sigma: p.set_group(NO_DECAY_GROUP).var(
                "svd_lora_sigma",
                &[cfg.rank],
                nn::Init::Const(0.0),
            ),
            pref_scale: p.set_group(NO_DECAY_GROUP).var(
                "svd_lora_pref_scale",
                &[1],
                nn::Init::Const(0.0),
            ),
            scale: cfg.scale(),
        }
    }

    /// The diagonal d = [σ; s·λ]: [R] for pref [K], [B, R] for pref [B, K].
    pub fn diagonal(&self, pref: &Tensor) -> Tensor {
        // λ in the master weights' dtype (f32, or f64 in gradient checks).
        let pref = pref.to_kind(self.sigma.kind()).to_device(self.sigma.device());
        let scaled = &self.pref_scale * &pref; // [K] or [B, K]
        match pref.dim() {
            1 => Tensor::cat(&[&self.sigma, &scaled], 0),
            2 => {
                let b = pref.size()[0];
                Tensor::cat(&[&self.sigma.unsqueeze(0).expand([b, -1], false), &scaled], 1)
            }
            d => panic!("preference must be [K] or [B, K], got {d} dimensions"),
        }
    }

    /// ΔW(λ) = c · U diag(d) Vᵀ: [d_out, d_in]. For one preference vector only.
    pub fn delta_weight(&self, pref: &Tensor) -> Tensor {
        let d = self.diagonal(pref); // [R]
        (&self.u * d.unsqueeze(0)).matmul(&self.v.tr()) * self.scale
    }

    /// The adapter's contribution c · ((x V) ⊙ d) Uᵀ for x [.., d_in] → [.., d_out], computed
    /// in x's dtype, exactly as the formula reads. This is the reference the fused
    /// [`SvdLora::add_to`] is tested against; it makes three extra passes over the [.., d_out]
    /// output (the product, the scale by c, the sum with the base output).
    pub fn forward(&self, x: &Tensor, pref: &Tensor) -> Tensor {
        let kind = x.kind();
        let d = self.diagonal(pref).to_kind(kind); // [R] or [B, R]
        let d = if d.dim() == 2 && x.dim() > 2 {
            // [B, R] → [B, 1, .., 1, R] so that row b's preference meets sequence b.
            let mut shape = vec![d.size()[0]];
            shape.extend(std::iter::repeat_n(1, x.dim() - 2));
            shape.push(d.size()[1]);
            d.view(shape.as_slice())
        } else {
            d
        };
        let xv = x.matmul(&self.v.to_kind(kind)); // [.., R]
        (xv * d).matmul(&self.u.to_kind(kind).tr()) * self.scale // [.., d_out]
    }

    /// y + c · ((x V) ⊙ d) Uᵀ, with y [.., d_out] the base output and x [.., d_in], fused so that
    /// the [N, d_out] output is touched once more, not four times (N = all leading dims):
    ///
    /// - λ [K]: c·d is folded into V's columns (a [d_in, R] op), then
    ///   `y = addmm(y, x·(V·diag(c·d)), Uᵀ)` adds the low-rank product inside the GEMM;
    /// - λ [B, K]: x·V [N, R] is scaled per row (a small [N, R] op) before the same `addmm`.
    ///
    /// Master weights stay f32; U and V (with the folded diagonal) are cast to x's dtype.
    pub fn add_to(&self, y: &Tensor, x: &Tensor, pref: &Tensor) -> Tensor {
        self.fold(pref, x.kind()).add_to(y, x)
    }

    /// The factors [`SvdLora::add_to`] multiplies by, for `pref` and activations of dtype
    /// `kind`: V with c·d folded into its columns (λ [K]) or V and a per-row scale (λ [B, K]),
    /// and Uᵀ, all cast to `kind`.
    fn fold(&self, pref: &Tensor, kind: Kind) -> Folded {
        let cd = self.diagonal(pref) * self.scale; // [R] or [B, R], f32
        let (v, row_scale) = if cd.dim() == 1 {
            ((&self.v * cd.unsqueeze(0)).to_kind(kind), None) // [d_in, R]
        } else {
            (self.v.to_kind(kind), Some(cd.to_kind(kind).unsqueeze(1))) // [d_in, R], [B, 1, R]
        };
        Folded { v, row_scale, u_t: self.u.to_kind(kind).tr() }
    }

    /// The adapter variables with their names relative to the module (see
    /// [`ADAPTER_VAR_SUFFIXES`]).
    pub fn named_tensors(&self) -> [(&'static str, &Tensor); 4] {
        [
            (ADAPTER_VAR_SUFFIXES[0], &self.u),
            (ADAPTER_VAR_SUFFIXES[1], &self.v),
            (ADAPTER_VAR_SUFFIXES[2], &self.sigma),
            (ADAPTER_VAR_SUFFIXES[3], &self.pref_scale),
        ]
    }
}

/// The adapters of projections that read the same input and whose outputs lie side by side in
/// one fused base output (q/k/v, gate/up: panacea-lm's fused base layout), folded for one
/// preference so that the whole group adds its low-rank terms with one skinny GEMM pair
/// instead of one pair per projection:
///
/// ```text
/// V_g  = [V_1 | V_2 | ..]                        [d_in, ΣR]     one cat
/// cd_g = [c·d_1 | c·d_2 | ..]                    [ΣR] or [B, ΣR]
/// U_gᵀ = blockdiag(U_1ᵀ, U_2ᵀ, ..)               [ΣR, Σd_out]
/// y    = addmm(y_base, (x·V_g) ⊙ cd_g, U_gᵀ)     [N, Σd_out]
/// ```
///
/// Why a block-diagonal U and not a batched product: the members' widths differ under
/// grouped-query attention (q is H·hd wide, k and v Hkv·hd), so a `bmm` would need equal
/// blocks, and its [G, N, d_out] result would need another pass to be interleaved into the
/// fused [N, Σd_out] output. One `addmm` against the block-diagonal U writes the fused output
/// once, in place of the base GEMM's result. It multiplies G−1 zero blocks too (G× the flops
/// of the per-projection products), but with ΣR ≤ a few dozen columns the GEMM is bound by
/// reading and writing its [N, Σd_out] output, not by flops. The diagonal and the scale c are
/// one elementwise op: folded into V's columns (λ [K]) or one row scale of x·V_g (λ [B, K]).
///
/// A member without an adapter (say `target_modules: [q_proj, v_proj]`) gets a zero-width
/// block: its output columns receive nothing.
///
/// Gradients flow to every member's U, V, σ and s through the cat and the block diagonal
/// (their backward passes are slices of the group's gradient).
#[derive(Debug)]
pub struct FoldedGroup {
    folded: Folded,
}

impl FoldedGroup {
    /// Folds the group's adapters: `members` are (adapter, d_out) in the order of the fused
    /// output's columns. `None` when no member has an adapter, or when the adapted members
    /// differ in k, m or c (one model has one adapter config, so this does not happen there).
    pub fn new(members: &[(Option<&SvdLora>, i64)], pref: &Tensor, kind: Kind) -> Option<Self> {
        let adapted: Vec<&SvdLora> = members.iter().filter_map(|(l, _)| *l).collect();
        let first = *adapted.first()?;
        let (k, r) = (first.sigma.size()[0], first.v.size()[1]);
        let same = adapted
            .iter()
            .all(|l| l.sigma.size()[0] == k && l.v.size()[1] == r && l.scale == first.scale);
        if !same {
            return None;
        }
        let g = adapted.len() as i64;
        let m = r - k;
        let pref = pref.to_kind(first.sigma.kind()).to_device(first.sigma.device());
        // The diagonals of all members at once: σ [G, k], s [G, 1], then c·[σ; s·λ] per member.
        let sigma = Tensor::cat(&adapted.iter().map(|l| &l.sigma).collect::<Vec<_>>(), 0);
        let sigma = sigma.view([g, k]); // [G, k]
        let s = Tensor::cat(&adapted.iter().map(|l| &l.pref_scale).collect::<Vec<_>>(), 0);
        let s = s.view([g, 1]); // [G, 1]
        let cd = match pref.dim() {
            // [G, k] ++ [G, m] → [G·R]
            1 => Tensor::cat(&[sigma, s * pref.view([1, m])], 1).view([g * r]),
            // [B, G, k] ++ [B, G, m] → [B, G·R]
            2 => {
                let b = pref.size()[0];
                let scaled = s.unsqueeze(0) * pref.view([b, 1, m]); // [B, G, m]
                Tensor::cat(&[sigma.unsqueeze(0).expand([b, g, k], false), scaled], 2)
                    .view([b, g * r])
            }
            d => panic!("preference must be [K] or [B, K], got {d} dimensions"),
        } * first.scale;
        let v = Tensor::cat(&adapted.iter().map(|l| &l.v).collect::<Vec<_>>(), 1); // [d_in, ΣR]
        let (v, row_scale) = if cd.dim() == 1 {
            ((v * cd.unsqueeze(0)).to_kind(kind), None) // [d_in, ΣR]
        } else {
            (v.to_kind(kind), Some(cd.to_kind(kind).unsqueeze(1))) // [d_in, ΣR], [B, 1, ΣR]
        };
        let opts = (first.u.kind(), first.u.device());
        let blocks: Vec<Tensor> = members
            .iter()
            .map(|(l, d_out)| match l {
                Some(l) => l.u.shallow_clone(),           // [d_out, R]
                None => Tensor::zeros([*d_out, 0], opts), // no columns in the product
            })
            .collect();
        let u = Tensor::block_diag(&blocks); // [Σd_out, ΣR]
        Some(Self { folded: Folded { v, row_scale, u_t: u.to_kind(kind).tr() } })
    }

    /// y + (x·V_g (⊙ row scale))·U_gᵀ: y [.., Σd_out] the fused base output, x [.., d_in].
    pub fn add_to(&self, y: &Tensor, x: &Tensor) -> Tensor {
        self.folded.add_to(y, x)
    }

    /// The dtype the factors were cast to.
    pub fn kind(&self) -> Kind {
        self.folded.v.kind()
    }
}

/// An adapter's factors folded for one preference (see [`SvdLora::fold`]).
#[derive(Debug)]
struct Folded {
    /// λ [K]: V·diag(c·d); λ [B, K]: V. [d_in, R].
    v: Tensor,
    /// λ [B, K] only: c·d per row, [B, 1, R].
    row_scale: Option<Tensor>,
    /// Uᵀ: [R, d_out] (a transposed view).
    u_t: Tensor,
}

impl Folded {
    /// y + (x·V (⊙ row scale))·Uᵀ inside one `addmm`: y [.., d_out], x [.., d_in] → [.., d_out].
    fn add_to(&self, y: &Tensor, x: &Tensor) -> Tensor {
        let out_size = y.size();
        let (d_in, r) = (self.v.size()[0], self.v.size()[1]);
        let d_out = out_size.last().copied().unwrap_or(1);
        let xv = match &self.row_scale {
            None => x.reshape([-1, d_in]).matmul(&self.v), // [N, R]
            Some(cd) => {
                let xv = x.reshape([cd.size()[0], -1, d_in]).matmul(&self.v); // [B, N/B, R]
                (xv * cd).reshape([-1, r]) // [N, R]
            }
        };
        y.reshape([-1, d_out]).addmm(&xv, &self.u_t).view(out_size.as_slice()) // [.., d_out]
    }
}

/// A merged weight W0 + ΔW(λ) for one fixed λ, kept next to (never instead of) W0.
#[derive(Debug)]
struct Merged {
    /// W0 + ΔW(λ) in W0's dtype: [d_out, d_in].
    weight: Tensor,
    /// λ it was merged at, f32 on the weight's device: [K].
    pref: Tensor,
    /// Address of the tensor the caller merged with: passing that same tensor to `forward`
    /// skips the value comparison (and its device sync).
    pref_ptr: usize,
}

/// The adapter's factors for one preference, cast and folded once for a no-grad decode loop
/// (see [`SvdLoraLinear::prepare`]): each step then adds two small GEMMs (and a row scale),
/// instead of recomputing the diagonal, the fold and the casts (about 8 kernels per layer and
/// step, which bound GPU decoding by launch overhead).
#[derive(Debug)]
struct Prepared {
    /// Address and shape of the preference tensor it was prepared for.
    pref_ptr: usize,
    pref_size: Vec<i64>,
    /// In W0's dtype.
    folded: Folded,
}

/// A frozen linear layer (weight [d_out, d_in], optional bias) that an SVD-LoRA adapter may wrap.
/// Every linear layer of the language model is one of these, so a single type serves the base,
/// the reference (`Adapter::Off`) and the adapted policy.
///
/// **Merging** ([`SvdLoraLinear::merge`]) stores W0 + ΔW(λ) *next to* W0 as a cache for fast
/// generation at one λ. W0 itself is never written, so merge/unmerge cannot drift and
/// `Adapter::Off` stays the base. The cache is used only when it is valid: grad mode off, λ of
/// shape [K] and equal to the merged λ. Otherwise (training, a mixed-λ batch, another λ) the
/// layer silently takes the exact unmerged path, so training while merged or merging for the
/// wrong λ cannot give wrong numbers or lost gradients.
#[derive(Debug)]
pub struct SvdLoraLinear {
    /// W0: [d_out, d_in], frozen (base VarStore).
    pub weight: Tensor,
    /// b0: [d_out], frozen.
    pub bias: Option<Tensor>,
    /// The adapter, when this module is a target.
    pub lora: Option<SvdLora>,
    merged: Option<Merged>,
    prepared: Option<Prepared>,
}

impl SvdLoraLinear {
    /// Creates the frozen base variables `weight` (and `bias`) under `base`, and, when
    /// `adapter` is given, the adapter variables under that path (same HF-style name, other
    /// VarStore).
    pub fn new(
        base: &nn::Path,
        adapter: Option<(&nn::Path, &SvdLoraConfig)>,
        d_in: i64,
        d_out: i64,
        bias: bool,
    ) -> Self {
        let weight = frozen_var(base, "weight", &[d_out, d_in], 0.0);
        let bias = bias.then(|| frozen_var(base, "bias", &[d_out], 0.0));
        let lora = adapter.map(|(p, cfg)| SvdLora::new(p, cfg, d_in, d_out));
        Self { weight, bias, lora, merged: None, prepared: None }
    }

    /// Builds a layer from existing tensors: a frozen weight [d_out, d_in] (e.g. shared with
    /// another model through `shallow_clone`), an optional bias [d_out] and an optional adapter.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>, lora: Option<SvdLora>) -> Self {
        Self { weight, bias, lora, merged: None, prepared: None }
    }

    /// y = x·W0ᵀ + b (+ the adapter under [`Adapter::On`]). x [.., d_in] → [.., d_out].
    pub fn forward(&self, x: &Tensor, adapter: Adapter<'_>) -> Tensor {
        match (adapter, &self.lora) {
            (Adapter::On { pref }, Some(lora)) => {
                if let Some(merged) = self.merged.as_ref().filter(|m| Self::cache_hit(m, pref)) {
                    let w = &merged.weight;
                    return crate::small_gemm::linear(x, w, self.bias.as_ref()); // [.., d_out]
                }
                let y = crate::small_gemm::linear(x, &self.weight, self.bias.as_ref()); // [.., d_out]
                match self.prepared.as_ref().filter(|p| Self::prepared_hit(p, pref, x)) {
                    Some(p) => p.folded.add_to(&y, x), // the same operations as add_to
                    None => lora.add_to(&y, x, pref),  // [.., d_out]
                }
            }
            _ => crate::small_gemm::linear(x, &self.weight, self.bias.as_ref()), // [.., d_out]
        }
    }

    /// The unfused reference forward (formula as written); used by tests and benches.
    pub fn forward_reference(&self, x: &Tensor, adapter: Adapter<'_>) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match (adapter, &self.lora) {
            (Adapter::On { pref }, Some(lora)) => y + lora.forward(x, pref),
            _ => y,
        }
    }

    fn prepared_hit(p: &Prepared, pref: &Tensor, x: &Tensor) -> bool {
        !grad_enabled()
            && pref.data_ptr() as usize == p.pref_ptr
            && pref.size() == p.pref_size
            && x.kind() == p.folded.v.kind()
    }

    fn cache_hit(merged: &Merged, pref: &Tensor) -> bool {
        if grad_enabled() || pref.dim() != 1 {
            return false;
        }
        if pref.data_ptr() as usize == merged.pref_ptr && pref.size() == merged.pref.size() {
            return true;
        }
        // A different tensor: compare values (a device sync on GPUs).
        pref.size() == merged.pref.size()
            && pref.to_kind(Kind::Float).to_device(merged.pref.device()).equal(&merged.pref)
    }

    /// Caches W0 + ΔW(λ) for generation at the fixed preference `pref` [K]. Forwards under
    /// `Adapter::On { pref }` with grad mode off then cost exactly one GEMM, like the base.
    /// Pass the same tensor to `forward` to skip a value comparison; do not modify it in place
    /// while merged. A layer without an adapter ignores the call.
    ///
    /// The merge runs in f32 and is rounded once to W0's dtype, from the untouched W0: merging
    /// again (another λ) or unmerging never accumulates error.
    pub fn merge(&mut self, pref: &Tensor) -> Result<(), CoreError> {
        let Some(lora) = &self.lora else { return Ok(()) };
        let k = lora.v.size()[1] - lora.sigma.size()[0];
        if pref.size() != [k] {
            return Err(CoreError::Shape {
                what: "merge preference (one λ for the whole batch; mixed-λ batches cannot be \
                       merged)"
                    .into(),
                expected: vec![k],
                got: pref.size(),
            });
        }
        let _guard = tch::no_grad_guard();
        let device = self.weight.device();
        let pref_f32 = pref.to_kind(Kind::Float).to_device(device).copy(); // [K]
        let delta = lora.delta_weight(&pref_f32); // [d_out, d_in], f32
        let weight = (self.weight.to_kind(Kind::Float) + delta).to_kind(self.weight.kind());
        self.merged = Some(Merged { weight, pref: pref_f32, pref_ptr: pref.data_ptr() as usize });
        Ok(())
    }

    /// Casts and folds the adapter's factors once for `pref` ([K] or [B, K]) so that forwards
    /// under `Adapter::On { pref }` with grad mode off, given this very tensor, skip that work:
    /// a decode loop calls the layer once per token with the same λ. Unlike [`Self::merge`] it
    /// serves per-row preferences and keeps the adapter's two small GEMMs, so its results equal
    /// the unprepared path exactly. The factors are a snapshot: drop them with
    /// [`Self::unprepare`] before the adapter trains again (`Llama::with_prepared_adapter`
    /// scopes both). A layer without an adapter ignores the call.
    pub fn prepare(&mut self, pref: &Tensor) -> Result<(), CoreError> {
        let Some(lora) = &self.lora else { return Ok(()) };
        let k = lora.v.size()[1] - lora.sigma.size()[0];
        if pref.size().last() != Some(&k) || !(1..=2).contains(&pref.dim()) {
            return Err(CoreError::Shape {
                what: "prepared preference ([K] or [B, K])".into(),
                expected: vec![k],
                got: pref.size(),
            });
        }
        let folded = tch::no_grad(|| lora.fold(pref, self.weight.kind()));
        self.prepared =
            Some(Prepared { pref_ptr: pref.data_ptr() as usize, pref_size: pref.size(), folded });
        Ok(())
    }

    /// Drops the prepared factors (see [`Self::prepare`]).
    pub fn unprepare(&mut self) {
        self.prepared = None;
    }

    /// Whether prepared factors are held (see [`Self::prepare`]).
    pub fn is_prepared(&self) -> bool {
        self.prepared.is_some()
    }

    /// Drops the merged cache; forwards use W0 and the adapter path again.
    pub fn unmerge(&mut self) {
        self.merged = None;
    }

    /// Whether a merged weight is cached.
    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }
}

/// A frozen (never trainable) variable `name` of shape `dims` under `p`, filled with `value`,
/// in the kind of `p`'s VarStore (f32 unless `VarStore::set_kind` chose another before any
/// variable was made). tch's `zeros_no_train` always allocates f32; building a model's frozen
/// base through this instead lets a bf16 model be made in bf16 directly, never holding its
/// f32 copy (an 8B model: 16 GB, where f32 first would need 32 GB).
pub fn frozen_var(p: &nn::Path, name: &str, dims: &[i64], value: f64) -> Tensor {
    p.add(name, Tensor::full(dims, value, (p.kind(), p.device())), false)
}

/// The trainable adapter variables of a VarStore, sorted by name (tch's `variables()` is a
/// HashMap; sorting keeps checkpoints and optimiser set-up deterministic).
pub fn adapter_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| ADAPTER_VAR_SUFFIXES.iter().any(|s| name.ends_with(s)))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Number of scalar parameters in `vars`.
pub fn count_parameters(vars: &[(String, Tensor)]) -> i64 {
    vars.iter().map(|(_, t)| t.numel() as i64).sum()
}
