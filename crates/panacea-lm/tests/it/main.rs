//! The integration tests of panacea-lm, one module per topic (one binary, linked once).

mod chat_template;
mod checkpointing;
mod common;
mod config;
mod fused;
mod generate;
mod gguf;
mod grouped;
mod hf_parity;
mod model;
mod random_model;
mod real;
mod safetensors;
mod static_decode;
mod tokenizer;
