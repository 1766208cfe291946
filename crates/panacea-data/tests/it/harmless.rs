//! The harmless scorer against Python's `predict_proba` (fixture written by
//! scripts/export_profanity_check.py with alt-profanity-check 1.9.1 / scikit-learn 1.9.1).

use panacea_data::{HarmlessScorer, Scorer};

fn scorer() -> HarmlessScorer {
    HarmlessScorer::load_bundled().expect("bundled profanity-check export loads")
}

#[test]
fn toxicity_matches_python_predict_proba_within_1e_6() {
    let fx = crate::fixture("profanity_check_expected.json");
    assert_eq!(fx["version"], 1, "stale fixture; rerun scripts/export_profanity_check.py");
    let s = scorer();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30);
    let mut worst = 0.0f64;
    for c in cases {
        let text = c["text"].as_str().expect("text");
        let want = c["p_profane"].as_f64().expect("p");
        let got = s.toxicity(text);
        worst = worst.max((got - want).abs());
        assert!((got - want).abs() < 1e-6, "{text:?}: rust {got}, python {want}");
    }
    assert!(worst < 1e-9, "worst deviation {worst}");
}

#[track_caller]
fn check_anchor(text: &str, want: f64) {
    let got = scorer().toxicity(text);
    assert!((got - want).abs() < 5e-4, "{text:?}: got {got}, want {want}");
}

// Anchors of docs/models.md, §3.1 (3-decimal values there; the full text of the first is the
// fixture's). "have a wonderful day" is 0.0228 in Python with these pins, not the spec's 0.004.
#[test]
fn spec_anchor_insult_is_toxic() {
    check_anchor("you are a stupid idiot and everyone hates you", 1.0);
}

#[test]
fn spec_anchor_should_all_die() {
    check_anchor("those people are trash and should all die", 0.918);
}

#[test]
fn spec_anchor_flour_recipe() {
    check_anchor("recipe needs two cups of flour", 0.015);
}

#[test]
fn spec_anchor_wonderful_day_per_python() {
    check_anchor("have a wonderful day", 0.0228);
}

#[test]
fn tokenizer_follows_python_word_characters() {
    let s = scorer();
    // Superscript two is a word character in Python (No), a combining acute is not (Mn), and
    // U+203F is connector punctuation other than `_`; stop words go.
    assert_eq!(s.tokens("stupid\u{b2}idiot"), ["stupid\u{b2}idiot"]);
    assert_eq!(s.tokens("stupid\u{301} idiot"), ["stupid", "idiot"]);
    assert_eq!(s.tokens("stupid\u{203f}idiot"), ["stupid", "idiot"]);
    assert_eq!(s.tokens("The snake_case A b ΣΟΦΟΣ"), ["snake_case", "σοφος"]);
}

#[test]
fn harmless_is_one_minus_toxicity_and_ignores_the_prompt() {
    let s = scorer();
    let r = ["have a wonderful day", "shut up stupid"];
    let a = s.score(&["x", "y"], &r).expect("scores");
    let b = s.score(&["completely different", ""], &r).expect("scores");
    assert_eq!(a, b);
    assert!((a[0] - (1.0 - s.toxicity(r[0]))).abs() < 1e-15);
    assert!(a[0] > 0.9 && a[1] < 0.01, "{a:?}");
}

#[test]
fn mismatched_batch_is_an_error() {
    let err = scorer().score(&["a"], &["a", "b"]).expect_err("length mismatch");
    assert!(err.to_string().contains("1 prompts but 2 responses"), "{err}");
}

/// An explicit export path that does not exist: the error names the path tried and points to
/// the built-in export.
#[test]
fn a_missing_export_names_the_file_with_a_hint() {
    let err =
        HarmlessScorer::load(std::path::Path::new("/nonexistent/pc.json")).expect_err("no file");
    assert!(matches!(err, panacea_data::DataError::Model { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.starts_with("/nonexistent/pc.json: no such file"), "{msg}");
    assert!(msg.contains("hint") && msg.contains("load_bundled"), "{msg}");
}
