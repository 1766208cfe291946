//! The harmless scorer: `1 − p(toxic)` from the `alt-profanity-check==1.9.1` model (MIT), a
//! scikit-learn TF-IDF vectoriser followed by a 5-fold `CalibratedClassifierCV` (sigmoid) over
//! LinearSVC (docs/models.md, §3.1). `scripts/export_profanity_check.py` exported the model once
//! to `data/scorers/profanity_check-1.9.1.json`; this file reproduces `predict_proba` from it
//! without Python:
//!
//! ```text
//! tokens = regex (?u)\b\w\w+\b over lowercase(text), stop words removed
//! x      = L2-normalise( count(term) · idf(term) )          over known terms
//! p      = (1/5) Σ_f 1 / (1 + exp( a_f · (w_f·x + b0_f) + b_f ))
//! ```
//!
//! **Unicode.** Python's `\w` on `str` is "`str.isalnum()` or `_`", that is letters (L*),
//! numbers (N*, including superscripts and other No) and the underscore. The Rust `regex`
//! crate's `\w` also takes combining marks and all connector punctuation, so the tokeniser here
//! uses the explicit class `[\p{L}\p{N}_]`. With `\b` at both ends, Python's pattern matches
//! exactly the maximal runs of two or more such characters, which is what `[\p{L}\p{N}_]{2,}`
//! finds left to right. Lower-casing is Rust's `str::to_lowercase`, which, like Python's
//! `str.lower`, applies the final-sigma rule and maps `İ` to `i̇`. The parity test pins texts that
//! exercise each of these cases (`data/fixtures/profanity_check_expected.json`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::scorer::{check_batch, Scorer};
use crate::DataError;

/// The export format version this reader understands.
const FORMAT_VERSION: u32 = 1;
/// The only token pattern implemented (scikit-learn's default).
const TOKEN_PATTERN: &str = r"(?u)\b\w\w+\b";

/// The bundled export, relative to the workspace root: the name errors give the embedded copy.
pub const BUNDLED_MODEL: &str = "data/scorers/profanity_check-1.9.1.json";

/// The bundled export (2 MB of JSON), compiled in so the scorer loads without the source tree.
const BUNDLED_EXPORT: &str = include_str!("../../../data/scorers/profanity_check-1.9.1.json");

#[derive(Deserialize)]
struct Export {
    format_version: u32,
    token_pattern: String,
    lowercase: bool,
    norm: String,
    stop_words: Vec<String>,
    vocabulary: Vec<String>,
    idf: Vec<f64>,
    folds: Vec<Fold>,
}

#[derive(Deserialize)]
struct Fold {
    coef: Vec<f64>,
    intercept: f64,
    sigmoid_a: f64,
    sigmoid_b: f64,
}

/// The toxicity model and the harmless scorer built on it. Scores lie in `[0, 1]`; higher is
/// more harmless (1 − the model's probability that the response is toxic or profane). The
/// prompt is ignored.
#[derive(Debug)]
pub struct HarmlessScorer {
    vocab: HashMap<String, usize>,
    stop_words: HashSet<String>,
    idf: Vec<f64>,
    folds: Vec<(Vec<f64>, f64, f64, f64)>,
    token_re: regex::Regex,
}

impl HarmlessScorer {
    /// Loads the bundled export ([`BUNDLED_MODEL`], embedded in this crate: it needs no file).
    pub fn load_bundled() -> Result<Self, DataError> {
        Self::parse(BUNDLED_EXPORT, Path::new(BUNDLED_MODEL))
    }

    /// Loads an export written by `scripts/export_profanity_check.py` from `path`. A missing
    /// file is an error naming the path, with a hint to the embedded export.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::model(
                    path,
                    "no such file\nhint: the bundled export is built in \
                     (`HarmlessScorer::load_bundled`, scorer `{ kind: harmless }`); a file is \
                     needed only for another export of scripts/export_profanity_check.py",
                )
            } else {
                DataError::io(path, e)
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses an export's JSON text; `path` names it in errors.
    fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let export: Export = serde_json::from_str(text).map_err(|e| {
            DataError::model(
                path,
                format!(
                    "not a profanity-check export: {e}\nhint: regenerate it with \
                     scripts/export_profanity_check.py"
                ),
            )
        })?;
        Self::from_export(export, path)
    }

    fn from_export(e: Export, path: &Path) -> Result<Self, DataError> {
        let bad = |m: String| Err(DataError::model(PathBuf::from(path), m));
        if e.format_version != FORMAT_VERSION {
            return bad(format!(
                "format_version {} but this reader understands {FORMAT_VERSION}\nhint: regenerate \
                 it with scripts/export_profanity_check.py",
                e.format_version
            ));
        }
        if e.token_pattern != TOKEN_PATTERN || !e.lowercase || e.norm != "l2" {
            return bad(format!(
                "unsupported vectoriser (token_pattern {:?}, lowercase {}, norm {:?}); only \
                 {TOKEN_PATTERN:?}, lowercase, l2 are implemented",
                e.token_pattern, e.lowercase, e.norm
            ));
        }
        let n = e.vocabulary.len();
        if e.idf.len() != n || n == 0 {
            return bad(format!("{} idf values for {} terms", e.idf.len(), n));
        }
        if e.folds.is_empty() {
            return bad("no calibrated folds".to_owned());
        }
        let mut folds = Vec::with_capacity(e.folds.len());
        for (i, f) in e.folds.into_iter().enumerate() {
            if f.coef.len() != n {
                return bad(format!("fold {i} has {} coefficients for {n} terms", f.coef.len()));
            }
            folds.push((f.coef, f.intercept, f.sigmoid_a, f.sigmoid_b));
        }
        let mut vocab = HashMap::with_capacity(n);
        for (col, term) in e.vocabulary.into_iter().enumerate() {
            if vocab.insert(term.clone(), col).is_some() {
                return bad(format!("term {term:?} appears twice in the vocabulary"));
            }
        }
        let token_re = regex::Regex::new(r"[\p{L}\p{N}_]{2,}")
            .map_err(|err| DataError::model(path, format!("token regex: {err}")))?;
        Ok(Self {
            vocab,
            stop_words: e.stop_words.into_iter().collect(),
            idf: e.idf,
            folds,
            token_re,
        })
    }

    /// The tokens scikit-learn's analyzer yields for `text` (before the vocabulary lookup).
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        self.token_re
            .find_iter(&lower)
            .map(|m| m.as_str())
            .filter(|t| !self.stop_words.contains(*t))
            .map(str::to_owned)
            .collect()
    }

    /// `predict_proba(texts)[:, 1]` for one text: the probability that it is toxic/profane.
    pub fn toxicity(&self, text: &str) -> f64 {
        // Column order, as scikit-learn's sorted CSR indices: the sums below then add in the
        // same order as Python's.
        let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
        for tok in self.tokens(text) {
            if let Some(&col) = self.vocab.get(&tok) {
                *counts.entry(col).or_insert(0.0) += 1.0;
            }
        }
        let tfidf: Vec<(usize, f64)> =
            counts.into_iter().map(|(col, n)| (col, n * self.idf[col])).collect();
        let norm = tfidf.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        // scikit-learn's `normalize` divides by the norm and leaves an all-zero row as it is.
        let norm = if norm > 0.0 { norm } else { 1.0 };
        let mut p = 0.0;
        for (coef, intercept, a, b) in &self.folds {
            let d = tfidf.iter().map(|&(col, v)| coef[col] * (v / norm)).sum::<f64>() + intercept;
            p += 1.0 / (1.0 + (a * d + b).exp());
        }
        p / self.folds.len() as f64
    }
}

impl Scorer for HarmlessScorer {
    fn name(&self) -> &str {
        "harmless"
    }

    fn range(&self) -> (f64, f64) {
        (0.0, 1.0)
    }

    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError> {
        check_batch(self.name(), prompts, responses)?;
        Ok(responses.iter().map(|r| 1.0 - self.toxicity(r)).collect())
    }
}
