//! Objectives and their sign convention (docs/method.md, §5.3, §10 item 7).
//!
//! Every score is turned into a **utility** (higher is better) here and nowhere else: a reward
//! is its own utility, a cost is negated. Aggregation, advantages, metrics and fronts downstream
//! only ever see utilities.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::{Validate, Validator};
use crate::CoreError;

/// Whether a higher score is better (a reward) or worse (a cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveKind {
    /// Higher is better; utility = score.
    Reward,
    /// Higher is worse (e.g. a safe-rlhf cost model: unsafe ⇒ C > 0); utility = −score.
    Cost,
}

fn default_scale() -> f64 {
    1.0
}

/// One objective dimension: a name (used in logs, checkpoints and fronts), its kind, and a
/// per-dimension scale applied to utilities by the trainers (docs/method.md, §6.1 step 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Short name, e.g. `helpful` or `harmless`.
    pub name: String,
    /// Reward or cost.
    pub kind: ObjectiveKind,
    /// Multiplier for the (normalised) utility, > 0 (default 1).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

impl Objective {
    /// A reward objective with scale 1.
    pub fn reward(name: &str) -> Self {
        Self { name: name.to_owned(), kind: ObjectiveKind::Reward, scale: 1.0 }
    }

    /// A cost objective with scale 1.
    pub fn cost(name: &str) -> Self {
        Self { name: name.to_owned(), kind: ObjectiveKind::Cost, scale: 1.0 }
    }

    /// The sign that turns a score into a utility: +1 for rewards, −1 for costs.
    pub fn sign(&self) -> f64 {
        match self.kind {
            ObjectiveKind::Reward => 1.0,
            ObjectiveKind::Cost => -1.0,
        }
    }

    /// The utility of raw scores (any shape): the score for a reward, −score for a cost. The
    /// project's **only** negation of costs.
    pub fn utility(&self, score: &Tensor) -> Tensor {
        match self.kind {
            ObjectiveKind::Reward => score.shallow_clone(),
            ObjectiveKind::Cost => score.neg(),
        }
    }

    /// [`Objective::utility`] for one host-side number.
    pub fn utility_f64(&self, score: f64) -> f64 {
        self.sign() * score
    }
}

/// Utilities for all K objectives at once: scores [.., K] → utilities [.., K], column i
/// negated when objective i is a cost.
pub fn utilities(objectives: &[Objective], scores: &Tensor) -> Result<Tensor, CoreError> {
    let size = scores.size();
    let k = objectives.len() as i64;
    if size.last() != Some(&k) {
        let mut expected = vec![-1; size.len().max(1)];
        if let Some(last) = expected.last_mut() {
            *last = k;
        }
        return Err(CoreError::Shape { what: "scores [.., K]".into(), expected, got: size });
    }
    let signs: Vec<f32> = objectives.iter().map(|o| o.sign() as f32).collect();
    let signs = Tensor::from_slice(&signs).to_device(scores.device()).to_kind(scores.kind()); // [K]
    Ok(scores * signs) // [.., K]
}

impl Validate for Objective {
    fn validate(&self, v: &mut Validator) {
        v.check(!self.name.trim().is_empty(), "name", "must not be empty");
        v.positive(self.scale, "scale");
    }
}
