//! Mixed-λ continuous batching is exact: greedy answers of requests that share decode steps
//! (each row with its own λ, rows joining while others decode) equal, token for token, the
//! same requests served one at a time, and equal `panacea_lm::generate_ids` run alone.

use std::sync::atomic::Ordering;

use panacea_lm::{Adapter, GenerateConfig};
use panacea_serve::engine::{Engine, Event, GenParams};
use panacea_serve::Limits;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::common;

const REQUESTS: usize = 32;
const NEW_TOKENS: usize = 12;

fn prompts() -> Vec<&'static str> {
    vec![
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "How do I sort a list in Python?",
        "Tell me a joke.",
        "Explain photosynthesis to a child in two sentences, please.",
    ]
}

/// λ_i = (i / 31, 1 − i / 31): 32 different preferences from one vertex to the other.
fn prefs() -> Vec<Vec<f64>> {
    (0..REQUESTS)
        .map(|i| {
            let a = i as f64 / (REQUESTS - 1) as f64;
            vec![a, 1.0 - a]
        })
        .collect()
}

fn greedy(n: usize) -> GenParams {
    GenParams {
        max_tokens: n,
        sampling: panacea_lm::Sampling::Greedy,
        seed: 0,
        stop: Vec::new(),
        n: 1,
    }
}

/// Every token of a one-choice job, in order (EOS excluded), and whether it ended.
fn tokens_of(rx: &mut UnboundedReceiver<Event>, first: Vec<Event>) -> Vec<i64> {
    let mut out = Vec::new();
    let handle = |e: Event, out: &mut Vec<i64>| match e {
        Event::Text { tokens, .. } => {
            out.extend(tokens);
            false
        }
        Event::Done { .. } => true,
        Event::Error(m) => panic!("job failed: {m}"),
    };
    for e in first {
        if handle(e, &mut out) {
            return out;
        }
    }
    while let Some(e) = rx.blocking_recv() {
        if handle(e, &mut out) {
            return out;
        }
    }
    panic!("the engine dropped a job");
}

/// Serves 32 greedy requests with 32 different λ one at a time, then together (8 first, 24
/// joining once the first has produced a token), asserts equal tokens, a shared batch and an
/// effect of λ, and returns the prompts and the answers.
pub(crate) fn mixed_batch_equals_alone(
    served: panacea_serve::ServedModel,
    new_tokens: usize,
) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let limits =
        Limits { max_batch: 32, queue_len: 64, max_prompt_tokens: 96, max_output_tokens: 64 };
    let engine = Engine::start(served, limits, 1).expect("engine starts");
    let info = engine.info().clone();
    let ids: Vec<Vec<i64>> = (0..REQUESTS)
        .map(|i| {
            let text =
                info.chat_template.user_prompt(prompts()[i % prompts().len()]).expect("renders");
            info.tokenizer.encode(&text).expect("encodes")
        })
        .collect();

    // One at a time: each job is alone in the batch.
    let mut alone = Vec::new();
    for (p, pref) in ids.iter().zip(prefs()) {
        let mut rx = engine.submit(p.clone(), Some(pref), greedy(new_tokens)).expect("queued");
        alone.push(tokens_of(&mut rx, Vec::new()));
    }
    let steps_alone = engine.stats().steps.load(Ordering::SeqCst);

    // Together: 8 jobs start; once the first has produced a token, 24 more join mid-decode.
    let mut rxs: Vec<UnboundedReceiver<Event>> = Vec::new();
    for (p, pref) in ids.iter().zip(prefs()).take(8) {
        rxs.push(engine.submit(p.clone(), Some(pref), greedy(new_tokens)).expect("queued"));
    }
    let first = vec![rxs[0].blocking_recv().expect("a first event")];
    for (p, pref) in ids.iter().zip(prefs()).skip(8) {
        rxs.push(engine.submit(p.clone(), Some(pref), greedy(new_tokens)).expect("queued"));
    }
    let mut together = Vec::new();
    for (i, rx) in rxs.iter_mut().enumerate() {
        together.push(tokens_of(rx, if i == 0 { first.clone() } else { Vec::new() }));
    }
    let steps_together = engine.stats().steps.load(Ordering::SeqCst) - steps_alone;

    for i in 0..REQUESTS {
        assert_eq!(
            together[i],
            alone[i],
            "request {i} (λ = {:?}) differs when batched",
            prefs()[i]
        );
    }
    // The batch really was shared: 32 × ~(new_tokens − 1) steps alone, far fewer together.
    assert!(
        steps_together * 4 < steps_alone,
        "batched run took {steps_together} decode steps, one-at-a-time {steps_alone}"
    );
    // λ matters: the same prompt answers differently across the preferences.
    let same_prompt: std::collections::BTreeSet<&Vec<i64>> =
        (0..REQUESTS).step_by(prompts().len()).map(|i| &alone[i]).collect();
    assert!(same_prompt.len() > 1, "λ changed nothing: {same_prompt:?}");
    engine.shutdown().expect("engine stops");
    (ids, alone)
}

#[test]
fn thirty_two_mixed_preferences_in_one_batch_equal_one_at_a_time_token_for_token() {
    let Some(served) = common::tiny_served(true) else { return };
    let Some(reference) = common::tiny_served(true) else { return };
    let (ids, alone) = mixed_batch_equals_alone(served, NEW_TOKENS);

    // And the engine's answers are panacea-lm's `generate_ids` for the request alone.
    let adapter = reference.adapter.as_ref().expect("adapter");
    for i in [0, 7, 19, 31] {
        let pref = tch::Tensor::from_slice(&prefs()[i]).to_kind(tch::Kind::Float).view([1, 2]);
        let cfg = GenerateConfig::greedy(&reference.base.tokenizer, NEW_TOKENS as i64);
        let mut rng = rand::rngs::mock::StepRng::new(0, 0);
        let on = Adapter::On { pref: &pref };
        let g = panacea_lm::generate_ids(&adapter.model, &ids[i..=i], on, &cfg, &mut rng)
            .expect("generates");
        let toks: Vec<i64> = Vec::try_from(g.response_ids.get(0)).expect("ids");
        let mask: Vec<i64> = Vec::try_from(g.response_mask.get(0)).expect("mask");
        let expected: Vec<i64> = toks
            .iter()
            .zip(&mask)
            .filter(|(t, m)| **m == 1 && !cfg.eos_ids.contains(t))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(alone[i], expected, "request {i}: engine vs generate_ids");
    }
}

#[test]
fn concurrent_http_clients_with_different_preferences_get_their_one_at_a_time_answers() {
    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(32, 64));
    let addr = server.addr;
    let body = |i: usize| {
        let a = i as f64 / 31.0;
        common::chat_body(prompts()[i % prompts().len()], Some([a, 1.0 - a]), 10)
    };
    let alone: Vec<String> = (0..REQUESTS)
        .map(|i| common::answer(&common::post(addr, "/v1/chat/completions", &body(i))))
        .collect();
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..REQUESTS)
            .map(|i| {
                s.spawn(move || {
                    common::answer(&common::post(addr, "/v1/chat/completions", &body(i)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    assert_eq!(together, alone);
    server.shutdown().expect("clean shutdown");
}

/// The tokens of every job, submitted together (they share the batch as they join).
fn answers_together(
    engine: &Engine,
    ids: &[Vec<i64>],
    pref: Option<&[f64]>,
    new_tokens: usize,
) -> Vec<Vec<i64>> {
    let mut rxs: Vec<UnboundedReceiver<Event>> = ids
        .iter()
        .map(|p| {
            engine.submit(p.clone(), pref.map(<[f64]>::to_vec), greedy(new_tokens)).expect("queued")
        })
        .collect();
    rxs.iter_mut().map(|rx| tokens_of(rx, Vec::new())).collect()
}

/// When every row in flight shares λ the engine decodes with the adapter merged into the
/// weights (one merge, then reused), and the greedy answers equal the per-row path's token
/// for token; the merged model is not the base (λ still acts).
#[test]
fn a_batch_sharing_one_preference_runs_merged_and_equals_the_per_row_path() {
    let Some(merging) = common::tiny_served(true) else { return };
    let Some(per_row) = common::tiny_served(true) else { return };
    let limits =
        Limits { max_batch: 8, queue_len: 16, max_prompt_tokens: 96, max_output_tokens: 64 };
    let merging = Engine::start_with(merging, limits, 1, Some(0)).expect("engine starts");
    let per_row = Engine::start_with(per_row, limits, 1, None).expect("engine starts");
    let info = merging.info().clone();
    let ids: Vec<Vec<i64>> = prompts()
        .iter()
        .map(|p| {
            let text = info.chat_template.user_prompt(p).expect("renders");
            info.tokenizer.encode(&text).expect("encodes")
        })
        .collect();
    let pref = [0.3, 0.7];
    let merged = answers_together(&merging, &ids, Some(&pref), NEW_TOKENS);
    let exact = answers_together(&per_row, &ids, Some(&pref), NEW_TOKENS);
    assert_eq!(merged, exact, "merged and per-row greedy answers differ");
    assert!(merged.iter().all(|a| a.len() == NEW_TOKENS), "{merged:?}");
    let stats = merging.stats();
    let (steps, merged_steps) =
        (stats.steps.load(Ordering::SeqCst), stats.merged_steps.load(Ordering::SeqCst));
    assert_eq!(stats.merges.load(Ordering::SeqCst), 1, "one merge for one λ, then reused");
    assert_eq!(merged_steps, steps, "every step ran merged ({merged_steps} of {steps})");
    assert!(steps >= NEW_TOKENS - 1, "{steps} steps");
    assert_eq!(per_row.stats().merged_steps.load(Ordering::SeqCst), 0);
    // The merged model is the adapter at λ, not the base: the base answers differently.
    let base = answers_together(&merging, &ids, None, NEW_TOKENS);
    assert_ne!(base, merged, "the merged weights answer like the base model");
    merging.shutdown().expect("engine stops");
    per_row.shutdown().expect("engine stops");
}
