//! The typed error of panacea-front. Errors from the crates below pass through unchanged;
//! [`FrontError::Context`] wraps one with what was being done (the file, the method, the
//! objective), so a message reads like `loading adapter runs/x/checkpoints/step-000040: ...`.

use std::path::PathBuf;

/// Errors raised by panacea-front.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// A config value, flag combination or input that cannot be evaluated, with a hint.
    #[error("{0}")]
    Invalid(String),
    /// No run or checkpoint was found where one was needed, with a hint.
    #[error("{0}")]
    NotFound(String),
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`writing`, `creating`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A baseline member's training was stopped by the stop flag before it finished.
    #[error(
        "interrupted while training the {family} baseline; run the comparison again to continue"
    )]
    Interrupted {
        /// `rs` or `dps`.
        family: String,
    },
    /// An error with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The cause.
        source: Box<FrontError>,
    },
    /// From panacea-core (configs, checkpoints, preferences).
    #[error(transparent)]
    Core(#[from] panacea_core::CoreError),
    /// From panacea-lm (models, tokenizer, generation).
    #[error(transparent)]
    Lm(#[from] panacea_lm::LmError),
    /// From panacea-data (scorers, prompts).
    #[error(transparent)]
    Data(#[from] panacea_data::DataError),
    /// From panacea-eval (metrics, reports, plots).
    #[error(transparent)]
    Eval(#[from] panacea_eval::EvalError),
    /// From panacea-rlhf (learned score models, PPO).
    #[error(transparent)]
    Rlhf(#[from] panacea_rlhf::RlhfError),
    /// From panacea-dpo.
    #[error(transparent)]
    Dpo(#[from] panacea_dpo::DpoError),
    /// From panacea-run (run folders).
    #[error(transparent)]
    Run(#[from] panacea_run::RunError),
    /// From libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// JSON encoding.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Results of panacea-front.
pub type Result<T, E = FrontError> = std::result::Result<T, E>;

/// Adds what was being done to an error (like `anyhow::Context`, but typed).
pub trait Context<T> {
    /// Wraps the error with `context()`.
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<FrontError>> Context<T> for std::result::Result<T, E> {
    fn context_with(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| FrontError::Context { context: context(), source: Box::new(e.into()) })
    }
}

/// `Err(FrontError::Invalid(message))` unless `cond`.
pub(crate) fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(FrontError::Invalid(message()))
    }
}

/// An [`FrontError::Io`] maker for `map_err`.
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> FrontError {
    let path = path.to_owned();
    move |source| FrontError::Io { action, path, source }
}
