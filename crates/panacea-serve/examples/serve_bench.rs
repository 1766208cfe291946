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
//!
//! `--only one|batched` runs one of the two modes.
//!
//! `--same-pref` measures the merged path instead: C clients all at λ = (0.3, 0.7), batched,
//! on the base model (no λ: the adapter off), on the merged weights, and on the per-row path
//! (merging off), interleaved over `--rounds`. The random adapter is zero there (σ = s = 0),
//! so all three decode the same tokens (a path's cost does not depend on the adapter's
//! values); prints each mode's decode-forward milliseconds per step (merging excluded, shown
//! apart) and the ratios to the base.
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::sync::atomic::Ordering;
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
    same_pref: bool,
    rounds: usize,
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        model: "smollm2-135m".into(),
        adapter: None,
        clients: vec![1, 8, 32],
        requests: 2,
        max_tokens: 32,
        threads: 0,
        same_pref: false,
        rounds: 3,
        only: None,
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--same-pref") {
        o.same_pref = true;
        args.remove(i);
    }
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--model" => o.model = v,
            "--adapter" => o.adapter = Some(v),
            "--clients" => o.clients = v.split(',').map(|c| c.trim().parse().unwrap()).collect(),
            "--requests" => o.requests = v.parse().unwrap(),
            "--max-tokens" => o.max_tokens = v.parse().unwrap(),
            "--threads" => o.threads = v.parse().unwrap(),
            "--rounds" => o.rounds = v.parse().unwrap(),
            "--only" => o.only = Some(v),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

/// The model with `--adapter`, else with a seeded random adapter: σ = s = 0.1 (λ matters), or
/// all zero σ = s (`zero`: the adapter adds 0, so every path decodes the base's tokens).
fn served(o: &Opts, zero: bool) -> ServedModel {
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
                    let _ = v.shallow_clone().fill_(if zero { 0.0 } else { 0.1 });
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

/// Which λ the clients send.
#[derive(Clone, Copy)]
enum Prefs {
    /// Each request its own random λ.
    Mixed,
    /// Every request λ = (0.3, 0.7).
    Same,
    /// No λ: the base model.
    Base,
}

fn run(
    o: &Opts,
    clients: usize,
    max_batch: usize,
    prefs: Prefs,
    merge: Option<usize>,
) -> (f64, Vec<Sample>, f64) {
    let limits = Limits {
        max_batch,
        queue_len: 1024,
        max_prompt_tokens: 256,
        max_output_tokens: o.max_tokens,
    };
    let engine = Engine::start_with(served(o, o.same_pref), limits, o.threads, merge).unwrap();
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
                        let pref = match prefs {
                            Prefs::Mixed => Some(vec![a, 1.0 - a]),
                            Prefs::Same => Some(vec![0.3, 0.7]),
                            Prefs::Base => None,
                        };
                        let params = GenParams {
                            max_tokens: o.max_tokens,
                            sampling: Sampling::Greedy,
                            seed: 0,
                            stop: Vec::new(),
                            n: 1,
                        };
                        let prompt = prompts[(c + r) % prompts.len()].clone();
                        let start = Instant::now();
                        let mut rx = engine.submit(prompt, pref, params).unwrap();
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
    let st = engine.stats();
    let secs = |c: &std::sync::atomic::AtomicUsize| c.load(Ordering::SeqCst) as f64 / 1e6;
    println!(
        "         engine: prefill {:.2} s, decode forwards {:.2} s ({:.1} ms/step), choose+stream {:.2} s, {} steps, {} merges ({:.2} s)",
        secs(&st.prefill_us),
        secs(&st.forward_us),
        secs(&st.forward_us) * 1e3 / st.steps.load(Ordering::SeqCst).max(1) as f64,
        secs(&st.emit_us),
        st.steps.load(Ordering::SeqCst),
        st.merges.load(Ordering::SeqCst),
        secs(&st.merge_us)
    );
    let ms_per_step = secs(&st.forward_us) * 1e3 / st.steps.load(Ordering::SeqCst).max(1) as f64;
    engine.shutdown().unwrap();
    (wall, samples, ms_per_step)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Seconds per generated token of the base, merged and per-row paths at one shared λ.
fn same_pref(o: &Opts) {
    let modes = [
        ("base (adapter off)", Prefs::Base, None),
        ("merged (same λ)", Prefs::Same, Some(0)),
        ("per-row (same λ)", Prefs::Same, None),
    ];
    println!("clients  mode                 round  tokens  wall_s  forward ms/step");
    for &c in &o.clients {
        let mut per_token = vec![Vec::new(); modes.len()];
        for round in 0..o.rounds {
            for (m, (name, prefs, merge)) in modes.iter().enumerate() {
                let (wall, samples, ms) = run(o, c, c.max(1), *prefs, *merge);
                let tokens: usize = samples.iter().map(|s| s.tokens).sum();
                per_token[m].push(ms);
                println!("{c:>7}  {name:<20} {round:>5}  {tokens:>6}  {wall:>6.2}  {ms:>8.2}");
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let med: Vec<f64> = per_token.iter_mut().map(median).collect();
        println!(
            "{c:>7}  median forward ms/step: base {:.2}, merged {:.2} ({:.3}× base), per-row {:.2} ({:.3}× base)",
            med[0],
            med[1],
            med[1] / med[0],
            med[2],
            med[2] / med[0]
        );
    }
}

fn main() {
    panacea_core::device::init_torch();
    let o = opts();
    if o.threads > 0 {
        // The weight layout is chosen when the model loads, for the loading thread's count
        // (see `ServeOptions::threads`): load with the engine's.
        tch::set_num_threads(o.threads as i32);
    }
    if o.same_pref {
        return same_pref(&o);
    }
    println!(
        "model {}, {} requests per client, max_tokens {}, threads {} (0 = libtorch default)",
        o.model, o.requests, o.max_tokens, o.threads
    );
    println!("clients  mode              tokens  wall_s  tokens/s  ttft_p50_ms  ttft_p99_ms");
    for &c in &o.clients {
        let mut rates = Vec::new();
        for (mode, max_batch) in [("one-at-a-time", 1), ("batched (mixed λ)", c.max(1))] {
            if o.only.as_deref().is_some_and(|m| !mode.starts_with(m)) {
                continue;
            }
            let merge = Some(panacea_serve::engine::DEFAULT_MERGE_MIN_STEPS);
            let (wall, samples, _) = run(&o, c, max_batch, Prefs::Mixed, merge);
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
        if let [alone, batched] = rates[..] {
            println!("{c:>7}  speed-up of batching: {:.2}×", batched / alone);
        }
    }
}
