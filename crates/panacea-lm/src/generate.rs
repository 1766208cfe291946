//! Batched autoregressive generation with a preallocated KV cache, and sequence likelihoods.
//!
//! Prompts are left-padded to a common length P, so every row's next token sits in the last
//! column; positions and attention come from the mask, so a padded row generates exactly what
//! it would alone. The cache and the output buffers are allocated once for P + max_new_tokens
//! positions. A row stops at its first EOS (which is kept and counted in the response mask);
//! the loop ends as soon as every row has stopped. Sampling draws its uniforms from the RNG the
//! caller passes, so the same seed gives the same tokens: one RNG for the whole batch
//! ([`generate`]), or one per row ([`generate_per_row`]), so that a row's tokens do not depend
//! on which other rows share its batch (common random numbers across evaluations).
//!
//! P + max_new_tokens must fit the model's context (`max_position_embeddings`): a request past
//! it is a [`LmError::ContextExceeded`] naming the limit, checked before anything is allocated
//! (a hundred million new tokens once asked libtorch for 76 GB and panicked). The buffers are
//! allocated with libtorch's fallible calls, so memory the device refuses is an error too.

use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::error::LmError;
use crate::llama::{KvCache, Llama};
use crate::tokenizer::Tokenizer;
use crate::{Adapter, CausalLm};

/// How the next token is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A draw from softmax(logits / temperature), optionally restricted to the `top_k` most
    /// likely tokens and to the smallest set whose probability reaches `top_p`.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Keep only the k most likely tokens.
        top_k: Option<i64>,
        /// Nucleus sampling threshold in (0, 1].
        top_p: Option<f64>,
    },
}

/// Generation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    /// Most tokens generated per row.
    pub max_new_tokens: i64,
    /// Token choice.
    pub sampling: Sampling,
    /// A row stops after emitting any of these ids (Llama 3 lists several); empty: rows run
    /// to `max_new_tokens`.
    pub eos_ids: Vec<i64>,
    /// Filler for left padding and for positions after a row stopped.
    pub pad_id: i64,
}

impl GenerateConfig {
    /// Greedy decoding of up to `max_new_tokens`, stopping on every one of the tokenizer's EOS
    /// ids and padding with its pad id.
    pub fn greedy(tokenizer: &Tokenizer, max_new_tokens: i64) -> Self {
        Self {
            max_new_tokens,
            sampling: Sampling::Greedy,
            eos_ids: tokenizer.eos_ids.clone(),
            pad_id: tokenizer.pad_id,
        }
    }

    fn validate(&self) -> Result<(), LmError> {
        let mut problems = Vec::new();
        if self.max_new_tokens < 1 {
            problems.push(format!("max_new_tokens = {} must be ≥ 1", self.max_new_tokens));
        }
        if let Sampling::Sample { temperature, top_k, top_p } = self.sampling {
            if !(temperature > 0.0 && temperature.is_finite()) {
                problems
                    .push(format!("temperature = {temperature} must be > 0 (use greedy for 0)"));
            }
            if let Some(k) = top_k.filter(|&k| k < 1) {
                problems.push(format!("top_k = {k} must be ≥ 1"));
            }
            if let Some(p) = top_p.filter(|&p| !(p > 0.0 && p <= 1.0)) {
                problems.push(format!("top_p = {p} must be in (0, 1]"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LmError::Invalid(format!("generation settings: {}", problems.join("; "))))
        }
    }
}

/// The result of [`generate`]: prompt and response tokens with their masks.
#[derive(Debug)]
pub struct Generation {
    /// Prompt (left-padded) followed by the response: [B, P + N], i64 on the model's device.
    pub ids: Tensor,
    /// 1 on real prompt tokens and on response tokens up to and including EOS: [B, P + N].
    pub attention_mask: Tensor,
    /// P: the padded prompt length; the response starts at this column.
    pub prompt_len: i64,
    /// The response alone: [B, N] (N ≤ max_new_tokens; the loop stops once every row ended).
    pub response_ids: Tensor,
    /// 1 on response tokens up to and including the row's EOS, 0 after: [B, N], i64.
    pub response_mask: Tensor,
    /// log p(token) of each response token under softmax(logits / temperature), before top-k
    /// or top-p filtering (temperature 1 for greedy); 0 where the mask is 0: [B, N], f32.
    pub logprobs: Tensor,
    /// Response texts without special tokens (filled by [`generate`], empty from
    /// [`generate_ids`]).
    pub texts: Vec<String>,
}

/// Left-pads token lists: ids [B, P] (filled with `pad_id`) and mask [B, P] (1 = token).
pub fn left_pad(prompts: &[Vec<i64>], pad_id: i64, device: Device) -> (Tensor, Tensor) {
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(prompts.len() * p);
    let mut mask = Vec::with_capacity(prompts.len() * p);
    for row in prompts {
        let pad = p - row.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(row.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, row.len())));
    }
    let shape = [prompts.len() as i64, p as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// Where sampling's uniforms come from: one stream for the batch, or one per row.
enum Uniforms<'a, R> {
    /// Row r of a step takes the stream's r-th draw of that step.
    Shared(&'a mut R),
    /// Row r draws from its own stream, one draw per step.
    PerRow(&'a mut [R]),
}

impl<R: Rng> Uniforms<'_, R> {
    /// One uniform in [0, 1) per row: [B] values.
    fn draw(&mut self, b: i64) -> Vec<f32> {
        match self {
            Uniforms::Shared(rng) => (0..b).map(|_| rng.gen::<f32>()).collect(),
            Uniforms::PerRow(rngs) => rngs.iter_mut().map(|rng| rng.gen::<f32>()).collect(),
        }
    }
}

/// Picks the next token of every row from logits [B, V]: returns (ids [B], log-probs [B]).
fn choose<R: Rng>(
    logits: &Tensor,
    sampling: Sampling,
    uniforms: &mut Uniforms<'_, R>,
) -> (Tensor, Tensor) {
    let device = logits.device();
    choose_with(logits, sampling, |b| Tensor::from_slice(&uniforms.draw(b)).to_device(device))
}

/// [`choose`] with sampling's uniforms from `uniforms(B)`, a [B] f32 tensor on the logits'
/// device (called only when sampling): the static decoder passes its preallocated buffer, so
/// the step reads the uniforms on the device ([`crate::static_decode`]).
pub(crate) fn choose_with(
    logits: &Tensor,
    sampling: Sampling,
    uniforms: impl FnOnce(i64) -> Tensor,
) -> (Tensor, Tensor) {
    match sampling {
        Sampling::Greedy => {
            let next = logits.argmax(-1, false); // [B]
            let lp = logits.log_softmax(-1, Kind::Float).gather(1, &next.unsqueeze(1), false);
            (next, lp.squeeze_dim(1))
        }
        Sampling::Sample { temperature, top_k, top_p } => {
            let scaled = logits / temperature; // [B, V]
            let logp = scaled.log_softmax(-1, Kind::Float); // [B, V]
            let mut filtered = scaled.shallow_clone();
            let v = logits.size()[1];
            if let Some(k) = top_k.filter(|&k| k < v) {
                let (vals, _) = filtered.topk(k, -1, true, true); // [B, k]
                let kth = vals.narrow(1, k - 1, 1); // [B, 1]
                filtered = filtered.masked_fill(&filtered.lt_tensor(&kth), f64::NEG_INFINITY);
            }
            if let Some(p) = top_p.filter(|&p| p < 1.0) {
                let (sorted, idx) = filtered.sort(-1, true); // [B, V] descending
                let probs = sorted.softmax(-1, Kind::Float);
                // Drop a token when the tokens before it already reach p (the first always stays).
                let before = probs.cumsum(-1, Kind::Float) - &probs; // [B, V]
                let drop_sorted = before.gt(p);
                let drop = drop_sorted.zeros_like().scatter(1, &idx, &drop_sorted); // [B, V]
                filtered = filtered.masked_fill(&drop, f64::NEG_INFINITY);
            }
            let probs = filtered.softmax(-1, Kind::Float); // [B, V]
            let cdf = probs.cumsum(-1, Kind::Float); // [B, V]
            let b = logits.size()[0];
            let u = uniforms(b).unsqueeze(1) * cdf.narrow(1, v - 1, 1); // [B, 1]

            // Inverse CDF: the first token whose cumulative probability exceeds u.
            let next = cdf.lt_tensor(&u).sum_dim_intlist(-1, false, Kind::Int64).clamp_max(v - 1);
            let lp = logp.gather(1, &next.unsqueeze(1), false).squeeze_dim(1);
            (next, lp)
        }
    }
}

/// Picks the next token of every row of logits [B, V] exactly as [`generate`] does in each step,
/// row r taking the r-th uniform drawn from `rng` (greedy draws none): (ids [B], log-probs [B]).
/// For decode loops outside this module, such as [`crate::batch_decode::SlotBatch`]'s callers.
/// `sampling` is taken as given (a temperature ≤ 0 or a `top_p` outside (0, 1] is the
/// caller's to reject).
pub fn choose_tokens(logits: &Tensor, sampling: Sampling, rng: &mut impl Rng) -> (Tensor, Tensor) {
    tch::no_grad(|| choose(logits, sampling, &mut Uniforms::Shared(rng)))
}

/// `Err` naming the limit when `prompt_len + new_tokens` positions exceed the model's context.
pub fn check_context(
    model: &Llama,
    what: &str,
    prompt_len: i64,
    new_tokens: i64,
) -> Result<(), LmError> {
    let limit = model.config.max_position_embeddings;
    match prompt_len.checked_add(new_tokens) {
        Some(total) if total <= limit => Ok(()),
        _ => Err(LmError::ContextExceeded { what: what.to_owned(), prompt_len, new_tokens, limit }),
    }
}

/// Generates continuations of token prompts (any lengths ≥ 1) under `adapter`. `texts` is
/// left empty; see [`generate`]. The longest prompt plus `max_new_tokens` must fit the model's
/// context ([`check_context`]).
pub fn generate_ids(
    model: &Llama,
    prompts: &[Vec<i64>],
    adapter: Adapter<'_>,
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> Result<Generation, LmError> {
    generate_ids_with(model, prompts, adapter, cfg, Uniforms::Shared(rng))
}

/// [`generate_ids`] with one RNG per row (`rngs[r]` draws row r's tokens and nothing else), so
/// a row generates the same tokens whatever else is in its batch.
pub fn generate_ids_per_row<R: Rng>(
    model: &Llama,
    prompts: &[Vec<i64>],
    adapter: Adapter<'_>,
    cfg: &GenerateConfig,
    rngs: &mut [R],
) -> Result<Generation, LmError> {
    if rngs.len() != prompts.len() {
        return Err(LmError::Invalid(format!(
            "generate: {} row RNGs for {} prompts",
            rngs.len(),
            prompts.len()
        )));
    }
    generate_ids_with(model, prompts, adapter, cfg, Uniforms::PerRow(rngs))
}

/// Checks a generation request, the same for every decoder: `cfg` is valid, every prompt has
/// a token, and the longest prompt plus `max_new_tokens` fits the model's context. Returns
/// the longest prompt's length.
pub(crate) fn check_request(
    model: &Llama,
    prompts: &[Vec<i64>],
    cfg: &GenerateConfig,
) -> Result<i64, LmError> {
    cfg.validate()?;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(LmError::Invalid("generate: every prompt needs at least one token".into()));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) as i64;
    check_context(model, "generate", longest, cfg.max_new_tokens)?;
    Ok(longest)
}

fn generate_ids_with<R: Rng>(
    model: &Llama,
    prompts: &[Vec<i64>],
    adapter: Adapter<'_>,
    cfg: &GenerateConfig,
    mut uniforms: Uniforms<'_, R>,
) -> Result<Generation, LmError> {
    check_request(model, prompts, cfg)?;
    let device = model.device();
    let (b, n) = (prompts.len() as i64, cfg.max_new_tokens);
    let (prompt_ids, prompt_mask) = left_pad(prompts, cfg.pad_id, device); // [B, P]
    let p = prompt_ids.size()[1];
    let mut cache = KvCache::try_new(model, b, p + n)?;
    let opts = (Kind::Int64, device);
    let mask = Tensor::f_zeros([b, p + n], opts)?; // [B, P + N]
    mask.narrow(1, 0, p).copy_(&prompt_mask);
    let out_ids = Tensor::f_full([b, n], cfg.pad_id, opts)?; // [B, N]
    let out_mask = Tensor::f_zeros([b, n], opts)?; // [B, N]
    let out_lp = Tensor::f_zeros([b, n], (Kind::Float, device))?; // [B, N]
    let mut finished = Tensor::f_zeros([b], (Kind::Bool, device))?; // [B]
    let pad = Tensor::from(cfg.pad_id).to_device(device);
    // Equal-length prompts need no attention mask at all: a finished row then attends to its
    // own padding tokens too, which only changes logits that are never read again.
    let unpadded = prompts.iter().all(|r| r.len() == prompts[0].len());
    // The early exit reads a flag from the device: a sync that stalls a GPU's queue, so a
    // GPU checks every few steps (the extra steps generate only padding, trimmed below).
    let check_every = if device.is_cuda() { 8 } else { 1 };
    // ids [B, t] → [B, t, D]; the cache holds `len` − t positions before the call.
    let forward = |ids: &Tensor, len: i64, cache: &mut KvCache| {
        if unpadded {
            model.forward_cached_unpadded(ids, cache, adapter)
        } else {
            model.forward_cached(ids, &mask.narrow(1, 0, len), cache, adapter)
        }
    };
    tch::no_grad(|| -> Result<(), LmError> {
        let h = forward(&prompt_ids, p, &mut cache)?;
        let mut logits = model.lm_head(&h.select(1, p - 1)); // [B, V]
        for step in 0..n {
            let (next, lp) = choose(&logits, cfg.sampling, &mut uniforms); // [B], [B]
            let active = finished.logical_not(); // [B]
            let next = next.where_self(&active, &pad);
            out_ids.narrow(1, step, 1).copy_(&next.unsqueeze(1));
            out_mask.narrow(1, step, 1).copy_(&active.unsqueeze(1));
            out_lp.narrow(1, step, 1).copy_(&(lp * &active).unsqueeze(1));
            if !unpadded {
                mask.narrow(1, p + step, 1).copy_(&active.unsqueeze(1));
            }
            for &eos in &cfg.eos_ids {
                finished = finished.logical_or(&next.eq(eos));
            }
            if step + 1 == n || ((step + 1) % check_every == 0 && bool::try_from(finished.all())?) {
                break;
            }
            let h = forward(&next.unsqueeze(1), p + step + 1, &mut cache)?; // [B, 1, D]
            logits = model.lm_head(&h.select(1, 0)); // [B, V]
        }
        Ok(())
    })?;
    // Rows stay active up to and including their EOS, so the longest response is the number
    // of steps in which any row was active.
    let steps = i64::try_from(out_mask.sum_dim_intlist(1, false, Kind::Int64).max())?;
    let response_ids = out_ids.narrow(1, 0, steps);
    let response_mask = out_mask.narrow(1, 0, steps);
    Ok(Generation {
        ids: Tensor::cat(&[&prompt_ids, &response_ids], 1),
        attention_mask: Tensor::cat(&[&prompt_mask, &response_mask], 1),
        prompt_len: p,
        logprobs: out_lp.narrow(1, 0, steps),
        response_ids,
        response_mask,
        texts: Vec::new(),
    })
}

/// Tokenises `prompts` (already rendered, e.g. with [`crate::ChatTemplate`]), generates, and
/// decodes each response up to its EOS (special tokens skipped).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[String],
    adapter: Adapter<'_>,
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> Result<Generation, LmError> {
    let ids: Vec<Vec<i64>> =
        prompts.iter().map(|p| tokenizer.encode(p)).collect::<Result<_, _>>()?;
    let mut g = generate_ids(model, &ids, adapter, cfg, rng)?;
    g.texts = response_texts(&g, tokenizer)?;
    Ok(g)
}

/// [`generate`] with one RNG per row (see [`generate_ids_per_row`]).
pub fn generate_per_row<R: Rng>(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[String],
    adapter: Adapter<'_>,
    cfg: &GenerateConfig,
    rngs: &mut [R],
) -> Result<Generation, LmError> {
    let ids: Vec<Vec<i64>> =
        prompts.iter().map(|p| tokenizer.encode(p)).collect::<Result<_, _>>()?;
    let mut g = generate_ids_per_row(model, &ids, adapter, cfg, rngs)?;
    g.texts = response_texts(&g, tokenizer)?;
    Ok(g)
}

/// Decodes each row's response tokens under its response mask, special tokens skipped.
pub fn response_texts(g: &Generation, tokenizer: &Tokenizer) -> Result<Vec<String>, LmError> {
    let ids = g.response_ids.to_device(Device::Cpu);
    let mask = g.response_mask.to_device(Device::Cpu);
    (0..ids.size()[0])
        .map(|r| {
            let row: Vec<i64> = Vec::try_from(ids.get(r))?;
            let m: Vec<i64> = Vec::try_from(mask.get(r))?;
            let kept: Vec<i64> =
                row.iter().zip(&m).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect();
            tokenizer.decode(&kept, true)
        })
        .collect()
}

/// The negative log-likelihood (nats) of each token of `ids` given the ones before it, in
/// windows of at most `window` tokens (each window starts fresh): [len - windows] values.
pub fn token_nlls(
    model: &dyn CausalLm,
    ids: &[i64],
    adapter: Adapter<'_>,
    window: usize,
) -> Result<Vec<f64>, LmError> {
    if ids.len() < 2 || window < 2 {
        return Err(LmError::Invalid(format!(
            "likelihood needs at least 2 tokens and a window of ≥ 2 (got {} tokens, window {window})",
            ids.len()
        )));
    }
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(window).filter(|c| c.len() >= 2) {
        let t = chunk.len() as i64;
        let x = Tensor::from_slice(chunk).to_device(model.device()).view([1, t]); // [1, T]
        let mask = x.ones_like();
        let nll = tch::no_grad(|| {
            let logp = model.logits(&x, &mask, adapter).log_softmax(-1, Kind::Float); // [1, T, V]
            let target = x.narrow(1, 1, t - 1).unsqueeze(-1); // [1, T-1, 1]
            logp.narrow(1, 0, t - 1).gather(2, &target, false).neg().view([t - 1])
            // [T-1]
        });
        out.extend(Vec::<f64>::try_from(nll.to_kind(Kind::Double).to_device(Device::Cpu))?);
    }
    Ok(out)
}
