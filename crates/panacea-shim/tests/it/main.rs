//! panacea-shim's integration tests: one binary, one module per topic.

mod common;
mod dist;
mod graph;
mod memory;
mod nccl;
