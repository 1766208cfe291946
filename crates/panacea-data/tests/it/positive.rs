//! The positive scorer (VADER compound from the `vader_sentiment` crate). Values are this
//! crate's, pinned (docs/models.md, §3.2: the Rust port differs from Python's 3.3.2 on some
//! sentences, e.g. "not bad at all :)" is 0.764 here and 0.705 in Python).

use panacea_data::{PositiveScorer, Scorer};

#[track_caller]
fn check(text: &str, want: f64) {
    let got = PositiveScorer::new().compound(text).expect("scores");
    assert!((got - want).abs() < 1e-4, "{text:?}: got {got}, want {want}");
}

#[test]
fn pinned_compounds() {
    for (text, want) in PINNED {
        check(text, *want);
    }
}

#[test]
fn neutral_text_scores_zero_and_range_holds() {
    let s = PositiveScorer::new();
    let got = s.score(&["", ""], &["The train leaves at nine.", ""]).expect("scores");
    assert_eq!(got, [0.0, 0.0]);
    assert_eq!(s.range(), (-1.0, 1.0));
}

#[test]
fn positive_beats_negative() {
    let s = PositiveScorer::new();
    let got = s
        .score(&["q", "q"], &["I love this, it is great!", "This is awful and I hate it."])
        .expect("scores");
    assert!(got[0] > 0.5 && got[1] < -0.5, "{got:?}");
}

/// Rust `vader_sentiment` 0.1.1 values, recorded from this crate (see the module docs); the
/// first agrees with docs/models.md, §3.2's 0.764.
const PINNED: &[(&str, f64)] = &[
    ("not bad at all :)", 0.763792),
    ("I love this movie, it is wonderful!", 0.847815),
    ("This is the worst day ever.", -0.624893),
    ("The weather is okay, I guess.", 0.226348),
    ("VADER is VERY SMART, handsome, and FUNNY!!!", 0.940589),
    ("I don't hate it.", 0.458469),
    ("Today SUX!", -0.546137),
    ("I can't help with that request.", -0.308926),
    ("\u{1f600} great", 0.764969),
];

#[test]
fn negative_scorer_is_minus_the_compound_per_response() {
    let texts = ["What a wonderful, happy day!", "This is terrible and sad.", "The door is blue."];
    let pos = PositiveScorer::new().score(&["", "", ""], &texts).expect("positive");
    let neg = panacea_data::NegativeScorer::new().score(&["", "", ""], &texts).expect("negative");
    assert!(pos[0] > 0.5 && pos[1] < -0.5 && pos[2] == 0.0, "{pos:?}");
    for (p, n) in pos.iter().zip(&neg) {
        assert_eq!(*n, -p);
    }
    assert!(panacea_data::NegativeScorer::new().score(&[""], &["a", "b"]).is_err());
}
