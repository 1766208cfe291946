//! The bundled prompt sets: they load strictly, their splits follow the hash rule, and their
//! sizes match scripts/extract_prompts.py's output.

use std::io::Cursor;

use panacea_data::{read_prompts, split_of, PromptSet, Split, DEFAULT_MAX_LINE_BYTES};
use proptest::prelude::*;

/// A valid prompt line for `prompt`, with its id and the split the hash rule gives it.
fn line(id: &str, prompt: &str) -> String {
    let split = if split_of(prompt) == Split::Eval { "eval" } else { "train" };
    serde_json::json!({"id": id, "prompt": prompt, "source": "s", "category": "c", "split": split})
        .to_string()
}

#[test]
fn bundled_sets_load_with_expected_sizes_and_sources() {
    let harmful = PromptSet::Harmful.load().expect("harmful prompts load");
    let benign = PromptSet::Benign.load().expect("benign prompts load");
    // Counts printed by scripts/extract_prompts.py (Do-Not-Answer has one duplicate prompt).
    assert_eq!(harmful.len(), 1138);
    assert_eq!(harmful.iter().filter(|p| p.source == "donotanswer").count(), 938);
    assert_eq!(harmful.iter().filter(|p| p.source == "harmbench").count(), 200);
    assert_eq!(benign.len(), 560);
    assert_eq!(benign.iter().filter(|p| p.source == "helm").count(), 320);
    let eval =
        |v: &[panacea_data::PromptRecord]| v.iter().filter(|p| p.split == Split::Eval).count();
    assert_eq!((eval(&harmful), eval(&benign)), (222, 106));
}

#[test]
fn split_rule_is_stable() {
    // scripts/extract_prompts.py's fnv1a64 (Python) mod 5: "" → 2, "a" → 1, "f" → 0,
    // "Write a haiku about rainbows." → 0.
    assert_eq!(split_of(""), Split::Train);
    assert_eq!(split_of("a"), Split::Train);
    assert_eq!(split_of("f"), Split::Eval);
    assert_eq!(split_of("Write a haiku about rainbows."), Split::Eval);
    for p in PromptSet::Benign.load().expect("loads") {
        assert_eq!(p.split, split_of(&p.prompt));
    }
}

#[test]
fn a_tampered_split_is_rejected_with_line_and_field() {
    let dir = std::env::temp_dir().join(format!("panacea-data-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("p.jsonl");
    let prompt = "Write a haiku about rainbows.";
    let wrong = match split_of(prompt) {
        Split::Train => "eval",
        Split::Eval => "train",
    };
    let good = r#"{"id":"a-1","prompt":"Hi there","source":"a","category":"c","split":"SPLIT"}"#
        .replace("SPLIT", if split_of("Hi there") == Split::Eval { "eval" } else { "train" });
    let bad = format!(
        r#"{{"id":"a-2","prompt":"{prompt}","source":"a","category":"c","split":"{wrong}"}}"#
    );
    std::fs::write(&path, format!("{good}\n{bad}\n")).expect("write");
    let err = panacea_data::load_prompts(&path).expect_err("split mismatch");
    let msg = err.to_string();
    assert!(msg.contains("p.jsonl:2:") && msg.contains("field `split`"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_over_long_prompt_line_is_refused_with_line_and_cap() {
    let long = "x".repeat(300);
    let text = format!("{}\n{}\n", line("a-1", "Hi"), line("a-2", &long));
    let err = read_prompts(Cursor::new(text.clone()), "p.jsonl", 200).expect_err("over the cap");
    let msg = err.to_string();
    assert!(msg.starts_with("p.jsonl:2: the line is longer than 200 bytes"), "{msg}");
    assert!(msg.contains("hint"), "{msg}");
    // Under the default cap (1 MiB) the same file loads.
    let prompts = read_prompts(Cursor::new(text), "p.jsonl", DEFAULT_MAX_LINE_BYTES).expect("ok");
    assert_eq!(prompts.len(), 2);
}

#[test]
fn a_json_array_prompt_file_is_named_as_such() {
    let text = format!("[{}, {}]\n", line("a-1", "Hi"), line("a-2", "Ho"));
    let msg = read_prompts(Cursor::new(text), "p.json", DEFAULT_MAX_LINE_BYTES)
        .expect_err("an array")
        .to_string();
    assert!(msg.starts_with("p.json:1: is a JSON array") && msg.contains("jq -c '.[]'"), "{msg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Hostile bytes, under any cap, give records or errors, never a panic.
    #[test]
    fn prompt_reader_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        cap in prop_oneof![Just(DEFAULT_MAX_LINE_BYTES), 0usize..64],
    ) {
        let _ = read_prompts(Cursor::new(bytes), "fuzz", cap);
    }

    /// Lines glued from fragments of real records never panic either.
    #[test]
    fn prompt_reader_never_panics_on_jsonish_lines(
        pieces in prop::collection::vec(prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"id\"", "\"prompt\"", "\"source\"", "\"category\"",
            "\"split\"", "\"train\"", "\"eval\"", "\"x\"", "1", "null", "\n", " ", "\"\\ud800\"",
        ]), 0..40),
    ) {
        let _ = read_prompts(Cursor::new(pieces.concat()), "fuzz", DEFAULT_MAX_LINE_BYTES);
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A prompt file read from JSON Lines, gzip JSON Lines and parquet gives the same prompts,
/// ids and splits (scripts/make_data_fixtures.py, PROMPT_ROWS): ids as given (a number as its
/// text) or `#row`, the split as given on row 2 and by the hash rule elsewhere.
#[test]
fn prompt_files_read_the_same_in_every_storage_format() {
    use panacea_data::{load_prompt_file, FileFormat};
    let want_ids = ["p0", "1", "#3", "p3", "4", "#6", "p6"];
    // FNV-1a 64 mod 5 of the prompts without a split column: 4, 4, 2, 1, 0, 0 (computed with
    // the same hash in Python); 0 is eval. Row 2 says eval itself.
    let want_eval = [false, true, false, false, false, true, true];
    let mut seen = Vec::new();
    for name in ["prompts.jsonl", "prompts.jsonl.gz", "prompts.parquet"] {
        let recs = load_prompt_file(&fixture(name), FileFormat::Auto).expect(name);
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, want_ids, "{name}");
        let eval: Vec<bool> = recs.iter().map(|r| r.split == Split::Eval).collect();
        assert_eq!(eval, want_eval, "{name}");
        assert_eq!(recs[0].prompt, "How do I boil an egg?");
        assert_eq!(recs[2].prompt, "Write a haiku about rain, with an accent: café.");
        seen.push(recs.iter().map(|r| (r.prompt.clone(), r.split)).collect::<Vec<_>>());
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // The bundled set's own file reads the same as with the strict loader.
    let bundled = PromptSet::Benign.bundled_path();
    let strict = panacea_data::load_prompts(&bundled).expect("strict");
    let lenient = load_prompt_file(&bundled, FileFormat::Jsonl).expect("lenient");
    assert_eq!(strict.len(), lenient.len());
    assert!(strict
        .iter()
        .zip(&lenient)
        .all(|(a, b)| (&a.id, &a.prompt, a.split) == (&b.id, &b.prompt, b.split)));
}

/// Bad rows name the file, the line and the field, with a hint for a conversational prompt.
#[test]
fn prompt_file_errors_name_line_and_field() {
    use panacea_data::{load_prompt_file, FileFormat};
    let dir = std::env::temp_dir().join(format!("panacea-data-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        ("{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n", "2: missing field `prompt`"),
        ("{\"prompt\": \"a\"}\n{\"prompt\": \"  \"}\n", "2: field `prompt`: is empty"),
        (
            "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
            "1: field `prompt`: is a list of messages",
        ),
        ("{\"prompt\": \"a\", \"id\": 7}\n{\"prompt\": \"b\", \"id\": \"7\"}\n", "2: field `id`"),
        ("{\"prompt\": \"a\", \"split\": \"test\"}\n", "1: field `split`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.jsonl"));
        std::fs::write(&path, text).expect("write");
        let err = load_prompt_file(&path, FileFormat::Auto).expect_err(want).to_string();
        assert!(err.contains(&format!("case{i}.jsonl:{want}")), "{err}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// `skip_invalid` on prompt files (as on pair files): every malformed line is skipped and
/// counted, each message names the file, line and field, and the good lines are kept in
/// order; without it the first bad line is the error.
#[test]
fn prompt_file_skip_invalid_skips_and_counts_bad_lines() {
    use panacea_data::{read_prompt_file, FileFormat};
    let dir = std::env::temp_dir().join(format!("panacea-data-prompt-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("mixed.jsonl");
    let text = [
        "{\"prompt\": \"first\", \"id\": 1}",
        "{\"text\": \"no prompt\"}",
        "",
        "{\"prompt\": \"  \"}",
        "not json",
        "{\"prompt\": \"second\", \"id\": \"2\"}",
        "{\"prompt\": \"again\", \"id\": 1}",
        "{\"prompt\": \"third\"}",
    ]
    .join("\n");
    std::fs::write(&path, text).expect("write");

    let err = read_prompt_file(&path, FileFormat::Auto, false).expect_err("strict").to_string();
    assert!(err.contains("mixed.jsonl:2: missing field `prompt`"), "{err}");

    let (records, report) = read_prompt_file(&path, FileFormat::Auto, true).expect("lenient");
    let kept: Vec<(&str, &str)> =
        records.iter().map(|r| (r.id.as_str(), r.prompt.as_str())).collect();
    assert_eq!(kept, [("1", "first"), ("2", "second"), ("#8", "third")]);
    assert_eq!((report.records, report.skipped, report.blank_lines), (3, 4, 1));
    let wants = [
        "mixed.jsonl:2: missing field `prompt`",
        "mixed.jsonl:4: field `prompt`: is empty",
        "mixed.jsonl:5",
        "mixed.jsonl:7: field `id`: \"1\" appears twice",
    ];
    assert_eq!(report.first_errors.len(), wants.len(), "{:?}", report.first_errors);
    for (got, want) in report.first_errors.iter().zip(wants) {
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}
