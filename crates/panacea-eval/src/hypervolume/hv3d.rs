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

/// f64 with a total order, for use as a map key (all values are finite here).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key(f64);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// HV of minimisation points that all strictly dominate `r`.
pub(crate) fn hv3d(points: &mut [[f64; 3]], r: [f64; 3]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    points.sort_unstable_by(|a, b| {
        a[2].total_cmp(&b[2]).then(a[0].total_cmp(&b[0])).then(a[1].total_cmp(&b[1]))
    });
    let mut stair: BTreeMap<Key, f64> = BTreeMap::new();
    let mut removed: Vec<Key> = Vec::new();
    let mut area = 0.0;
    let mut volume = 0.0;
    let mut z_prev = points[0][2];
    for p in points.iter() {
        volume += area * (p[2] - z_prev);
        z_prev = p[2];
        // Dominated in the (f1, f2) projection by a staircase point with f1 ≤ p1?
        if let Some((_, &y)) = stair.range(..=Key(p[0])).next_back() {
            if y <= p[1] {
                continue;
            }
        }
        let mut left_y = stair.range(..Key(p[0])).next_back().map_or(r[1], |(_, &y)| y);
        let mut cur_x = p[0];
        let mut end_x = r[0];
        removed.clear();
        for (&k, &y) in stair.range(Key(p[0])..) {
            if y >= p[1] {
                area += (k.0 - cur_x) * (left_y - p[1]);
                cur_x = k.0;
                left_y = y;
                removed.push(k);
            } else {
                end_x = k.0;
                break;
            }
        }
        area += (end_x - cur_x) * (left_y - p[1]);
        for k in &removed {
            stair.remove(k);
        }
        stair.insert(Key(p[0]), p[1]);
    }
    volume + area * (r[2] - z_prev)
}

/// HV of flat rows of dimension `d ≥ 3`, using the first three coordinates.
pub(crate) fn hv3d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let mut pts: Vec<[f64; 3]> = data.chunks_exact(d).map(|p| [p[0], p[1], p[2]]).collect();
    hv3d(&mut pts, [r[0], r[1], r[2]])
}
