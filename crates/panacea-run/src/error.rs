//! The run crate's error type: every variant names the file or folder it is about.

use std::path::PathBuf;

/// Errors of run folders, checkpoints and metrics files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done (`creating`, `writing`, ...).
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file of the run could not be read or written.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a hint.
        message: String,
    },
    /// The folder is not a run folder.
    #[error(
        "{path} is not a run folder (no config.yaml); hint: pass the folder printed at the start \
         of the run"
    )]
    NotARunFolder {
        /// The folder.
        path: PathBuf,
    },
    /// Another process writes to this run folder.
    #[error(
        "{path} is in use by another process ({holder}); hint: wait for it to finish or stop it \
         — two writers would interleave metrics and checkpoints"
    )]
    Locked {
        /// The run folder.
        path: PathBuf,
        /// What the lock file says about its holder (pid, start time), or that it says nothing.
        holder: String,
    },
    /// The run folder was written by another job (e.g. resuming a PPO run with train-dpo).
    #[error(
        "{path} is a {found} run, not a {expected} run; hint: resume it with `panacea {found} \
         --resume {path}`"
    )]
    WrongJob {
        /// The run folder.
        path: PathBuf,
        /// The job this process runs.
        expected: String,
        /// The job recorded in the run's manifest.
        found: String,
    },
    /// A data-parallel run was resumed with another number of processes.
    #[error(
        "{path} was trained with {saved} process(es) and cannot be resumed with {requested}: the \
         data order and per-rank shards depend on it; hint: launch {saved} process(es) (torchrun \
         --nproc-per-node, srun --ntasks), or start a new run"
    )]
    WorldSizeChanged {
        /// The run folder.
        path: PathBuf,
        /// The world size in its manifest.
        saved: usize,
        /// The world size of this process's launch.
        requested: usize,
    },
    /// A resume asked to change settings that cannot change mid-run.
    #[error("cannot resume {path} with these changes:\n{problems}")]
    ResumeChange {
        /// The run folder.
        path: PathBuf,
        /// One line per refused change, with a hint.
        problems: String,
    },
    /// The run has no complete checkpoint to resume from.
    #[error(
        "{path} has no complete checkpoint to resume from; hint: start a new run (a checkpoint \
         is written every `train.save_every` steps)"
    )]
    NoCheckpoint {
        /// The run folder.
        path: PathBuf,
    },
}

/// Results of this crate.
pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// `map_err` helper: an I/O error about `path`.
pub(crate) fn io(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> RunError {
    let path = path.to_owned();
    move |source| RunError::Io { what, path, source }
}
