//! `dpo_memory`: peak memory and time of real DPO steps at a real model's size (issue #20,
//! "Memory for real sizes"), on random weights of the shape a Hugging Face `config.json` gives
//! (`configs/shapes/`): [`panacea_dpo::probe_dpo_step`] builds the model directly in the base
//! dtype on the device, takes `--steps` steps of `--pairs` pairs of `--seq-len`-token
//! sequences (every sequence full length, every position scored), and the JSON it writes sets
//! each step's measured peak beside the estimate the DPO job emits for that shape.
//!
//! ```text
//! dpo_memory --shape configs/shapes/llama-3.1-8b.json --device cuda --dtype bf16 \
//!     --pairs 8 --seq-len 1024 --checkpointing --out OUT/llama-8b-ck.json
//! ```
//!
//! On CUDA the peak is the caching allocator's peak of live tensor bytes (weights included);
//! on the CPU the process's peak resident set. A step that runs out of memory is recorded in
//! the JSON (`error`) with the estimate, and the exit status is 2; other failures exit 1.
//! `benches/gpu/memory.sh` runs the GPU check; benches/README.md ("DPO memory at real sizes")
//! says what it checks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use panacea_core::adapter::SvdLoraConfig;
use panacea_core::device::{DType, DeviceChoice};
use panacea_dpo::{pair_memory_estimate, probe_dpo_step, ProbeReport, StepProbe};
use panacea_lm::LlamaConfig;
use serde_json::{json, Value};

/// Flags of `dpo_memory`.
#[derive(Parser, Debug)]
#[command(
    name = "dpo_memory",
    about = "Peak memory of DPO steps on a random model of a config.json"
)]
struct Args {
    /// A Hugging Face config.json giving the architecture (e.g. configs/shapes/llama-3.1-8b.json).
    #[arg(long)]
    shape: PathBuf,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Base-weight dtype, f32 or bf16 (the adapter and its AdamW state stay f32).
    #[arg(long, default_value = "bf16")]
    dtype: DType,
    /// Pairs in the step's one forward (the job's train.batch_size).
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Tokens of every sequence (the job's data.max_len).
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    /// Activation checkpointing per decoder layer (the job's train.activation_checkpointing).
    #[arg(long)]
    checkpointing: bool,
    /// Steps to take: the first allocates AdamW's moments, the second is a running job's step.
    #[arg(long, default_value_t = 2)]
    steps: usize,
    /// The adapter's rank k (configs/dpo-default.yaml: 8).
    #[arg(long, default_value_t = 8)]
    rank: i64,
    /// Objectives m (configs/dpo-default.yaml: 2).
    #[arg(long, default_value_t = 2)]
    objectives: i64,
    /// Bytes the measured peak is checked against (`within_budget`); default 80 GB, the
    /// issue's goal.
    #[arg(long, default_value_t = 80e9)]
    budget_bytes: f64,
    /// libtorch intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Seed of the random weights, the adapter init and the tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The JSON file to write (its folder is created).
    #[arg(long)]
    out: PathBuf,
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// The measured part of the JSON.
fn measured(report: &ProbeReport, budget: f64) -> Value {
    let steps: Vec<Value> = report
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "step": i + 1,
                "before_bytes": s.before_bytes,
                "peak_bytes": s.peak_bytes,
                "rise_bytes": s.peak_bytes.saturating_sub(s.before_bytes),
                "seconds": s.seconds,
            })
        })
        .collect();
    let peak = report.steps.iter().map(|s| s.peak_bytes).max().unwrap_or(0);
    let total = report.estimate.total_bytes();
    json!({
        "build": {
            "seconds": report.build_seconds,
            "before_bytes": report.build_before_bytes,
            "peak_bytes": report.build_peak_bytes,
        },
        "steps": steps,
        "peak_bytes": peak,
        "peak_gb": gb(peak),
        "peak_over_estimate": peak as f64 / total.max(1) as f64,
        "within_budget": (peak as f64) <= budget,
    })
}

/// Records a failed probe in `report`; the exit status: 2 for an out-of-memory (the shape does
/// not fit this device), 1 otherwise.
fn failed(report: &mut Value, message: String) -> u8 {
    let oom = message.contains("out of memory");
    report["error"] = json!(message);
    report["out_of_memory"] = json!(oom);
    if oom {
        2
    } else {
        1
    }
}

fn main() -> Result<ExitCode> {
    let init = panacea_core::device::init_torch();
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = args.device.resolve().context("resolving --device")?;
    let config = LlamaConfig::from_json_file(&args.shape)
        .with_context(|| format!("reading the shape {}", args.shape.display()))?;
    let adapter = SvdLoraConfig { rank: args.rank, ..SvdLoraConfig::new(args.objectives) };
    let probe = StepProbe {
        pairs: args.pairs,
        seq_len: args.seq_len,
        checkpointing: args.checkpointing,
        steps: args.steps,
        dtype: args.dtype,
        adapter: adapter.clone(),
        seed: args.seed,
    };
    let estimate = pair_memory_estimate(
        &config,
        &adapter,
        args.pairs as i64,
        args.seq_len as i64,
        args.dtype,
        args.checkpointing,
    );
    let plan = panacea_dpo::pair_step_memory_plan(
        &config,
        &adapter,
        args.pairs as i64,
        args.seq_len as i64,
        args.dtype.kind().elt_size_in_bytes() as i64,
        args.checkpointing,
    );
    println!(
        "dpo_memory: {} on {device:?} (libtorch_cuda loaded: {}), {} base weights, {} pairs × 2 × \
         {} tokens, checkpointing {}; estimate {:.2} GB",
        args.shape.display(),
        init.cuda_library_loaded,
        args.dtype,
        args.pairs,
        args.seq_len,
        if args.checkpointing { "on" } else { "off" },
        gb(estimate.total_bytes())
    );
    let parts: serde_json::Map<String, Value> =
        estimate.parts.iter().map(|(name, b)| (name.clone(), json!(b))).collect();
    let mut report = json!({
        "tool": "panacea dpo_memory",
        "shape": args.shape.display().to_string(),
        "model_type": config.model_type.clone(),
        "base_params": plan.base_params,
        "adapter_params": plan.adapter_params,
        "device": format!("{device:?}"),
        "dtype": args.dtype.to_string(),
        "pairs": args.pairs,
        "seq_len": args.seq_len,
        "tokens_per_forward": 2 * args.pairs * args.seq_len,
        "checkpointing": args.checkpointing,
        "adapter": { "rank": args.rank, "objectives": args.objectives },
        "seed": args.seed,
        "budget_bytes": args.budget_bytes,
        "estimate": {
            "shape": estimate.shape.clone(),
            "parts": parts,
            "total_bytes": estimate.total_bytes(),
            "total_gb": gb(estimate.total_bytes()),
        },
    });
    // A step too large for the device panics inside libtorch (tch's infallible ops); that is a
    // result here (the shape does not fit), recorded with the estimate.
    let outcome = std::panic::catch_unwind(|| probe_dpo_step(&config, &probe, device));
    let status = match outcome {
        Ok(Ok(measured_report)) => {
            let m = measured(&measured_report, args.budget_bytes);
            if let (Value::Object(r), Value::Object(m)) = (&mut report, m) {
                r.extend(m);
            }
            for (i, s) in measured_report.steps.iter().enumerate() {
                println!(
                    "step {}: peak {:.2} GB (held before {:.2} GB), {:.2} s",
                    i + 1,
                    gb(s.peak_bytes),
                    gb(s.before_bytes),
                    s.seconds
                );
            }
            0
        }
        Ok(Err(e)) => failed(&mut report, e.to_string()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic without a message".to_owned());
            failed(&mut report, message)
        }
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, text + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    // A failed step (out of memory, say) is a result, written above; exit 2 marks it for
    // memory.sh without anyhow's error chain on top.
    if status != 0 {
        eprintln!("dpo_memory: {}", report["error"]);
        return Ok(ExitCode::from(status));
    }
    Ok(ExitCode::SUCCESS)
}
