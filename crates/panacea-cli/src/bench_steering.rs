//! `panacea bench-steering`: the steering evidence behind the README's status line, re-runnable
//! by anyone. It trains the same PPO config once per seed ([`panacea_rlhf::train_ppo`], whose
//! final evaluation is a [`panacea_eval::SteeringReport`]) and tabulates the reports: per seed,
//! each vertex check with its paired bootstrap interval and each objective's Spearman ρ.
//!
//! With `--jobs N` (N > 1) the seeds run as up to N child processes of this binary, each with
//! its own folder `<runs-dir>/seed-<S>`; the parent then reads their reports. Each seed is the
//! same run as in sequential mode (a run depends on its seed and config only), so the table is
//! the same; on a machine with more cores than one run uses it is ready sooner.

use std::path::{Path, PathBuf};
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
    /// Seeds trained at once, as child processes (give each a share of the cores with
    /// `--set threads=N`).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

/// Trains every seed in turn, then prints the table and writes it beside the runs. Exit 0
/// whatever the verdict (the table says it); 130 when stopped.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    anyhow::ensure!(args.jobs >= 1, "--jobs must be at least 1");
    if args.jobs > 1 && args.seeds.len() > 1 {
        return run_children(&args);
    }
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
        reports.push((seed, read_report(&t.run_dir.join(FINAL_EVAL_FILE))?));
    }
    write_table(&args.runs_dir, &reports)
}

/// The steering report in a run's final evaluation file.
fn read_report(path: &Path) -> Result<SteeringReport> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    serde_json::from_value(json["steering"].clone())
        .with_context(|| format!("{}: no steering report", path.display()))
}

/// `--jobs N`: every seed as `panacea bench-steering --seeds S --runs-dir <runs-dir>/seed-S`,
/// at most N at a time; then the reports of the finished runs, in seed order.
fn run_children(args: &Args) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("locating this binary to start the seeds")?;
    let seed_dir = |seed: u64| args.runs_dir.join(format!("seed-{seed}"));
    let mut pending: std::collections::VecDeque<u64> = args.seeds.iter().copied().collect();
    let mut running: Vec<(u64, std::process::Child)> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < args.jobs {
            let Some(seed) = pending.pop_front() else { break };
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("bench-steering").arg("--seeds").arg(seed.to_string());
            cmd.arg("--runs-dir").arg(seed_dir(seed));
            if let Some(config) = &args.config {
                cmd.arg("--config").arg(config);
            }
            for set in &args.set {
                cmd.arg("--set").arg(set);
            }
            // The children's own tables and progress would interleave; their runs keep logs.
            cmd.stdout(std::process::Stdio::null());
            running.push((seed, cmd.spawn().with_context(|| format!("starting seed {seed}"))?));
        }
        // Whichever seed ends first frees its slot (not the oldest: seeds differ in length).
        let (index, status) = loop {
            let mut ended = None;
            for (i, (seed, child)) in running.iter_mut().enumerate() {
                if let Some(status) =
                    child.try_wait().with_context(|| format!("waiting for seed {seed}"))?
                {
                    ended = Some((i, status));
                    break;
                }
            }
            match ended {
                Some(e) => break e,
                None => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        };
        let (seed, _) = running.remove(index);
        anyhow::ensure!(
            status.success(),
            "seed {seed} failed ({status}); its run is in {}",
            seed_dir(seed).display()
        );
    }
    let mut reports = Vec::new();
    for &seed in &args.seeds {
        let runs: Vec<PathBuf> = std::fs::read_dir(seed_dir(seed))
            .with_context(|| format!("listing {}", seed_dir(seed).display()))?
            .filter_map(|e| e.ok().map(|e| e.path().join(FINAL_EVAL_FILE)))
            .filter(|p| p.is_file())
            .collect();
        let [path] = runs.as_slice() else {
            anyhow::bail!(
                "{}: expected one finished run, found {} (hint: use an empty --runs-dir)",
                seed_dir(seed).display(),
                runs.len()
            );
        };
        reports.push((seed, read_report(path)?));
    }
    write_table(&args.runs_dir, &reports)
}

/// Prints the table of `reports` and writes it to `<runs_dir>/steering-summary.md`.
fn write_table(runs_dir: &Path, reports: &[(u64, SteeringReport)]) -> Result<ExitCode> {
    let table = panacea_eval::seeds_markdown(reports)?;
    let summary = runs_dir.join("steering-summary.md");
    panacea_run::write_atomic(&summary, table.as_bytes())?;
    println!("{table}\n(written to {})", summary.display());
    Ok(ExitCode::SUCCESS)
}
