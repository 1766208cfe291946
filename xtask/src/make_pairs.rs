//! `cargo xtask make-pairs [flags]`: regenerates the bundled preference-pair dataset
//! (data/pairs/) with panacea-data's `make_pairs` example: SmolLM2 samples, gold scores,
//! per-dimension pairs. Fetches what it needs first (libtorch, SmolLM2 unless `--model` is
//! given, all-MiniLM-L6-v2), then runs the example in the dev profile (libtorch does the work;
//! a release build of the whole stack would take longer than the run) with the flags passed
//! through. With no flags it reproduces the committed data/pairs/ byte for byte on the CPU.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{fetch, fetch_scorers, libtorch, run};

/// Runs the example; `args` go to it unchanged.
pub(crate) fn make_pairs(args: &[String]) -> Result<ExitCode> {
    let lt = libtorch::ensure()?;
    if !args.iter().any(|a| a == "--model" || a.starts_with("--model=")) {
        fetch::ensure_model("smollm2-135m")?;
    }
    fetch_scorers::ensure()?;
    let status = run::cargo(&lt)
        .args(["run", "--quiet", "-p", "panacea-data", "--example", "make_pairs", "--"])
        .args(args)
        .status()
        .context("running the make_pairs example")?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}
