//! How much of an SVD-LoRA adapter is shared and how much follows λ: the numbers to watch when
//! a preference-conditioned model does not steer.
//!
//! Each adapted matrix adds c·Σ_j d_j u_j v_jᵀ, a sum of rank-1 terms: k shared ones with
//! d_j = σ_j and one per objective with d = s·λ_i. The *strength* of a term is the spectral
//! norm of its rank-1 matrix, c·|d_j|·‖u_j‖·‖v_j‖. [`AdapterStats::of`] averages the strengths
//! of the shared terms and of the preference terms (at λ_i = 1) over every adapted matrix;
//! [`preference_gradient_share`] says which fraction of the current gradient reaches the
//! preference part (s and the λ columns of U and V).

use std::collections::BTreeMap;

use tch::{nn, Kind, Tensor};

use crate::adapter::ADAPTER_VAR_SUFFIXES;

/// Averages over every adapted matrix of an adapter VarStore.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterStats {
    /// Number of adapted matrices found.
    pub matrices: usize,
    /// Mean |σ_j|.
    pub sigma_abs: f64,
    /// Mean |s|.
    pub pref_scale_abs: f64,
    /// Mean strength c·|σ_j|·‖u_j‖·‖v_j‖ of the shared rank-1 terms.
    pub shared_strength: f64,
    /// Mean strength c·|s|·‖u_{k+i}‖·‖v_{k+i}‖ of the preference terms at λ_i = 1.
    pub preference_strength: f64,
}

/// The four variables of one adapted matrix, by module path.
fn modules(vs: &nn::VarStore) -> BTreeMap<String, [Option<Tensor>; 4]> {
    let mut out: BTreeMap<String, [Option<Tensor>; 4]> = BTreeMap::new();
    for (name, t) in vs.variables() {
        for (slot, suffix) in ADAPTER_VAR_SUFFIXES.iter().enumerate() {
            if let Some(module) = name.strip_suffix(suffix) {
                out.entry(module.to_owned()).or_default()[slot] = Some(t.shallow_clone());
            }
        }
    }
    out
}

impl AdapterStats {
    /// The statistics of the adapter in `vs` with `rank` shared singular values per matrix and
    /// output scale `scale` (c = α / k). Matrices missing a variable are skipped.
    pub fn of(vs: &nn::VarStore, rank: i64, scale: f64) -> Self {
        let mut sums = [0.0f64; 4];
        let mut counts = [0usize; 4];
        let mut matrices = 0;
        tch::no_grad(|| {
            for [u, v, sigma, s] in modules(vs).into_values() {
                let (Some(u), Some(v), Some(sigma), Some(s)) = (u, v, sigma, s) else { continue };
                matrices += 1;
                let norms = |t: &Tensor| -> Vec<f64> {
                    let n = t
                        .to_kind(Kind::Double)
                        .square()
                        .sum_dim_intlist(0, false, Kind::Double)
                        .sqrt();
                    Vec::try_from(n).unwrap_or_default()
                }; // column norms [R]
                let (nu, nv) = (norms(&u), norms(&v));
                let sig: Vec<f64> = Vec::try_from(sigma.to_kind(Kind::Double)).unwrap_or_default();
                let s_abs = s.to_kind(Kind::Double).abs().double_value(&[0]);
                for (j, sj) in sig.iter().enumerate().take(rank as usize) {
                    sums[0] += sj.abs();
                    counts[0] += 1;
                    sums[2] += scale * sj.abs() * nu[j] * nv[j];
                    counts[2] += 1;
                }
                sums[1] += s_abs;
                counts[1] += 1;
                for j in rank as usize..nu.len().min(nv.len()) {
                    sums[3] += scale * s_abs * nu[j] * nv[j];
                    counts[3] += 1;
                }
            }
        });
        let mean = |i: usize| if counts[i] == 0 { 0.0 } else { sums[i] / counts[i] as f64 };
        Self {
            matrices,
            sigma_abs: mean(0),
            pref_scale_abs: mean(1),
            shared_strength: mean(2),
            preference_strength: mean(3),
        }
    }
}

/// The fraction of the squared gradient norm of the adapter in `vs` that sits on the
/// preference part (s and the last columns of U and V, after the `rank` shared ones), from
/// the gradients currently stored; 0 when there are none.
pub fn preference_gradient_share(vs: &nn::VarStore, rank: i64) -> f64 {
    let (mut pref, mut total) = (0.0, 0.0);
    tch::no_grad(|| {
        for [u, v, sigma, s] in modules(vs).into_values() {
            let sq =
                |t: &Tensor| t.to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
            for t in [&u, &v].into_iter().flatten() {
                let g = t.grad();
                if !g.defined() {
                    continue;
                }
                let r = g.size()[1];
                total += sq(&g);
                if r > rank {
                    pref += sq(&g.narrow(1, rank, r - rank));
                }
            }
            if let Some(g) = sigma.map(|t| t.grad()).filter(Tensor::defined) {
                total += sq(&g);
            }
            if let Some(g) = s.map(|t| t.grad()).filter(Tensor::defined) {
                let x = sq(&g);
                total += x;
                pref += x;
            }
        }
    });
    if total > 0.0 {
        pref / total
    } else {
        0.0
    }
}
