//! Optimisation sense and validated point matrices.
//!
//! Internally every algorithm minimises (the convention of moocore, pymoo, pygmo and the shared
//! test files). Panacea's objectives are maximised; they are converted once, here, by negating the
//! points and the reference point together (docs/metrics.md, §0).

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Whether larger (`Max`) or smaller (`Min`) objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sense {
    /// Larger is better (Panacea rewards, utilities).
    Max,
    /// Smaller is better (losses, costs; the internal convention).
    Min,
}

impl Sense {
    /// The sign that maps a value in this sense to minimisation form.
    pub(crate) fn sign(self) -> f64 {
        match self {
            Sense::Max => -1.0,
            Sense::Min => 1.0,
        }
    }
}

impl std::str::FromStr for Sense {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "max" | "maximise" | "maximize" => Ok(Sense::Max),
            "min" | "minimise" | "minimize" => Ok(Sense::Min),
            other => Err(EvalError::InvalidValue {
                what: "sense",
                detail: format!("unknown sense {other:?} (hint: use max or min)"),
            }),
        }
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sense::Max => "max",
            Sense::Min => "min",
        })
    }
}

/// A validated, row-major matrix of finite points (n rows of d coordinates).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matrix {
    pub(crate) data: Vec<f64>,
    pub(crate) n: usize,
    pub(crate) d: usize,
}

impl Matrix {
    /// Validates `rows` (finite, not ragged) and multiplies every value by `sign`.
    /// An empty input gives `n = 0` and `d = expected_dim.unwrap_or(0)`.
    pub(crate) fn new(
        what: &'static str,
        rows: &[Vec<f64>],
        sign: f64,
        expected_dim: Option<usize>,
    ) -> Result<Matrix> {
        let Some(first) = rows.first() else {
            return Ok(Matrix { data: Vec::new(), n: 0, d: expected_dim.unwrap_or(0) });
        };
        let d = first.len();
        if d == 0 {
            return Err(EvalError::ZeroDimension { what });
        }
        if let Some(expected) = expected_dim {
            if d != expected {
                return Err(EvalError::DimensionMismatch { what, got: d, expected });
            }
        }
        let mut data = Vec::with_capacity(rows.len() * d);
        for (row, values) in rows.iter().enumerate() {
            if values.len() != d {
                return Err(EvalError::Ragged { what, row, got: values.len(), expected: d });
            }
            for (col, &value) in values.iter().enumerate() {
                if !value.is_finite() {
                    return Err(EvalError::NonFinite { what, row, col, value });
                }
                data.push(sign * value);
            }
        }
        Ok(Matrix { data, n: rows.len(), d })
    }

    pub(crate) fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = &[f64]> + '_ {
        self.data.chunks_exact(self.d.max(1)).take(self.n)
    }

    /// The distinct rows: the first copy of each set of exactly equal rows (compared with `==`,
    /// so −0.0 equals 0.0), in input order. O(n log n).
    pub(crate) fn distinct_rows(&self) -> Matrix {
        let d = self.d.max(1);
        // −0.0 + 0.0 = +0.0, so equal rows are also equal under `total_cmp` once normalised.
        let normalised: Vec<f64> = self.data.iter().map(|v| v + 0.0).collect();
        let row = |i: usize| &normalised[i * d..(i + 1) * d];
        let mut order: Vec<usize> = (0..self.n).collect();
        order.sort_unstable_by(|&a, &b| {
            row(a)
                .iter()
                .zip(row(b))
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        // Each run of equal rows starts with its lowest index, the one kept.
        order.dedup_by(|later, first| row(*later) == row(*first));
        // Back to input order, so sums over the rows add in the caller's order.
        order.sort_unstable();
        let data = order.iter().flat_map(|&i| row(i).iter().copied()).collect();
        Matrix { data, n: order.len(), d: self.d }
    }
}

/// Validates a single vector (a reference point or ideal point) against dimension `d` and maps it
/// to minimisation form.
pub(crate) fn validate_vector(
    what: &'static str,
    v: &[f64],
    d: usize,
    sign: f64,
) -> Result<Vec<f64>> {
    if v.len() != d {
        return Err(EvalError::DimensionMismatch { what, got: v.len(), expected: d });
    }
    v.iter()
        .enumerate()
        .map(|(col, &value)| {
            if value.is_finite() {
                Ok(sign * value)
            } else {
                Err(EvalError::NonFinite { what, row: 0, col, value })
            }
        })
        .collect()
}

/// a ≼ b in minimisation: a_k ≤ b_k for every k.
#[inline]
pub(crate) fn weakly_dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y)
}

/// a ≺ b in minimisation: a ≼ b and a ≠ b.
#[inline]
pub(crate) fn strictly_dominates(a: &[f64], b: &[f64]) -> bool {
    weakly_dominates(a, b) && a != b
}
