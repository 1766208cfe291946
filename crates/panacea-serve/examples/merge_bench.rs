//! Decode-step cost of the merged weights against the base model, paired step by step: B rows
//! (the decode-bench prompts) in three slot batches — the base (`Adapter::Off`), the adapter
//! merged at one λ ([`panacea_serve::engine::merged_model`], `Adapter::Off`), and the per-row
//! adapter path (`Adapter::On`, pref [B, K], factors prepared as the engine does) — and the
//! three step in turn, fed the same tokens, so the load of the machine falls on all three
//! alike. Prints the median milliseconds per step of each and the ratios to the base.
//!
//! ```text
//! cargo run --release -p panacea-serve --example merge_bench -- [--model smollm2-135m]
//!     [--rows 1,8] [--steps 40] [--threads 1]
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{Adapter, SlotBatch};
use tch::{Device, Kind, Tensor};

fn main() {
    panacea_core::device::init_torch();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut model, mut rows, mut steps, mut threads) =
        ("smollm2-135m".to_owned(), vec![1usize, 8], 40usize, 1usize);
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--model" => model = v,
            "--rows" => rows = v.split(',').map(|r| r.trim().parse().unwrap()).collect(),
            "--steps" => steps = v.parse().unwrap(),
            "--threads" => threads = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    if threads > 0 {
        tch::set_num_threads(threads as i32); // before loading: the weight layout follows it
    }
    let base = panacea_lm::load_model(&model, Device::Cpu, Kind::Float).unwrap();
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut adapted = base.model.with_adapter(Some((&vs.root(), &SvdLoraConfig::new(2))));
    tch::no_grad(|| {
        for (name, v) in vs.variables() {
            if name.ends_with("svd_lora_sigma") || name.ends_with("svd_lora_pref_scale") {
                let _ = v.shallow_clone().fill_(0.1);
            }
        }
    });
    let pref = [0.3, 0.7];
    let merged = panacea_serve::engine::merged_model(&base.model, &adapted, &pref);
    let prompts: Vec<Vec<i64>> = panacea_lm::bench_prompts::DECODE_BENCH_PROMPTS
        .iter()
        .map(|p| base.tokenizer.encode(&base.chat_template.user_prompt(p).unwrap()).unwrap())
        .collect();
    println!("model {model}, λ = {pref:?}, {steps} paired steps, threads {threads}");
    println!("rows  base ms/step  merged ms/step  per-row ms/step  merged/base  per-row/base");
    for &b in &rows {
        let cap = 512;
        let row_pref = Tensor::from_slice(&pref.repeat(b)).view([b as i64, 2]).to_kind(Kind::Float);
        let one_pref = Tensor::from_slice(&pref).view([1, 2]).to_kind(Kind::Float);
        let mut batches: Vec<SlotBatch> =
            (0..3).map(|_| SlotBatch::new(&base.model, b as i64, cap).unwrap()).collect();
        let mut tokens = Vec::new();
        for r in 0..b {
            let p = &prompts[r % prompts.len()];
            let l = batches[0].join(&base.model, p, Adapter::Off).unwrap();
            let _ = batches[1].join(&merged, p, Adapter::Off).unwrap();
            let _ = batches[2].join(&adapted, p, Adapter::On { pref: &one_pref }).unwrap();
            tokens.push(l.argmax(-1, false).int64_value(&[0]));
        }
        for l in adapted.linears_mut() {
            l.prepare(&row_pref).unwrap();
        }
        let mut times = vec![Vec::new(); 3];
        for _ in 0..steps {
            let mut next = Vec::new();
            for (m, batch) in batches.iter_mut().enumerate() {
                let (net, adapter) = match m {
                    0 => (&base.model, Adapter::Off),
                    1 => (&merged, Adapter::Off),
                    _ => (&adapted, Adapter::On { pref: &row_pref }),
                };
                let t0 = Instant::now();
                let logits = batch.step(net, &tokens, adapter).unwrap(); // [B, V]
                let ids: Vec<i64> = Vec::try_from(&logits.argmax(-1, false)).unwrap();
                times[m].push(t0.elapsed().as_secs_f64() * 1e3);
                if m == 0 {
                    next = ids;
                }
            }
            tokens = next; // the base's tokens for all three: the same work every step
        }
        for l in adapted.linears_mut() {
            l.unprepare();
        }
        let med: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        println!(
            "{b:>4}  {:>12.2}  {:>14.2}  {:>15.2}  {:>11.3}  {:>12.3}",
            med[0],
            med[1],
            med[2],
            med[1] / med[0],
            med[2] / med[0]
        );
    }
}
