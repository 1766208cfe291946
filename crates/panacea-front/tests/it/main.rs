//! panacea-front's integration tests (one binary). Tests that need the SmolLM2 tokenizer (the
//! tiny-random base uses it) skip with a message when it is not in the model cache.

mod baselines;
mod crn;
mod dpo_report;
mod objectives;
mod pipeline;
mod report;
mod runs;
mod scorers;
mod support;
mod three_objectives;
