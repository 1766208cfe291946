//! The typed error of panacea-core. Variants carry what a caller needs to act on the failure.

use std::path::PathBuf;

/// Errors raised by panacea-core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A configuration file or override could not be read, parsed or validated.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A checkpoint could not be read or written.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What went wrong, with a hint where one helps.
        message: String,
    },
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
    /// A preference vector was invalid.
    #[error("invalid preference vector {values:?}: {reason}")]
    Preference {
        /// The offending values.
        values: Vec<f64>,
        /// Why it was rejected.
        reason: String,
    },
    /// A device string or device was unusable.
    #[error("device {device:?}: {reason}")]
    Device {
        /// The device as the user wrote it.
        device: String,
        /// Why it cannot be used, with a hint.
        reason: String,
    },
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The optimiser cannot do what was asked in its current state.
    #[error("optimiser: {0}")]
    Optimizer(String),
}
