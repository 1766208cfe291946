//! `panacea generate`: batched generation from prompts given on the command line or in a JSONL
//! file, through the ChatML template (default) or raw, greedy or sampled, as text or JSON lines.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::preference::PreferenceVector;
use panacea_lm::{Adapter, GenerateConfig, Sampling};
use rand::SeedableRng;

/// Flags of `panacea generate`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Model: GGUF file, HF folder, or a short name such as smollm2-135m.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// A prompt (repeat for a batch).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// JSONL file: one `{"prompt": "..."}` object or JSON string per line.
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Render prompts with the model's chat template, ChatML when it has none (`on`), or feed
    /// them raw (`off`).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    chat: String,
    /// System prompt for the chat template (default: the template's own; ChatML's is SmolLM2's).
    #[arg(long)]
    system: Option<String>,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: i64,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    top_k: Option<i64>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Never stop at EOS: every row generates exactly --max-new-tokens (for throughput runs).
    #[arg(long)]
    ignore_eos: bool,
    /// Prompts per forward batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// A native Panacea adapter folder (adapter_config.json + adapter_model.safetensors),
    /// trained on exactly the weights of --model (and --dtype): another base is refused.
    #[arg(long, requires = "pref")]
    adapter: Option<PathBuf>,
    /// Preference vector λ for the adapter, e.g. `0.7,0.3` (one weight per objective, sum 1).
    #[arg(long, requires = "adapter")]
    pref: Option<PreferenceVector>,
    /// Print one JSON object per prompt.
    #[arg(long)]
    json: bool,
}

fn read_prompts(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut prompts = args.prompts.clone();
    if let Some(path) = &args.prompts_file {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
            let p = match &v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => match o.get("prompt") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => bail!("{}:{}: object without a string \"prompt\"", path.display(), i + 1),
                },
                _ => bail!("{}:{}: expected a string or an object", path.display(), i + 1),
            };
            prompts.push(p);
        }
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt TEXT (repeatable) or --prompts-file FILE.jsonl");
    }
    Ok(prompts)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let prompts = read_prompts(&args)?;
    let device = args.device.resolve()?;
    tracing::info!("running on {device:?}, dtype {}", args.dtype);
    let m = panacea_lm::load_model(&args.model, device, args.dtype.kind())?;
    // With --adapter, a second view of the same base carries the trained adapter; λ is the
    // argument of every forward (Adapter::On), never state in the model.
    let adapter_vs = tch::nn::VarStore::new(device);
    let (adapted, pref) = match (&args.adapter, &args.pref) {
        (Some(dir), Some(pref)) => {
            // The adapter must belong to these base weights: the check eval-front makes.
            let base_hash = panacea_core::checkpoint::hash_var_store(&m.base_vs)?;
            panacea_front::check_base_models(&[dir.as_path()], &args.model, &base_hash)?;
            let folder = panacea_core::checkpoint::read_adapter_config(dir)?;
            pref.expect_len(folder.n_objectives as usize)?;
            let view = m.model.with_adapter(Some((&adapter_vs.root(), &folder.svd_lora())));
            panacea_core::checkpoint::load_adapter(dir, &adapter_vs, &folder)?;
            tracing::info!("adapter {} with λ = {:?}", dir.display(), pref.as_slice());
            (Some(view), Some(pref.to_tensor(device)))
        }
        _ => (None, None),
    };
    let (model, adapter) = match (&adapted, &pref) {
        (Some(view), Some(p)) => (view, Adapter::On { pref: p }),
        _ => (&m.model, Adapter::Off),
    };
    // The model's own chat template; ChatML when it has none (said once here).
    if args.chat == "on" && m.chat_template.is_fallback() {
        tracing::warn!(
            "{} has no chat template of its own: prompts are rendered as ChatML",
            args.model
        );
    }
    let rendered: Vec<String> = prompts
        .iter()
        .map(|p| {
            if args.chat == "on" {
                m.chat_template.user_prompt_with_system(args.system.as_deref(), p).with_context(
                    || format!("rendering prompt {p:?}; hint: --chat off sends it as it is"),
                )
            } else {
                Ok(p.clone())
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let sampling = if args.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p }
    };
    let mut cfg =
        GenerateConfig { sampling, ..GenerateConfig::greedy(&m.tokenizer, args.max_new_tokens) };
    if args.ignore_eos {
        cfg.eos_ids.clear();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    for (chunk_idx, chunk) in rendered.chunks(args.batch_size.max(1)).enumerate() {
        let t0 = std::time::Instant::now();
        let g = panacea_lm::generate(model, &m.tokenizer, chunk, adapter, &cfg, &mut rng)?;
        let lens: Vec<i64> =
            Vec::try_from(g.response_mask.sum_dim_intlist(1, false, tch::Kind::Int64))?;
        let secs = t0.elapsed().as_secs_f64();
        let new_tokens = lens.iter().sum::<i64>();
        tracing::info!(
            "batch of {} in {secs:.2} s ({new_tokens} new tokens, {:.1} tokens/s)",
            chunk.len(),
            new_tokens as f64 / secs
        );
        for (j, text) in g.texts.iter().enumerate() {
            let i = chunk_idx * args.batch_size.max(1) + j;
            if args.json {
                let v =
                    serde_json::json!({"prompt": prompts[i], "response": text, "tokens": lens[j]});
                println!("{v}");
            } else {
                println!("### {}\n{}\n", prompts[i], text);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
