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
//!
//! Three savings on top of the paper's scheme:
//! - a swept point whose (d−1)-projection a later point weakly dominates is dropped from the
//!   limit sets of all points after that one (its limit point would be dominated by the later
//!   point's), so the limit sets stay small;
//! - a swept point q that is worse than p in only one coordinate k covers all of p's box beyond
//!   q_k, so p's box is cut there (the "bounding" idea of the WFG paper's successors): the limit
//!   set loses q and every point outside the smaller box;
//! - each limit set is sorted by its own last objective (then lexicographically) before its
//!   non-dominated filter, so a dominator always precedes the points it dominates, the filter is
//!   one pass against the points kept, and the recursion receives its input already sorted.
//!   Buffers are kept per recursion depth, so the recursion allocates only while warming up.

use super::{hv2d::hv2d_flat, hv3d::hv3d_flat, hv4d::hv4d_flat, hv5d::Sweep5d};
use std::cmp::Ordering;

use super::hv3d::order_key;
use crate::sense::weakly_dominates;

/// HV of flat minimisation rows of dimension `d` that all strictly dominate `r`. `base_dim` is
/// the largest dimension (2 to 5) handed to a dedicated sweep.
pub(crate) fn wfg(data: &[f64], d: usize, r: &[f64], base_dim: usize) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut order = Vec::new();
    let mut pts = Vec::new();
    sorted_nondominated(data, d, &mut order, &mut pts);
    Wfg { base_dim, levels: Vec::new(), sweep5d: Sweep5d::default() }.hv(&pts, d, r, 0)
}

/// The buffers of one recursion depth.
#[derive(Default)]
struct Level {
    /// Projections of the points swept so far that no later point dominates.
    prior: Vec<f64>,
    /// The current limit set, before and after its non-dominated filter.
    limit: Vec<f64>,
    kept: Vec<f64>,
    order: Vec<(u64, usize)>,
    /// The current point's box, shrunk by the points that cover all of it but one side.
    bound: Vec<f64>,
}

struct Wfg {
    base_dim: usize,
    levels: Vec<Level>,
    sweep5d: Sweep5d,
}

impl Wfg {
    /// HV of `pts` (dimension `d`, non-dominated, sorted by the last objective ascending, all
    /// strictly dominating `r`).
    fn hv(&mut self, pts: &[f64], d: usize, r: &[f64], depth: usize) -> f64 {
        let n = pts.len() / d;
        if n == 0 {
            return 0.0;
        }
        if n == 1 {
            return box_volume(pts, r);
        }
        match d {
            2 => return hv2d_flat(pts, 2, r),
            3 if self.base_dim >= 3 => return hv3d_flat(pts, 3, r),
            4 if self.base_dim >= 4 => return hv4d_flat(pts, 4, r),
            5 if self.base_dim >= 5 => return self.sweep5d.hv_flat(pts, 5, r),
            _ => {}
        }
        if self.levels.len() <= depth {
            self.levels.resize_with(depth + 1, Level::default);
        }
        let mut level = std::mem::take(&mut self.levels[depth]);
        let last = d - 1;
        level.prior.clear();
        let mut total = 0.0;
        'points: for p in pts.chunks_exact(d) {
            let p_low = &p[..last];
            level.limit.clear();
            level.bound.clear();
            level.bound.extend_from_slice(&r[..last]);
            let mut dominates_some = false;
            for q in level.prior.chunks_exact(last) {
                // How many coordinates of q are worse than p's, and the last such one.
                let mut n_worse = 0;
                let mut worse_dim = 0;
                for (j, (a, b)) in q.iter().zip(p_low).enumerate() {
                    if a > b {
                        n_worse += 1;
                        worse_dim = j;
                    }
                }
                match n_worse {
                    // p's slice is covered, and any later limit point of p is dominated by q's.
                    0 => continue 'points,
                    // q covers the part of p's box beyond q[k] in k = worse_dim: shrink the box.
                    1 => level.bound[worse_dim] = level.bound[worse_dim].min(q[worse_dim]),
                    _ => level.limit.extend(q.iter().zip(p_low).map(|(a, b)| a.max(*b))),
                }
                dominates_some |= weakly_dominates(p_low, q);
            }
            let mut excl = box_volume(p_low, &level.bound);
            if !level.limit.is_empty() {
                // Limit points outside the shrunk box add nothing inside it.
                remove_outside(&mut level.limit, last, &level.bound);
                sorted_nondominated(&level.limit, last, &mut level.order, &mut level.kept);
                excl -= self.hv(&level.kept, last, &level.bound, depth + 1);
            }
            total += (r[last] - p[last]) * excl;
            if dominates_some {
                remove_dominated(&mut level.prior, last, p_low);
            }
            level.prior.extend_from_slice(p_low);
        }
        self.levels[depth] = level;
        total
    }
}

/// Volume of the box between the point `p` and `r` (in p's dimension).
fn box_volume(p: &[f64], r: &[f64]) -> f64 {
    p.iter().zip(r).map(|(a, b)| b - a).product()
}

/// Removes the rows of `rows` (dimension `d`) that do not strictly dominate `r`.
fn remove_outside(rows: &mut Vec<f64>, d: usize, r: &[f64]) {
    let n = rows.len() / d;
    let mut kept = 0;
    for i in 0..n {
        if rows[i * d..(i + 1) * d].iter().zip(r).all(|(a, b)| a < b) {
            rows.copy_within(i * d..(i + 1) * d, kept * d);
            kept += 1;
        }
    }
    rows.truncate(kept * d);
}

/// Removes the rows of `rows` (dimension `d`) that `p` weakly dominates.
fn remove_dominated(rows: &mut Vec<f64>, d: usize, p: &[f64]) {
    let n = rows.len() / d;
    let mut kept = 0;
    for i in 0..n {
        if !weakly_dominates(p, &rows[i * d..(i + 1) * d]) {
            rows.copy_within(i * d..(i + 1) * d, kept * d);
            kept += 1;
        }
    }
    rows.truncate(kept * d);
}

/// Writes to `out` the non-dominated rows of `rows` (dimension `d`, one copy of duplicates),
/// sorted by the last coordinate ascending, then lexicographically. In that order a weak
/// dominator precedes every point it dominates, so one pass against the kept rows filters.
fn sorted_nondominated(rows: &[f64], d: usize, order: &mut Vec<(u64, usize)>, out: &mut Vec<f64>) {
    let n = rows.len() / d;
    let last = d - 1;
    order.clear();
    order.extend((0..n).map(|i| (order_key(rows[i * d + last]), i)));
    // Integer keys first; the lexicographic tie-break only runs on equal last coordinates.
    order.sort_unstable_by(|&(ka, a), &(kb, b)| {
        ka.cmp(&kb).then_with(|| {
            let (a, b) = (&rows[a * d..(a + 1) * d], &rows[b * d..(b + 1) * d]);
            a.iter()
                .zip(b)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
    });
    out.clear();
    for &(_, i) in order.iter() {
        let p = &rows[i * d..(i + 1) * d];
        if !out.chunks_exact(d).any(|q| weakly_dominates(q, p)) {
            out.extend_from_slice(p);
        }
    }
}
