//! Adapter forward + backward ÷ frozen backprop, with the q/k/v and gate/up adapters grouped
//! (one skinny GEMM pair per group, the default) and ungrouped (one pair per projection, the
//! path before grouping), on a fused random Llama, CPU.
//!
//! The same step as `gpu_bench`'s `fwdbwd` workload: logits of [B, T] tokens, cross-entropy over
//! the vocabulary, backward, gradients zeroed; `off` computes activation gradients only (one
//! norm weight is made to want a gradient). The modes run interleaved, one round at a time, and
//! each ratio is the median over rounds of (mode ÷ off in that round), so load from other
//! processes hits both sides of a ratio alike.
//!
//! `OMP_NUM_THREADS=1 cargo run -p panacea-lm --example adapter_groups [-- D LAYERS B T ROUNDS]`
//! (defaults 256 4 4 128 15: FFN 4·D, heads D/64 with half as many KV heads, vocabulary 4096).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use panacea_core::adapter::{adapter_variables, SvdLoraConfig};
use panacea_lm::{init_random, Adapter, CausalLm, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

fn main() {
    let args: Vec<i64> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let arg = |i: usize, default: i64| args.get(i).copied().unwrap_or(default);
    let (d, layers, b, t, rounds) = (arg(0, 256), arg(1, 4), arg(2, 4), arg(3, 128), arg(4, 15));
    tch::set_num_threads(1);
    let mut cfg = LlamaConfig::tiny();
    cfg.hidden_size = d;
    cfg.intermediate_size = 4 * d;
    cfg.num_hidden_layers = layers;
    cfg.num_attention_heads = (d / 64).max(2);
    cfg.num_key_value_heads = Some((d / 128).max(1));
    cfg.vocab_size = 4096;
    let base = nn::VarStore::new(Device::Cpu);
    let adapter_vs = nn::VarStore::new(Device::Cpu);
    let mut model =
        Llama::new(&base.root(), Some((&adapter_vs.root(), &SvdLoraConfig::new(2))), &cfg);
    init_random(&base, 1);
    tch::no_grad(|| {
        for (name, v) in adapter_variables(&adapter_vs) {
            if name.ends_with("sigma") || name.ends_with("pref_scale") {
                let _ = v.shallow_clone().fill_(0.05);
            }
        }
    });
    model.fuse_projections();
    let ids = Tensor::randint_low(3, cfg.vocab_size, [b, t], (Kind::Int64, Device::Cpu));
    let mask = ids.ones_like();
    let targets = Tensor::randint_low(3, cfg.vocab_size, [b * t], (Kind::Int64, Device::Cpu));
    let one = Tensor::from_slice(&[0.7f32, 0.3]);
    let w = Tensor::linspace(0.0, 1.0, b, (Kind::Float, Device::Cpu));
    let rows = Tensor::stack(&[&w, &(1.0 - &w)], 1); // [B, 2]
    let probe = model.layers[0].input_layernorm.weight.shallow_clone().set_requires_grad(true);
    let trainable = adapter_vs.trainable_variables();
    let modes: [(&str, Adapter<'_>, bool); 5] = [
        ("off", Adapter::Off, true),
        ("on", Adapter::On { pref: &one }, true),
        ("on_ungrouped", Adapter::On { pref: &one }, false),
        ("rows", Adapter::On { pref: &rows }, true),
        ("rows_ungrouped", Adapter::On { pref: &rows }, false),
    ];
    let step_ms = |model: &mut Llama, adapter: Adapter<'_>, grouped: bool| {
        model.set_grouped_adapters(grouped);
        let start = Instant::now();
        let logits = model.logits(&ids, &mask, adapter); // [B, T, V]
        logits.view([-1, cfg.vocab_size]).cross_entropy_for_logits(&targets).backward();
        for v in trainable.iter().chain([&probe]) {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        start.elapsed().as_secs_f64() * 1e3
    };
    let groups: Vec<usize> = modes
        .iter()
        .map(|&(_, a, g)| {
            model.set_grouped_adapters(g);
            model.adapter_groups_in_use(a)
        })
        .collect();
    for &(_, a, g) in &modes {
        step_ms(&mut model, a, g); // warm-up
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (i, &(_, a, g)) in modes.iter().enumerate() {
            times[i].push(step_ms(&mut model, a, g));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "adapter_groups d{d} layers{layers} tokens{} k8 m2 f32, 1 thread, {rounds} rounds",
        b * t
    );
    for (i, (name, _, _)) in modes.iter().enumerate() {
        let ratio: Vec<f64> = times[i].iter().zip(&times[0]).map(|(m, off)| m / off).collect();
        println!(
            "{name:<15} median {:>8.2} ms   ÷ off (paired median) {:.3}   groups {}",
            median(times[i].clone()),
            median(ratio),
            groups[i]
        );
    }
}
