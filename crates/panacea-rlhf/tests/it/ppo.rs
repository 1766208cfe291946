//! Tiny-model PPO: a few real steps on a random-init Llama with toy objectives.

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::{seed_everything, Objective, PreferenceSampler, PreferenceVector, RunRng};
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
    cfg.optim.actor_lr = 1e-2;
    cfg.optim.critic_lr = 1e-2;
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
        eos_id: 2,
        pad_id: 2,
        total_steps: 3,
    };
    (base_vs, PpoTrainer::new(cfg, parts).expect("trainer"))
}

#[test]
fn ppo_steps_move_every_adapter_tensor_and_no_base_tensor_with_lambda_fixed() {
    let (base_vs, mut t) = trainer(
        config(),
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
            // with, on every row, and the update uses exactly that λ.
            t.step += 1;
            let exp = t.make_experience(&batch, &pref, &mut rng).expect("experience");
            let rows: Vec<Vec<f64>> =
                Vec::try_from(exp.pref.to_kind(tch::Kind::Double)).expect("rows");
            for r in &rows {
                for (a, b) in r.iter().zip(pref.as_slice()) {
                    assert!((a - b).abs() < 1e-6, "experience pref {r:?} vs sampled {pref:?}");
                }
            }
            let m = t.learn(&exp, &mut rng).expect("learn");
            assert_eq!(
                m.pref_used.len(),
                1,
                "the update saw several preferences: {:?}",
                m.pref_used
            );
            assert_eq!(m.pref_used[0], rows[0]);
        } else {
            let m = t.step(&batch, &pref, &mut rng).expect("step");
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
    let m = t.step(&prompts(), &pref, &mut rng).expect("step");
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
    match t.step(&prompts(), &pref, &mut rng) {
        Err(RlhfError::NonFinite { step, what, .. }) => {
            assert_eq!(step, 1);
            assert_eq!(what, "score[bad]");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}
