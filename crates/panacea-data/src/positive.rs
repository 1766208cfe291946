//! The positive and negative scorers: the VADER compound sentiment score (Hutto & Gilbert, ICWSM 2014) of the
//! response, from the MIT crate `vader_sentiment` 0.1.1, which embeds `vader_lexicon.txt` and
//! the emoji lexicon.
//!
//! The crate ports an older VADER than PyPI's `vaderSentiment==3.3.2`: compounds agree on most
//! sentences but not all ("not bad at all :)" gives 0.764 here, 0.705 in Python; docs/models.md,
//! §3.2). Tests therefore pin this crate's values, not Python's. The crate indexes token lists
//! directly; a panic inside it is caught and returned as an error instead of unwinding through
//! the caller.

use crate::scorer::{check_batch, Scorer};
use crate::DataError;

/// VADER compound of the response. Range `[−1, 1]`; higher is more positive (0 is neutral, and
/// text with no sentiment words scores exactly 0). The prompt is ignored.
pub struct PositiveScorer {
    analyzer: vader_sentiment::SentimentIntensityAnalyzer<'static>,
}

impl std::fmt::Debug for PositiveScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PositiveScorer(vader_sentiment 0.1.1)")
    }
}

impl Default for PositiveScorer {
    fn default() -> Self {
        Self::new()
    }
}

impl PositiveScorer {
    /// The scorer with VADER's bundled lexicons.
    pub fn new() -> Self {
        Self { analyzer: vader_sentiment::SentimentIntensityAnalyzer::new() }
    }

    /// The compound score of one text.
    pub fn compound(&self, text: &str) -> Result<f64, DataError> {
        let analyzer = &self.analyzer;
        let scores = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            analyzer.polarity_scores(text).get("compound").copied()
        }));
        match scores {
            Ok(Some(c)) if c.is_finite() => Ok(c),
            Ok(other) => Err(DataError::Scorer {
                scorer: "positive".to_owned(),
                message: format!("vader_sentiment returned compound {other:?} for {text:?}"),
            }),
            Err(_) => Err(DataError::Scorer {
                scorer: "positive".to_owned(),
                message: format!("vader_sentiment panicked on {text:?}"),
            }),
        }
    }
}

impl Scorer for PositiveScorer {
    fn name(&self) -> &str {
        "positive"
    }

    fn range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }

    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError> {
        check_batch(self.name(), prompts, responses)?;
        responses.iter().map(|r| self.compound(r)).collect()
    }
}

/// Negativity: minus the VADER compound of the response. Range `[−1, 1]`; higher is more
/// negative. In direct conflict with [`PositiveScorer`] by construction, which gives a
/// two-objective task whose front and directions are known (the PPO default's second
/// objective). The prompt is ignored.
#[derive(Debug, Default)]
pub struct NegativeScorer(PositiveScorer);

impl NegativeScorer {
    /// The scorer with VADER's bundled lexicons.
    pub fn new() -> Self {
        Self(PositiveScorer::new())
    }
}

impl Scorer for NegativeScorer {
    fn name(&self) -> &str {
        "negative"
    }

    fn range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }

    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError> {
        check_batch(self.name(), prompts, responses)?;
        responses.iter().map(|r| self.0.compound(r).map(|c| -c)).collect()
    }
}
