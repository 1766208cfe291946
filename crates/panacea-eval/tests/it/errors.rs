//! Bad input is rejected with typed errors (docs/metrics.md, §0): NaN/Inf, ragged rows, wrong
//! reference-point dimension, out-of-domain ε×.

use panacea_eval::{
    epsilon_multiplicative, hypervolume, hypervolume_min_with, igd_plus, inner_product,
    nondominated_mask, pareto_ranks, spacing, Duplicates, EvalError, HvAlgorithm, RefPoint, Sense,
    SpacingVariant,
};

#[test]
fn nan_and_inf_are_rejected_with_their_position() {
    let pts = vec![vec![1.0, 2.0], vec![f64::NAN, 0.0]];
    let e = hypervolume(&pts, Sense::Max, &RefPoint::Auto).unwrap_err();
    assert!(matches!(e, EvalError::NonFinite { row: 1, col: 0, .. }), "{e:?}");
    let pts = vec![vec![1.0, f64::INFINITY]];
    assert!(matches!(
        nondominated_mask(&pts, Sense::Min, Duplicates::KeepAll),
        Err(EvalError::NonFinite { row: 0, col: 1, .. })
    ));
    assert!(matches!(spacing(&pts, SpacingVariant::L2N), Err(EvalError::NonFinite { .. })));
    let e = hypervolume(&[vec![0.0, 0.0]], Sense::Min, &RefPoint::Explicit(vec![1.0, f64::NAN]))
        .unwrap_err();
    assert!(matches!(e, EvalError::NonFinite { what: "reference point", .. }), "{e:?}");
}

#[test]
fn ragged_rows_are_rejected() {
    let pts = vec![vec![1.0, 2.0], vec![1.0, 2.0, 3.0]];
    let e = pareto_ranks(&pts, Sense::Min).unwrap_err();
    assert_eq!(e, EvalError::Ragged { what: "points", row: 1, got: 3, expected: 2 });
    assert!(e.to_string().contains("row 1"), "{e}");
}

#[test]
fn wrong_reference_dimension_is_rejected() {
    let e = hypervolume(&[vec![0.0, 0.0]], Sense::Min, &RefPoint::Explicit(vec![1.0, 1.0, 1.0]))
        .unwrap_err();
    assert_eq!(e, EvalError::DimensionMismatch { what: "reference point", got: 3, expected: 2 });
    let e = igd_plus(&[vec![0.0, 0.0]], &[vec![0.0, 0.0, 0.0]], Sense::Min).unwrap_err();
    assert!(matches!(e, EvalError::DimensionMismatch { what: "reference set", .. }), "{e:?}");
}

#[test]
fn algorithm_dimension_and_oracle_size_are_checked() {
    let e = hypervolume_min_with(&[vec![0.0, 0.0]], &[1.0, 1.0], HvAlgorithm::Sweep3d).unwrap_err();
    assert!(matches!(e, EvalError::Unsupported { .. }), "{e:?}");
    let many: Vec<Vec<f64>> = (0..30).map(|k| vec![k as f64, 30.0 - k as f64]).collect();
    let e =
        hypervolume_min_with(&many, &[31.0, 31.0], HvAlgorithm::InclusionExclusion).unwrap_err();
    assert!(matches!(e, EvalError::Unsupported { .. }), "{e:?}");
}

#[test]
fn multiplicative_epsilon_needs_positive_values() {
    let e = epsilon_multiplicative(&[vec![0.0, 1.0]], &[vec![1.0, 1.0]], Sense::Min).unwrap_err();
    assert!(matches!(e, EvalError::InvalidValue { .. }), "{e:?}");
}

#[test]
fn inner_product_needs_paired_rows() {
    let e = inner_product(&[vec![0.5, 0.5]], &[vec![1.0, 1.0], vec![2.0, 2.0]]).unwrap_err();
    assert!(matches!(e, EvalError::LengthMismatch { .. }), "{e:?}");
}
