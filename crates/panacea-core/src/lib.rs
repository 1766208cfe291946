//! panacea-core: the pieces of Panacea (Zhong et al., "Panacea: Pareto Alignment via Preference
//! Adaptation for LLMs", arXiv 2402.02030) that do not depend on a particular language model.
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod adapter;
pub mod config;
pub mod device;
pub mod error;

pub use error::CoreError;
