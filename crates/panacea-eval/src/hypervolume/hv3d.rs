//! Exact 3-D hypervolume, O(n log n): the HV3D dimension sweep of Beume, Fonseca,
//! López-Ibáñez, Paquete & Vahrenhold, "On the complexity of computing the hypervolume
//! indicator", IEEE TEVC 13(5) 2009 (Algorithm 1 there; HV3D+ of Guerreiro & Fonseca,
//! IEEE TEVC 22(3) 2018 has the same bound).
//!
//! Sweep the points by f3 ascending. The 2-D staircase of the points seen so far (projected on
//! f1, f2) lives in a `BTreeMap` keyed by f1 with f2 values decreasing along the keys. A new point
//! that is not dominated in the projection removes the staircase points it dominates; the
//! dominated area grows by exactly the region between the old and the new staircase, computed
//! segment by segment while removing. Volume += area × Δf3 between consecutive points.

use std::collections::BTreeMap;

use super::hv4d::stair_insert;

/// Maps a finite f64 to a u64 with the same order, so the tree compares plain integers.
#[inline]
pub(crate) fn order_key(x: f64) -> u64 {
    let bits = (x + 0.0).to_bits(); // + 0.0 turns −0.0 into +0.0
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Staircases longer than this move from the sorted `Vec` to the `BTreeMap`.
const VEC_LIMIT: usize = 512;

/// HV of minimisation points that all strictly dominate `r`.
///
/// The staircase starts as a sorted `Vec` (bisection, in-place splice: cache-friendly and about
/// twice as fast for the staircase sizes of typical fronts) and moves into a `BTreeMap` once it
/// holds more than `VEC_LIMIT` points, which keeps the O(n log n) bound of HV3D.
pub(crate) fn hv3d(points: &mut [[f64; 3]], r: [f64; 3]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    // Order among equal f3 does not matter: the volume between them is area × 0.
    points.sort_unstable_by_key(|a| order_key(a[2]));
    let mut stair: Vec<[f64; 2]> = Vec::new();
    let mut area = 0.0;
    let mut volume = 0.0;
    let mut z_prev = points[0][2];
    for (i, p) in points.iter().enumerate() {
        if stair.len() > VEC_LIMIT {
            let tree: BTreeMap<u64, (f64, f64)> =
                stair.iter().map(|s| (order_key(s[0]), (s[0], s[1]))).collect();
            return volume + sweep_tree(&points[i..], r, tree, area, z_prev);
        }
        volume += area * (p[2] - z_prev);
        z_prev = p[2];
        area += stair_insert(&mut stair, p[0], p[1], r[0], r[1]);
    }
    volume + area * (r[2] - z_prev)
}

/// The rest of the sweep with the staircase in a `BTreeMap` keyed by `key(f1)`, starting from
/// the dominated `area` of the current staircase at height `z_prev`.
fn sweep_tree(
    points: &[[f64; 3]],
    r: [f64; 3],
    mut stair: BTreeMap<u64, (f64, f64)>,
    mut area: f64,
    mut z_prev: f64,
) -> f64 {
    let mut removed: Vec<u64> = Vec::new();
    let mut volume = 0.0;
    for p in points {
        volume += area * (p[2] - z_prev);
        z_prev = p[2];
        let kx = order_key(p[0]);
        // The staircase point with the largest f1 ≤ p1 dominates p's projection iff its f2 ≤ p2.
        let left_y = match stair.range(..=kx).next_back() {
            Some((_, &(_, y))) if y <= p[1] => continue,
            Some((&k, &(_, y))) if k < kx => y,
            // Equal f1 with a larger f2: that point is removed below; look one further left.
            Some(_) => stair.range(..kx).next_back().map_or(r[1], |(_, &(_, y))| y),
            None => r[1],
        };
        let mut left_y = left_y;
        let mut cur_x = p[0];
        let mut end_x = r[0];
        removed.clear();
        for (&k, &(x, y)) in stair.range(kx..) {
            if y >= p[1] {
                area += (x - cur_x) * (left_y - p[1]);
                cur_x = x;
                left_y = y;
                removed.push(k);
            } else {
                end_x = x;
                break;
            }
        }
        area += (end_x - cur_x) * (left_y - p[1]);
        for k in &removed {
            stair.remove(k);
        }
        stair.insert(kx, (p[0], p[1]));
    }
    volume + area * (r[2] - z_prev)
}

/// Test hook: the same sweep with the `BTreeMap` staircase from the first point.
#[cfg(test)]
pub(crate) fn hv3d_tree_only(points: &mut [[f64; 3]], r: [f64; 3]) -> f64 {
    points.sort_unstable_by_key(|a| order_key(a[2]));
    match points.first() {
        Some(p) => sweep_tree(points, r, BTreeMap::new(), 0.0, p[2]),
        None => 0.0,
    }
}

/// HV of flat rows of dimension `d ≥ 3`, using the first three coordinates.
pub(crate) fn hv3d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let mut pts: Vec<[f64; 3]> = data.chunks_exact(d).map(|p| [p[0], p[1], p[2]]).collect();
    hv3d(&mut pts, [r[0], r[1], r[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1500 points whose (f1, f2) projections are mutually non-dominated, so the staircase
    /// outgrows the `Vec` and the sweep finishes in the `BTreeMap`; both must agree with the
    /// tree-only sweep and with the generic WFG recursion.
    #[test]
    fn vec_to_tree_switch_matches_tree_only_and_wfg() {
        let n = 1500;
        let mut s: u64 = 7;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let pts: Vec<[f64; 3]> = (0..n).map(|i| [i as f64, (n - i) as f64, 0.5 * next()]).collect();
        let r = [n as f64 + 1.0, n as f64 + 1.0, 1.0];
        let hybrid = hv3d(&mut pts.clone(), r);
        let tree = hv3d_tree_only(&mut pts.clone(), r);
        let flat: Vec<f64> = pts.iter().flatten().copied().collect();
        let generic = super::super::wfg::wfg(&flat, 3, &r, 2);
        assert!((hybrid - tree).abs() <= 1e-12 * tree, "{hybrid} vs {tree}");
        assert!((hybrid - generic).abs() <= 1e-12 * generic, "{hybrid} vs {generic}");
    }
}
