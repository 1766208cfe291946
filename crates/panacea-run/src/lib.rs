//! `panacea-run`: the parts of a training job that are not tensors — run folders, manifests,
//! metrics (JSON lines and TensorBoard), atomic checkpoints, one writer per run, resume rules,
//! progress observers and stop flags. No libtorch: a job in any crate (PPO, DPO, score models,
//! your own) uses it the same way, and tools that only read runs need nothing heavy.
//!
//! ```no_run
//! use panacea_run::{Event, Manifest, Observer, RunDir, RunOptions, Silent};
//!
//! # fn main() -> Result<(), panacea_run::RunError> {
//! let opts = RunOptions::new("runs").named("my-job");
//! let mut run = RunDir::create(&opts.runs_dir, "my-job", "seed: 1\n", &opts.command)?;
//! run.write_manifest(&Manifest::now("my-job", "cpu", 1))?;
//! let mut observer = Silent;
//! for step in 1..=3u64 {
//!     // ... one training step ...
//!     run.log_metrics(&serde_json::json!({"step": step, "loss": 0.5}))?;
//!     observer.on_event(&Event::Step { step, summary: "loss 0.5" });
//!     let ckpt = run.save_checkpoint(step, &step, |_dir| Ok::<(), panacea_run::RunError>(()))?;
//!     observer.on_event(&Event::Checkpoint { step, dir: &ckpt.dir });
//!     if opts.stop.is_requested() {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Folder layout (`<runs>/<yyyy-mm-dd-HHMM>-<name>/`):
//!
//! | file | written |
//! |---|---|
//! | `config.yaml` | at creation; rewritten when a resume changes a resumable key |
//! | `command.txt`, `manifest.json`, `.gitignore` | at creation |
//! | `metrics.jsonl`, `events.out.tfevents.*` | one row / event per logged step |
//! | `checkpoints/step-NNNNNN/` | staged in `.step-NNNNNN.tmp/`, loop state last, renamed whole |
//! | `resume.jsonl` | one line per resume, with the config changes |
//! | `run.lock` | the advisory lock of the process writing the folder |

pub mod error;
pub mod fs;
pub mod lock;
pub mod observer;
pub mod run_dir;
pub mod tensorboard;

pub use error::{Result, RunError};
pub use fs::{
    git_hash, libtorch_version, now_secs, sha256_file, sha256_hex, utc_stamp, write_atomic,
};
pub use lock::RunLock;
pub use observer::{human_bytes, Event, MemoryEstimate, Observer, Recorder, Silent, StopFlag};
pub use run_dir::{
    config_changes, latest_checkpoint, latest_run, Checkpoint, ConfigChange, Manifest, RunDir,
    RunOptions, Trained, CHECKPOINTS_DIR, CONFIG_FILE, LOOP_STATE_FILE, MANIFEST_FILE,
    METRICS_FILE, RESUMABLE_KEYS, RESUME_LOG_FILE,
};
