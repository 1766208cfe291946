//! panacea-dpo: multi-objective DPO for Panacea (Zhong et al., "Panacea: Pareto Alignment via
//! Preference Adaptation for LLMs", arXiv 2402.02030): the DPO objective per preference
//! dimension, aggregated under the preference λ by linear scalarisation or Tchebycheff, trained
//! into one preference-conditioned SVD-LoRA adapter (docs/method.md, "Multi-objective DPO").
//!
//! A whole run is one call, [`train_dpo`]:
//!
//! ```no_run
//! use panacea_dpo::{train_dpo, DpoRunConfig};
//! use panacea_run::{RunOptions, Silent};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg: DpoRunConfig = panacea_core::config::load_config(
//!     std::path::Path::new("configs/tiny/dpo.yaml"),
//!     &["model=tiny-random".to_owned(), "train.steps=3".to_owned()],
//! )?;
//! cfg.config_dir = Some("configs/tiny".into());
//! let trained = train_dpo(&cfg, &RunOptions::new("runs").named("my-dpo"), &mut Silent)?;
//! println!("adapter: {:?}", trained.checkpoint);
//! // Later: continue it for more steps from its newest checkpoint.
//! cfg.train.steps = 6;
//! train_dpo(&cfg, &RunOptions::new("runs").resuming(&trained.run_dir), &mut Silent)?;
//! # Ok(()) }
//! ```
//!
//! - [`job`]: [`train_dpo`], the run top to bottom (data, reference caches, run folder, loop,
//!   evaluation, checkpoints, resume), and [`load_base`] / [`resolve_data_path`].
//! - [`loss`]: [`loss::mo_dpo_loss`], the per-dimension sigmoid/IPO losses from per-dimension
//!   labels t ∈ {+1, −1, 0}, implicit-reward accuracy, and the one aggregation call.
//! - [`data`]: tokenised pairs ([`data::EncodedPair`]), the concatenated [`data::PairBatch`]
//!   and the shuffling [`data::PairLoader`].
//! - [`ref_cache`]: [`ref_cache::RefLogpCache`], reference log-probs on disk, keyed by data,
//!   base model and settings.
//! - [`shared_prefix`]: sequence log-probs with each pair's common prefix (the prompt) run
//!   once, in one packed row per pair.
//! - [`static_step`]: the pair batch padded to bucketed shapes, for the step under CUDA graphs
//!   ([`trainer::DpoTrainer::step_graphed`], `train.cuda_graphs`).
//! - [`trainer`]: [`trainer::DpoTrainer::step`], one optimiser step (no loop, no I/O besides
//!   [`trainer::DpoTrainer::save_state`]).
//! - [`memory_probe`]: [`memory_probe::probe_dpo_step`], a few real steps on a random model of
//!   a config.json's shape, their measured peak memory against the job's estimate.
//! - [`config`]: the run config [`config::DpoRunConfig`] and the trainer's
//!   [`config::DpoTrainerConfig`].
//!
//! Nothing here prints or reads the environment: progress goes through a
//! [`panacea_run::Observer`].
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod data;
pub mod error;
pub mod job;
pub mod loss;
pub mod memory_probe;
pub mod pair_files;
pub mod ref_cache;
pub mod shared_prefix;
pub mod static_step;
pub mod trainer;

pub use config::{DpoRunConfig, DpoSettings, DpoTrainerConfig, OptimConfig};
pub use data::{EncodedPair, PairBatch, PairLoader, SeqLogp};
pub use error::DpoError;
pub use job::{
    load_base, pair_memory_estimate, pair_step_memory_plan, resolve_data_path, step_memory_plan,
    train_dpo, train_dpo_data_parallel, JOB,
};
pub use loss::{mo_dpo_loss, DpoLoss, DpoLossOutput};
pub use memory_probe::{probe_dpo_step, ProbeReport, ProbeStep, StepProbe};
pub use pair_files::{read_pair_files, PairFile, PairFileConfig, PairFiles};
pub use panacea_core::preference::StepPreference;
pub use ref_cache::{RefCacheKey, RefLogpCache};
pub use shared_prefix::{shared_prefix_logps, shared_prefix_logps_for_training, PackedLm};
pub use trainer::{DpoEvalMetrics, DpoStepMetrics, DpoTrainer};
