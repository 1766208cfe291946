//! AdamW over a VarStore with a state that can be saved and restored exactly.
//!
//! tch's `nn::Optimizer` wraps libtorch's C++ optimiser, whose moments cannot be read or
//! written from Rust. A resumed run must end with the same weights as an uninterrupted one
//! (bit-exact on the CPU), so the trainers use this optimiser instead: the moments are plain
//! tensors saved next to the adapter.
//!
//! Update (Loshchilov & Hutter, decoupled weight decay; PyTorch's `torch.optim.AdamW`):
//!
//! ```text
//! m ← β1·m + (1 − β1)·g            v ← β2·v + (1 − β2)·g²
//! p ← p·(1 − lr·wd)                (only parameters in the decay group)
//! p ← p − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε)
//! ```
//!
//! Parameters created in [`NO_DECAY_GROUP`] (σ and s of the SVD-LoRA layers) never decay.
//!
//! **Learning-rate multipliers.** [`AdamW::set_lr_multiplier`] scales the Adam step of selected
//! parameters (like a PyTorch parameter group with its own `lr`): the adapter's
//! [`AdapterLrMultipliers`] use it to let the preference scales s move faster than the shared
//! singular values. Adam's step is invariant to the gradient's scale, so scaling gradients
//! would not do this. Decoupled decay keeps the base rate (σ and s never decay anyway). With
//! every multiplier at 1 nothing extra is computed, so the bits are unchanged.
//!
//! **One buffer for all parameters.** An adapter has hundreds of small tensors (4 per adapted
//! linear layer: 840 for SmolLM2-135M), and a per-tensor update launches about 13 kernels for
//! each: ~11,000 launches per step, plus ~3,400 for clipping and zeroing, which made the
//! optimiser the slowest part of a GPU step (launch-bound at ~10 µs each). So when every
//! trainable parameter is f32 on one device, they become views into one flat buffer (the
//! VarStore's variables keep their names and shapes; their storage moves, like
//! `Llama::fuse_projections` does for the base), the moments are flat too, and after the first
//! backward each gradient is re-pointed into one flat gradient buffer, into which later
//! backward passes accumulate in place. A step is then about 15 kernels whatever the number of
//! tensors. The arithmetic is the same element-wise operations in the same order, so both
//! layouts give the same bits. If a variable's storage is replaced later (a dtype or device
//! change of the VarStore), the optimiser notices and falls back to the per-tensor loop.
//!
//! **A capture-safe step.** [`AdamW::clip_and_step_on_device`] is clipping plus the update with
//! nothing read on the host, so that a trainer can record it into a CUDA graph with its forward
//! and backward and replay it: the norm, the clipping coefficient min(1, c / (‖g‖ + 10⁻⁶)) and
//! the finiteness checks stay on the device, and the host numbers that change between steps
//! (learning rate, the bias corrections of step t, the decay factor) are written into small
//! device tensors ([`DeviceStepScalars`]) before each run, outside any capture. It gates instead
//! of branching: with a non-finite loss or norm the values and moments keep their bits, as the
//! eager trainers' guards leave them. It needs the flat layout; on the CPU it gives the eager
//! step's bits (tested).
//!
//! **Why decoupled decay matters here.** At init the diagonal d is zero, so U and V get exactly
//! zero loss gradient (docs/method.md, §2.3). With Adam's coupled L2 (`g += wd·p`, tch's `nn::Adam`)
//! the decay term is then the whole gradient, and Adam's normalisation turns it into a full
//! lr-sized step towards zero on every entry: U and V (std 0.02) collapse within a few dozen
//! steps and the adapter dies. Measured on the PPO default before this optimiser: U's std fell
//! from 0.02 to 0.0009 in 80 updates at lr 2e-3, and λ = e_1 and e_2 gave identical responses.
//! Decoupled decay shrinks by the factor (1 − lr·wd) = 1 − 2·10⁻⁵ instead.

use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::adapter::NO_DECAY_GROUP;
use crate::checkpoint::write_safetensors_atomic;
use crate::CoreError;

/// AdamW hyper-parameters (the learning rate is set per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// β1 (default 0.9).
    pub beta1: f64,
    /// β2 (default 0.95, docs/method.md, §6.6).
    pub beta2: f64,
    /// ε (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay for the decay group (default 0).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Learning-rate multipliers of the SVD-LoRA adapter's parameter kinds (`optim.lr_multipliers`
/// in every trainer's config), relative to the actor's `lr`.
///
/// Why: Adam moves every parameter by about `lr` per step whatever its gradient's size, so the
/// one scale s per layer, which sets how strongly λ enters, grows no faster than each shared
/// singular value σ_j, of which there are k. A larger `pref_scale` multiplier lets the
/// preference part keep up with the shared part (docs/method.md, "How strongly λ steers").
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterLrMultipliers {
    /// The shared singular values σ (`svd_lora_sigma`), default 1.
    #[serde(default = "one")]
    pub sigma: f64,
    /// The per-layer preference scales s (`svd_lora_pref_scale`), default 1.
    #[serde(default = "one")]
    pub pref_scale: f64,
    /// The singular vectors U and V (`svd_lora_u`, `svd_lora_v`), default 1.
    #[serde(default = "one")]
    pub vectors: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for AdapterLrMultipliers {
    fn default() -> Self {
        Self { sigma: 1.0, pref_scale: 1.0, vectors: 1.0 }
    }
}

impl AdapterLrMultipliers {
    /// Each multiplier with its key, for validation messages.
    pub fn named(&self) -> [(&'static str, f64); 3] {
        [("sigma", self.sigma), ("pref_scale", self.pref_scale), ("vectors", self.vectors)]
    }

    /// Applies the multipliers to an optimiser over an adapter VarStore (parameters are matched
    /// by their name's last component).
    pub fn apply(&self, opt: &mut AdamW) {
        let last = |name: &str| name.rsplit('.').next().unwrap_or(name).to_owned();
        opt.set_lr_multiplier(|n| last(n) == "svd_lora_sigma", self.sigma);
        opt.set_lr_multiplier(|n| last(n) == "svd_lora_pref_scale", self.pref_scale);
        opt.set_lr_multiplier(
            |n| matches!(last(n).as_str(), "svd_lora_u" | "svd_lora_v"),
            self.vectors,
        );
    }
}

struct Param {
    name: String,
    tensor: Tensor,
    decay: bool,
    /// Multiplier of the Adam step (1 unless [`AdamW::set_lr_multiplier`] chose it).
    lr_multiplier: f64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// The flat layout (see the module docs): `params[i]`'s values, gradient and moments are the
/// elements `offsets[i]..offsets[i] + numel` of these buffers, decayed parameters first.
struct Flat {
    values: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Gradients, once adopted after the first backward.
    grads: Option<Tensor>,
    /// Per-element step multipliers [P], present while some multiplier is not 1.
    lr_multipliers: Option<Tensor>,
    offsets: Vec<i64>,
    /// Elements `0..decay_len` belong to the decay group.
    decay_len: i64,
}

impl Flat {
    /// Moves every parameter (and its moments) into flat buffers, decayed ones first; `None`
    /// (nothing changes) unless all are f32 on one device.
    fn build(params: &mut [Param]) -> Option<Flat> {
        let first = params.first()?;
        let device = first.tensor.device();
        if params.iter().any(|p| p.tensor.kind() != Kind::Float || p.tensor.device() != device) {
            return None;
        }
        // Stable order: decayed parameters first, each group in name order.
        let mut order: Vec<usize> = (0..params.len()).collect();
        order.sort_by_key(|&i| !params[i].decay);
        let mut offsets = vec![0i64; params.len()];
        let mut total = 0i64;
        let mut decay_len = 0i64;
        for &i in &order {
            offsets[i] = total;
            total += params[i].tensor.numel() as i64;
            if params[i].decay {
                decay_len = total;
            }
        }
        let opts = (Kind::Float, device);
        let flat = Flat {
            values: Tensor::zeros([total], opts),
            exp_avg: Tensor::zeros([total], opts),
            exp_avg_sq: Tensor::zeros([total], opts),
            grads: None,
            lr_multipliers: None,
            offsets,
            decay_len,
        };
        tch::no_grad(|| {
            for (p, &off) in params.iter_mut().zip(&flat.offsets) {
                let shape = p.tensor.size();
                let n = p.tensor.numel() as i64;
                let view = |buf: &Tensor| buf.narrow(0, off, n).view(shape.as_slice());
                view(&flat.values).copy_(&p.tensor);
                view(&flat.exp_avg).copy_(&p.exp_avg);
                view(&flat.exp_avg_sq).copy_(&p.exp_avg_sq);
                // The variable keeps its identity (name, requires_grad, VarStore entry); only its
                // storage moves into the buffer.
                p.tensor.set_data(&view(&flat.values));
                p.exp_avg = view(&flat.exp_avg);
                p.exp_avg_sq = view(&flat.exp_avg_sq);
            }
        });
        Some(flat)
    }
}

/// One unit of an update (see [`AdamW::slots`]): values, gradient, moments (f32), the part
/// of the values in the decay group, and the step multipliers when some are not 1.
struct Slot {
    w: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    decayed: Option<Tensor>,
    lr_multiplier: Option<Tensor>,
}

/// The device tensors a capture-safe AdamW update reads ([`AdamW::device_scalars`]): every
/// host number that changes between steps, written by [`AdamW::write_device_scalars`] before a
/// run, so that a replayed graph reads them from fixed device memory.
#[derive(Debug)]
pub struct DeviceStepScalars {
    /// The learning rate: [] f64.
    pub lr: Tensor,
    /// lr / (1 − β1ᵗ): [] f64.
    pub lr_over_bias1: Tensor,
    /// √(1 − β2ᵗ): [] f64.
    pub bias2_sqrt: Tensor,
    /// 1 − lr·wd, the decoupled decay factor: [] f64.
    pub decay: Tensor,
    /// Whether the update may apply at all: [] bool (false for warm-ups).
    pub apply: Tensor,
}

impl DeviceStepScalars {
    /// Lets the next update apply or not (false for a warm-up before a capture), outside any
    /// capture.
    pub fn set_apply(&self, apply: bool) {
        let _ = tch::no_grad(|| self.apply.shallow_clone().fill_(i64::from(apply)));
    }
}

/// AdamW over the trainable variables of one VarStore, in name order.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    flat: Option<Flat>,
    lr: f64,
    steps: u64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("cfg", &self.cfg)
            .field("params", &self.params.len())
            .field("lr", &self.lr)
            .field("steps", &self.steps)
            .finish()
    }
}

impl AdamW {
    /// An optimiser over every trainable variable of `vs` with learning rate `lr`.
    pub fn new(vs: &nn::VarStore, cfg: AdamWConfig, lr: f64) -> Self {
        // Only read here; a lock poisoned by a panic elsewhere still holds valid names.
        let vars = vs.variables_.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut named: Vec<(&String, &Tensor)> = vars.named_variables.iter().collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let mut params = Vec::new();
        for (name, tensor) in named {
            let Some(var) =
                vars.trainable_variables.iter().find(|v| v.tensor.data_ptr() == tensor.data_ptr())
            else {
                continue; // frozen
            };
            params.push(Param {
                name: name.clone(),
                tensor: tensor.shallow_clone(),
                decay: var.group != NO_DECAY_GROUP,
                lr_multiplier: 1.0,
                exp_avg: tensor.zeros_like().to_kind(Kind::Float),
                exp_avg_sq: tensor.zeros_like().to_kind(Kind::Float),
            });
        }
        drop(vars);
        let flat = Flat::build(&mut params);
        Self { cfg, params, flat, lr, steps: 0 }
    }

    /// The flat layout while every parameter still lives in it (a VarStore dtype or device
    /// change replaces the variables' storage; then the per-tensor path takes over for good).
    fn flat_in_use(&mut self) -> bool {
        let intact = self.flat.as_ref().is_some_and(|f| {
            let base = f.values.data_ptr() as usize;
            self.params
                .iter()
                .zip(&f.offsets)
                .all(|(p, &off)| p.tensor.data_ptr() as usize == base + off as usize * 4)
        });
        if !intact {
            self.flat = None;
        }
        intact
    }

    /// The flat gradient buffer, adopting the parameters' gradients into it on first use.
    /// `None` while some parameter has no gradient (the per-tensor path then skips it).
    fn flat_grads(&mut self) -> Option<Tensor> {
        if !self.flat_in_use() {
            return None;
        }
        let (params, flat) = (&self.params, self.flat.as_mut()?);
        let base = flat.grads.as_ref().map(|g| g.data_ptr() as usize);
        let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).collect();
        if grads.iter().any(|g| !g.defined()) {
            return None;
        }
        let adopted = base.is_some_and(|base| {
            grads
                .iter()
                .zip(&flat.offsets)
                .all(|(g, &off)| g.data_ptr() as usize == base + off as usize * 4)
        });
        if !adopted {
            // Re-point every gradient into one buffer; later backward passes accumulate into
            // these views in place (autograd adds to a defined gradient).
            let mut in_buffer_order: Vec<usize> = (0..grads.len()).collect();
            in_buffer_order.sort_by_key(|&i| flat.offsets[i]);
            let pieces: Vec<Tensor> =
                in_buffer_order.iter().map(|&i| grads[i].detach().reshape([-1])).collect();
            let buf = tch::no_grad(|| Tensor::cat(&pieces, 0)); // [P]
            for ((mut g, p), &off) in grads.into_iter().zip(params).zip(&flat.offsets) {
                g.set_data(
                    &buf.narrow(0, off, p.tensor.numel() as i64).view(p.tensor.size().as_slice()),
                );
            }
            flat.grads = Some(buf);
        }
        flat.grads.as_ref().map(Tensor::shallow_clone)
    }

    /// The gradient tensors the next update reads: the one flat gradient buffer while the
    /// flat layout holds, else each parameter's gradient (those that have one). Data-parallel
    /// training reduces these in place across processes between the backward and
    /// [`AdamW::clip_grad_norm`]: one collective per step with the flat layout.
    pub fn gradients(&mut self) -> Vec<Tensor> {
        self.slots().into_iter().map(|s| s.g).collect()
    }

    /// Leaves the flat layout for the per-tensor loop (same bits, one update per tensor); for
    /// comparisons such as `examples/adamw_step.rs`.
    pub fn use_per_tensor_loop(&mut self) {
        self.flat = None;
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when the VarStore had nothing trainable.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Optimiser steps taken (t in the bias correction).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The learning rate of the next step.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Multiplies the Adam step of every parameter whose VarStore name satisfies `selects` by
    /// `multiplier` (≥ 0; 1 restores the base rate); returns how many tensors it applies to.
    pub fn set_lr_multiplier(&mut self, selects: impl Fn(&str) -> bool, multiplier: f64) -> usize {
        let mut count = 0;
        for p in self.params.iter_mut().filter(|p| selects(&p.name)) {
            p.lr_multiplier = multiplier;
            count += 1;
        }
        if let Some(flat) = self.flat.as_mut() {
            flat.lr_multipliers = None;
            if self.params.iter().any(|p| p.lr_multiplier != 1.0) {
                let buf = flat.values.ones_like();
                for (p, &off) in self.params.iter().zip(&flat.offsets) {
                    if p.lr_multiplier != 1.0 {
                        let _ = buf.narrow(0, off, p.tensor.numel() as i64).fill_(p.lr_multiplier);
                    }
                }
                flat.lr_multipliers = Some(buf);
            }
        }
        count
    }

    /// What one update touches: the flat buffer as a single slot, or every parameter that has
    /// a gradient (the others are skipped, as in PyTorch's per-parameter `step`).
    fn slots(&mut self) -> Vec<Slot> {
        if let Some(g) = self.flat_grads() {
            let f = self.flat.as_ref().expect("flat_grads implies the flat layout");
            return vec![Slot {
                w: f.values.shallow_clone(),
                g,
                m: f.exp_avg.shallow_clone(),
                v: f.exp_avg_sq.shallow_clone(),
                decayed: (f.decay_len > 0).then(|| f.values.narrow(0, 0, f.decay_len)),
                lr_multiplier: f.lr_multipliers.as_ref().map(Tensor::shallow_clone),
            }];
        }
        self.params
            .iter()
            .filter_map(|p| {
                let g = p.tensor.grad();
                g.defined().then(|| Slot {
                    w: p.tensor.shallow_clone(),
                    g,
                    m: p.exp_avg.shallow_clone(),
                    v: p.exp_avg_sq.shallow_clone(),
                    decayed: p.decay.then(|| p.tensor.shallow_clone()),
                    // A scalar tensor multiplies each element by the same f32 as the flat
                    // buffer's entries do: both layouts keep giving the same bits.
                    lr_multiplier: (p.lr_multiplier != 1.0)
                        .then(|| Tensor::from(p.lr_multiplier as f32).to_device(p.tensor.device())),
                })
            })
            .collect()
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for mut s in self.slots() {
            let _ = s.g.detach_().zero_();
        }
    }

    /// Scales the gradients so that their global L2 norm is at most `max_norm`; returns the
    /// norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self.slots().into_iter().map(|s| s.g).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            let sq: Vec<Tensor> =
                grads.iter().map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double)).collect();
            Tensor::stack(&sq, 0).sum(Kind::Double).sqrt().double_value(&[])
        });
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            tch::no_grad(|| {
                for g in &grads {
                    let _ = g.shallow_clone().g_mul_scalar_(coef);
                }
            });
        }
        total
    }

    /// One AdamW update with the current gradients (parameters without a gradient are
    /// skipped but the step counter still advances, as in PyTorch's per-parameter `step`).
    pub fn step(&mut self) {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let (lr, cfg) = (self.lr, self.cfg);
        tch::no_grad(|| {
            for s in self.slots() {
                let g = s.g.to_kind(Kind::Float);
                let _ = s.m.shallow_clone().g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = s.v.shallow_clone().g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
                if let Some(mut d) = s.decayed.filter(|_| cfg.weight_decay != 0.0) {
                    let _ = d.g_mul_scalar_(1.0 - lr * cfg.weight_decay);
                }
                let denom = s.v.sqrt() / bias2_sqrt + cfg.eps;
                let mut update = (&s.m / denom) * (lr / bias1);
                if let Some(multiplier) = &s.lr_multiplier {
                    update *= multiplier;
                }
                let _ = s.w.shallow_clone().g_sub_(&update.to_kind(s.w.kind()));
            }
        });
    }

    /// The static scalars of a capture-safe update ([`AdamW::clip_and_step_on_device`]) on
    /// the device of the flat buffer. Fails unless the flat layout is in use (the per-tensor
    /// loop is a host loop over tensors that may appear between steps).
    pub fn device_scalars(&mut self) -> Result<DeviceStepScalars, CoreError> {
        if !self.flat_in_use() {
            return Err(CoreError::Optimizer(
                "the capture-safe AdamW step needs the flat layout (every trainable parameter \
                 f32 on one device, storage not replaced since the optimiser was built)"
                    .into(),
            ));
        }
        let device = self.flat.as_ref().map(|f| f.values.device()).unwrap_or(tch::Device::Cpu);
        let scalar = |v: f64| Tensor::from(v).to_device(device); // [] f64
        let scalars = DeviceStepScalars {
            lr: scalar(self.lr),
            lr_over_bias1: scalar(0.0),
            bias2_sqrt: scalar(1.0),
            decay: scalar(1.0),
            apply: Tensor::from(true).to_device(device),
        };
        self.write_device_scalars(&scalars, true);
        Ok(scalars)
    }

    /// Writes the host numbers of the next update (learning rate, bias corrections of step
    /// t + 1, the decay factor) and whether it may apply into `scalars`' device tensors. Call it
    /// before every replay and never inside a capture: the writes are kernel launches with the
    /// values as arguments, which a graph would freeze. With `apply` false the update computes
    /// everything and changes nothing (a warm-up before capture).
    pub fn write_device_scalars(&self, scalars: &DeviceStepScalars, apply: bool) {
        let t = (self.steps + 1) as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        // The same f64 expressions as `step`, so the device holds the same numbers.
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        tch::no_grad(|| {
            let _ = scalars.lr.shallow_clone().fill_(self.lr);
            let _ = scalars.lr_over_bias1.shallow_clone().fill_(self.lr / bias1);
            let _ = scalars.bias2_sqrt.shallow_clone().fill_(bias2_sqrt);
            let _ = scalars.decay.shallow_clone().fill_(1.0 - self.lr * self.cfg.weight_decay);
        });
        scalars.set_apply(apply);
    }

    /// Clipping to `max_norm` and one AdamW update, with nothing read on the host: capturable
    /// into a CUDA graph and replayed. Numerically [`AdamW::clip_grad_norm`] then
    /// [`AdamW::step`] (the same f32 element-wise operations in the same order; the clipping
    /// coefficient min(1, max_norm / (‖g‖ + 1e-6)) is computed in f64 on the device as the eager
    /// step computes it on the host, and a factor of exactly 1 leaves the gradient's bits).
    ///
    /// The update is gated instead of skipped: it applies only where `scalars.apply` is set
    /// and `loss` and the gradient norm are finite; otherwise values and moments keep their
    /// bits (gradients may have been scaled). Returns the norm before clipping ([] f64) and
    /// whether the update applied ([] bool); after reading the flag, the caller reports an
    /// applied update with [`AdamW::count_device_step`]. The host step counter does not move
    /// here, so bias corrections come from [`AdamW::write_device_scalars`] before each run.
    pub fn clip_and_step_on_device(
        &mut self,
        scalars: &DeviceStepScalars,
        max_norm: f64,
        loss: &Tensor,
    ) -> Result<(Tensor, Tensor), CoreError> {
        let eps = self.cfg.eps;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let decays = self.cfg.weight_decay != 0.0;
        if !self.flat_in_use() {
            return Err(CoreError::Optimizer(
                "the capture-safe AdamW step needs the flat layout".into(),
            ));
        }
        let Some(g) = self.flat_grads() else {
            return Err(CoreError::Optimizer(
                "the capture-safe AdamW step needs a gradient for every parameter (run one \
                 backward first)"
                    .into(),
            ));
        };
        let f = self.flat.as_ref().expect("flat_grads implies the flat layout");
        Ok(tch::no_grad(|| {
            // As `clip_grad_norm` with its one flat slot: Σ g² in f64, through the same stack.
            let sq = g.to_kind(Kind::Double).square().sum(Kind::Double);
            let total = Tensor::stack(&[sq], 0).sum(Kind::Double).sqrt(); // [] f64

            // A fill on the device, not a copy from the host (which would synchronise).
            let max = Tensor::full([], max_norm, (Kind::Double, total.device())); // [] f64
            let coef = (max / (&total + 1e-6)).clamp_max(1.0); // [] f64
            let _ = g.shallow_clone().g_mul_(&coef);
            let ok = loss.isfinite().logical_and(&total.isfinite()).logical_and(&scalars.apply);
            // As `step`, out of place, then committed where `ok`.
            let g = g.to_kind(Kind::Float);
            let m = &f.exp_avg * b1 + &g * (1.0 - b1); // [P]
            let v = &f.exp_avg_sq * b2 + g.square() * (1.0 - b2); // [P]
            let mut w = f.values.copy(); // [P]
            if decays && f.decay_len > 0 {
                let _ = w.narrow(0, 0, f.decay_len).g_mul_(&scalars.decay);
            }
            let denom = v.sqrt() / &scalars.bias2_sqrt + eps;
            let mut update = (&m / denom) * &scalars.lr_over_bias1;
            if let Some(multiplier) = &f.lr_multipliers {
                update *= multiplier;
            }
            let _ = w.g_sub_(&update);
            for (state, new) in [(&f.exp_avg, m), (&f.exp_avg_sq, v), (&f.values, w)] {
                state.shallow_clone().copy_(&new.where_self(&ok, state));
            }
            (total, ok)
        }))
    }

    /// Counts one update applied by [`AdamW::clip_and_step_on_device`] (its flag read on the
    /// host), so the next bias corrections are those of the following step.
    pub fn count_device_step(&mut self) {
        self.steps += 1;
    }

    /// The moments as named tensors (`exp_avg.<var>`, `exp_avg_sq.<var>`) on the CPU.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let cpu = |t: &Tensor| t.detach().to_device(tch::Device::Cpu).contiguous();
        let mut out = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            out.push((format!("exp_avg.{}", p.name), cpu(&p.exp_avg)));
            out.push((format!("exp_avg_sq.{}", p.name), cpu(&p.exp_avg_sq)));
        }
        out
    }

    /// Writes the moments to `path` (safetensors, atomically). The step count travels with the
    /// trainer's own state (see [`AdamW::restore`]).
    pub fn save(&self, path: &Path) -> Result<(), CoreError> {
        write_safetensors_atomic(path, &self.state_tensors())
    }

    /// Restores the moments saved by [`AdamW::save`] and the step count `steps`. Every
    /// parameter must have both moments with its shape.
    pub fn restore(&mut self, path: &Path, steps: u64) -> Result<(), CoreError> {
        let err = |message: String| CoreError::Checkpoint { path: path.to_owned(), message };
        let loaded = Tensor::read_safetensors(path)
            .map_err(|e| err(format!("cannot read optimiser state: {e}")))?;
        for (name, t) in &loaded {
            crate::checkpoint::check_finite(path, name, t, true)?;
        }
        let mut by_name: std::collections::HashMap<String, Tensor> = loaded.into_iter().collect();
        for p in &mut self.params {
            for (prefix, slot) in [("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)] {
                let key = format!("{prefix}.{}", p.name);
                let t = by_name.remove(&key).ok_or_else(|| {
                    err(format!(
                        "no tensor {key}; hint: the checkpoint belongs to a different adapter \
                         configuration"
                    ))
                })?;
                if t.size() != slot.size() {
                    return Err(err(format!(
                        "{key} has shape {:?}, the parameter {:?}",
                        t.size(),
                        slot.size()
                    )));
                }
                tch::no_grad(|| slot.copy_(&t));
            }
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(err(format!("unexpected tensor {extra}: no such trainable parameter")));
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_matches_hand_computed_steps_and_restores_exactly() {
        crate::device::init_torch();
        // One decayed parameter p = [1, −2] with loss L = Σ p² (g = 2p), lr 0.1, wd 0.5,
        // β = (0.9, 0.95), ε = 1e-8. Step 1: m = 0.1·g, v = 0.05·g²; the bias-corrected
        // ratio is g/|g| = ±1, so after decay p·(1 − 0.05) the update is ∓0.1:
        //   p1 = [0.95 − 0.1, −1.9 + 0.1] = [0.85, −1.8].
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let p = vs.root().var("p", &[2], nn::Init::Const(0.0));
        tch::no_grad(|| p.shallow_clone().copy_(&Tensor::from_slice(&[1.0f32, -2.0])));
        let cfg = AdamWConfig { weight_decay: 0.5, ..Default::default() };
        let mut opt = AdamW::new(&vs, cfg, 0.1);
        assert_eq!(opt.len(), 1);
        let loss = |p: &Tensor| p.square().sum(Kind::Float);
        opt.zero_grad();
        loss(&p).backward();
        opt.step();
        let got: Vec<f32> = Vec::try_from(&p).expect("values");
        assert!((got[0] - 0.85).abs() < 1e-6 && (got[1] + 1.8).abs() < 1e-6, "{got:?}");

        // Save after one step, take two more; a fresh optimiser restored from the file and
        // given the same two steps ends on the same bits.
        let dir = std::env::temp_dir().join(format!("panacea-adamw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("optim.safetensors");
        opt.save(&file).expect("save");
        let snapshot = p.detach().copy();
        for _ in 0..2 {
            opt.zero_grad();
            loss(&p).backward();
            opt.step();
        }
        let straight = p.detach().copy();
        tch::no_grad(|| p.shallow_clone().copy_(&snapshot));
        let mut resumed = AdamW::new(&vs, cfg, 0.1);
        resumed.restore(&file, 1).expect("restore");
        for _ in 0..2 {
            resumed.zero_grad();
            loss(&p).backward();
            resumed.step();
        }
        assert!(p.equal(&straight), "{p:?} vs {straight:?}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn no_decay_group_is_not_decayed_and_clipping_bounds_the_norm() {
        crate::device::init_torch();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let a = root.set_group(NO_DECAY_GROUP).var("a", &[1], nn::Init::Const(3.0));
        let b = root.var("b", &[1], nn::Init::Const(4.0));
        let cfg = AdamWConfig { weight_decay: 1.0, ..Default::default() };
        let mut opt = AdamW::new(&vs, cfg, 0.5);
        // Gradient norm of L = a·3 + b·4 is |(3, 4)| = 5; clipping to 1 scales by 1/5.
        opt.zero_grad();
        (&a * 3.0 + &b * 4.0).sum(Kind::Float).backward();
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let ga: f64 = a.grad().double_value(&[0]);
        assert!((ga - 0.6).abs() < 1e-5, "{ga}");
        // With zero-size steps the only change is decay: a keeps 3, b shrinks to 4·(1 − 0.5).
        opt.set_lr(0.5);
        opt.zero_grad();
        opt.step();
        assert!((a.double_value(&[0]) - 3.0).abs() < 1e-6);
        assert!((b.double_value(&[0]) - 2.0).abs() < 1e-6);
        let restored =
            AdamW::new(&vs, cfg, 0.5).restore(Path::new("/nonexistent/optim.safetensors"), 1);
        assert!(matches!(restored, Err(CoreError::Checkpoint { .. })));
    }

    /// Two identical VarStores (a few shapes, both groups), one optimiser per store.
    fn twin_stores(cfg: AdamWConfig) -> [(nn::VarStore, Vec<Tensor>, AdamW); 2] {
        [0, 1].map(|_| {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let root = vs.root();
            let vars = vec![
                root.var("u", &[5, 3], nn::Init::Const(0.0)),
                root.set_group(NO_DECAY_GROUP).var("sigma", &[3], nn::Init::Const(0.0)),
                root.var("v", &[4, 3], nn::Init::Const(0.0)),
                root.set_group(NO_DECAY_GROUP).var("s", &[1], nn::Init::Const(0.0)),
            ];
            // Fixed values without the RNG: libtorch's generator is process-global, and tests
            // run in parallel threads would race on it. No entry is 0 (its first gradient
            // would be 0).
            tch::no_grad(|| {
                for (i, v) in vars.iter().enumerate() {
                    let n = v.numel() as i64;
                    let values = (Tensor::arange(n, (Kind::Float, v.device())) * 0.37
                        + (0.5 + i as f64))
                        .sin();
                    v.shallow_clone().copy_(&values.view(v.size().as_slice()));
                }
            });
            let opt = AdamW::new(&vs, cfg, 0.05);
            (vs, vars, opt)
        })
    }

    fn loss(vars: &[Tensor], t: i64) -> Tensor {
        // Different gradients every step, touching every variable.
        vars.iter()
            .enumerate()
            .map(|(i, v)| (v * (1.0 + i as f64) - 0.3 * t as f64).square().sum(Kind::Float))
            .fold(Tensor::from(0.0f32), |a, b| a + b)
    }

    #[test]
    fn flat_layout_gives_the_per_tensor_bits_and_accumulates_into_one_buffer() {
        crate::device::init_torch();
        let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
        let [(_vs_f, flat_vars, mut flat), (_vs_p, loop_vars, mut per_tensor)] = twin_stores(cfg);
        assert!(flat.flat.is_some(), "f32 parameters on one device use the flat layout");
        per_tensor.use_per_tensor_loop(); // the reference: the per-tensor loop on the same values
        for t in 0..6 {
            for (vars, opt) in [(&flat_vars, &mut flat), (&loop_vars, &mut per_tensor)] {
                opt.zero_grad();
                loss(vars, t).backward();
                if t == 3 {
                    opt.clip_grad_norm(1e9); // a no-op coefficient, exercising the code path
                }
                opt.step();
            }
            for (a, b) in flat_vars.iter().zip(&loop_vars) {
                assert!(a.equal(b), "step {t}: flat {a:?} vs per-tensor {b:?}");
            }
        }
        // Every variable lives in the one buffer, and so does every gradient.
        let f = flat.flat.as_ref().expect("still flat");
        let (vbase, gbase) =
            (f.values.data_ptr() as usize, f.grads.as_ref().expect("adopted").data_ptr() as usize);
        for (p, &off) in flat.params.iter().zip(&f.offsets) {
            let v = &flat_vars
                [["u", "sigma", "v", "s"].iter().position(|n| *n == p.name).expect("name")];
            assert_eq!(v.data_ptr() as usize, vbase + off as usize * 4, "{}", p.name);
            assert_eq!(v.grad().data_ptr() as usize, gbase + off as usize * 4, "{}", p.name);
            assert!(v.requires_grad());
        }
        // The moments are saved and restored by name, as before.
        let names: Vec<String> = flat.state_tensors().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"exp_avg.sigma".to_owned()) && names.len() == 8, "{names:?}");
        // Clipping scales the real gradients in the flat layout too.
        flat.zero_grad();
        loss(&flat_vars, 9).backward();
        let before = flat_vars[0].grad().copy();
        let norm = flat.clip_grad_norm(1e-3);
        let scaled = flat_vars[0].grad();
        let want = &before * (1e-3 / (norm + 1e-6));
        assert!(f64::try_from((scaled - want).abs().max()).expect("scalar") < 1e-9);
    }

    #[test]
    fn an_lr_multiplier_scales_the_first_step_and_both_layouts_agree() {
        crate::device::init_torch();
        let cfg = AdamWConfig::default();
        let [(_vs_f, flat_vars, mut flat), (_vs_p, loop_vars, mut per_tensor)] = twin_stores(cfg);
        per_tensor.use_per_tensor_loop();
        for opt in [&mut flat, &mut per_tensor] {
            assert_eq!(opt.set_lr_multiplier(|n| n == "s", 10.0), 1);
        }
        let before: Vec<Tensor> = flat_vars.iter().map(Tensor::copy).collect();
        for t in 0..4 {
            for (vars, opt) in [(&flat_vars, &mut flat), (&loop_vars, &mut per_tensor)] {
                opt.zero_grad();
                loss(vars, t).backward();
                opt.step();
            }
            for (a, b) in flat_vars.iter().zip(&loop_vars) {
                assert!(a.equal(b), "step {t}: flat {a:?} vs per-tensor {b:?}");
            }
            if t == 0 {
                // Adam's first step is lr·g/|g| (ε aside): ±0.05 for every entry, and ±0.5 for
                // s with its multiplier 10 (hand computation from the update rule above).
                let moved = |i: usize| -> f64 {
                    (&flat_vars[i] - &before[i]).abs().max().double_value(&[])
                };
                assert!((moved(0) - 0.05).abs() < 1e-6, "u moved {}", moved(0));
                assert!((moved(3) - 0.5).abs() < 1e-5, "s moved {}", moved(3));
            }
        }
        // Back to 1: the buffer of multipliers is dropped and steps are plain again.
        assert_eq!(flat.set_lr_multiplier(|n| n == "s", 1.0), 1);
        assert!(flat.flat.as_ref().is_some_and(|f| f.lr_multipliers.is_none()));
    }

    /// Warm-up over 3 steps, then linear decay to 10 % at step 12 (a schedule shape the
    /// trainers use; the exact one does not matter, only that lr changes every step).
    fn scheduled_lr(step: u64) -> f64 {
        let base = 0.05;
        if step <= 3 {
            base * step as f64 / 3.0
        } else {
            base * (1.0 - 0.9 * (step - 3) as f64 / 9.0)
        }
    }

    #[test]
    fn the_capture_safe_step_equals_clipping_then_the_eager_step() {
        crate::device::init_torch();
        let cfg = AdamWConfig { weight_decay: 0.1, ..Default::default() };
        let [(_vs_e, eager_vars, mut eager), (_vs_d, device_vars, mut device)] = twin_stores(cfg);
        for opt in [&mut eager, &mut device] {
            assert_eq!(opt.set_lr_multiplier(|n| n == "s", 4.0), 1);
        }
        // Until the first backward there is no flat gradient to step on.
        let early = device.device_scalars().expect("flat layout");
        let nothing = device.clip_and_step_on_device(&early, 1.0, &Tensor::from(0.0f32));
        assert!(matches!(nothing, Err(CoreError::Optimizer(_))), "{nothing:?}");
        let mut scalars = None;
        let (mut clipped, mut unclipped) = (0, 0);
        for t in 0..12u64 {
            let lr = scheduled_lr(t + 1);
            // Clip on even steps only (these gradients have norms of order 10), so both
            // branches of the coefficient run.
            let max_norm = if t % 2 == 0 { 1.0 } else { 1e9 };
            eager.zero_grad();
            let loss = loss(&eager_vars, t as i64);
            loss.backward();
            let norm = eager.clip_grad_norm(max_norm);
            if norm > max_norm {
                clipped += 1;
            } else {
                unclipped += 1;
            }
            eager.set_lr(lr);
            eager.step();

            device.zero_grad();
            let loss = super::tests::loss(&device_vars, t as i64);
            loss.backward();
            device.set_lr(lr);
            let s = match &scalars {
                Some(s) => s,
                None => scalars.insert(device.device_scalars().expect("flat layout")),
            };
            device.write_device_scalars(s, true);
            let (dnorm, ok) =
                device.clip_and_step_on_device(s, max_norm, &loss.detach()).expect("step");
            assert!(bool::try_from(&ok).expect("flag"), "step {t}: the update applied");
            device.count_device_step();
            assert_eq!(f64::try_from(&dnorm).expect("norm"), norm, "step {t}: the same f64 norm");
            for (a, b) in eager_vars.iter().zip(&device_vars) {
                // Tolerance 0 on the CPU: both runs do the same f32 operations on the same
                // values, and the device scalars hold the host's f64 numbers, which a scalar
                // argument and a 0-dim f64 tensor both round to the same f32 in the kernel.
                // (A GPU's kernels may fuse differently; its test allows f32 rounding.)
                let diff = f64::try_from((a - b).abs().max()).expect("scalar");
                assert!(diff == 0.0, "step {t}: eager {a:?} vs device {b:?} ({diff:e})");
            }
        }
        assert!(clipped > 0 && unclipped > 0, "clipped {clipped}, unclipped {unclipped}");
        assert_eq!(device.steps(), eager.steps());

        // Gated updates change nothing: a warm-up (apply false) and a non-finite loss.
        let s = scalars.expect("scalars");
        let before: Vec<Tensor> = device_vars.iter().map(Tensor::copy).collect();
        let state_before: Vec<Tensor> =
            device.state_tensors().into_iter().map(|(_, t)| t).collect();
        for (apply, loss) in [(false, 1.0f32), (true, f32::NAN)] {
            device.zero_grad();
            super::tests::loss(&device_vars, 20).backward();
            device.write_device_scalars(&s, apply);
            let (_, ok) =
                device.clip_and_step_on_device(&s, 1.0, &Tensor::from(loss)).expect("step");
            assert!(!bool::try_from(&ok).expect("flag"), "apply {apply}, loss {loss}");
        }
        for (a, b) in device_vars.iter().zip(&before) {
            assert!(a.equal(b), "a gated update moved {a:?}");
        }
        for (a, (_, b)) in state_before.iter().zip(device.state_tensors()) {
            assert!(a.equal(&b), "a gated update moved a moment");
        }
    }

    #[test]
    fn a_replaced_variable_storage_falls_back_to_the_per_tensor_loop() {
        crate::device::init_torch();
        let [(mut vs, vars, mut opt), _] = twin_stores(AdamWConfig::default());
        opt.zero_grad();
        loss(&vars, 0).backward();
        opt.step();
        vs.double(); // new storage for every variable: the flat buffer no longer backs them
        let vars: Vec<Tensor> =
            ["u", "sigma", "v", "s"].iter().map(|n| vs.variables()[*n].shallow_clone()).collect();
        let before = vars[0].copy();
        opt.zero_grad();
        loss(&vars, 1).backward();
        opt.step();
        assert!(opt.flat.is_none(), "the optimiser noticed and left the flat layout");
        assert!(!vars[0].equal(&before), "the per-tensor loop still updates the parameters");
    }
}
