//! `panacea export-peft`: folds a Panacea adapter at one fixed preference into a plain PEFT LoRA
//! folder (rank k + m, `lora_A`/`lora_B`, `peft_type: LORA`) that Hugging Face PEFT loads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use panacea_core::checkpoint::export_peft;
use panacea_core::preference::PreferenceVector;

/// Flags of `panacea export-peft`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// A native adapter folder (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: PathBuf,
    /// The preference to fold in, one weight per objective, e.g. 0.7,0.3.
    #[arg(long)]
    pref: String,
    /// The PEFT folder to write (created if needed).
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pref: PreferenceVector = args.pref.parse().context("reading --pref")?;
    let summary = export_peft(&args.adapter, &pref, &args.out).with_context(|| {
        format!("exporting {} at λ = {pref} to {}", args.adapter.display(), args.out.display())
    })?;
    println!(
        "wrote PEFT LoRA (r = lora_alpha = {}, {} modules) at λ = {pref} to {}",
        summary.rank,
        summary.modules,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
