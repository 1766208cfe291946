//! Coverage C(A, B), by hand on small fronts.

use panacea_eval::{coverage, Sense};

#[test]
fn coverage_is_the_share_of_weakly_dominated_points_in_either_sense() {
    let a = vec![vec![1.0, 1.0]];
    // Maximised: (1, 1) weakly dominates (0, 1) but not (2, 0).
    assert_eq!(coverage(&a, &[vec![0.0, 1.0], vec![2.0, 0.0]], Sense::Max).unwrap(), 0.5);
    assert_eq!(
        coverage(&a, &[vec![1.0, 1.0], vec![0.5, 0.5]], Sense::Max).unwrap(),
        1.0,
        "ties count"
    );
    assert_eq!(coverage(&[vec![0.0, 0.0]], &a, Sense::Max).unwrap(), 0.0);
    // Minimised, the same sets mirror: (0, 0) now covers (1, 1).
    assert_eq!(coverage(&[vec![0.0, 0.0]], &a, Sense::Min).unwrap(), 1.0);
    assert_eq!(coverage(&a, &[vec![0.0, 1.0], vec![2.0, 0.0]], Sense::Min).unwrap(), 0.0);
    // Not symmetric: two fronts can cover each other partly.
    let b = vec![vec![2.0, 0.0], vec![0.0, 2.0]];
    let c = vec![vec![1.0, 1.0], vec![2.0, 0.0]];
    assert_eq!(coverage(&b, &c, Sense::Max).unwrap(), 0.5);
    assert_eq!(coverage(&c, &b, Sense::Max).unwrap(), 0.5);
    assert!(coverage(&a, &[vec![1.0]], Sense::Max).is_err(), "dimension mismatch");
    assert!(coverage(&a, &[], Sense::Max).is_err(), "empty set");
}
