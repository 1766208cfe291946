//! Exact 2-D hypervolume by a sweep, O(n log n) (Beume et al., IEEE TEVC 13(5) 2009, the
//! 2-D case of the dimension sweep; docs/metrics.md, §2).
//!
//! Sort by f1 ascending, keep the running minimum of f2; every point that lowers it
//! adds the rectangle [a1, r1] × [a2, y_prev].

/// HV of minimisation points that all strictly dominate `r`.
pub(crate) fn hv2d(points: &mut [[f64; 2]], r: [f64; 2]) -> f64 {
    // Ties in f1 may come in any order: a later, lower f2 adds the rest of the same column.
    points.sort_unstable_by_key(|a| super::hv3d::order_key(a[0]));
    let mut y_prev = r[1];
    let mut volume = 0.0;
    for p in points.iter() {
        if p[1] < y_prev {
            volume += (r[0] - p[0]) * (y_prev - p[1]);
            y_prev = p[1];
        }
    }
    volume
}

/// HV of flat rows of dimension `d ≥ 2`, using only the first two coordinates.
pub(crate) fn hv2d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let mut pts: Vec<[f64; 2]> = data.chunks_exact(d).map(|p| [p[0], p[1]]).collect();
    hv2d(&mut pts, [r[0], r[1]])
}
