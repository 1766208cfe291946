//! Hypervolume properties on seeded random sets (docs/metrics.md, §2): agreement of every code path
//! with the inclusion–exclusion oracle, monotonicity, permutation invariance, dominated points,
//! the scaling law, reference-point filtering and the Monte Carlo estimate.

use panacea_eval::{
    auto_reference_point, hypervolume, hypervolume_min_with, hypervolume_monte_carlo, HvAlgorithm,
    RefPoint, Sense,
};

use crate::common::{assert_close, Gen};

fn paths(d: usize) -> Vec<HvAlgorithm> {
    let mut v = vec![HvAlgorithm::Auto, HvAlgorithm::Wfg];
    match d {
        2 => v.push(HvAlgorithm::Sweep2d),
        3 => v.push(HvAlgorithm::Sweep3d),
        4 => v.push(HvAlgorithm::Sweep4d),
        5 => v.push(HvAlgorithm::Sweep5d),
        _ => {}
    }
    v
}

#[test]
fn every_path_equals_inclusion_exclusion_on_integer_sets() {
    // Integer coordinates in 0..=5 make ties, duplicates and dominated points common, and keep
    // every partial volume an exact integer, so equality is exact.
    let mut g = Gen::new(1);
    for d in 2..=6 {
        for trial in 0..40 {
            let n = 1 + g.below(10);
            let pts = g.int_points(n, d, 5);
            let r = vec![6.0; d];
            let want = hypervolume_min_with(&pts, &r, HvAlgorithm::InclusionExclusion).unwrap();
            for alg in paths(d) {
                let got = hypervolume_min_with(&pts, &r, alg).unwrap();
                assert_eq!(got, want, "d={d} trial={trial} {alg:?} points={pts:?}");
            }
        }
    }
}

#[test]
fn every_path_equals_inclusion_exclusion_on_float_sets() {
    let mut g = Gen::new(2);
    for d in 2..=6 {
        for trial in 0..25 {
            let n = 1 + g.below(10);
            let pts = if trial % 2 == 0 { g.unit_points(n, d) } else { g.sphere_points(n, d) };
            let r = vec![1.1; d];
            let want = hypervolume_min_with(&pts, &r, HvAlgorithm::InclusionExclusion).unwrap();
            for alg in paths(d) {
                let got = hypervolume_min_with(&pts, &r, alg).unwrap();
                // The oracle sums 2ⁿ signed terms, so it carries more rounding than the sweeps.
                assert!(
                    (got - want).abs() <= 1e-12 * want.max(1e-300),
                    "d={d} trial={trial} {alg:?}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn special_paths_agree_with_generic_wfg_on_larger_sets() {
    let mut g = Gen::new(3);
    for d in 2..=5 {
        for n in [50, 200] {
            for pts in [g.unit_points(n, d), g.sphere_points(n, d), g.int_points(n, d, 20)] {
                let r = vec![21.0; d];
                let generic = hypervolume_min_with(&pts, &r, HvAlgorithm::Wfg).unwrap();
                let auto = hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap();
                assert_close(auto, generic, false, &format!("d={d} n={n}"));
            }
        }
    }
}

/// Sphere points rounded to a coarse grid (ties in every coordinate, mostly non-dominated), with
/// some rows duplicated and some made weakly dominated by a copy with one coordinate worse.
fn front_with_ties(g: &mut Gen, n: usize, d: usize, steps: f64) -> Vec<Vec<f64>> {
    let mut pts: Vec<Vec<f64>> = g
        .sphere_points(n, d)
        .into_iter()
        .map(|p| p.iter().map(|x| (x * steps).round() / steps).collect())
        .collect();
    for i in 0..n / 5 {
        let mut q = pts[i * 3 % n].clone();
        pts.push(q.clone());
        q[g.below(d)] += 1.0 / steps;
        pts.push(q);
    }
    pts
}

/// The 4-D and 5-D sweeps (and WFG with the 5-D sweep as base case at d = 6) against the generic
/// WFG recursion down to 2-D, on fronts with ties, duplicates and dominated points: every branch
/// of the clipped staircases and of the early exits is hit.
#[test]
fn sweeps_agree_with_generic_wfg_on_fronts_with_ties_and_duplicates() {
    let mut g = Gen::new(11);
    for (d, alg) in [(4, HvAlgorithm::Sweep4d), (5, HvAlgorithm::Sweep5d), (6, HvAlgorithm::Auto)] {
        for (trial, (n, steps)) in
            [(60, 4.0), (60, 8.0), (120, 16.0), (120, 1e3), (150, 1e9)].into_iter().enumerate()
        {
            let pts = front_with_ties(&mut g, n, d, steps);
            for r in [vec![1.1; d], vec![1.0; d]] {
                // With r = 1, grid points at 1.0 are dropped and others touch the box edges.
                let generic = hypervolume_min_with(&pts, &r, HvAlgorithm::Wfg).unwrap();
                let got = hypervolume_min_with(&pts, &r, alg).unwrap();
                assert_close(got, generic, false, &format!("d={d} trial={trial} r={}", r[0]));
            }
        }
        // Integer grids: every partial volume is an exact integer, so equality is exact.
        for trial in 0..20 {
            let pts = g.int_points(40 + trial * 5, d, 3 + trial as u64 % 5);
            let r = vec![8.0; d];
            let generic = hypervolume_min_with(&pts, &r, HvAlgorithm::Wfg).unwrap();
            assert_eq!(hypervolume_min_with(&pts, &r, alg).unwrap(), generic, "d={d} int {trial}");
        }
    }
}

/// WFG's own shortcuts (dropping swept points a later point dominates, the sorted one-pass
/// limit-set filter) are shared by the `Wfg` and `Auto` paths at d ≥ 6, so check both against
/// the oracle directly, on sets big enough for limit sets with dominated and tied points.
#[test]
fn wfg_equals_inclusion_exclusion_on_larger_sets_with_ties() {
    let mut g = Gen::new(12);
    for d in 6..=8 {
        for trial in 0..6 {
            let n = 12 + trial;
            let pts = if trial % 2 == 0 {
                g.int_points(n, d, 4)
            } else {
                front_with_ties(&mut g, n - n / 5 * 2, d, 4.0)
            };
            let r = vec![5.0; d];
            let want = hypervolume_min_with(&pts, &r, HvAlgorithm::InclusionExclusion).unwrap();
            for alg in [HvAlgorithm::Wfg, HvAlgorithm::Auto] {
                let got = hypervolume_min_with(&pts, &r, alg).unwrap();
                assert_close(got, want, trial % 2 == 0, &format!("d={d} trial={trial} {alg:?}"));
            }
        }
    }
}

#[test]
fn monotone_when_points_are_added() {
    let mut g = Gen::new(4);
    for d in 2..=6 {
        let pts = g.unit_points(40, d);
        let r = vec![1.0; d];
        let mut prev = 0.0;
        for k in 1..=pts.len() {
            let hv = hypervolume_min_with(&pts[..k], &r, HvAlgorithm::Auto).unwrap();
            assert!(hv >= prev * (1.0 - 1e-13), "d={d} k={k}: {hv} < {prev}");
            prev = hv;
        }
    }
}

#[test]
fn invariant_under_point_and_column_permutation() {
    let mut g = Gen::new(5);
    for d in 2..=6 {
        let mut pts = g.sphere_points(30, d);
        let r: Vec<f64> = (0..d).map(|k| 1.1 + 0.1 * k as f64).collect();
        let base = hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap();
        for _ in 0..5 {
            // Fisher–Yates on rows.
            for i in (1..pts.len()).rev() {
                let j = g.below(i + 1);
                pts.swap(i, j);
            }
            // Rotate the columns (and the reference point with them).
            let shift = 1 + g.below(d);
            let rot: Vec<Vec<f64>> =
                pts.iter().map(|p| (0..d).map(|k| p[(k + shift) % d]).collect()).collect();
            let rr: Vec<f64> = (0..d).map(|k| r[(k + shift) % d]).collect();
            assert_close(
                hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap(),
                base,
                false,
                "rows",
            );
            assert_close(
                hypervolume_min_with(&rot, &rr, HvAlgorithm::Auto).unwrap(),
                base,
                false,
                "columns",
            );
        }
    }
}

#[test]
fn dominated_points_and_duplicates_add_nothing() {
    let mut g = Gen::new(6);
    for d in 2..=6 {
        let pts = g.sphere_points(25, d);
        let r = vec![1.1; d];
        let base = hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap();
        let mut more = pts.clone();
        for p in &pts {
            // A weakly dominated copy (one coordinate worse), an exact duplicate.
            let mut q = p.clone();
            q[g.below(d)] += 0.01;
            more.push(q);
            more.push(p.clone());
        }
        let got = hypervolume_min_with(&more, &r, HvAlgorithm::Auto).unwrap();
        assert_close(got, base, false, &format!("d={d}"));
        assert_close(
            hypervolume_min_with(&more, &r, HvAlgorithm::Wfg).unwrap(),
            base,
            false,
            &format!("d={d} wfg"),
        );
    }
}

#[test]
fn scaling_law() {
    // HV(cA + b; cr + b) = c^d · HV(A; r); c = 2 and b = 3 are exact in binary.
    let mut g = Gen::new(7);
    for d in 2..=6 {
        let pts = g.unit_points(30, d);
        let r = vec![1.0; d];
        let base = hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap();
        let scaled: Vec<Vec<f64>> =
            pts.iter().map(|p| p.iter().map(|x| 2.0 * x + 3.0).collect()).collect();
        let rs = vec![5.0; d];
        let got = hypervolume_min_with(&scaled, &rs, HvAlgorithm::Auto).unwrap();
        assert_close(got, base * 2f64.powi(d as i32), false, &format!("d={d}"));
    }
}

#[test]
fn single_point_empty_set_and_reference_filtering() {
    assert_eq!(
        hypervolume_min_with(&[vec![1.0, 2.0, 3.0]], &[2.0, 4.0, 6.0], HvAlgorithm::Auto).unwrap(),
        6.0
    );
    assert_eq!(
        hypervolume(&[], Sense::Min, &RefPoint::Explicit(vec![1.0, 1.0])).unwrap().value,
        0.0
    );
    // A point equal to the reference point in one coordinate does not strictly dominate it.
    let hv = hypervolume(
        &[vec![1.0, 2.0], vec![0.0, 0.5]],
        Sense::Min,
        &RefPoint::Explicit(vec![1.0, 1.0]),
    )
    .unwrap();
    assert_eq!(hv.value, 0.5);
    assert_eq!(hv.n_contributing, 1);
    // 1-D: max(0, r − min a).
    assert_eq!(
        hypervolume_min_with(&[vec![0.25], vec![0.5]], &[1.0], HvAlgorithm::Auto).unwrap(),
        0.75
    );
}

#[test]
fn ties_in_one_coordinate() {
    // In the spirit of testsuite hv/test_equal_values_dim*: many equal values per column.
    let mut g = Gen::new(8);
    for d in 2..=5 {
        for _ in 0..20 {
            let mut pts = g.int_points(12, d, 3);
            for p in &mut pts {
                p[g.below(d)] = 1.0;
            }
            let r = vec![4.0; d];
            let want = hypervolume_min_with(&pts, &r, HvAlgorithm::InclusionExclusion).unwrap();
            for alg in paths(d) {
                assert_eq!(hypervolume_min_with(&pts, &r, alg).unwrap(), want, "d={d} {alg:?}");
            }
        }
    }
}

#[test]
fn auto_reference_point_follows_the_documented_rule() {
    // Maximisation: z_j = min_j − 0.05·(max_j − min_j); range 0 → margin 0.05·max(1, |min_j|).
    let a = vec![vec![1.0, 5.0], vec![3.0, 5.0]];
    let b = vec![vec![2.0, 5.0]];
    let z = auto_reference_point(&[&a, &b], Sense::Max).unwrap();
    assert_eq!(z, vec![1.0 - 0.05 * 2.0, 5.0 - 0.05 * 5.0]);
    let z = auto_reference_point(&[&a], Sense::Min).unwrap();
    assert_eq!(z, vec![3.0 + 0.05 * 2.0, 5.0 + 0.05 * 5.0]);
    let hv = hypervolume(&a, Sense::Max, &RefPoint::Auto).unwrap();
    assert_eq!(hv.reference_point, vec![0.9, 4.75]);
    // (3 − 0.9)·(5 − 4.75)
    assert_close(hv.value, 2.1 * 0.25, false, "auto HV");
}

#[test]
fn monte_carlo_is_seeded_and_within_a_few_standard_errors() {
    let mut g = Gen::new(9);
    let pts = g.sphere_points(20, 4);
    let r = vec![1.1; 4];
    let exact = hypervolume_min_with(&pts, &r, HvAlgorithm::Auto).unwrap();
    let rp = RefPoint::Explicit(r);
    let a = hypervolume_monte_carlo(&pts, Sense::Min, &rp, 200_000, 42).unwrap();
    let b = hypervolume_monte_carlo(&pts, Sense::Min, &rp, 200_000, 42).unwrap();
    assert_eq!(a, b, "same seed, same estimate");
    let se = a.std_error.unwrap();
    assert!(
        se > 0.0 && (a.value - exact).abs() < 5.0 * se,
        "MC {} ± {se} vs exact {exact}",
        a.value
    );
    assert_eq!((a.samples, a.seed, a.method.as_str()), (Some(200_000), Some(42), "monte_carlo"));
}
