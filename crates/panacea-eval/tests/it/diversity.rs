//! Hand-computed examples for the diversity and preference metrics and the non-dominated
//! filter's duplicate option (metrics.md §1.1, §1.6–1.8).

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
    // metrics.md §1.8: IP = 3.0, EUM = 3.2.
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
