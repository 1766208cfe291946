//! Sequence log-probs of a pair batch with the shared prefix run once (issue #8).
//!
//! The two sequences of a pair share the prompt (and often the first response tokens). In a
//! causal model the hidden states of that common prefix do not depend on what follows, so
//! [`crate::trainer::sequence_logps`] computes them twice. Here each pair becomes one packed
//! row
//!
//! ```text
//! [ shared prefix (d) | rest of sequence 0 (n0 − d) | rest of sequence 1 (n1 − d) | padding ]
//!   positions 0..d      positions d..n0                positions d..n1
//! ```
//!
//! with an attention mask under which a token sees the earlier tokens of the shared prefix and
//! of its own segment, never the other response. Every token then computes exactly what it
//! computes in its own unpacked row (same keys, values and RoPE positions), and gradients reach
//! the shared prefix from both responses through the same graph. On the bundled PKU pairs
//! (prompt 51 tokens, responses about 40) this is 72 % of the tokens of the unpacked batch
//! (benches/README.md, "DPO step speed vs TRL").
//!
//! The forward itself needs a custom mask and positions, which `CausalLm::hidden_states` does
//! not take, so [`PackedLm`] adds it; for Llama it is `Llama::hidden_states_packed`, the same
//! layers as every other forward. Tests hold it equal to the unpacked path.

use panacea_core::adapter::Adapter;
use panacea_lm::{CausalLm, Checkpointed, Llama};
use tch::{Device, Kind, Tensor};

use crate::data::PairBatch;

/// A causal LM that can run packed rows: explicit RoPE positions and an explicit attention
/// mask instead of the plain causal one.
pub trait PackedLm: CausalLm {
    /// Final hidden states after the last norm: ids [B, L] (i64), positions [B, L] (i64),
    /// attend [B, 1, L, L] (bool, true = query row may attend key column) → [B, L, D].
    fn packed_hidden_states(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Tensor;

    /// [`PackedLm::packed_hidden_states`] with activation checkpointing per decoder layer
    /// (`train.activation_checkpointing`): the layers' activations are recomputed by
    /// [`Checkpointed::backward`], which the caller runs after its own `backward`.
    fn packed_hidden_states_checkpointed(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_>;
}

impl PackedLm for Llama {
    fn packed_hidden_states(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Tensor {
        self.hidden_states_packed(ids, positions, attend, adapter)
    }

    fn packed_hidden_states_checkpointed(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        attend: &Tensor,
        adapter: Adapter<'_>,
    ) -> Checkpointed<'_> {
        self.hidden_states_packed_checkpointed(ids, positions, attend, adapter)
    }
}

/// The packed layout of a pair batch, built on the host from its ids and masks.
#[derive(Debug)]
pub(crate) struct Packed {
    /// [B, L]: shared prefix, rest of sequence 0, rest of sequence 1, padding (id 0).
    pub(crate) ids: Vec<i64>,
    /// [B, L]: the token's position in its own unpacked sequence (0 for padding).
    pub(crate) positions: Vec<i64>,
    /// [B, L]: 0 shared prefix, 1 and 2 the two rests, 3 padding.
    pub(crate) segment: Vec<i64>,
    pub(crate) l: usize,
    /// Flat [B·L] index of every packed position whose hidden state predicts a scored token,
    /// each once (the last shared position predicts the first token of both responses).
    pub(crate) predictors: Vec<i64>,
    /// Per scored token: index into `predictors`, target id, output row (j·B + i).
    pub(crate) source: Vec<i64>,
    pub(crate) target: Vec<i64>,
    pub(crate) row: Vec<i64>,
}

fn host_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).to_device(Device::Cpu).reshape([-1]))
        .expect("an integer tensor converts to host i64")
}

/// Packs `batch` (rows i and B + i are pair i's two sequences; padding anywhere the attention
/// mask is 0). A scored column a of row r (response_mask[r, a]) means: the real token at column
/// a + 1 is predicted by the one at column a.
pub(crate) fn pack(batch: &PairBatch) -> Packed {
    let b = batch.len();
    let t = batch.ids.size()[1] as usize;
    let a = t - 1;
    let (ids, mask, scored) =
        (host_i64(&batch.ids), host_i64(&batch.attention_mask), host_i64(&batch.response_mask));
    // Per row: its real columns in order, and each column's index among them.
    let real: Vec<Vec<usize>> =
        (0..2 * b).map(|r| (0..t).filter(|&c| mask[r * t + c] != 0).collect()).collect();
    let shared: Vec<usize> = (0..b)
        .map(|i| {
            let (s0, s1) = (&real[i], &real[b + i]);
            s0.iter()
                .zip(s1)
                .take_while(|(&c0, &c1)| ids[i * t + c0] == ids[(b + i) * t + c1])
                .count()
        })
        .collect();
    let l = (0..b).map(|i| real[i].len() + real[b + i].len() - shared[i]).max().unwrap_or(1).max(1);
    let mut p = Packed {
        ids: vec![0; b * l],
        positions: vec![0; b * l],
        segment: vec![3; b * l],
        l,
        predictors: Vec::new(),
        source: Vec::new(),
        target: Vec::new(),
        row: Vec::new(),
    };
    let mut slot = vec![usize::MAX; b * l]; // packed flat index → index into `predictors`
    for i in 0..b {
        let d = shared[i];
        let n0 = real[i].len();
        // Packed column of real token k of sequence j: the shared prefix and the rest of
        // sequence 0 keep their places, the rest of sequence 1 follows sequence 0.
        let packed_col = |j: usize, k: usize| if j == 1 && k >= d { n0 + k - d } else { k };
        for j in 0..2 {
            let r = j * b + i;
            for (k, &c) in real[r].iter().enumerate() {
                let at = i * l + packed_col(j, k);
                p.ids[at] = ids[r * t + c];
                p.positions[at] = k as i64;
                p.segment[at] = if k < d { 0 } else { 1 + j as i64 };
            }
            let index_of = |c: usize| real[r].binary_search(&c).ok();
            for col in (0..a).filter(|&col| scored[r * a + col] != 0) {
                let (Some(k), Some(k_next)) = (index_of(col), index_of(col + 1)) else {
                    continue; // a scored column on padding scores nothing (as unpacked)
                };
                let at = i * l + packed_col(j, k);
                if slot[at] == usize::MAX {
                    slot[at] = p.predictors.len();
                    p.predictors.push(at as i64);
                }
                p.source.push(slot[at] as i64);
                p.target.push(ids[r * t + real[r][k_next]]);
                p.row.push(r as i64);
            }
        }
    }
    p
}

/// The attention mask of packed rows from their segments [B, L] (0 shared prefix, 1 and 2 the
/// two rests, 3 padding) → [B, 1, L, L] (bool, query row, key column): a query sees key k ≤ q of
/// the shared prefix or of its own segment (padding sees the prefix and earlier padding).
pub(crate) fn packed_attend(segment: &Tensor) -> Tensor {
    let l = segment.size()[1];
    let idx = Tensor::arange(l, (Kind::Int64, segment.device())); // [L]
    let causal = idx.unsqueeze(0).le_tensor(&idx.unsqueeze(1)); // [L, L] (query, key)
    let same = segment.unsqueeze(2).eq_tensor(&segment.unsqueeze(1)); // [B, L, L]
    let shared_key = segment.eq(0).unsqueeze(1); // [B, 1, L]
    same.logical_or(&shared_key).logical_and(&causal).unsqueeze(1) // [B, 1, L, L]
}

/// Sequence log-probs of a pair batch, Σ over the response mask of log p(token | prefix) per
/// row → [2B] (f32), with each pair's common prefix computed once (module docs). Equal to
/// [`crate::trainer::sequence_logps`] up to float summation order (tested). A per-pair λ is
/// [B, K] (one row per pair, not per sequence).
///
/// When packing saves no tokens (B·L ≥ 2B·T: pairs without a common prefix, such as random
/// ids), the plain path runs instead: its rows are half as long, so attention costs less, and
/// unpadded rows keep SDPA's mask-free causal kernels.
pub fn shared_prefix_logps<M: PackedLm + ?Sized>(
    model: &M,
    batch: &PairBatch,
    adapter: Adapter<'_>,
) -> Tensor {
    shared_prefix_logps_for_training(model, batch, adapter, false).0
}

/// [`shared_prefix_logps`] for a training forward: with `checkpointing`
/// (`train.activation_checkpointing`) the forward keeps only each decoder layer's input, the
/// log-probs' graph ends at the last layer's output, and the returned [`Checkpointed`] must
/// run its [`Checkpointed::backward`] after the caller's backward of a loss of them, which
/// recomputes the layers and completes the gradient. Without it this is
/// [`shared_prefix_logps`] and `None`.
pub fn shared_prefix_logps_for_training<'m, M: PackedLm + ?Sized>(
    model: &'m M,
    batch: &PairBatch,
    adapter: Adapter<'_>,
    checkpointing: bool,
) -> (Tensor, Option<Checkpointed<'m>>) {
    let dev = model.device();
    let p = pack(batch);
    let (b, l) = (batch.len() as i64, p.l as i64);
    if l >= 2 * batch.ids.size()[1] {
        let rows; // [2B, K]: both sequences of a pair
        let adapter = match adapter {
            Adapter::On { pref } if pref.dim() == 2 => {
                rows = Tensor::cat(&[pref, pref], 0);
                Adapter::On { pref: &rows }
            }
            other => other,
        };
        if !checkpointing {
            return (crate::trainer::sequence_logps(model, batch, adapter), None);
        }
        let ck = model.hidden_states_checkpointed(&batch.ids, &batch.attention_mask, adapter);
        let lp = crate::trainer::sequence_logps_of_hidden(model, batch, &ck.hidden);
        return (lp, Some(ck));
    }
    let long = |v: &[i64]| Tensor::from_slice(v).to_device(dev);
    let ids = long(&p.ids).view([b, l]); // [B, L]
    let positions = long(&p.positions).view([b, l]); // [B, L]
    let segment = long(&p.segment).view([b, l]); // [B, L]

    let attend = packed_attend(&segment); // [B, 1, L, L]
    let (hidden, ck) = if checkpointing {
        let ck = model.packed_hidden_states_checkpointed(&ids, &positions, &attend, adapter);
        (ck.hidden.shallow_clone(), Some(ck))
    } else {
        (model.packed_hidden_states(&ids, &positions, &attend, adapter), None)
    }; // [B, L, D]
    let d = hidden.size()[2];
    let h = hidden.reshape([b * l, d]).index_select(0, &long(&p.predictors)); // [U, D]
    let logits = model.lm_head(&h).to_kind(Kind::Float); // [U, V]
    let v = logits.size()[1];
    let source = long(&p.source); // [N]
    let flat = &source * v + long(&p.target); // [N]
    let picked = logits.reshape([-1]).index_select(0, &flat); // [N]
    let lse = logits.logsumexp([1i64].as_slice(), false).index_select(0, &source); // [N]
    let out = Tensor::zeros([2 * b], (Kind::Float, dev)); // [2B]
    (out.index_add(0, &long(&p.row), &(picked - lse)), ck)
}
