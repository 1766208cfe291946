//! `panacea serve`: the OpenAI-compatible server of panacea-serve on a host and port, with
//! SIGINT/SIGTERM wired to its graceful shutdown (requests in flight finish first).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use panacea_core::device::{DType, DeviceChoice};
use panacea_serve::{Limits, RunningServer, ServeOptions, ServedModel};

/// The model flags `panacea serve` and `panacea chat` share, and the one way they load it.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// Model: GGUF file, HF folder, or a short name such as smollm2-135m.
    #[arg(long, default_value = "smollm2-135m")]
    pub(crate) model: String,
    /// A native Panacea adapter folder (adapter_config.json + adapter_model.safetensors);
    /// without it the base model answers.
    #[arg(long)]
    pub(crate) adapter: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// libtorch intra-op threads of the engine (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
}

impl ModelArgs {
    /// Loads the model (and adapter) for an engine running with `threads`.
    pub(crate) fn load(&self) -> anyhow::Result<ServedModel> {
        let device = self.device.resolve()?;
        if self.threads > 0 {
            // Loading lays the weights out for this thread's intra-op count (the small-M
            // kernel's row layout needs one thread); the engine thread decodes with the same.
            tch::set_num_threads(self.threads as i32);
        }
        Ok(ServedModel::load(&self.model, self.adapter.as_deref(), device, self.dtype.kind())?)
    }
}

/// Flags of `panacea serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Default λ for requests without `preference`: `helpful=0.7,harmless=0.3` or `0.7,0.3`
    /// (default: uniform).
    #[arg(long, requires = "adapter")]
    pref: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Rows decoded together (requests in flight; `n` choices take `n` rows).
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Requests waiting for a row before the server answers 429.
    #[arg(long, default_value_t = 256)]
    queue_len: usize,
    /// Longest prompt in tokens (413 beyond).
    #[arg(long, default_value_t = 1024)]
    max_prompt_tokens: usize,
    /// Most new tokens per answer (413 beyond).
    #[arg(long, default_value_t = 512)]
    max_output_tokens: usize,
    /// `max_tokens` of requests that leave it out.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// An eval-front report folder of this adapter: the page shows its front, marks the grid
    /// point nearest the λ being sent, and shows a sample answer per point.
    #[arg(long, requires = "adapter")]
    report: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let served = args.model.load()?;
    let default_preference = match &args.pref {
        Some(text) => Some(
            panacea_serve::preference::from_text("--pref", text, served.objectives())?
                .as_slice()
                .to_vec(),
        ),
        None => None,
    };
    if !served.objectives().is_empty() {
        tracing::info!("objectives (λ order): {}", served.objectives().join(", "));
    }
    let opts = ServeOptions {
        limits: Limits {
            max_batch: args.max_batch,
            queue_len: args.queue_len,
            max_prompt_tokens: args.max_prompt_tokens,
            max_output_tokens: args.max_output_tokens,
        },
        default_preference,
        default_max_tokens: args.default_max_tokens,
        max_body_bytes: args.max_body_bytes,
        threads: args.model.threads,
        front: args.report.as_deref().map(panacea_serve::report::load_front_view).transpose()?,
    };
    let addr = format!("{}:{}", args.host, args.port);
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .with_context(|| format!("reading the address {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let server = RunningServer::start(addr, served, opts)?;
    tracing::info!(
        "serving {} on http://{} (the page: /, API: /v1)",
        args.model.model,
        server.addr
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let handle = server.shutdown_handle();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tracing::info!("stopping: finishing the requests in flight");
        handle.trigger();
    });
    server.wait()?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
