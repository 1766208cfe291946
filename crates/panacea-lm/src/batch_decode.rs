//! Continuous batching: a decode batch whose rows join and leave between steps.
//!
//! [`crate::generate_ids`] runs a fixed batch from its first token to its last. A server wants
//! more: a request that arrives while others are decoding joins at the next step, and a
//! finished row leaves at once, so the batch is always the requests in flight. [`SlotBatch`]
//! does that over one preallocated KV cache of `max_rows` rows and `capacity` columns:
//!
//! - Every step writes one column, the same column `len` for every row, so one step is one
//!   [`Llama::forward_cached`] call over the B active rows (rows 0..B, kept contiguous).
//! - Each row records which columns hold its tokens in an attention mask [max_rows, capacity].
//!   A row's tokens are always one contiguous run `start..len` (its prompt, then one token per
//!   step), ending at `len` like every other row. Positions come from the mask (the count of a
//!   row's real tokens), so where a row's run starts changes nothing it computes.
//! - A joining prompt of P tokens is prefilled alone (batch 1, no padding), and its keys and
//!   values are copied into the free row's columns `len - P..len`; when `len < P` every row is
//!   first shifted right. Its logits for the first new token come back to the caller.
//! - A leaving row is replaced by the last row (a copy of one cache row), so rows stay 0..B.
//! - When the next column would pass the capacity, or the runs all start far to the right,
//!   the columns before the earliest start are dead for every row and are cut off (one copy).
//!
//! λ travels with the rows: under `Adapter::On { pref }` the step's pref is [B, K], row r's
//! preference in row r, so requests with different λ share every forward.
//!
//! The caller chooses tokens from the returned logits (e.g. [`crate::generate::choose_tokens`])
//! and keeps each row's own state (sampling, stop rules); this type only holds the cache.

use tch::{Device, Kind, Tensor};

use crate::error::LmError;
use crate::llama::{KvCache, LayerCache, Llama};
use crate::{Adapter, CausalLm};

/// A decode batch over a preallocated cache whose rows join and leave between steps (see the
/// module docs).
#[derive(Debug)]
pub struct SlotBatch {
    /// Keys/values [max_rows, Hkv, capacity, hd] per layer; `cache.len` is the next column.
    cache: KvCache,
    /// 1 where a row's column holds one of its tokens: [max_rows, capacity], i64.
    mask: Tensor,
    /// First column of each active row's run, rows 0..B.
    starts: Vec<i64>,
    max_rows: i64,
}

impl SlotBatch {
    /// Allocates the cache for `max_rows` rows of `capacity` positions each (a row's prompt
    /// plus its new tokens must fit in `capacity`, and `capacity` in the model's context).
    pub fn new(model: &Llama, max_rows: i64, capacity: i64) -> Result<Self, LmError> {
        if max_rows < 1 || capacity < 2 {
            return Err(LmError::Invalid(format!(
                "slot batch: max_rows = {max_rows} must be ≥ 1 and capacity = {capacity} ≥ 2"
            )));
        }
        crate::generate::check_context(model, "slot batch", capacity, 0)?;
        // Uninitialised: the memory is only committed as rows use it (a server sized for 32
        // rows of 1536 positions would otherwise hold 2 GB for SmolLM2 from the start). A
        // column is read only after it was written or zeroed (see `join`), so no stale value,
        // let alone a NaN, ever meets the attention.
        let c = &model.config;
        let shape = [max_rows, c.kv_heads(), capacity, c.head_dim()];
        let opts = (model.kind(), model.device());
        let layers = (0..c.num_hidden_layers)
            .map(|_| {
                Ok(LayerCache {
                    k: Tensor::f_empty(shape, opts)?,
                    v: Tensor::f_empty(shape, opts)?,
                })
            })
            .collect::<Result<_, LmError>>()?;
        let cache = KvCache { layers, len: 0, capacity };
        let mask = Tensor::f_zeros([max_rows, capacity], (Kind::Int64, model.device()))?;
        Ok(Self { cache, mask, starts: Vec::new(), max_rows })
    }

    /// Active rows B.
    pub fn rows(&self) -> usize {
        self.starts.len()
    }

    /// Whether a row can join.
    pub fn has_room(&self) -> bool {
        (self.starts.len() as i64) < self.max_rows
    }

    /// Most rows at once.
    pub fn max_rows(&self) -> i64 {
        self.max_rows
    }

    /// Positions each row can hold (prompt plus new tokens).
    pub fn capacity(&self) -> i64 {
        self.cache.capacity
    }

    /// Columns in use: the next step writes column `len()`.
    pub fn len(&self) -> i64 {
        self.cache.len
    }

    /// Whether no column is in use (no active row).
    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Tokens held by row `r` (its prompt and the tokens it has been fed).
    pub fn row_len(&self, r: usize) -> Option<i64> {
        self.starts.get(r).map(|s| self.cache.len - s)
    }

    /// Prefills `prompt` alone (batch 1, under `adapter`, whose pref must be one row: [1, K]
    /// or [K]) and adds it as row B. Returns its logits for the first new token: [1, V], f32.
    pub fn join(
        &mut self,
        model: &Llama,
        prompt: &[i64],
        adapter: Adapter<'_>,
    ) -> Result<Tensor, LmError> {
        let p = prompt.len() as i64;
        if p == 0 || p >= self.capacity() {
            return Err(LmError::Invalid(format!(
                "slot batch: a prompt needs 1 to {} tokens (capacity {} less one new token), got {p}",
                self.capacity() - 1,
                self.capacity()
            )));
        }
        if !self.has_room() {
            return Err(LmError::Invalid(format!(
                "slot batch: all {} rows are in use",
                self.max_rows
            )));
        }
        let device = model.device();
        let mut alone = KvCache::try_new(model, 1, p)?;
        let ids = Tensor::from_slice(prompt).to_device(device).view([1, p]); // [1, P]
        let logits = tch::no_grad(|| -> Result<Tensor, LmError> {
            let h = model.forward_cached_unpadded(&ids, &mut alone, adapter)?; // [1, P, D]
            Ok(model.lm_head(&h.select(1, p - 1))) // [1, V]
        })?;
        tch::no_grad(|| {
            if self.starts.is_empty() {
                self.cache.len = p;
            } else if self.cache.len < p {
                self.shift_right(p - self.cache.len);
            }
            let (r, len) = (self.starts.len() as i64, self.cache.len);
            let start = len - p;
            for (big, small) in self.cache.layers.iter().zip(&alone.layers) {
                big.k.get(r).narrow(1, start, p).copy_(&small.k.get(0)); // [Hkv, P, hd]
                big.v.get(r).narrow(1, start, p).copy_(&small.v.get(0));
                if start > 0 {
                    // Masked, but read by the attention: finite zeros, never stale memory.
                    let _ = big.k.get(r).narrow(1, 0, start).zero_();
                    let _ = big.v.get(r).narrow(1, 0, start).zero_();
                }
            }
            let row = self.mask.get(r); // [capacity]
            let _ = row.shallow_clone().zero_();
            let _ = row.narrow(0, start, p).fill_(1);
            self.starts.push(start);
        });
        Ok(logits)
    }

    /// One decode step: `tokens[r]` is row r's next token. Under `Adapter::On`, pref is
    /// [B, K] in row order. Returns the logits of every row's following token: [B, V], f32.
    pub fn step(
        &mut self,
        model: &Llama,
        tokens: &[i64],
        adapter: Adapter<'_>,
    ) -> Result<Tensor, LmError> {
        let b = self.starts.len() as i64;
        if b == 0 || tokens.len() as i64 != b {
            return Err(LmError::Invalid(format!(
                "slot batch: {} tokens for {b} active rows (at least one row must be active)",
                tokens.len()
            )));
        }
        let earliest = self.starts.iter().copied().min().unwrap_or(0);
        // Cut the dead columns when the next one would not fit, and also once they make up half
        // the cache, so the attention does not keep reading columns no row uses.
        if self.cache.len + 1 > self.capacity() || earliest >= self.capacity() / 2 {
            self.compact();
        }
        if self.cache.len + 1 > self.capacity() {
            return Err(LmError::ContextExceeded {
                what: "slot batch".into(),
                prompt_len: self.cache.len,
                new_tokens: 1,
                limit: self.capacity(),
            });
        }
        let len = self.cache.len;
        let device = model.device();
        tch::no_grad(|| -> Result<Tensor, LmError> {
            let _ = self.mask.narrow(0, 0, b).narrow(1, len, 1).fill_(1);
            let mut active = KvCache {
                layers: self
                    .cache
                    .layers
                    .iter()
                    .map(|l| LayerCache { k: l.k.narrow(0, 0, b), v: l.v.narrow(0, 0, b) })
                    .collect(),
                len,
                capacity: self.cache.capacity,
            }; // views of rows 0..B: the forward writes column `len` of the big cache
            let ids = Tensor::from_slice(tokens).to_device(device).view([b, 1]); // [B, 1]
            let mask = self.mask.narrow(0, 0, b).narrow(1, 0, len + 1); // [B, len + 1]
            let h = model.forward_cached(&ids, &mask, &mut active, adapter)?; // [B, 1, D]
            self.cache.len = len + 1;
            Ok(model.lm_head(&h.select(1, 0))) // [B, V]
        })
    }

    /// Removes row `r`; the last row moves into its place (so rows stay 0..B). Callers that
    /// keep per-row state must apply the same swap-remove.
    pub fn leave(&mut self, r: usize) -> Result<(), LmError> {
        let b = self.starts.len();
        if r >= b {
            return Err(LmError::Invalid(format!("slot batch: row {r} of {b} active rows")));
        }
        let last = b - 1;
        if r != last {
            let (ri, li) = (r as i64, last as i64);
            tch::no_grad(|| {
                for l in &self.cache.layers {
                    l.k.get(ri).copy_(&l.k.get(li));
                    l.v.get(ri).copy_(&l.v.get(li));
                }
                self.mask.get(ri).copy_(&self.mask.get(li));
            });
        }
        self.starts.swap_remove(r);
        if self.starts.is_empty() {
            self.cache.len = 0;
        }
        Ok(())
    }

    /// Drops every row.
    pub fn clear(&mut self) {
        self.starts.clear();
        self.cache.len = 0;
    }

    /// Moves every row's columns `0..len` to `d..d + len` (d > 0, len + d ≤ capacity).
    fn shift_right(&mut self, d: i64) {
        let (b, len) = (self.starts.len() as i64, self.cache.len);
        let shift = |t: &Tensor, dim: i64| {
            let rows = t.narrow(0, 0, b);
            let moved = rows.narrow(dim, 0, len).copy(); // the ranges overlap: copy first
            rows.narrow(dim, d, len).copy_(&moved);
        };
        for l in &self.cache.layers {
            shift(&l.k, 2);
            shift(&l.v, 2);
        }
        shift(&self.mask, 1);
        let _ = self.mask.narrow(0, 0, b).narrow(1, 0, d).zero_();
        self.starts.iter_mut().for_each(|s| *s += d);
        self.cache.len += d;
    }

    /// Cuts the columns before the earliest row's start, which no row uses any more.
    fn compact(&mut self) {
        let Some(d) = self.starts.iter().copied().min().filter(|&d| d > 0) else { return };
        let (b, keep) = (self.starts.len() as i64, self.cache.len - d);
        tch::no_grad(|| {
            let cut = |t: &Tensor, dim: i64| {
                let rows = t.narrow(0, 0, b);
                let kept = rows.narrow(dim, d, keep).copy(); // the ranges overlap: copy first
                rows.narrow(dim, 0, keep).copy_(&kept);
            };
            for l in &self.cache.layers {
                cut(&l.k, 2);
                cut(&l.v, 2);
            }
            cut(&self.mask, 1);
        });
        self.starts.iter_mut().for_each(|s| *s -= d);
        self.cache.len = keep;
    }

    /// The device of the cache.
    pub fn device(&self) -> Device {
        self.mask.device()
    }
}
