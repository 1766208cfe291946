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
    /// A loss, gradient norm, score, KL value or parameter was NaN or infinite; training stops
    /// before anything of that step is saved.
    #[error(
        "step {step}: {what} is {value}, not finite; the run stopped without saving this step. \
         {}",
        non_finite_hint(what)
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
    /// A run folder, manifest, metrics file or checkpoint could not be written or read.
    #[error(transparent)]
    Run(#[from] panacea_run::RunError),
    /// The model or tokenizer could not be loaded or run.
    #[error(transparent)]
    Lm(#[from] panacea_lm::LmError),
    /// Prompt or pair data, or a scorer, could not be loaded or run.
    #[error(transparent)]
    Data(#[from] panacea_data::DataError),
    /// A front metric could not be computed.
    #[error("hypervolume: {0}")]
    Front(#[from] panacea_eval::EvalError),
    /// Data-parallel training: joining the process group or a collective failed (a rank
    /// died, the timeout passed, or the launcher's variables are wrong).
    #[error("data parallel: {0}")]
    Dist(#[from] panacea_shim::dist::DistError),
}

/// What to try for a non-finite `what`: configs reject non-finite numbers, so a NaN comes from
/// the run itself — a diverging update, a scorer, or a parameter that an update broke.
fn non_finite_hint(what: &str) -> &'static str {
    if what.starts_with("score[") {
        "hint: the objective's scorer returned a non-finite score; check its source (a learned \
         score model trained to NaN, a rule on empty responses)"
    } else if what.contains("parameter") {
        "hint: an update broke the weights; resume from the last checkpoint with a lower \
         `optim.lr` / `optim.critic_lr`"
    } else {
        "hint: the update diverged; lower `optim.lr` (or `optim.critic_lr` for the value \
         loss) or `ppo.kl_coef`, or the objectives' `scale`"
    }
}

/// Checks that `value` is finite, or returns [`RlhfError::NonFinite`] naming `what` and `step`.
pub fn ensure_finite(step: u64, what: &str, value: f64) -> Result<f64, RlhfError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(RlhfError::NonFinite { step, what: what.to_owned(), value })
    }
}
