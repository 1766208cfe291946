//! Exact 4-D hypervolume by a sweep on f4 that maintains the 3-D volume of the points seen so
//! far, after HV4D (Guerreiro, Fonseca & Emmerich, "A fast dimension-sweep algorithm for
//! the hypervolume indicator in four dimensions", CCCG 2012) and HV4D+ (Guerreiro & Fonseca,
//! "Computing and updating hypervolume contributions in up to four dimensions", IEEE TEVC 22(3)
//! 2018, §V).
//!
//! For each new point p (f4 ascending), V3 += its exclusive 3-D contribution to the current set
//! S ([`Volume3d::insert`]). The set is kept 3-D non-dominated and sorted by f3, so the
//! contribution is one linear pass over S:
//! - the points with s3 ≤ p3 ("below" p) clipped to p's (f1, f2) box form the 2-D staircase at
//!   p's height. Most of them land on the box's left or bottom edge, where only the lowest one
//!   matters, so one branch-light pass keeps two minima and collects the few strictly inside;
//!   sorting those by f1 gives the staircase (HV4D+ rebuilds the same staircase from presorted
//!   neighbour links instead);
//! - the points above p enter the staircase in f3 order, and between consecutive entries the
//!   uncovered part of p's (f1, f2) box is swept along f3. A point that covers p's corner ends the
//!   pass early.
//!
//! Each step is O(n + m log m), where m ≤ n counts the inside points not already dominated by
//! an edge point, so the sweep is O(n²) when m stays small (on the sphere fronts of the bench it
//! is a few per point) and O(n² log n) at worst; HV4D+ guarantees O(n²). Weakly dominated points
//! and duplicates contribute 0. The same machinery computes one point's 4-D contribution for the
//! 5-D sweep (`hv5d`).

use super::hv3d::order_key;

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

/// The 2-D staircase, inside the box [p0, r0] × [p1, r1], of points clipped to that box, given
/// as the lowest y on the left edge x = p0, the lowest x on the bottom edge y = p1 (r1 and r0
/// when there are none) and the points strictly inside (reordered here). Returns the covered area.
pub(crate) fn clipped_staircase(
    corner: [f64; 2],
    left_edge_y: f64,
    bottom_edge_x: f64,
    inside: &mut [[f64; 2]],
    r: [f64; 2],
    stair: &mut Vec<[f64; 2]>,
) -> f64 {
    stair.clear();
    // The edge points dominate the inside points above or right of them: drop those before the
    // sort (often most of them).
    let mut n_candidates = 0;
    for k in 0..inside.len() {
        let s = inside[k];
        inside[n_candidates] = s;
        n_candidates += usize::from(s[1] < left_edge_y && s[0] < bottom_edge_x);
    }
    let candidates = &mut inside[..n_candidates];
    candidates.sort_unstable_by(|a, b| a[0].total_cmp(&b[0]));
    let mut lowest_y = left_edge_y;
    if left_edge_y < r[1] {
        stair.push([corner[0], left_edge_y]);
    }
    for &[x, y] in candidates.iter() {
        if y < lowest_y {
            // Equal x may come in any order: a lower y replaces the point it dominates.
            if stair.last().is_some_and(|last| last[0] == x) {
                stair.pop();
            }
            stair.push([x, y]);
            lowest_y = y;
        }
    }
    if bottom_edge_x < r[0] {
        stair.push([bottom_edge_x, corner[1]]);
    }
    let mut area = 0.0;
    for (k, s) in stair.iter().enumerate() {
        let next_x = stair.get(k + 1).map_or(r[0], |t| t[0]);
        area += (next_x - s[0]) * (r[1] - s[1]);
    }
    area
}

/// A 3-D point set that grows one point at a time, with the volume it dominates up to `r`.
///
/// The points are kept sorted by f3, and a new point removes the points it weakly dominates, so
/// the set stays non-dominated (a bulk load may leave dominated points tied in f3: harmless, they
/// only cost time).
#[derive(Default)]
pub(crate) struct Volume3d {
    /// The points, sorted by f3.
    set: Vec<[f64; 3]>,
    /// The volume they dominate up to `r`.
    pub(crate) volume: f64,
    r: [f64; 3],
    stair: Vec<[f64; 2]>,
    inside: Vec<[f64; 2]>,
}

impl Volume3d {
    pub(crate) fn new(r: [f64; 3]) -> Self {
        Volume3d { set: Vec::new(), volume: 0.0, r, stair: Vec::new(), inside: Vec::new() }
    }

    /// Empties the set and sets a new reference point, keeping the allocations.
    pub(crate) fn reset(&mut self, r: [f64; 3]) {
        self.set.clear();
        self.volume = 0.0;
        self.r = r;
    }

    /// The reference point.
    pub(crate) fn reference(&self) -> [f64; 3] {
        self.r
    }

    /// Adds `p` and returns its exclusive contribution (0 when the set weakly dominates it).
    pub(crate) fn insert(&mut self, p: [f64; 3]) -> f64 {
        let Some((c, scan_end)) = self.contribution(p) else { return 0.0 };
        self.volume += c;
        // The points p weakly dominates have s3 ≥ p3 and lie before the first point that covers
        // p's (f1, f2) corner (that point would dominate them too): only that range is scanned.
        let pos = self.set.partition_point(|s| s[2] < p[2]);
        let mut kept = pos;
        for read in pos..scan_end {
            let s = self.set[read];
            if !(p[0] <= s[0] && p[1] <= s[1] && p[2] <= s[2]) {
                self.set[kept] = s;
                kept += 1;
            }
        }
        if kept < scan_end {
            // At least one slot is free: shift the kept run right by one and close the gap.
            self.set.copy_within(pos..kept, pos + 1);
            self.set[pos] = p;
            self.set.drain(kept + 1..scan_end);
        } else {
            self.set.insert(pos, p);
        }
        c
    }

    /// Replaces the set by `points`, which the caller's own sweep found sorted by f3 and not
    /// weakly dominated by earlier ones, dominating `volume` (bulk loading).
    pub(crate) fn load_sorted(&mut self, points: impl Iterator<Item = [f64; 3]>, volume: f64) {
        self.set.clear();
        self.set.extend(points);
        self.volume = volume;
    }

    /// Exclusive 3-D contribution of `p` to the set and the end of the scanned range (the
    /// points from there on have s3 ≥ p3 and a point before them covers p's (f1, f2) corner),
    /// or `None` when a point of the set weakly dominates `p`.
    fn contribution(&mut self, p: [f64; 3]) -> Option<(f64, usize)> {
        let r = self.r;
        let below = self.set.partition_point(|s| s[2] <= p[2]);
        let mut left_edge_y = r[1];
        let mut bottom_edge_x = r[0];
        // Branch-free classification (the three cases are about equally likely, so branches
        // would mispredict): every point is written to the next free slot, which only advances
        // for points strictly inside p's box.
        self.inside.resize(below.max(self.inside.len()), [0.0; 2]);
        let mut n_inside = 0;
        for s in &self.set[..below] {
            let on_left = s[0] <= p[0];
            let on_bottom = s[1] <= p[1];
            if on_left && on_bottom {
                return None;
            }
            // Plain comparisons (no NaN here) compile to minsd, unlike f64::min.
            if on_left && s[1] < left_edge_y {
                left_edge_y = s[1];
            }
            if on_bottom && s[0] < bottom_edge_x {
                bottom_edge_x = s[0];
            }
            self.inside[n_inside] = [s[0], s[1]];
            n_inside += usize::from(!on_left && !on_bottom);
        }
        let full = (r[0] - p[0]) * (r[1] - p[1]);
        let mut covered = clipped_staircase(
            [p[0], p[1]],
            left_edge_y,
            bottom_edge_x,
            &mut self.inside[..n_inside],
            [r[0], r[1]],
            &mut self.stair,
        );
        let mut contribution = 0.0;
        let mut z = p[2];
        for (i, s) in self.set.iter().enumerate().skip(below) {
            contribution += (full - covered) * (s[2] - z);
            z = s[2];
            let (cx, cy) = (s[0].max(p[0]), s[1].max(p[1]));
            if cx == p[0] && cy == p[1] {
                // From here on p's whole (f1, f2) box is covered.
                return Some((contribution, i));
            }
            covered += stair_insert(&mut self.stair, cx, cy, r[0], r[1]);
        }
        Some((contribution + (full - covered) * (r[2] - z), self.set.len()))
    }
}

/// HV of minimisation points that all strictly dominate `r`.
pub(crate) fn hv4d(points: &mut [[f64; 4]], r: [f64; 4]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    // Among equal f4 the order does not matter: the slab between them has zero height, and V3
    // after the tie is the volume of the same set.
    points.sort_unstable_by_key(|a| order_key(a[3]));
    let mut slice = Volume3d::new([r[0], r[1], r[2]]);
    let mut volume = 0.0;
    let mut w_prev = points[0][3];
    for p in points.iter() {
        volume += slice.volume * (p[3] - w_prev);
        w_prev = p[3];
        slice.insert([p[0], p[1], p[2]]);
    }
    volume + slice.volume * (r[3] - w_prev)
}

/// HV of flat rows of dimension `d ≥ 4`, using the first four coordinates.
pub(crate) fn hv4d_flat(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let mut pts: Vec<[f64; 4]> = data.chunks_exact(d).map(|p| [p[0], p[1], p[2], p[3]]).collect();
    hv4d(&mut pts, [r[0], r[1], r[2], r[3]])
}
