//! `panacea export-peft`: folds a Panacea adapter at one fixed preference into a plain PEFT LoRA
//! folder (rank k + m, `lora_A`/`lora_B`, `peft_type: LORA`) that Hugging Face PEFT loads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use panacea_core::checkpoint::{export_peft, read_adapter_config};
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
    /// What PEFT loads the base model from (`base_model_name_or_path`): a folder with its
    /// config.json and weights, or a hub id of exactly the weights the adapter was trained on
    /// (default: the adapter's base model resolved to its folder, e.g. smollm2-135m → the model
    /// cache's converted folder).
    #[arg(long)]
    base: Option<String>,
}

/// The folder of the base model `name` that PEFT can load: a short name or path resolved by
/// panacea-lm to a folder holding `config.json`.
fn base_folder(name: &str) -> anyhow::Result<String> {
    let dir = panacea_lm::resolve_model(name).with_context(|| {
        format!("finding the adapter's base model {name:?}\nhint: pass --base FOLDER_OR_HUB_ID")
    })?;
    anyhow::ensure!(
        dir.is_dir() && dir.join("config.json").is_file(),
        "the adapter's base model {name:?} is {}, which is no folder with a config.json that \
         PEFT could load\nhint: convert it with `panacea convert` and pass --base FOLDER, or \
         pass its hub id",
        dir.display()
    );
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok(dir.display().to_string())
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pref: PreferenceVector = args.pref.parse().context("reading --pref")?;
    let base = match &args.base {
        Some(b) => b.clone(),
        None => {
            let folder = read_adapter_config(&args.adapter)
                .with_context(|| format!("reading adapter {}", args.adapter.display()))?;
            base_folder(&folder.base_model.name)?
        }
    };
    let summary = export_peft(&args.adapter, &pref, &args.out, &base).with_context(|| {
        format!("exporting {} at λ = {pref} to {}", args.adapter.display(), args.out.display())
    })?;
    println!(
        "wrote PEFT LoRA (r = lora_alpha = {}, {} modules) at λ = {pref} on base {base} to {}",
        summary.rank,
        summary.modules,
        Path::new(&args.out).display()
    );
    Ok(ExitCode::SUCCESS)
}
