//! Tiny-model PPO: a few real steps on a random-init Llama with toy objectives.

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::{
    seed_everything, Objective, PreferenceSampler, PreferenceVector, RunRng, StepPreference,
};
use panacea_rlhf::config::PpoConfig;
use panacea_rlhf::lagrange::LagrangeConfig;
use panacea_rlhf::rollout::{RewardSource, RolloutView};
use panacea_rlhf::testing::{tiny_policy, EvenTokenFraction, NegativeLength, OddTokenFraction};
use panacea_rlhf::{PpoParts, PpoTrainer, PromptBatch, RlhfError};
use tch::{nn, Tensor};

fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn prompts() -> PromptBatch {
    // Four prompts of different lengths, so left padding is exercised.
    let ids = vec![vec![1, 17, 90], vec![1, 5], vec![1, 300, 301, 302], vec![1, 44]];
    PromptBatch { prompts: vec![String::new(); 4], ids }
}

fn config() -> PpoConfig {
    let mut cfg = PpoConfig::default();
    cfg.rollout.max_new_tokens = 6;
    cfg.ppo.mini_batch_size = 2;
    cfg.ppo.update_iters = 2;
    cfg.optim.lr = 1e-2;
    cfg.optim.critic_lr = 1e-2;
    // PPO's weight decay before the shared config vocabulary (its default is 0 now).
    cfg.optim.weight_decay = 0.01;
    cfg.optim.warmup_ratio = 0.0;
    cfg
}

fn trainer(
    cfg: PpoConfig,
    sources: Vec<Box<dyn RewardSource>>,
    objectives: Vec<Objective>,
) -> (nn::VarStore, PpoTrainer) {
    panacea_core::device::init_torch();
    let k = objectives.len() as i64;
    let mut adapter = SvdLoraConfig::new(k);
    adapter.rank = 4;
    adapter.alpha = 16.0;
    let (base_vs, adapter_vs, policy) = tiny_policy(&adapter, 3);
    let parts = PpoParts {
        policy,
        adapter_vs,
        critic_adapter: adapter,
        objectives,
        sources,
        tokenizer: None,
        eos_ids: vec![2],
        pad_id: 2,
        total_steps: 3,
    };
    (base_vs, PpoTrainer::new(cfg, parts).expect("trainer"))
}

#[test]
fn ppo_steps_move_every_adapter_tensor_and_no_base_tensor_with_lambda_fixed() {
    // The optional running normaliser on, so that its statistics are checked too.
    let mut cfg = config();
    cfg.ppo.normalise_scores = true;
    let (base_vs, mut t) = trainer(
        cfg,
        vec![Box::new(EvenTokenFraction), Box::new(NegativeLength)],
        vec![Objective::reward("even"), Objective::cost("length")],
    );
    let base_before = snapshot(&base_vs);
    let adapter_before = snapshot(&t.adapter_vs);
    let critic_before = snapshot(&t.critic.vs);
    let mut rng: RunRng = seed_everything(11);
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.0 };
    let batch = prompts();
    for step in 1..=3u64 {
        // λ is drawn before generation and handed to the step.
        let pref = sampler.sample(2, &mut rng.preference).expect("pref");
        if step == 1 {
            // Split the step to look at the experience: it records the λ it was generated
            // with, on every row, and the update uses exactly that λ. The step counts once
            // `learn` succeeded.
            let exp =
                t.make_experience(&batch, StepPreference::Shared(&pref), &mut rng).expect("exp");
            assert_eq!(t.steps_done(), 0);
            let rows: Vec<Vec<f64>> =
                Vec::try_from(exp.pref.to_kind(tch::Kind::Double)).expect("rows");
            for r in &rows {
                for (a, b) in r.iter().zip(pref.as_slice()) {
                    assert!((a - b).abs() < 1e-6, "experience pref {r:?} vs sampled {pref:?}");
                }
            }
            let m = t.learn(&exp, &mut rng).expect("learn");
            assert_eq!((m.step, t.steps_done()), (1, 1));
            assert_eq!(
                m.pref_used.len(),
                1,
                "the update saw several preferences: {:?}",
                m.pref_used
            );
            assert_eq!(m.pref_used[0], rows[0]);
        } else {
            let m = t.step(&batch, StepPreference::Shared(&pref), &mut rng).expect("step");
            assert_eq!(m.step, step);
            assert_eq!(m.pref_used.len(), 1);
            for (a, b) in m.pref_used[0].iter().zip(pref.as_slice()) {
                assert!((a - b).abs() < 1e-6);
            }
            for x in [m.kl, m.policy_loss, m.value_loss, m.entropy, m.approx_kl] {
                assert!(x.is_finite(), "{m:?}");
            }
            // NegativeLength is declared a cost: its utility is −(−len) = len > 0.
            assert!(m.score_mean[1] > 0.0 && m.score_mean[1] <= 6.0, "{m:?}");
            assert!(m.response_len > 0.0);
        }
    }
    for ((n, a), (_, b)) in base_before.iter().zip(snapshot(&base_vs)) {
        assert!(a.equal(&b), "base tensor {n} changed");
    }
    for ((n, a), (_, b)) in adapter_before.iter().zip(snapshot(&t.adapter_vs)) {
        assert!(!a.equal(&b), "adapter tensor {n} did not change");
    }
    for ((n, a), (_, b)) in critic_before.iter().zip(snapshot(&t.critic.vs)) {
        assert!(!a.equal(&b), "critic tensor {n} did not change");
    }
    assert_eq!(t.normaliser.count, 12.0);
}

#[test]
fn lagrangian_runs_alongside_preference_conditioning() {
    let mut cfg = config();
    cfg.ppo.update_iters = 1;
    cfg.lagrange = Some(LagrangeConfig {
        objective: 1,
        threshold: -100.0,
        lambda_init: 1.0,
        lambda_lr: 0.01,
        lambda_max: None,
        lambda_update_delay_steps: 0,
        episode_cost_window_size: 8,
    });
    let (_base, mut t) = trainer(
        cfg,
        vec![Box::new(EvenTokenFraction), Box::new(OddTokenFraction), Box::new(NegativeLength)],
        vec![Objective::reward("even"), Objective::cost("odd_cost"), Objective::reward("short")],
    );
    let mut rng = seed_everything(5);
    let pref = PreferenceVector::new(vec![0.2, 0.5, 0.3]).expect("pref");
    let m = t.step(&prompts(), StepPreference::Shared(&pref), &mut rng).expect("step");
    // The cost of objective 1 is the raw score of OddTokenFraction ∈ [0, 1], far above the
    // threshold −100, so μ grows: log μ = 0 + 0.01·(mean cost + 100)·1 > 0.
    let mu = m.lagrange_mu.expect("mu");
    assert!(mu > 1.0 && mu.is_finite(), "{mu}");
}

struct NanSource;
impl RewardSource for NanSource {
    fn name(&self) -> &str {
        "nan"
    }
    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        Ok(vec![f64::NAN; view.prompts.len()])
    }
}

#[test]
fn non_finite_score_stops_the_step_and_names_it() {
    let (_base, mut t) =
        trainer(config(), vec![Box::new(NanSource)], vec![Objective::reward("bad")]);
    let mut rng = seed_everything(1);
    let pref = PreferenceVector::new(vec![1.0]).expect("pref");
    match t.step(&prompts(), StepPreference::Shared(&pref), &mut rng) {
        Err(e @ RlhfError::NonFinite { .. }) => {
            let RlhfError::NonFinite { step, what, .. } = &e else { unreachable!() };
            assert_eq!((*step, what.as_str()), (1, "score[bad]"));
            // The hint names the scorer, not the learning rate: nothing in the update failed.
            let text = e.to_string();
            assert!(text.contains("scorer") && !text.contains("optim.lr"), "{text}");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    // A failed step does not count.
    assert_eq!(t.steps_done(), 0);
}

/// Mean even-token fraction of 64 sampled responses (8 draws of each of 8 prompts) under
/// `adapter`, with a fixed sampling seed so the three settings compared see the same noise.
fn even_fraction(t: &PpoTrainer, adapter: Option<&PreferenceVector>) -> f64 {
    use panacea_core::adapter::Adapter;
    use rand::SeedableRng;
    let ids: Vec<Vec<i64>> = (0..64).map(|i| vec![1, 3 + (i % 8) as i64]).collect();
    let cfg = panacea_lm::GenerateConfig {
        max_new_tokens: 8,
        sampling: panacea_lm::Sampling::Sample { temperature: 1.0, top_k: None, top_p: None },
        eos_ids: vec![2],
        pad_id: 2,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let pref_t = adapter.map(|p| {
        p.to_tensor(tch::Device::Cpu).to_kind(tch::Kind::Float).unsqueeze(0).expand([64, 2], false)
    });
    let mode = match &pref_t {
        Some(p) => Adapter::On { pref: p },
        None => Adapter::Off,
    };
    let g = tch::no_grad(|| panacea_lm::generate_ids(&t.policy, &ids, mode, &cfg, &mut rng))
        .expect("generate");
    let view = RolloutView::of(&g, &[], &[]);
    let v = EvenTokenFraction.score(&view).expect("score");
    v.iter().sum::<f64>() / v.len() as f64
}

/// Trains the parity pair (even vs odd token ids, in direct conflict) on a 16-token random-init
/// policy for 40 steps and returns the even fraction under the base, λ = e_1 and λ = e_2.
fn train_parity(per_row: bool) -> (f64, f64, f64) {
    panacea_core::device::init_torch();
    let mut adapter = SvdLoraConfig::new(2);
    adapter.rank = 4;
    adapter.alpha = 32.0;
    let (_base_vs, adapter_vs, policy) = panacea_rlhf::testing::tiny_policy_with(
        &panacea_rlhf::testing::toy_vocab_config(),
        &adapter,
        7,
    );
    let mut cfg = config();
    cfg.rollout.max_new_tokens = 8;
    cfg.ppo.mini_batch_size = 8;
    let steps = 40u64;
    let parts = PpoParts {
        policy,
        adapter_vs,
        critic_adapter: adapter,
        objectives: vec![Objective::reward("even"), Objective::reward("odd")],
        sources: vec![Box::new(EvenTokenFraction), Box::new(OddTokenFraction)],
        tokenizer: None,
        eos_ids: vec![2],
        pad_id: 2,
        total_steps: steps,
    };
    let mut t = PpoTrainer::new(cfg, parts).expect("trainer");
    let mut rng: RunRng = seed_everything(3);
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.3 };
    let ids: Vec<Vec<i64>> = (0..16).map(|i| vec![1, 3 + (i % 8) as i64]).collect();
    let batch = PromptBatch { prompts: vec![String::new(); 16], ids };
    let base = even_fraction(&t, None);
    for _ in 0..steps {
        let prefs = if per_row {
            sampler.sample_rows(2, batch.len(), &mut rng.preference).expect("prefs")
        } else {
            vec![sampler.sample(2, &mut rng.preference).expect("pref")]
        };
        let pref = match prefs.as_slice() {
            [one] => StepPreference::Shared(one),
            rows => StepPreference::PerRow(rows),
        };
        let m = t.step(&batch, pref, &mut rng).expect("step");
        let distinct = m.pref_used.len();
        assert!(if per_row { distinct > 1 } else { distinct == 1 }, "{:?}", m.pref_used);
    }
    let e1 = even_fraction(&t, Some(&PreferenceVector::vertex(2, 0).expect("e1")));
    let e2 = even_fraction(&t, Some(&PreferenceVector::vertex(2, 1).expect("e2")));
    (base, e1, e2)
}

#[test]
fn ppo_moves_even_and_odd_objectives_apart_along_the_preference() {
    // After training, sampling under λ = e_1 must give more even tokens than the base and
    // λ = e_2 fewer: the direction check the main job asks for, on a model small enough for
    // CI. One λ per step (the paper) and one per row (ours) must both separate.
    for per_row in [false, true] {
        let (base, e1, e2) = train_parity(per_row);
        eprintln!("per_row {per_row}: even fraction base {base:.3}, e1 {e1:.3}, e2 {e2:.3}");
        assert!(
            e1 > base + 0.05 && e2 < base - 0.05 && e1 - e2 > 0.2,
            "per_row {per_row}: base {base:.3}, e1 {e1:.3}, e2 {e2:.3}"
        );
    }
}

#[test]
fn resumed_run_ends_bit_exact_with_the_uninterrupted_one() {
    // Four steps straight versus two steps, a checkpoint, a fresh trainer restored from it and
    // two more steps: adapter, critic and both optimisers' moments must end on the same bits.
    use panacea_core::checkpoint::{load_var_store, save_var_store};
    let objectives = || vec![Objective::reward("even"), Objective::cost("length")];
    let sources = || -> Vec<Box<dyn RewardSource>> {
        vec![Box::new(EvenTokenFraction), Box::new(NegativeLength)]
    };
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.2 };
    let batch = prompts();
    let run_steps = |t: &mut PpoTrainer, rng: &mut RunRng, n: usize| {
        for _ in 0..n {
            let prefs = sampler.sample_rows(2, batch.len(), &mut rng.preference).expect("prefs");
            t.step(&batch, StepPreference::PerRow(&prefs), rng).expect("step");
        }
    };
    let (_, mut straight) = trainer(config(), sources(), objectives());
    let mut rng = seed_everything(21);
    run_steps(&mut straight, &mut rng, 4);

    let dir = std::env::temp_dir().join(format!("panacea-ppo-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (_, mut first) = trainer(config(), sources(), objectives());
    let mut rng = seed_everything(21);
    run_steps(&mut first, &mut rng, 2);
    save_var_store(&dir.join("adapter.safetensors"), &first.adapter_vs).expect("save adapter");
    first.save_state(&dir).expect("save state");
    let rng_state = rng.state();
    drop(first);

    let (_, mut resumed) = trainer(config(), sources(), objectives());
    load_var_store(&dir.join("adapter.safetensors"), &resumed.adapter_vs).expect("load adapter");
    resumed.restore_state(&dir).expect("restore");
    assert_eq!(resumed.steps_done(), 2);
    let mut rng = RunRng::from_state(&rng_state);
    run_steps(&mut resumed, &mut rng, 2);

    for (a, b) in
        [(&straight.adapter_vs, &resumed.adapter_vs), (&straight.critic.vs, &resumed.critic.vs)]
    {
        let (a, b) = (snapshot(a), snapshot(b));
        assert_eq!(a.len(), b.len());
        for ((n, x), (_, y)) in a.iter().zip(&b) {
            assert!(x.equal(y), "{n} differs after resume");
        }
    }
    for (x, y) in straight.actor_opt.state_tensors().iter().zip(resumed.actor_opt.state_tensors()) {
        assert!(x.1.equal(&y.1), "actor moment {} differs", x.0);
    }
    assert_eq!(straight.normaliser, resumed.normaliser);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn response_only_log_probs_equal_the_full_head_on_response_positions() {
    use panacea_core::adapter::Adapter;
    use panacea_core::ops::gather_log_probs;
    use panacea_lm::CausalLm;
    use panacea_rlhf::rollout::response_log_probs;
    panacea_core::device::init_torch();
    let adapter = SvdLoraConfig::new(2);
    let (_b, _a, policy) = tiny_policy(&adapter, 9);
    // B = 2, P = 3 (row 1 left-padded), N = 4.
    let seq =
        Tensor::from_slice(&[5i64, 6, 7, 8, 9, 10, 11, 2, 2, 6, 70, 80, 90, 100]).view([2, 7]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]).view([2, 7]);
    let pref = Tensor::from_slice(&[0.3f32, 0.7, 1.0, 0.0]).view([2, 2]);
    for a in [Adapter::Off, Adapter::On { pref: &pref }] {
        let full = gather_log_probs(&policy.logits(&seq, &mask, a), &seq).expect("full"); // [B, 6]
        let (part, logits) = response_log_probs(&policy, &seq, &mask, a, 3).expect("part");
        assert_eq!(part.size(), [2, 6]);
        assert_eq!(logits.size(), [2, 4, 49_152]);
        let lead = part.narrow(1, 0, 2);
        assert!(lead.abs().max().double_value(&[]) == 0.0);
        let diff = (part.narrow(1, 2, 4) - full.narrow(1, 2, 4)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "max difference {diff}");
    }
}

/// A parameter an update broke is named (store and variable) before a checkpoint could be
/// written, with a hint about weights rather than the learning-rate hint of a diverging loss.
#[test]
fn a_non_finite_parameter_is_named_before_anything_is_saved() {
    let (_base, t) = trainer(
        config(),
        vec![Box::new(EvenTokenFraction), Box::new(OddTokenFraction)],
        vec![Objective::reward("even"), Objective::reward("odd")],
    );
    t.check_finite_parameters().expect("a fresh trainer is finite");
    let (name, var) =
        t.adapter_vs.variables().into_iter().min_by(|a, b| a.0.cmp(&b.0)).expect("a variable");
    tch::no_grad(|| {
        let _ = var.shallow_clone().fill_(f64::NAN);
    });
    let text = t.check_finite_parameters().expect_err("a NaN parameter").to_string();
    assert!(
        text.contains(&format!("adapter parameter `{name}`")) && text.contains("broke the weights"),
        "{text}"
    );
}

/// `train.activation_checkpointing` (`PpoConfig::activation_checkpointing`): the actor's and
/// the critic's training forwards recompute each decoder layer in the backward pass, and a PPO
/// step (rollout, then two epochs of two minibatches) ends with the same losses, the same last
/// gradients and the same adapter and critic as the plain step. Tolerance: 1e-6 relative to
/// the largest entry (f32 rounding; the two paths run the same operations on the same inputs).
#[test]
fn checkpointed_ppo_update_equals_the_plain_one() {
    let grads = |vs: &nn::VarStore| -> Vec<(String, Tensor)> {
        let mut g: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(n, v)| (n, v.grad().detach().copy())).collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        g
    };
    let make = |checkpointing: bool| {
        let cfg = PpoConfig { activation_checkpointing: checkpointing, ..config() };
        trainer(
            cfg,
            vec![Box::new(EvenTokenFraction), Box::new(NegativeLength)],
            vec![Objective::reward("even"), Objective::cost("length")],
        )
    };
    let (_plain_base, plain) = make(false);
    let (_ck_base, checkpointed) = make(true);
    // The same adapters in both (their random init draws from libtorch's global generator,
    // which parallel tests share): the second trainer takes the first one's values.
    let copy = |from: &nn::VarStore, to: &nn::VarStore| {
        let values = snapshot(from);
        tch::no_grad(|| {
            for (name, v) in to.variables() {
                let (_, x) = values.iter().find(|(n, _)| *n == name).expect("same variables");
                v.shallow_clone().copy_(x);
            }
        });
    };
    copy(&plain.adapter_vs, &checkpointed.adapter_vs);
    copy(&plain.critic.vs, &checkpointed.critic.vs);
    let mut runs = Vec::new();
    for mut t in [plain, checkpointed] {
        let mut rng: RunRng = seed_everything(11);
        let pref = PreferenceVector::new(vec![0.3, 0.7]).expect("pref");
        // Two steps: after the first, σ and s are non-zero, so U and V get gradients too.
        let mut losses = Vec::new();
        for _ in 0..2 {
            let m = t.step(&prompts(), StepPreference::Shared(&pref), &mut rng).expect("step");
            losses.extend([m.policy_loss, m.value_loss]);
        }
        let state = [
            grads(&t.adapter_vs),
            grads(&t.critic.vs),
            snapshot(&t.adapter_vs),
            snapshot(&t.critic.vs),
        ];
        runs.push((losses, state));
    }
    let (plain_losses, plain) = &runs[0];
    let (ck_losses, ck) = &runs[1];
    for (a, b) in plain_losses.iter().zip(ck_losses) {
        assert!(
            (a - b).abs() <= 1e-6 * a.abs().max(1.0),
            "losses {plain_losses:?} vs {ck_losses:?}"
        );
    }
    for (what, (p, c)) in
        ["actor grads", "critic grads", "adapter", "critic"].iter().zip(plain.iter().zip(ck))
    {
        assert_eq!(p.len(), c.len());
        let scale = p.iter().map(|(_, x)| x.abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(scale > 1e-6, "{what}: all zero");
        for ((name, x), (_, y)) in p.iter().zip(c) {
            let d = (x - y).abs().max().double_value(&[]);
            assert!(d <= 1e-6 * scale.max(1.0), "{what} {name}: max |Δ| {d:e} (scale {scale:e})");
        }
    }
}
