//! Measuring what a DPO step needs at a model's real size: a random model of a Hugging Face
//! config's shape ([`panacea_lm::random_llama`], made directly in the base dtype on the
//! device), its adapter and a [`DpoTrainer`], and a few real [`DpoTrainer::step`]s on synthetic
//! pairs of exactly the shape [`pair_step_memory_plan`] assumes. Each step reports the peak
//! memory next to the estimate the DPO job emits ([`pair_memory_estimate`]) and its time.
//!
//! The pairs have no prompt and different first tokens, so that nothing is packed as a shared
//! prefix and every one of the 2 · pairs sequences is `seq_len` tokens long, every position
//! scored: the shape of the estimate's upper bound.
//!
//! Memory is measured as [`panacea_shim::memory`] does on each device: on CUDA the caching
//! allocator's peak of live tensor bytes (weights included), on the CPU the process's peak
//! resident set (everything the process holds). Both peaks are reset just before each step,
//! and the memory held at that moment is reported too, so a step's own rise is
//! `peak_bytes − before_bytes`.

use std::time::Instant;

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::device::DType;
use panacea_core::preference::{PreferenceVector, StepPreference};
use panacea_lm::{random_llama, LlamaConfig, MemoryPlan};
use panacea_run::MemoryEstimate;
use rand::{Rng, SeedableRng};
use tch::Device;

use crate::config::DpoTrainerConfig;
use crate::data::{EncodedPair, PairBatch, SeqLogp};
use crate::job::{pair_memory_estimate, pair_step_memory_plan};
use crate::trainer::DpoTrainer;
use crate::DpoError;

/// What one probe runs.
#[derive(Clone, Debug)]
pub struct StepProbe {
    /// Pairs in the step's one forward (the job's `train.batch_size`, no micro-batches).
    pub pairs: usize,
    /// Tokens of every sequence (the job's `data.max_len`, reached by every sequence).
    pub seq_len: usize,
    /// Activation checkpointing per decoder layer (`train.activation_checkpointing`).
    pub checkpointing: bool,
    /// Steps to take (≥ 1). The first allocates what then stays (AdamW's moments, kernel
    /// workspaces); the second shows a step of a running job.
    pub steps: usize,
    /// Base weights' dtype.
    pub dtype: DType,
    /// The adapter (its rank and objectives; the job's `adapter`).
    pub adapter: SvdLoraConfig,
    /// Seed of the random weights, the adapter's init and the synthetic tokens.
    pub seed: u64,
}

/// One measured step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeStep {
    /// Memory held just before the step (CUDA: live tensor bytes; CPU: resident set).
    pub before_bytes: u64,
    /// Peak during the step (same measure).
    pub peak_bytes: u64,
    /// Wall time of the step, device work included.
    pub seconds: f64,
}

/// What a probe measured, next to what was estimated.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// The estimate as the DPO job reports it.
    pub estimate: MemoryEstimate,
    /// The same estimate with its parameter counts.
    pub plan: MemoryPlan,
    /// Peak memory while the random base was built (same measure as the steps): about the
    /// base weights' bytes in the base dtype when no f32 copy is made.
    pub build_peak_bytes: u64,
    /// Memory held before the build (the CPU: the process's resident set; CUDA: live bytes,
    /// normally 0).
    pub build_before_bytes: u64,
    /// Seconds to build and initialise the base.
    pub build_seconds: f64,
    /// The steps, in order.
    pub steps: Vec<ProbeStep>,
}

/// Resets the device's peak statistic and returns the memory held now.
fn reset_peak(device: Device) -> Result<u64, DpoError> {
    use panacea_shim::memory as m;
    sync(device);
    match device {
        Device::Cuda(_) => {
            m::cuda_reset_peak_memory_stats(device)?;
            // Right after a reset the peak equals the bytes allocated now.
            Ok(m::cuda_max_memory_allocated(device)?)
        }
        _ => {
            m::reset_process_peak_rss()?;
            Ok(m::process_rss()?)
        }
    }
}

/// Waits for the device's queued work, so that a time or a peak read afterwards covers it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Builds a random model of `config` on `device` and takes `probe.steps` DPO steps on
/// synthetic pairs (see the module docs), measuring each. Like [`panacea_lm::random_llama`] it
/// panics when the device cannot hold the model's weights; a step that runs out of memory
/// panics inside libtorch too (tch's infallible ops), which a measuring binary catches.
pub fn probe_dpo_step(
    config: &LlamaConfig,
    probe: &StepProbe,
    device: Device,
) -> Result<ProbeReport, DpoError> {
    if probe.pairs == 0 || probe.seq_len < 2 || probe.steps == 0 {
        return Err(DpoError::Data(format!(
            "a memory probe needs ≥ 1 pair, ≥ 2 tokens a sequence and ≥ 1 step (got {} pairs, \
             {} tokens, {} steps)",
            probe.pairs, probe.seq_len, probe.steps
        )));
    }
    let k = probe.adapter.n_objectives as usize;
    let build_before_bytes = reset_peak(device)?;
    let started = Instant::now();
    let (_base_vs, model) = random_llama(config, device, probe.dtype.kind(), probe.seed as i64)
        .map_err(|source| DpoError::Model { name: "random model".into(), source })?;
    sync(device);
    let build_seconds = started.elapsed().as_secs_f64();
    let build_peak_bytes = panacea_shim::memory::peak_bytes(device)?;

    let adapter_vs = tch::nn::VarStore::new(device);
    let policy = model.with_adapter(Some((&adapter_vs.root(), &probe.adapter)));
    let settings = DpoTrainerConfig {
        activation_checkpointing: probe.checkpointing,
        total_steps: probe.steps as u64,
        ..DpoTrainerConfig::default()
    };
    let mut trainer = DpoTrainer::new(policy, adapter_vs, settings, k)?;
    let batch = synthetic_batch(config, probe, k, device)?;
    let pref = PreferenceVector::uniform(k)?;

    let mut steps = Vec::with_capacity(probe.steps);
    for _ in 0..probe.steps {
        let before_bytes = reset_peak(device)?;
        let started = Instant::now();
        trainer.step(&batch, StepPreference::Shared(&pref), None)?;
        sync(device);
        let seconds = started.elapsed().as_secs_f64();
        let peak_bytes = panacea_shim::memory::peak_bytes(device)?;
        steps.push(ProbeStep { before_bytes, peak_bytes, seconds });
    }

    let (pairs, seq_len) = (probe.pairs as i64, probe.seq_len as i64);
    let base_bytes = probe.dtype.kind().elt_size_in_bytes() as i64;
    let plan = pair_step_memory_plan(
        config,
        &probe.adapter,
        pairs,
        seq_len,
        base_bytes,
        probe.checkpointing,
    );
    let estimate = pair_memory_estimate(
        config,
        &probe.adapter,
        pairs,
        seq_len,
        probe.dtype,
        probe.checkpointing,
    );
    Ok(ProbeReport { estimate, plan, build_peak_bytes, build_before_bytes, build_seconds, steps })
}

/// `probe.pairs` pairs of two `seq_len`-token sequences (random tokens, then EOS), with labels
/// alternating +1 and −1 over the `k` objectives. The two sequences of a pair start with
/// different tokens, so they share no prefix.
fn synthetic_batch(
    config: &LlamaConfig,
    probe: &StepProbe,
    k: usize,
    device: Device,
) -> Result<PairBatch, DpoError> {
    // Ids 3.. stay clear of the usual special tokens; EOS is the config's, else 2.
    let eos = config.eos_token_id.unwrap_or(2).clamp(0, config.vocab_size - 1);
    let vocab = config.vocab_size.max(5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(probe.seed);
    let mut sequence = |first: i64| {
        let mut s: Vec<i64> = (0..probe.seq_len - 1).map(|_| rng.gen_range(3..vocab)).collect();
        s[0] = first;
        s
    };
    let labels: Vec<i8> = (0..k).map(|j| if j % 2 == 0 { 1 } else { -1 }).collect();
    let pairs = (0..probe.pairs)
        .map(|i| {
            let (chosen, rejected) = (sequence(3), sequence(4));
            let pair = EncodedPair::new(
                i,
                &[],
                [chosen.as_slice(), rejected.as_slice()],
                eos,
                labels.clone(),
                probe.seq_len,
            )?;
            pair.map_err(|why| DpoError::Pair {
                index: i,
                message: format!("the synthetic pair was dropped ({why:?})"),
            })
        })
        .collect::<Result<Vec<_>, DpoError>>()?;
    let refs: Vec<&EncodedPair> = pairs.iter().collect();
    PairBatch::collate(&refs, k, 0, SeqLogp::ResponseSum, device)
}
