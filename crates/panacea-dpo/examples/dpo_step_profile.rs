//! Where one DPO step's time goes on the real model: the reference forward (no graph,
//! `Adapter::Off`), the policy forward with a graph (`Adapter::On`), and the backward, each
//! timed separately on one batch of the default run's pairs (`configs/dpo-default.yaml`), for
//! the plain and the packed (shared-prompt) log-probs; then the whole `DpoTrainer::step` with
//! the reference forward and with the reference from a filled cache. Wall and thread CPU
//! seconds, so a busy machine shows as wall > CPU.
//!
//! `OMP_NUM_THREADS=1 cargo run -p panacea-dpo --example dpo_step_profile -- [pairs] [reps]`

use std::time::Instant;

use panacea_core::adapter::Adapter;
use panacea_core::preference::PreferenceVector;
use panacea_dpo::data::encode_pairs;
use panacea_dpo::shared_prefix::shared_prefix_logps;
use panacea_dpo::trainer::sequence_logps;
use panacea_dpo::{
    DpoRunConfig, DpoTrainer, EncodedPair, PairBatch, RefCacheKey, RefLogpCache, SeqLogp,
    StepPreference,
};
use tch::{nn, Device, Kind};

/// CPU time of this thread in seconds (Linux schedstat: on-CPU nanoseconds), so a busy
/// machine's waits for a core do not count.
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(f64::NAN, |ns| ns * 1e-9)
}

fn main() {
    panacea_core::device::init_torch();
    let args: Vec<String> = std::env::args().collect();
    let n_pairs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    // The adapter, model and max_len of the default run, so the profile is of its step.
    let default = panacea_data::workspace_path("configs/dpo-default.yaml");
    let run: DpoRunConfig =
        panacea_core::config::load_config(&default, &[]).expect("configs/dpo-default.yaml");
    let loaded =
        panacea_lm::load_model(&run.model, Device::Cpu, Kind::Float).expect("cached model");
    let adapter_vs = nn::VarStore::new(Device::Cpu);
    let policy = loaded.model.with_adapter(Some((&adapter_vs.root(), &run.adapter)));
    let (records, _) = panacea_dpo::read_pair_files(&run, &run.data.train).expect("pairs");
    let (pairs, _) = encode_pairs(
        &records[..n_pairs * 2],
        run.k(),
        &loaded.tokenizer,
        &loaded.chat_template,
        run.data.max_len,
    )
    .expect("encode");
    let rows: Vec<&EncodedPair> = pairs.iter().take(n_pairs).collect();
    let batch = PairBatch::collate(
        &rows,
        run.k(),
        loaded.tokenizer.pad_id,
        SeqLogp::ResponseSum,
        Device::Cpu,
    )
    .expect("batch");
    println!("batch ids {:?}, {} pairs", batch.ids.size(), rows.len());
    let pref_vec = PreferenceVector::new(vec![0.5, 0.5]).expect("pref");
    let pref = pref_vec.to_tensor(Device::Cpu);
    // The phases with each pair's two sequences as their own rows (`sequence_logps`, the plain
    // path) and packed with the shared prompt once (`shared_prefix_logps`, what the trainer
    // runs), alternating so both see the same machine load. Times are wall (CPU) seconds.
    for rep in 0..reps {
        for (name, packed) in [("plain ", false), ("packed", true)] {
            let logps = |adapter: Adapter<'_>| {
                if packed {
                    shared_prefix_logps(&policy, &batch, adapter)
                } else {
                    sequence_logps(&policy, &batch, adapter)
                }
            };
            let (t0, c0) = (Instant::now(), cpu_s());
            let reference = tch::no_grad(|| logps(Adapter::Off));
            let (t_ref, c_ref) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
            let (t1, c1) = (Instant::now(), cpu_s());
            let loss = (logps(Adapter::On { pref: &pref }) - reference).sum(Kind::Float);
            let (t_fwd, c_fwd) = (t1.elapsed().as_secs_f64(), cpu_s() - c1);
            let (t2, c2) = (Instant::now(), cpu_s());
            loss.backward();
            let (t_bwd, c_bwd) = (t2.elapsed().as_secs_f64(), cpu_s() - c2);
            for v in adapter_vs.trainable_variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            println!(
                "rep {rep} {name}: reference fwd {t_ref:.3} ({c_ref:.3}) s | policy fwd \
                 {t_fwd:.3} ({c_fwd:.3}) s | backward {t_bwd:.3} ({c_bwd:.3}) s"
            );
        }
    }
    // The whole trainer step, with the reference forward and with the reference from a filled
    // cache, interleaved so both see the same machine load.
    let mut trainer =
        DpoTrainer::new(policy, adapter_vs, run.trainer_config(), run.k()).expect("trainer");
    let dir = std::env::temp_dir().join(format!("dpo-step-profile-{}", std::process::id()));
    let key =
        RefCacheKey { data: "profile".into(), base_model: "profile".into(), settings: "".into() };
    let (mut cache, _) = RefLogpCache::open(&dir, key);
    let (reference, _) = trainer.reference_logps(&batch, None).expect("reference");
    cache.insert(&batch.index, &reference).expect("insert");
    for rep in 0..reps {
        let (t0, c0) = (Instant::now(), cpu_s());
        trainer.step(&batch, StepPreference::Shared(&pref_vec), None).expect("step");
        let (t_fresh, c_fresh) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
        let (t1, c1) = (Instant::now(), cpu_s());
        let m = trainer
            .step(&batch, StepPreference::Shared(&pref_vec), Some(&mut cache))
            .expect("step");
        let (t_cached, c_cached) = (t1.elapsed().as_secs_f64(), cpu_s() - c1);
        assert!(m.ref_from_cache);
        println!(
            "rep {rep}: step() with the reference forward {t_fresh:.3} ({c_fresh:.3}) s | \
             reference from the cache {t_cached:.3} ({c_cached:.3}) s"
        );
    }
}
