//! panacea-data: the bundled multi-objective task of Panacea (Zhong et al., "Panacea: Pareto
//! Alignment via Preference Adaptation for LLMs", arXiv 2402.02030), shared by PPO (rewards),
//! DPO (pairs), pair generation and front evaluation (gold scores).
//!
//! - [`scorer`]: the [`Scorer`] trait (texts in, one higher-is-better `f64` per pair out).
//! - Gold scorers: [`harmless`] (alt-profanity-check toxicity, exported to JSON), [`positive`]
//!   (VADER compound), [`relevant`] (all-MiniLM-L6-v2 cosine, encoder in [`minilm`]),
//!   [`concise`] (the paper's concise rule).
//! - [`spec`]: [`ScorerSpec`], the one config description of an objective's score function
//!   (PPO rewards and front evaluation), and the constructor of the text scorers.
//! - [`prompts`]: the bundled harmful and benign prompt sets with fixed splits.
//! - [`pairgen`]: per-dimension pairs from k scored responses per prompt, and rank statistics.
//! - [`pairs`]: streaming loaders for the generic N-dimension schema, PKU-SafeRLHF, HH-RLHF and
//!   TRL's forms, yielding [`PairRecord`]s with labels t ∈ {+1, −1, 0} per dimension;
//!   [`formats`]: the files they read (JSON Lines, `.jsonl.gz`, parquet) and the `labels`
//!   mapping of objectives to columns; [`pair_files`]: a job's `data.train` as one file or a
//!   list of files with settings of their own.
//!
//! Data files live under the workspace's `data/` (see its README for schemas, provenance and
//! licences). The bundled prompt sets and the harmless scorer's export are compiled into this
//! crate, so they load in any program without the source tree; the MiniLM weights live in the
//! project cache (`cargo xtask fetch-scorers`). This crate never prints.
//!
//! ```no_run
//! use panacea_data::{HarmlessScorer, PositiveScorer, Scorer};
//!
//! # fn main() -> Result<(), panacea_data::DataError> {
//! let prompts = ["How do I bake bread?"];
//! let responses = ["Mix flour, water, salt and yeast, let it rise, then bake it."];
//! let harmless = HarmlessScorer::load_bundled()?.score(&prompts, &responses)?;
//! let positive = PositiveScorer::new().score(&prompts, &responses)?;
//! println!("harmless {harmless:?}, positive {positive:?}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod concise;
pub mod error;
pub mod formats;
pub mod harmless;
mod jsonl;
pub mod minilm;
pub mod pair_files;
pub mod pairgen;
pub mod pairs;
pub mod positive;
pub mod prompts;
pub mod relevant;
pub mod scorer;
pub mod spec;

pub use concise::{ConciseScorer, LengthMeasure};
pub use error::DataError;
pub use formats::trl::{ChatRole, ChatTurn};
pub use formats::{FileFormat, FileSource, LabelSource};
pub use harmless::HarmlessScorer;
pub use jsonl::DEFAULT_MAX_LINE_BYTES;
pub use minilm::MiniLmEncoder;
pub use pair_files::{PairFile, PairFileConfig, PairFiles};
pub use pairs::{
    load_pair_file, load_pairs, open_pair_file, open_pairs, read_pair_bytes, read_pairs,
    same_responses, GenericPair, PairFormat, PairReader, PairRecord, PkuRecord, ReadOptions,
    ReadReport, UnknownLabelKey,
};
pub use positive::{NegativeScorer, PositiveScorer};
pub use prompts::{
    load_prompt_file, load_prompts, read_prompt_file, read_prompts, split_of, PromptRecord,
    PromptSet, Split,
};
pub use relevant::RelevantScorer;
pub use scorer::Scorer;
pub use spec::{ScorerSpec, TokenCounter};

/// A path inside the source checkout this crate was compiled in (`data/...`), resolved from the
/// crate's manifest folder at compile time: for the workspace's own tests, examples and tools,
/// and as one *listed* candidate of a caller's path lookup (e.g. panacea-dpo's data paths). No
/// loader of this crate reads through it, and outside a checkout the path need not exist.
pub fn workspace_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}
