//! The memory estimate of a DPO step ([`panacea_dpo::pair_step_memory_plan`], the formula of
//! `panacea_lm::memory_plan`) against the peak measured on the CPU, with and without
//! activation checkpointing.
//!
//! What is measured: a child process of this test binary (so that no other test's tensors are
//! counted) builds a small random Llama (D = 256, 4 layers, V = 8,192) with its adapter and
//! takes two DPO steps on 4 pairs of 128-token sequences, every position scored (pairs without
//! a common prefix, so the unpacked path runs on exactly the shape the estimate assumes). The
//! first step allocates what stays (AdamW's moments, BLAS and libtorch kernel buffers); the
//! second step's rise of the peak resident set (`VmHWM`, reset just before) over the resident
//! set before it is what a step holds while it runs, set against the estimate's activations,
//! head and mask. The child runs with glibc's mmap threshold fixed at 64 KiB
//! (`MALLOC_MMAP_THRESHOLD_`), so a freed tensor leaves the resident set instead of staying in
//! malloc's heap. (The base weights and adapter state are counted exactly by the formula's
//! hand-checked unit test.)
//!
//! The same measurement through [`panacea_dpo::probe_dpo_step`] (what the `dpo_memory` bench
//! runs at 8B on a GPU), on the same shape read from a config.json, must land in the same band.

use std::process::Command;

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::preference::{PreferenceVector, StepPreference};
use panacea_dpo::{pair_step_memory_plan, DpoTrainerConfig, EncodedPair, PairBatch, SeqLogp};
use panacea_lm::LlamaConfig;
use panacea_shim::memory::{process_peak_rss, process_rss, reset_process_peak_rss};
use rand::{Rng, SeedableRng};
use tch::Device;

use crate::common::{settings, tiny_trainer_with, EOS};

/// Tells the child half ([`dpo_step_peak_memory`]) to run, and whether with checkpointing.
const CHILD_VAR: &str = "PANACEA_TEST_MEMORY_CHECKPOINTING";
const PAIRS: usize = 4;
/// The band the measured peak must fall in, as a multiple of the estimate. The estimate
/// counts the tensors autograd keeps for the backward pass; the backward adds the gradients in
/// flight on top (the head's [N, V] f32 logit gradient alone is half the estimate's head part,
/// one layer's activation gradients come with each layer), so the peak lies above the
/// estimate and below twice it. Measured on the 2-core dev VM: 1.42× plain (213 MB against
/// 150 MB), 1.49× checkpointed (139 MB against 94 MB).
const MIN_RATIO: f64 = 1.0;
const MAX_RATIO: f64 = 2.0;
const SEQ_LEN: usize = 128;

fn small_model() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 256,
        intermediate_size: 768,
        num_hidden_layers: 4,
        vocab_size: 8192,
        ..LlamaConfig::tiny()
    }
}

/// The adapter [`tiny_trainer_with`] builds for 2 objectives.
fn adapter() -> SvdLoraConfig {
    SvdLoraConfig { rank: 4, alpha: 8.0, ..SvdLoraConfig::new(2) }
}

/// The child half: prints `peak <bytes> estimate <bytes>` for one step.
#[test]
#[ignore = "the child half of estimate_is_within_a_factor_of_the_measured_cpu_peak"]
fn dpo_step_peak_memory() {
    let Ok(flag) = std::env::var(CHILD_VAR) else { return };
    let checkpointing = flag == "1";
    tch::set_num_threads(1);
    // libtorch's one-time allocations (thread pools, the autograd engine) happen before the
    // baseline: a small forward and backward.
    let warm = tch::Tensor::ones([4, 4], (tch::Kind::Float, Device::Cpu)).set_requires_grad(true);
    warm.matmul(&warm).sum(tch::Kind::Float).backward();

    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut tokens = |first: i64| {
        let mut r: Vec<i64> = (0..SEQ_LEN - 1).map(|_| rng.gen_range(3..8192)).collect();
        r[0] = first; // different first tokens: no common prefix to pack
        r
    };
    let pairs: Vec<EncodedPair> = (0..PAIRS)
        .map(|i| {
            let (a, b) = (tokens(3), tokens(4));
            EncodedPair::new(i, &[], [a.as_slice(), b.as_slice()], EOS, vec![1, -1], SEQ_LEN)
                .expect("labels")
                .expect("kept")
        })
        .collect();
    let refs: Vec<&EncodedPair> = pairs.iter().collect();
    let batch = PairBatch::collate(&refs, 2, 0, SeqLogp::ResponseSum, Device::Cpu).expect("batch");
    let pref = PreferenceVector::new(vec![0.5, 0.5]).expect("pref");

    let trainer_settings =
        DpoTrainerConfig { activation_checkpointing: checkpointing, ..settings(1e-3) };
    let (_base, mut trainer) = tiny_trainer_with(&small_model(), 2, trainer_settings, 5);
    // The first step allocates what stays (AdamW's moments, the BLAS library's and libtorch's
    // kernel buffers); the second step's rise over the resident set before it is what a step
    // holds while it runs: the estimate's activations, head and mask.
    trainer.step(&batch, StepPreference::Shared(&pref), None).expect("first step");
    reset_process_peak_rss().expect("reset");
    let before = process_rss().expect("rss");
    trainer.step(&batch, StepPreference::Shared(&pref), None).expect("second step");
    let peak = process_peak_rss().expect("peak") - before;
    let plan = pair_step_memory_plan(
        &small_model(),
        &adapter(),
        PAIRS as i64,
        SEQ_LEN as i64,
        4,
        checkpointing,
    );
    let estimate = plan.activation_bytes + plan.head_bytes + plan.mask_bytes;
    println!("\npeak {peak} estimate {estimate}");
}

/// (measured peak, estimate) in bytes of one step, from a child process.
fn measure(checkpointing: bool) -> (f64, f64) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "memory::dpo_step_peak_memory", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_VAR, if checkpointing { "1" } else { "0" })
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let line = text.lines().find(|l| l.starts_with("peak ")).expect("a result line");
    let v: Vec<f64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    (v[0], v[1])
}

#[test]
fn estimate_is_within_a_factor_of_the_measured_cpu_peak() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: the resident set is read from /proc (Linux)");
        return;
    }
    let (plain_peak, plain_estimate) = measure(false);
    let (ck_peak, ck_estimate) = measure(true);
    eprintln!(
        "plain: measured {:.1} MB, estimated {:.1} MB ({:.2}x); checkpointed: measured {:.1} MB, \
         estimated {:.1} MB ({:.2}x)",
        plain_peak / 1e6,
        plain_estimate / 1e6,
        plain_peak / plain_estimate,
        ck_peak / 1e6,
        ck_estimate / 1e6,
        ck_peak / ck_estimate
    );
    for (what, peak, estimate) in
        [("plain", plain_peak, plain_estimate), ("checkpointed", ck_peak, ck_estimate)]
    {
        let ratio = peak / estimate;
        assert!(
            (MIN_RATIO..=MAX_RATIO).contains(&ratio),
            "{what}: measured {peak} B is {ratio:.2}x the estimate {estimate} B"
        );
    }
    assert!(ck_peak < plain_peak, "checkpointing must lower the peak: {ck_peak} vs {plain_peak}");
}

/// Tells the child half ([`probe_on_a_shape_file`]) to run, and whether with checkpointing.
const PROBE_VAR: &str = "PANACEA_TEST_PROBE_CHECKPOINTING";

/// The child half: [`panacea_dpo::probe_dpo_step`] on [`small_model`]'s shape written as a
/// Hugging Face config.json; prints `probe <step-2 rise> <estimate's activations + head +
/// mask> <build rise> <weight bytes> <estimate total>`.
#[test]
#[ignore = "the child half of the memory probe measures a step at a config.json's shape"]
fn probe_on_a_shape_file() {
    let Ok(flag) = std::env::var(PROBE_VAR) else { return };
    tch::set_num_threads(1);
    let warm = tch::Tensor::ones([4, 4], (tch::Kind::Float, Device::Cpu)).set_requires_grad(true);
    warm.matmul(&warm).sum(tch::Kind::Float).backward();
    let dir = std::env::temp_dir().join(format!("panacea-dpo-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.json");
    let c = small_model();
    let json = serde_json::json!({
        "model_type": "llama", "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.kv_heads(),
        "vocab_size": c.vocab_size, "tie_word_embeddings": true, "eos_token_id": EOS,
    });
    std::fs::write(&path, json.to_string()).expect("write config");
    let config = LlamaConfig::from_json_file(&path).expect("config.json");
    std::fs::remove_dir_all(&dir).expect("clean up");
    let probe = panacea_dpo::StepProbe {
        pairs: PAIRS,
        seq_len: SEQ_LEN,
        checkpointing: flag == "1",
        steps: 2,
        dtype: panacea_core::device::DType::F32,
        adapter: adapter(),
        seed: 5,
    };
    let report = panacea_dpo::probe_dpo_step(&config, &probe, Device::Cpu).expect("probe");
    assert_eq!(report.steps.len(), 2);
    assert!(report.steps.iter().all(|s| s.seconds > 0.0 && s.peak_bytes >= s.before_bytes));
    let second = report.steps[1];
    let plan = report.plan;
    assert_eq!(report.estimate.total_bytes(), plan.total_bytes() as u64);
    println!(
        "\nprobe {} {} {} {} {}",
        second.peak_bytes - second.before_bytes,
        plan.activation_bytes + plan.head_bytes + plan.mask_bytes,
        report.build_peak_bytes - report.build_before_bytes,
        plan.base_weight_bytes,
        plan.total_bytes(),
    );
}

/// The memory probe the `dpo_memory` bench runs at real sizes, here at [`small_model`]'s shape
/// read from a config.json: a step's rise of the peak over what was held before it lies in the
/// same band around the estimate as in
/// [`estimate_is_within_a_factor_of_the_measured_cpu_peak`] (with and without checkpointing),
/// checkpointing lowers it, and building the base costs about its weights' bytes (the f32
/// build here; the bf16 one is measured in panacea-lm's `a_bf16_build_never_holds_an_f32_copy`).
#[test]
fn probe_measures_a_step_at_a_shape_file_within_a_factor_of_the_estimate() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: the resident set is read from /proc (Linux)");
        return;
    }
    let run = |checkpointing: bool| -> Vec<f64> {
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new(exe)
            .args(["--exact", "memory::probe_on_a_shape_file", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(PROBE_VAR, if checkpointing { "1" } else { "0" })
            .env("MALLOC_MMAP_THRESHOLD_", "65536")
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let line = text.lines().find(|l| l.starts_with("probe ")).expect("a result line");
        line.split(' ').filter_map(|w| w.parse().ok()).collect()
    };
    let plain = run(false);
    let ck = run(true);
    for (what, v) in [("plain", &plain), ("checkpointed", &ck)] {
        let (rise, transient, build, weights) = (v[0], v[1], v[2], v[3]);
        eprintln!(
            "{what}: step rise {:.1} MB, estimated {:.1} MB ({:.2}x); build {:.1} MB for {:.1} \
             MB of weights; estimate total {:.1} MB",
            rise / 1e6,
            transient / 1e6,
            rise / transient,
            build / 1e6,
            weights / 1e6,
            v[4] / 1e6
        );
        let ratio = rise / transient;
        assert!(
            (MIN_RATIO..=MAX_RATIO).contains(&ratio),
            "{what}: measured {rise} B is {ratio:.2}x the estimate {transient} B"
        );
        assert!(
            (0.9..1.25).contains(&(build / weights)),
            "{what}: building took {build} B for {weights} B of weights"
        );
    }
    assert!(
        ck[0] < plain[0],
        "checkpointing must lower the step's peak: {} vs {}",
        ck[0],
        plain[0]
    );
}
