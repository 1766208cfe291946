//! Serving throughput and time to first token with mixed λ: C concurrent clients (each sends
//! its requests one after another, every request with its own random λ) against the engine
//! with continuous batching, and against the same engine limited to one row (requests served
//! one at a time, the rest queued).
//!
//! ```text
//! cargo run --release -p panacea-serve --example serve_bench -- [--model smollm2-135m]
//!     [--clients 1,8,32] [--requests 2] [--max-tokens 32] [--threads 0]
//! ```
//! Without `--adapter DIR` a random two-objective adapter is put on the model, so every row
//! runs the per-row adapter path. Prints one line per (clients, mode) and the speed-up.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::Sampling;
use panacea_serve::engine::{Engine, Event, GenParams, Limits, ServedAdapter, ServedModel};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind};

struct Opts {
    model: String,
    adapter: Option<String>,
    clients: Vec<usize>,
    requests: usize,
    max_tokens: usize,
    threads: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        model: "smollm2-135m".into(),
        adapter: None,
        clients: vec![1, 8, 32],
        requests: 2,
        max_tokens: 32,
        threads: 0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--model" => o.model = v,
            "--adapter" => o.adapter = Some(v),
            "--clients" => o.clients = v.split(',').map(|c| c.trim().parse().unwrap()).collect(),
            "--requests" => o.requests = v.parse().unwrap(),
            "--max-tokens" => o.max_tokens = v.parse().unwrap(),
            "--threads" => o.threads = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

fn served(o: &Opts) -> ServedModel {
    let adapter = o.adapter.as_deref().map(std::path::Path::new);
    let mut s = ServedModel::load(&o.model, adapter, Device::Cpu, Kind::Float).unwrap();
    if s.adapter.is_none() {
        // The same adapter in every run (U and V come from libtorch's global generator).
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = s.base.model.with_adapter(Some((&vs.root(), &SvdLoraConfig::new(2))));
        // σ and s away from 0 so that λ matters (a fresh adapter equals the base).
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.ends_with("svd_lora_sigma") || name.ends_with("svd_lora_pref_scale") {
                    let _ = v.shallow_clone().fill_(0.1);
                }
            }
        });
        s.adapter = Some(ServedAdapter {
            model,
            vs,
            objectives: vec!["helpful".into(), "harmless".into()],
        });
    }
    s
}

struct Sample {
    ttft: Duration,
    tokens: usize,
}

fn run(o: &Opts, clients: usize, max_batch: usize) -> (f64, Vec<Sample>) {
    let limits = Limits {
        max_batch,
        queue_len: 1024,
        max_prompt_tokens: 256,
        max_output_tokens: o.max_tokens,
    };
    let engine = Engine::start(served(o), limits, o.threads).unwrap();
    let info = engine.info().clone();
    let prompts: Vec<Vec<i64>> = panacea_lm::bench_prompts::DECODE_BENCH_PROMPTS
        .iter()
        .map(|p| info.tokenizer.encode(&info.chat_template.user_prompt(p).unwrap()).unwrap())
        .collect();
    let t0 = Instant::now();
    let samples: Vec<Sample> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (engine, prompts) = (&engine, &prompts);
                s.spawn(move || {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
                    let mut out = Vec::new();
                    for r in 0..o.requests {
                        let a: f64 = rng.gen();
                        let params = GenParams {
                            max_tokens: o.max_tokens,
                            sampling: Sampling::Greedy,
                            seed: 0,
                            stop: Vec::new(),
                            n: 1,
                        };
                        let prompt = prompts[(c + r) % prompts.len()].clone();
                        let start = Instant::now();
                        let mut rx = engine.submit(prompt, Some(vec![a, 1.0 - a]), params).unwrap();
                        let (mut ttft, mut tokens) = (None, 0);
                        while let Some(e) = rx.blocking_recv() {
                            match e {
                                Event::Text { tokens: t, .. } => {
                                    ttft.get_or_insert_with(|| start.elapsed());
                                    tokens += t.len();
                                }
                                Event::Done { completion_tokens, .. } => {
                                    tokens = completion_tokens;
                                    break;
                                }
                                Event::Error(e) => panic!("{e}"),
                            }
                        }
                        out.push(Sample { ttft: ttft.unwrap_or_else(|| start.elapsed()), tokens });
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    engine.shutdown().unwrap();
    (wall, samples)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    panacea_core::device::init_torch();
    let o = opts();
    println!(
        "model {}, {} requests per client, max_tokens {}, threads {} (0 = libtorch default)",
        o.model, o.requests, o.max_tokens, o.threads
    );
    println!("clients  mode              tokens  wall_s  tokens/s  ttft_p50_ms  ttft_p99_ms");
    for &c in &o.clients {
        let mut rates = Vec::new();
        for (mode, max_batch) in [("one-at-a-time", 1), ("batched (mixed λ)", c.max(1))] {
            let (wall, samples) = run(&o, c, max_batch);
            let tokens: usize = samples.iter().map(|s| s.tokens).sum();
            let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect();
            ttft.sort_by(f64::total_cmp);
            let rate = tokens as f64 / wall;
            rates.push(rate);
            println!(
                "{c:>7}  {mode:<17} {tokens:>6}  {wall:>6.2}  {rate:>8.1}  {:>11.0}  {:>11.0}",
                percentile(&ttft, 0.5),
                percentile(&ttft, 0.99)
            );
        }
        println!("{c:>7}  speed-up of batching: {:.2}×", rates[1] / rates[0]);
    }
}
