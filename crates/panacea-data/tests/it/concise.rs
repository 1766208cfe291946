//! The concise scorer (docs/method.md, §5.4) through the `Scorer` trait, with each length measure.

use panacea_data::{ConciseScorer, LengthMeasure, Scorer};

#[test]
fn whitespace_words_apply_the_paper_rule() {
    let s = ConciseScorer::new(4.0, 2.0, LengthMeasure::WhitespaceWords).expect("valid");
    // 1 word → r_max; 3 words → 4 + 1 − 3/2 = 3.5; 6 words → 4 + 1 − 3 = 2.
    let got = s.score(&["p"; 3], &["one", "one two three", "a b c d e f"]).expect("scores");
    assert_eq!(got, [4.0, 3.5, 2.0]);
    assert_eq!(s.range(), (f64::NEG_INFINITY, 4.0));
}

#[test]
fn chars_and_custom_measures() {
    let s = ConciseScorer::new(1.0, 4.0, LengthMeasure::Chars).expect("valid");
    // "héllo wörld" has 11 chars: 1 + 1 − 11/4 = −0.75.
    assert_eq!(s.score(&[""], &["héllo wörld"]).expect("scores"), [-0.75]);
    let s = ConciseScorer::new(0.0, 10.0, LengthMeasure::Custom(Box::new(|_| 30))).expect("valid");
    assert_eq!(s.score(&[""], &["anything"]).expect("scores"), [-2.0]);
}

#[test]
fn tokenizer_measure_ignores_baked_in_padding() {
    let dir = panacea_data::MiniLmEncoder::default_dir().expect("cache dir");
    let path = dir.join("tokenizer.json");
    let load = || {
        tokenizers::Tokenizer::from_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask fetch-scorers`", path.display()))
    };
    // MiniLM's tokenizer.json pads every encoding to 128. WordPiece gives "hello" "world" "!".
    assert_eq!(load().encode("hello world!", false).expect("encodes").len(), 128);
    assert_eq!(LengthMeasure::tokenizer(load()).length("hello world!").expect("length"), 3);
    // A variant built without the constructor still skips the padding via the attention mask.
    let raw = LengthMeasure::Tokenizer(Box::new(load()));
    assert_eq!(raw.length("hello world!").expect("length"), 3);
    // 300 words are not truncated at 128 by the constructor-built measure.
    let long = "word ".repeat(300);
    assert_eq!(LengthMeasure::tokenizer(load()).length(&long).expect("length"), 300);
}
