//! Pair building from scored responses (docs/models.md, §4.3): margins, ties, identical
//! responses, both schemas, and a round trip through the loaders.

use std::io::Cursor;

use panacea_data::pairgen::{build_pairs, PairGenConfig, PairGenStats, ScoredPrompt};
use panacea_data::{read_pairs, PairFormat, ReadOptions};

fn cfg() -> PairGenConfig {
    PairGenConfig {
        dims: vec!["harmless".into(), "relevant".into(), "concise".into()],
        margins: vec![0.05, 0.05, 0.0],
        pku_helpful: "relevant".into(),
        pku_harmless: "harmless".into(),
        safe_threshold: 0.5,
    }
}

fn prompt() -> ScoredPrompt {
    ScoredPrompt {
        prompt: "p".into(),
        responses: vec!["a".into(), "b".into(), "a".into(), "c".into()],
        scores: vec![
            vec![0.99, 0.50, 4.0], // a
            vec![0.20, 0.52, 3.0], // b
            vec![0.99, 0.50, 4.0], // a again
            vec![0.97, 0.90, 4.0], // c
        ],
    }
}

#[test]
fn margins_ties_and_identical_responses() {
    let mut stats = PairGenStats::default();
    let (generic, pku) = build_pairs(&prompt(), &cfg(), &mut stats).expect("pairs");
    // 6 candidates; (0,2) identical. Hand-worked winners (harmless, relevant, concise):
    // (0,1): 0, tie (0.02 ≤ 0.05), 0   → generic only
    // (0,3): tie, 1, tie                → generic only
    // (1,2): 1, tie, 1                  → generic only
    // (1,3): 1, 1, 1                    → generic + pku
    // (2,3): tie, 1, tie                → generic only
    assert_eq!(stats.candidates, 6);
    assert_eq!(stats.identical, 1);
    assert_eq!(stats.all_ties, 0);
    assert_eq!((stats.generic, stats.pku), (5, 1));
    assert_eq!(stats.labelled, [3, 3, 3]);
    let first = &generic[0];
    assert_eq!((first.response_0.as_str(), first.response_1.as_str()), ("a", "b"));
    assert_eq!(first.prefs["harmless"], Some(0));
    assert_eq!(first.prefs["relevant"], None);
    assert_eq!(first.scores.as_ref().expect("scores")["concise"], [4.0, 3.0]);
    let p = &pku[0];
    assert_eq!((p.response_0.as_str(), p.response_1.as_str()), ("b", "c"));
    assert_eq!((p.better_response_id, p.safer_response_id), (1, 1));
    assert_eq!((p.is_response_0_safe, p.is_response_1_safe), (false, true));
}

#[test]
fn written_pairs_read_back_with_the_same_labels() {
    let mut stats = PairGenStats::default();
    let (generic, pku) = build_pairs(&prompt(), &cfg(), &mut stats).expect("pairs");
    let text: String =
        generic.iter().map(|g| serde_json::to_string(g).expect("json") + "\n").collect();
    let o = ReadOptions {
        format: PairFormat::Generic,
        dims: vec!["harmless".into(), "relevant".into()],
        skip_invalid: false,
    };
    let recs: Vec<_> = read_pairs(Cursor::new(text.into_bytes()), "gen", o)
        .expect("options")
        .collect::<Result<_, _>>()
        .expect("valid");
    let labels: Vec<Vec<i8>> = recs.iter().map(|r| r.labels.clone()).collect();
    assert_eq!(labels, [vec![1, 0], vec![0, -1], vec![-1, 0], vec![-1, -1], vec![0, -1]]);
    let text: String = pku.iter().map(|g| serde_json::to_string(g).expect("json") + "\n").collect();
    let o = ReadOptions {
        format: PairFormat::PkuSaferlhf,
        dims: vec!["helpful".into(), "harmless".into()],
        skip_invalid: false,
    };
    let recs: Vec<_> = read_pairs(Cursor::new(text.into_bytes()), "pku", o)
        .expect("options")
        .collect::<Result<_, _>>()
        .expect("valid");
    assert_eq!(recs[0].labels, [-1, -1]);
}

#[test]
fn bad_settings_are_errors() {
    let mut stats = PairGenStats::default();
    let mut c = cfg();
    c.margins.pop();
    assert!(build_pairs(&prompt(), &c, &mut stats).is_err());
    let mut c = cfg();
    c.pku_helpful = "helpful".into();
    let err = build_pairs(&prompt(), &c, &mut stats).expect_err("unknown dim");
    assert!(err.to_string().contains("pku_helpful"), "{err}");
    let mut p = prompt();
    p.scores.pop();
    assert!(build_pairs(&p, &cfg(), &mut stats).is_err());
}
