//! The DPO step at bucketed shapes, so that it can be captured as a CUDA graph
//! (`train.cuda_graphs`; [`crate::trainer::DpoTrainer::step_graphed`]).
//!
//! The packed layout of [`crate::shared_prefix`] has data-dependent shapes: the packed length
//! L, and the scored tokens N that the log-probs gather (found with host loops and index
//! lists). A graph replays fixed shapes, so [`PaddedPairs`] pads both up to
//! [`panacea_lm::bucket_len`]:
//!
//! - the packed rows [B, L] to [B, Lb] with padding tokens (segment 3, id 0, position 0),
//!   which attend only to the shared prefix and to earlier padding, exactly as the padding of
//!   the shorter rows of a packed batch already does; no real token attends to them;
//! - the scored tokens [N] to [Nb]: each entry names the packed position that predicts it, its
//!   target id, its output row and a weight, 1 for real entries and 0 for the padding entries
//!   (which read position 0 and add 0 · log p to row 0).
//!
//! The log-probs then equal [`crate::shared_prefix_logps`] up to f32 summation order
//! (attention spans more masked columns, and a position that predicts two scored tokens goes
//! through the LM head once per token instead of once), and so do the loss and the adapter
//! gradients (tested). The extra work is the padding (at most a quarter of each bucket, plus
//! the 16-token minimum) and the LM head rows of the few twice-scored positions.

use panacea_core::adapter::Adapter;
use panacea_core::optim::DeviceStepScalars;
use panacea_lm::{bucket_len, GraphedStep};
use tch::{Device, Kind, Tensor};

use crate::data::PairBatch;
use crate::loss::DpoLossOutput;
use crate::shared_prefix::{pack, packed_attend, PackedLm};

/// A pair batch packed one row per pair and padded to bucketed shapes (module docs).
#[derive(Debug)]
pub struct PaddedPairs {
    /// [B, Lb] i64: shared prefix, rest of sequence 0, rest of sequence 1, padding (id 0).
    pub ids: Tensor,
    /// [B, Lb] i64: each token's position in its own unpacked sequence (0 for padding).
    pub positions: Tensor,
    /// [B, Lb] i64: 0 shared prefix, 1 and 2 the two rests, 3 padding.
    pub segment: Tensor,
    /// [Nb] i64: flat index into [B·Lb] of the position that predicts each scored token.
    pub predictor: Tensor,
    /// [Nb] i64: the scored token's id.
    pub target: Tensor,
    /// [Nb] i64: its output row (pair i's sequence j is row j·B + i).
    pub row: Tensor,
    /// [Nb] f32: 1 for a scored token, 0 for padding entries.
    pub weight: Tensor,
}

/// The bucket of a padded pair batch: (pairs B, packed length Lb, scored tokens Nb).
pub type PairBucket = (i64, i64, i64);

impl PaddedPairs {
    /// Packs `batch` on the host and pads it to its bucket, on `device`.
    pub fn new(batch: &PairBatch, device: Device) -> Self {
        let p = pack(batch);
        let b = batch.len();
        let (l, n) = (p.l, p.source.len());
        let (lb, nb) = (bucket_len(l as i64) as usize, bucket_len(n as i64) as usize);
        let widen = |v: &[i64], fill: i64| {
            let mut out = vec![fill; b * lb];
            for i in 0..b {
                out[i * lb..i * lb + l].copy_from_slice(&v[i * l..(i + 1) * l]);
            }
            Tensor::from_slice(&out).view([b as i64, lb as i64]).to_device(device)
        };
        // Flat indices move from [B·L] to [B·Lb].
        let predictor: Vec<i64> = p
            .source
            .iter()
            .map(|&s| {
                let at = p.predictors[s as usize] as usize;
                ((at / l) * lb + at % l) as i64
            })
            .chain(std::iter::repeat_n(0, nb - n))
            .collect();
        let pad = |v: &[i64]| {
            let padded: Vec<i64> =
                v.iter().copied().chain(std::iter::repeat_n(0, nb - n)).collect();
            Tensor::from_slice(&padded).to_device(device)
        };
        let weight: Vec<f32> = (0..nb).map(|j| if j < n { 1.0 } else { 0.0 }).collect();
        Self {
            ids: widen(&p.ids, 0),
            positions: widen(&p.positions, 0),
            segment: widen(&p.segment, 3),
            predictor: Tensor::from_slice(&predictor).to_device(device),
            target: pad(&p.target),
            row: pad(&p.row),
            weight: Tensor::from_slice(&weight).to_device(device),
        }
    }

    /// Its bucket.
    pub fn bucket(&self) -> PairBucket {
        let s = self.ids.size();
        (s[0], s[1], self.predictor.size()[0])
    }

    /// Zeroed buffers of `bucket`'s shapes (a graph's static inputs).
    fn zeros(bucket: PairBucket, device: Device) -> Self {
        let (b, lb, nb) = bucket;
        let long = (Kind::Int64, device);
        Self {
            ids: Tensor::zeros([b, lb], long),
            positions: Tensor::zeros([b, lb], long),
            segment: Tensor::full([b, lb], 3, long),
            predictor: Tensor::zeros([nb], long),
            target: Tensor::zeros([nb], long),
            row: Tensor::zeros([nb], long),
            weight: Tensor::zeros([nb], (Kind::Float, device)),
        }
    }

    /// Copies `other` (of the same bucket) into these buffers.
    fn copy_from(&self, other: &PaddedPairs) {
        for (dst, src) in [
            (&self.ids, &other.ids),
            (&self.positions, &other.positions),
            (&self.segment, &other.segment),
            (&self.predictor, &other.predictor),
            (&self.target, &other.target),
            (&self.row, &other.row),
            (&self.weight, &other.weight),
        ] {
            dst.shallow_clone().copy_(src);
        }
    }
}

/// Sequence log-probs [2B] (f32) of a padded pair batch: [`crate::shared_prefix_logps`] at
/// fixed shapes, with nothing read on the host (module docs).
pub fn padded_pair_logps<M: PackedLm + ?Sized>(
    model: &M,
    pairs: &PaddedPairs,
    adapter: Adapter<'_>,
) -> Tensor {
    let (b, lb) = (pairs.ids.size()[0], pairs.ids.size()[1]);
    let attend = packed_attend(&pairs.segment); // [B, 1, Lb, Lb]
    let hidden = model.packed_hidden_states(&pairs.ids, &pairs.positions, &attend, adapter); // [B, Lb, D]
    let d = hidden.size()[2];
    let h = hidden.reshape([b * lb, d]).index_select(0, &pairs.predictor); // [Nb, D]
    let logits = model.lm_head(&h).to_kind(Kind::Float); // [Nb, V]
    let picked = logits.gather(1, &pairs.target.unsqueeze(1), false).squeeze_dim(1); // [Nb]
    let lse = logits.logsumexp([1i64].as_slice(), false); // [Nb]
    let token_lp = (picked - lse) * &pairs.weight; // [Nb]
    Tensor::zeros([2 * b], (Kind::Float, pairs.ids.device())).index_add(0, &pairs.row, &token_lp)
    // [2B]
}

/// The static inputs of one bucket's graphed step.
#[derive(Debug)]
pub(crate) struct DpoStatics {
    pub(crate) pairs: PaddedPairs,
    /// Reference log-probs [2B] f32.
    pub(crate) reference: Tensor,
    /// Labels [B, K] f32.
    pub(crate) labels: Tensor,
    /// λ [K] f32 (one preference for the batch).
    pub(crate) pref: Tensor,
}

impl DpoStatics {
    pub(crate) fn zeros(bucket: PairBucket, k: i64, device: Device) -> Self {
        let f32s = (Kind::Float, device);
        Self {
            pairs: PaddedPairs::zeros(bucket, device),
            reference: Tensor::zeros([2 * bucket.0], f32s),
            labels: Tensor::zeros([bucket.0, k], f32s),
            pref: Tensor::zeros([k], f32s),
        }
    }

    /// Writes one step's inputs (shapes as in [`DpoStatics::zeros`]).
    pub(crate) fn fill(
        &self,
        pairs: &PaddedPairs,
        reference: &Tensor,
        labels: &Tensor,
        pref: &Tensor,
    ) {
        tch::no_grad(|| {
            self.pairs.copy_from(pairs);
            self.reference.shallow_clone().copy_(reference);
            self.labels.shallow_clone().copy_(labels);
            self.pref.shallow_clone().copy_(pref);
        });
    }
}

/// What a graphed step leaves on the device: the loss output (detached), the gradient norm
/// before clipping ([] f64) and whether the update applied ([] bool).
#[derive(Debug)]
pub(crate) struct DpoGraphOutputs {
    pub(crate) out: DpoLossOutput,
    pub(crate) grad_norm: Tensor,
    pub(crate) applied: Tensor,
}

/// The trainer's graphed steps: one per pair bucket, and the optimiser's device scalars that
/// all of them read.
pub(crate) struct DpoGraphs {
    pub(crate) steps: GraphedStep<PairBucket, DpoStatics, DpoGraphOutputs>,
    pub(crate) scalars: DeviceStepScalars,
}
