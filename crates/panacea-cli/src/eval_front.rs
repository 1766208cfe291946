//! `panacea eval-front`: the flags of a front evaluation, handed to panacea-front's whole job
//! (`run_front_job`: plan, baselines, evaluation, report) with a progress observer.
//!
//! The Panacea run (the `--latest-*-run`, else the run around the first `--adapter`) decides
//! the objectives and their scorers unless `--set objectives=[...]` chooses them; `--compare rs,dps` trains its
//! baselines with its own trainer (Ctrl-C stops a baseline member after its step, with a
//! checkpoint; run the comparison again to continue). Adapters inside run folders are labelled
//! `panacea {PPO|DPO} {LS|Tche} (<run>)`, so several runs share one report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use panacea_core::device::{DType, DeviceChoice};
use panacea_front::{Baseline, FrontConfig, FrontError, FrontJob, JobTrainer, RunJob};

use crate::observer::{install_stop_flag, ProgressObserver};

/// Flags of `panacea eval-front`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The evaluation config (YAML).
    #[arg(long, default_value = "configs/eval-front.yaml")]
    pub(crate) config: PathBuf,
    /// Override a config value, e.g. `--set prompts.count=8` (repeatable).
    #[arg(long = "set")]
    pub(crate) overrides: Vec<String>,
    /// Base model: a short name (smollm2-135m), a GGUF file, a Hugging Face model folder or
    /// tiny-random (overrides the config's `model`).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    pub(crate) device: Option<DeviceChoice>,
    /// Weight dtype of the base model, f32 or bf16 (overrides the config's `dtype`); it must
    /// match the dtype the adapters were trained with (their base hash includes it).
    #[arg(long)]
    pub(crate) dtype: Option<DType>,
    /// A native Panacea adapter folder to evaluate on the grid (repeat to compare methods).
    #[arg(long = "adapter")]
    pub(crate) adapters: Vec<PathBuf>,
    /// The table name of the matching --adapter, in the same order (default: the folder name).
    #[arg(long = "label")]
    pub(crate) labels: Vec<String>,
    /// A Rewarded Soups baseline: comma-separated adapter folders, one per objective in λ
    /// order, each trained at λ = e_i; ΔW is interpolated (repeat for several soups).
    #[arg(long = "soup")]
    pub(crate) soups: Vec<String>,
    /// The table name of the matching --soup (default: rewarded-soups).
    #[arg(long = "soup-label")]
    pub(crate) soup_labels: Vec<String>,
    /// Evaluate the newest adapter checkpoint of the latest PPO run under this folder.
    #[arg(long, value_name = "RUNS_DIR", conflicts_with = "latest_dpo_run")]
    pub(crate) latest_ppo_run: Option<PathBuf>,
    /// Evaluate the newest adapter checkpoint of the latest DPO run under this folder.
    #[arg(long, value_name = "RUNS_DIR")]
    pub(crate) latest_dpo_run: Option<PathBuf>,
    /// Baselines to train (or reuse) with the Panacea run's own trainer (PPO or DPO) and
    /// config at equal total compute and add to the table: `rs` (Rewarded Soups), `dps`
    /// (discrete policy set). The Panacea run is the --latest-*-run, else the run around the
    /// first --adapter.
    #[arg(long, value_delimiter = ',')]
    pub(crate) compare: Vec<Baseline>,
    /// Total PPO or DPO steps for each baseline family (default: the Panacea run's
    /// `train.steps`).
    #[arg(long)]
    pub(crate) baseline_steps: Option<u64>,
    /// The run folder (default: runs/<yyyy-mm-dd-HHMM>-eval-front).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl Args {
    /// The job these flags describe.
    pub(crate) fn job(&self) -> anyhow::Result<FrontJob> {
        let mut config: FrontConfig =
            panacea_core::config::load_config(&self.config, &self.overrides)
                .with_context(|| format!("loading config {}", self.config.display()))?;
        if let Some(model) = &self.model {
            config.model = model.clone();
        }
        if let Some(d) = self.device {
            config.device = d;
        }
        if let Some(dtype) = self.dtype {
            config.dtype = dtype;
        }
        let objectives_chosen = self.overrides.iter().any(|o| {
            let key = o.split('=').next().unwrap_or_default().trim();
            key == "objectives" || key.starts_with("objectives.")
        });
        let latest = match (&self.latest_ppo_run, &self.latest_dpo_run) {
            (Some(runs), _) => Some((runs.clone(), RunJob::Ppo)),
            (None, Some(runs)) => Some((runs.clone(), RunJob::Dpo)),
            (None, None) => None,
        };
        Ok(FrontJob {
            config,
            objectives_chosen,
            adapters: self.adapters.clone(),
            labels: self.labels.clone(),
            soups: self
                .soups
                .iter()
                .map(|s| s.split(',').map(|p| PathBuf::from(p.trim())).collect())
                .collect(),
            soup_labels: self.soup_labels.clone(),
            latest,
            compare: self.compare.clone(),
            baseline_steps: self.baseline_steps,
        })
    }
}

/// `panacea eval-front`.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let job = args.job()?;
    let out = args.out.clone().unwrap_or_else(|| panacea_front::default_out_dir(Path::new("runs")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if args.out.is_none() {
        std::fs::write(out.join(".gitignore"), "*\n")?;
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut trainer = JobTrainer { device: args.device, stop: install_stop_flag()? };
    let mut observer = ProgressObserver::new();
    let w = match panacea_front::run_front_job(&job, &out, &command, &mut trainer, &mut observer) {
        Ok(w) => w,
        Err(e @ FrontError::Interrupted { .. }) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", w.markdown);
    println!(
        "reference point {} (auto); report in {}",
        panacea_front::report::fmt_vec(&w.report.reference_point),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
