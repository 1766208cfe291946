//! `panacea perplexity`: token count and mean negative log-likelihood (nats/token) of a text
//! under a model, the quickest check that weights, layout and tokenizer are right
//! (SmolLM2-135M on the docs/models.md, §1.6 passage: 1.3168).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use panacea_core::device::{DType, DeviceChoice};
use panacea_lm::Adapter;

/// Flags of `panacea perplexity`.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["text", "file"])))]
pub(crate) struct Args {
    /// Model: GGUF file, HF folder, or a short name such as smollm2-135m.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The text to score.
    #[arg(long)]
    text: Option<String>,
    /// A UTF-8 file to score.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Tokens per window; longer texts are scored in independent windows.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = match (&args.text, &args.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give --text or --file"),
    };
    let device = args.device.resolve()?;
    tracing::info!("running on {device:?}, dtype {}", args.dtype);
    let m = panacea_lm::load_model(&args.model, device, args.dtype.kind())?;
    let ids = m.tokenizer.encode(&text)?;
    let nll = panacea_lm::generate::token_nlls(&m.model, &ids, Adapter::Off, args.window)?;
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    if args.json {
        let v = serde_json::json!({
            "model": args.model, "tokens": ids.len(), "predicted": nll.len(),
            "mean_nll": mean, "perplexity": mean.exp(),
        });
        println!("{v}");
    } else {
        println!(
            "tokens {}  predicted {}  mean NLL {mean:.5} nats/token  perplexity {:.3}",
            ids.len(),
            nll.len(),
            mean.exp()
        );
    }
    Ok(ExitCode::SUCCESS)
}
