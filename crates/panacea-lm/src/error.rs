//! The typed error of panacea-lm. Loading errors name the file, the byte offset and the tensor
//! where one applies, so a truncated or corrupt download is diagnosed from the message alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Errors raised by panacea-lm.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weight, config or tokenizer file is malformed (truncated, corrupt or unsupported).
    #[error("{}", format_format(path, *offset, tensor.as_deref(), message))]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem, where known.
        offset: Option<u64>,
        /// The tensor concerned, where known.
        tensor: Option<String>,
        /// What is wrong, with a hint.
        message: String,
    },
    /// A model name was neither a path nor a known short name, or its cache is missing.
    #[error("model {name:?}: {message}")]
    ModelNotFound {
        /// What the user passed.
        name: String,
        /// Why it could not be resolved, with a hint.
        message: String,
    },
    /// The tokenizer could not be built or failed on input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to compile or render (its `raise_exception` message included).
    #[error("chat template {0}")]
    Template(String),
    /// A request needs more positions than the model's context holds.
    #[error(
        "{what} needs {prompt_len} prompt + {new_tokens} new tokens = {} positions, more than \
         the model's context of {limit} (its max_position_embeddings); hint: ask for at most {} \
         new tokens, or shorten the prompt",
        prompt_len.saturating_add(*new_tokens),
        limit.saturating_sub(*prompt_len).max(0)
    )]
    ContextExceeded {
        /// What was asked, e.g. `generate`.
        what: String,
        /// Prompt tokens (the longest, padded prompt of a batch).
        prompt_len: i64,
        /// New tokens asked for.
        new_tokens: i64,
        /// The model's context size.
        limit: i64,
    },
    /// A caller passed inconsistent arguments.
    #[error("{0}")]
    Invalid(String),
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

fn format_format(path: &Path, offset: Option<u64>, tensor: Option<&str>, message: &str) -> String {
    let mut s = path.display().to_string();
    if let Some(o) = offset {
        let _ = write!(s, " at byte {o}");
    }
    if let Some(t) = tensor {
        let _ = write!(s, " (tensor {t})");
    }
    let _ = write!(s, ": {message}");
    s
}

impl LmError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}
