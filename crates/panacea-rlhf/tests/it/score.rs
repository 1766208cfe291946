//! Learned score models on the tiny random-init backbone: Bradley–Terry training generalises
//! to held-out pairs, the folder round-trips, and PPO takes its rewards from it.

use panacea_core::{seed_everything, Objective, PreferenceVector, StepPreference};
use panacea_rlhf::rollout::{ModelSource, RewardSource};
use panacea_rlhf::score::{
    load_score_model, pair_loss, save_score_model, score_adapter_config, LmScoreModel, ScoreModel,
    ScoreModelMeta, ScorePairBatch,
};
use panacea_rlhf::testing::{tiny_policy, NegativeLength};
use panacea_rlhf::{PpoParts, PpoTrainer, PromptBatch};
use rand::{Rng, SeedableRng};
use tch::nn::{self, OptimizerConfig};

/// Pairs whose preferred side ends in token 500 and whose other side ends in token 900, after
/// random prefixes of random lengths: a signal the head can read from the last hidden state.
fn pairs(rng: &mut rand::rngs::StdRng, n: usize) -> ScorePairBatch {
    let mut seq = |last: i64| {
        let len = rng.gen_range(2..6);
        let mut v: Vec<i64> = (0..len).map(|_| rng.gen_range(3..40_000)).collect();
        v.push(last);
        v
    };
    let better: Vec<Vec<i64>> = (0..n).map(|_| seq(500)).collect();
    let worse: Vec<Vec<i64>> = (0..n).map(|_| seq(900)).collect();
    ScorePairBatch::from_tokens(&better, &worse, None, 2, tch::Device::Cpu).expect("batch")
}

#[test]
fn reward_model_learns_held_out_pairs_round_trips_and_drives_ppo() {
    panacea_core::device::init_torch();
    let mut policy_adapter = panacea_core::SvdLoraConfig::new(2);
    policy_adapter.rank = 4;
    policy_adapter.alpha = 16.0;
    let (_base_vs, adapter_vs, policy) = tiny_policy(&policy_adapter, 3);
    let score_cfg = score_adapter_config(4, 16.0);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let model = LmScoreModel::new(&policy, &vs.root(), &score_cfg);
    let mut opt = nn::Adam { beta1: 0.9, beta2: 0.95, wd: 0.0, ..Default::default() }
        .build(&vs, 1e-2)
        .expect("optimiser");
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let held_out = pairs(&mut rng, 32);
    let first = pair_loss(&model, &held_out, 0.0).loss.double_value(&[]);
    for _ in 0..40 {
        let batch = pairs(&mut rng, 8);
        let out = pair_loss(&model, &batch, 0.0);
        opt.zero_grad();
        out.loss.backward();
        opt.clip_grad_norm(1.0);
        opt.step();
    }
    let eval = tch::no_grad(|| pair_loss(&model, &held_out, 0.0));
    let acc = eval.accuracy.double_value(&[]);
    let last = eval.loss.double_value(&[]);
    assert!(acc > 0.9 && last < first, "held-out accuracy {acc}, loss {first} → {last}");

    // Save, reload onto the same base, same scores.
    let dir = std::env::temp_dir().join(format!("panacea-score-{}", std::process::id()));
    let meta = ScoreModelMeta {
        adapter: score_cfg.clone(),
        kind: panacea_core::ObjectiveKind::Reward,
        base_model: "tiny-random".into(),
        eval_accuracy: Some(acc),
        eval_sign_accuracy: None,
    };
    save_score_model(&dir, &vs, &meta).expect("save");
    let mut vs2 = nn::VarStore::new(tch::Device::Cpu);
    let (loaded, meta2) = load_score_model(&dir, &policy, &mut vs2).expect("load");
    assert_eq!(meta2, meta);
    let a = tch::no_grad(|| model.end_scores(&held_out.better_ids, &held_out.better_mask));
    let b = tch::no_grad(|| loaded.end_scores(&held_out.better_ids, &held_out.better_mask));
    assert!(a.equal(&b), "reloaded scores differ");
    std::fs::remove_dir_all(&dir).expect("clean up");

    // PPO with the learned reward as objective 0 and a built-in objective as objective 1.
    let mut cfg = panacea_rlhf::PpoConfig::default();
    cfg.rollout.max_new_tokens = 4;
    cfg.ppo.mini_batch_size = 2;
    // PPO's optimiser defaults before the shared config vocabulary.
    cfg.optim.weight_decay = 0.01;
    cfg.optim.warmup_ratio = 0.03;
    let sources: Vec<Box<dyn RewardSource>> = vec![
        Box::new(ModelSource { name: "learned".into(), model: loaded }),
        Box::new(NegativeLength),
    ];
    let parts = PpoParts {
        policy,
        adapter_vs,
        critic_adapter: policy_adapter,
        objectives: vec![Objective::reward("learned"), Objective::reward("short")],
        sources,
        tokenizer: None,
        eos_ids: vec![2],
        pad_id: 2,
        total_steps: 1,
    };
    let mut t = PpoTrainer::new(cfg, parts).expect("trainer");
    let mut run_rng = seed_everything(4);
    let batch =
        PromptBatch { prompts: vec![String::new(); 2], ids: vec![vec![1, 10], vec![1, 11, 12]] };
    let pref = PreferenceVector::new(vec![0.5, 0.5]).expect("pref");
    let m = t.step(&batch, StepPreference::Shared(&pref), &mut run_rng).expect("step");
    assert!(m.score_mean[0].is_finite() && m.policy_loss.is_finite(), "{m:?}");
}
