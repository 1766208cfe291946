//! The typed error of panacea-dpo. Variants carry what a caller needs to act: the file and line
//! of bad data, the cache file and why it was rejected, the tensor whose shape was wrong.

use std::path::PathBuf;

use panacea_core::CoreError;

/// Errors raised by panacea-dpo.
#[derive(Debug, thiserror::Error)]
pub enum DpoError {
    /// An error from panacea-core (preference vectors, aggregation, configs).
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A tensor had an unexpected shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The expected shape (-1 for any size).
        expected: Vec<i64>,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// A preference pair could not be used.
    #[error("pair {index}: {message}")]
    Pair {
        /// Index of the pair in its data set.
        index: usize,
        /// What is wrong, with a hint.
        message: String,
    },
    /// A batch or data set was unusable as a whole (empty, wrong number of objectives).
    #[error("{0}")]
    Data(String),
    /// The reference log-prob cache file could not be read or written.
    #[error("reference log-prob cache {path}: {message}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong, with a hint.
        message: String,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl DpoError {
    pub(crate) fn shape(what: &str, expected: Vec<i64>, got: Vec<i64>) -> Self {
        Self::Shape { what: what.to_owned(), expected, got }
    }
}
