//! Decode throughput of SmolLM2-135M-Instruct (panacea-lm, KV cache, greedy, 64 new tokens) at
//! batch 1 and 8, f32 and bf16, on the CPU. The peer is Hugging Face transformers `generate`
//! on the same dequantised weights: `scripts/hf_decode_bench.py` (see benches/README.md,
//! section "LM decode").
//!
//! Run: `cargo xtask fetch-model smollm2-135m && cargo bench -p panacea-benches -- lm_decode`
//! (add `PANACEA_BENCH_BF16=1` for the bf16 rows)
//!
//! EOS is disabled (id −1) so every row produces exactly 64 tokens, like the peer's
//! `min_new_tokens = 64`. Before timing, the batch-8 greedy tokens are checked against 8
//! single-row runs. Throughput = B × 64 new tokens per `generate` call (prefill included).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use panacea_lm::bench_prompts::DECODE_BENCH_PROMPTS as PROMPTS;
use panacea_lm::generate::{generate_ids, GenerateConfig, Sampling};
use panacea_lm::{load_model, Adapter, ChatTemplate};
use rand::SeedableRng;
use tch::{Device, Kind};

const NEW_TOKENS: i64 = 64;

fn bench(c: &mut Criterion) {
    panacea_core::device::init_torch();
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!("lm_decode: skipped, run `cargo xtask fetch-model smollm2-135m` first");
        return;
    }
    let mut group = c.benchmark_group("lm_decode");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    // bf16 only pays off on CPUs with native bf16 (AVX512-BF16/AMX) or on GPUs; elsewhere
    // libtorch converts on every matmul, so it is opt-in: PANACEA_BENCH_BF16=1.
    let mut kinds = vec![(Kind::Float, "f32")];
    if std::env::var_os("PANACEA_BENCH_BF16").is_some() {
        kinds.push((Kind::BFloat16, "bf16"));
    }
    for (kind, kname) in kinds {
        let m = load_model("smollm2-135m", Device::Cpu, kind).expect("load smollm2-135m");
        let t = ChatTemplate::default();
        let prompts: Vec<Vec<i64>> = PROMPTS
            .iter()
            .map(|p| m.tokenizer.encode(&t.user_prompt(p)).expect("encode"))
            .collect();
        let cfg = GenerateConfig {
            max_new_tokens: NEW_TOKENS,
            sampling: Sampling::Greedy,
            eos_ids: Vec::new(),
            pad_id: m.tokenizer.pad_id,
        };
        // Greedy decoding draws nothing from the RNG; it is passed because the API takes one.
        let run_rows = |rows: std::ops::Range<usize>| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            generate_ids(&m.model, &prompts[rows], Adapter::Off, &cfg, &mut rng).expect("generate")
        };
        let run = |b: usize| run_rows(0..b);
        // Correctness before timing (f32 only; bf16 batching legitimately rounds differently).
        if kind == Kind::Float {
            let batch = run(8);
            for i in 0..8 {
                let one = run_rows(i..i + 1);
                let same = batch
                    .response_ids
                    .get(i as i64)
                    .narrow(0, 0, 16)
                    .equal(&one.response_ids.get(0).narrow(0, 0, 16));
                assert!(same, "row {i}: batched greedy tokens differ from the single run");
            }
        }
        for b in [1usize, 8] {
            group.throughput(Throughput::Elements(b as u64 * NEW_TOKENS as u64));
            group.bench_function(
                BenchmarkId::new(format!("cpu_smollm2_135m_greedy64_{kname}"), format!("b{b}")),
                |bencher| {
                    bencher.iter_custom(|iters| {
                        let start = Instant::now();
                        for _ in 0..iters {
                            run(b);
                        }
                        start.elapsed()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion::criterion_group!(benches, bench);
