//! The DPO step at bucketed shapes (`train.cuda_graphs`): padded log-probs, loss, gradients
//! and updates against the eager step on the CPU, the eager fallback with graphs asked for on
//! a CPU, and (where CUDA is present) graphed replays against eager steps.

use panacea_core::aggregation::Aggregation;
use panacea_core::preference::PreferenceVector;
use panacea_dpo::static_step::{padded_pair_logps, PaddedPairs};
use panacea_dpo::DpoTrainer;
use panacea_dpo::{
    shared_prefix_logps, DpoStepMetrics, DpoTrainerConfig, PairBatch, StepPreference,
};
use panacea_lm::{Adapter, Llama, LlamaConfig};
use tch::{nn, Device, Kind, Tensor};

use crate::common::{
    batch, grads, max_abs, mixed_pairs, perturb_diagonal, settings_with, snapshot, tiny_trainer,
    tiny_trainer_on,
};
use crate::shared_prefix::awkward_pairs;

/// Largest |a − b| over two name-sorted lists of tensors, and the largest |b|.
fn worst(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0.0f64, 0.0f64), |(d, s), ((na, x), (nb, y))| {
        assert_eq!(na, nb);
        (d.max(max_abs(&(x - y))), s.max(max_abs(y)))
    })
}

#[test]
fn padded_log_probs_and_gradients_equal_the_packed_path() {
    let (_base, trainer) = tiny_trainer(2, crate::common::settings(1e-3), 21);
    perturb_diagonal(&trainer);
    let pref = PreferenceVector::new(vec![0.3, 0.7]).expect("pref").to_tensor(Device::Cpu);
    let mut padded_somewhere = false;
    for pairs in [mixed_pairs(), awkward_pairs()] {
        let b = batch(&pairs, 2);
        let padded = PaddedPairs::new(&b, Device::Cpu);
        let (rows, lb, nb) = padded.bucket();
        assert_eq!(rows, b.len() as i64);
        assert!(lb >= 16 && nb >= 16, "buckets are at least 16: {:?}", padded.bucket());
        let real = f64::try_from(padded.weight.sum(Kind::Double)).expect("scalar");
        padded_somewhere |= (real as i64) < nb;
        for adapter in [Adapter::Off, Adapter::On { pref: &pref }] {
            let got = tch::no_grad(|| padded_pair_logps(&trainer.model, &padded, adapter));
            let want = tch::no_grad(|| shared_prefix_logps(&trainer.model, &b, adapter));
            // f32 summation order only (more masked attention columns, another gather order):
            // the log-probs are sums of a few dozen terms of order 10, so 1e-5 relative.
            let diff = max_abs(&(&got - &want));
            assert!(diff <= 1e-5 * max_abs(&want).max(1.0), "log-probs differ by {diff}");
        }
        // Gradients of a weighted sum of the log-probs, both responses weighted differently.
        let w = Tensor::linspace(-1.0, 2.0, 2 * b.len() as i64, (Kind::Float, Device::Cpu));
        let grad_of = |lp: Tensor| {
            for (_, v) in trainer.adapter_vs.variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            (lp * &w).sum(Kind::Float).backward();
            grads(&trainer)
        };
        let on = Adapter::On { pref: &pref };
        let got = grad_of(padded_pair_logps(&trainer.model, &padded, on));
        let want = grad_of(shared_prefix_logps(&trainer.model, &b, on));
        let (diff, scale) = worst(&got, &want);
        assert!(scale > 0.0, "no gradient at all");
        // As the packed-vs-plain gradient test: rounding of sums over positions.
        assert!(diff <= 1e-4 * scale, "|Δgrad| {diff} (scale {scale})");
    }
    assert!(padded_somewhere, "some batch had padding entries");
}

/// Makes `b`'s adapter `a`'s (in place, so the optimiser's flat buffer keeps backing it). The
/// adapter's random init draws from libtorch's process-global generator, which tests running
/// in parallel threads share, so two trainers built with one seed may still differ.
fn same_adapter(a: &DpoTrainer<Llama>, b: &DpoTrainer<Llama>) {
    let from = a.adapter_vs.variables();
    tch::no_grad(|| {
        for (name, v) in b.adapter_vs.variables() {
            v.shallow_clone().copy_(&from[&name]);
        }
    });
}

/// Settings that exercise the schedule and clipping: a warm-up over the first two of four
/// steps and a clipping bound below these gradients' norms.
fn schedule_settings(aggregation: Aggregation, cuda_graphs: bool) -> DpoTrainerConfig {
    let mut s = settings_with(1e-2, 0, aggregation);
    s.total_steps = 4;
    s.optim.warmup_ratio = 0.5;
    s.optim.max_grad_norm = 0.05;
    s.cuda_graphs = cuda_graphs;
    s
}

/// Four steps over two batches of different buckets, λ changing every step.
fn batches() -> Vec<(PairBatch, PreferenceVector)> {
    let prefs = [[0.3, 0.7], [0.9, 0.1], [0.5, 0.5], [0.2, 0.8]];
    let batches = [batch(&mixed_pairs(), 2), batch(&awkward_pairs(), 2)];
    prefs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let b = &batches[i % 2];
            (b.slice(0, b.len()), PreferenceVector::new(p.to_vec()).expect("pref"))
        })
        .collect()
}

fn assert_metrics_close(got: &DpoStepMetrics, want: &DpoStepMetrics, what: &str) {
    // Losses of order 1 from log-probs equal to 1e-5 relative (see above).
    assert!(
        (got.loss - want.loss).abs() <= 1e-5 * want.loss.abs().max(1.0),
        "{what}: loss {} vs {}",
        got.loss,
        want.loss
    );
    assert!(
        (got.grad_norm - want.grad_norm).abs() <= 1e-4 * want.grad_norm,
        "{what}: norm {} vs {}",
        got.grad_norm,
        want.grad_norm
    );
    assert_eq!(got.lr, want.lr, "{what}: the same schedule");
    for (a, b) in got.accuracy_per_obj.iter().zip(&want.accuracy_per_obj) {
        assert_eq!(a, b, "{what}: accuracies count signs of margins far from 0");
    }
}

#[test]
fn the_padded_step_equals_the_eager_step_on_a_cpu() {
    for aggregation in [Aggregation::Linear, Aggregation::tchebycheff_zero(2)] {
        let (_b1, mut eager) = tiny_trainer(2, schedule_settings(aggregation.clone(), false), 22);
        let (_b2, mut padded) = tiny_trainer(2, schedule_settings(aggregation.clone(), true), 22);
        perturb_diagonal(&eager);
        same_adapter(&eager, &padded);
        assert_eq!(snapshot(&eager.adapter_vs).len(), snapshot(&padded.adapter_vs).len());
        let mut clipped = 0;
        for (i, (b, pref)) in batches().iter().enumerate() {
            let what = format!("{aggregation:?} step {i}");
            let want = eager.step(b, StepPreference::Shared(pref), None).expect("eager step");
            let got =
                padded.step_graphed(b, StepPreference::Shared(pref), None).expect("padded step");
            assert_metrics_close(&got, &want, &what);
            clipped += usize::from(want.grad_norm > 0.05);
            // The gradients the updates used (clipped in both).
            let (diff, scale) = worst(&grads(&padded), &grads(&eager));
            assert!(diff <= 1e-4 * scale, "{what}: |Δgrad| {diff} (scale {scale})");
            // Adam divides by √v, so a gradient entry that is pure rounding noise in both runs
            // moves by about lr·(its noise's sign) in each: a rounding-level gradient
            // difference can become up to 2·lr in a parameter. The tolerance is therefore an
            // absolute fraction of lr (1e-2) rather than relative to the parameters.
            let (diff, _) = worst(&snapshot(&padded.adapter_vs), &snapshot(&eager.adapter_vs));
            eprintln!(
                "{what}: |Δloss| {:.2e}, |Δnorm| {:.2e}, |Δparameter| {diff:.2e}",
                (got.loss - want.loss).abs(),
                (got.grad_norm - want.grad_norm).abs()
            );
            assert!(diff <= 0.02 * 1e-2, "{what}: |Δparameter| {diff}");
        }
        assert!(clipped > 0, "clipping was active");
        assert_eq!(padded.steps_done(), 4);
        assert_eq!(padded.graph_replays(), (0, 0), "a CPU replays nothing");
    }
}

#[test]
fn cuda_graphs_on_a_cpu_train_eagerly_with_the_same_bits_and_say_why_once() {
    let (_b1, mut plain) = tiny_trainer(2, schedule_settings(Aggregation::Linear, false), 23);
    let (_b2, mut asked) = tiny_trainer(2, schedule_settings(Aggregation::Linear, true), 23);
    perturb_diagonal(&plain);
    same_adapter(&plain, &asked);
    for (i, (b, pref)) in batches().iter().enumerate() {
        let a = plain.step(b, StepPreference::Shared(pref), None).expect("step");
        let g = asked.step(b, StepPreference::Shared(pref), None).expect("step");
        assert_eq!(a.loss.to_bits(), g.loss.to_bits(), "step {i}");
        let note = asked.take_graph_note();
        if i == 0 {
            let note = note.expect("the first step says why");
            assert!(note.contains("CUDA"), "{note}");
        } else {
            assert_eq!(note, None, "said once");
        }
        assert_eq!(plain.take_graph_note(), None, "graphs not asked for: nothing to say");
    }
    for ((name, a), (_, b)) in snapshot(&plain.adapter_vs).iter().zip(&snapshot(&asked.adapter_vs))
    {
        assert!(a.equal(b), "{name} differs");
    }
    // What the graphed step cannot run is a typed error, not a silent eager step.
    let prefs = vec![PreferenceVector::new(vec![0.5, 0.5]).expect("pref"); 4];
    let b = batch(&mixed_pairs(), 2);
    let err = asked.step_graphed(&b, StepPreference::PerRow(&prefs), None);
    assert!(err.is_err_and(|e| e.to_string().contains("per-row")));
}

/// Three graphed steps (the first captures after its warm-ups, then replays) against three
/// eager steps from the same start, on CUDA.
#[test]
fn three_graphed_steps_equal_three_eager_steps_on_cuda() {
    let device = Device::Cuda(0);
    if let Some(why) = panacea_shim::graph::unavailable_reason(device) {
        eprintln!("skipped: CUDA graphs are not available here ({why})");
        return;
    }
    let make = |graphs: bool| -> (nn::VarStore, panacea_dpo::DpoTrainer<Llama>) {
        let s = schedule_settings(Aggregation::Linear, graphs);
        let (base, t) = tiny_trainer_on(&LlamaConfig::tiny(), 2, s, 24, device);
        perturb_diagonal(&t);
        (base, t)
    };
    let ((_b1, mut eager), (_b2, mut graphed)) = (make(false), make(true));
    same_adapter(&eager, &graphed);
    let b = batch(&mixed_pairs(), 2);
    let b = PairBatch {
        index: b.index.clone(),
        ids: b.ids.to_device(device),
        attention_mask: b.attention_mask.to_device(device),
        response_mask: b.response_mask.to_device(device),
        labels: b.labels.to_device(device),
    };
    let prefs = [[0.3, 0.7], [0.9, 0.1], [0.5, 0.5]];
    for (i, p) in prefs.iter().enumerate() {
        let pref = PreferenceVector::new(p.to_vec()).expect("pref");
        let want = eager.step(&b, StepPreference::Shared(&pref), None).expect("eager");
        let got = graphed.step(&b, StepPreference::Shared(&pref), None).expect("graphed");
        assert_eq!(graphed.take_graph_note(), None, "step {i} ran under graphs");
        assert_metrics_close(&got, &want, &format!("cuda step {i}"));
        let (diff, _) = worst(&snapshot(&graphed.adapter_vs), &snapshot(&eager.adapter_vs));
        // As on the CPU: rounding-level gradient differences, amplified by Adam up to ~lr.
        assert!(diff <= 0.02 * 1e-2, "cuda step {i}: |Δparameter| {diff}");
    }
    assert_eq!(graphed.graph_replays(), (3, 1), "one capture, three replays");
}
