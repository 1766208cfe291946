//! panacea-dpo: multi-objective DPO for Panacea (Zhong et al., "Panacea: Pareto Alignment via
//! Preference Adaptation for LLMs", arXiv 2402.02030, Eq. 6/7 applied to the DPO objective of
//! §3.1; method.md §3.3 and §7).
//!
//! - [`loss`]: [`loss::mo_dpo_loss`], the per-dimension sigmoid/IPO losses from per-dimension
//!   labels t ∈ {+1, −1, 0}, implicit-reward accuracy, and the one aggregation call.
//!
//! - [`data`]: tokenised pairs ([`data::EncodedPair`]), the concatenated [`data::PairBatch`]
//!   and the shuffling [`data::PairLoader`].
//! - [`ref_cache`]: [`ref_cache::RefLogpCache`], reference log-probs on disk, keyed by data,
//!   base model and settings.
//!
//! - [`shared_prefix`]: sequence log-probs with each pair's common prefix (the prompt) run
//!   once, in one packed row per pair.
//! - [`trainer`]: [`trainer::DpoTrainer::step`], one optimiser step (no loop, no I/O).
//! - [`config`]: [`config::DpoSettings`] and the run config [`config::DpoRunConfig`].
//!
//! Tensors in, tensors out: nothing here prints or reads the environment.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod ref_cache;
pub mod shared_prefix;
pub mod trainer;

pub use config::{DpoRunConfig, DpoSettings};
pub use data::{EncodedPair, PairBatch, PairLoader, SeqLogp};
pub use error::DpoError;
pub use loss::{mo_dpo_loss, DpoLoss, DpoLossOutput};
pub use panacea_core::preference::StepPreference;
pub use ref_cache::{RefCacheKey, RefLogpCache};
pub use shared_prefix::{shared_prefix_logps, PackedLm};
pub use trainer::{DpoEvalMetrics, DpoStepMetrics, DpoTrainer};
