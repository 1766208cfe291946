//! The pair loaders: the three schemas, label mapping (docs/method.md, §7.1), strict errors with file,
//! line and field, `skip_invalid` accounting, the committed fixtures, and a property test that
//! hostile bytes never panic.

use std::io::Cursor;

use std::io::{BufRead, Read};

use panacea_data::{
    read_pairs, DataError, PairFormat, PairRecord, ReadOptions, ReadReport, UnknownLabelKey,
    DEFAULT_MAX_LINE_BYTES,
};
use proptest::prelude::*;

fn opts(format: PairFormat, dims: &[&str], skip_invalid: bool) -> ReadOptions {
    ReadOptions { format, dims: dims.iter().map(|d| d.to_string()).collect(), skip_invalid }
}

fn read(text: &str, o: ReadOptions) -> (Vec<Result<PairRecord, DataError>>, ReadReport) {
    let mut r = read_pairs(Cursor::new(text.as_bytes().to_vec()), "mem.jsonl", o).expect("options");
    let items: Vec<_> = r.by_ref().collect();
    (items, r.report().clone())
}

#[track_caller]
fn first_error(text: &str, o: ReadOptions) -> String {
    let (items, _) = read(text, o);
    items.into_iter().find_map(Result::err).expect("an error").to_string()
}

const GENERIC: &str = r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{"harmless":0,"concise":1,"positive":null},"scores":{"harmless":[0.9,0.2],"concise":[3.0,4.0]}}"#;

#[test]
fn generic_maps_prefs_to_labels_in_dim_order() {
    let (items, report) = read(
        GENERIC,
        opts(PairFormat::Generic, &["concise", "harmless", "positive", "relevant"], false),
    );
    let r = items.into_iter().next().expect("one").expect("valid");
    assert_eq!(r.labels, [-1, 1, 0, 0]);
    assert_eq!(r.scores, [Some([3.0, 4.0]), Some([0.9, 0.2]), None, None]);
    assert_eq!(
        (r.prompt.as_str(), r.response_0.as_str(), r.response_1.as_str(), r.line),
        ("p", "a", "b", 1)
    );
    assert_eq!(report.labelled, [1, 1, 0, 0]);
}

#[test]
fn pku_maps_better_and_safer() {
    let line = r#"{"prompt":"p","response_0":"a","response_1":"b","better_response_id":1,"safer_response_id":0,"is_response_0_safe":true,"is_response_1_safe":false,"prompt_source":"extra keys are allowed"}"#;
    let (items, _) = read(line, opts(PairFormat::PkuSaferlhf, &["helpful", "harmless"], false));
    assert_eq!(items[0].as_ref().expect("valid").labels, [-1, 1]);
    let (items, _) = read(line, opts(PairFormat::PkuSaferlhf, &["harmless"], false));
    assert_eq!(items[0].as_ref().expect("valid").labels, [1]);
}

#[test]
fn hh_splits_the_shared_prompt() {
    let line = r#"{"chosen":"\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: Fine, thanks.","rejected":"\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: Go away."}"#;
    let (items, _) = read(line, opts(PairFormat::HhRlhf, &["helpful"], false));
    let r = items[0].as_ref().expect("valid");
    assert_eq!(r.prompt, "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant:");
    assert_eq!((r.response_0.as_str(), r.response_1.as_str()), ("Fine, thanks.", "Go away."));
    assert_eq!(r.labels, [1]);
    let bad =
        r#"{"chosen":"\n\nHuman: a\n\nAssistant: x","rejected":"\n\nHuman: b\n\nAssistant: y"}"#;
    let msg = first_error(bad, opts(PairFormat::HhRlhf, &["helpful"], false));
    assert!(msg.starts_with("mem.jsonl:1: field `rejected`"), "{msg}");
}

#[track_caller]
fn check_error(format: PairFormat, dims: &[&str], text: &str, want_prefix: &str) {
    let msg = first_error(text, opts(format, dims, false));
    assert!(msg.starts_with(want_prefix), "got {msg:?}, want prefix {want_prefix:?}");
}

#[test]
fn strict_errors_name_file_line_and_field() {
    let g = PairFormat::Generic;
    let ok = GENERIC;
    check_error(
        g,
        &["harmless"],
        &format!("{ok}\n{{\"prompt\":1}}"),
        "mem.jsonl:2: field `prompt`",
    );
    check_error(
        g,
        &["harmless"],
        r#"{"prompt":"p","response_0":"a","prefs":{}}"#,
        "mem.jsonl:1: missing field `response_1`",
    );
    check_error(
        g,
        &["harmless"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{"harmless":2}}"#,
        "mem.jsonl:1: field `prefs.harmless`: must be 0 or 1, got 2",
    );
    check_error(
        g,
        &["harmless"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{"harmless":-1}}"#,
        "mem.jsonl:1: field `prefs.harmless`",
    );
    check_error(
        g,
        &["harmless"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{},"extra":1}"#,
        "mem.jsonl:1: field `extra`: unknown field `extra`",
    );
    check_error(
        g,
        &["harmless"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{}} trailing"#,
        "mem.jsonl:1: trailing characters",
    );
    check_error(g, &["harmless"], "\n\nnot json", "mem.jsonl:3: ");
    let pku = PairFormat::PkuSaferlhf;
    check_error(
        pku,
        &["helpful"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","better_response_id":3,"safer_response_id":0,"is_response_0_safe":true,"is_response_1_safe":false}"#,
        "mem.jsonl:1: field `better_response_id`: must be 0 or 1, got 3",
    );
    check_error(
        pku,
        &["helpful"],
        r#"{"prompt":"p","response_0":"a","response_1":"b","better_response_id":0,"safer_response_id":0,"is_response_0_safe":"yes","is_response_1_safe":false}"#,
        "mem.jsonl:1: field `is_response_0_safe`",
    );
}

#[test]
fn invalid_utf8_is_an_error_not_a_panic() {
    let mut bytes = GENERIC.as_bytes().to_vec();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    let mut r = read_pairs(
        Cursor::new(bytes),
        "bin.jsonl",
        opts(PairFormat::Generic, &["harmless"], false),
    )
    .expect("options");
    assert!(r.next().expect("first").is_ok());
    let msg = r.next().expect("second").expect_err("bad utf-8").to_string();
    assert!(msg.starts_with("bin.jsonl:2: not valid UTF-8"), "{msg}");
}

#[test]
fn skip_invalid_counts_every_line() {
    let text = format!("{GENERIC}\n\nnot json\n{GENERIC}\n{{\"prompt\":2}}\n   \n");
    let (items, report) = read(&text, opts(PairFormat::Generic, &["harmless"], true));
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
    assert_eq!((report.records, report.skipped, report.blank_lines), (2, 2, 2));
    assert_eq!(report.records + report.skipped + report.blank_lines, text.lines().count());
    assert!(report.first_errors[0].starts_with("mem.jsonl:3:"), "{:?}", report.first_errors);
    assert!(
        report.first_errors[1].starts_with("mem.jsonl:5: field `prompt`"),
        "{:?}",
        report.first_errors
    );
}

#[test]
fn bad_options_are_rejected() {
    let bad = |f, d: &[&str]| {
        read_pairs(Cursor::new(Vec::new()), "x", opts(f, d, false)).expect_err("bad options")
    };
    assert!(bad(PairFormat::Generic, &[]).to_string().contains("no dimensions"));
    assert!(bad(PairFormat::Generic, &["a", "a"]).to_string().contains("twice"));
    assert!(bad(PairFormat::PkuSaferlhf, &["concise"])
        .to_string()
        .contains("no dimension \"concise\""));
    assert!(bad(PairFormat::HhRlhf, &["helpful", "harmless"]).to_string().contains("one label"));
}

#[test]
fn committed_fixtures_load_and_agree() {
    let dir = panacea_data::workspace_path("data/tiny");
    let dims = ["helpful", "harmless"];
    let (generic, rg) = panacea_data::load_pairs(
        &dir.join("pairs_generic.jsonl"),
        opts(PairFormat::Generic, &dims, false),
    )
    .expect("generic fixture");
    let (pku, rp) = panacea_data::load_pairs(
        &dir.join("pairs_pku.jsonl"),
        opts(PairFormat::PkuSaferlhf, &dims, false),
    )
    .expect("pku fixture");
    assert_eq!(generic.len(), pku.len());
    assert_eq!((rg.skipped, rp.skipped), (0, 0));
    for (g, p) in generic.iter().zip(&pku) {
        assert_eq!(
            (&g.prompt, &g.response_0, &g.response_1),
            (&p.prompt, &p.response_0, &p.response_1)
        );
        assert_eq!(g.labels, p.labels, "line {}", g.line);
    }
    let (hh, _) = panacea_data::load_pairs(
        &dir.join("pairs_hh.jsonl"),
        opts(PairFormat::HhRlhf, &["helpful"], false),
    )
    .expect("hh fixture");
    assert!(hh.len() >= 3 && hh.iter().all(|r| r.labels == [1]));
}

fn any_format() -> impl Strategy<Value = PairFormat> {
    prop_oneof![Just(PairFormat::Generic), Just(PairFormat::PkuSaferlhf), Just(PairFormat::HhRlhf)]
}

/// Lines that are almost valid: fragments of real records glued together.
fn jsonish_line() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "\"prompt\":",
        "\"response_0\":",
        "\"response_1\":",
        "\"prefs\":",
        "\"scores\":",
        "\"chosen\":",
        "\"rejected\":",
        "\"better_response_id\":",
        "\"safer_response_id\":",
        "\"is_response_0_safe\":",
        "\"is_response_1_safe\":",
        "\"harmless\":",
        "\"helpful\":",
        "\"x\"",
        "\"\\n\\nAssistant: y\"",
        "0",
        "1",
        "2",
        "-1",
        "1e999",
        "null",
        "true",
        "[",
        "]",
        ",",
        "[0.5,1]",
        "\"\\ud800\"",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), format in any_format(), skip in any::<bool>()) {
        let dims: &[&str] = if format == PairFormat::HhRlhf { &["helpful"] } else { &["helpful", "harmless"] };
        let mut r = read_pairs(Cursor::new(bytes.clone()), "fuzz", opts(format, dims, skip)).expect("options");
        let n = r.by_ref().count();
        let rep = r.report();
        if skip {
            // Lines as `read_until(b'\n')` sees them: a final segment counts only if non-empty.
            let lines = bytes.split(|&b| b == b'\n').count()
                - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));
            prop_assert_eq!(rep.records + rep.skipped + rep.blank_lines + rep.dropped_identical, lines);
            prop_assert_eq!(n, rep.records);
        }
    }

    /// With a small line cap, over-long lines are counted as skipped and the count still adds
    /// up; nothing panics.
    #[test]
    fn random_bytes_under_a_small_cap_never_panic(bytes in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..512), cap in 0usize..48, format in any_format()) {
        let dims: &[&str] = if format == PairFormat::HhRlhf { &["helpful"] } else { &["helpful", "harmless"] };
        let mut r = read_pairs(Cursor::new(bytes.clone()), "fuzz", opts(format, dims, true)).expect("options").max_line_bytes(cap);
        let n = r.by_ref().count();
        let rep = r.report();
        let lines = bytes.split(|&b| b == b'\n').count()
            - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));
        prop_assert_eq!(rep.records + rep.skipped + rep.blank_lines + rep.dropped_identical, lines);
        prop_assert_eq!(n, rep.records);
    }

    #[test]
    fn jsonish_lines_never_panic(lines in prop::collection::vec(jsonish_line(), 0..8), format in any_format(), skip in any::<bool>()) {
        let dims = &["harmless"];
        let text = lines.join("\n");
        let mut r = read_pairs(Cursor::new(text.into_bytes()), "fuzz", opts(format, dims, skip)).expect("options");
        for rec in r.by_ref().flatten() {
            prop_assert!(rec.labels.iter().all(|t| [-1, 0, 1].contains(t)));
        }
    }
}

#[test]
fn committed_smollm2_dataset_loads_strictly_and_matches_its_stats() {
    let dir = panacea_data::workspace_path("data/pairs");
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("stats.json")).expect("data/pairs/stats.json"),
    )
    .expect("stats.json is JSON");
    let dims = ["harmless", "positive", "relevant", "concise"];
    let (generic, rg) = panacea_data::load_pairs(
        &dir.join("smollm2-generic.jsonl"),
        opts(PairFormat::Generic, &dims, false),
    )
    .expect("generic pairs load strictly");
    assert_eq!(generic.len() as u64, stats["pairs"]["generic"].as_u64().expect("count"));
    for (k, d) in dims.iter().enumerate() {
        assert_eq!(
            rg.labelled[k] as u64,
            stats["pairs"]["labelled_per_dim"][d].as_u64().expect("count"),
            "{d}"
        );
    }
    assert!(generic
        .iter()
        .all(|r| r.response_0 != r.response_1 && r.scores.iter().all(Option::is_some)));
    let (pku, _) = panacea_data::load_pairs(
        &dir.join("smollm2-pku.jsonl"),
        opts(PairFormat::PkuSaferlhf, &["helpful", "harmless"], false),
    )
    .expect("pku pairs load strictly");
    assert_eq!(pku.len() as u64, stats["pairs"]["pku"].as_u64().expect("count"));
    assert!(pku.iter().all(|r| r.labels.iter().all(|&t| t != 0)));
}

/// The committed pair files are exactly what `build_pairs` makes of the committed scored
/// responses with the margins recorded in stats.json (what `cargo xtask make-pairs
/// --from-responses` does): the pairs cannot drift from their generator or from their scores.
#[test]
fn committed_pairs_are_rebuilt_exactly_from_the_committed_scored_responses() {
    use panacea_data::pairgen::{build_pairs, read_scored_responses, PairGenConfig, PairGenStats};
    let dir = panacea_data::workspace_path("data/pairs");
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("stats.json")).expect("data/pairs/stats.json"),
    )
    .expect("stats.json is JSON");
    let dims: Vec<String> =
        ["harmless", "positive", "relevant", "concise"].map(String::from).to_vec();
    let cfg = PairGenConfig {
        margins: dims.iter().map(|d| stats["margins"][d].as_f64().expect("margin")).collect(),
        dims: dims.clone(),
        pku_helpful: "relevant".into(),
        pku_harmless: "harmless".into(),
        safe_threshold: 0.5,
    };
    let scored = read_scored_responses(&dir.join("smollm2-responses.jsonl")).expect("responses");
    let prompts = stats["prompts"]["benign"].as_u64().unwrap()
        + stats["prompts"]["harmful"].as_u64().unwrap();
    assert_eq!(scored.len() as u64, prompts);
    let (mut generic, mut pku) = (String::new(), String::new());
    let mut counts = PairGenStats::default();
    for r in &scored {
        let (g, p) = build_pairs(&r.to_scored_prompt(&dims).expect("dims"), &cfg, &mut counts)
            .expect("pairs");
        for x in g {
            generic.push_str(&serde_json::to_string(&x).unwrap());
            generic.push('\n');
        }
        for x in p {
            pku.push_str(&serde_json::to_string(&x).unwrap());
            pku.push('\n');
        }
    }
    let committed = |f: &str| std::fs::read_to_string(dir.join(f)).expect(f);
    assert!(generic == committed("smollm2-generic.jsonl"), "generic pairs differ from a rebuild");
    assert!(pku == committed("smollm2-pku.jsonl"), "PKU pairs differ from a rebuild");
    assert_eq!(counts.pku as u64, stats["pairs"]["pku"].as_u64().unwrap());
}

#[test]
fn scored_responses_reader_names_the_line_and_field_of_a_bad_column() {
    let dir = std::env::temp_dir().join(format!("panacea-data-scored-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("responses.jsonl");
    let good = r#"{"id":"a","kind":"benign","source":"s","prompt":"p","responses":["x","y"],"tokens":[1,2],"scores":{"harmless":[0.5,0.25]}}"#;
    let short = r#"{"id":"b","kind":"benign","source":"s","prompt":"p","responses":["x","y"],"tokens":[1,2],"scores":{"harmless":[0.5]}}"#;
    std::fs::write(&path, format!("{good}\n\n{short}\n")).unwrap();
    let err = panacea_data::pairgen::read_scored_responses(&path).unwrap_err().to_string();
    assert!(err.contains("responses.jsonl:3") && err.contains("scores.harmless"), "{err}");
    std::fs::write(&path, format!("{good}\n")).unwrap();
    let ok = panacea_data::pairgen::read_scored_responses(&path).expect("one good line");
    let sp = ok[0].to_scored_prompt(&["harmless".to_owned()]).expect("harmless column");
    assert_eq!(sp.scores, vec![vec![0.5], vec![0.25]]);
    let missing = ok[0].to_scored_prompt(&["relevant".to_owned()]).unwrap_err().to_string();
    assert!(missing.contains("\"relevant\""), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An endless source of one byte, counting what the reader consumed: a line that never ends
/// must be refused after about the cap, not read to exhaustion.
struct Endless {
    byte: u8,
    chunk: Vec<u8>,
    consumed: usize,
    /// After this many bytes, a newline and `tail` follow (then the end).
    line_len: usize,
    tail: Vec<u8>,
}

impl Endless {
    fn new(byte: u8, line_len: usize, tail: &str) -> Self {
        Self { byte, chunk: Vec::new(), consumed: 0, line_len, tail: tail.as_bytes().to_vec() }
    }
}

impl Read for Endless {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Endless {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        const CHUNK: usize = 8192;
        self.chunk.clear();
        if self.consumed < self.line_len {
            let n = CHUNK.min(self.line_len - self.consumed);
            self.chunk.resize(n, self.byte);
        } else {
            let at = self.consumed - self.line_len;
            let mut rest = vec![b'\n'];
            rest.extend_from_slice(&self.tail);
            self.chunk.extend_from_slice(rest.get(at..).unwrap_or(&[]));
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, n: usize) {
        self.consumed += n;
    }
}

#[test]
fn an_over_long_line_is_refused_while_reading() {
    // Issue 18: one 50 MB line took 27–37 s and 5.5 GB before it was dropped as too long.
    let tail = GENERIC;
    let fifty_mb = 50 << 20;
    let mut source = Endless::new(b'x', fifty_mb, tail);
    {
        let o = opts(PairFormat::Generic, &["harmless"], false);
        let mut r = read_pairs(&mut source, "big.jsonl", o).expect("options");
        let msg = r.next().expect("an item").expect_err("over the cap").to_string();
        assert!(
            msg.starts_with("big.jsonl:1: the line is longer than 1048576 bytes")
                && msg.contains("hint"),
            "{msg}"
        );
    }
    // Refused after the cap (plus room for a line ending), not after 50 MB.
    assert_eq!(DEFAULT_MAX_LINE_BYTES, 1 << 20);
    assert!(source.consumed <= DEFAULT_MAX_LINE_BYTES + 2, "read {} bytes", source.consumed);

    // With skip_invalid the reader skips the rest of the line without storing it, counts it,
    // and goes on with the next one.
    let o = opts(PairFormat::Generic, &["harmless"], true);
    let mut r = read_pairs(Endless::new(b'x', fifty_mb, tail), "big.jsonl", o).expect("options");
    let rec = r.next().expect("the record after it").expect("valid");
    assert_eq!(rec.line, 2);
    assert!(r.next().is_none());
    assert_eq!((r.report().records, r.report().skipped), (1, 1));
    assert!(r.report().first_errors[0].contains("longer than 1048576 bytes"));

    // The cap is the caller's: a line of exactly the cap passes, one byte more does not, and
    // the error comes after reading at most the cap plus one chunk.
    let line_len = GENERIC.len();
    let two = format!("{GENERIC}\r\n{GENERIC}\n");
    let o = || opts(PairFormat::Generic, &["harmless"], false);
    let exact = read_pairs(Cursor::new(two.clone()), "m", o()).expect("o").max_line_bytes(line_len);
    assert_eq!(exact.filter(Result::is_ok).count(), 2);
    let mut under = read_pairs(Cursor::new(two), "m", o()).expect("o").max_line_bytes(line_len - 1);
    let msg = under.next().expect("item").expect_err("one byte over").to_string();
    assert!(msg.starts_with(&format!("m:1: the line is longer than {} bytes", line_len - 1)));

    let mut endless = Endless::new(b'y', usize::MAX, "");
    {
        let o = opts(PairFormat::Generic, &["harmless"], false);
        let mut r = read_pairs(&mut endless, "endless", o).expect("options").max_line_bytes(1000);
        assert!(r.next().expect("item").is_err());
    }
    assert!(endless.consumed <= 1002, "read {} bytes of a line capped at 1000", endless.consumed);
}

#[test]
fn a_json_array_file_is_named_as_such() {
    let hint = "jq -c '.[]'";
    // One array on one line, or pretty-printed (its first line is `[`).
    let one_line = format!("[{GENERIC},{GENERIC}]");
    let msg = first_error(&one_line, opts(PairFormat::Generic, &["harmless"], false));
    assert!(msg.starts_with("mem.jsonl:1: is a JSON array") && msg.contains(hint), "{msg}");
    let pretty = format!("[\n  {GENERIC},\n  {GENERIC}\n]\n");
    let msg = first_error(&pretty, opts(PairFormat::PkuSaferlhf, &["harmless"], false));
    assert!(msg.starts_with("mem.jsonl:1: is a JSON array") && msg.contains(hint), "{msg}");
    // An array of the record's values in field order is refused too (serde would otherwise
    // read it positionally into the record).
    let positional = r#"["p","a","b",{"harmless":0}]"#;
    let (items, _) = read(positional, opts(PairFormat::Generic, &["harmless"], false));
    let msg = items[0].as_ref().expect_err("positional array").to_string();
    assert!(msg.contains("is a JSON array"), "{msg}");
    // A pretty-printed object is named as well.
    let msg = first_error("{\n\"prompt\": \"p\"\n}\n", opts(PairFormat::Generic, &["a"], false));
    assert!(msg.contains("pretty-printed JSON") && msg.contains("jq -c ."), "{msg}");
}

#[test]
fn identical_responses_are_dropped_and_counted_in_every_format() {
    let same_generic =
        r#"{"prompt":"p","response_0":"same","response_1":"same","prefs":{"helpful":0}}"#;
    let other_generic = r#"{"prompt":"q","response_0":"a","response_1":"b","prefs":{"helpful":1}}"#;
    let text = format!("{same_generic}\n{other_generic}\n{same_generic}\n");
    let (items, report) = read(&text, opts(PairFormat::Generic, &["helpful"], false));
    let kept: Vec<usize> = items.iter().map(|r| r.as_ref().expect("valid").line).collect();
    assert_eq!(kept, [2]);
    assert_eq!((report.records, report.dropped_identical), (1, 2));
    assert_eq!(report.labelled, [1]);

    let same_pku = r#"{"prompt":"p","response_0":"x","response_1":"x","better_response_id":1,"safer_response_id":0,"is_response_0_safe":true,"is_response_1_safe":true}"#;
    let (items, report) = read(same_pku, opts(PairFormat::PkuSaferlhf, &["helpful"], false));
    assert!(items.is_empty());
    assert_eq!(report.dropped_identical, 1);

    let same_hh = r#"{"chosen":"\n\nHuman: hi\n\nAssistant: ok","rejected":"\n\nHuman: hi\n\nAssistant: ok"}"#;
    let (items, report) = read(same_hh, opts(PairFormat::HhRlhf, &["helpful"], true));
    assert!(items.is_empty());
    assert_eq!((report.dropped_identical, report.skipped), (1, 0));
    assert!(panacea_data::same_responses("a", "a") && !panacea_data::same_responses("a", "a "));
    assert!(panacea_data::same_responses(&[1i64, 2][..], &[1, 2][..]));
}

#[test]
fn unknown_label_keys_are_reported_with_their_first_line() {
    // Issue 18: a typo'd label key (`helpfull`) trained a reward model on no labels, silently.
    let typo = |n: u8| {
        format!(
            r#"{{"prompt":"p{n}","response_0":"a","response_1":"b","prefs":{{"helpfull":0,"harmless":1}},"scores":{{"helpfull":[1.0,0.0]}}}}"#
        )
    };
    let good =
        r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{"helpful":0,"harmless":1}}"#;
    let text = format!("{good}\n{}\n{}\n", typo(1), typo(2));
    let (items, report) = read(&text, opts(PairFormat::Generic, &["helpful", "harmless"], false));
    assert!(items.iter().all(Result::is_ok));
    assert_eq!(report.labelled, [1, 3]);
    let want = |field: &str| UnknownLabelKey {
        field: field.to_owned(),
        first_line: 2,
        records: 2,
        did_you_mean: Some("helpful".to_owned()),
    };
    assert_eq!(report.unknown_label_keys, [want("prefs.helpfull"), want("scores.helpfull")]);
    assert_eq!(
        report.unknown_label_keys[0].to_string(),
        "label key `prefs.helpfull` (first on line 2, in 2 record(s)) is not a requested \
         dimension; did you mean `helpful`?"
    );
    // A dimension the caller does not train is listed without a guess.
    let (_, report) = read(good, opts(PairFormat::Generic, &["harmless"], false));
    assert_eq!(report.unknown_label_keys.len(), 1);
    assert_eq!(report.unknown_label_keys[0].did_you_mean, None);
    // Known keys only: nothing listed.
    let (_, report) = read(good, opts(PairFormat::Generic, &["helpful", "harmless"], false));
    assert!(report.unknown_label_keys.is_empty());
}
