//! The concise reward of Panacea's helpful–harmless–concise experiment (docs/method.md, §5.4; the
//! re-implementation attributes it to the paper's §5.2):
//!
//! ```text
//! r_concise(y) = r_max                  if |y| ≤ c
//!              = r_max + 1 − |y|/c      otherwise
//! ```
//!
//! `|y|` is the response length in tokens. The rule is continuous at `|y| = c` and falls by 1
//! for every further `c` tokens. r_max and c are settings (the re-implementation's defaults are
//! r_max = 4, c = 50; the paper's values are unknown).
//!
//! How `|y|` is counted is explicit in [`LengthMeasure`]: prefer `Tokenizer` with the policy's
//! tokenizer, so `c` means policy tokens; `WhitespaceWords` and `Chars` are proxies for when no
//! tokenizer is at hand (a word is about 1.3 tokens of English, a token about 4 characters).

use crate::scorer::{check_batch, Scorer};
use crate::DataError;

/// How a response's length `|y|` is measured.
pub enum LengthMeasure {
    /// Tokens of the given tokenizer, without special tokens (the paper's definition). Build it
    /// with [`LengthMeasure::tokenizer`], which turns off any padding and truncation baked into
    /// the tokenizer.json; padding tokens are not counted in any case.
    Tokenizer(Box<tokenizers::Tokenizer>),
    /// A caller-supplied length function, e.g. panacea-lm's tokenizer.
    Custom(Box<dyn Fn(&str) -> usize + Send + Sync>),
    /// Whitespace-separated words (a proxy).
    WhitespaceWords,
    /// Unicode scalar values (a proxy).
    Chars,
}

impl std::fmt::Debug for LengthMeasure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LengthMeasure::Tokenizer(_) => "Tokenizer",
            LengthMeasure::Custom(_) => "Custom",
            LengthMeasure::WhitespaceWords => "WhitespaceWords",
            LengthMeasure::Chars => "Chars",
        })
    }
}

impl LengthMeasure {
    /// Counts tokens of `tokenizer`, after switching off its padding and truncation (a
    /// tokenizer.json with fixed padding would otherwise make every response the same length).
    pub fn tokenizer(mut tokenizer: tokenizers::Tokenizer) -> Self {
        tokenizer.with_padding(None);
        // Removing truncation cannot fail: only setting a limit shorter than the special tokens can.
        let _ = tokenizer.with_truncation(None);
        LengthMeasure::Tokenizer(Box::new(tokenizer))
    }

    /// The length of `text` under this measure.
    pub fn length(&self, text: &str) -> Result<usize, DataError> {
        Ok(match self {
            LengthMeasure::Tokenizer(tok) => tok
                .encode(text, false)
                .map_err(|e| DataError::Scorer {
                    scorer: "concise".to_owned(),
                    message: format!("tokenizing a response failed: {e}"),
                })?
                .get_attention_mask()
                .iter()
                .filter(|&&m| m != 0)
                .count(),
            LengthMeasure::Custom(f) => f(text),
            LengthMeasure::WhitespaceWords => text.split_whitespace().count(),
            LengthMeasure::Chars => text.chars().count(),
        })
    }
}

/// The concise scorer. Range `(−∞, r_max]`; higher is more concise (r_max for any response of
/// at most `c` tokens). The prompt is ignored.
#[derive(Debug)]
pub struct ConciseScorer {
    r_max: f64,
    c: f64,
    length: LengthMeasure,
}

impl ConciseScorer {
    /// The re-implementation's defaults: r_max = 4, c = 50 (docs/method.md, §5.4).
    pub const DEFAULT_R_MAX: f64 = 4.0;
    /// See [`ConciseScorer::DEFAULT_R_MAX`].
    pub const DEFAULT_C: f64 = 50.0;

    /// A concise scorer; `r_max` must be finite and `c` finite and positive.
    pub fn new(r_max: f64, c: f64, length: LengthMeasure) -> Result<Self, DataError> {
        if !r_max.is_finite() {
            return Err(DataError::Setting {
                setting: "concise.r_max".to_owned(),
                message: format!("must be finite, got {r_max}"),
            });
        }
        if !(c.is_finite() && c > 0.0) {
            return Err(DataError::Setting {
                setting: "concise.c".to_owned(),
                message: format!(
                    "must be a positive length in tokens, got {c}\nhint: 50 is the default"
                ),
            });
        }
        Ok(Self { r_max, c, length })
    }

    /// The rule itself, for a length already measured.
    pub fn reward_for_length(&self, len: usize) -> f64 {
        let len = len as f64;
        if len <= self.c {
            self.r_max
        } else {
            self.r_max + 1.0 - len / self.c
        }
    }
}

impl Scorer for ConciseScorer {
    fn name(&self) -> &str {
        "concise"
    }

    fn range(&self) -> (f64, f64) {
        (f64::NEG_INFINITY, self.r_max)
    }

    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError> {
        check_batch(self.name(), prompts, responses)?;
        responses.iter().map(|r| Ok(self.reward_for_length(self.length.length(r)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(r_max: f64, c: f64, len: usize, want: f64) {
        let s = ConciseScorer::new(r_max, c, LengthMeasure::WhitespaceWords).expect("valid");
        let got = s.reward_for_length(len);
        assert!((got - want).abs() < 1e-12, "len {len}: got {got}, want {want}");
    }

    // Hand computations of r_max + 1 − |y|/c.
    #[test]
    fn at_most_c_tokens_gets_r_max() {
        check(4.0, 50.0, 0, 4.0);
        check(4.0, 50.0, 50, 4.0);
    }

    #[test]
    fn longer_responses_lose_one_per_c_tokens() {
        check(4.0, 50.0, 51, 4.0 + 1.0 - 51.0 / 50.0); // 3.98
        check(4.0, 50.0, 100, 3.0);
        check(4.0, 50.0, 300, -1.0);
        check(1.0, 10.0, 25, -0.5);
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(ConciseScorer::new(4.0, 0.0, LengthMeasure::Chars).is_err());
        assert!(ConciseScorer::new(4.0, f64::NAN, LengthMeasure::Chars).is_err());
        assert!(ConciseScorer::new(f64::INFINITY, 5.0, LengthMeasure::Chars).is_err());
    }
}
