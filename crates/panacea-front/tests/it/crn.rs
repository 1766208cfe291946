//! Common random numbers: a (prompt, sample) row draws the same tokens whatever its batch.

use panacea_core::PreferenceVector;
use panacea_front::{evaluate, row_rng, AdapterSpec, Method};
use panacea_lm::{Adapter, GenerateConfig, Sampling};
use panacea_run::Silent;

use crate::support::{random_adapter, temp_dir, tiny_base, tiny_eval_config};

/// Candidates per sampling step in these tests. The tiny random model's next-token distribution
/// is nearly uniform over 49k tokens, so neighbouring boundaries of its CDF lie ~2e-5 apart, and
/// the last-bit differences between a batched and an unbatched GEMM (MKL's sums depend on the
/// shape and on buffer alignment, which other tests running in the same process shift) moved a
/// draw across one in about one run of seven. With eight candidates the boundaries are ~0.1
/// apart, so a changed draw can only come from a changed uniform, which is what these tests are
/// about.
const TOP_K: i64 = 8;

/// The same model and λ give each row the same sampled response in two different batch orders
/// and sizes: rows (0, 1, 2) in one batch, and rows (2, 0) then (1) alone, each row with its
/// own stream from `row_rng(seed, prompt, sample)`.
#[test]
fn per_row_streams_make_responses_independent_of_batch_order_and_size() {
    let Some(base) = tiny_base(5) else { return };
    let dir = temp_dir("crn-rows");
    random_adapter(&base, &["harmless", "positive"], 11, &dir.join("adapter"));
    let cfg = tiny_eval_config(&[]);
    let prompts: Vec<String> =
        ["Hello there", "Write a haiku about rain.", "What is 2 + 2?"].map(String::from).to_vec();
    let gen = GenerateConfig {
        // Eight candidates per step: see `TOP_K`.
        sampling: Sampling::Sample { temperature: 1.0, top_k: Some(TOP_K), top_p: None },
        ..GenerateConfig::greedy(&base.tokenizer, 12)
    };
    let pref = PreferenceVector::new(vec![0.3, 0.7]).expect("λ");
    let run = |rows: &[(usize, usize)]| -> Vec<String> {
        let texts: Vec<String> = rows.iter().map(|(p, _)| prompts[*p].clone()).collect();
        let mut rngs: Vec<_> = rows.iter().map(|(p, s)| row_rng(cfg.seed, *p, *s)).collect();
        let prefs = PreferenceVector::stack(&vec![pref.clone(); rows.len()], tch::Device::Cpu)
            .expect("stack");
        panacea_lm::generate_per_row(
            &base.model,
            &base.tokenizer,
            &texts,
            Adapter::On { pref: &prefs },
            &gen,
            &mut rngs,
        )
        .expect("generate")
        .texts
    };
    let together = run(&[(0, 0), (1, 0), (2, 0)]);
    let reordered = run(&[(2, 0), (0, 0)]);
    let alone = run(&[(1, 0)]);
    assert_eq!(reordered, [together[2].clone(), together[0].clone()]);
    assert_eq!(alone, [together[1].clone()]);
    // A second sample of the same prompt draws from another stream.
    let second = run(&[(0, 1), (0, 2), (0, 3)]);
    assert!(second.iter().any(|t| *t != together[0]), "{second:?} vs {:?}", together[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole evaluation with sampling gives bit-identical fronts whether its rows go one per
/// batch or several λs per batch: the batch size changes speed, never results.
#[test]
fn evaluation_is_identical_for_every_batch_size() {
    let Some(base) = tiny_base(5) else { return };
    let dir = temp_dir("crn-eval");
    let adapter = dir.join("adapter");
    random_adapter(&base, &["concise", "positive"], 11, &adapter);
    let methods = [Method::Adapter(AdapterSpec { label: "panacea".into(), adapter })];
    let front = |batch_size: usize| {
        let cfg = tiny_eval_config(&[
            "objectives=[{name: concise, kind: reward, source: {kind: concise, c: 4}}, {name: positive, kind: reward, source: {kind: positive}}]",
            "prompts.count=3",
            "samples_per_prompt=2",
            "generation.max_new_tokens=6",
            "generation.temperature=1.0",
            "generation.top_p=null",
            &format!("generation.top_k={TOP_K}"),
            &format!("batch_size={batch_size}"),
        ]);
        let prompts = cfg.load_prompts().expect("prompts");
        let ev = evaluate(&cfg, &base, &methods, &prompts, &mut Silent).expect("evaluate");
        (ev.methods, ev.examples)
    };
    let (one, one_examples) = front(1);
    let (many, many_examples) = front(7);
    assert_eq!(one_examples, many_examples);
    for (a, b) in one.iter().zip(&many) {
        assert_eq!(a.per_prompt, b.per_prompt, "{}", a.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
