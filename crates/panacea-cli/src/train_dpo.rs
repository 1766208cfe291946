//! `panacea train-dpo`: flags → [`DpoRunConfig`] → [`panacea_dpo::train_dpo`] with a progress
//! bar and Ctrl-C (finish the step, checkpoint, exit 130). Without `--config` the embedded
//! default (`configs/dpo-default.yaml`) runs; `--resume RUN_DIR` continues a run from its
//! newest checkpoint with the run's saved config (plus `--set`, for the keys a resume may
//! change). Started by torchrun or srun, each process is one rank of a data-parallel run
//! (`panacea_dpo::job`, "Data parallel").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use panacea_core::config::parse_config;
use panacea_core::device::{DType, DeviceChoice};
use panacea_dpo::DpoRunConfig;
use panacea_run::{RunOptions, Trained};

use crate::observer::{as_rank, install_stop_flag};

/// The embedded default run (`configs/dpo-default.yaml`).
const DEFAULT_CONFIG: &str = include_str!("../../../configs/dpo-default.yaml");

/// Flags of `panacea train-dpo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// YAML config; without it the embedded default runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config value, e.g. `--set train.steps=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Base model: a short name (smollm2-135m), a GGUF file, a Hugging Face model folder or
    /// tiny-random (overrides the config's `model`).
    #[arg(long)]
    model: Option<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the frozen base, f32 or bf16 (overrides the config's `dtype`); the
    /// adapter, the losses and the optimiser state stay f32.
    #[arg(long)]
    dtype: Option<DType>,
    /// Skip malformed pair lines (counted and reported, the first few by file and line)
    /// instead of stopping at the first one (sets `data.skip_invalid`).
    #[arg(long)]
    skip_invalid: bool,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Parent folder of new run folders.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// The run folder's name after its date (default: the config file's stem).
    #[arg(long)]
    name: Option<String>,
}

/// `panacea train-dpo`.
pub(crate) fn run(args: Args) -> Result<ExitCode> {
    let t = train(args)?;
    Ok(if t.interrupted { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// The run of `args`, shown on stderr; Ctrl-C stops it after a step with a checkpoint.
pub(crate) fn train(args: Args) -> Result<Trained> {
    let (cfg, stem) = config(&args)?;
    let mut opts = RunOptions::new(&args.runs_dir);
    opts.name = args.name.clone().or(stem);
    opts.resume = args.resume.clone();
    opts.stop = install_stop_flag()?;
    as_rank(cfg.device, |observer, group| {
        Ok(panacea_dpo::train_dpo_data_parallel(&cfg, &opts, observer, group)?)
    })
}

/// The config of `args`: the resumed run's, the file's or the embedded default, then `--set`,
/// `--device`, `--dtype` and `--skip-invalid`; with the config file's stem (the default run
/// name).
fn config(args: &Args) -> Result<(DpoRunConfig, Option<String>)> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (text, source, config_dir) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            let p = dir.join(panacea_run::CONFIG_FILE);
            (read(&p)?, p, None)
        }
        (None, Some(p)) => {
            let dir = p.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
            (read(p)?, p.clone(), dir.map(Path::to_owned))
        }
        (None, None) => (DEFAULT_CONFIG.to_owned(), PathBuf::from("dpo-default.yaml"), None),
    };
    let mut cfg: DpoRunConfig = parse_config(&text, &source.display().to_string(), &args.sets)?;
    cfg.config_dir = config_dir;
    if let Some(model) = &args.model {
        cfg.model = model.clone();
    }
    if let Some(d) = args.device {
        cfg.device = d;
    }
    if let Some(dtype) = args.dtype {
        cfg.dtype = dtype;
    }
    cfg.data.skip_invalid |= args.skip_invalid;
    let stem = source.file_stem().map(|s| s.to_string_lossy().into_owned());
    Ok((cfg, stem))
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_default_config_is_valid() {
        let cfg: panacea_dpo::DpoRunConfig =
            panacea_core::config::parse_config(super::DEFAULT_CONFIG, "dpo-default.yaml", &[])
                .expect("the embedded default parses and validates");
        assert_eq!(cfg.k(), 2);
    }
}
