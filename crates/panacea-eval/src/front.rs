//! `Front`: the plain-data hand-off from the model evaluation (in the CLI) to this crate, one row
//! per preference vector.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::sense::Matrix;

/// A front produced by one method: `points[k]` is the objective vector obtained under
/// preference `prefs[k]` (empty `prefs` for methods without preferences), and `labels` names the
/// objectives (one per column, e.g. `["helpful", "harmless"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Front {
    /// Preference vectors λ_k, one per point, or empty.
    pub prefs: Vec<Vec<f64>>,
    /// Objective vectors, one per point.
    pub points: Vec<Vec<f64>>,
    /// Objective names, one per column (may be empty: then `f1`, `f2`, … are used).
    pub labels: Vec<String>,
}

impl Front {
    /// Number of objectives (0 for an empty front).
    pub fn dim(&self) -> usize {
        self.points.first().map_or(0, Vec::len)
    }

    /// Checks finiteness, rectangular shapes and that `prefs` pairs with `points`.
    pub fn validate(&self) -> Result<()> {
        let m = Matrix::new("points", &self.points, 1.0, None)?;
        if !self.prefs.is_empty() {
            if self.prefs.len() != self.points.len() {
                return Err(EvalError::LengthMismatch {
                    what: "front",
                    left: "prefs",
                    left_len: self.prefs.len(),
                    right: "points",
                    right_len: self.points.len(),
                });
            }
            Matrix::new("preference vectors", &self.prefs, 1.0, Some(m.d))?;
        }
        if !self.labels.is_empty() && m.n > 0 && self.labels.len() != m.d {
            return Err(EvalError::DimensionMismatch {
                what: "objective labels",
                got: self.labels.len(),
                expected: m.d,
            });
        }
        Ok(())
    }

    /// The objective names, falling back to `f1`, `f2`, ….
    pub fn objective_names(&self) -> Vec<String> {
        if self.labels.len() == self.dim() && !self.labels.is_empty() {
            self.labels.clone()
        } else {
            (1..=self.dim()).map(|k| format!("f{k}")).collect()
        }
    }

    /// A short label for point k's preference, e.g. `λ=(0.25,0.75)`, or `None` without prefs.
    pub fn pref_label(&self, k: usize) -> Option<String> {
        let p = self.prefs.get(k)?;
        let parts: Vec<String> =
            p.iter().map(|v| format!("{}", (v * 100.0).round() / 100.0)).collect();
        Some(format!("λ=({})", parts.join(",")))
    }
}
