//! Typed errors for every fallible call in `panacea-eval`. Messages name the offending row,
//! column, value or file line and end with a hint.

use thiserror::Error;

/// Everything that can go wrong when validating input or computing a metric.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EvalError {
    /// A coordinate is NaN or ±Inf.
    #[error("{what}: row {row}, column {col} is {value}, which is not finite (hint: drop or repair NaN/Inf scores before computing metrics)")]
    NonFinite {
        /// Which input (points, reference point, reference set, preferences).
        what: &'static str,
        /// 0-based row.
        row: usize,
        /// 0-based column.
        col: usize,
        /// The offending value.
        value: f64,
    },
    /// Rows of different lengths.
    #[error("{what}: row {row} has {got} coordinates but row 0 has {expected} (hint: every point needs one value per objective)")]
    Ragged {
        /// Which input.
        what: &'static str,
        /// 0-based row.
        row: usize,
        /// Its length.
        got: usize,
        /// The length of row 0.
        expected: usize,
    },
    /// Two inputs disagree on the number of objectives.
    #[error("{what} has dimension {got} but the points have dimension {expected} (hint: give one value per objective)")]
    DimensionMismatch {
        /// Which input.
        what: &'static str,
        /// Its dimension.
        got: usize,
        /// The points' dimension.
        expected: usize,
    },
    /// A metric needs at least this many points (or a non-empty set).
    #[error("{what} needs at least {min} point(s) but got {got}")]
    TooFewPoints {
        /// Which input.
        what: &'static str,
        /// How many are needed.
        min: usize,
        /// How many were given.
        got: usize,
    },
    /// Points with zero objectives.
    #[error(
        "{what}: points have zero coordinates (hint: each point needs at least one objective)"
    )]
    ZeroDimension {
        /// Which input.
        what: &'static str,
    },
    /// Two paired inputs have different lengths.
    #[error("{what}: {left} has {left_len} rows but {right} has {right_len} (hint: row k of one must pair with row k of the other)")]
    LengthMismatch {
        /// Which pairing.
        what: &'static str,
        /// Name of the first input.
        left: &'static str,
        /// Its length.
        left_len: usize,
        /// Name of the second input.
        right: &'static str,
        /// Its length.
        right_len: usize,
    },
    /// A value outside the domain of a metric (for example ε× with a non-positive coordinate).
    #[error("{what}: {detail}")]
    InvalidValue {
        /// Which metric or option.
        what: &'static str,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// An exact algorithm was asked for a dimension or size it does not handle.
    #[error("{what}: {detail}")]
    Unsupported {
        /// Which algorithm.
        what: &'static str,
        /// Why, and what to use instead.
        detail: String,
    },
    /// No point strictly dominates the reference point, so the hypervolume is 0: almost always
    /// a reference point on the wrong side (or in the wrong sense) rather than a real result.
    #[error("no point strictly dominates the reference point {reference_point:?} (sense {sense}; {n_points} points), so the hypervolume is 0 (hint: the reference point must be worse than the points in every objective; check its sign and --sense, use --ref auto, or pass --allow-empty to accept an empty hypervolume)")]
    EmptyHypervolume {
        /// The reference point, in the caller's sense.
        reference_point: Vec<f64>,
        /// The sense of the points and the reference point.
        sense: crate::sense::Sense,
        /// Number of points given.
        n_points: usize,
    },
    /// A points file could not be parsed.
    #[error("{source_name}:{line}: {detail}")]
    Parse {
        /// The file name (or `<stdin>`).
        source_name: String,
        /// 1-based line.
        line: usize,
        /// What was wrong, with a hint.
        detail: String,
    },
    /// Plot rendering failed (backend or font error).
    #[error("plot {path}: {detail}")]
    Plot {
        /// The output path.
        path: String,
        /// The backend's message.
        detail: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
