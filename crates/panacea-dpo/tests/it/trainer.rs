//! The DPO trainer on a tiny random-init Llama: the fused log-prob path, loss going down,
//! which tensors train, gradient accumulation, the reference cache and the Panacea property
//! (λ = e_1 vs e_2 move the two objectives in opposite directions).

use panacea_core::aggregation::Aggregation;
use panacea_core::ops::{gather_log_probs, sequence_log_probs};
use panacea_core::preference::{PreferenceSampler, PreferenceVector};
use panacea_dpo::ref_cache::{CacheStatus, RefCacheKey};
use panacea_dpo::trainer::sequence_logps;
use panacea_dpo::{RefLogpCache, StepPreference};
use panacea_lm::{Adapter, CausalLm};
use tch::{Device, Kind};

use crate::common::{
    batch, grads, max_abs, mixed_pairs, pair, perturb_diagonal, settings, settings_with, snapshot,
    tiny_trainer, tiny_trainer_with,
};

#[test]
fn fused_sequence_logps_equal_the_core_reference_path() {
    let (_base, trainer) = tiny_trainer(2, settings(1e-3), 0);
    let b = batch(&mixed_pairs(), 2);
    let fused = sequence_logps(&trainer.model, &b, Adapter::Off); // [2B]
    let logits = trainer.model.logits(&b.ids, &b.attention_mask, Adapter::Off); // [2B, T, V]
    let reference =
        sequence_log_probs(&gather_log_probs(&logits, &b.ids).expect("gather"), &b.response_mask)
            .expect("sum"); // [2B]
    let diff = max_abs(&(&fused - &reference));
    assert!(diff < 1e-4, "fused vs core path differ by {diff}");
    // Sanity: sums of a handful of log-probs over a 49k vocabulary are clearly negative.
    assert!(f64::try_from(fused.max()).expect("scalar") < -10.0);
}

#[test]
fn steps_lower_the_loss_and_train_only_the_adapter() {
    let (base, mut trainer) = tiny_trainer(2, settings(2e-2), 1);
    let b = batch(&mixed_pairs(), 2);
    let pref = PreferenceVector::new(vec![0.5, 0.5]).expect("pref");
    let base_before = snapshot(&base);
    let adapter_before = snapshot(&trainer.adapter_vs);
    let first = trainer.step(&b, StepPreference::Shared(&pref), None).expect("step");
    // At init σ = s = 0, so the policy equals the reference: margin 0 and L = log 2 exactly.
    assert!((first.loss - std::f64::consts::LN_2).abs() < 1e-5, "first loss {}", first.loss);
    for _ in 0..7 {
        trainer.step(&b, StepPreference::Shared(&pref), None).expect("step");
    }
    let after = trainer.evaluate(&b, StepPreference::Shared(&pref), None).expect("eval");
    assert!(after.loss < first.loss - 0.05, "loss {} → {}", first.loss, after.loss);
    for (name, before) in &base_before {
        let now = &base.variables()[name];
        assert!(max_abs(&(now - before)) == 0.0, "base tensor {name} changed");
    }
    for (name, before) in &adapter_before {
        let now = &trainer.adapter_vs.variables()[name];
        assert!(max_abs(&(now - before)) > 0.0, "adapter tensor {name} did not change");
    }
}

#[test]
fn two_micro_batches_of_two_equal_one_batch_of_four() {
    // Tchebycheff with one λ per pair is the case where the per-micro-batch loss is not a share
    // of the batch loss; the accumulated gradient must still equal the full-batch one.
    let prefs: Vec<PreferenceVector> = [[0.3, 0.7], [0.3, 0.7], [0.8, 0.2], [0.5, 0.5]]
        .iter()
        .map(|p| PreferenceVector::new(p.to_vec()).expect("pref"))
        .collect();
    for aggregation in [Aggregation::Linear, Aggregation::tchebycheff_zero(2)] {
        let run = |micro: usize| {
            let s = settings_with(1e-3, micro, aggregation.clone());
            let (_base, mut trainer) = tiny_trainer(2, s, 7);
            perturb_diagonal(&trainer);
            let b = batch(&mixed_pairs(), 2);
            let (out, _) = trainer
                .accumulate_gradients(&b, StepPreference::PerRow(&prefs), None)
                .expect("grads");
            (f64::try_from(out.loss).expect("scalar"), grads(&trainer))
        };
        let (loss_full, g_full) = run(0);
        let (loss_micro, g_micro) = run(2);
        // f32: the two batch shapes take different GEMM blockings and reduction orders, and the
        // margins are differences of log-prob sums of size ~10², whose f32 ulp is ~10⁻⁵; so the
        // loss agrees to ~10⁻⁶, not bit for bit (a CI run exceeded the old 1e-6 bound). A wrong
        // accumulation is off by O(0.1); the gradients below use the same 1e-4.
        assert!(
            (loss_full - loss_micro).abs() < 1e-4 * loss_full.abs().max(1.0),
            "{aggregation:?}: loss {loss_full} (one batch) vs {loss_micro} (two micro-batches)"
        );
        let scale = g_full.iter().map(|(_, g)| max_abs(g)).fold(0.0, f64::max);
        assert!(scale > 0.0, "no gradient at all");
        for ((name, a), (_, b)) in g_full.iter().zip(&g_micro) {
            let diff = max_abs(&(a - b));
            // f32 end to end (the LM head returns f32 logits), so a relative tolerance.
            assert!(
                diff <= 1e-4 * scale,
                "{aggregation:?}: {name}: |Δgrad| {diff} (scale {scale})"
            );
        }
        assert!(
            g_full.iter().all(|(_, g)| max_abs(g) > 0.0),
            "every adapter tensor gets a gradient"
        );
    }
}

#[test]
fn the_reference_cache_serves_the_second_pass_with_the_same_numbers() {
    let (_base, mut trainer) = tiny_trainer(2, settings(1e-3), 3);
    let b = batch(&mixed_pairs(), 2);
    let dir = std::env::temp_dir().join(format!("panacea-dpo-it-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = RefCacheKey { data: "d".into(), base_model: "tiny-3".into(), settings: "s".into() };
    let (mut cache, status) = RefLogpCache::open(&dir, key.clone());
    assert_eq!(status, CacheStatus::New);
    let (computed, hit) = trainer.reference_logps(&b, Some(&mut cache)).expect("ref");
    assert!(!hit);
    cache.save().expect("save");
    let (mut reopened, status) = RefLogpCache::open(&dir, key);
    assert_eq!(status, CacheStatus::Loaded { entries: 4 });
    let pref = PreferenceVector::new(vec![0.5, 0.5]).expect("pref");
    let m = trainer.step(&b, StepPreference::Shared(&pref), Some(&mut reopened)).expect("step");
    assert!(m.ref_from_cache);
    let (cached, _) = trainer.reference_logps(&b, Some(&mut reopened)).expect("ref");
    assert_eq!(max_abs(&(computed - cached)), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two objectives that disagree on every pair: objective 0 prefers responses made of token
/// A, objective 1 responses made of token B. Both orders appear, so the position of a response
/// in the pair carries no signal.
fn opposed_pairs() -> Vec<panacea_dpo::EncodedPair> {
    const A: i64 = 4000;
    const B: i64 = 5000;
    (0..8)
        .map(|i| {
            let prompt = [100 + i as i64, 101 + i as i64, 102];
            let a = [A, A, A];
            let b = [B, B, B];
            if i % 2 == 0 {
                pair(i, &prompt, &a, &b, &[1, -1])
            } else {
                pair(i, &prompt, &b, &a, &[-1, 1])
            }
        })
        .collect()
}

#[test]
fn pref_vertices_move_the_two_objectives_in_opposite_directions() {
    use rand::SeedableRng;
    let (_base, mut trainer) = tiny_trainer(2, settings(2e-2), 11);
    let pairs = opposed_pairs();
    let b = batch(&pairs, 2);
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.5 };
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(5);
    for _ in 0..24 {
        let pref = sampler.sample(2, &mut rng).expect("sample");
        trainer.step(&b, StepPreference::Shared(&pref), None).expect("step");
    }
    let e1 = PreferenceVector::vertex(2, 0).expect("e1");
    let e2 = PreferenceVector::vertex(2, 1).expect("e2");
    let m1 = trainer.evaluate(&b, StepPreference::Shared(&e1), None).expect("eval");
    let m2 = trainer.evaluate(&b, StepPreference::Shared(&e2), None).expect("eval");
    // Under e_1 the implicit reward ranks pairs the way objective 0 does, under e_2 the way
    // objective 1 does; the base model (margin 0) scores 0 on both.
    assert!(m1.accuracy_per_obj[0] >= 0.75, "e1: {m1:?}");
    assert!(m2.accuracy_per_obj[1] >= 0.75, "e2: {m2:?}");
    assert!(m1.accuracy_per_obj[0] > m2.accuracy_per_obj[0], "e1 {m1:?} vs e2 {m2:?}");
    assert!(m2.accuracy_per_obj[1] > m1.accuracy_per_obj[1], "e1 {m1:?} vs e2 {m2:?}");
    // On prompts never trained on, the policy's own likelihood moves the same way: the
    // log-prob gap log p(A A A) − log p(B B B) is largest under e_1, smallest under e_2, and
    // the base model (Adapter::Off) lies in between.
    let held_out: Vec<_> = (0..4)
        .map(|i| pair(100 + i, &[700 + i as i64, 701, 102], &[4000; 3], &[5000; 3], &[1, -1]))
        .collect();
    let hb = batch(&held_out, 2);
    let gap = |adapter: Adapter<'_>| {
        let lp = tch::no_grad(|| sequence_logps(&trainer.model, &hb, adapter)); // [2B]
        let d = lp.narrow(0, 0, 4) - lp.narrow(0, 4, 4); // [B]
        f64::try_from(d.mean(Kind::Float)).expect("scalar")
    };
    let (p1, p2) = (e1.to_tensor(Device::Cpu), e2.to_tensor(Device::Cpu));
    let (g1, g0, g2) =
        (gap(Adapter::On { pref: &p1 }), gap(Adapter::Off), gap(Adapter::On { pref: &p2 }));
    assert!(g1 > g0 && g0 > g2, "A−B log-prob gap: e1 {g1}, base {g0}, e2 {g2}");
}

/// Greedy answers of a toy-vocabulary model (16 tokens) move with λ on a "gold scorer", the
/// fraction of even tokens in the answer: objective 0 prefers all-even responses, objective 1
/// all-odd ones (both positions in the pair, random tokens). After DPO with λ drawn from the
/// simplex, greedy answers to held-out prompts are more even under e_1 than under the base, and
/// less even under e_2.
#[test]
fn greedy_answers_move_along_the_preference_on_a_toy_vocabulary() {
    use panacea_lm::generate::{generate_ids, GenerateConfig, Sampling};
    use rand::{Rng, SeedableRng};
    let toy = panacea_lm::LlamaConfig { vocab_size: 16, ..panacea_lm::LlamaConfig::tiny() };
    let (_base, mut trainer) = tiny_trainer_with(&toy, 2, settings(2e-2), 3);
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(7);
    // Tokens 3..16 (0–2 are pad/BOS/EOS); even ones are 4, 6, …, 14, odd ones 3, 5, …, 15.
    let mut draw = |even: bool, n: usize| -> Vec<i64> {
        (0..n).map(|_| 2 * rng.gen_range(2..8) + i64::from(!even)).collect()
    };
    let pairs: Vec<_> = (0..16)
        .map(|i| {
            let prompt = draw(i % 3 == 0, 3);
            let (even, odd) = (draw(true, 4), draw(false, 4));
            if i % 2 == 0 {
                pair(i, &prompt, &even, &odd, &[1, -1])
            } else {
                pair(i, &prompt, &odd, &even, &[-1, 1])
            }
        })
        .collect();
    let held_out: Vec<Vec<i64>> = (0..8).map(|i| draw(i % 2 == 0, 3)).collect();
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.5 };
    let mut pref_rng = rand_chacha::ChaCha12Rng::seed_from_u64(9);
    for step in 0..30 {
        let pref = sampler.sample(2, &mut pref_rng).expect("sample");
        let b = batch(&pairs[(step % 2) * 8..(step % 2) * 8 + 8], 2);
        trainer.step(&b, StepPreference::Shared(&pref), None).expect("step");
    }
    let greedy = GenerateConfig {
        max_new_tokens: 4,
        sampling: Sampling::Greedy,
        eos_ids: vec![2],
        pad_id: 0,
    };
    let even_fraction = |adapter: Adapter<'_>| {
        let mut unused = rand_chacha::ChaCha12Rng::seed_from_u64(0);
        let g = generate_ids(&trainer.model, &held_out, adapter, &greedy, &mut unused)
            .expect("generate");
        let ids = Vec::<i64>::try_from(g.response_ids.flatten(0, -1)).expect("ids");
        let mask = Vec::<i64>::try_from(g.response_mask.flatten(0, -1)).expect("mask");
        let answered: Vec<i64> =
            ids.iter().zip(&mask).filter(|(t, m)| **m == 1 && **t > 2).map(|(t, _)| *t).collect();
        answered.iter().filter(|t| *t % 2 == 0).count() as f64 / answered.len().max(1) as f64
    };
    let (p1, p2) = (
        PreferenceVector::vertex(2, 0).expect("e1").to_tensor(Device::Cpu),
        PreferenceVector::vertex(2, 1).expect("e2").to_tensor(Device::Cpu),
    );
    let e1 = even_fraction(Adapter::On { pref: &p1 });
    let base = even_fraction(Adapter::Off);
    let e2 = even_fraction(Adapter::On { pref: &p2 });
    eprintln!("even fraction of greedy answers: e1 {e1:.3}, base {base:.3}, e2 {e2:.3}");
    assert!(e1 >= base && base >= e2, "e1 {e1}, base {base}, e2 {e2}");
    assert!(e1 - e2 >= 0.5, "e1 {e1} vs e2 {e2}");
}

#[test]
fn resumed_training_ends_bit_exact_with_the_uninterrupted_one() {
    // Four steps straight versus two steps, adapter + AdamW moments saved, a fresh trainer
    // restored from them and two more steps: the adapters must be equal bit for bit.
    use panacea_core::checkpoint::{load_var_store, save_var_store};
    use rand::SeedableRng;
    let b = batch(&mixed_pairs(), 2);
    let prefs: Vec<PreferenceVector> = {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(9);
        let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.2 };
        (0..4).map(|_| sampler.sample(2, &mut rng).expect("pref")).collect()
    };
    let (_b1, mut straight) = tiny_trainer(2, settings(2e-2), 4);
    for p in &prefs {
        straight.step(&b, StepPreference::Shared(p), None).expect("step");
    }
    let dir = std::env::temp_dir().join(format!("panacea-dpo-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_b2, mut first) = tiny_trainer(2, settings(2e-2), 4);
    for p in &prefs[..2] {
        first.step(&b, StepPreference::Shared(p), None).expect("step");
    }
    save_var_store(&dir.join("adapter.safetensors"), &first.adapter_vs).expect("save adapter");
    first.save_state(&dir).expect("save trainer state");
    drop(first);
    let (_b3, mut resumed) = tiny_trainer(2, settings(2e-2), 4);
    load_var_store(&dir.join("adapter.safetensors"), &resumed.adapter_vs).expect("load adapter");
    resumed.restore_state(&dir).expect("restore trainer state");
    assert_eq!(resumed.steps_done(), 2);
    for p in &prefs[2..] {
        resumed.step(&b, StepPreference::Shared(p), None).expect("step");
    }
    for ((n, x), (_, y)) in snapshot(&straight.adapter_vs).iter().zip(snapshot(&resumed.adapter_vs))
    {
        assert!(x.equal(&y), "{n} differs after resume");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_non_finite_step_fails_and_does_not_count() {
    // lr = 1e30: the first update moves σ and s by ~1e30 (finite in f32); the second forward
    // overflows, so its loss is not finite and the step fails before the optimiser moves.
    let (_base, mut trainer) = tiny_trainer(2, settings(1e30), 3);
    let b = batch(&mixed_pairs(), 2);
    let pref = PreferenceVector::uniform(2).expect("pref");
    trainer.step(&b, StepPreference::Shared(&pref), None).expect("step 1 is finite");
    assert_eq!(trainer.steps_done(), 1);
    let err = trainer.step(&b, StepPreference::Shared(&pref), None).expect_err("step 2");
    let panacea_dpo::DpoError::NonFinite { step, ref quantity, .. } = err else {
        panic!("expected a non-finite error, got {err}")
    };
    assert_eq!(step, 2, "{err}");
    assert!(err.to_string().contains(&format!("step 2: the {quantity}")), "{err}");
    assert_eq!(trainer.steps_done(), 1, "the failed step does not count");
}
