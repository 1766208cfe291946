//! Exact hypervolume in any dimension by WFG (While, Bradstreet & Barone, "A fast way of
//! calculating exact hypervolumes", IEEE TEVC 16(1) 2012), with exact low-dimensional base cases.
//!
//! WFG sums exclusive contributions, exclHV(p, S) = vol(p, r) − HV(limit(S, p)), where
//! limit(S, p) replaces each q ∈ S by the component-wise worse of q and p and keeps the
//! non-dominated subset (eq. (2)–(4) of the paper). As in the paper's implementation, the points
//! are sorted by the last objective and the contributions are taken in (d−1) dimensions and
//! weighted by their depth in the last objective:
//!
//! ```text
//! HV_d(S) = Σ_j (r_d − p_j,d) · exclHV_{d−1}(p_j, {p_1, …, p_{j−1}})        (p sorted by f_d ↑)
//! ```
//!
//! which follows from slicing the dominated region along f_d. The recursion stops at the 2-D
//! sweep, or at the 3-D to 5-D sweeps when `base_dim` allows it.

use super::{hv2d::hv2d_flat, hv3d::hv3d_flat, hv4d::hv4d_flat, hv5d::hv5d_flat};
use crate::pareto::filter_nondominated_flat;

/// HV of flat minimisation rows of dimension `d` that all strictly dominate `r`. `base_dim` is
/// the largest dimension (2 to 5) handed to a dedicated sweep.
pub(crate) fn wfg(data: &[f64], d: usize, r: &[f64], base_dim: usize) -> f64 {
    let n = data.len() / d;
    if n == 0 {
        return 0.0;
    }
    if n == 1 {
        return data.iter().zip(r).map(|(a, b)| b - a).product();
    }
    match d {
        1 => return r[0] - data.iter().copied().fold(f64::INFINITY, f64::min),
        2 => return hv2d_flat(data, 2, r),
        3 if base_dim >= 3 => return hv3d_flat(data, 3, r),
        4 if base_dim >= 4 => return hv4d_flat(data, 4, r),
        5 if base_dim >= 5 => return hv5d_flat(data, 5, r),
        _ => {}
    }
    let last = d - 1;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| data[a * d + last].total_cmp(&data[b * d + last]));
    let sorted: Vec<f64> =
        order.iter().flat_map(|&i| data[i * d..(i + 1) * d].iter().copied()).collect();

    let mut total = 0.0;
    let mut limit: Vec<f64> = Vec::new();
    'points: for j in 0..n {
        let p = &sorted[j * d..(j + 1) * d];
        let mut excl: f64 = p[..last].iter().zip(r).map(|(a, b)| b - a).product();
        if j > 0 {
            limit.clear();
            for q in sorted[..j * d].chunks_exact(d) {
                if q[..last].iter().zip(p).all(|(a, b)| a <= b) {
                    // q weakly dominates p in the first d−1 objectives: p adds nothing here.
                    continue 'points;
                }
                limit.extend(q[..last].iter().zip(p).map(|(a, b)| a.max(*b)));
            }
            filter_nondominated_flat(&mut limit, last);
            excl -= wfg(&limit, last, r, base_dim);
        }
        total += (r[last] - p[last]) * excl;
    }
    total
}
