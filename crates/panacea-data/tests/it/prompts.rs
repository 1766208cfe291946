//! The bundled prompt sets: they load strictly, their splits follow the hash rule, and their
//! sizes match scripts/extract_prompts.py's output.

use panacea_data::{split_of, PromptSet, Split};

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
