//! Learned score models as objectives.

use panacea_core::ObjectiveKind;
use panacea_data::ScorerSpec;
use panacea_front::FrontObjective;
use panacea_lm::{ChatTemplate, JinjaChatTemplate, Llama, LlamaConfig, PromptTemplate, Tokenizer};
use panacea_run::{RunOptions, Silent};
use tch::nn;

use crate::support::{temp_dir, workspace};

/// A learned reward and a learned cost model as eval objectives: each scores prompt +
/// response at the last token, the prompt rendered with the chat template it is given (here
/// Llama-3's, not ChatML), the cost negated; a kind mismatch is refused.
#[test]
fn learned_score_models_are_objectives_with_costs_negated() {
    panacea_core::device::init_torch();
    let Ok(dir) = panacea_lm::resolve_model("smollm2-135m") else {
        eprintln!("SKIPPED: smollm2-135m tokenizer not cached (`cargo xtask test` fetches it)");
        return;
    };
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2).expect("tokenizer");
    let root = workspace();
    let runs = temp_dir("rm");
    let cfg: panacea_rlhf::TrainRmConfig = panacea_core::config::load_config(
        &root.join("configs/tiny/rm.yaml"),
        &[
            "train.epochs=1".into(),
            format!("data.train={}", root.join("data/tiny/pairs_generic.jsonl").display()),
        ],
    )
    .expect("config");
    let rm = panacea_rlhf::train_score_models(&cfg, &RunOptions::new(&runs), &mut Silent)
        .expect("train-rm")
        .run_dir;
    // The score models' base: configs/tiny/rm.yaml's tiny-random body with init seed 1.
    let base_vs = nn::VarStore::new(tch::Device::Cpu);
    let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
    panacea_lm::init_random(&base_vs, 1);
    let llama3 = std::fs::read_to_string(
        root.join("crates/panacea-lm/tests/fixtures/chat_templates/llama3.jinja"),
    )
    .expect("template fixture");
    let template = PromptTemplate::Model(JinjaChatTemplate::new(
        llama3,
        "llama3.jinja",
        "<|begin_of_text|>",
        "<|eot_id|>",
    ));
    let scorer = |name: &str, cost: bool| {
        let kind = if cost { ObjectiveKind::Cost } else { ObjectiveKind::Reward };
        let source = ScorerSpec::ScoreModel { path: rm.join(format!("score-{name}")) };
        FrontObjective { name: name.into(), kind, source }.build(
            &tokenizer,
            &template,
            &model,
            tch::Device::Cpu,
        )
    };
    let (prompts, responses) = (["Hi there", "Tell me a joke"], ["Hello!", "No."]);
    let helpful = scorer("helpful", false).expect("reward model");
    let harmless = scorer("harmless", true).expect("cost model");
    assert!(scorer("harmless", false).is_err(), "a cost model read as a reward must fail");
    assert_eq!(helpful.name(), "helpful");
    let h = helpful.score(&prompts, &responses).expect("helpful scores");
    let c = harmless.score(&prompts, &responses).expect("harmless scores");
    // The same texts through the cost model directly: the scorer returns their negation.
    let cm =
        panacea_rlhf::LearnedScoreModel::load(&rm.join("score-harmless"), &model).expect("load");
    let rows: Vec<Vec<i64>> = prompts
        .iter()
        .zip(&responses)
        .map(|(p, r)| {
            let rendered = template.user_prompt(p).expect("render");
            assert!(rendered.starts_with("<|begin_of_text|><|start_header_id|>user"));
            assert_ne!(rendered, ChatTemplate::default().user_prompt(p));
            let mut ids = tokenizer.encode(&format!("{rendered}{r}")).expect("encode");
            ids.push(tokenizer.eos_id);
            ids
        })
        .collect();
    let (ids, mask) = panacea_rlhf::score::right_pad(&rows, tokenizer.pad_id, tch::Device::Cpu);
    let direct: Vec<f64> = Vec::try_from(
        tch::no_grad(|| panacea_rlhf::score::ScoreModel::end_scores(&cm, &ids, &mask))
            .to_kind(tch::Kind::Double),
    )
    .expect("direct");
    for (got, want) in c.iter().zip(&direct) {
        assert!((got + want).abs() < 1e-6, "cost {got} vs −{want}");
    }
    assert!(h.iter().all(|x| x.is_finite()) && h.len() == 2);
    let _ = std::fs::remove_dir_all(&runs);
}
