//! The sub-quadratic metrics (k-d tree nearest neighbours, the non-dominated sweep for d ≤ 3,
//! the O(n log n) exact R2) against the quadratic code they replaced, kept here as the oracle:
//! equal results on seeded random fronts with many ties and copies, in both senses.

use panacea_eval::{
    avg_hausdorff, coverage, epsilon_additive, epsilon_multiplicative, gd, igd, igd_plus,
    nondominated_mask, r2_exact_2d, spacing, spacing_all_variants, sparsity, Duplicates, Sense,
    SpacingVariant,
};

use crate::common::{assert_close, Gen};

/// The previous implementations, verbatim in substance: scans over every pair.
mod oracle {
    use panacea_eval::{Duplicates, Sense, SpacingVariant};

    fn sign(sense: Sense) -> f64 {
        match sense {
            Sense::Max => -1.0,
            Sense::Min => 1.0,
        }
    }

    pub(crate) fn min_form(points: &[Vec<f64>], sense: Sense) -> Vec<Vec<f64>> {
        points.iter().map(|p| p.iter().map(|v| sign(sense) * v).collect()).collect()
    }

    /// One copy of each set of equal rows (first occurrence kept).
    pub(crate) fn distinct(points: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = Vec::new();
        for p in points {
            if !out.iter().any(|q| q == p) {
                out.push(p.clone());
            }
        }
        out
    }

    fn weakly(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| x <= y)
    }

    /// The definition: kept unless strictly dominated (KeepOne: or an earlier copy exists).
    pub(crate) fn nd_mask(points: &[Vec<f64>], sense: Sense, dup: Duplicates) -> Vec<bool> {
        let m = min_form(points, sense);
        (0..m.len())
            .map(|i| {
                !m.iter().enumerate().any(|(j, q)| {
                    (weakly(q, &m[i]) && q != &m[i])
                        || (dup == Duplicates::KeepOne && j < i && q == &m[i])
                })
            })
            .collect()
    }

    pub(crate) fn spacing(points: &[Vec<f64>], variant: SpacingVariant) -> f64 {
        let pts = distinct(points);
        let n = pts.len();
        if n < 2 {
            return 0.0;
        }
        let l1 = matches!(variant, SpacingVariant::L1Nminus1 | SpacingVariant::L1N);
        let dist = |a: &[f64], b: &[f64]| -> f64 {
            if l1 {
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
            } else {
                a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
            }
        };
        let nearest: Vec<f64> = (0..n)
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i)
                    .map(|j| dist(&pts[i], &pts[j]))
                    .fold(f64::INFINITY, f64::min)
            })
            .collect();
        let mean = nearest.iter().sum::<f64>() / n as f64;
        let ss: f64 = nearest.iter().map(|d| (d - mean) * (d - mean)).sum();
        let denom = match variant {
            SpacingVariant::L1Nminus1 | SpacingVariant::L2Nminus1 => (n - 1) as f64,
            SpacingVariant::L1N | SpacingVariant::L2N => n as f64,
        };
        (ss / denom).sqrt()
    }

    fn euclid(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
    }

    fn plus_dist(a: &[f64], r: &[f64]) -> f64 {
        a.iter().zip(r).map(|(x, y)| (x - y).max(0.0).powi(2)).sum::<f64>().sqrt()
    }

    fn mean_min(from: &[Vec<f64>], to: &[Vec<f64>], dist: fn(&[f64], &[f64]) -> f64) -> f64 {
        from.iter()
            .map(|f| to.iter().map(|t| dist(t, f)).fold(f64::INFINITY, f64::min))
            .sum::<f64>()
            / from.len() as f64
    }

    pub(crate) fn gd(a: &[Vec<f64>], r: &[Vec<f64>], s: Sense) -> f64 {
        mean_min(&min_form(a, s), &min_form(r, s), euclid)
    }
    pub(crate) fn igd(a: &[Vec<f64>], r: &[Vec<f64>], s: Sense) -> f64 {
        mean_min(&min_form(r, s), &min_form(a, s), euclid)
    }
    pub(crate) fn igd_plus(a: &[Vec<f64>], r: &[Vec<f64>], s: Sense) -> f64 {
        mean_min(&min_form(r, s), &min_form(a, s), plus_dist)
    }
    pub(crate) fn eps_add(a: &[Vec<f64>], r: &[Vec<f64>], s: Sense) -> f64 {
        let (a, r) = (min_form(a, s), min_form(r, s));
        r.iter()
            .map(|t| {
                a.iter()
                    .map(|p| p.iter().zip(t).map(|(x, y)| x - y).fold(f64::NEG_INFINITY, f64::max))
                    .fold(f64::INFINITY, f64::min)
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }
    pub(crate) fn eps_mult(a: &[Vec<f64>], r: &[Vec<f64>], s: Sense) -> f64 {
        let ratio = |p: &[f64], t: &[f64]| -> f64 {
            p.iter()
                .zip(t)
                .map(|(x, y)| match s {
                    Sense::Min => x / y,
                    Sense::Max => y / x,
                })
                .fold(f64::NEG_INFINITY, f64::max)
        };
        r.iter()
            .map(|t| a.iter().map(|p| ratio(p, t)).fold(f64::INFINITY, f64::min))
            .fold(f64::NEG_INFINITY, f64::max)
    }
    pub(crate) fn coverage(a: &[Vec<f64>], b: &[Vec<f64>], s: Sense) -> f64 {
        let (a, b) = (min_form(a, s), min_form(b, s));
        b.iter().filter(|q| a.iter().any(|p| weakly(p, q))).count() as f64 / b.len() as f64
    }
    /// The O(n³) exact R2: every pairwise crossing as a breakpoint, the envelope over all points.
    pub(crate) fn r2(points: &[Vec<f64>], ideal: &[f64], s: Sense) -> f64 {
        let a = min_form(points, s);
        let z: Vec<f64> = ideal.iter().map(|v| sign(s) * v).collect();
        let uv: Vec<(f64, f64)> =
            a.iter().map(|p| ((p[0] - z[0]).abs(), (p[1] - z[1]).abs())).collect();
        let mut breaks: Vec<f64> = vec![0.0, 1.0];
        for &(u, _) in &uv {
            for &(_, v) in &uv {
                if u + v > 0.0 {
                    breaks.push(v / (u + v));
                }
            }
        }
        breaks.sort_unstable_by(f64::total_cmp);
        breaks.dedup();
        let envelope = |w: f64| -> f64 {
            uv.iter().map(|&(u, v)| (w * u).max((1.0 - w) * v)).fold(f64::INFINITY, f64::min)
        };
        let mut total = 0.0;
        let mut prev_w = breaks[0];
        let mut prev_g = envelope(prev_w);
        for &w in &breaks[1..] {
            let g = envelope(w);
            total += 0.5 * (prev_g + g) * (w - prev_w);
            prev_w = w;
            prev_g = g;
        }
        total
    }
}

/// Seeded fronts: small integers (many ties and copies), uniform, and sphere points.
fn fronts(g: &mut Gen, d: usize) -> Vec<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    for n in [1, 2, 3, 7, 20, 60, 150] {
        out.push(g.int_points(n, d, 4));
        out.push(g.unit_points(n, d));
        out.push(g.sphere_points(n, d));
    }
    // −0.0 next to 0.0: the same value.
    out.push(vec![vec![0.0; d], vec![-0.0; d], vec![1.0; d]]);
    out
}

#[test]
fn nondominated_sweep_matches_the_definition() {
    let mut g = Gen::new(11);
    for d in 1..=4 {
        for pts in fronts(&mut g, d) {
            for sense in [Sense::Min, Sense::Max] {
                for dup in [Duplicates::KeepAll, Duplicates::KeepOne] {
                    assert_eq!(
                        nondominated_mask(&pts, sense, dup).unwrap(),
                        oracle::nd_mask(&pts, sense, dup),
                        "d {d} {sense} {dup:?} {pts:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn spacing_and_sparsity_match_the_pairwise_scan() {
    let mut g = Gen::new(12);
    for d in 1..=5 {
        for pts in fronts(&mut g, d) {
            let all = spacing_all_variants(&pts).unwrap();
            for (v, value) in SpacingVariant::ALL.into_iter().zip(all) {
                assert_eq!(spacing(&pts, v).unwrap(), oracle::spacing(&pts, v), "d {d} {v:?}");
                assert_eq!(value, oracle::spacing(&pts, v), "d {d} {v:?}");
            }
            for sense in [Sense::Min, Sense::Max] {
                // Sparsity sorts each column, so the order of the kept rows does not matter.
                let nd = oracle::distinct(
                    &pts.iter()
                        .zip(oracle::nd_mask(&pts, sense, Duplicates::KeepAll))
                        .filter(|(_, k)| *k)
                        .map(|(p, _)| p.clone())
                        .collect::<Vec<_>>(),
                );
                assert_eq!(
                    sparsity(&pts, sense, true).unwrap(),
                    sparsity(&nd, sense, false).unwrap(),
                    "d {d}"
                );
            }
        }
    }
}

#[test]
fn reference_set_indicators_match_the_pairwise_scan() {
    let mut g = Gen::new(13);
    for d in 1..=4 {
        let sets = fronts(&mut g, d);
        for (i, a) in sets.iter().enumerate() {
            let r = &sets[(i * 7 + 3) % sets.len()];
            for s in [Sense::Min, Sense::Max] {
                let what = format!("d {d}, |A| {}, |R| {}, {s}", a.len(), r.len());
                assert_eq!(gd(a, r, s).unwrap(), oracle::gd(a, r, s), "GD {what}");
                assert_eq!(igd(a, r, s).unwrap(), oracle::igd(a, r, s), "IGD {what}");
                assert_eq!(igd_plus(a, r, s).unwrap(), oracle::igd_plus(a, r, s), "IGD+ {what}");
                assert_eq!(
                    avg_hausdorff(a, r, s).unwrap(),
                    oracle::gd(a, r, s).max(oracle::igd(a, r, s)),
                    "Δ₁ {what}"
                );
                assert_eq!(
                    epsilon_additive(a, r, s).unwrap(),
                    oracle::eps_add(a, r, s),
                    "ε+ {what}"
                );
                assert_eq!(coverage(a, r, s).unwrap(), oracle::coverage(a, r, s), "C {what}");
                // ε× needs positive values: shift everything by 0.5.
                let pos = |m: &[Vec<f64>]| -> Vec<Vec<f64>> {
                    m.iter().map(|p| p.iter().map(|v| v + 0.5).collect()).collect()
                };
                let (pa, pr) = (pos(a), pos(r));
                assert_eq!(
                    epsilon_multiplicative(&pa, &pr, s).unwrap(),
                    oracle::eps_mult(&pa, &pr, s),
                    "ε× {what}"
                );
            }
        }
    }
}

#[test]
fn exact_r2_matches_the_cubic_envelope() {
    let mut g = Gen::new(14);
    for pts in fronts(&mut g, 2) {
        for s in [Sense::Min, Sense::Max] {
            // The ideal point of the set, and one that is not (points on both sides of it).
            let best = |k: usize| {
                let it = pts.iter().map(|p| p[k]);
                match s {
                    Sense::Min => it.fold(f64::INFINITY, f64::min),
                    Sense::Max => it.fold(f64::NEG_INFINITY, f64::max),
                }
            };
            for z in [vec![best(0), best(1)], vec![0.5, 0.5]] {
                let want = oracle::r2(&pts, &z, s);
                // The same envelope values summed over fewer breakpoints: equal up to rounding.
                assert_close(
                    r2_exact_2d(&pts, &z, s).unwrap(),
                    want,
                    false,
                    &format!("R2 {s} z {z:?} n {}", pts.len()),
                );
            }
        }
    }
}
