//! Where one DPO step's time goes on the real model: the reference forward (no graph,
//! `Adapter::Off`), the policy forward with a graph (`Adapter::On`), and the backward, each
//! timed separately on one batch of the default run's pairs (`configs/dpo-default.yaml`).
//!
//! `OMP_NUM_THREADS=1 cargo run -p panacea-dpo --example dpo_step_profile -- [pairs] [reps]`

use std::time::Instant;

use panacea_core::adapter::Adapter;
use panacea_core::preference::PreferenceVector;
use panacea_data::ReadOptions;
use panacea_dpo::data::encode_pairs;
use panacea_dpo::trainer::sequence_logps;
use panacea_dpo::{DpoRunConfig, EncodedPair, PairBatch, SeqLogp};
use panacea_lm::ChatTemplate;
use tch::{nn, Device, Kind};

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
    let path = panacea_data::workspace_path(&run.data.train.to_string_lossy());
    let opts =
        ReadOptions { format: run.data.format, dims: run.objectives.clone(), skip_invalid: false };
    let (records, _) = panacea_data::load_pairs(&path, opts).expect("pairs");
    let (pairs, _) = encode_pairs(
        &records[..n_pairs * 2],
        run.k(),
        &loaded.tokenizer,
        &ChatTemplate::default(),
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
    let pref = PreferenceVector::new(vec![0.5, 0.5]).expect("pref").to_tensor(Device::Cpu);
    for rep in 0..reps {
        let t0 = Instant::now();
        let reference = tch::no_grad(|| sequence_logps(&policy, &batch, Adapter::Off));
        let t_ref = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let lp = sequence_logps(&policy, &batch, Adapter::On { pref: &pref });
        let loss = (lp - reference).sum(Kind::Float);
        let t_fwd = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        loss.backward();
        let t_bwd = t2.elapsed().as_secs_f64();
        for v in adapter_vs.trainable_variables() {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        println!(
            "rep {rep}: reference fwd {t_ref:.3} s | policy fwd {t_fwd:.3} s | backward {t_bwd:.3} s"
        );
    }
}
