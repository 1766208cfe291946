//! The typed error of panacea-rlhf. Variants carry what a caller needs to act on the failure.

use std::path::PathBuf;

/// Errors raised by panacea-rlhf.
#[derive(Debug, thiserror::Error)]
pub enum RlhfError {
    /// An error from panacea-core (config, preference, shape, device, libtorch).
    #[error(transparent)]
    Core(#[from] panacea_core::CoreError),
    /// A config could not be parsed or validated.
    #[error(transparent)]
    Config(#[from] panacea_core::config::ConfigError),
    /// A loss, reward or KL value was NaN or infinite; training stops before anything is saved.
    #[error(
        "step {step}: {what} is not finite ({value}); the run stopped before writing a \
         checkpoint. hint: lower the learning rate or kl_coef, or enable score normalisation"
    )]
    NonFinite {
        /// The training step (1-based) at which it happened.
        step: u64,
        /// Which quantity (`policy loss`, `kl`, `score[helpful]`, ...).
        what: String,
        /// The offending value.
        value: f64,
    },
    /// A tensor or a batch had an unexpected shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The expected shape (-1 for any size).
        expected: Vec<i64>,
        /// The shape that was given.
        got: Vec<i64>,
    },
    /// Inputs were inconsistent (wrong number of objectives, empty batch, ...).
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being checked.
        what: String,
        /// Why it was rejected, with a hint where one helps.
        reason: String,
    },
    /// A checkpoint or state file could not be read or written.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Checks that `value` is finite, or returns [`RlhfError::NonFinite`] naming `what` and `step`.
pub fn ensure_finite(step: u64, what: &str, value: f64) -> Result<f64, RlhfError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(RlhfError::NonFinite { step, what: what.to_owned(), value })
    }
}
