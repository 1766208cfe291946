//! SmolLM2-135M-Instruct with its real weights (fetched by `cargo xtask fetch-model`): the
//! likelihood regression test that catches a wrong Q/K un-permute, and a greedy chat answer.
//! One model load for all checks keeps this around a few seconds.

use panacea_lm::generate::token_nlls;
use panacea_lm::{generate, load_model, Adapter, CausalLm, ChatTemplate, GenerateConfig};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::common::smollm_dir;
use crate::tokenizer::{PASSAGE, PASSAGE_IDS};

#[test]
fn smollm2_matches_the_transformers_reference_and_answers_paris() {
    let Some(dir) = smollm_dir() else { return };
    crate::common::setup();
    let m = load_model(dir.to_str().expect("utf-8 path"), Device::Cpu, Kind::Float).expect("load");
    assert_eq!(m.model.config.num_hidden_layers, 30);

    // Reference (docs/models.md, §1.6, HF transformers 5.24 fp32 on the same dequantised
    // weights): mean NLL 1.31682 over the 20 predicted tokens. The wrong Q/K layout gives 2.41.
    let ids = m.tokenizer.encode(PASSAGE).expect("encode");
    assert_eq!(ids, PASSAGE_IDS);
    let nll = token_nlls(&m.model, &ids, Adapter::Off, 1024).expect("nll");
    assert_eq!(nll.len(), 20);
    let mean = nll.iter().sum::<f64>() / 20.0;
    assert!(mean < 1.5 && (mean - 1.31682).abs() < 0.01, "mean NLL {mean}, reference 1.31682");

    // Top-5 next tokens after the passage, same reference.
    let x = Tensor::from_slice(&ids).view([1, 21]);
    let logits = tch::no_grad(|| m.model.logits(&x, &x.ones_like(), Adapter::Off)).get(0).get(20);
    let (vals, idx) = logits.topk(5, -1, true, true);
    assert_eq!(Vec::<i64>::try_from(&idx).ok(), Some(vec![378, 198, 1216, 533, 2]));
    let want = [15.061, 14.250, 12.799, 12.637, 12.195];
    let got = Vec::<f64>::try_from(vals.to_kind(Kind::Double)).expect("values");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 0.01, "top-5 logits {got:?} vs {want:?}");
    }

    // Greedy ChatML answers, batched with a longer prompt so left padding is exercised.
    let t = ChatTemplate::default();
    let prompts = vec![
        t.user_prompt("What is the capital of France?"),
        t.user_prompt(
            "Name three primary colours and explain briefly why they are called primary.",
        ),
    ];
    let cfg = GenerateConfig::greedy(&m.tokenizer, 12);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let g = generate(&m.model, &m.tokenizer, &prompts, Adapter::Off, &cfg, &mut rng).expect("gen");
    assert!(g.texts[0].contains("Paris"), "answer: {:?}", g.texts[0]);
}
