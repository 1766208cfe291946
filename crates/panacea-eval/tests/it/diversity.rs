//! Hand-computed examples for the diversity and preference metrics and the non-dominated
//! filter's duplicate option (docs/metrics.md, §1, §6–§7).

use panacea_eval::{
    bootstrap_ci, expected_utility, inner_product, mean_front, nondominated, nondominated_mask,
    spacing, sparsity, BootstrapOptions, Duplicates, Sense, SpacingVariant,
};

#[test]
fn keep_one_copy_of_a_duplicated_nondominated_point() {
    let pts = vec![vec![1.0, 2.0], vec![2.0, 1.0], vec![1.0, 2.0], vec![3.0, 3.0], vec![2.0, 1.0]];
    assert_eq!(
        nondominated_mask(&pts, Sense::Min, Duplicates::KeepAll).unwrap(),
        vec![true, true, true, false, true]
    );
    assert_eq!(
        nondominated_mask(&pts, Sense::Min, Duplicates::KeepOne).unwrap(),
        vec![true, true, false, false, false]
    );
    assert_eq!(nondominated(&pts, Sense::Max, Duplicates::KeepOne).unwrap(), vec![vec![3.0, 3.0]]);
}

#[test]
fn spacing_of_fewer_than_two_points_is_zero() {
    assert_eq!(spacing(&[vec![1.0, 2.0]], SpacingVariant::default()).unwrap(), 0.0);
    assert_eq!(sparsity(&[vec![1.0, 2.0]], Sense::Max, true).unwrap(), 0.0);
}

#[test]
fn sparsity_filter_drops_dominated_points() {
    // Max sense: (1,1) is dominated by (2,2). Non-dominated {(0,3),(2,2),(3,0)}:
    // f1 sorted 0,2,3 → 4+1; f2 sorted 0,2,3 → 4+1; total 10 / (3−1) = 5.
    let pts = vec![vec![0.0, 3.0], vec![2.0, 2.0], vec![3.0, 0.0], vec![1.0, 1.0]];
    assert_eq!(sparsity(&pts, Sense::Max, true).unwrap(), 5.0);
    // All points: f1 0,1,2,3 → 3; f2 0,1,2,3 → 3; 6 / 3 = 2.
    assert_eq!(sparsity(&pts, Sense::Max, false).unwrap(), 2.0);
}

#[test]
fn inner_product_and_eum_hand_example() {
    // docs/metrics.md, §7: IP = 3.0, EUM = 3.2.
    let pts: Vec<Vec<f64>> = (0..5).map(|k| vec![k as f64, 4.0 - k as f64]).collect();
    let prefs: Vec<Vec<f64>> = (0..5).map(|k| vec![k as f64 / 4.0, 1.0 - k as f64 / 4.0]).collect();
    assert_eq!(inner_product(&prefs, &pts).unwrap(), 3.0);
    assert!((expected_utility(&prefs, &pts).unwrap() - 3.2).abs() < 1e-15);
}

#[test]
fn bootstrap_interval_is_seeded_and_brackets_the_estimate() {
    // Two front points, 30 prompts each; the metric is the mean of objective 0 over the front.
    let per_prompt: Vec<Vec<Vec<f64>>> = (0..2)
        .map(|k| (0..30).map(|p| vec![k as f64 + ((p * 7) % 11) as f64 / 10.0, 1.0]).collect())
        .collect();
    let metric = |f: &[Vec<f64>]| Ok(f.iter().map(|p| p[0]).sum::<f64>() / f.len() as f64);
    let opts = BootstrapOptions { n_resamples: 500, level: 0.9, seed: 3 };
    let a = bootstrap_ci(&per_prompt, metric, &opts).unwrap();
    let b = bootstrap_ci(&per_prompt, metric, &opts).unwrap();
    assert_eq!(a, b);
    let front = mean_front(&per_prompt).unwrap();
    assert_eq!(a.estimate, metric(&front).unwrap());
    assert!(a.lower < a.estimate && a.estimate < a.upper, "{a:?}");
    let other = bootstrap_ci(&per_prompt, metric, &BootstrapOptions { seed: 4, ..opts }).unwrap();
    assert_ne!(a.lower, other.lower, "a different seed draws different resamples");
}

/// DPS-like fronts: a λ grid answered by a few distinct outputs, each repeated.
fn repeat(points: &[Vec<f64>], copies: &[usize]) -> Vec<Vec<f64>> {
    points.iter().zip(copies).flat_map(|(p, &c)| std::iter::repeat_n(p.clone(), c)).collect()
}

#[test]
fn repeated_points_do_not_shrink_sparsity() {
    // Three distinct maximised points; each objective's sorted values 0, 0.4, 0.8 give gaps
    // 0.4² + 0.4² = 0.32, so the total is 0.64 over |S| − 1 = 2 gaps: 0.32. Counting the 8 copies
    // (3, 2, 3) as points would divide the same total by 7: 0.0914.
    let distinct = vec![vec![0.0, 0.8], vec![0.4, 0.4], vec![0.8, 0.0]];
    let with_copies = repeat(&distinct, &[3, 2, 3]);
    for only_nd in [true, false] {
        let want = sparsity(&distinct, Sense::Max, only_nd).unwrap();
        assert!((want - 0.32).abs() < 1e-15, "{want}");
        assert_eq!(sparsity(&with_copies, Sense::Max, only_nd).unwrap(), want, "{only_nd}");
    }
    // A dominated point's copies are still dropped by the non-dominated filter.
    let mut more = with_copies.clone();
    more.extend(repeat(&[vec![0.1, 0.1]], &[4]));
    assert_eq!(
        sparsity(&more, Sense::Max, true).unwrap(),
        sparsity(&distinct, Sense::Max, true).unwrap()
    );
}

#[test]
fn repeated_points_do_not_shrink_spacing() {
    // (0,10), (1,9), (10,0): L1 nearest-neighbour distances 2, 2, 18, mean 22/3, squared
    // deviations 2·(16/3)² + (32/3)² = 1536/9; /(n − 1) = 768/9 → sqrt = 9.237604307034013; /n
    // → 512/9 → 7.542472332656507. With copies every point's nearest neighbour is its copy at
    // distance 0, which made spacing exactly 0.
    let distinct = vec![vec![0.0, 10.0], vec![1.0, 9.0], vec![10.0, 0.0]];
    let dps_like = repeat(&distinct, &[3, 5, 3]);
    assert_eq!(dps_like.len(), 11);
    let l1 = spacing(&dps_like, SpacingVariant::L1Nminus1).unwrap();
    assert!((l1 - (768.0_f64 / 9.0).sqrt()).abs() < 1e-12, "{l1}");
    let l1n = spacing(&dps_like, SpacingVariant::L1N).unwrap();
    assert!((l1n - (512.0_f64 / 9.0).sqrt()).abs() < 1e-12, "{l1n}");
    for v in SpacingVariant::ALL {
        assert_eq!(spacing(&dps_like, v).unwrap(), spacing(&distinct, v).unwrap(), "{v:?}");
    }
    // −0.0 and 0.0 are the same value, so those rows are copies too.
    let signed = vec![vec![-0.0, 10.0], vec![0.0, 10.0], vec![1.0, 9.0], vec![10.0, 0.0]];
    assert_eq!(
        spacing(&signed, SpacingVariant::L1Nminus1).unwrap(),
        spacing(&distinct, SpacingVariant::L1Nminus1).unwrap()
    );
    // One distinct point, however often repeated, has nothing to be spaced from.
    assert_eq!(spacing(&repeat(&distinct[..1], &[4]), SpacingVariant::L2N).unwrap(), 0.0);
    assert_eq!(sparsity(&repeat(&distinct[..1], &[4]), Sense::Max, false).unwrap(), 0.0);
}
