//! The typed error of panacea-data. Every variant names the file, line, field or scorer it is
//! about, and the message carries a hint where a fix is likely.

use std::path::PathBuf;

/// Errors raised by panacea-data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// One line of a JSONL file is malformed.
    #[error("{path}:{line}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Record {
        /// The file (or the name given to an in-memory reader).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending field (a dotted path such as `prefs.harmless`), if one is to blame.
        field: Option<String>,
        /// What is wrong, with a hint where one helps.
        message: String,
    },
    /// One row of a columnar (parquet) file is malformed.
    #[error("{path}: row {row}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based row number over the whole file.
        row: usize,
        /// The offending column or field path (`chosen[1].role`), if one is to blame.
        field: Option<String>,
        /// What is wrong, with a hint where one helps.
        message: String,
    },
    /// A model or data file (scorer export, encoder config, tokenizer) is unusable.
    #[error("{path}: {message}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a hint where one helps.
        message: String,
    },
    /// A scorer was called with inputs it cannot score.
    #[error("scorer `{scorer}`: {message}")]
    Scorer {
        /// The scorer's name.
        scorer: String,
        /// What is wrong.
        message: String,
    },
    /// A reader or scorer setting is invalid.
    #[error("invalid setting `{setting}`: {message}")]
    Setting {
        /// The setting, e.g. `concise.c`.
        setting: String,
        /// What is wrong, with a hint where one helps.
        message: String,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl DataError {
    /// `Io` for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    /// `Model` for `path`.
    pub(crate) fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Model { path: path.into(), message: message.into() }
    }
}
