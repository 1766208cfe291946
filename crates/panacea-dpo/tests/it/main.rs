//! The one integration-test binary of panacea-dpo (one `mod` per topic).

mod checkpointing;
mod common;
mod data_files;
mod data_parallel;
mod graph_step;
mod job;
mod memory;
mod shared_prefix;
mod trainer;
