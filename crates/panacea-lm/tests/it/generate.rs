//! Generation on the tiny random-init model with the real tokenizer's ids: batching equals
//! single runs, seeds reproduce, masks and log-probs are consistent.

use panacea_lm::generate::{generate_ids, GenerateConfig, Sampling};
use panacea_lm::llama::KvCache;
use panacea_lm::{Adapter, LmError};
use rand::SeedableRng;
use tch::Kind;

use crate::common::{max_abs_diff, tiny};

fn cfg(sampling: Sampling, n: i64) -> GenerateConfig {
    GenerateConfig { max_new_tokens: n, sampling, eos_ids: vec![2], pad_id: 2 }
}

fn prompts() -> Vec<Vec<i64>> {
    (0..8i64).map(|i| (0..(2 + i % 5)).map(|j| 100 + 37 * i + 11 * j).collect()).collect()
}

#[test]
fn batch_of_8_equals_8_single_runs() {
    let (_vs, model) = tiny(10);
    let ps = prompts();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let c = cfg(Sampling::Greedy, 6);
    let batch = generate_ids(&model, &ps, Adapter::Off, &c, &mut rng).expect("batch");
    for (i, p) in ps.iter().enumerate() {
        let one = generate_ids(&model, std::slice::from_ref(p), Adapter::Off, &c, &mut rng)
            .expect("single");
        let n = one.response_ids.size()[1];
        let b_ids = batch.response_ids.get(i as i64).narrow(0, 0, n);
        assert_eq!(
            Vec::<i64>::try_from(&b_ids).ok(),
            Vec::<i64>::try_from(one.response_ids.get(0)).ok(),
            "row {i}"
        );
        let d = max_abs_diff(&batch.logprobs.get(i as i64).narrow(0, 0, n), &one.logprobs.get(0));
        assert!(d < 1e-4, "row {i}: log-prob diff {d}");
    }
}

#[test]
fn same_seed_gives_the_same_tokens_and_another_seed_differs() {
    let (_vs, model) = tiny(11);
    let ps = prompts();
    let c = cfg(Sampling::Sample { temperature: 1.0, top_k: Some(50), top_p: Some(0.9) }, 8);
    let run = |seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let g = generate_ids(&model, &ps, Adapter::Off, &c, &mut rng).expect("generate");
        Vec::<i64>::try_from(g.response_ids.flatten(0, -1)).expect("ids")
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn top_k_1_sampling_equals_greedy() {
    let (_vs, model) = tiny(12);
    let ps = prompts();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let g =
        generate_ids(&model, &ps, Adapter::Off, &cfg(Sampling::Greedy, 5), &mut rng).expect("g");
    let s = Sampling::Sample { temperature: 0.7, top_k: Some(1), top_p: None };
    let k = generate_ids(&model, &ps, Adapter::Off, &cfg(s, 5), &mut rng).expect("k");
    assert!(g.response_ids.equal(&k.response_ids));
}

#[test]
fn rows_stop_at_eos_which_is_kept_in_the_response_mask() {
    let (_vs, model) = tiny(13);
    // A zero final norm makes every logit 0; argmax then returns the first index, 0, which this
    // config declares to be EOS. So the row emits EOS at its first step and the loop exits.
    tch::no_grad(|| {
        let _ = model.norm.weight.shallow_clone().fill_(0.0);
    });
    let c = GenerateConfig {
        max_new_tokens: 10,
        sampling: Sampling::Greedy,
        eos_ids: vec![0],
        pad_id: 5,
    };
    let ps = vec![vec![500i64, 501, 502], vec![7]];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let g = generate_ids(&model, &ps, Adapter::Off, &c, &mut rng).expect("g");
    assert_eq!(g.response_ids.size(), [2, 1], "early exit after the step where all rows ended");
    assert_eq!(Vec::<i64>::try_from(g.response_ids.flatten(0, -1)).ok(), Some(vec![0, 0]));
    assert_eq!(Vec::<i64>::try_from(g.response_mask.flatten(0, -1)).ok(), Some(vec![1, 1]));
    // log p = −ln V under a uniform distribution.
    let want = -(49_152f64).ln();
    let lp = Vec::<f64>::try_from(g.logprobs.flatten(0, -1).to_kind(Kind::Double)).expect("lp");
    assert!(lp.iter().all(|v| (v - want).abs() < 1e-4), "{lp:?} vs {want}");
    // Prompts are left-padded with pad_id and masked.
    assert_eq!(g.prompt_len, 3);
    assert_eq!(Vec::<i64>::try_from(g.ids.get(1)).ok(), Some(vec![5, 5, 7, 0]));
    assert_eq!(Vec::<i64>::try_from(g.attention_mask.get(1)).ok(), Some(vec![0, 0, 1, 1]));
}

#[test]
fn a_stopped_row_is_padded_and_masked_while_others_continue() {
    let (_vs, model) = tiny(16);
    let ps = prompts();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    // Declare the token greedy picks first for row 0 to be EOS: row 0 stops at once.
    let probe =
        generate_ids(&model, &ps, Adapter::Off, &cfg(Sampling::Greedy, 1), &mut rng).expect("p");
    let eos = i64::try_from(probe.response_ids.get(0).get(0)).expect("id");
    let c = GenerateConfig {
        max_new_tokens: 5,
        sampling: Sampling::Greedy,
        eos_ids: vec![eos],
        pad_id: 9,
    };
    let g = generate_ids(&model, &ps, Adapter::Off, &c, &mut rng).expect("g");
    let row0 = Vec::<i64>::try_from(g.response_ids.get(0)).expect("ids");
    let mask0 = Vec::<i64>::try_from(g.response_mask.get(0)).expect("mask");
    let n = row0.len();
    assert_eq!(row0[0], eos);
    assert!(row0[1..].iter().all(|&t| t == 9), "{row0:?}");
    assert_eq!(mask0, [vec![1], vec![0; n - 1]].concat());
    let lp0 = Vec::<f64>::try_from(g.logprobs.get(0).to_kind(Kind::Double)).expect("lp");
    assert!(lp0[1..].iter().all(|&v| v == 0.0));
}

#[test]
fn every_listed_eos_id_stops_its_row() {
    let (_vs, model) = tiny(16);
    let ps = prompts();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let probe =
        generate_ids(&model, &ps, Adapter::Off, &cfg(Sampling::Greedy, 1), &mut rng).expect("p");
    let first: Vec<i64> = Vec::try_from(probe.response_ids.reshape([-1])).expect("ids");
    let mut ids = first.clone();
    ids.sort_unstable();
    ids.dedup();
    assert!(ids.len() >= 2, "the rows' first tokens differ: {first:?}");
    let with = |eos_ids: Vec<i64>| GenerateConfig {
        max_new_tokens: 5,
        sampling: Sampling::Greedy,
        eos_ids,
        pad_id: 9,
    };
    // Every row's first token is one of the listed ids (Llama 3 lists several): all stop.
    let g = generate_ids(&model, &ps, Adapter::Off, &with(ids.clone()), &mut rng).expect("g");
    assert_eq!(g.response_ids.size(), [8, 1], "the loop ends once every row stopped");
    // Without the last id, the rows that emitted it go on.
    let g = generate_ids(&model, &ps, Adapter::Off, &with(ids[..ids.len() - 1].to_vec()), &mut rng)
        .expect("g");
    assert!(g.response_ids.size()[1] > 1);
}

#[test]
fn log_probs_match_a_full_forward_rescoring() {
    use panacea_lm::CausalLm;
    let (_vs, model) = tiny(14);
    let ps = prompts();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let s = Sampling::Sample { temperature: 1.0, top_k: None, top_p: None };
    let g = generate_ids(&model, &ps, Adapter::Off, &cfg(s, 6), &mut rng).expect("g");
    // Re-score prompt + response with one forward, as PPO does.
    let logits = tch::no_grad(|| model.logits(&g.ids, &g.attention_mask, Adapter::Off)); // [B, T, V]
    let p = g.prompt_len;
    let n = g.response_ids.size()[1];
    let logp = logits.narrow(1, p - 1, n).log_softmax(-1, Kind::Float); // [B, N, V]
    let re =
        logp.gather(2, &g.response_ids.unsqueeze(-1), false).squeeze_dim(-1) * &g.response_mask;
    let d = max_abs_diff(&re, &g.logprobs);
    assert!(d < 1e-4, "rescored − sampled log-probs: {d}");
}

#[test]
fn invalid_settings_are_rejected() {
    let (_vs, model) = tiny(15);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let bad = cfg(Sampling::Sample { temperature: 0.0, top_k: Some(0), top_p: Some(1.5) }, 0);
    let err = generate_ids(&model, &prompts(), Adapter::Off, &bad, &mut rng).expect_err("invalid");
    let msg = err.to_string();
    assert!(msg.contains("temperature") && msg.contains("top_k") && msg.contains("top_p"), "{msg}");
    let empty: Vec<Vec<i64>> = vec![vec![]];
    assert!(
        generate_ids(&model, &empty, Adapter::Off, &cfg(Sampling::Greedy, 2), &mut rng).is_err()
    );
}

#[test]
fn prepared_adapter_generates_the_same_tokens_and_log_probs_and_is_dropped_afterwards() {
    let (_vs, model) = tiny(14);
    let avs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mut policy =
        model.with_adapter(Some((&avs.root(), &panacea_core::adapter::SvdLoraConfig::new(2))));
    panacea_lm::init_random(&avs, 9); // a non-zero diagonal, so the adapter matters
    let ps = prompts();
    let prefs: Vec<f32> = (0..8).flat_map(|i| [i as f32 / 7.0, 1.0 - i as f32 / 7.0]).collect();
    let prefs = tch::Tensor::from_slice(&prefs).view([8, 2]); // per-row λ, like a PPO rollout
    let c = cfg(Sampling::Sample { temperature: 1.0, top_k: None, top_p: Some(0.95) }, 6);
    let on = Adapter::On { pref: &prefs };
    let run = |m: &panacea_lm::Llama| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        generate_ids(m, &ps, on, &c, &mut rng).expect("generate")
    };
    let plain = run(&policy);
    let base =
        generate_ids(&model, &ps, Adapter::Off, &c, &mut rand::rngs::StdRng::seed_from_u64(5))
            .expect("base");
    assert!(!plain.logprobs.equal(&base.logprobs), "the adapter must change the rollout");
    let prepared = policy
        .with_prepared_adapter(&prefs, |m| {
            assert!(m.linears().all(|l| l.is_prepared()));
            run(m)
        })
        .expect("prepare");
    assert!(prepared.response_ids.equal(&plain.response_ids));
    assert!(prepared.logprobs.equal(&plain.logprobs), "prepared log-probs must be bit-equal");
    assert!(policy.linears().all(|l| !l.is_prepared()), "dropped after the scope");
    let wrong = tch::Tensor::ones([8, 3], (Kind::Float, tch::Device::Cpu));
    assert!(policy.with_prepared_adapter(&wrong, |_| ()).is_err());
    assert!(policy.linears().all(|l| !l.is_prepared()), "dropped after an error too");
}

#[test]
fn lengths_past_the_context_are_an_error_naming_the_limit() {
    // Issue 18: `generate --max-new-tokens 100000000` panicked in libtorch on a 76 GB allocation.
    let (_vs, mut model) = tiny(17);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let greedy = |n| cfg(Sampling::Greedy, n);
    let err = generate_ids(&model, &prompts(), Adapter::Off, &greedy(100_000_000), &mut rng)
        .expect_err("past the context");
    let LmError::ContextExceeded { prompt_len, new_tokens, limit, .. } = &err else {
        panic!("{err:?}")
    };
    // prompts() are 2..=6 tokens long; the tiny config's context is 8192 positions.
    assert_eq!((*prompt_len, *new_tokens, *limit), (6, 100_000_000, 8192));
    let msg = err.to_string();
    assert!(msg.contains("context of 8192") && msg.contains("at most 8186 new tokens"), "{msg}");
    let err = generate_ids(&model, &prompts(), Adapter::Off, &greedy(i64::MAX), &mut rng)
        .expect_err("no overflow");
    assert!(matches!(err, LmError::ContextExceeded { .. }), "{err:?}");

    // The bound is exact: the longest prompt (6) + N ≤ the context.
    model.config.max_position_embeddings = 16;
    let ok = generate_ids(&model, &prompts(), Adapter::Off, &greedy(10), &mut rng);
    assert!(ok.is_ok(), "{:?}", ok.err());
    let err = generate_ids(&model, &prompts(), Adapter::Off, &greedy(11), &mut rng)
        .expect_err("one past");
    assert!(err.to_string().contains("at most 10 new tokens"), "{err}");
}

#[test]
fn an_allocation_libtorch_refuses_is_an_error_not_a_panic() {
    let (_vs, mut model) = tiny(18);
    // [2^20, 2 KV heads, 2^20, 16] f32 per layer: 2^47 bytes, a whole 47-bit address space.
    let err = KvCache::try_new(&model, 1 << 20, 1 << 20).expect_err("refused");
    assert!(matches!(err, LmError::Torch(_)), "{err:?}");
    // Through generate, with a context large enough to let the request through: 8 rows ×
    // 10¹² positions of cache is ~10¹⁵ bytes per layer, beyond the address space too.
    model.config.max_position_embeddings = i64::MAX;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let err = generate_ids(
        &model,
        &prompts(),
        Adapter::Off,
        &cfg(Sampling::Greedy, 1_000_000_000_000),
        &mut rng,
    )
    .expect_err("refused");
    assert!(matches!(err, LmError::Torch(_)), "{err:?}");
}
