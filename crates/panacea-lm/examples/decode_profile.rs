//! Where a decode step's time goes (CPU, 1 thread recommended: `OMP_NUM_THREADS=1`):
//! times the whole `generate_ids` call, then the pieces of one cached decode step at B = 1 and 8
//! in isolation (every projection GEMM, the LM head, SDPA, rotary, RMSNorm, mask building,
//! token choice), each as the median of repeated runs.
//!
//! `cargo run -p panacea-lm --example decode_profile [-- smollm2-135m]`
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use panacea_lm::bench_prompts::DECODE_BENCH_PROMPTS as PROMPTS;
use panacea_lm::load::load_weights;
use panacea_lm::{
    generate_ids, init_random, Adapter, ChatTemplate, GenerateConfig, Llama, LlamaConfig,
    Pretrained,
};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

/// Median wall time (ms) of `f` over `n` runs after one warm-up.
fn time_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[n / 2]
}

fn main() {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "smollm2-135m".into());
    tch::set_num_threads(1);
    let pre = Pretrained::load(&spec).unwrap();
    // Unfused (the plain HF layout) and fused (what load_model returns) copies of the weights.
    let plain_vs = tch::nn::VarStore::new(Device::Cpu);
    let plain = Llama::new(&plain_vs.root(), None, &pre.config);
    load_weights(&plain_vs, &pre.tensors, &pre.source).unwrap();
    let mut fused_vs = tch::nn::VarStore::new(Device::Cpu);
    let fused = pre.build(&mut fused_vs, None, Kind::Float).unwrap();
    assert!(fused.is_fused() && !plain.is_fused());
    let model = &fused;
    let c = &model.config;
    let t = ChatTemplate::default();
    let ids: Vec<Vec<i64>> =
        PROMPTS.iter().map(|p| pre.tokenizer.encode(&t.user_prompt(p)).unwrap()).collect();
    let mut cfg = GenerateConfig::greedy(&pre.tokenizer, 64);
    cfg.eos_ids.clear();
    let _g = tch::no_grad_guard();
    // Pure per-op overhead: the same 30-layer graph with tiny matrices.
    let tiny_cfg = LlamaConfig {
        num_hidden_layers: c.num_hidden_layers,
        vocab_size: 256,
        ..LlamaConfig::tiny()
    };
    let tiny_vs = tch::nn::VarStore::new(Device::Cpu);
    let mut tiny = Llama::new(&tiny_vs.root(), None, &tiny_cfg);
    init_random(&tiny_vs, 0);
    tiny.fuse_projections();
    let reps: usize = std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    for b in [1usize, 8] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let tiny_prompts: Vec<Vec<i64>> =
            ids[..b].iter().map(|p| p.iter().map(|&x| x % 256).collect()).collect();
        let runs: [(&str, &Llama, &[Vec<i64>]); 3] = [
            ("unfused", &plain, &ids[..b]),
            ("fused", &fused, &ids[..b]),
            ("tiny", &tiny, &tiny_prompts),
        ];
        // Interleaved runs; the minimum is the least disturbed by other processes.
        let mut times = vec![Vec::new(); runs.len()];
        let mut c1 = cfg.clone();
        c1.max_new_tokens = 1;
        for _ in 0..reps {
            for (i, (_, model, prompts)) in runs.iter().enumerate() {
                let t0 = Instant::now();
                generate_ids(model, prompts, Adapter::Off, &c1, &mut rng).unwrap();
                let prefill = t0.elapsed().as_secs_f64() * 1e3;
                let t0 = Instant::now();
                generate_ids(model, prompts, Adapter::Off, &cfg, &mut rng).unwrap();
                let total = t0.elapsed().as_secs_f64() * 1e3;
                times[i].push((total, (total - prefill) / 63.0));
            }
        }
        for ((name, _, _), t) in runs.iter().zip(&mut times).filter(|(_, t)| !t.is_empty()) {
            t.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (min, step) = t[0];
            let med = t[t.len() / 2].0;
            println!(
                "B={b} {name}: 64 tokens min {min:.0} ms ({:.1} tok/s), median {med:.0} ms; \
                 decode step ≈ {step:.1} ms",
                (b * 64) as f64 / min * 1e3
            );
        }
        if std::env::var_os("PIECES").is_none() {
            continue;
        }
        // The pieces of one decode step at S ≈ 70 cached positions.
        let bi = b as i64;
        let s = 70;
        let (d, hd, h, hkv) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads());
        let x = Tensor::randn([bi, 1, d], (Kind::Float, Device::Cpu));
        let l0 = &plain.layers[0];
        let n = 15;
        let ns = 201; // small ops
        let mut row = Vec::new();
        let mut lin = 0.0;
        for (name, p) in [
            ("q", &l0.self_attn.q_proj),
            ("k", &l0.self_attn.k_proj),
            ("v", &l0.self_attn.v_proj),
            ("o", &l0.self_attn.o_proj),
            ("gate", &l0.mlp.gate_proj),
            ("up", &l0.mlp.up_proj),
        ] {
            let ms = time_ms(n, || {
                let _ = p.forward(&x, Adapter::Off);
            });
            lin += ms;
            row.push(format!("{name} {ms:.3}"));
        }
        let xf = Tensor::randn([bi, 1, c.intermediate_size], (Kind::Float, Device::Cpu));
        let ms = time_ms(n, || {
            let _ = l0.mlp.down_proj.forward(&xf, Adapter::Off);
        });
        lin += ms;
        row.push(format!("down {ms:.3}"));
        let lm = time_ms(n, || {
            let _ = x.select(1, 0).matmul(&model.lm_head.tr());
        });
        let lm_lin = time_ms(n, || {
            let _ = x.select(1, 0).linear::<Tensor>(&model.lm_head, None);
        });
        let lm_w_xt = time_ms(n, || {
            let _ = model.lm_head.matmul(&x.select(1, 0).tr()).tr().contiguous();
        });
        let lm_mv = time_ms(n, || {
            for r in 0..bi {
                let _ = model.lm_head.mv(&x.get(r).get(0));
            }
        });
        let q = Tensor::randn([bi, h, 1, hd], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([bi, hkv, s, hd], (Kind::Float, Device::Cpu));
        let mask = Tensor::ones([bi, 1, 1, s], (Kind::Bool, Device::Cpu));
        let sdpa_mask = time_ms(ns, || {
            let _ = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &k,
                Some(&mask),
                0.0,
                false,
                None,
                true,
            );
        });
        let sdpa_nomask = time_ms(ns, || {
            let _ = Tensor::scaled_dot_product_attention::<Tensor>(
                &q, &k, &k, None, 0.0, false, None, true,
            );
        });
        let cos = Tensor::randn([bi, 1, 1, hd], (Kind::Float, Device::Cpu));
        let rope = time_ms(ns, || {
            for y in [&q, &k.narrow(2, 0, 1)] {
                let half = hd / 2;
                let rot = Tensor::cat(&[y.narrow(3, half, half).neg(), y.narrow(3, 0, half)], 3);
                let _ = y * &cos + rot * &cos;
            }
        });
        let qk = Tensor::randn([bi, h + hkv, 1, hd], (Kind::Float, Device::Cpu));
        let rope_flip = time_ms(ns, || {
            let s = qk.size();
            let sw = qk.view([s[0], s[1], s[2], 2, s[3] / 2]).flip([3]).view(s.as_slice());
            let _ = &qk * &cos + sw * &cos;
        });
        let norm = time_ms(ns, || {
            let _ = l0.input_layernorm.forward(&x);
        });
        let w = &l0.input_layernorm.weight;
        let norm_manual = time_ms(ns, || {
            let xf = x.to_kind(Kind::Float);
            let ms = xf.square().mean_dim(-1, true, Kind::Float);
            let _ = (xf * (ms + 1e-5).rsqrt()).to_kind(Kind::Float) * w;
        });
        println!("  rope: q and k separately (cat) {rope:.4} ms, q+k together (flip) {rope_flip:.4} ms; rmsnorm manual {norm_manual:.4} ms, fused {norm:.4} ms");
        let logits = Tensor::randn([bi, c.vocab_size], (Kind::Float, Device::Cpu));
        let choose = time_ms(ns, || {
            let next = logits.argmax(-1, false);
            let _ = logits.log_softmax(-1, Kind::Float).gather(1, &next.unsqueeze(1), false);
        });
        let small = time_ms(ns, || {
            let _ = &x + &x;
        });
        let layers = c.num_hidden_layers as f64;
        println!(
            "  per layer: {} (sum {lin:.3} ms ×{layers} = {:.1} ms)",
            row.join(", "),
            lin * layers
        );
        println!(
            "  lm_head matmul(tr) {lm:.2} ms, linear {lm_lin:.2} ms, W·xᵀ {lm_w_xt:.2} ms, mv per row {lm_mv:.2} ms; \
             choose (argmax+log_softmax) {choose:.2} ms"
        );
        println!(
            "  SDPA S={s}: with mask {sdpa_mask:.3} ms, no mask {sdpa_nomask:.3} ms (×{layers}); \
             rope q+k {rope:.3} ms; rmsnorm {norm:.3} ms (×{}); one small add {small:.4} ms",
            2.0 * layers + 1.0
        );
    }
}
