//! panacea-rlhf: reward and cost score models and preference-conditioned multi-objective PPO for
//! Panacea (Zhong et al., arXiv 2402.02030, Eq. 16; safe-rlhf's PPO and PPO-Lagrangian).
//!
//! - [`rewards`]: per-token KL shaping and the running per-objective score normaliser.
//! - [`gae`]: per-objective generalised advantage estimation.
//! - [`loss`]: clipped policy and value losses.
//! - [`lagrange`]: the optional PPO-Lagrangian multiplier on a cost dimension.
//! - [`score`]: reward and cost models (backbone + scalar head) and their losses.
//! - [`config`]: the settings of one PPO step.
//! - [`experience`]: the rollout record, carrying the preference it was generated with.
//! - [`critic`]: the λ-conditioned multi-head critic.
//! - [`rollout`]: generation and the reward sources (learned models, built-in scorers).
//! - [`trainer`]: one PPO step, `PpoTrainer::step`.
//! - [`testing`]: toy objectives and a tiny policy for tests and smoke runs.
//!
//! Tensors in, tensors out: nothing here reads files other than configs and checkpoints, and
//! nothing prints.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod critic;
pub mod error;
pub mod experience;
pub mod gae;
pub mod lagrange;
pub mod loss;
pub mod rewards;
pub mod rollout;
pub mod score;
pub mod testing;
pub mod trainer;

pub use config::PpoConfig;
pub use error::RlhfError;
pub use experience::{Experience, PromptBatch};
pub use trainer::{PpoParts, PpoStepMetrics, PpoTrainer};
