//! PPO on a Hugging Face model folder of another family than SmolLM2: the Llama-3-style fixture
//! of panacea-lm (`tests/fixtures/models/llama3`: its own Jinja chat template in
//! tokenizer_config.json and three EOS ids in generation_config.json). Prompts go through the
//! folder's template and rollouts stop on every listed EOS id. Needs no model cache.

use std::path::PathBuf;

use panacea_core::config::load_config;
use panacea_data::{PromptSet, Split};
use panacea_rlhf::train::{build_trainer, load_policy, load_prompts, reward_sources};
use panacea_rlhf::TrainPpoConfig;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn llama3_dir() -> PathBuf {
    workspace().join("crates/panacea-lm/tests/fixtures/models/llama3")
}

/// configs/tiny/ppo.yaml on the Llama-3 fixture, prompts through the chat template.
fn llama3_ppo(set: &[String]) -> TrainPpoConfig {
    panacea_core::device::init_torch();
    let mut sets = vec![
        format!("model={}", llama3_dir().display()),
        "data.chat_template=true".to_owned(),
        "data.max_prompt_tokens=4096".to_owned(),
        "device=cpu".to_owned(),
    ];
    sets.extend(set.iter().cloned());
    load_config(&workspace().join("configs/tiny/ppo.yaml"), &sets).expect("config")
}

/// The fixture's template (tokenizer_config.json) renders one user turn as
/// `{bos}<|start_header_id|>user<|end_header_id|>\n\n{content | trim}<|eot_id|>` and the
/// generation prompt as `<|start_header_id|>assistant<|end_header_id|>\n\n`; written out by
/// hand here from the template text.
fn llama3_user_prompt(content: &str) -> String {
    format!(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n",
        content.trim()
    )
}

#[test]
fn ppo_prompts_are_rendered_with_the_models_own_chat_template() {
    let cfg = llama3_ppo(&[]);
    let (_base, _policy, _adapter, tok, template) =
        load_policy(&cfg, tch::Device::Cpu).expect("policy");
    assert!(!template.is_fallback(), "the folder has its own template");
    let (train, eval, _) = load_prompts(&cfg, &tok, &template).expect("prompts");
    let records = PromptSet::Benign.load().expect("bundled");
    assert_eq!(train.len() + eval.len(), records.len(), "no prompt is over 4096 tokens");
    let want_train: Vec<_> = records.iter().filter(|r| r.split == Split::Train).collect();
    assert_eq!(train.len(), want_train.len());
    for ((text, ids), r) in train.iter().zip(&want_train) {
        assert_eq!(text, &llama3_user_prompt(&r.prompt));
        assert_eq!(ids, &tok.encode(text).expect("encode"));
        // <|begin_of_text|> is id 0 in the fixture's tokenizer (config.json bos_token_id).
        assert_eq!(ids[0], 0);
        assert!(!text.contains("<|im_start|>"), "ChatML leaked into a Llama-3 prompt");
    }
    // Without the template the prompt is tokenised as it is.
    let plain = llama3_ppo(&["data.chat_template=false".to_owned()]);
    let (plain_train, _, _) = load_prompts(&plain, &tok, &template).expect("prompts");
    assert_eq!(plain_train[0].0, want_train[0].prompt);
}

#[test]
fn ppo_rollouts_stop_on_every_eos_id_of_generation_config() {
    let cfg = llama3_ppo(&[]);
    let (_base, policy, adapter_vs, tok, _) = load_policy(&cfg, tch::Device::Cpu).expect("policy");
    // generation_config.json lists [1, 4, 5]; config.json has the single 5.
    assert_eq!(tok.eos_ids, vec![1, 4, 5]);
    let sources = reward_sources(&cfg, &tok, &policy).expect("sources");
    let trainer = build_trainer(&cfg, &tok, policy, adapter_vs, sources).expect("trainer");
    assert_eq!(trainer.generate_config().eos_ids, vec![1, 4, 5]);
    assert_eq!(trainer.generate_config().max_new_tokens, cfg.rollout.max_new_tokens);
}

/// train-rm renders its prompts as PPO does: through the folder's own template, so a score
/// model reads the same text the policy generates after.
#[test]
fn score_model_pairs_are_rendered_with_the_models_own_chat_template() {
    let cfg: panacea_rlhf::TrainRmConfig = load_config(
        &workspace().join("configs/tiny/rm.yaml"),
        &[
            format!("model={}", llama3_dir().display()),
            format!("data.train={}", workspace().join("data/tiny/pairs_generic.jsonl").display()),
            "data.chat_template=true".to_owned(),
            "data.max_len=4096".to_owned(),
        ],
    )
    .expect("config");
    let pre = panacea_lm::Pretrained::load(&cfg.model).expect("fixture loads");
    let record = panacea_data::PairRecord {
        prompt: "  How do I boil an egg? ".into(),
        response_0: "Put it in boiling water.".into(),
        response_1: "Fry it.".into(),
        labels: vec![1, 0],
        scores: vec![None, None],
        safety: None,
        severity: None,
        chat: None,
        line: 1,
    };
    let encoded = panacea_rlhf::train_rm::encode_pairs(
        &cfg,
        &pre.tokenizer,
        &pre.chat_template,
        std::slice::from_ref(&record),
    )
    .expect("encode");
    for (ids, response) in
        [(&encoded[0].0, &record.response_0), (&encoded[0].1, &record.response_1)]
    {
        let text = format!("{}{response}", llama3_user_prompt(&record.prompt));
        let mut want = pre.tokenizer.encode(&text).expect("encode");
        // The first EOS id of generation_config.json ends each sequence.
        want.push(1);
        assert_eq!(ids, &want);
    }
}

/// A PPO prompt file may be JSON Lines, `.jsonl.gz` or parquet with a `prompt` column (the
/// fixtures of scripts/make_data_fixtures.py: seven prompts, rows 2, 6 and 7 in the eval split):
/// each gives the same rendered prompts.
#[test]
fn ppo_reads_prompt_files_in_every_storage_format() {
    let fixtures = workspace().join("crates/panacea-data/tests/fixtures");
    let mut loaded = Vec::new();
    for (name, file_format) in [
        ("prompts.jsonl", "auto"),
        ("prompts.jsonl.gz", "auto"),
        ("prompts.parquet", "auto"),
        ("prompts.parquet", "parquet"),
    ] {
        let source = format!(
            "data.prompts={{kind: file, path: {}, file_format: {file_format}}}",
            fixtures.join(name).display()
        );
        let cfg = llama3_ppo(&[source]);
        let (_base, _policy, _adapter, tok, template) =
            load_policy(&cfg, tch::Device::Cpu).expect("policy");
        let (train, eval, hashes) = load_prompts(&cfg, &tok, &template).expect(name);
        assert_eq!((train.len(), eval.len()), (4, 3), "{name}");
        assert_eq!(train[0].0, llama3_user_prompt("How do I boil an egg?"));
        assert_eq!(eval[0].0, llama3_user_prompt("How can I get back at my annoying neighbour?"));
        assert_eq!(hashes.len(), 1);
        loaded.push((train, eval));
    }
    assert!(loaded.windows(2).all(|w| w[0] == w[1]));
    // A wrong file_format names the file.
    let cfg = llama3_ppo(&[format!(
        "data.prompts={{kind: file, path: {}, file_format: parquet}}",
        fixtures.join("prompts.jsonl").display()
    )]);
    let (_base, _policy, _adapter, tok, template) =
        load_policy(&cfg, tch::Device::Cpu).expect("policy");
    let err = load_prompts(&cfg, &tok, &template).expect_err("JSON Lines read as parquet");
    assert!(err.to_string().contains("prompts.jsonl"), "{err}");
}

/// `data.skip_invalid` (`--skip-invalid`) on a PPO prompt file: without it the first bad line
/// is an error naming the file, the line and the field; with it the bad lines are skipped and
/// counted (and the job warns), and the good ones load as from the clean file.
#[test]
fn ppo_prompt_files_honour_skip_invalid() {
    use panacea_rlhf::train::load_prompts_with_report;
    let fixtures = workspace().join("crates/panacea-data/tests/fixtures");
    let clean = std::fs::read_to_string(fixtures.join("prompts.jsonl")).expect("fixture");
    let dir = std::env::temp_dir().join(format!("panacea-rlhf-prompt-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("damaged.jsonl");
    std::fs::write(&path, format!("{{\"text\": \"no prompt\"}}\n{clean}{{\"prompt\": 3}}\n"))
        .expect("write");
    let lines = 1 + clean.lines().count() + 1;
    let source = |skip: bool| {
        vec![
            format!("data.prompts={{kind: file, path: {}}}", path.display()),
            format!("data.skip_invalid={skip}"),
        ]
    };

    let cfg = llama3_ppo(&source(false));
    let (_base, _policy, _adapter, tok, template) =
        load_policy(&cfg, tch::Device::Cpu).expect("policy");
    let err = load_prompts(&cfg, &tok, &template).expect_err("strict").to_string();
    assert!(err.contains("damaged.jsonl:1: missing field `prompt`"), "{err}");

    let cfg = llama3_ppo(&source(true));
    let ((train, eval, _), read) =
        load_prompts_with_report(&cfg, &tok, &template).expect("lenient");
    assert_eq!((train.len(), eval.len()), (4, 3));
    assert_eq!(train[0].0, llama3_user_prompt("How do I boil an egg?"));
    assert_eq!((read.records, read.skipped), (7, 2));
    assert!(read.first_errors[0].contains("damaged.jsonl:1: missing field `prompt`"));
    let last = format!("damaged.jsonl:{lines}: field `prompt`: 3 is not a string");
    assert!(read.first_errors[1].contains(&last), "{:?}", read.first_errors);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

fn rm_config(set: &[String]) -> Result<panacea_rlhf::TrainRmConfig, String> {
    panacea_core::device::init_torch();
    let mut sets = vec![
        format!("model={}", llama3_dir().display()),
        "device=cpu".to_owned(),
        "train.epochs=1".to_owned(),
        "data.max_len=256".to_owned(),
    ];
    sets.extend(set.iter().cloned());
    load_config(&workspace().join("configs/tiny/rm.yaml"), &sets).map_err(|e| e.to_string())
}

/// `data.labels` in train-rm, as in train-dpo: PKU-SafeRLHF's columns under objective names of
/// the user's choosing. The fixture's (better, safer) response ids are (0, 0), (0, 1), (0, 0),
/// (0, 0) (scripts/make_data_fixtures.py), so `safe` reads +1, −1, +1, +1 and `useful` +1
/// four times; the whole job then trains one model per objective on the Llama-3 fixture.
#[test]
fn score_models_take_a_labels_mapping() {
    let pku = workspace().join("crates/panacea-data/tests/fixtures/pku.parquet");
    let cfg = rm_config(&[
        format!("data.train={}", pku.display()),
        "data.format=pku-saferlhf".to_owned(),
        "data.labels={safe: safer_response_id, useful: better_response_id}".to_owned(),
        "objectives=[{name: safe, kind: cost}, {name: useful, kind: reward}]".to_owned(),
    ])
    .expect("config");
    let names = vec!["safe".to_owned(), "useful".to_owned()];
    let records =
        panacea_rlhf::train_rm::read_pairs(&cfg, &names, &mut panacea_run::Silent).expect("pairs");
    let labels: Vec<Vec<i8>> = records.iter().map(|r| r.labels.clone()).collect();
    assert_eq!(labels, vec![vec![1, 1], vec![-1, 1], vec![1, 1], vec![1, 1]]);
    let runs = std::env::temp_dir().join(format!("panacea-rlhf-rm-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let trained = panacea_rlhf::train_score_models(
        &cfg,
        &panacea_run::RunOptions::new(&runs),
        &mut panacea_run::Silent,
    )
    .expect("train-rm");
    for name in ["safe", "useful"] {
        assert!(trained.run_dir.join(format!("score-{name}")).is_dir(), "{name}");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}

/// A mapping is checked with the config: an objective it leaves unlabelled, an unknown
/// objective and a column the schema lacks are each named under `data.labels`.
#[test]
fn score_model_labels_are_validated_with_the_config() {
    let hh = workspace().join("crates/panacea-data/tests/fixtures/hh.jsonl");
    let hh_cfg = |labels: &str| {
        rm_config(&[
            format!("data.train={}", hh.display()),
            "data.format=hh-rlhf".to_owned(),
            format!("data.labels={labels}"),
        ])
        .expect_err(labels)
    };
    let err = hh_cfg("{helpful: chosen}");
    assert!(
        err.contains("data.labels")
            && err.contains("objective `harmless` is labelled by no column"),
        "{err}"
    );
    let err = hh_cfg("{helpful: chosen, harmless: chosen, honest: chosen}");
    assert!(err.contains("data.labels") && err.contains("`honest` is not one of the objectives"));
    let err = hh_cfg("{helpful: chosen, harmless: better_response_id}");
    assert!(err.contains("HH-RLHF files have no label column \"better_response_id\""), "{err}");
    // Two objectives from one HH file: both read `chosen`.
    rm_config(&[
        format!("data.train={}", hh.display()),
        "data.format=hh-rlhf".to_owned(),
        "data.labels={helpful: chosen, harmless: chosen}".to_owned(),
    ])
    .expect("both objectives mapped");
}

/// `data.train` as a list of files, as in train-dpo: two HH-RLHF files (the same 3 fixture
/// pairs stored as JSON Lines and as parquet) become two objectives, each file labelling its
/// own (`chosen` = response 0 preferred, +1) and leaving the other unlabelled (0); records are
/// read in file order. A missing file in the list is named by its entry.
#[test]
fn score_models_read_a_list_of_pair_files() {
    let fixtures = workspace().join("crates/panacea-data/tests/fixtures");
    let list = format!(
        "data.train=[{{path: {}, labels: {{helpful: chosen}}}}, {{path: {}, file_format: parquet, \
         labels: {{harmless: chosen}}}}]",
        fixtures.join("hh.jsonl").display(),
        fixtures.join("hh.parquet").display()
    );
    let cfg = rm_config(&[list, "data.format=hh-rlhf".to_owned()]).expect("config");
    let names = vec!["helpful".to_owned(), "harmless".to_owned()];
    let records =
        panacea_rlhf::train_rm::read_pairs(&cfg, &names, &mut panacea_run::Silent).expect("pairs");
    let labels: Vec<Vec<i8>> = records.iter().map(|r| r.labels.clone()).collect();
    assert_eq!(labels, [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]);
    assert_eq!(records[0].prompt, records[3].prompt, "the same pairs in both files");
    // Each file is validated under its own entry.
    let err = rm_config(&[
        format!(
            "data.train=[{{path: {}, labels: {{helpful: chosen}}}}, {{path: /no/such.jsonl}}]",
            fixtures.join("hh.jsonl").display()
        ),
        "data.format=hh-rlhf".to_owned(),
    ])
    .expect_err("missing file");
    assert!(
        err.contains("data.train[1].path") && err.contains("/no/such.jsonl is not a file"),
        "{err}"
    );
    // An objective no file labels is named.
    let err = rm_config(&[
        format!(
            "data.train=[{{path: {}, labels: {{helpful: chosen}}}}]",
            fixtures.join("hh.jsonl").display()
        ),
        "data.format=hh-rlhf".to_owned(),
    ])
    .expect_err("harmless unlabelled");
    assert!(err.contains("objective `harmless` is labelled by no column"), "{err}");
}

/// TRL's unpaired form (prompt, completion, label) is refused by name, with how to pair it.
#[test]
fn score_models_refuse_trl_unpaired_files_by_name() {
    let dir = std::env::temp_dir().join(format!("panacea-rlhf-unpaired-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("kto.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"Hi\", \"completion\": \"Hello!\", \"label\": true}\n\
         {\"prompt\": \"Hi\", \"completion\": \"Go away.\", \"label\": false}\n",
    )
    .expect("write");
    let cfg = rm_config(&[
        format!("data.train={}", path.display()),
        "data.format=trl".to_owned(),
        "objectives=[{name: helpful, kind: reward}]".to_owned(),
    ])
    .expect("config");
    let err =
        panacea_rlhf::train_rm::read_pairs(&cfg, &["helpful".into()], &mut panacea_run::Silent)
            .expect_err("unpaired")
            .to_string();
    assert!(
        err.contains("kto.jsonl:1: field `completion`: belongs to TRL's unpaired preference form")
            && err.contains("hint: write TRL's paired form (prompt, chosen, rejected)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `train.activation_checkpointing` recomputes each decoder layer in the backward pass: a
/// score model's pair loss gives the same gradients (within 1e-6; the inits are fixed before
/// both passes, so nothing else differs) with and without it, and a whole train-rm run with it
/// trains both models.
#[test]
fn checkpointed_score_model_training_matches_the_plain_gradients() {
    use panacea_rlhf::score::{pair_loss, pair_loss_checkpointed, LmScoreModel, ScorePairBatch};
    panacea_core::device::init_torch();
    let pre = panacea_lm::Pretrained::load(&llama3_dir().display().to_string()).expect("fixture");
    let mut base_vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let base = pre.build(&mut base_vs, None, tch::Kind::Float).expect("base");
    base_vs.freeze();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model =
        LmScoreModel::new(&base, &vs.root(), &panacea_rlhf::score::score_adapter_config(4, 16.0));
    // Every variable random, so that no gradient is zero by construction.
    tch::no_grad(|| {
        for (i, (_, v)) in vs.variables().into_iter().enumerate() {
            let n = v.numel() as i64;
            let vals = tch::Tensor::arange(n, (tch::Kind::Float, tch::Device::Cpu));
            v.shallow_clone()
                .copy_(&((vals * 0.37 + i as f64).sin() * 0.05).view(v.size().as_slice()));
        }
    });
    let better = vec![vec![0, 10, 20, 30, 40, 5], vec![0, 11, 12, 5]];
    let worse = vec![vec![0, 10, 21, 5], vec![0, 13, 14, 15, 16, 17, 5]];
    let safety = vec![(true, false), (true, true)];
    let batch =
        ScorePairBatch::from_tokens(&better, &worse, Some(safety.as_slice()), 1, tch::Device::Cpu)
            .expect("batch");
    let grads = |vs: &tch::nn::VarStore| {
        let mut g: Vec<(String, tch::Tensor)> =
            vs.variables().into_iter().map(|(n, v)| (n, v.grad().copy())).collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        g
    };
    let plain = pair_loss(&model, &batch, 0.01);
    plain.loss.backward();
    let plain_grads = grads(&vs);
    for mut v in vs.trainable_variables() {
        v.zero_grad();
    }
    let (ck, checkpoints) = pair_loss_checkpointed(&model, &batch, 0.01);
    ck.loss.backward();
    for c in checkpoints {
        c.backward();
    }
    let ck_grads = grads(&vs);
    let dl = f64::try_from(&plain.loss - &ck.loss).expect("loss").abs();
    assert!(dl <= 1e-6, "loss differs by {dl}");
    assert_eq!(plain_grads.len(), ck_grads.len());
    for ((name, a), (_, b)) in plain_grads.iter().zip(&ck_grads) {
        let d = f64::try_from((a - b).abs().max()).expect("max");
        let scale = f64::try_from(a.abs().max()).expect("max");
        assert!(scale > 0.0, "{name}: no gradient");
        assert!(d <= 1e-6 * scale.max(1.0), "{name}: max |Δ| = {d:e} (max |grad| {scale:e})");
    }

    // The whole job with the key on.
    let pku = workspace().join("crates/panacea-data/tests/fixtures/pku.parquet");
    let cfg = rm_config(&[
        format!("data.train={}", pku.display()),
        "data.format=pku-saferlhf".to_owned(),
        "train.activation_checkpointing=true".to_owned(),
    ])
    .expect("config");
    let runs = std::env::temp_dir().join(format!("panacea-rlhf-rm-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runs);
    let trained = panacea_rlhf::train_score_models(
        &cfg,
        &panacea_run::RunOptions::new(&runs),
        &mut panacea_run::Silent,
    )
    .expect("train-rm with checkpointing");
    for name in ["helpful", "harmless"] {
        assert!(trained.run_dir.join(format!("score-{name}")).is_dir(), "{name}");
    }
    std::fs::remove_dir_all(&runs).expect("clean up");
}
