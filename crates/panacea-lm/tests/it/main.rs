//! The integration tests of panacea-lm, one module per topic (one binary, linked once).

mod common;
mod fused;
mod generate;
mod gguf;
mod hf_parity;
mod model;
mod real;
mod safetensors;
mod tokenizer;
