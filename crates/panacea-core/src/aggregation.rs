//! Scalarising K objectives with a preference vector (Panacea, arXiv 2402.02030, Eq. 6 and
//! Eq. 7; docs/method.md, §3).
//!
//! ```text
//! Linear scalarisation (Eq. 6):  g_λ = Σ_i λ_i J_i
//! Tchebycheff (Eq. 7):           g_λ = min_i λ_i (J_i − z_i)      (maximised; z_i ≥ sup J_i)
//! ```
//!
//! Two entry points, each with one call site per trainer:
//!
//! - [`Aggregation::aggregate`] for utilities, rewards and advantages (higher is better) of
//!   shape [B, K] or [B, A, K] with λ of shape [K] or one row per sequence [B, K]. It is applied
//!   element-wise, so per-row λ is exact.
//! - [`Aggregation::aggregate_losses`] for per-sample losses L_i = −J_i ≥ 0 (DPO, SFT) of shape
//!   [B, K] with a label mask. It takes the **per-dimension batch means first** (masked), then
//!   scalarises: LS Σ_i λ_i L̄_i, Tchebycheff max_i λ_i (z_i + L̄_i), which is
//!   max_i λ_i (z_i − J̄_i); with the loss ideal point z = 0 this is max_i λ_i L̄_i (§3.3).
//!   The Tchebycheff gradient flows only through the arg-max dimension; tied dimensions share
//!   it equally (`amax`'s gradient rule).
//!
//! **Per-row λ with losses [ours, docs/method.md, §3.3].** The batch-mean Tchebycheff form is not
//! defined when rows carry different λ. Rows are therefore grouped by identical λ; each group
//! gets the batch-mean form with its own λ and the groups are averaged, weighted by their row
//! counts: `L = Σ_g (n_g / B) · agg_{λ_g}(L̄_g)`. A batch with one λ is exactly the batch-mean
//! form; a batch where every row has its own λ is the per-sample form
//! `mean_b max_i λ_{b,i} L_{b,i}`. Linear scalarisation uses the same grouping, so both modes
//! treat mixed batches alike. Grouping reads λ to the host (one device sync per call).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{Validate, Validator};
use crate::ops::masked_mean_dim;
use crate::CoreError;

/// How K objectives become one number for a given λ. A serde-tagged enum:
/// `{ kind: linear }`, `{ kind: tchebycheff }` (ideal point z = 0, the loss form) or
/// `{ kind: tchebycheff, ideal: [0.0, 0.0] }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Aggregation {
    /// Linear scalarisation Σ_i λ_i J_i (Eq. 6).
    #[default]
    Linear,
    /// Tchebycheff min_i λ_i (J_i − z_i) (Eq. 7), as a utility; for losses max_i λ_i (z_i + L_i).
    Tchebycheff {
        /// The ideal point z in utility space, one entry per objective. For losses (L = −J ≥ 0)
        /// use zeros, which is what an omitted (empty) `ideal` means. On rewards it must
        /// dominate every reachable utility (experimental).
        #[serde(default)]
        ideal: Vec<f64>,
    },
}

fn shape_err(what: &str, expected: Vec<i64>, got: Vec<i64>) -> CoreError {
    CoreError::Shape { what: what.to_owned(), expected, got }
}

impl Aggregation {
    /// Tchebycheff with z = 0 for `k` objectives: the loss form of docs/method.md, §3.3.
    pub fn tchebycheff_zero(k: usize) -> Self {
        Self::Tchebycheff { ideal: vec![0.0; k] }
    }

    /// Checks the ideal point against the number of objectives.
    pub fn check(&self, k: usize) -> Result<(), CoreError> {
        if let Self::Tchebycheff { ideal } = self {
            if !ideal.is_empty() && ideal.len() != k {
                return Err(shape_err(
                    "tchebycheff ideal point",
                    vec![k as i64],
                    vec![ideal.len() as i64],
                ));
            }
        }
        Ok(())
    }

    /// z as an f32 tensor [K] (zeros for [`Aggregation::Linear`], unused there).
    fn ideal_tensor(&self, like: &Tensor) -> Tensor {
        match self {
            Self::Linear => Tensor::zeros([1], (Kind::Float, like.device())),
            // An ideal point of zeros (DPO's z = 0) adds nothing; a device fill rather than a
            // copy from the host keeps the loss capturable in a CUDA graph (a host-to-device
            // copy from pageable memory synchronises). The same numbers: x + 0 = x.
            Self::Tchebycheff { ideal } if ideal.iter().all(|z| *z == 0.0) => {
                Tensor::zeros([1], (Kind::Float, like.device()))
            }
            Self::Tchebycheff { ideal } => {
                Tensor::from_slice(ideal).to_kind(Kind::Float).to_device(like.device())
                // [K]
            }
        }
    }

    /// Scalarises utilities: per_obj [B, K] or [B, A, K] with pref [K] or [B, K] → [B] or
    /// [B, A] (f32). Linear: Σ_i λ_i u_i. Tchebycheff: min_i λ_i (u_i − z_i).
    pub fn aggregate(&self, per_obj: &Tensor, pref: &Tensor) -> Result<Tensor, CoreError> {
        let size = per_obj.size();
        let Some(&k) = size.last() else {
            return Err(shape_err("per-objective values [.., K]", vec![-1, -1], size));
        };
        self.check(k as usize)?;
        let pref = broadcast_pref(pref, &size)?; // [K] or [B, 1.., K]
        let x = per_obj.to_kind(Kind::Float);
        Ok(match self {
            Self::Linear => (x * pref).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float),
            Self::Tchebycheff { .. } => {
                let z = self.ideal_tensor(&x); // [K]
                ((x - z) * pref).amin([-1i64].as_slice(), false)
            }
        })
    }

    /// Per-row weights w [B][K] on per-objective advantages for a policy-gradient step, so that
    /// the aggregated advantage of row r is Σ_i w_{r,i} A_{r,i}. `prefs` is λ per row [B][K],
    /// `estimate` the batch-level estimate of each J_i [K] and `ideal` the ideal point z [K]
    /// (z_i ≥ J_i), both in the same utility units as the advantages.
    ///
    /// - Linear: w_r = λ_r, the gradient of Σ_i λ_i J_i.
    /// - Tchebycheff: the gradient of min_i λ_i (J_i − z_i) is λ_{i*} ∇J_{i*} for the worst
    ///   dimension i* = argmax_i λ_{r,i} (z_i − J_i), so w_r is λ_{r,i*} on i* and 0 elsewhere.
    ///   The worst dimension is chosen from batch-level estimates of J, never per token: a
    ///   per-token minimum over advantages (centred around 0) would pick whichever dimension
    ///   happened to be below its own mean at that token. Ties (every gap 0, as at the first
    ///   step with a running-max ideal point) go to the larger λ_i, then the lower index.
    pub fn advantage_weights(
        &self,
        prefs: &[Vec<f64>],
        estimate: &[f64],
        ideal: &[f64],
    ) -> Result<Vec<Vec<f64>>, CoreError> {
        let k = estimate.len();
        self.check(k)?;
        if ideal.len() != k {
            return Err(shape_err("ideal point [K]", vec![k as i64], vec![ideal.len() as i64]));
        }
        if let Some(row) = prefs.iter().find(|r| r.len() != k) {
            return Err(shape_err(
                "preference rows [B, K]",
                vec![k as i64],
                vec![row.len() as i64],
            ));
        }
        Ok(match self {
            Self::Linear => prefs.to_vec(),
            Self::Tchebycheff { .. } => prefs
                .iter()
                .map(|lam| {
                    let gap = |i: usize| lam[i] * (ideal[i] - estimate[i]);
                    let worst = (0..k)
                        .max_by(|&a, &b| {
                            gap(a)
                                .total_cmp(&gap(b))
                                .then(lam[a].total_cmp(&lam[b]))
                                .then(b.cmp(&a))
                        })
                        .unwrap_or(0);
                    let mut w = vec![0.0; k];
                    w[worst] = lam[worst];
                    w
                })
                .collect(),
        })
    }

    /// Scalarises per-sample losses: losses [B, K] (L_i = −J_i), mask [B, K] (bool or 0/1;
    /// false where a row has no label in dimension i), pref [K] or [B, K] → a scalar (f32).
    /// See the module docs for the per-dimension batch means and for per-row λ.
    pub fn aggregate_losses(
        &self,
        losses: &Tensor,
        mask: &Tensor,
        pref: &Tensor,
    ) -> Result<Tensor, CoreError> {
        let size = losses.size();
        if size.len() != 2 {
            return Err(shape_err("losses [B, K]", vec![-1, -1], size));
        }
        let (b, k) = (size[0], size[1]);
        if mask.size() != size {
            return Err(shape_err("loss mask [B, K]", size, mask.size()));
        }
        self.check(k as usize)?;
        match pref.size().as_slice() {
            [kk] if *kk == k => Ok(self.scalarise_means(&dimension_means(losses, mask), pref)),
            [bb, kk] if *bb == b && *kk == k => {
                // Group rows by their exact λ (bit patterns of the f32 values), in a
                // deterministic order.
                let host: Vec<f32> = pref
                    .to_kind(Kind::Float)
                    .contiguous()
                    .view([-1])
                    .try_into()
                    .map_err(CoreError::Torch)?;
                let mut groups: BTreeMap<Vec<u32>, Vec<i64>> = BTreeMap::new();
                for (row, chunk) in host.chunks(k as usize).enumerate() {
                    let key = chunk.iter().map(|v| v.to_bits()).collect();
                    groups.entry(key).or_default().push(row as i64);
                }
                if groups.len() == 1 {
                    return Ok(self.scalarise_means(&dimension_means(losses, mask), &pref.get(0)));
                }
                let mut total = Tensor::zeros([], (Kind::Float, losses.device()));
                for rows in groups.values() {
                    let idx = Tensor::from_slice(rows).to_device(losses.device()); // [n_g]
                    let means = dimension_means(
                        &losses.index_select(0, &idx), // [n_g, K]
                        &mask.index_select(0, &idx),   // [n_g, K]
                    ); // [K]
                    let weight = rows.len() as f64 / b as f64;
                    total += self.scalarise_means(&means, &pref.get(rows[0])) * weight;
                }
                Ok(total)
            }
            _ => Err(shape_err("preference [K] or [B, K]", vec![b, k], pref.size())),
        }
    }

    /// Scalarises per-dimension loss means L̄ [K] with one λ [K] → [].
    fn scalarise_means(&self, means: &Tensor, pref: &Tensor) -> Tensor {
        let pref = pref.to_kind(Kind::Float).to_device(means.device()); // [K]
        match self {
            Self::Linear => (means * pref).sum(Kind::Float),
            Self::Tchebycheff { .. } => {
                let z = self.ideal_tensor(means); // [K]
                ((means + z) * pref).amax([-1i64].as_slice(), false) // []
            }
        }
    }
}

/// Per-dimension batch means of losses [B, K] over rows where mask [B, K] is true → [K] f32.
/// A dimension without any label in the batch gives 0.
pub fn dimension_means(losses: &Tensor, mask: &Tensor) -> Tensor {
    masked_mean_dim(losses, mask, 0) // [K]
}

/// λ [K] stays [K]; λ [B, K] becomes [B, 1, .., 1, K] to meet values of shape `size`.
fn broadcast_pref(pref: &Tensor, size: &[i64]) -> Result<Tensor, CoreError> {
    let k = size[size.len() - 1];
    let pref = pref.to_kind(Kind::Float);
    match pref.size().as_slice() {
        [kk] if *kk == k => Ok(pref),
        [b, kk] if *kk == k && size.len() >= 2 && *b == size[0] => {
            let mut shape = vec![*b];
            shape.extend(std::iter::repeat_n(1, size.len() - 2));
            shape.push(k);
            Ok(pref.view(shape.as_slice()))
        }
        _ => Err(shape_err("preference [K] or [B, K]", vec![size[0], k], pref.size())),
    }
}

impl Validate for Aggregation {
    fn validate(&self, v: &mut Validator) {
        if let Self::Tchebycheff { ideal } = self {
            for (i, z) in ideal.iter().enumerate() {
                v.check(z.is_finite(), &format!("ideal.{i}"), format!("must be finite, got {z}"));
            }
        }
    }
}
