//! The `train-ppo` and `train-rm` configs: the bundled files parse to the values they had
//! before the shared vocabulary, old keys fail naming the new ones, and bad values are refused
//! by name.

use std::path::PathBuf;

use panacea_core::config::{load_config, parse_config};
use panacea_core::device::DeviceChoice;
use panacea_core::{Aggregation, ObjectiveKind, PreferenceSampler};
use panacea_data::ScorerSpec;
use panacea_rlhf::config::PromptSource;
use panacea_rlhf::{TrainPpoConfig, TrainRmConfig};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ppo(file: &str, set: &[&str]) -> Result<TrainPpoConfig, String> {
    let sets: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    load_config(&root().join(file), &sets).map_err(|e| e.to_string())
}

/// configs/ppo-default.yaml resolves to the values of the embedded default before the keys
/// moved (read off the old file and the old struct defaults: seed 1, cpu, actor lr 2e-3,
/// critic lr 1e-3, weight decay 0.01, warm-up 3 %, clip 1.0, kl 0.02, ...), with the steering
/// changes of 2026-12-07 (issue #23: kl 0.05, half the rows at a vertex, s at 10× the learning
/// rate; benches/README.md "Steering report and diagnostics") and of 2026-12-08 (60 steps, all
/// 93 held-out prompts in the steering report; benches/README.md "Sixty steps").
#[test]
fn the_default_ppo_config_keeps_its_resolved_values() {
    let c = ppo("configs/ppo-default.yaml", &[]).expect("ppo-default");
    assert_eq!((c.model.as_str(), c.seed, c.device), ("smollm2-135m", 1, DeviceChoice::Cpu));
    assert_eq!((c.adapter.rank, c.adapter.alpha, c.adapter.n_objectives), (4, 256.0, 2));
    assert_eq!(c.threads, 0);
    let o = &c.optim;
    assert_eq!(
        (o.lr, o.critic_lr, o.weight_decay, o.critic_weight_decay, o.warmup_ratio, o.max_grad_norm),
        (2e-3, 1e-3, 0.01, 0.0, 0.03, 1.0)
    );
    let m = &o.lr_multipliers;
    assert_eq!((m.sigma, m.pref_scale, m.vectors), (1.0, 10.0, 1.0));
    let p = &c.ppo;
    assert_eq!((p.kl_coef, p.clip_ratio, p.clip_value, p.clip_score), (0.05, 0.2, 5.0, 50.0));
    assert_eq!((p.gamma, p.gae_lambda, p.update_iters, p.mini_batch_size), (1.0, 0.95, 1, 4));
    assert!(!p.whiten_advantages && !p.normalise_scores);
    assert_eq!((c.rollout.max_new_tokens, c.rollout.temperature), (16, 1.0));
    assert_eq!((c.rollout.top_k, c.rollout.top_p), (None, None));
    assert_eq!(c.aggregation, Aggregation::Linear);
    assert_eq!(c.lagrange, None);
    assert_eq!(c.preference, PreferenceSampler::Dirichlet { vertex_prob: 0.5 });
    let t = &c.train;
    assert_eq!((t.steps, t.batch_size, t.log_every, t.save_every), (60, 8, 1, 20));
    // eval_prompts 16 → 64 (2026-12-07) → 93, every held-out prompt (2026-12-08): the steering
    // report's intervals need the prompts.
    assert_eq!((t.eval_every, t.hv_prompts, t.eval_prompts), (20, 4, 93));
    assert!(t.preference_per_row);
    assert!(matches!(&c.data.prompts, PromptSource::Bundled { sets } if sets.len() == 1));
    assert_eq!((c.data.chat_template, c.data.max_prompt_tokens), (true, 48));
    let sources: Vec<&ScorerSpec> = c.objectives.iter().map(|o| &o.source).collect();
    assert_eq!(sources, [&ScorerSpec::Positive, &ScorerSpec::Negative]);
    assert!(c.objectives.iter().all(|o| o.kind == ObjectiveKind::Reward && o.scale == 1.0));
}

/// Every bundled PPO and score-model config parses (score-model paths and pair files given,
/// since the bundled ones name folders a run fills in later or paths relative to the workspace).
#[test]
fn every_bundled_config_parses() {
    let dir = root().join("crates/panacea-rlhf");
    let score = |i: usize| format!("objectives.{i}.source.path={}", dir.display());
    for file in [
        "configs/ppo-default.yaml",
        "configs/tiny/ppo.yaml",
        "configs/ppo-three.yaml",
        "configs/tiny/ppo-three.yaml",
    ] {
        ppo(file, &[]).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    for file in ["configs/ppo-learned.yaml", "configs/tiny/ppo-learned.yaml"] {
        let (a, b) = (score(0), score(1));
        ppo(file, &[&a, &b]).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    for (file, pairs) in [
        ("configs/rm-hh.yaml", "data/pairs/smollm2-pku.jsonl"),
        ("configs/tiny/rm.yaml", "data/tiny/pairs_generic.jsonl"),
    ] {
        let set = vec![format!("data.train={}", root().join(pairs).display())];
        let c: TrainRmConfig =
            load_config(&root().join(file), &set).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(c.seed, 1, "{file}");
        assert_eq!(c.device, DeviceChoice::Cpu, "{file}");
        assert_eq!(c.optim.max_grad_norm, 1.0);
    }
    let c: TrainRmConfig = load_config(
        &root().join("configs/rm-hh.yaml"),
        &[format!("data.train={}", root().join("data/pairs/smollm2-pku.jsonl").display())],
    )
    .expect("rm-hh");
    // The values of the file before the keys moved: rank 8, alpha 32, lr 1e-3, 128 tokens.
    assert_eq!((c.adapter.rank, c.adapter.alpha, c.optim.lr, c.data.max_len), (8, 32.0, 1e-3, 128));
    let names: Vec<&str> = c.objectives.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["helpful", "harmless"]);
}

/// Keys of the old vocabulary fail with the new key's name, from the file or from `--set`.
#[test]
fn old_keys_name_their_new_keys() {
    let cases = [
        ("ppo.ppo.kl_coef=0.1", "`ppo.ppo` is now `ppo`"),
        ("ppo.optim.actor_lr=0.1", "`ppo.optim.actor_lr` is now `optim.lr`"),
        ("ppo.optim.grad_clip=2", "`ppo.optim.grad_clip` is now `optim.max_grad_norm`"),
        ("train.hv_every=5", "`train.hv_every` is now `train.eval_every`"),
    ];
    for (set, expected) in cases {
        let err = ppo("configs/tiny/ppo.yaml", &[set]).expect_err(set);
        assert!(err.contains(expected), "{set}: {err}");
    }
    for (yaml, expected) in [
        ("model: { name: tiny-random }\n", "`model.name` is now `model`"),
        ("model: { init_seed: 7 }\n", "`model.init_seed` is now `seed`"),
    ] {
        let err = parse_config::<TrainPpoConfig>(yaml, "old-ppo.yaml", &[]).expect_err(yaml);
        assert!(err.to_string().contains(expected), "{yaml}: {err}");
    }
    let old_rm = "model: { name: tiny-random, rank: 4, alpha: 16.0 }\n";
    let err = parse_config::<TrainRmConfig>(old_rm, "old-rm.yaml", &[]).expect_err("old rm");
    assert!(err.to_string().contains("`model.name` is now `model`"), "{err}");
    let err = parse_config::<TrainRmConfig>("models: []\n", "old-rm.yaml", &[]).expect_err("old");
    assert!(err.to_string().contains("`models` is now `objectives`"), "{err}");
}

/// A built-in scorer declared a cost is refused (it would be negated silently); a NaN in the
/// config is refused by key before anything runs.
#[test]
fn built_in_costs_and_non_finite_values_are_refused_by_key() {
    let err = ppo("configs/tiny/ppo.yaml", &["objectives.1.kind=cost"]).expect_err("cost");
    assert!(err.contains("objectives.1.kind") && err.contains("odd_tokens"), "{err}");
    for set in
        ["adapter.alpha=.nan", "optim.lr=.nan", "ppo.kl_coef=.inf", "objectives.0.scale=.nan"]
    {
        let key = set.split('=').next().expect("key");
        let err = ppo("configs/tiny/ppo.yaml", &[set]).expect_err(set);
        assert!(err.contains(key), "{set}: {err}");
    }
}
