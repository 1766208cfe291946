//! The MiniLM encoder and relevant scorer against scripts/minilm_reference.py (plain PyTorch on
//! the same safetensors; fixture data/fixtures/minilm_expected.json). Needs the weights in the
//! cache: `cargo xtask test` fetches them (`cargo xtask fetch-scorers`).

use std::sync::{Mutex, MutexGuard, OnceLock};

use panacea_data::{MiniLmEncoder, RelevantScorer, Scorer};

/// One encoder for the whole binary (loading reads 91 MB); tensors are not `Sync`, hence the
/// mutex, which also keeps the tests from competing for the 2 cores.
fn scorer() -> MutexGuard<'static, RelevantScorer> {
    static S: OnceLock<Mutex<RelevantScorer>> = OnceLock::new();
    let m = S.get_or_init(|| {
        panacea_core::device::init_torch();
        let dir = MiniLmEncoder::default_dir().expect("HOME or PANACEA_CACHE is set");
        let enc = MiniLmEncoder::load(&dir, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}\n(run `cargo xtask fetch-scorers`)"));
        Mutex::new(RelevantScorer::new(enc, 4).expect("batch size"))
    });
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn cases() -> (Vec<Case>, serde_json::Value) {
    let fx = crate::fixture("minilm_expected.json");
    assert_eq!(fx["version"], 1, "stale fixture; rerun scripts/minilm_reference.py");
    let cases = fx["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_owned(),
            ids: c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            embedding: c["embedding"]
                .as_array()
                .expect("emb")
                .iter()
                .map(|v| v.as_f64().expect("f"))
                .collect(),
        })
        .collect();
    (cases, fx)
}

#[test]
fn token_ids_match_python_with_truncation_at_max_seq_length() {
    let s = scorer();
    assert_eq!(s.encoder().max_seq_length(), 256);
    let (cases, _) = cases();
    for c in &cases {
        assert_eq!(s.encoder().token_ids(&c.text).expect("ids"), c.ids, "{:?}", c.text);
    }
    // The long case is cut at 256 ([CLS] + 254 + [SEP]), not at the file's baked-in 128.
    assert_eq!(cases.last().expect("long case").ids.len(), 256);
}

#[test]
fn padded_batch_embeddings_match_unpadded_python() {
    let s = scorer();
    let (cases, _) = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    // One padded batch with rows from 10 to 256 tokens.
    let e = s.encoder().embed(&texts).expect("embeds"); // [N, D]
    assert_eq!(e.size(), [cases.len() as i64, 384]);
    let got = Vec::<Vec<f32>>::try_from(&e).expect("to vec");
    let mut worst = 0.0f64;
    for (row, c) in got.iter().zip(&cases) {
        for (a, b) in row.iter().zip(&c.embedding) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    assert!(worst < 2e-5, "max |rust − python| = {worst}");
}

#[test]
fn relevance_matches_python_cosines() {
    let s = scorer();
    let (cases, fx) = cases();
    let pairs = fx["cosines"].as_array().expect("cosines");
    let idx = |p: &serde_json::Value, k: &str| p[k].as_u64().expect("index") as usize;
    let prompts: Vec<&str> = pairs.iter().map(|p| cases[idx(p, "a")].text.as_str()).collect();
    let responses: Vec<&str> = pairs.iter().map(|p| cases[idx(p, "b")].text.as_str()).collect();
    let got = s.score(&prompts, &responses).expect("scores");
    for (g, p) in got.iter().zip(pairs) {
        let want = p["cosine"].as_f64().expect("cosine");
        assert!((g - want).abs() < 2e-5, "{p}: got {g}");
    }
    // The on-topic answer (bread → recipe, 0.506) beats the unrelated one (0.050).
    assert!(got[0] > got[1] + 0.3, "{got:?}");
}

#[test]
fn empty_and_odd_inputs_score_without_error() {
    let s = scorer();
    let got =
        s.score(&["", "\u{0}\u{ffff}", "x"], &["", "💥", &"y ".repeat(2000)]).expect("scores");
    assert!(got.iter().all(|c| c.is_finite() && (-1.0..=1.0).contains(c)), "{got:?}");
    assert!(s.score(&[], &[]).expect("empty").is_empty());
}

#[test]
fn missing_weights_give_a_fetch_hint() {
    panacea_core::device::init_torch();
    let err = MiniLmEncoder::load(std::path::Path::new("/nonexistent/minilm"), tch::Device::Cpu)
        .expect_err("no files");
    assert!(err.to_string().contains("cargo xtask fetch-scorers"), "{err}");
}
