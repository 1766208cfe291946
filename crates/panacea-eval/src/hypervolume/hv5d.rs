//! Exact 5-D hypervolume by one dimension sweep over 4-D contributions, the scheme of moocore's
//! FPL at d = 5 (Fonseca, Paquete & López-Ibáñez, CEC 2006, with the HV4D+ contribution of
//! Guerreiro & Fonseca, IEEE TEVC 22(3) 2018, at the bottom).
//!
//! Sweep the points by f5 ascending and keep V4, the 4-D volume of the projections seen so far:
//! V4 grows by each point's exclusive 4-D contribution, and HV = Σ V4 · Δf5. The projections are
//! kept 4-D non-dominated in two orders, by f3 and by f4, so no contribution needs a sort.
//!
//! The 4-D contribution of p to S is the integral over t ≥ p4 of the part of p's 3-D box
//! [p1, r1] × [p2, r2] × [p3, r3] not covered by the points of S with f4 ≤ t, clipped to that box
//! (the WFG limit set of p). It is swept in t:
//! - at t = p4 the points with f4 ≤ p4 are all present. Their clipped copies arrive in f3 order,
//!   which clipping preserves, so one HV3D-style pass builds their covered volume and their
//!   non-dominated subset; those with f3 ≤ p3 all sit at height p3, where the 2-D staircase is
//!   built as in the 4-D sweep ([`clipped_staircase`]);
//! - the points with f4 > p4 then enter in f4 order as in the 4-D sweep ([`Volume3d::insert`]).
//!   One that weakly dominates p in (f1, f2, f3) covers the whole box: the integral stops there.
//!   One that is worse than p in a single coordinate k covers the box beyond its q_k, so later
//!   points beyond that cut are skipped without a 3-D pass (about half of these points are of
//!   this kind on sphere fronts).
//!
//! Each point costs O(n) for the scans plus the 4-D sweep of the m clipped points that reach it
//! (O(m² log m) at worst, but most are skipped or rejected at once), so the whole is O(n³ log n)
//! at worst and behaves like O(n²) on the sphere fronts of the bench.

use super::hv3d::order_key;
use super::hv4d::{clipped_staircase, stair_insert, Volume3d};

/// Scratch space for [`contribution4d`], reused across points.
#[derive(Default)]
struct Scratch {
    slice: Volume3d,
    stair: Vec<[f64; 2]>,
    inside: Vec<[f64; 2]>,
    base: Vec<[f64; 3]>,
}

#[inline]
fn weakly_dominates3(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] <= b[0] && a[1] <= b[1] && a[2] <= b[2]
}

#[inline]
fn clip3(q: &[f64; 4], p: &[f64; 4]) -> [f64; 3] {
    [q[0].max(p[0]), q[1].max(p[1]), q[2].max(p[2])]
}

/// Exclusive 4-D contribution of `p` to the set whose points are listed sorted by f3 in `by_f3`
/// and by f4 in `by_f4` (all strictly dominating `r`), with the end of the scanned part of
/// `by_f4` (the points from there on have f4 > p4 and a point before them weakly dominates p in
/// (f1, f2, f3), so none of them is dominated by p); `None` when a point of the set weakly
/// dominates `p`.
fn contribution4d(
    p: [f64; 4],
    by_f3: &[[f64; 4]],
    by_f4: &[[f64; 4]],
    r: [f64; 4],
    scratch: &mut Scratch,
) -> Option<(f64, usize)> {
    let Scratch { slice, stair, inside, base } = scratch;
    let full_area = (r[0] - p[0]) * (r[1] - p[1]);
    let box_volume = full_area * (r[2] - p[2]);

    // Points with f4 ≤ p4 and f3 ≤ p3: the 2-D staircase at height p3. Branch-free as in
    // `Volume3d`: points with f4 > p4 or off the box's interior only touch dead slots and
    // infinities (the f4 test alone would mispredict half the time).
    let below = by_f3.partition_point(|q| q[2] <= p[2]);
    let mut left_edge_y = r[1];
    let mut bottom_edge_x = r[0];
    inside.resize(below.max(inside.len()), [0.0; 2]);
    let mut n_inside = 0;
    for q in &by_f3[..below] {
        let present = q[3] <= p[3];
        let on_left = q[0] <= p[0];
        let on_bottom = q[1] <= p[1];
        if present && on_left && on_bottom {
            return None;
        }
        if present && on_left && q[1] < left_edge_y {
            left_edge_y = q[1];
        }
        if present && on_bottom && q[0] < bottom_edge_x {
            bottom_edge_x = q[0];
        }
        inside[n_inside] = [q[0], q[1]];
        n_inside += usize::from(present && !on_left && !on_bottom);
    }
    let mut area = clipped_staircase(
        [p[0], p[1]],
        left_edge_y,
        bottom_edge_x,
        &mut inside[..n_inside],
        [r[0], r[1]],
        stair,
    );
    base.clear();
    base.extend(stair.iter().map(|s| [s[0], s[1], p[2]]));

    // Points with f4 ≤ p4 and f3 > p3, by f3: the rest of the base, HV3D-style.
    // `cut[k]`: the set holds a point that is worse than p only in coordinate k, where it has
    // cut[k], so every clipped point with coordinate k ≥ cut[k] is covered. The bottom- and
    // left-edge points of the staircase at height p3 are such points for k = 0 and 1.
    let mut cut = [bottom_edge_x, left_edge_y, r[2]];
    let mut covered = 0.0;
    let mut z_prev = p[2];
    for q in by_f3[below..].iter().filter(|q| q[3] <= p[3]) {
        let c = clip3(q, &p);
        covered += area * (c[2] - z_prev);
        z_prev = c[2];
        if c[0] == p[0] && c[1] == p[1] {
            // c covers the whole (f1, f2) box from here up and dominates every later point.
            area = full_area;
            cut[2] = c[2];
            base.push(c);
            break;
        }
        let added = stair_insert(stair, c[0], c[1], r[0], r[1]);
        if added > 0.0 {
            area += added;
            base.push(c);
        }
    }
    covered += area * (r[2] - z_prev);
    slice.reset([r[0], r[1], r[2]]);
    slice.load_sorted(base.iter().copied(), covered);

    // Points with f4 > p4, by f4.
    let mut contribution = 0.0;
    let mut t_prev = p[3];
    let start = by_f4.partition_point(|q| q[3] <= p[3]);
    for (i, q) in by_f4.iter().enumerate().skip(start) {
        contribution += (box_volume - slice.volume) * (q[3] - t_prev);
        t_prev = q[3];
        if weakly_dominates3(q, &p) {
            return Some((contribution, i));
        }
        let c = clip3(q, &p);
        // About half of these points are worse than p in one coordinate only; once one has cut
        // the box, most later ones lie beyond the cut and are skipped without a 3-D pass.
        if c[0] >= cut[0] || c[1] >= cut[1] || c[2] >= cut[2] {
            continue;
        }
        match (c[0] > p[0], c[1] > p[1], c[2] > p[2]) {
            (true, false, false) => cut[0] = c[0],
            (false, true, false) => cut[1] = c[1],
            (false, false, true) => cut[2] = c[2],
            _ => {}
        }
        slice.insert(c);
    }
    debug_assert_eq!(slice.reference(), [r[0], r[1], r[2]]);
    Some((contribution + (box_volume - slice.volume) * (r[3] - t_prev), by_f4.len()))
}

#[inline]
fn weakly_dominates4(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] <= b[0] && a[1] <= b[1] && a[2] <= b[2] && a[3] <= b[3]
}

/// Removes the points of `list[from..to]` that `p` weakly dominates.
fn remove_dominated(list: &mut Vec<[f64; 4]>, p: &[f64; 4], from: usize, to: usize) {
    let mut kept = from;
    for read in from..to {
        let s = list[read];
        if !weakly_dominates4(p, &s) {
            list[kept] = s;
            kept += 1;
        }
    }
    list.drain(kept..to);
}

/// The 5-D sweep with its buffers, reusable across calls (WFG calls it once per limit set).
#[derive(Default)]
pub(crate) struct Sweep5d {
    points: Vec<[f64; 5]>,
    by_f3: Vec<[f64; 4]>,
    by_f4: Vec<[f64; 4]>,
    scratch: Scratch,
}

impl Sweep5d {
    /// HV of flat rows of dimension `d ≥ 5`, using the first five coordinates; all rows
    /// strictly dominate `r`.
    pub(crate) fn hv_flat(&mut self, data: &[f64], d: usize, r: &[f64]) -> f64 {
        self.points.clear();
        self.points.extend(data.chunks_exact(d).map(|p| [p[0], p[1], p[2], p[3], p[4]]));
        if self.points.is_empty() {
            return 0.0;
        }
        // Among equal f5 the order does not matter: the slab between them has zero height.
        self.points.sort_unstable_by_key(|a| order_key(a[4]));
        let Sweep5d { points, by_f3, by_f4, scratch } = self;
        by_f3.clear();
        by_f4.clear();
        let r4 = [r[0], r[1], r[2], r[3]];
        let mut v4 = 0.0;
        let mut volume = 0.0;
        let mut w_prev = points[0][4];
        for p in points.iter() {
            volume += v4 * (p[4] - w_prev);
            w_prev = p[4];
            let q = [p[0], p[1], p[2], p[3]];
            if let Some((c, scan_end)) = contribution4d(q, by_f3, by_f4, r4, scratch) {
                v4 += c;
                // The points q dominates have f4 ≥ q4 and lie before `scan_end` in `by_f4`.
                let from4 = by_f4.partition_point(|s| s[3] < q[3]);
                if by_f4[from4..scan_end].iter().any(|s| weakly_dominates4(&q, s)) {
                    let from3 = by_f3.partition_point(|s| s[2] < q[2]);
                    let len3 = by_f3.len();
                    remove_dominated(by_f3, &q, from3, len3);
                    remove_dominated(by_f4, &q, from4, scan_end);
                }
                by_f3.insert(by_f3.partition_point(|s| s[2] < q[2]), q);
                by_f4.insert(by_f4.partition_point(|s| s[3] < q[3]), q);
            }
        }
        volume + v4 * (r[4] - w_prev)
    }
}

/// HV of flat rows of dimension `d ≥ 5`, using the first five coordinates.
pub(crate) fn hv5d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    Sweep5d::default().hv_flat(data, d, r)
}
