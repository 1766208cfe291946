//! Building per-dimension preference pairs from k scored responses per prompt (docs/models.md,
//! §4.3, the PKU-SafeRLHF substitute), and the rank statistics that show whether the chosen
//! dimensions conflict.
//!
//! For every prompt and every unordered pair (i, j), i < j, of its k responses:
//! - a pair whose two texts are identical is dropped (and counted): DPO cannot learn from it;
//! - in dimension d, response i wins if `s_i − s_j > margin_d`, j wins if `s_j − s_i > margin_d`,
//!   and otherwise the dimension is a tie and stays unlabelled (`null`);
//! - the pair is written to the generic schema if at least one dimension has a winner
//!   (otherwise it is counted as all-ties);
//! - it is also written to PKU-SafeRLHF's schema if both the dimension standing for "helpful"
//!   (`better_response_id`) and the one standing for "harmless" (`safer_response_id`) have a
//!   winner; `is_response_k_safe` is `harmless score ≥ safe_threshold`.

use std::collections::BTreeMap;

use crate::jsonl::{parse_line, Lines};
use crate::pairs::{GenericPair, PkuRecord};
use crate::DataError;

/// One prompt with its k responses and their gold scores.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPrompt {
    /// The prompt as the user wrote it (not chat-rendered).
    pub prompt: String,
    /// The k responses.
    pub responses: Vec<String>,
    /// `scores[r][d]`: the score of response r in dimension d ([`PairGenConfig::dims`] order).
    pub scores: Vec<Vec<f64>>,
}

/// How pairs are formed.
#[derive(Debug, Clone, PartialEq)]
pub struct PairGenConfig {
    /// Dimension names, in the order of [`ScoredPrompt::scores`]' columns.
    pub dims: Vec<String>,
    /// Per dimension, the smallest score gap that counts as a preference (≥ 0).
    pub margins: Vec<f64>,
    /// The dimension written as PKU's `better_response_id`.
    pub pku_helpful: String,
    /// The dimension written as PKU's `safer_response_id`; also decides `is_response_k_safe`.
    pub pku_harmless: String,
    /// A response is "safe" when its `pku_harmless` score is at least this.
    pub safe_threshold: f64,
}

/// Counts of what [`build_pairs`] kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairGenStats {
    /// Unordered response pairs considered.
    pub candidates: usize,
    /// Dropped: both responses identical.
    pub identical: usize,
    /// Dropped: every dimension tied (within its margin).
    pub all_ties: usize,
    /// Written to the generic schema.
    pub generic: usize,
    /// Written to the PKU schema.
    pub pku: usize,
    /// Per dimension, pairs with a winner.
    pub labelled: Vec<usize>,
}

impl PairGenConfig {
    fn dim_index(&self, name: &str, setting: &str) -> Result<usize, DataError> {
        self.dims.iter().position(|d| d == name).ok_or_else(|| DataError::Setting {
            setting: setting.to_owned(),
            message: format!("{name:?} is not one of the dimensions {:?}", self.dims),
        })
    }

    fn validate(&self) -> Result<(usize, usize), DataError> {
        if self.dims.is_empty() || self.margins.len() != self.dims.len() {
            return Err(DataError::Setting {
                setting: "margins".to_owned(),
                message: format!(
                    "{} margins for {} dimensions\nhint: give one margin per dimension",
                    self.margins.len(),
                    self.dims.len()
                ),
            });
        }
        if let Some(m) = self.margins.iter().find(|m| !(m.is_finite() && **m >= 0.0)) {
            return Err(DataError::Setting {
                setting: "margins".to_owned(),
                message: format!("margins must be finite and ≥ 0, got {m}"),
            });
        }
        Ok((
            self.dim_index(&self.pku_helpful, "pku_helpful")?,
            self.dim_index(&self.pku_harmless, "pku_harmless")?,
        ))
    }
}

/// The pairs of one prompt in both schemas; `stats` is updated.
pub fn build_pairs(
    sp: &ScoredPrompt,
    cfg: &PairGenConfig,
    stats: &mut PairGenStats,
) -> Result<(Vec<GenericPair>, Vec<PkuRecord>), DataError> {
    let (helpful, harmless) = cfg.validate()?;
    let k = sp.responses.len();
    if sp.scores.len() != k || sp.scores.iter().any(|s| s.len() != cfg.dims.len()) {
        return Err(DataError::Setting {
            setting: "scores".to_owned(),
            message: format!(
                "expected {k} rows of {} scores for prompt {:?}",
                cfg.dims.len(),
                sp.prompt
            ),
        });
    }
    if stats.labelled.len() != cfg.dims.len() {
        stats.labelled = vec![0; cfg.dims.len()];
    }
    let (mut generic, mut pku) = (Vec::new(), Vec::new());
    for i in 0..k {
        for j in i + 1..k {
            stats.candidates += 1;
            if crate::pairs::same_responses(&sp.responses[i], &sp.responses[j]) {
                stats.identical += 1;
                continue;
            }
            let (si, sj) = (&sp.scores[i], &sp.scores[j]);
            let winners: Vec<Option<u8>> = (0..cfg.dims.len())
                .map(|d| {
                    let gap = si[d] - sj[d];
                    if gap > cfg.margins[d] {
                        Some(0)
                    } else if -gap > cfg.margins[d] {
                        Some(1)
                    } else {
                        None
                    }
                })
                .collect();
            if winners.iter().all(Option::is_none) {
                stats.all_ties += 1;
                continue;
            }
            for (n, w) in stats.labelled.iter_mut().zip(&winners) {
                *n += usize::from(w.is_some());
            }
            let prefs: BTreeMap<String, Option<u8>> =
                cfg.dims.iter().cloned().zip(winners.iter().copied()).collect();
            let scores: BTreeMap<String, [f64; 2]> = cfg
                .dims
                .iter()
                .enumerate()
                .map(|(d, name)| (name.clone(), [si[d], sj[d]]))
                .collect();
            generic.push(GenericPair {
                prompt: sp.prompt.clone(),
                response_0: sp.responses[i].clone(),
                response_1: sp.responses[j].clone(),
                prefs,
                scores: Some(scores),
                // Safety labels go to the PKU file (is_response_*_safe); the generic file keeps
                // its published shape.
                safe: None,
            });
            stats.generic += 1;
            if let (Some(better), Some(safer)) = (winners[helpful], winners[harmless]) {
                pku.push(PkuRecord {
                    prompt: sp.prompt.clone(),
                    response_0: sp.responses[i].clone(),
                    response_1: sp.responses[j].clone(),
                    better_response_id: better,
                    safer_response_id: safer,
                    is_response_0_safe: si[harmless] >= cfg.safe_threshold,
                    is_response_1_safe: sj[harmless] >= cfg.safe_threshold,
                });
                stats.pku += 1;
            }
        }
    }
    Ok((generic, pku))
}

/// The prompt set a scored prompt came from (`benign` or `harmful` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    /// `data/prompts/benign.jsonl`.
    Benign,
    /// `data/prompts/harmful.jsonl`.
    Harmful,
}

impl PromptKind {
    /// The name written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptKind::Benign => "benign",
            PromptKind::Harmful => "harmful",
        }
    }
}

/// One line of a scored-responses file (`data/pairs/smollm2-responses.jsonl`, written by the
/// `make_pairs` example): a prompt, its k sampled responses, their lengths in policy tokens and
/// one score column (k values) per gold-scorer dimension.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScoredResponses {
    /// The prompt's id in its prompt set (e.g. `helm-0001`).
    pub id: String,
    /// Which prompt set the prompt came from.
    pub kind: PromptKind,
    /// The prompt set's source (e.g. `helm`, `donotanswer`).
    pub source: String,
    /// The raw prompt.
    pub prompt: String,
    /// The k responses.
    pub responses: Vec<String>,
    /// Each response's length in policy tokens.
    pub tokens: Vec<usize>,
    /// Dimension → k scores.
    pub scores: BTreeMap<String, Vec<f64>>,
}

impl ScoredResponses {
    /// The [`ScoredPrompt`] over `dims`, in that order.
    pub fn to_scored_prompt(&self, dims: &[String]) -> Result<ScoredPrompt, DataError> {
        let k = self.responses.len();
        let mut columns = Vec::with_capacity(dims.len());
        for d in dims {
            match self.scores.get(d) {
                Some(col) if col.len() == k => columns.push(col),
                found => {
                    return Err(DataError::Setting {
                        setting: "dims".to_owned(),
                        message: format!(
                            "prompt {:?} has {} {d:?} scores for {k} responses",
                            self.id,
                            found.map_or(0, |c| c.len())
                        ),
                    })
                }
            }
        }
        let scores = (0..k).map(|r| columns.iter().map(|c| c[r]).collect()).collect();
        Ok(ScoredPrompt { prompt: self.prompt.clone(), responses: self.responses.clone(), scores })
    }
}

/// Reads a scored-responses file strictly: every line must parse, and every token and score
/// column must hold one finite value per response. Errors name the file, line and field.
pub fn read_scored_responses(path: &std::path::Path) -> Result<Vec<ScoredResponses>, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut out = Vec::new();
    for line in Lines::new(std::io::BufReader::new(file), path.to_owned()) {
        let line = line?;
        if line.text.trim().is_empty() {
            continue;
        }
        let r: ScoredResponses = parse_line(path, &line)?;
        let bad = |field: String, message: String| DataError::Record {
            path: path.to_owned(),
            line: line.number,
            field: Some(field),
            message,
        };
        let k = r.responses.len();
        if r.tokens.len() != k {
            return Err(bad(
                "tokens".into(),
                format!("{} lengths for {k} responses", r.tokens.len()),
            ));
        }
        for (dim, col) in &r.scores {
            if col.len() != k {
                return Err(bad(
                    format!("scores.{dim}"),
                    format!("{} scores for {k} responses", col.len()),
                ));
            }
            if let Some(x) = col.iter().find(|x| !x.is_finite()) {
                return Err(bad(format!("scores.{dim}"), format!("{x} is not a finite score")));
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Ranks 1..n with ties given their average rank (the convention of `scipy.stats.rankdata`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share the mean of ranks start+1..=end.
        let rank = (start + end + 1) as f64 / 2.0;
        for &o in &order[start..end] {
            ranks[o] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation (Pearson on average ranks); `None` when either input is constant
/// or the lengths differ or are below 2.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_ranks_share_ties() {
        // scipy.stats.rankdata([3, 1, 3, 2]) = [3.5, 1, 3.5, 2].
        assert_eq!(average_ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn spearman_of_monotone_and_reversed() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&x, &[10.0, 20.0, 30.0, 100.0]), Some(1.0));
        assert_eq!(spearman(&x, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&x, &[1.0, 1.0, 1.0, 1.0]), None);
        // Hand computation: ranks y = [1, 3, 2, 4]; d² = 0+1+1+0 = 2; 1 − 6·2/(4·15) = 0.8.
        let r = spearman(&x, &[1.0, 3.0, 2.0, 4.0]).expect("defined");
        assert!((r - 0.8).abs() < 1e-12, "{r}");
    }
}
