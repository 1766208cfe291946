//! Decoding with every tensor preallocated, so that one decode step can be captured as a CUDA
//! graph and replayed ([`StaticDecoder`]).
//!
//! A decode step of a small model is hundreds of tiny kernels, and on a GPU their launches, not
//! their work, set the step time. A CUDA graph relaunches a recorded step in one call, but only
//! if the step is static: the same kernels on the same memory every time, no value read on the
//! host, no shape that depends on the step. [`crate::generate_ids`] is not: its attention reads
//! `len` cached columns and its writes go to column `len`, both host numbers that grow each
//! step. Here:
//!
//! - The KV cache has a fixed capacity C and a batch bucket Bb (1, 2, 4, …, 256, as vLLM
//!   buckets; B rows are padded up to the next bucket). It is allocated once per bucket and
//!   reused by later calls.
//! - What changes per step lives in device buffers written in place by the step itself: the
//!   token each row feeds next [Bb, 1], its RoPE position [Bb, 1], the cache column of this
//!   step [1], the columns each row attends to [Bb, C], the finished flags [Bb], the response
//!   column [1], and sampling's uniforms [Bb] (written by the host before each step). The
//!   new key and value go to the column with `index_copy_`, and attention reads the whole
//!   capacity under the mask.
//! - λ is the caller's tensor ([K], or [B, K] padded to [Bb, K] here), so the per-row adapter
//!   path, prepared factors included ([`Llama::with_prepared_adapter`]), runs inside the step.
//!
//! The prompt (prefill) runs eagerly, exactly as in [`crate::generate_ids`], writing into rows
//! 0..B of the bucket's cache; padding rows start finished and only ever see their own column.
//! Each step then does what one iteration of `generate_ids`'s loop does (choose, record,
//! update the stop flags, feed the token), so the tokens are those of `generate_ids`: the
//! same operations on the same values, except that attention spans C columns of which the
//! masked ones weigh exactly 0, and GEMMs run over Bb rows (tested for equal greedy tokens).
//!
//! On CUDA, with graphs asked for and available (`panacea_shim::graph`), the first step of a
//! call runs eagerly (it warms up cuBLAS and the allocator), the step is then captured once and
//! replayed for every further step, with no host sync except the early-exit check every 8
//! steps. The graph is captured per call and dropped at its end: it records the addresses of the
//! model's weights, of the adapter and of factors prepared for this call, which only the call's
//! borrow of the model keeps alive. Capturing costs about one eager step. Elsewhere the same
//! step runs eagerly and [`StaticDecoder::graphs_unavailable`] says why.

use std::collections::BTreeMap;

use panacea_shim::graph::{unavailable_reason, CudaGraph};
use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::error::LmError;
use crate::generate::{check_request, choose_with, left_pad, GenerateConfig, Generation, Sampling};
use crate::llama::{KvCache, LayerCache, Llama};
use crate::{Adapter, CausalLm};

/// Batch buckets: B rows run in the smallest bucket ≥ B.
pub const BATCH_BUCKETS: [i64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The bucket B rows run in, or `None` past the largest one.
pub fn bucket_for(rows: i64) -> Option<i64> {
    BATCH_BUCKETS.iter().copied().find(|&b| b >= rows.max(1))
}

/// The persistent buffers of one bucket: the KV cache and the attended columns.
#[derive(Debug)]
struct Bucket {
    /// [Bb, Hkv, C, hd] per layer; `len` is unused (the column lives on the device).
    cache: KvCache,
    /// 1 where a cache column holds a real token of the row: [Bb, C], bool.
    keys: Tensor,
}

/// The per-call state of a decode loop, all on the model's device (see the module docs).
struct StepState {
    /// The token each row feeds next: [Bb, 1], i64.
    ids: Tensor,
    /// Its RoPE position: [Bb, 1], i64.
    positions: Tensor,
    /// Real tokens of each row so far (its attended columns): [Bb], i64.
    real: Tensor,
    /// The cache column of the next fed token: [1], i64.
    col: Tensor,
    /// The response column of the next choice: [1], i64.
    step: Tensor,
    /// The logits the next choice reads: [Bb, V], f32.
    logits: Tensor,
    /// Rows that emitted an EOS (padding rows from the start): [Bb], bool.
    finished: Tensor,
    /// Sampling's uniforms for the next choice: [Bb], f32.
    uniforms: Tensor,
    /// The filler token: [], i64.
    pad: Tensor,
    /// λ for the step: the caller's [K], or [B, K] padded to [Bb, K] (padding rows repeat
    /// row 0). Absent under `Adapter::Off`.
    pref: Option<Tensor>,
    /// [Bb, N] i64, [Bb, N] i64, [Bb, N] f32: the response, its mask, its log-probs.
    out_ids: Tensor,
    out_mask: Tensor,
    out_lp: Tensor,
}

/// A decoder over static buffers whose steps can be captured as CUDA graphs (see the module
/// docs). Holds one KV cache per batch bucket it has served, for `capacity` positions (prompt
/// plus new tokens).
#[derive(Debug)]
pub struct StaticDecoder {
    capacity: i64,
    use_graphs: bool,
    buckets: BTreeMap<i64, Bucket>,
    /// Steps replayed from a graph in the last call (0: every step ran eagerly).
    replayed: i64,
    /// Why the last call's capture failed, if it did.
    capture_error: Option<String>,
}

impl StaticDecoder {
    /// A decoder for prompts plus new tokens of at most `capacity` positions; `use_graphs`
    /// asks for CUDA graphs where they are available.
    pub fn new(capacity: i64, use_graphs: bool) -> Result<Self, LmError> {
        if capacity < 2 {
            return Err(LmError::Invalid(format!(
                "static decoder: capacity = {capacity} must be ≥ 2 (prompt plus new tokens)"
            )));
        }
        Ok(Self {
            capacity,
            use_graphs,
            buckets: BTreeMap::new(),
            replayed: 0,
            capture_error: None,
        })
    }

    /// Why steps on `device` run eagerly although graphs were asked for (`None`: they are
    /// captured and replayed; also `None` when graphs were not asked for).
    pub fn graphs_unavailable(&self, device: Device) -> Option<String> {
        if !self.use_graphs {
            return None;
        }
        unavailable_reason(device)
    }

    /// Steps of the last call replayed from a CUDA graph (0 when every step ran eagerly).
    pub fn replayed_steps(&self) -> i64 {
        self.replayed
    }

    /// Why the last call's graph capture failed, when it did (its steps then ran eagerly).
    pub fn capture_error(&self) -> Option<&str> {
        self.capture_error.as_deref()
    }

    /// [`crate::generate_ids`] through the static buffers: the same prompts, settings and RNG
    /// use give the same result (greedy tokens tested equal). Prompt plus `max_new_tokens`
    /// must fit the decoder's capacity and the model's context, and B ≤ 256.
    pub fn generate_ids(
        &mut self,
        model: &Llama,
        prompts: &[Vec<i64>],
        adapter: Adapter<'_>,
        cfg: &GenerateConfig,
        rng: &mut impl Rng,
    ) -> Result<Generation, LmError> {
        let longest = check_request(model, prompts, cfg)?;
        let device = model.device();
        let (b, n) = (prompts.len() as i64, cfg.max_new_tokens);
        let bucket = bucket_for(b).ok_or_else(|| {
            LmError::Invalid(format!(
                "static decoder: {b} rows exceed the largest batch bucket {} (hint: split the \
                 batch)",
                BATCH_BUCKETS[BATCH_BUCKETS.len() - 1]
            ))
        })?;
        if longest + n > self.capacity {
            return Err(LmError::Invalid(format!(
                "static decoder: prompt {longest} + max_new_tokens {n} exceed its capacity {} \
                 (hint: build the decoder with a larger capacity)",
                self.capacity
            )));
        }
        self.replayed = 0;
        self.capture_error = None;
        let (prompt_ids, prompt_mask) = left_pad(prompts, cfg.pad_id, device); // [B, P]
        if !self.buckets.contains_key(&bucket) {
            let fresh = Bucket::new(model, bucket, self.capacity)?;
            self.buckets.insert(bucket, fresh);
        }
        let buffers = &self.buckets[&bucket];
        let pref = match adapter {
            Adapter::Off => None,
            Adapter::On { pref } => Some(pad_pref(pref, b, bucket)?),
        };
        let state = tch::no_grad(|| {
            buffers.prefill(model, &prompt_ids, &prompt_mask, adapter, cfg, b, pref)
        })?;
        let step_adapter = match &state.pref {
            Some(pref) => Adapter::On { pref },
            None => Adapter::Off,
        };
        let graphs = self.use_graphs && unavailable_reason(device).is_none();
        // Merged layers compare λ by value when handed another tensor than the merged one (a
        // host sync, which a capture refuses): those run eagerly.
        let graphs = graphs && !model.linears().any(|l| l.is_merged());
        let check_every = if device.is_cuda() { 8 } else { 1 };
        let mut graph: Option<CudaGraph> = None;
        let mut capture_error = None;
        let mut replayed = 0;
        tch::no_grad(|| -> Result<(), LmError> {
            for step in 0..n {
                if let Sampling::Sample { .. } = cfg.sampling {
                    // The b real rows draw as in `generate_ids` (row r takes the r-th draw).
                    let u: Vec<f32> = (0..b).map(|_| rng.gen::<f32>()).collect();
                    state.uniforms.narrow(0, 0, b).copy_(&Tensor::from_slice(&u));
                }
                match &graph {
                    Some(g) => {
                        g.replay().map_err(|e| LmError::Invalid(format!("graph replay: {e}")))?;
                        replayed += 1;
                    }
                    None => buffers.step(model, &state, step_adapter, cfg),
                }
                if graphs && graph.is_none() && capture_error.is_none() && step + 1 < n {
                    // After one eager step (the warm-up): record the next ones.
                    let captured = CudaGraph::capture(device, None, || {
                        buffers.step(model, &state, step_adapter, cfg)
                    });
                    match captured {
                        Ok((g, ())) => graph = Some(g),
                        Err(e) => capture_error = Some(e.to_string()),
                    }
                }
                // The flag is read as `generate_ids` reads it: after the step's choice.
                if step + 1 < n
                    && (step + 1) % check_every == 0
                    && bool::try_from(state.finished.all())?
                {
                    break;
                }
            }
            Ok(())
        })?;
        self.replayed = replayed;
        self.capture_error = capture_error;
        state.finish(&prompt_ids, &prompt_mask, b)
    }
}

/// λ for the step: [K] as given; [B, K] padded to [Bb, K] with copies of row 0.
fn pad_pref(pref: &Tensor, b: i64, bucket: i64) -> Result<Tensor, LmError> {
    match pref.dim() {
        1 => Ok(pref.shallow_clone()),
        2 if pref.size()[0] == b => {
            if b == bucket {
                return Ok(pref.shallow_clone());
            }
            let fill = pref.narrow(0, 0, 1).expand([bucket - b, pref.size()[1]], false);
            Ok(Tensor::cat(&[pref, &fill], 0)) // [Bb, K]
        }
        _ => Err(LmError::Invalid(format!(
            "static decoder: preference must be [K] or [B = {b}, K], got {:?}",
            pref.size()
        ))),
    }
}

impl Bucket {
    fn new(model: &Llama, bucket: i64, capacity: i64) -> Result<Self, LmError> {
        let cache = KvCache::try_new(model, bucket, capacity)?;
        let keys = Tensor::f_zeros([bucket, capacity], (Kind::Bool, model.device()))?;
        Ok(Self { cache, keys })
    }

    /// Runs the prompt as `generate_ids` does (rows 0..B of the cache, the caller's λ) and
    /// sets up the step state for the first choice.
    #[allow(clippy::too_many_arguments)]
    fn prefill(
        &self,
        model: &Llama,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        adapter: Adapter<'_>,
        cfg: &GenerateConfig,
        b: i64,
        pref: Option<Tensor>,
    ) -> Result<StepState, LmError> {
        let device = model.device();
        let bucket = self.keys.size()[0];
        let (p, n) = (prompt_ids.size()[1], cfg.max_new_tokens);
        // Rows 0..B of the bucket's cache, as views: the prefill writes straight into it.
        let layers = self
            .cache
            .layers
            .iter()
            .map(|l| LayerCache { k: l.k.narrow(0, 0, b), v: l.v.narrow(0, 0, b) })
            .collect();
        let mut rows = KvCache { layers, len: 0, capacity: self.cache.capacity };
        let unpadded = prompt_mask.ne(0).all();
        let unpadded = bool::try_from(unpadded)?;
        let h = if unpadded {
            model.forward_cached_unpadded(prompt_ids, &mut rows, adapter)?
        } else {
            model.forward_cached(prompt_ids, prompt_mask, &mut rows, adapter)?
        };
        let first = model.lm_head(&h.select(1, p - 1)); // [B, V]
        let opts = (Kind::Int64, device);
        let logits = Tensor::f_zeros([bucket, first.size()[1]], (Kind::Float, device))?;
        logits.narrow(0, 0, b).copy_(&first);
        let _ = self.keys.shallow_clone().zero_();
        self.keys.narrow(0, 0, b).narrow(1, 0, p).copy_(prompt_mask);
        let real = Tensor::f_zeros([bucket], opts)?;
        real.narrow(0, 0, b).copy_(&prompt_mask.sum_dim_intlist(1, false, Kind::Int64));
        let finished = Tensor::f_ones([bucket], (Kind::Bool, device))?;
        let _ = finished.narrow(0, 0, b).fill_(0);
        Ok(StepState {
            ids: Tensor::f_full([bucket, 1], cfg.pad_id, opts)?,
            positions: Tensor::f_zeros([bucket, 1], opts)?,
            real,
            col: Tensor::from_slice(&[p]).to_device(device),
            step: Tensor::from_slice(&[0i64]).to_device(device),
            logits,
            finished,
            uniforms: Tensor::f_zeros([bucket], (Kind::Float, device))?,
            pad: Tensor::from(cfg.pad_id).to_device(device),
            pref,
            out_ids: Tensor::f_full([bucket, n], cfg.pad_id, opts)?,
            out_mask: Tensor::f_zeros([bucket, n], opts)?,
            out_lp: Tensor::f_zeros([bucket, n], (Kind::Float, device))?,
        })
    }

    /// One iteration of `generate_ids`'s loop on the static buffers: choose from `logits`,
    /// record, update the stop flags, feed the chosen tokens (their keys and values go to
    /// column `col`) and leave the next logits in `logits`. Every tensor it reads or writes
    /// across steps is in `state` or in the bucket; nothing is read on the host.
    fn step(&self, model: &Llama, state: &StepState, adapter: Adapter<'_>, cfg: &GenerateConfig) {
        let s = state;
        let (next, lp) = choose_with(&s.logits, cfg.sampling, |_| s.uniforms.shallow_clone());
        let active = s.finished.logical_not(); // [Bb]
        let next = next.where_self(&active, &s.pad); // [Bb]
        let _ = s.out_ids.shallow_clone().index_copy_(1, &s.step, &next.unsqueeze(1));
        let active_i64 = active.to_kind(Kind::Int64);
        let _ = s.out_mask.shallow_clone().index_copy_(1, &s.step, &active_i64.unsqueeze(1));
        let _ = s.out_lp.shallow_clone().index_copy_(1, &s.step, &(lp * &active).unsqueeze(1));
        // The fed token's column counts for this row only while the row is active (a finished
        // row's padding is never attended to again), as in `generate_ids`'s mask.
        let _ = self.keys.shallow_clone().index_copy_(1, &s.col, &active.unsqueeze(1));
        for &eos in &cfg.eos_ids {
            let _ = s.finished.shallow_clone().logical_or_(&next.eq(eos));
        }
        // Positions count real tokens (left padding does not shift them).
        let _ = s.real.shallow_clone().g_add_(&active_i64);
        s.positions.shallow_clone().copy_(&(&s.real - 1).clamp_min(0).unsqueeze(1));
        s.ids.shallow_clone().copy_(&next.unsqueeze(1));
        // A query always sees its own key (a finished row would otherwise see none).
        let keys = self.keys.index_fill(1, &s.col, 1); // [Bb, C]
        let h = model.decode_step_static(&s.ids, &s.positions, &s.col, &keys, &self.cache, adapter);
        s.logits.shallow_clone().copy_(&model.lm_head(&h.select(1, 0))); // [Bb, V]
        let _ = s.col.shallow_clone().g_add_scalar_(1);
        let _ = s.step.shallow_clone().g_add_scalar_(1);
    }
}

impl StepState {
    /// The rows 0..B of the outputs, trimmed as `generate_ids` trims them.
    fn finish(
        self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        b: i64,
    ) -> Result<Generation, LmError> {
        let out_ids = self.out_ids.narrow(0, 0, b);
        let out_mask = self.out_mask.narrow(0, 0, b);
        let steps = i64::try_from(out_mask.sum_dim_intlist(1, false, Kind::Int64).max())?;
        let response_ids = out_ids.narrow(1, 0, steps);
        let response_mask = out_mask.narrow(1, 0, steps);
        Ok(Generation {
            ids: Tensor::cat(&[prompt_ids, &response_ids], 1),
            attention_mask: Tensor::cat(&[prompt_mask, &response_mask], 1),
            prompt_len: prompt_ids.size()[1],
            logprobs: self.out_lp.narrow(0, 0, b).narrow(1, 0, steps),
            response_ids,
            response_mask,
            texts: Vec::new(),
        })
    }
}
