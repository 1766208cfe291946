//! The [`Scorer`] trait: a deterministic gold signal mapping (prompt, response) texts to one
//! `f64` per pair, used as a PPO reward, to rank responses when building preference pairs, and to
//! place a model on the front at evaluation time.
//!
//! **Direction:** every scorer in this crate returns a *utility*, higher is better (harmless is
//! `1 − p(toxic)`, concise is the paper's concise reward, and so on), so nothing downstream
//! negates. A user scorer should follow the same rule and say so in [`Scorer::range`]'s docs.

use crate::DataError;

/// A gold scorer: text in, one higher-is-better `f64` per (prompt, response) pair out.
///
/// Implementations are deterministic (same inputs, same outputs), never panic on any UTF-8
/// input, and document their range and what a high value means.
pub trait Scorer {
    /// A short, stable name used in file columns and metric keys (`harmless`, `relevant`, ...).
    fn name(&self) -> &str;

    /// The closed range `[lo, hi]` of possible scores (either end may be infinite).
    fn range(&self) -> (f64, f64);

    /// Scores each pair `(prompts[i], responses[i])`; higher is better. Scorers that only look
    /// at the response ignore the prompt. `prompts` and `responses` must have equal lengths.
    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError>;
}

/// Checks that a batch has one prompt per response.
pub(crate) fn check_batch(
    scorer: &str,
    prompts: &[&str],
    responses: &[&str],
) -> Result<(), DataError> {
    if prompts.len() == responses.len() {
        Ok(())
    } else {
        Err(DataError::Scorer {
            scorer: scorer.to_owned(),
            message: format!(
                "got {} prompts but {} responses\nhint: pass one prompt per response (repeat a \
                 prompt for each of its responses)",
                prompts.len(),
                responses.len()
            ),
        })
    }
}
