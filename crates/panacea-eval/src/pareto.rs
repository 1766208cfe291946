//! Non-dominated filter and non-dominated sorting (Pareto ranks), docs/metrics.md, §1.
//!
//! Both sort the points once by (coordinate sum, then lexicographic order). If a ≺ b then a comes
//! first in that order (its sum is not larger, and on equal sums it is lexicographically smaller),
//! so each point only needs to be compared with the points already accepted into the current
//! front: O(d·n·k) for a front of size k, like the simple filter of Kung, Luccio & Preparata
//! (1975) without their divide-and-conquer step. Ranks peel fronts one after another, as in Deb's
//! non-dominated sorting, so duplicates share a rank.

use std::cmp::Ordering;

use crate::error::Result;
use crate::sense::{strictly_dominates, weakly_dominates, Matrix, Sense};

/// What to do with copies of the same non-dominated point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// Every copy of a non-dominated point is non-dominated (duplicates do not dominate each
    /// other; docs/metrics.md, §1).
    #[default]
    KeepAll,
    /// Keep only the first copy (lowest index), like moocore's
    /// `is_nondominated(keep_weakly=False)`.
    KeepOne,
}

/// Indices 0..n sorted so that every strict dominator precedes the points it dominates.
pub(crate) fn dominance_order(data: &[f64], n: usize, d: usize) -> Vec<usize> {
    // + 0.0 turns −0.0 into +0.0, so equal rows (−0.0 == 0.0) tie and fall back to index order.
    let sums: Vec<f64> =
        (0..n).map(|i| data[i * d..(i + 1) * d].iter().sum::<f64>() + 0.0).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| {
        sums[a]
            .total_cmp(&sums[b])
            .then_with(|| lex_cmp(&data[a * d..a * d + d], &data[b * d..b * d + d]))
            .then(a.cmp(&b))
    });
    order
}

fn lex_cmp(a: &[f64], b: &[f64]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match (x + 0.0).total_cmp(&(y + 0.0)) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

/// Non-dominated mask on minimisation-form rows; `KeepOne` drops later copies.
///
/// Up to 3 objectives: a sweep in O(n log n) ([`nondominated_mask_sweep`]); from 4 on the
/// ordered filter below, O(d·n·k) for a front of size k.
pub(crate) fn nondominated_mask_min(m: &Matrix, duplicates: Duplicates) -> Vec<bool> {
    if m.d <= 3 {
        return nondominated_mask_sweep(m, duplicates);
    }
    nondominated_mask_filter(m, duplicates)
}

/// Maps a finite f64 (with −0.0 already turned into +0.0) to a u64 with the same order.
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// The non-dominated mask for d ≤ 3 (Kung, Luccio & Preparata 1975, the 3-D case as a sweep).
///
/// Copies are grouped first; among distinct rows a dominator precedes the rows it dominates in
/// lexicographic order, so a sweep in that order asks of each row only "is some earlier row at
/// most as large in the remaining coordinates". For d = 3 the earlier rows' (f2, f3) staircase
/// lives in a `BTreeMap` keyed by f2 with f3 strictly decreasing along the keys: the entry with
/// the largest f2 ≤ p's holds the smallest f3 among those rows.
pub(crate) fn nondominated_mask_sweep(m: &Matrix, duplicates: Duplicates) -> Vec<bool> {
    let (n, d) = (m.n, m.d);
    let normalised: Vec<f64> = m.data.iter().map(|v| v + 0.0).collect();
    let row = |i: usize| &normalised[i * d..(i + 1) * d];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| lex_cmp(row(a), row(b)).then(a.cmp(&b)));
    let mut mask = vec![false; n];
    let mut min_f2 = f64::INFINITY; // d = 2: the smallest f2 seen so far
    let mut stair: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    let mut start = 0;
    while start < n {
        let p = row(order[start]);
        let mut end = start + 1;
        while end < n && row(order[end]) == p {
            end += 1;
        }
        let dominated = match d {
            1 => start > 0,
            2 => min_f2 <= p[1],
            _ => stair.range(..=order_key(p[1])).next_back().is_some_and(|(_, &f3)| f3 <= p[2]),
        };
        if !dominated {
            // Copies: all of them, or the lowest index (first in the sort).
            let keep = match duplicates {
                Duplicates::KeepAll => &order[start..end],
                Duplicates::KeepOne => &order[start..start + 1],
            };
            keep.iter().for_each(|&i| mask[i] = true);
            if d == 2 {
                min_f2 = min_f2.min(p[1]);
            } else if d == 3 {
                // Entries from f2 on with f3 ≥ p's are now covered by p.
                let covered: Vec<u64> = stair
                    .range(order_key(p[1])..)
                    .take_while(|(_, &f3)| f3 >= p[2])
                    .map(|(&k, _)| k)
                    .collect();
                covered.iter().for_each(|k| {
                    stair.remove(k);
                });
                stair.insert(order_key(p[1]), p[2]);
            }
        }
        start = end;
    }
    mask
}

/// The ordered filter for any d (the test oracle of the sweep).
pub(crate) fn nondominated_mask_filter(m: &Matrix, duplicates: Duplicates) -> Vec<bool> {
    let (n, d) = (m.n, m.d);
    let order = dominance_order(&m.data, n, d);
    let mut mask = vec![false; n];
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        let p = m.row(i);
        let dominated = kept.iter().any(|&k| {
            let q = m.row(k);
            match duplicates {
                Duplicates::KeepAll => strictly_dominates(q, p),
                Duplicates::KeepOne => weakly_dominates(q, p),
            }
        });
        if !dominated {
            mask[i] = true;
            kept.push(i);
        }
    }
    // With `KeepOne`, equal points sort in index order, so the first copy is the one kept.
    mask
}

/// Compacts the non-dominated rows of flat minimisation data (dimension `d`) in place, keeping
/// one copy of duplicates; returns the new row count. Used by the hypervolume recursion.
pub(crate) fn filter_nondominated_flat(data: &mut Vec<f64>, d: usize) -> usize {
    let n = data.len() / d;
    if n <= 1 {
        return n;
    }
    let order = dominance_order(data, n, d);
    let mut out: Vec<f64> = Vec::with_capacity(data.len());
    let mut kept = 0usize;
    for &i in &order {
        let p = &data[i * d..(i + 1) * d];
        let dominated = out.chunks_exact(d).any(|q| weakly_dominates(q, p));
        if !dominated {
            out.extend_from_slice(p);
            kept += 1;
        }
    }
    *data = out;
    kept
}

/// Which points are non-dominated (docs/metrics.md, §1), in the given sense.
///
/// Rejects NaN/±Inf and ragged rows. `Duplicates::KeepOne` keeps the first copy of a duplicated
/// non-dominated point.
pub fn nondominated_mask(
    points: &[Vec<f64>],
    sense: Sense,
    duplicates: Duplicates,
) -> Result<Vec<bool>> {
    let m = Matrix::new("points", points, sense.sign(), None)?;
    Ok(nondominated_mask_min(&m, duplicates))
}

/// The non-dominated points themselves, in their original order.
pub fn nondominated(
    points: &[Vec<f64>],
    sense: Sense,
    duplicates: Duplicates,
) -> Result<Vec<Vec<f64>>> {
    let mask = nondominated_mask(points, sense, duplicates)?;
    Ok(points.iter().zip(mask).filter(|(_, keep)| *keep).map(|(p, _)| p.clone()).collect())
}

/// 0-based Pareto ranks: rank 0 is the non-dominated set, rank k the non-dominated set once ranks
/// below k are removed. Duplicates share a rank.
pub fn pareto_ranks(points: &[Vec<f64>], sense: Sense) -> Result<Vec<usize>> {
    let m = Matrix::new("points", points, sense.sign(), None)?;
    Ok(ranks_min(&m))
}

pub(crate) fn ranks_min(m: &Matrix) -> Vec<usize> {
    let mut remaining = dominance_order(&m.data, m.n, m.d);
    let mut ranks = vec![0usize; m.n];
    let mut rank = 0usize;
    let mut front: Vec<usize> = Vec::new();
    let mut rest: Vec<usize> = Vec::new();
    while !remaining.is_empty() {
        front.clear();
        rest.clear();
        // Every strict dominator of a point precedes it, and is either in this front or is itself
        // dominated by a member of this front (transitivity), so checking the front suffices.
        for &i in &remaining {
            let p = m.row(i);
            if front.iter().any(|&k| strictly_dominates(m.row(k), p)) {
                rest.push(i);
            } else {
                front.push(i);
                ranks[i] = rank;
            }
        }
        std::mem::swap(&mut remaining, &mut rest);
        rank += 1;
    }
    ranks
}
