//! `panacea`: the command-line front end. The only crate that touches terminals, progress bars,
//! run folders and exit codes; everything else is a library call.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_steering;
mod chat;
mod convert;
mod doctor;
mod eval_front;
mod export_peft;
mod generate;
mod metrics;
mod observer;
mod perplexity;
mod serve;
mod train_dpo;
mod train_ppo;
mod train_rm;

/// Panacea: one language model steered along the Pareto front of several objectives by a
/// preference vector given at inference time.
#[derive(Parser)]
#[command(name = "panacea", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat in the terminal with the model, steered by λ (`/pref`, `/sweep`, `/reset`, `/save`).
    Chat(chat::Args),
    /// OpenAI-compatible HTTP server where each request carries its own λ (batched together).
    Serve(serve::Args),
    /// Report libtorch, CUDA and threading as this binary sees them.
    Doctor(doctor::Args),
    /// Convert a model (GGUF, HF folder or short name) to safetensors + config + tokenizer.
    Convert(convert::Args),
    /// Generate text from prompts (batched, greedy or sampled, ChatML or raw).
    Generate(generate::Args),
    /// Token count and mean negative log-likelihood of a text.
    Perplexity(perplexity::Args),
    /// Fold an adapter at one preference into a plain PEFT LoRA folder.
    ExportPeft(export_peft::Args),
    /// Every Pareto-front metric (HV, spacing, sparsity, R2, IGD, ε, …) of a points file.
    Metrics(metrics::Args),
    /// Measure the Pareto front of adapters across a λ grid against the base and report it.
    EvalFront(eval_front::Args),
    /// Multi-objective DPO of the preference adapter (linear or Tchebycheff aggregation).
    TrainDpo(train_dpo::Args),
    /// Multi-objective PPO with a preference-conditioned SVD-LoRA adapter (the main job).
    TrainPpo(train_ppo::Args),
    /// Train one PPO config over several seeds and tabulate whether λ steers each objective.
    BenchSteering(bench_steering::Args),
    /// Train reward/cost score models (backbone + scalar head) on preference pairs.
    TrainRm(train_rm::Args),
}

fn main() -> ExitCode {
    panacea_core::device::init_torch();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(args) => chat::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::ExportPeft(args) => export_peft::run(args),
        Command::Metrics(args) => metrics::run(args),
        Command::TrainDpo(args) => train_dpo::run(args),
        Command::TrainPpo(args) => train_ppo::run(args),
        Command::BenchSteering(args) => bench_steering::run(args),
        Command::TrainRm(args) => train_rm::run(args),
        Command::EvalFront(args) => eval_front::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
