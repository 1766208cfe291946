//! `panacea bench-steering`: the steering evidence behind the README's status line, re-runnable
//! by anyone. It trains the same PPO config once per seed ([`panacea_rlhf::train_ppo`], whose
//! final evaluation is a [`panacea_eval::SteeringReport`]) and tabulates the reports: per seed,
//! each vertex check with its paired bootstrap interval and each objective's Spearman ρ.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use panacea_eval::SteeringReport;
use panacea_rlhf::train::FINAL_EVAL_FILE;
use panacea_run::RunOptions;

use crate::observer::{install_stop_flag, ProgressObserver};

/// Flags of `panacea bench-steering`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config (default: the embedded configs/ppo-default.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    seeds: Vec<u64>,
    /// Override a config value for every seed, e.g. `--set train.steps=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Folder that receives one run folder per seed and `steering-summary.md`.
    #[arg(long, default_value = "runs/bench-steering")]
    runs_dir: PathBuf,
}

/// Trains every seed in turn, then prints the table and writes it beside the runs. Exit 0
/// whatever the verdict (the table says it); 130 when stopped.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let stop = install_stop_flag()?;
    let mut reports: Vec<(u64, SteeringReport)> = Vec::new();
    for &seed in &args.seeds {
        let mut set = args.set.clone();
        set.push(format!("seed={seed}"));
        let (cfg, stem) = crate::train_ppo::load(args.config.as_deref(), &set)?;
        let mut opts = RunOptions::new(&args.runs_dir).named(format!("{stem}-seed{seed}"));
        opts.stop = stop.clone();
        let t = panacea_rlhf::train_ppo(&cfg, &opts, &mut ProgressObserver::new())?;
        if t.interrupted {
            return Ok(ExitCode::from(130));
        }
        let path = t.run_dir.join(FINAL_EVAL_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let report: SteeringReport = serde_json::from_value(json["steering"].clone())
            .with_context(|| format!("{}: no steering report", path.display()))?;
        reports.push((seed, report));
    }
    let table = panacea_eval::seeds_markdown(&reports)?;
    let summary = args.runs_dir.join("steering-summary.md");
    panacea_run::write_atomic(&summary, table.as_bytes())?;
    println!("{table}\n(written to {})", summary.display());
    Ok(ExitCode::SUCCESS)
}
