//! `panacea convert`: reads a model (GGUF file, HF folder or short name) and writes it as
//! model.safetensors (f32) + config.json + tokenizer.json, so later loads skip dequantisation.
//! `cargo xtask fetch-model` runs this on the downloaded GGUF.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

/// Flags of `panacea convert`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// A GGUF file, a folder with config.json + safetensors + tokenizer.json, or a short name.
    #[arg(long)]
    input: String,
    /// Folder to write model.safetensors, config.json and tokenizer.json into.
    #[arg(long)]
    output: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let pre = panacea_lm::Pretrained::load(&args.input)
        .with_context(|| format!("reading {}", args.input))?;
    let n: i64 = pre.tensors.iter().map(|(_, t)| t.numel() as i64).sum();
    tracing::info!(
        "read {} tensors, {n} parameters from {} in {:.1} s",
        pre.tensors.len(),
        pre.source.display(),
        t0.elapsed().as_secs_f64()
    );
    pre.save_dir(&args.output).with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!("wrote {} in {:.1} s", args.output.display(), t0.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
