//! panacea-serve: steering a Panacea adapter at inference time.
//!
//! One SVD-LoRA adapter serves every trade-off: each request carries its own preference λ
//! (the extra `preference` field of an OpenAI request), and requests with different λ share one
//! forward pass, each row with its own λ (`pref` [B, K]).
//!
//! - [`engine`]: the engine thread that owns the model and batches requests continuously
//!   (rows join and leave between decode steps, [`panacea_lm::SlotBatch`]).
//! - [`server`]: the OpenAI-compatible HTTP server (`/v1/chat/completions`, `/v1/completions`,
//!   `/v1/models`, `/health`, the page at `/`), with limits and graceful shutdown.
//! - [`openai`]: request fields and response objects.
//! - [`preference`]: λ from a list or from weights keyed by objective name.
//! - [`report`]: the front of an eval-front report, shown on the page (`--report DIR`).
//! - [`chat`]: the session behind `panacea chat` (history, `/pref`, `/sweep`, `/save`),
//!   testable without a terminal.
//!
//! ```no_run
//! use panacea_serve::{RunningServer, ServeOptions, ServedModel};
//!
//! # fn main() -> Result<(), panacea_serve::ServeError> {
//! let served = ServedModel::load("smollm2-135m", None, tch::Device::Cpu, tch::Kind::Float)?;
//! let server = RunningServer::start("127.0.0.1:8000".parse().unwrap(), served, ServeOptions::default())?;
//! // ... POST http://127.0.0.1:8000/v1/chat/completions ...
//! server.shutdown()?; // drains the requests in flight
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod chat;
pub mod engine;
pub mod error;
pub mod openai;
mod page;
pub mod preference;
pub mod report;
pub mod server;

pub use engine::{Engine, Event, FinishReason, GenParams, Limits, ServedAdapter, ServedModel};
pub use error::{ApiError, ServeError};
pub use server::{serve, RunningServer, ServeOptions, ShutdownHandle};
