//! The integration tests of panacea-serve, one module per topic (one binary, linked once).

mod bad_input;
mod batching;
mod chat;
mod common;
mod protocol;
mod real;
