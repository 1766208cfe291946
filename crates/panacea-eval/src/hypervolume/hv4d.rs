//! Exact 4-D hypervolume in O(n²) by a sweep on f4 that maintains the 3-D volume of the points
//! seen so far, after HV4D (Guerreiro, Fonseca & Emmerich, "A fast dimension-sweep algorithm for
//! the hypervolume indicator in four dimensions", CCCG 2012) and HV4D+ (Guerreiro & Fonseca,
//! "Computing and updating hypervolume contributions in up to four dimensions", IEEE TEVC 22(3)
//! 2018, §V).
//!
//! For each new point p (f4 ascending), V3 += its exclusive 3-D contribution to the current set
//! S. The set is kept 3-D non-dominated and sorted by f3, so the contribution is one linear pass:
//! the points with s3 ≤ p3, clipped to p's box, form the initial 2-D staircase; the others enter
//! it in f3 order, and between consecutive entries the uncovered part of p's (f1, f2) box is
//! swept along f3. A point that covers p's corner ends the pass early. HV4D+ makes each staircase
//! insertion O(1) with presorted neighbour links; here the staircase is a small sorted `Vec`
//! searched by bisection, which keeps the same O(n²) bound for fronts whose clipped staircases
//! stay small and is much simpler to read. Weakly dominated points and duplicates contribute 0.

/// Adds the clipped point (x, y) to a staircase sorted by x ascending (y strictly descending)
/// and returns the area it newly covers inside [.., r0] × [.., r1].
#[inline]
pub(crate) fn stair_insert(stair: &mut Vec<[f64; 2]>, x: f64, y: f64, r0: f64, r1: f64) -> f64 {
    let start = stair.partition_point(|s| s[0] < x);
    // A staircase point with x' ≤ x and y' ≤ y dominates (x, y). The candidate with the largest
    // x' ≤ x is either at `start` (equal x) or just before it.
    if start < stair.len() && stair[start][0] == x && stair[start][1] <= y {
        return 0.0;
    }
    if start > 0 && stair[start - 1][1] <= y {
        return 0.0;
    }
    let mut left_y = if start > 0 { stair[start - 1][1] } else { r1 };
    let mut cur_x = x;
    let mut j = start;
    let mut added = 0.0;
    while j < stair.len() && stair[j][1] >= y {
        added += (stair[j][0] - cur_x) * (left_y - y);
        cur_x = stair[j][0];
        left_y = stair[j][1];
        j += 1;
    }
    let end_x = if j < stair.len() { stair[j][0] } else { r0 };
    added += (end_x - cur_x) * (left_y - y);
    if j == start {
        stair.insert(start, [x, y]);
    } else {
        stair[start] = [x, y];
        stair.drain(start + 1..j);
    }
    added
}

/// Exclusive 3-D contribution of `p` to `set` (sorted by f3, non-dominated), or `None` when a
/// point of the set weakly dominates `p`.
fn contribution3d(
    p: [f64; 3],
    set: &[[f64; 3]],
    r: [f64; 3],
    stair: &mut Vec<[f64; 2]>,
) -> Option<f64> {
    stair.clear();
    let full = (r[0] - p[0]) * (r[1] - p[1]);
    let mut covered = 0.0;
    let mut i = 0;
    while i < set.len() && set[i][2] <= p[2] {
        let s = set[i];
        let (cx, cy) = (s[0].max(p[0]), s[1].max(p[1]));
        if cx == p[0] && cy == p[1] {
            return None;
        }
        covered += stair_insert(stair, cx, cy, r[0], r[1]);
        i += 1;
    }
    let mut contribution = 0.0;
    let mut z = p[2];
    while i < set.len() {
        let s = set[i];
        contribution += (full - covered) * (s[2] - z);
        z = s[2];
        let (cx, cy) = (s[0].max(p[0]), s[1].max(p[1]));
        if cx == p[0] && cy == p[1] {
            // From here on p's whole (f1, f2) box is covered.
            return Some(contribution);
        }
        covered += stair_insert(stair, cx, cy, r[0], r[1]);
        i += 1;
    }
    Some(contribution + (full - covered) * (r[2] - z))
}

/// HV of minimisation points that all strictly dominate `r`.
pub(crate) fn hv4d(points: &mut [[f64; 4]], r: [f64; 4]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    // Among equal f4 the order does not matter: the slab between them has zero height, and V3
    // after the tie is the volume of the same set.
    points.sort_unstable_by_key(|a| super::hv3d::order_key(a[3]));
    let r3 = [r[0], r[1], r[2]];
    let mut set: Vec<[f64; 3]> = Vec::with_capacity(points.len());
    let mut stair: Vec<[f64; 2]> = Vec::new();
    let mut v3 = 0.0;
    let mut volume = 0.0;
    let mut w_prev = points[0][3];
    for p in points.iter() {
        volume += v3 * (p[3] - w_prev);
        w_prev = p[3];
        let q = [p[0], p[1], p[2]];
        if let Some(c) = contribution3d(q, &set, r3, &mut stair) {
            v3 += c;
            set.retain(|s| !(q[0] <= s[0] && q[1] <= s[1] && q[2] <= s[2]));
            let pos = set.partition_point(|s| s[2] < q[2]);
            set.insert(pos, q);
        }
    }
    volume + v3 * (r[3] - w_prev)
}

/// HV of flat rows of dimension `d ≥ 4`, using the first four coordinates.
pub(crate) fn hv4d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let mut pts: Vec<[f64; 4]> = data.chunks_exact(d).map(|p| [p[0], p[1], p[2], p[3]]).collect();
    hv4d(&mut pts, [r[0], r[1], r[2], r[3]])
}
