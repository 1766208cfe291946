//! The run's pair files: the bundled configs read exactly the pairs they read before pair files
//! could be lists, in other formats or with label mappings; a list of files with mappings
//! (two HH-style files as two objectives, gzip and parquet); strict, validated settings.

use std::path::PathBuf;

use panacea_core::config::{load_config, parse_config, to_yaml};
use panacea_data::{PairFormat, PairRecord, ReadOptions};
use panacea_dpo::{read_pair_files, DpoRunConfig, PairFiles};
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    panacea_data::workspace_path("")
}

/// SHA-256 of the records' text and labels, one compact JSON array `[prompt, response_0,
/// response_1, labels]` per line.
fn digest(records: &[PairRecord]) -> String {
    let mut h = Sha256::new();
    for r in records {
        let line = serde_json::json!([r.prompt, r.response_0, r.response_1, r.labels]);
        h.update(format!("{line}\n").as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// The bundled DPO configs read the same pairs as the plain JSONL reader (the path every run
/// took before), with the count and digest an independent reading of the files gives. The
/// reference values come from this Python, run on the committed files:
///
/// ```text
/// for each non-blank line r with r.response_0 != r.response_1:
///   labels = [1 if r.better_response_id == 0 else -1, 1 if r.safer_response_id == 0 else -1]
///   sha256.update(json.dumps([r.prompt, r.response_0, r.response_1, labels],
///                            ensure_ascii=False, separators=(',', ':')) + "\n")
/// ```
#[test]
fn bundled_configs_read_the_same_pairs_as_before() {
    let cases = [
        (
            "configs/dpo-default.yaml",
            "data/pairs/smollm2-pku.jsonl",
            418,
            "2aea56e531dfbaa4fba33355ba4215867c6c3708edd9b7f868fe15f143f2a7fa",
        ),
        (
            "configs/tiny/dpo.yaml",
            "data/tiny/pairs_pku.jsonl",
            6,
            "c21efc6fa7aa5816ad116980c824521ed1cf741a5a5a8736176a025f570bec62",
        ),
    ];
    for (config, file, count, sha) in cases {
        let cfg: DpoRunConfig = load_config(&root().join(config), &[]).expect(config);
        assert_eq!(cfg.data.train, PairFiles::One(file.into()), "{config}");
        let (records, reports) = read_pair_files(&cfg, &cfg.data.train).expect(config);
        let opts = ReadOptions {
            format: PairFormat::PkuSaferlhf,
            dims: cfg.objectives.clone(),
            skip_invalid: false,
        };
        let (plain, plain_report) =
            panacea_data::load_pairs(&root().join(file), opts).expect("plain reader");
        assert_eq!(records, plain, "{config}");
        assert_eq!(reports[0].1, plain_report, "{config}");
        assert_eq!(records.len(), count, "{config}");
        assert_eq!(digest(&records), sha, "{config}");
        // The new keys stay out of the resolved config when unused, so run folders record the
        // same config.yaml as before.
        let yaml = to_yaml(&cfg).expect("yaml");
        assert!(!yaml.contains("file_format") && !yaml.contains("labels"), "{yaml}");
    }
}

const BASE: &str = r#"
model: tiny-random
objectives: [helpful, harmless]
adapter: { rank: 2, alpha: 4.0, n_objectives: 2 }
train: { steps: 1, batch_size: 1 }
"#;

fn parse(data: &str) -> Result<DpoRunConfig, String> {
    parse_config(&format!("{BASE}data:\n{data}"), "test.yaml", &[]).map_err(|e| e.to_string())
}

fn fixture(name: &str) -> String {
    root().join("crates/panacea-data/tests/fixtures").join(name).display().to_string()
}

#[test]
fn two_single_preference_files_train_two_objectives() {
    let cfg = parse(&format!(
        "  format: hh-rlhf\n  train:\n    - {{ path: {}, labels: {{ helpful: chosen }} }}\n    - \
         {{ path: {}, format: trl, labels: {{ harmless: chosen }} }}\n",
        fixture("hh.jsonl.gz"),
        fixture("trl_standard.parquet")
    ))
    .expect("valid config");
    let (records, reports) = read_pair_files(&cfg, &cfg.data.train).expect("pairs");
    // hh.jsonl.gz: 3 helpful pairs; trl_standard.parquet: 4 harmless ones
    // (scripts/make_data_fixtures.py).
    let labels: Vec<_> = records.iter().map(|r| r.labels.clone()).collect();
    assert_eq!(labels, [[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0, 1]].map(Vec::from));
    assert_eq!(reports.iter().map(|(_, r)| r.records).collect::<Vec<_>>(), [3, 4]);
    // One PKU parquet file with the section's mapping: better → helpful, safer → harmless.
    let cfg = parse(&format!(
        "  format: pku-saferlhf\n  train: {}\n  labels: {{ helpful: better_response_id, \
         harmless: safer_response_id }}\n",
        fixture("pku.parquet")
    ))
    .expect("valid config");
    let (mapped, _) = read_pair_files(&cfg, &cfg.data.train).expect("pairs");
    let (plain, _) = panacea_data::load_pairs(
        &PathBuf::from(fixture("pku.jsonl")),
        ReadOptions {
            format: PairFormat::PkuSaferlhf,
            dims: cfg.objectives.clone(),
            skip_invalid: false,
        },
    )
    .expect("jsonl");
    assert_eq!(mapped, plain);
}

#[test]
fn pair_file_settings_are_strict_and_validated_in_one_pass() {
    let err = parse("  format: hh-rlhf\n  train: a.jsonl\n").expect_err("two objectives");
    assert!(err.contains("data.labels") && err.contains("helpful: chosen"), "{err}");
    let err = parse(
        "  format: hh-rlhf\n  train:\n    - { path: a.jsonl, labels: { helpful: chosen } }\n",
    )
    .expect_err("harmless unlabelled");
    assert!(err.contains("no training file labels objective `harmless`"), "{err}");
    let err = parse(
        "  format: pku-saferlhf\n  train: a.parquet\n  labels: { helpful: chosen, honest: \
         safer_response_id }\n",
    )
    .expect_err("bad mapping");
    assert!(err.contains("`honest` is not one of the objectives"), "{err}");
    let err = parse("  format: trl\n  train:\n    - { path: a.jsonl, lables: {} }\n")
        .expect_err("unknown key");
    assert!(err.contains("lables"), "{err}");
    let err = parse("  format: trl\n  train: []\n").expect_err("no files");
    assert!(err.contains("give at least one pair file"), "{err}");
    let err = parse("  format: trl\n  train: a.jsonl\n  file_format: csv\n").expect_err("csv");
    assert!(err.contains("file_format") && err.contains("parquet"), "{err}");
    let ok = parse("  format: generic\n  train: a.bin\n  file_format: jsonl-gz\n").expect("ok");
    assert_eq!(ok.data.file_format, panacea_data::FileFormat::JsonlGz);
}

/// A conversation (TRL's conversational form with earlier turns) is rendered whole through
/// the chat template; a one-message prompt is the usual single user turn. Checked on the
/// tiny-random base's tokenizer (the SmolLM2 tokenizer, skipped when it is not cached).
#[test]
fn conversations_are_rendered_whole_through_the_chat_template() {
    use panacea_lm::chat::{Message, Role};
    let cfg = parse(&format!(
        "  format: trl\n  train: {}\n  labels: {{ helpful: chosen, harmless: chosen }}\n",
        fixture("trl_implicit.jsonl.gz")
    ))
    .expect("valid config");
    let Ok(base) = panacea_dpo::load_base(&cfg, tch::Device::Cpu) else {
        eprintln!("skipped: the tiny-random base's tokenizer is not cached");
        return;
    };
    let (records, _) = read_pair_files(&cfg, &cfg.data.train).expect("pairs");
    // The tiny-random base has the SmolLM2 tokenizer without a folder template: ChatML.
    let template = base.chat_template.clone();
    assert!(template.is_fallback());
    let (pairs, report) =
        panacea_dpo::data::encode_pairs(&records, 2, &base.tokenizer, &template, 512)
            .expect("encoded");
    assert_eq!(report.kept, 3);
    // Dialogue 1 of scripts/make_data_fixtures.py: user, assistant, user, then the replies.
    let conversation = [
        Message::new(Role::User, "Can you help me write a thank-you note?"),
        Message::new(Role::Assistant, "Of course! Who is it for?"),
        Message::new(Role::User, "My aunt Sam, for a scarf."),
    ];
    let rendered = template.render(&conversation, true).expect("render");
    let want = base.tokenizer.encode(&rendered).expect("tokens");
    assert_eq!(pairs[1].prompt_len, want.len());
    assert_eq!(pairs[1].seqs[0][..want.len()], want[..]);
    let single_text = template.user_prompt(&records[0].prompt).expect("render");
    let single = base.tokenizer.encode(&single_text).expect("ids");
    assert_eq!(pairs[0].seqs[0][..single.len()], single[..]);
    assert_eq!(pairs[0].prompt_len, single.len());
}

/// A model folder with its own template (panacea-lm's Llama-3-style fixture): DPO prompts go
/// through it, not through ChatML. The expected text is the fixture template's output written
/// out by hand: `{bos}<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>` and the
/// generation prompt `<|start_header_id|>assistant<|end_header_id|>\n\n`.
#[test]
fn prompts_are_rendered_with_the_models_own_chat_template() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../panacea-lm/tests/fixtures/models/llama3");
    let pre = panacea_lm::Pretrained::load(&dir.display().to_string()).expect("fixture");
    assert!(!pre.chat_template.is_fallback());
    let cfg = parse(&format!("  format: pku-saferlhf\n  train: {}\n", fixture("pku.jsonl")))
        .expect("valid config");
    let (records, _) = read_pair_files(&cfg, &cfg.data.train).expect("pairs");
    let (pairs, report) =
        panacea_dpo::data::encode_pairs(&records, 2, &pre.tokenizer, &pre.chat_template, 4096)
            .expect("encoded");
    assert!(report.kept > 0);
    let r = &records[pairs[0].index];
    let text = format!(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n",
        r.prompt.trim()
    );
    let want = pre.tokenizer.encode(&text).expect("ids");
    assert_eq!(pairs[0].prompt_len, want.len());
    assert_eq!(pairs[0].seqs[0][..want.len()], want[..]);
}
