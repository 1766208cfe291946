//! `gpu_bench`: every GPU measurement of issue #10 in one call, on random weights of real
//! shapes (throughput does not depend on the weights' values, and the model files are too big
//! to take to the GPU machine).
//!
//! Workloads (keys match `scripts/gpu_reference.py`, which runs the same ones in PyTorch eager;
//! `benches/gpu/compare.py` joins the two JSON files and prints the ratios against the goals):
//!
//! - `roofline`: the run's own peaks: a square matmul in the chosen dtype (TFLOP/s) and a
//!   device-to-device copy (GB/s, bytes read + written).
//! - `fwdbwd`: whole-model forward + backward (cross-entropy over the full vocabulary) with the
//!   base frozen: `off` = frozen backprop (activation gradients only), `on` = SVD-LoRA on every
//!   projection with one λ, `rows` = one λ per sequence; `on_ungrouped` and `rows_ungrouped` the
//!   same with one adapter GEMM pair per projection instead of one per q/k/v and gate/up group
//!   (`Llama::set_grouped_adapters(false)`: the path before grouping). The base is fused as
//!   `load_model` fuses it (the grouped adapters add to its fused outputs). Shapes `gpt2-124m` (D 768, 12 layers,
//!   SwiGLU 2048, V 50,257: 124 M parameters) and `d2048` (TinyLlama-1.1B: D 2048, 22 layers,
//!   GQA 32/4, SwiGLU 5632, V 32,000).
//! - `decode`: `generate_ids` (greedy, preallocated KV cache, EOS never hit) on the SmolLM2-135M
//!   shape at B = 1, 8, 64, 256: `base` (`Adapter::Off`), `merged` (every adapted layer merged at
//!   one λ), `rows` (unmerged, one λ per row, factors prepared once per call as the PPO rollout
//!   does), `rows_unprepared` (the same without preparing), and through the `StaticDecoder`
//!   (static KV cache, each step one CUDA graph replay where graphs are available, the eager
//!   static step elsewhere: `graphs` says which): `graph_base`, `graph_rows` (prepared). Reports tokens/s and the fraction of the HBM
//!   roofline (weights + KV cache read per step, over the measured copy bandwidth).
//! - `ppo`: one MO-PPO iteration (`PpoTrainer::step`) on the SmolLM2-135M shape with two learned
//!   score models as objectives, and its split: generation, scoring, reference (log-probs under
//!   On/Off and critic values), update (`PpoTrainer::learn`).
//! - `dpo`: one MO-DPO step (`DpoTrainer::step`, no reference cache; the two sequences of a pair
//!   share a P-token prompt) and its split: reference log-probs, update (the rest).
//!
//! Run on a GPU machine (see `benches/gpu/run.sh`, which also runs the PyTorch reference):
//! `gpu_bench --device cuda --dtype bf16 --sizes full --out DIR`. CPU smoke run (< 1 min):
//! `cargo run -p panacea-benches --bin gpu_bench -- --device cpu --dtype f32 --sizes small
//! --out /tmp/gpu-bench-smoke`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::{seed_everything, Objective, PreferenceVector};
use panacea_dpo::{DpoTrainer, DpoTrainerConfig, OptimConfig, PairBatch, StepPreference};
use panacea_lm::generate::{generate_ids, GenerateConfig, Sampling};
use panacea_lm::{CausalLm, Llama, LlamaConfig, StaticDecoder};
use panacea_rlhf::rollout::{
    generate_config, response_log_probs, rollout, score_all, ModelSource, RewardSource, RolloutView,
};
use panacea_rlhf::score::{score_adapter_config, LmScoreModel};
use panacea_rlhf::{PpoConfig, PpoParts, PpoTrainer, PromptBatch};
use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

/// Which sizes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Sizes {
    /// Tiny shapes that finish on a 2-core CPU in well under a minute (tests, smoke runs).
    Small,
    /// The shapes (GPT-2-124M, d = 2048, SmolLM2-135M; B up to 256): GPU only.
    Full,
}

/// A workload group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    Roofline,
    Fwdbwd,
    Decode,
    Ppo,
    Dpo,
}

/// Flags of `gpu_bench`.
#[derive(Parser, Debug)]
#[command(name = "gpu_bench", about = "Issue #10: roofline, fwd+bwd, decode, PPO and DPO timings")]
struct Args {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Base-weight dtype, f32 or bf16 (adapters, heads and optimiser state stay f32).
    #[arg(long, default_value = "bf16")]
    dtype: DType,
    /// small (CPU smoke sizes) or full (the shapes).
    #[arg(long, value_enum, default_value = "full")]
    sizes: Sizes,
    /// Folder for `gpu_bench.json` (created).
    #[arg(long, default_value = "gpu-bench-out")]
    out: PathBuf,
    /// Run only these workloads (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Timed repetitions per case (default: 10 for small cases, fewer for long ones).
    #[arg(long)]
    iters: Option<usize>,
    /// libtorch intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Seed of the random weights and of the sampling streams.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Everything one run shares.
struct Ctx {
    device: Device,
    kind: Kind,
    sizes: Sizes,
    iters: Option<usize>,
    seed: u64,
    results: Vec<Value>,
    /// Measured copy bandwidth (bytes/s), for the decode roofline fraction.
    copy_bw: Option<f64>,
}

impl Ctx {
    fn full(&self) -> bool {
        self.sizes == Sizes::Full
    }

    fn iters(&self, default: usize) -> usize {
        self.iters.unwrap_or(default).max(1)
    }

    /// Records one result and prints its line.
    fn record(&mut self, key: &str, ms: &[f64], extra: Value) {
        let med = median(ms);
        let mut row = json!({ "key": key, "ms": med, "ms_all": ms });
        if let (Value::Object(r), Value::Object(e)) = (&mut row, extra) {
            r.extend(e);
        }
        let note = ["tflops", "gb_per_s", "tokens_per_s", "hbm_fraction", "max_abs_diff"]
            .iter()
            .filter_map(|k| row.get(*k).and_then(Value::as_f64).map(|v| format!("{k} {v:.4e}")))
            .collect::<Vec<_>>()
            .join("  ");
        println!("{key:<44} {med:>11.3} ms  {note}");
        self.results.push(row);
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Waits for the device's queued work (a no-op on the CPU).
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Wall-clock milliseconds of `iters` runs of `f` after `warmup` untimed ones, each synced.
fn time_ms(device: Device, warmup: usize, iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        f();
    }
    sync(device);
    (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            sync(device);
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Shapes.

fn llama(d: i64, ffn: i64, layers: i64, heads: i64, kv: i64, vocab: i64) -> LlamaConfig {
    LlamaConfig {
        hidden_size: d,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        vocab_size: vocab,
        tie_word_embeddings: true,
        rope_theta: 10_000.0,
        max_position_embeddings: 4096,
        ..LlamaConfig::tiny()
    }
}

/// GPT-2-124M's size as a Llama: D 768, 12 layers, 12 heads, SwiGLU 2048 (the same MLP
/// parameters as GPT-2's 4·D GELU MLP), GPT-2's 50,257-token vocabulary, tied head.
fn gpt2_124m() -> LlamaConfig {
    llama(768, 2048, 12, 12, 12, 50_257)
}

/// TinyLlama-1.1B: D 2048, 22 layers, 32 query / 4 KV heads, SwiGLU 5632, V 32,000, own head.
fn d2048() -> LlamaConfig {
    LlamaConfig { tie_word_embeddings: false, ..llama(2048, 5632, 22, 32, 4, 32_000) }
}

/// SmolLM2-135M (the project's model): D 576, 30 layers, 9 / 3 heads, SwiGLU 1536, V 49,152.
fn smollm2_135m() -> LlamaConfig {
    LlamaConfig { rope_theta: 100_000.0, ..llama(576, 1536, 30, 9, 3, 49_152) }
}

/// Small stand-ins of the same structure for CPU smoke runs.
fn small(d: i64, layers: i64, vocab: i64) -> LlamaConfig {
    llama(d, 2 * d, layers, 4, 2, vocab)
}

/// The policy adapter of every workload: k = 8, m = 2 (R = 10), all seven projections.
fn adapter_config() -> SvdLoraConfig {
    SvdLoraConfig::new(2)
}

/// A model with random base weights (drawn on the device: host-side init of 1.1 B weights would
/// take longer than the benchmark) in `kind`, and an f32 adapter whose σ and s are non-zero, so
/// the adapter really changes the output and merged-vs-unmerged is a meaningful check.
fn build(
    cfg: &LlamaConfig,
    adapter: &SvdLoraConfig,
    device: Device,
    kind: Kind,
    seed: u64,
) -> (nn::VarStore, nn::VarStore, Llama) {
    tch::manual_seed(seed as i64);
    if device.is_cuda() {
        tch::Cuda::manual_seed_all(seed);
    }
    let mut base_vs = nn::VarStore::new(device);
    let adapter_vs = nn::VarStore::new(device);
    let mut model = Llama::new(&base_vs.root(), Some((&adapter_vs.root(), adapter)), cfg);
    tch::no_grad(|| {
        for (name, v) in base_vs.variables() {
            if name.ends_with("norm.weight") {
                let _ = v.shallow_clone().fill_(1.0);
            } else {
                let _ = v.shallow_clone().normal_(0.0, 0.02);
            }
        }
        for (name, v) in adapter_vs.variables() {
            if name.ends_with("svd_lora_sigma") || name.ends_with("svd_lora_pref_scale") {
                let _ = v.shallow_clone().fill_(0.05);
            }
        }
    });
    if kind == Kind::BFloat16 {
        // Before any view of the base is made (views made earlier keep the f32 tensors).
        base_vs.bfloat16();
    }
    // As `load_model` does: q/k/v and gate/up in one buffer each (the adapters then add to
    // their fused outputs as one group each).
    model.fuse_projections();
    (base_vs, adapter_vs, model)
}

fn param_bytes(vs: &nn::VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64).sum()
}

fn param_count(vs: &nn::VarStore) -> i64 {
    vs.variables().values().map(|t| t.numel() as i64).sum()
}

fn random_ids(b: i64, t: i64, vocab: i64, device: Device) -> Tensor {
    // Ids ≥ 3 keep clear of the special tokens.
    Tensor::randint_low(3, vocab, [b, t], (Kind::Int64, device))
}

/// λ [K] = (0.7, 0.3) and a [B, K] batch of distinct rows.
fn prefs(b: i64, device: Device) -> (Tensor, Tensor) {
    let one = Tensor::from_slice(&[0.7f32, 0.3]).to_device(device);
    let w = Tensor::linspace(0.0, 1.0, b, (Kind::Float, device)); // [B]
    let rows = Tensor::stack(&[&w, &(1.0 - &w)], 1); // [B, 2]
    (one, rows)
}

/// Merges W0 + ΔW(λ) into every adapted layer's cache (`SvdLoraLinear::merge`).
fn merge_all(model: &mut Llama, pref: &Tensor) -> Result<()> {
    for p in model.linears_mut() {
        p.merge(pref)?;
    }
    Ok(())
}

fn unmerge_all(model: &mut Llama) {
    for p in model.linears_mut() {
        p.unmerge();
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn roofline(cx: &mut Ctx) {
    let dev = cx.device;
    let n: i64 = if cx.full() { 8192 } else { 256 };
    let a = Tensor::randn([n, n], (cx.kind, dev));
    let b = Tensor::randn([n, n], (cx.kind, dev));
    let iters = cx.iters(if cx.full() { 20 } else { 5 });
    let ms = time_ms(dev, 2, iters, || {
        let _ = a.matmul(&b);
    });
    let tflops = 2.0 * (n as f64).powi(3) / (median(&ms) * 1e-3) / 1e12;
    cx.record(
        &format!("roofline/matmul{n}"),
        &ms,
        json!({ "workload": "roofline", "tflops": tflops, "n": n }),
    );
    let bytes: i64 = if cx.full() { 1 << 30 } else { 32 << 20 };
    let src = Tensor::zeros([bytes / 4], (Kind::Float, dev));
    let dst = Tensor::zeros([bytes / 4], (Kind::Float, dev));
    let ms = time_ms(dev, 2, iters, || {
        dst.shallow_clone().copy_(&src);
    });
    // A copy reads and writes every byte.
    let bw = 2.0 * bytes as f64 / (median(&ms) * 1e-3);
    cx.copy_bw = Some(bw);
    cx.record(
        "roofline/copy",
        &ms,
        json!({ "workload": "roofline", "gb_per_s": bw / 1e9, "bytes": bytes }),
    );
}

fn fwdbwd(cx: &mut Ctx) -> Result<()> {
    let dev = cx.device;
    let cases: Vec<(&str, LlamaConfig, i64, i64)> = if cx.full() {
        vec![("gpt2-124m", gpt2_124m(), 16, 1024), ("d2048", d2048(), 8, 1024)]
    } else {
        vec![("gpt2-124m", small(64, 2, 512), 2, 32), ("d2048", small(128, 2, 512), 2, 32)]
    };
    for (name, cfg, b, t) in cases {
        let (base_vs, adapter_vs, mut model) =
            build(&cfg, &adapter_config(), dev, cx.kind, cx.seed);
        let ids = random_ids(b, t, cfg.vocab_size, dev);
        let mask = ids.ones_like();
        let targets = random_ids(b, t, cfg.vocab_size, dev).view([-1]);
        let (one, rows) = prefs(b, dev);
        // Frozen backprop: a gradient is wanted for the first norm's weight only, so backward
        // runs through every layer (activation gradients) and computes no weight gradient.
        let probe = model.layers[0].input_layernorm.weight.shallow_clone();
        let probe = probe.set_requires_grad(true);
        let trainable = adapter_vs.trainable_variables();
        let step = |model: &Llama, adapter: Adapter<'_>| {
            let logits = model.logits(&ids, &mask, adapter); // [B, T, V] f32
            let loss = logits.view([-1, cfg.vocab_size]).cross_entropy_for_logits(&targets); // []
            loss.backward();
            for v in trainable.iter().chain([&probe]) {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
        };
        let iters = cx.iters(if cx.full() { 10 } else { 3 });
        let tokens = (b * t) as f64;
        let info = json!({
            "workload": "fwdbwd", "shape": name, "batch": b, "seq": t,
            "params": param_count(&base_vs), "adapter_params": param_count(&adapter_vs),
        });
        for (mode, adapter, grouped) in [
            ("off", Adapter::Off, true),
            ("on", Adapter::On { pref: &one }, true),
            ("rows", Adapter::On { pref: &rows }, true),
            ("on_ungrouped", Adapter::On { pref: &one }, false),
            ("rows_ungrouped", Adapter::On { pref: &rows }, false),
        ] {
            model.set_grouped_adapters(grouped);
            let groups = model.adapter_groups_in_use(adapter);
            let m = &model;
            let ms = time_ms(dev, 2, iters, || step(m, adapter));
            let mut extra = info.clone();
            extra["mode"] = json!(mode);
            extra["adapter_groups"] = json!(groups);
            extra["tokens_per_s"] = json!(tokens / (median(&ms) * 1e-3));
            cx.record(&format!("fwdbwd/{name}/{mode}"), &ms, extra);
        }
        let _ = probe.set_requires_grad(false);
    }
    Ok(())
}

fn decode(cx: &mut Ctx) -> Result<()> {
    let dev = cx.device;
    let (cfg, batches, p, n) = if cx.full() {
        (smollm2_135m(), vec![1i64, 8, 64, 256], 32i64, 128i64)
    } else {
        (small(64, 2, 512), vec![1, 4], 8, 8)
    };
    let (base_vs, _adapter_vs, mut model) = build(&cfg, &adapter_config(), dev, cx.kind, cx.seed);
    let weight_bytes = param_bytes(&base_vs) as f64;
    let gen_cfg = GenerateConfig {
        max_new_tokens: n,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id: 0,
    };
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    // Correctness before timing: merged equals unmerged (within the dtype's rounding).
    let (one, _) = prefs(1, dev);
    let probe_ids = random_ids(2, p, cfg.vocab_size, dev);
    let probe_mask = probe_ids.ones_like();
    let unmerged =
        tch::no_grad(|| model.logits(&probe_ids, &probe_mask, Adapter::On { pref: &one }));
    merge_all(&mut model, &one)?;
    let merged = tch::no_grad(|| model.logits(&probe_ids, &probe_mask, Adapter::On { pref: &one }));
    unmerge_all(&mut model);
    let diff = (&merged - &unmerged).abs().max().double_value(&[]);
    let scale = unmerged.abs().max().double_value(&[]);
    cx.record(
        "decode/check/merged_vs_unmerged",
        &[0.0],
        json!({ "workload": "check", "max_abs_diff": diff, "max_abs_logit": scale }),
    );
    let kv_per_pos = 2 * cfg.num_hidden_layers * cfg.kv_heads() * cfg.head_dim();
    let elt = cx.kind.elt_size_in_bytes() as f64;
    for &b in &batches {
        let prompts: Vec<Vec<i64>> =
            Vec::<Vec<i64>>::try_from(random_ids(b, p, cfg.vocab_size, Device::Cpu))?;
        let (one, rows) = prefs(b, dev);
        let iters = cx.iters(2);
        // Prompt plus new tokens: the static decoder's cache (one per batch bucket).
        let mut decoder = StaticDecoder::new(p + n, true)?;
        for mode in ["base", "merged", "rows", "rows_unprepared", "graph_base", "graph_rows"] {
            if mode == "merged" {
                merge_all(&mut model, &one)?;
            }
            let adapter = match mode {
                "base" => Adapter::Off,
                "merged" => Adapter::On { pref: &one },
                _ => Adapter::On { pref: &rows },
            };
            let mut err = None;
            let ms = time_ms(dev, 1, iters, || {
                // `rows` prepares the adapter's factors once per call, as the PPO rollout does.
                let out = if mode == "rows" {
                    model
                        .with_prepared_adapter(&rows, |m| {
                            generate_ids(m, &prompts, adapter, &gen_cfg, &mut rng)
                        })
                        .and_then(|g| g)
                } else if mode == "graph_rows" {
                    model
                        .with_prepared_adapter(&rows, |m| {
                            decoder.generate_ids(m, &prompts, adapter, &gen_cfg, &mut rng)
                        })
                        .and_then(|g| g)
                } else if mode == "graph_base" {
                    decoder.generate_ids(&model, &prompts, Adapter::Off, &gen_cfg, &mut rng)
                } else {
                    generate_ids(&model, &prompts, adapter, &gen_cfg, &mut rng)
                };
                if let Err(e) = out {
                    err = Some(e);
                }
            });
            if let Some(e) = err {
                bail!("decode b{b} {mode}: {e}");
            }
            unmerge_all(&mut model);
            let secs = median(&ms) * 1e-3;
            let tokens_per_s = (b * n) as f64 / secs;
            // Bytes each decode step must read at least: every weight once (the tied head too)
            // and the KV cache of all positions so far (mean context P + (N − 1) / 2).
            let mean_ctx = p as f64 + (n as f64 - 1.0) / 2.0;
            let bytes_per_step = weight_bytes + (b * kv_per_pos) as f64 * mean_ctx * elt;
            let achieved = bytes_per_step * n as f64 / secs;
            let mut extra = json!({
                "workload": "decode", "batch": b, "prompt": p, "new_tokens": n, "mode": mode,
                "tokens_per_s": tokens_per_s, "bytes_per_step": bytes_per_step,
                "achieved_gb_per_s": achieved / 1e9,
            });
            if mode.starts_with("graph") {
                // Whether the steps were replayed graphs or eager static steps, and why.
                extra["graphs"] = json!(decoder.replayed_steps() > 0);
                let why =
                    decoder.graphs_unavailable(dev).or(decoder.capture_error().map(String::from));
                extra["graphs_unavailable"] = json!(why);
            }
            if let Some(bw) = cx.copy_bw {
                extra["hbm_fraction"] = json!(achieved / bw);
            }
            cx.record(&format!("decode/b{b}/{mode}"), &ms, extra);
        }
    }
    Ok(())
}

fn ppo(cx: &mut Ctx) -> Result<()> {
    let dev = cx.device;
    let (cfg, b, p, n, mb) = if cx.full() {
        (smollm2_135m(), 64i64, 64i64, 128i64, 16usize)
    } else {
        (small(64, 2, 512), 4, 8, 8, 2)
    };
    let adapter = adapter_config();
    let (_base_vs, adapter_vs, policy) = build(&cfg, &adapter, dev, cx.kind, cx.seed);
    // Two learned objectives (reward and cost models: backbone view + own adapter + head), the
    // expensive scorers of a real run; their stores are frozen.
    let mut score_stores = Vec::new();
    let mut sources: Vec<Box<dyn RewardSource>> = Vec::new();
    for name in ["reward", "cost"] {
        let vs = nn::VarStore::new(dev);
        let model = LmScoreModel::new(&policy, &vs.root(), &score_adapter_config(8, 16.0));
        let mut vs = vs;
        vs.freeze();
        score_stores.push(vs);
        sources.push(Box::new(ModelSource { name: name.into(), model }));
    }
    let mut ppo_cfg = PpoConfig::default();
    ppo_cfg.rollout.max_new_tokens = n;
    ppo_cfg.ppo.mini_batch_size = mb;
    ppo_cfg.ppo.update_iters = 1;
    ppo_cfg.optim.warmup_ratio = 0.0;
    let gen_cfg = generate_config(&ppo_cfg.rollout, &[], 0);
    let parts = PpoParts {
        critic_adapter: adapter.clone(),
        objectives: vec![Objective::reward("reward"), Objective::cost("cost")],
        sources,
        eos_ids: Vec::new(),
        pad_id: 0,
        tokenizer: None,
        total_steps: 1000,
        policy,
        adapter_vs,
    };
    let mut trainer = PpoTrainer::new(ppo_cfg, parts)?;
    let ids: Vec<Vec<i64>> =
        Vec::<Vec<i64>>::try_from(random_ids(b, p, cfg.vocab_size, Device::Cpu))?;
    let batch = PromptBatch { prompts: vec![String::new(); b as usize], ids };
    let mut rng = seed_everything(cx.seed);
    let pref_list: Vec<PreferenceVector> = (0..b)
        .map(|i| {
            let w = i as f64 / (b - 1).max(1) as f64;
            PreferenceVector::new(vec![w, 1.0 - w])
        })
        .collect::<Result<_, _>>()?;
    let (_, pref_rows) = prefs(b, dev);
    let iters = cx.iters(2);
    let mut err = None;
    let step_ms = time_ms(dev, 1, iters, || {
        if let Err(e) = trainer.step(&batch, StepPreference::PerRow(&pref_list), &mut rng) {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        bail!("PPO step: {e}");
    }
    let info =
        json!({ "workload": "ppo", "batch": b, "prompt": p, "new_tokens": n, "mini_batch": mb });
    let mut extra = info.clone();
    extra["tokens_per_s"] = json!((b * n) as f64 / (median(&step_ms) * 1e-3));
    cx.record("ppo/iteration", &step_ms, extra);

    // The split, phase by phase with the trainer's own public pieces, each synced.
    let (mut gen_ms, mut score_ms, mut ref_ms, mut upd_ms) = (vec![], vec![], vec![], vec![]);
    for _ in 0..iters {
        let t0 = Instant::now();
        let gen = rollout(&mut trainer.policy, &batch, &pref_rows, &gen_cfg, &mut rng.sampling)?;
        sync(dev);
        gen_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let responses = vec![String::new(); b as usize];
        let view = RolloutView::of(&gen, &batch.prompts, &responses);
        let t0 = Instant::now();
        let _scores = score_all(trainer.sources(), &view)?;
        sync(dev);
        score_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        tch::no_grad(|| -> Result<()> {
            let on = Adapter::On { pref: &pref_rows };
            let _ = response_log_probs(
                &trainer.policy,
                &gen.ids,
                &gen.attention_mask,
                on,
                gen.prompt_len,
            )?;
            let off = Adapter::Off;
            let _ = response_log_probs(
                &trainer.policy,
                &gen.ids,
                &gen.attention_mask,
                off,
                gen.prompt_len,
            )?;
            let _ = trainer.critic.values(&gen.ids, &gen.attention_mask, &pref_rows);
            Ok(())
        })?;
        sync(dev);
        ref_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let exp = trainer.make_experience(&batch, StepPreference::PerRow(&pref_list), &mut rng)?;
        sync(dev);
        let t0 = Instant::now();
        trainer.learn(&exp, &mut rng)?;
        sync(dev);
        upd_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    for (phase, ms) in
        [("generation", gen_ms), ("scoring", score_ms), ("reference", ref_ms), ("update", upd_ms)]
    {
        let mut extra = info.clone();
        extra["phase"] = json!(phase);
        cx.record(&format!("ppo/{phase}"), &ms, extra);
    }
    Ok(())
}

fn dpo(cx: &mut Ctx) -> Result<()> {
    let dev = cx.device;
    let (cfg, b, p, t) = if cx.full() {
        (smollm2_135m(), 16i64, 256i64, 512i64)
    } else {
        (small(64, 2, 512), 2, 8, 16)
    };
    let (_base_vs, adapter_vs, model) = build(&cfg, &adapter_config(), dev, cx.kind, cx.seed);
    let k = 2usize;
    // lr 5e-4: the trainer's default when this benchmark was written (the rate does not change
    // the timings).
    let settings = DpoTrainerConfig {
        optim: OptimConfig { lr: 5e-4, ..OptimConfig::default() },
        ..DpoTrainerConfig::default()
    };
    let mut trainer = DpoTrainer::new(model, adapter_vs, settings, k)?;
    // Both responses of every pair fill the sequence; the response starts at column P, and
    // the two sequences of a pair share their P prompt tokens, as real pairs do (the trainer
    // runs a shared prompt once; scripts/gpu_reference.py builds the same ids).
    let ids = random_ids(2 * b, t, cfg.vocab_size, dev); // [2B, T]
    ids.narrow(0, b, b).narrow(1, 0, p).copy_(&ids.narrow(0, 0, b).narrow(1, 0, p));
    let a = t - 1;
    let cols = Tensor::arange(a, (Kind::Int64, dev)); // [A]
    let response_mask = cols.ge(p - 1).unsqueeze(0).expand([2 * b, a], false).contiguous(); // [2B, A]
    let labels = Tensor::ones([b, k as i64], (Kind::Float, dev)); // [B, K]
    let batch = PairBatch {
        index: (0..b as usize).collect(),
        attention_mask: ids.ones_like(),
        ids,
        response_mask,
        labels,
    };
    let pref = PreferenceVector::new(vec![0.7, 0.3])?;
    let iters = cx.iters(if cx.full() { 5 } else { 2 });
    let info = json!({ "workload": "dpo", "pairs": b, "prompt": p, "seq": t });
    let mut err = None;
    let step_ms = time_ms(dev, 1, iters, || {
        if let Err(e) = trainer.step(&batch, StepPreference::Shared(&pref), None) {
            err = Some(e);
        }
    });
    let ref_ms = time_ms(dev, 0, iters, || {
        if let Err(e) = trainer.reference_logps(&batch, None) {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        bail!("DPO step: {e}");
    }
    let mut extra = info.clone();
    extra["tokens_per_s"] = json!((2 * b * t) as f64 / (median(&step_ms) * 1e-3));
    cx.record("dpo/step", &step_ms, extra);
    let mut extra = info.clone();
    extra["phase"] = json!("reference");
    cx.record("dpo/reference", &ref_ms, extra);
    let upd: Vec<f64> = step_ms.iter().zip(&ref_ms).map(|(s, r)| (s - r).max(0.0)).collect();
    let mut extra = info;
    extra["phase"] = json!("update");
    cx.record("dpo/update", &upd, extra);
    Ok(())
}

fn main() -> Result<()> {
    let init = panacea_core::device::init_torch();
    let args = Args::parse();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = args.device.resolve().context("resolving --device")?;
    let kind = args.dtype.kind();
    println!(
        "gpu_bench: device {device:?}, dtype {}, sizes {:?}, libtorch_cuda loaded: {}, CUDA devices: {}",
        args.dtype,
        args.sizes,
        init.cuda_library_loaded,
        if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 }
    );
    let mut cx = Ctx {
        device,
        kind,
        sizes: args.sizes,
        iters: args.iters,
        seed: args.seed,
        results: Vec::new(),
        copy_bw: None,
    };
    let all =
        [Workload::Roofline, Workload::Fwdbwd, Workload::Decode, Workload::Ppo, Workload::Dpo];
    let run: Vec<Workload> = if args.only.is_empty() {
        all.to_vec()
    } else {
        all.into_iter().filter(|w| args.only.contains(w)).collect()
    };
    let t0 = Instant::now();
    let mut failures = Vec::new();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let path = args.out.join("gpu_bench.json");
    // Rewritten after every workload, so a run cut short by a time limit keeps its numbers.
    let write = |cx: &Ctx, failures: &[String]| -> Result<()> {
        let report = json!({
            "tool": "panacea gpu_bench",
            "device": format!("{device:?}"),
            "dtype": args.dtype.to_string(),
            "sizes": format!("{:?}", args.sizes).to_lowercase(),
            "threads": tch::get_num_threads(),
            "wall_s": t0.elapsed().as_secs_f64(),
            "failures": failures,
            "results": cx.results,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    };
    for w in run {
        let r = match w {
            Workload::Roofline => {
                roofline(&mut cx);
                Ok(())
            }
            Workload::Fwdbwd => fwdbwd(&mut cx),
            Workload::Decode => decode(&mut cx),
            Workload::Ppo => ppo(&mut cx),
            Workload::Dpo => dpo(&mut cx),
        };
        if let Err(e) = r {
            // Keep going: one failed workload should not cost the others' numbers.
            eprintln!("workload {w:?} failed: {e:#}");
            failures.push(format!("{w:?}: {e:#}"));
        }
        write(&cx, &failures)?;
    }
    println!("wrote {} ({:.1} s)", path.display(), t0.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("some workloads failed (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU smoke run of issue #10's bench (`cargo test -p panacea-benches`): every workload
    /// runs at small sizes, reports a positive time for each of its keys (the keys
    /// `scripts/gpu_reference.py` and `benches/gpu/compare.py` join on), and the merged-λ model
    /// equals the unmerged one.
    #[test]
    fn small_sizes_run_every_workload_on_the_cpu() {
        panacea_core::device::init_torch();
        // One intra-op thread: on a busy 2-core machine OpenMP barriers made two threads many
        // times slower (ARCHITECTURE.md, build and test times).
        tch::set_num_threads(1);
        let mut cx = Ctx {
            device: Device::Cpu,
            kind: Kind::Float,
            sizes: Sizes::Small,
            iters: Some(1),
            seed: 0,
            results: Vec::new(),
            copy_bw: None,
        };
        roofline(&mut cx);
        fwdbwd(&mut cx).expect("fwdbwd");
        decode(&mut cx).expect("decode");
        ppo(&mut cx).expect("ppo");
        dpo(&mut cx).expect("dpo");
        let key = |r: &Value| r["key"].as_str().unwrap_or_default().to_owned();
        let keys: Vec<String> = cx.results.iter().map(key).collect();
        for want in [
            "roofline/matmul256",
            "roofline/copy",
            "fwdbwd/gpt2-124m/off",
            "fwdbwd/gpt2-124m/on",
            "fwdbwd/d2048/rows",
            "decode/b1/base",
            "decode/b4/merged",
            "decode/b4/rows",
            "decode/b4/graph_base",
            "decode/b4/graph_rows",
            "fwdbwd/d2048/on_ungrouped",
            "ppo/iteration",
            "ppo/generation",
            "ppo/scoring",
            "ppo/reference",
            "ppo/update",
            "dpo/step",
            "dpo/reference",
            "dpo/update",
        ] {
            assert!(keys.iter().any(|k| k == want), "{want} missing from {keys:?}");
        }
        for r in &cx.results {
            if r["workload"] == "check" {
                let diff = r["max_abs_diff"].as_f64().expect("diff");
                assert!(diff < 1e-4, "merged vs unmerged logits differ by {diff}");
            } else if r["phase"] != "update" {
                let ms = r["ms"].as_f64().expect("ms");
                assert!(ms.is_finite() && ms > 0.0, "{}: {ms} ms", key(r));
            }
        }
        // The grouped adapters run (two groups per layer, 2 layers) and can be switched off.
        let on = cx.results.iter().find(|r| r["key"] == "fwdbwd/d2048/on").expect("on");
        assert_eq!(on["adapter_groups"], 4, "{on}");
        let single = cx.results.iter().find(|r| r["key"] == "fwdbwd/d2048/on_ungrouped");
        assert_eq!(single.expect("on_ungrouped")["adapter_groups"], 0);
        // On a CPU the static decoder runs eagerly and says why.
        let graph = cx.results.iter().find(|r| r["key"] == "decode/b4/graph_base").expect("g");
        assert_eq!(graph["graphs"], false, "{graph}");
        assert!(
            graph["graphs_unavailable"].as_str().is_some_and(|w| w.contains("CUDA")),
            "{graph}"
        );
        let frac = cx.results.iter().find(|r| r["key"] == "decode/b4/base").expect("b4");
        assert!(frac["hbm_fraction"].as_f64().is_some_and(|f| f > 0.0), "{frac}");
    }
}
