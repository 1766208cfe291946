//! [`ScorerSpec`]: one serde-tagged description of an objective's score function, shared by PPO
//! rewards (`source:` of an objective) and front evaluation, so both build the same scorer from
//! the same words.
//!
//! ```yaml
//! source: { kind: concise, r_max: 4.0, c: 50 }
//! source: { kind: score_model, path: runs/<train-rm run>/score-helpful }
//! ```
//!
//! The text scorers (positive, negative, harmless, relevant, concise) are built here by
//! [`ScorerSpec::text_scorer`]. A learned score model needs a base model and the rule rewards
//! read token ids rather than text, so panacea-rlhf builds those two families.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    ConciseScorer, DataError, HarmlessScorer, LengthMeasure, MiniLmEncoder, NegativeScorer,
    PositiveScorer, RelevantScorer, Scorer,
};

/// Counts the tokens of a text with the policy's tokenizer; `None` when tokenising fails.
pub type TokenCounter = Arc<dyn Fn(&str) -> Option<usize> + Send + Sync>;

/// An objective's score function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScorerSpec {
    /// VADER compound sentiment of the response, in [−1, 1].
    Positive,
    /// Minus the VADER compound of the response, in [−1, 1] (in direct conflict with
    /// `positive`).
    Negative,
    /// 1 − p(toxic) of the response (the bundled alt-profanity-check export), in [0, 1].
    Harmless,
    /// Cosine of all-MiniLM-L6-v2 prompt and response embeddings, in [−1, 1]
    /// (`cargo xtask fetch-scorers`).
    Relevant {
        /// Texts per encoder batch, ≥ 1.
        #[serde(default = "default_relevant_batch")]
        batch_size: usize,
    },
    /// The concise rule: r_max if |y| ≤ c else r_max + 1 − |y|/c, |y| in policy tokens.
    Concise {
        /// r_max.
        #[serde(default = "default_r_max")]
        r_max: f64,
        /// c, in policy tokens, > 0.
        #[serde(default = "default_c")]
        c: f64,
    },
    /// A learned reward or cost model folder written by `panacea train-rm` (loaded by
    /// panacea-rlhf onto the run's base model).
    ScoreModel {
        /// The folder.
        path: PathBuf,
    },
    /// Rule reward on token ids: the fraction of even token ids in the response (smoke runs).
    EvenTokens,
    /// Rule reward on token ids: the fraction of odd token ids (in conflict with `even_tokens`).
    OddTokens,
    /// Rule reward on token ids: minus the response length in tokens.
    NegativeLength,
}

fn default_relevant_batch() -> usize {
    32
}
fn default_r_max() -> f64 {
    ConciseScorer::DEFAULT_R_MAX
}
fn default_c() -> f64 {
    ConciseScorer::DEFAULT_C
}

impl ScorerSpec {
    /// The `kind` tag as written in configs (`positive`, `score_model`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            ScorerSpec::Positive => "positive",
            ScorerSpec::Negative => "negative",
            ScorerSpec::Harmless => "harmless",
            ScorerSpec::Relevant { .. } => "relevant",
            ScorerSpec::Concise { .. } => "concise",
            ScorerSpec::ScoreModel { .. } => "score_model",
            ScorerSpec::EvenTokens => "even_tokens",
            ScorerSpec::OddTokens => "odd_tokens",
            ScorerSpec::NegativeLength => "negative_length",
        }
    }

    /// The text scorer of a name with default settings (`positive`, `relevant`, ...), if any.
    pub fn text_by_name(name: &str) -> Option<ScorerSpec> {
        Some(match name {
            "positive" => ScorerSpec::Positive,
            "negative" => ScorerSpec::Negative,
            "harmless" => ScorerSpec::Harmless,
            "relevant" => ScorerSpec::Relevant { batch_size: default_relevant_batch() },
            "concise" => ScorerSpec::Concise { r_max: default_r_max(), c: default_c() },
            _ => return None,
        })
    }

    /// True for a learned score model: the only kind whose direction (reward or cost) comes
    /// from what it was trained as. Every built-in scorer returns a higher-is-better utility,
    /// so declaring one a `cost` would silently negate it.
    pub fn is_learned(&self) -> bool {
        matches!(self, ScorerSpec::ScoreModel { .. })
    }

    /// Problems with this spec's settings as `(sub-key, message)` pairs (empty when valid); a
    /// config validator prefixes the key of the `source`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match self {
            ScorerSpec::Concise { r_max, c } => {
                if !(c.is_finite() && *c > 0.0) {
                    out.push(("c", format!("must be a finite number > 0, got {c}")));
                }
                if !r_max.is_finite() {
                    out.push(("r_max", format!("must be finite, got {r_max}")));
                }
            }
            ScorerSpec::Relevant { batch_size } if *batch_size == 0 => {
                out.push(("batch_size", "must be ≥ 1".to_owned()));
            }
            ScorerSpec::ScoreModel { path } if !path.is_dir() => out.push((
                "path",
                format!("{} is not a folder; hint: run `panacea train-rm` first", path.display()),
            )),
            _ => {}
        }
        out
    }

    /// Builds a text scorer: positive, negative, harmless, relevant (MiniLM on `device`) or
    /// concise (|y| counted by `tokens`, the policy's tokenizer; the character count stands in
    /// for a text the tokenizer cannot encode, since it bounds the token count from above).
    /// `Ok(None)` for a learned score model or a rule reward on token ids, which panacea-rlhf
    /// builds.
    pub fn text_scorer(
        &self,
        tokens: Option<TokenCounter>,
        device: tch::Device,
    ) -> Result<Option<Box<dyn Scorer>>, DataError> {
        Ok(Some(match self {
            ScorerSpec::Positive => Box::new(PositiveScorer::new()),
            ScorerSpec::Negative => Box::new(NegativeScorer::new()),
            ScorerSpec::Harmless => Box::new(HarmlessScorer::load_bundled()?),
            ScorerSpec::Relevant { batch_size } => {
                let dir = MiniLmEncoder::default_dir().ok_or_else(|| DataError::Setting {
                    setting: "relevant".into(),
                    message: "neither PANACEA_CACHE nor HOME is set, so the MiniLM encoder \
                              cannot be found"
                        .into(),
                })?;
                let encoder = MiniLmEncoder::load(&dir, device).map_err(|e| DataError::Model {
                    path: dir.clone(),
                    message: format!(
                        "loading the relevance encoder: {e}; hint: run `cargo xtask \
                         fetch-scorers`"
                    ),
                })?;
                Box::new(RelevantScorer::new(encoder, *batch_size)?)
            }
            ScorerSpec::Concise { r_max, c } => {
                let length = match tokens {
                    Some(count) => LengthMeasure::Custom(Box::new(move |text: &str| {
                        count(text).unwrap_or_else(|| text.chars().count())
                    })),
                    None => {
                        return Err(DataError::Setting {
                            setting: "concise".into(),
                            message: "counts policy tokens and needs the policy's tokenizer".into(),
                        })
                    }
                };
                Box::new(ConciseScorer::new(*r_max, *c, length)?)
            }
            ScorerSpec::ScoreModel { .. }
            | ScorerSpec::EvenTokens
            | ScorerSpec::OddTokens
            | ScorerSpec::NegativeLength => return Ok(None),
        }))
    }
}
