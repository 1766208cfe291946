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
    /// output scale `scale` (c = α / k). Matrices missing a variable are skipped. The sums stay
    /// on the adapter's device and are read back once (one sync, not one per matrix).
    pub fn of(vs: &nn::VarStore, rank: i64, scale: f64) -> Self {
        let parts: Vec<Tensor> = tch::no_grad(|| {
            modules(vs)
                .into_values()
                .filter_map(|[u, v, sigma, s]| {
                    let (u, v, sigma, s) = (u?, v?, sigma?, s?);
                    let col_norms = |t: &Tensor| {
                        t.to_kind(Kind::Double)
                            .square()
                            .sum_dim_intlist(0, false, Kind::Double)
                            .sqrt()
                    }; // [R]
                    let norms = col_norms(&u) * col_norms(&v); // ‖u_j‖·‖v_j‖ [R]
                    let r = norms.size()[0];
                    let sig = sigma.to_kind(Kind::Double).abs(); // [k]
                    let s_abs = s.to_kind(Kind::Double).abs().sum(Kind::Double); // []
                    Some(Tensor::stack(
                        &[
                            sig.sum(Kind::Double),
                            s_abs.shallow_clone(),
                            (&sig * norms.narrow(0, 0, rank)).sum(Kind::Double) * scale,
                            norms.narrow(0, rank, r - rank).sum(Kind::Double) * &s_abs * scale,
                        ],
                        0,
                    ))
                })
                .collect()
        });
        let matrices = parts.len();
        if matrices == 0 {
            return Self {
                matrices,
                sigma_abs: 0.0,
                pref_scale_abs: 0.0,
                shared_strength: 0.0,
                preference_strength: 0.0,
            };
        }
        // Sums over matrices of [Σ|σ_j|, |s|, Σ shared strengths, Σ preference strengths].
        let sums: Vec<f64> = Vec::try_from(
            Tensor::stack(&parts, 0)
                .sum_dim_intlist(0, false, Kind::Double)
                .to_device(tch::Device::Cpu),
        )
        .unwrap_or_else(|_| vec![0.0; 4]);
        // Every matrix has the same k shared values and m = R − k preference columns.
        let m = modules(vs).into_values().find_map(|[u, ..]| u).map_or(0, |u| u.size()[1] - rank);
        let per = |count: i64| (matrices as f64) * count.max(1) as f64;
        Self {
            matrices,
            sigma_abs: sums[0] / per(rank),
            pref_scale_abs: sums[1] / per(1),
            shared_strength: sums[2] / per(rank),
            preference_strength: sums[3] / per(m),
        }
    }
}

/// The fraction of the squared gradient norm of the adapter in `vs` that sits on the
/// preference part (s and the last columns of U and V, after the `rank` shared ones), from
/// the gradients currently stored; 0 when there are none.
pub fn preference_gradient_share(vs: &nn::VarStore, rank: i64) -> f64 {
    // [squared norm on the preference part, total squared norm] per variable, summed on the
    // device and read back once: this runs after every actor backward.
    let parts: Vec<Tensor> = tch::no_grad(|| {
        let mut out = Vec::new();
        for [u, v, sigma, s] in modules(vs).into_values() {
            let sq = |t: &Tensor| t.to_kind(Kind::Double).square().sum(Kind::Double);
            for t in [&u, &v].into_iter().flatten() {
                let g = t.grad();
                if !g.defined() {
                    continue;
                }
                let r = g.size()[1];
                let pref = if r > rank { sq(&g.narrow(1, rank, r - rank)) } else { sq(&g) * 0.0 };
                out.push(Tensor::stack(&[pref, sq(&g)], 0));
            }
            if let Some(g) = sigma.map(|t| t.grad()).filter(Tensor::defined) {
                let x = sq(&g);
                out.push(Tensor::stack(&[&x * 0.0, x], 0));
            }
            if let Some(g) = s.map(|t| t.grad()).filter(Tensor::defined) {
                let x = sq(&g);
                out.push(Tensor::stack(&[x.shallow_clone(), x], 0));
            }
        }
        out
    });
    if parts.is_empty() {
        return 0.0;
    }
    let sums: Vec<f64> = Vec::try_from(
        Tensor::stack(&parts, 0)
            .sum_dim_intlist(0, false, Kind::Double)
            .to_device(tch::Device::Cpu),
    )
    .unwrap_or_else(|_| vec![0.0, 0.0]);
    if sums[1] > 0.0 {
        sums[0] / sums[1]
    } else {
        0.0
    }
}
