//! panacea-rlhf: reward and cost score models and preference-conditioned multi-objective PPO for
//! Panacea (Zhong et al., arXiv 2402.02030, Eq. 16; safe-rlhf's PPO and PPO-Lagrangian).
//!
//! A whole job is one call: a config (YAML, parsed strictly) and where the run folder goes.
//!
//! ```no_run
//! use panacea_rlhf::{train_ppo, TrainPpoConfig};
//! use panacea_run::{RunOptions, Silent};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg: TrainPpoConfig = panacea_core::config::load_config("configs/tiny/ppo.yaml".as_ref(), &[])?;
//! let trained = train_ppo(&cfg, &RunOptions::new("runs"), &mut Silent)?;
//! println!("adapter checkpoint: {:?}", trained.checkpoint);
//! # Ok(()) }
//! ```
//!
//! [`train_score_models`] does the same for learned reward and cost models; `--resume` is
//! [`RunOptions::resuming`](panacea_run::RunOptions::resuming), Ctrl-C is its `stop` flag, and
//! progress arrives through the [`Observer`](panacea_run::Observer) passed in.
//!
//! - [`train`]: the PPO job ([`train_ppo`]; [`train_ppo_data_parallel`] as one rank of a
//!   torchrun/srun group); [`train_rm`]: the score-model job.
//! - [`policy`]: what PPO needs of a model ([`PpoPolicy`], implemented by `Llama`).
//! - [`rewards`]: per-token KL shaping and the running per-objective score normaliser.
//! - [`gae`]: per-objective generalised advantage estimation.
//! - [`loss`]: clipped policy and value losses.
//! - [`lagrange`]: the optional PPO-Lagrangian multiplier on a cost dimension.
//! - [`score`]: reward and cost models (backbone + scalar head) and their losses.
//! - [`config`]: the settings of one PPO step and of the PPO and score-model jobs.
//! - [`experience`]: the rollout record, carrying the preference it was generated with.
//! - [`critic`]: the λ-conditioned multi-head critic.
//! - [`rollout`]: generation and the reward sources (learned models, built-in scorers), built
//!   from panacea-data's `ScorerSpec` by [`rollout::reward_source`].
//! - [`trainer`]: one PPO step, `PpoTrainer::step` (and `step_data_parallel`, one rank's share
//!   of a step on the global batch).
//! - [`testing`]: toy objectives and a tiny policy for tests and smoke runs.
//!
//! Nothing here prints: progress and messages go to the caller's observer.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod critic;
pub mod error;
pub mod experience;
pub mod gae;
pub mod lagrange;
pub mod loss;
pub mod policy;
pub mod rewards;
pub mod rollout;
pub mod score;
pub mod testing;
pub mod train;
pub mod train_rm;
pub mod trainer;

pub use config::{PpoConfig, TrainPpoConfig, TrainRmConfig};
pub use error::RlhfError;
pub use experience::{Experience, GlobalBatch, PromptBatch};
pub use policy::PpoPolicy;
pub use score::LearnedScoreModel;
pub use train::{train_ppo, train_ppo_data_parallel};
pub use train_rm::train_score_models;
pub use trainer::{PpoParts, PpoStepMetrics, PpoTrainer};
