//! `panacea train-ppo`: preference-conditioned multi-objective PPO. The job is
//! [`panacea_rlhf::train_ppo`]; this file maps flags to its config and run options, shows
//! progress and turns Ctrl-C into its stop flag. Started by torchrun or srun, each process is
//! one rank of a data-parallel run (`panacea_rlhf::train`, "Data parallel").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use panacea_core::config::parse_config;
use panacea_core::device::{DType, DeviceChoice};
use panacea_rlhf::TrainPpoConfig;
use panacea_run::{RunOptions, CONFIG_FILE};

use crate::observer::{as_rank, install_stop_flag};

/// The embedded default: SmolLM2-135M, the bundled benign prompts, two built-in objectives,
/// sized for a 2-core CPU.
const DEFAULT_CONFIG: &str = include_str!("../../../configs/ppo-default.yaml");

/// Flags of `panacea train-ppo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config (default: the embedded configs/ppo-default.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.steps=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Base model: a short name (smollm2-135m), a GGUF file, a Hugging Face model folder or
    /// tiny-random (overrides the config's `model`).
    #[arg(long)]
    model: Option<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`); adapters,
    /// critic, heads and optimiser state stay f32.
    #[arg(long)]
    dtype: Option<DType>,
    /// Skip malformed lines of the prompt file (counted and reported, the first few by file,
    /// line and field) instead of stopping at the first one (sets `data.skip_invalid`).
    #[arg(long)]
    skip_invalid: bool,
    /// Continue the run in this folder from its newest checkpoint (its config.yaml is used;
    /// `--set` may still change the steps and the log/save/eval cadence, e.g.
    /// `--set train.steps=40` to train longer).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Folder that receives the run folder.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// The run folder's name after its date (default: the config file's stem).
    #[arg(long)]
    name: Option<String>,
}

/// `panacea train-ppo`: the whole job with a progress bar and Ctrl-C (exit 130 when stopped).
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let (cfg, stem) = config(&args)?;
    let mut opts = RunOptions::new(&args.runs_dir);
    opts.name = Some(args.name.clone().unwrap_or(stem));
    opts.resume = args.resume.clone();
    opts.stop = install_stop_flag()?;
    let t = as_rank(cfg.device, |observer, group| {
        Ok(panacea_rlhf::train::train_ppo_data_parallel(&cfg, &opts, observer, group)?)
    })?;
    Ok(if t.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// A new run's config from `path` (or the embedded default) with `set` applied, and the run
/// name it suggests: the config file's stem.
pub(crate) fn load(path: Option<&Path>, set: &[String]) -> Result<(TrainPpoConfig, String)> {
    let (yaml, source, stem) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?;
            let stem = p.file_stem().map_or("ppo".into(), |s| s.to_string_lossy().into_owned());
            (text, p.display().to_string(), stem)
        }
        None => {
            (DEFAULT_CONFIG.to_owned(), "<embedded ppo-default.yaml>".into(), "ppo-default".into())
        }
    };
    Ok((parse_config(&yaml, &source, set)?, stem))
}

/// The config (struct defaults < YAML < `--set` < `--device`/`--dtype`, validated in one pass)
/// and the run name it suggests: the config file's stem. `--resume DIR` reads DIR's saved
/// config, so `--set` there is a change the library accepts or refuses by name.
fn config(args: &Args) -> Result<(TrainPpoConfig, String)> {
    let (mut cfg, stem) = match &args.resume {
        Some(dir) => {
            let p = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}; hint: pass a run folder", p.display()))?;
            (parse_config(&text, &p.display().to_string(), &args.set)?, String::new())
        }
        None => load(args.config.as_deref(), &args.set)?,
    };
    if let Some(model) = &args.model {
        cfg.model = model.clone();
    }
    if let Some(dtype) = args.dtype {
        cfg.dtype = dtype;
    }
    if let Some(device) = args.device {
        cfg.device = device;
    }
    cfg.data.skip_invalid |= args.skip_invalid;
    Ok((cfg, stem))
}
