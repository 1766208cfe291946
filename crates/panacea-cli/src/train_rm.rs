//! `panacea train-rm`: one reward or cost score model per objective on preference pairs. The
//! job is [`panacea_rlhf::train_score_models`]; this file maps flags to its config and run
//! options and shows progress.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use panacea_core::config::load_config;
use panacea_core::device::{DType, DeviceChoice};
use panacea_rlhf::TrainRmConfig;
use panacea_run::RunOptions;

use crate::observer::{install_stop_flag, ProgressObserver};

/// Flags of `panacea train-rm`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config.
    #[arg(long)]
    config: PathBuf,
    /// Override a config value, e.g. `--set train.epochs=2` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Base model: a short name (smollm2-135m), a GGUF file, a Hugging Face model folder or
    /// tiny-random (overrides the config's `model`).
    #[arg(long)]
    model: Option<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`).
    #[arg(long)]
    dtype: Option<DType>,
    /// Skip malformed pair lines (counted and reported, the first few by file and line)
    /// instead of stopping at the first one (sets `data.skip_invalid`).
    #[arg(long)]
    skip_invalid: bool,
    /// Folder that receives the run folder.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// The run folder's name after its date (default: train-rm).
    #[arg(long)]
    name: Option<String>,
}

/// Trains every configured score model in turn.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let mut cfg: TrainRmConfig = load_config(&args.config, &args.set)?;
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
    let mut opts = RunOptions::new(&args.runs_dir);
    opts.name = args.name;
    opts.stop = install_stop_flag()?;
    let mut progress = ProgressObserver::new().measuring_memory_on(cfg.device.resolve()?);
    let t = panacea_rlhf::train_score_models(&cfg, &opts, &mut progress)?;
    Ok(if t.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}
