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
    /// A step produced a NaN or an infinity; nothing of that step was applied to the saved
    /// state (the step does not count and no checkpoint of it is written).
    #[error(
        "step {step}: the {quantity} is {value} (not finite); training stopped and nothing of \
         this step was saved; hint: {hint}"
    )]
    NonFinite {
        /// The 1-based step that failed.
        step: u64,
        /// What was not finite (`loss`, `gradient norm`, `adapter parameter ... after the
        /// update`).
        quantity: String,
        /// The offending value.
        value: f64,
        /// What usually helps.
        hint: String,
    },
    /// The trainer's saved state (a checkpoint's `dpo_state.json`) could not be used.
    #[error("trainer state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a hint.
        message: String,
    },
    /// The base model could not be loaded.
    #[error("loading model {name}: {source}")]
    Model {
        /// The config's `model`.
        name: String,
        /// Why.
        source: panacea_lm::LmError,
    },
    /// A relative data path was found nowhere it was looked for.
    #[error(
        "data file {path} not found; tried {}; hint: give an absolute path or one relative to \
         the config file",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DataPath {
        /// The path as the config gives it.
        path: PathBuf,
        /// Every place it was looked for, in order.
        tried: Vec<PathBuf>,
    },
    /// A pair file could not be read.
    #[error("reading pairs {path}: {source}")]
    Pairs {
        /// The file.
        path: PathBuf,
        /// Why (with file, line and field).
        source: panacea_data::DataError,
    },
    /// A file of the run could not be read or hashed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The run folder (creating, resuming, metrics, checkpoints).
    #[error(transparent)]
    Run(#[from] panacea_run::RunError),
    /// Data-parallel training: joining the process group or a collective failed (a rank
    /// died, the timeout passed, or the launcher's variables are wrong).
    #[error("data parallel: {0}")]
    Dist(#[from] panacea_shim::dist::DistError),
    /// A call into the C++ shim failed: capturing or replaying the graphed step, or reading
    /// the device's memory statistics ([`crate::memory_probe`]). The error names the call.
    #[error("{0}")]
    Shim(#[from] panacea_shim::ShimError),
    /// The accuracy hypervolume of an evaluation.
    #[error("hypervolume of the evaluation front: {0}")]
    Eval(#[from] panacea_eval::EvalError),
}

impl From<panacea_core::config::ConfigError> for DpoError {
    fn from(e: panacea_core::config::ConfigError) -> Self {
        Self::Core(e.into())
    }
}

impl DpoError {
    pub(crate) fn shape(what: &str, expected: Vec<i64>, got: Vec<i64>) -> Self {
        Self::Shape { what: what.to_owned(), expected, got }
    }

    /// The error of a non-finite `quantity` at `step`, with a hint from the settings.
    pub(crate) fn non_finite(
        step: u64,
        quantity: &str,
        value: f64,
        settings: &crate::config::DpoTrainerConfig,
    ) -> Self {
        let hint = format!(
            "the updates diverged (the config's numbers are finite, validation checks them): \
             lower `optim.lr` (now {:?}) or `optim.max_grad_norm` (now {:?})",
            settings.optim.lr, settings.optim.max_grad_norm
        );
        Self::NonFinite { step, quantity: quantity.to_owned(), value, hint }
    }
}
