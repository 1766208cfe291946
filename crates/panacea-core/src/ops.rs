//! Tensor helpers shared by the RLHF and DPO trainers: token log-probabilities, masked means
//! and masked whitening. Log-softmax and reductions run in f32 whatever the model's dtype
//! (docs/method.md, §2.2 "Precision").

use tch::{Kind, Tensor};

use crate::CoreError;

fn shape_err(what: &str, expected: Vec<i64>, got: Vec<i64>) -> CoreError {
    CoreError::Shape { what: what.to_owned(), expected, got }
}

/// Log-probability of each next token: `out[b, t] = log softmax(logits[b, t])[ids[b, t + 1]]`.
///
/// logits [B, T, V] (any float dtype), ids [B, T] (int64) → [B, T−1] f32. Computed as
/// `logit[id] − logsumexp(logits)` in f32, which never materialises a second [B, T, V]
/// log-softmax tensor.
pub fn gather_log_probs(logits: &Tensor, ids: &Tensor) -> Result<Tensor, CoreError> {
    let ls = logits.size();
    let is = ids.size();
    if ls.len() != 3 || is.len() != 2 || ls[0] != is[0] || ls[1] != is[1] || ls[1] < 2 {
        return Err(shape_err(
            "gather_log_probs logits [B, T, V] and ids [B, T] (T ≥ 2)",
            vec![is.first().copied().unwrap_or(-1), is.get(1).copied().unwrap_or(-1), -1],
            ls,
        ));
    }
    let t = ls[1];
    let logits = logits.narrow(1, 0, t - 1).to_kind(Kind::Float); // [B, A, V]
    let next = ids.narrow(1, 1, t - 1).to_kind(Kind::Int64).unsqueeze(-1); // [B, A, 1]
    let picked = logits.gather(2, &next, false).squeeze_dim(-1); // [B, A]
    let lse = logits.logsumexp([-1], false); // [B, A]
    Ok(picked - lse) // [B, A]
}

/// Sum of token log-probs over the masked positions: token_lp [B, A], mask [B, A] (bool or
/// 0/1) → [B] f32.
pub fn sequence_log_probs(token_lp: &Tensor, mask: &Tensor) -> Result<Tensor, CoreError> {
    if token_lp.size() != mask.size() || token_lp.dim() != 2 {
        return Err(shape_err("sequence_log_probs mask [B, A]", token_lp.size(), mask.size()));
    }
    let m = mask.to_kind(Kind::Float); // [B, A]
    Ok((token_lp.to_kind(Kind::Float) * m).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float))
    // [B]
}

/// Σ(x·mask) / Σmask over every element (f32 scalar). An all-false mask gives 0, not NaN.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_kind(Kind::Float); // same shape as x
    let total = (x.to_kind(Kind::Float) * &m).sum(Kind::Float); // []
    total / m.sum(Kind::Float).clamp_min(1.0) // []
}

/// Σ(x·mask) / Σmask along `dim`. Rows whose mask is all false give 0, not NaN.
pub fn masked_mean_dim(x: &Tensor, mask: &Tensor, dim: i64) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    let total = (x.to_kind(Kind::Float) * &m).sum_dim_intlist([dim].as_slice(), false, Kind::Float);
    let count = m.sum_dim_intlist([dim].as_slice(), false, Kind::Float).clamp_min(1.0);
    total / count
}

/// Whitening over the masked elements: (x − mean) / sqrt(var + 1e-8), with mean and the
/// population variance taken over positions where `mask` is true; with `shift_mean = false`
/// the mean is added back (scale only). Positions outside the mask are 0 in the output, and an
/// all-false mask gives all zeros, not NaN. f32.
pub fn masked_whiten(x: &Tensor, mask: &Tensor, shift_mean: bool) -> Tensor {
    let m = mask.to_kind(Kind::Float);
    let x = x.to_kind(Kind::Float);
    let mean = masked_mean(&x, &m); // []
    let centred = (&x - &mean) * &m;
    let var = masked_mean(&centred.square(), &m); // []
    let mut out = &centred * (var + 1e-8).rsqrt();
    if !shift_mean {
        out += &mean;
    }
    out * m
}

/// Whether autograd is recording right now (libtorch's thread-local grad mode): the caches and
/// fast paths that must never serve a forward whose gradient is wanted ask this.
pub fn grad_enabled() -> bool {
    // SAFETY: at_grad_set_enabled only flips libtorch's thread-local GradMode flag and returns
    // its previous value; it cannot fail. The flag is restored straight away.
    unsafe {
        let prev = torch_sys::at_grad_set_enabled(0);
        torch_sys::at_grad_set_enabled(prev);
        prev != 0
    }
}
