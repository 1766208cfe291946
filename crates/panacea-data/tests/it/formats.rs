//! Pair files as people have them: JSON Lines, `.jsonl.gz` and parquet of the same logical
//! pairs give identical records; TRL's standard and conversational forms; PKU-SafeRLHF's full
//! schema with its severity levels; the `labels` mapping of objectives to columns; errors that
//! name the file, the line or row and the field; `skip_invalid` in every format; and hostile
//! bytes in every format never panic. The fixtures are written by
//! scripts/make_data_fixtures.py (pyarrow).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use panacea_data::{
    load_pair_file, read_pair_bytes, ChatRole, ChatTurn, DataError, FileFormat, PairFormat,
    PairRecord, ReadOptions, ReadReport,
};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn opts(format: PairFormat, dims: &[&str], skip_invalid: bool) -> ReadOptions {
    ReadOptions { format, dims: dims.iter().map(|d| d.to_string()).collect(), skip_invalid }
}

fn labels(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[track_caller]
fn load(name: &str, format: PairFormat, dims: &[&str]) -> (Vec<PairRecord>, ReadReport) {
    load_pair_file(&fixture(name), FileFormat::Auto, &BTreeMap::new(), opts(format, dims, false))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Reads an in-memory file and returns every item and the report.
fn read_bytes(
    bytes: Vec<u8>,
    name: &str,
    format: PairFormat,
    dims: &[&str],
    skip: bool,
) -> (Vec<Result<PairRecord, DataError>>, ReadReport) {
    let empty = BTreeMap::new();
    let mut r = read_pair_bytes(bytes, name, FileFormat::Auto, &empty, opts(format, dims, skip))
        .expect("options");
    let items: Vec<_> = r.by_ref().collect();
    (items, r.report().clone())
}

#[track_caller]
fn first_error(text: &str, format: PairFormat, dims: &[&str]) -> String {
    let (items, _) = read_bytes(text.as_bytes().to_vec(), "mem.jsonl", format, dims, false);
    items.into_iter().find_map(Result::err).expect("an error").to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// The same record without its conversation and its line (to compare readings of the same
/// pairs from differently shaped files).
fn text_only(r: &PairRecord) -> (String, String, String, Vec<i8>) {
    (r.prompt.clone(), r.response_0.clone(), r.response_1.clone(), r.labels.clone())
}

#[test]
fn the_extension_chooses_the_format_unless_it_is_given() {
    let auto = FileFormat::Auto;
    assert_eq!(auto.resolve(Path::new("a/train.parquet")), FileFormat::Parquet);
    assert_eq!(auto.resolve(Path::new("train.jsonl.gz")), FileFormat::JsonlGz);
    assert_eq!(auto.resolve(Path::new("TRAIN.JSONL.GZ")), FileFormat::JsonlGz);
    assert_eq!(auto.resolve(Path::new("train.jsonl")), FileFormat::Jsonl);
    assert_eq!(auto.resolve(Path::new("train")), FileFormat::Jsonl);
    assert_eq!(FileFormat::Parquet.resolve(Path::new("train.bin")), FileFormat::Parquet);
    // The override reads a gzip file whatever its name.
    let gz = std::fs::read(fixture("hh.jsonl.gz")).expect("fixture");
    let empty = BTreeMap::new();
    let o = opts(PairFormat::HhRlhf, &["helpful"], false);
    let r = read_pair_bytes(gz, "hh.data", FileFormat::JsonlGz, &empty, o).expect("options");
    assert_eq!(r.count(), 3);
}

#[test]
fn pku_full_schema_is_the_same_in_jsonl_gzip_and_parquet() {
    let dims = ["helpful", "harmless"];
    let (jsonl, report) = load("pku.jsonl", PairFormat::PkuSaferlhf, &dims);
    let (gz, _) = load("pku.jsonl.gz", PairFormat::PkuSaferlhf, &dims);
    let (parquet, parquet_report) = load("pku.parquet", PairFormat::PkuSaferlhf, &dims);
    assert_eq!(jsonl.len(), 4);
    assert_eq!(jsonl, gz);
    assert_eq!(jsonl, parquet);
    assert_eq!(report, parquet_report);
    // scripts/make_data_fixtures.py PAIRS: (better, safer) = (0, 0), (0, 1), (0, 0), (0, 0);
    // severity levels (0, 0), (2, 0), (0, 0), (0, 3); safety (T, T), (F, T), (T, T), (T, F).
    let labels: Vec<_> = jsonl.iter().map(|r| r.labels.clone()).collect();
    assert_eq!(labels, [vec![1, 1], vec![1, -1], vec![1, 1], vec![1, 1]]);
    let severity: Vec<_> = jsonl.iter().map(|r| r.severity).collect();
    assert_eq!(severity, [Some([0, 0]), Some([2, 0]), Some([0, 0]), Some([0, 3])]);
    let safety: Vec<_> = jsonl.iter().map(|r| r.safety).collect();
    assert_eq!(
        safety,
        [Some([true, true]), Some([false, true]), Some([true, true]), Some([true, false])]
    );
    assert_eq!(jsonl[2].prompt, "Write a haiku about rain, with an accent: café.");
    assert_eq!(parquet.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 2, 3, 4]);
}

#[test]
fn hh_transcripts_are_the_same_in_jsonl_gzip_and_parquet() {
    let (jsonl, _) = load("hh.jsonl", PairFormat::HhRlhf, &["helpful"]);
    let (gz, _) = load("hh.jsonl.gz", PairFormat::HhRlhf, &["helpful"]);
    let (parquet, _) = load("hh.parquet", PairFormat::HhRlhf, &["helpful"]);
    assert_eq!(jsonl.len(), 3);
    assert_eq!(jsonl, gz);
    assert_eq!(jsonl, parquet);
    assert_eq!(
        jsonl[1].prompt,
        "\n\nHuman: Can you help me write a thank-you note?\n\nAssistant: Of course! Who is it \
         for?\n\nHuman: My aunt Sam, for a scarf.\n\nAssistant:"
    );
    assert_eq!(jsonl[1].response_0, "Dear Sam, thank you so much for the lovely scarf.");
    assert_eq!(jsonl[1].response_1, "No.");
}

#[test]
fn trl_standard_and_conversational_forms_give_the_same_pairs() {
    let (standard, _) = load("trl_standard.jsonl", PairFormat::Trl, &["helpful"]);
    let (standard_pq, _) = load("trl_standard.parquet", PairFormat::Trl, &["helpful"]);
    let (conversational, _) = load("trl_conversational.parquet", PairFormat::Trl, &["helpful"]);
    assert_eq!(standard.len(), 4);
    assert_eq!(standard, standard_pq);
    assert_eq!(standard, conversational);
    assert!(standard.iter().all(|r| r.labels == [1] && r.chat.is_none()));
    // The same pairs as the PKU file's helpful dimension, with the better response first.
    let (pku, _) = load("pku.jsonl", PairFormat::PkuSaferlhf, &["helpful"]);
    let pku: Vec<_> = pku
        .iter()
        .map(|r| {
            let (c, rj) = if r.labels[0] == 1 {
                (&r.response_0, &r.response_1)
            } else {
                (&r.response_1, &r.response_0)
            };
            (r.prompt.clone(), c.clone(), rj.clone(), vec![1])
        })
        .collect();
    assert_eq!(standard.iter().map(text_only).collect::<Vec<_>>(), pku);
}

#[test]
fn trl_implicit_prompts_split_at_the_shared_messages_like_hh_transcripts() {
    let (implicit, report) = load("trl_implicit.jsonl.gz", PairFormat::Trl, &["helpful"]);
    let (hh, _) = load("hh.jsonl", PairFormat::HhRlhf, &["helpful"]);
    assert_eq!(report.records, 3);
    // Single-turn prompts become the user's text; the multi-turn one keeps its conversation
    // and, as its prompt, the HH transcript of it: the same text the HH file gives.
    assert_eq!(implicit[0].prompt, "What is the capital of France?");
    assert_eq!(implicit[0].chat, None);
    assert_eq!(text_only(&implicit[1]), text_only(&hh[1]));
    let turn = |role, content: &str| ChatTurn { role, content: content.to_owned() };
    assert_eq!(
        implicit[1].chat.as_deref(),
        Some(
            &[
                turn(ChatRole::User, "Can you help me write a thank-you note?"),
                turn(ChatRole::Assistant, "Of course! Who is it for?"),
                turn(ChatRole::User, "My aunt Sam, for a scarf."),
            ][..]
        )
    );
    assert_eq!(implicit[2].response_0, hh[2].response_0);
    assert_eq!(implicit[2].response_1, hh[2].response_1);
}

#[test]
fn a_labels_mapping_says_which_column_labels_which_objective() {
    let dims = ["helpful", "harmless"];
    // Two HH-style files as two objectives: each labels one, the other is masked (t = 0).
    let empty = BTreeMap::new();
    let helpful = labels(&[("helpful", "chosen")]);
    let harmless = labels(&[("harmless", "chosen")]);
    let read = |name: &str, map: &BTreeMap<String, String>, format| {
        load_pair_file(&fixture(name), FileFormat::Auto, map, opts(format, &dims, false))
            .expect("mapped file")
    };
    let (a, ra) = read("hh.jsonl.gz", &helpful, PairFormat::HhRlhf);
    let (b, rb) = read("trl_standard.parquet", &harmless, PairFormat::Trl);
    assert!(a.iter().all(|r| r.labels == [1, 0]));
    assert!(b.iter().all(|r| r.labels == [0, 1]));
    assert_eq!((ra.labelled, rb.labelled), (vec![3, 0], vec![0, 4]));
    // PKU's columns under other objective names, and swapped: the labels follow the columns.
    let (default, _) = read("pku.parquet", &empty, PairFormat::PkuSaferlhf);
    let swapped = labels(&[("helpful", "safer_response_id"), ("harmless", "better_response_id")]);
    let (mapped, _) = read("pku.parquet", &swapped, PairFormat::PkuSaferlhf);
    for (d, m) in default.iter().zip(&mapped) {
        assert_eq!(m.labels, [d.labels[1], d.labels[0]]);
    }
    // Generic files map an objective to any prefs key.
    let generic = r#"{"prompt":"p","response_0":"a","response_1":"b","prefs":{"helpfulness":1,"harmless":0}}"#;
    let map = labels(&[("helpful", "prefs.helpfulness"), ("harmless", "prefs.harmless")]);
    let o = opts(PairFormat::Generic, &dims, false);
    let mut r = read_pair_bytes(generic.into(), "g.jsonl", FileFormat::Auto, &map, o).expect("ok");
    assert_eq!(r.next().expect("one").expect("valid").labels, [-1, 1]);
    assert!(r.report().unknown_label_keys.is_empty());
}

#[test]
fn a_bad_labels_mapping_names_the_entry_and_the_valid_columns() {
    let dims = ["helpful", "harmless"];
    let bad = |format, entries: &[(&str, &str)]| {
        let o = opts(format, &dims, false);
        let map = labels(entries);
        read_pair_bytes(Vec::new(), "x.jsonl", FileFormat::Auto, &map, o)
            .expect_err("bad mapping")
            .to_string()
    };
    let msg = bad(PairFormat::HhRlhf, &[("honest", "chosen")]);
    assert!(msg.contains("`honest` is not one of the objectives (helpful, harmless)"), "{msg}");
    let msg = bad(PairFormat::PkuSaferlhf, &[("helpful", "chosen")]);
    assert!(msg.contains("`helpful: chosen`") && msg.contains("safer_response_id"), "{msg}");
    let msg = bad(PairFormat::Trl, &[("helpful", "better_response_id")]);
    assert!(msg.contains("hint: use `chosen`"), "{msg}");
    let msg = bad(PairFormat::Generic, &[("helpful", "helpful")]);
    assert!(msg.contains("prefs.<key>"), "{msg}");
    // Without a mapping a one-label file with two objectives asks for one.
    let msg = bad(PairFormat::Trl, &[]);
    assert!(msg.contains("TRL files carry one label") && msg.contains("helpful: chosen"), "{msg}");
}

#[test]
fn parquet_errors_name_the_file_the_row_and_the_field() {
    // A TRL file read as HH-RLHF: chosen is a message list, not a transcript string.
    let path = fixture("trl_conversational.parquet");
    let o = opts(PairFormat::HhRlhf, &["helpful"], false);
    let err = load_pair_file(&path, FileFormat::Auto, &BTreeMap::new(), o).expect_err("strict");
    let msg = err.to_string();
    assert!(matches!(err, DataError::Row { row: 1, .. }), "{msg}");
    assert!(msg.starts_with(&format!("{}: row 1: field `chosen`: invalid type", path.display())));
    // With skip_invalid every row is skipped, counted and named.
    let o = opts(PairFormat::HhRlhf, &["helpful"], true);
    let (records, report) =
        load_pair_file(&path, FileFormat::Auto, &BTreeMap::new(), o).expect("skips");
    assert!(records.is_empty());
    assert_eq!(report.skipped, 4);
    assert!(
        report.first_errors[3].contains(": row 4: field `chosen`"),
        "{:?}",
        report.first_errors
    );
}

#[test]
fn a_parquet_codec_this_build_lacks_is_named_with_a_hint() {
    let path = fixture("pku_zstd.parquet");
    let o = opts(PairFormat::PkuSaferlhf, &["helpful"], true);
    let err = load_pair_file(&path, FileFormat::Auto, &BTreeMap::new(), o).expect_err("zstd");
    let msg = err.to_string();
    assert!(msg.contains("pku_zstd.parquet") && msg.to_lowercase().contains("zstd"), "{msg}");
    assert!(msg.contains("compression=\"snappy\""), "{msg}");
}

#[test]
fn gzip_errors_name_the_decompressed_line_and_corrupt_streams_the_file() {
    let text = "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: b\", \"rejected\": \"\\n\\nHuman: \
                a\\n\\nAssistant: c\"}\n\n{\"chosen\": 1}\n";
    let (items, report) =
        read_bytes(gzip(text.as_bytes()), "t.jsonl.gz", PairFormat::HhRlhf, &["helpful"], true);
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
    assert_eq!((report.records, report.blank_lines, report.skipped), (1, 1, 1));
    assert!(
        report.first_errors[0].starts_with("t.jsonl.gz:3: field `chosen`"),
        "{:?}",
        report.first_errors
    );
    // A truncated gzip stream ends the read with an I/O error naming the file, even when
    // skipping invalid lines.
    let mut cut = gzip(text.repeat(50).as_bytes());
    cut.truncate(cut.len() / 2);
    let (items, _) = read_bytes(cut, "cut.jsonl.gz", PairFormat::HhRlhf, &["helpful"], true);
    let err = items.into_iter().find_map(Result::err).expect("an I/O error");
    assert!(matches!(err, DataError::Io { .. }) && err.to_string().starts_with("cut.jsonl.gz: "));
}

#[test]
fn trl_errors_name_the_field_and_the_forms() {
    let trl = PairFormat::Trl;
    let h = &["helpful"];
    let msg = first_error(r#"{"chosen": "a", "rejected": "b"}"#, trl, h);
    assert!(msg.starts_with("mem.jsonl:1: field `prompt`: is missing"), "{msg}");
    let msg = first_error(
        r#"{"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(
        msg.starts_with("mem.jsonl:1: field `rejected`: is a message list but chosen is a string"),
        "{msg}"
    );
    let msg = first_error(
        r#"{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "robot", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(msg.starts_with("mem.jsonl:1: field `chosen[0].role`: \"robot\""), "{msg}");
    let msg = first_error(
        r#"{"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "x"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(msg.starts_with("mem.jsonl:1: field `chosen`: holds 2 messages"), "{msg}");
    let msg = first_error(
        r#"{"prompt": [{"role": "user", "content": "p", "tool_calls": []}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(msg.starts_with("mem.jsonl:1: field `prompt[0].tool_calls`: is not read"), "{msg}");
    let msg = first_error(
        r#"{"prompt": [{"role": "user", "content": [{"type": "text"}]}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(msg.starts_with("mem.jsonl:1: field `prompt[0].content`: must be a string"), "{msg}");
    // TRL's unpaired form is named and refused with a way to pair it; a record with neither
    // form names the missing column.
    for unpaired in [
        r#"{"prompt": "p", "completion": "a", "label": true}"#,
        r#"{"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "a"}], "label": false}"#,
    ] {
        let msg = first_error(unpaired, trl, h);
        assert!(
            msg.starts_with(
                "mem.jsonl:1: field `completion`: belongs to TRL's unpaired preference form \
                 (prompt, completion, label)"
            ) && msg.contains("hint: write TRL's paired form (prompt, chosen, rejected)"),
            "{msg}"
        );
    }
    let msg = first_error(r#"{"prompt": "p", "chosen": "a"}"#, trl, h);
    assert!(msg.starts_with("mem.jsonl:1: field `rejected`: is missing\nhint:"), "{msg}");
    let msg = first_error(r#"{"prompt": "p", "completion": "a"}"#, trl, h);
    assert!(msg.starts_with("mem.jsonl:1: field `chosen`: is missing"), "{msg}");
    let msg = first_error(r#"{"prompt": 3, "chosen": "a", "rejected": "b"}"#, trl, h);
    assert!(
        msg.starts_with("mem.jsonl:1: field `prompt`: must be a string (TRL's standard form)"),
        "{msg}"
    );
    let msg = first_error(
        r#"{"prompt": [{"role": "assistant", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        trl,
        h,
    );
    assert!(msg.contains("field `prompt`: the prompt's last message must be the user's"), "{msg}");
}

#[test]
fn pku_severity_levels_are_checked() {
    let line = |v0: &str, v1: &str| {
        format!(
            r#"{{"prompt":"p","response_0":"a","response_1":"b","better_response_id":0,"safer_response_id":1,"is_response_0_safe":true,"is_response_1_safe":false{v0}{v1}}}"#
        )
    };
    let pku = PairFormat::PkuSaferlhf;
    let (items, _) = read_bytes(line("", "").into_bytes(), "p.jsonl", pku, &["harmless"], false);
    assert_eq!(items[0].as_ref().expect("no levels").severity, None);
    let msg = first_error(
        &line(r#","response_0_severity_level":4"#, r#","response_1_severity_level":0"#),
        pku,
        &["harmless"],
    );
    assert!(
        msg.starts_with("mem.jsonl:1: field `response_0_severity_level`: must be 0 to 3, got 4"),
        "{msg}"
    );
    let msg = first_error(&line("", r#","response_1_severity_level":1"#), pku, &["harmless"]);
    assert!(msg.starts_with("mem.jsonl:1: field `response_0_severity_level`: is missing"), "{msg}");
}

fn any_schema() -> impl Strategy<Value = PairFormat> {
    prop_oneof![
        Just(PairFormat::Generic),
        Just(PairFormat::PkuSaferlhf),
        Just(PairFormat::HhRlhf),
        Just(PairFormat::Trl)
    ]
}

fn dims_of(format: PairFormat) -> &'static [&'static str] {
    match format {
        PairFormat::HhRlhf | PairFormat::Trl => &["helpful"],
        _ => &["helpful", "harmless"],
    }
}

/// Reads `bytes` as `name` to the end; with `skip`, a stream that ends without an I/O or
/// decoding error accounts for every record it saw.
fn drain(bytes: Vec<u8>, name: &str, format: PairFormat, skip: bool) {
    let empty = BTreeMap::new();
    let o = opts(format, dims_of(format), skip);
    let Ok(mut r) = read_pair_bytes(bytes, name, FileFormat::Auto, &empty, o) else {
        return; // an unreadable parquet footer: an error, not a panic
    };
    let mut n = 0;
    for item in r.by_ref() {
        n += usize::from(item.is_ok());
    }
    assert_eq!(n, r.report().records);
}

/// `bytes` with `flips` bytes overwritten at the given relative positions.
fn mutate(mut bytes: Vec<u8>, flips: &[(f64, u8)]) -> Vec<u8> {
    for &(at, value) in flips {
        let i = ((bytes.len() - 1) as f64 * at) as usize;
        bytes[i] = value;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary bytes as every file format and schema: errors, never a panic.
    #[test]
    fn random_bytes_never_panic_in_any_format(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        name in prop::sample::select(vec!["f.jsonl", "f.jsonl.gz", "f.parquet"]),
        format in any_schema(),
        skip in any::<bool>(),
    ) {
        drain(bytes, name, format, skip);
    }

    /// Real gzip and parquet files with a few bytes overwritten: whatever the decoder makes of
    /// them is an error or a record, never a panic.
    #[test]
    fn damaged_gzip_and_parquet_files_never_panic(
        file in prop::sample::select(vec!["pku.parquet", "trl_conversational.parquet", "hh.parquet", "pku.jsonl.gz", "trl_implicit.jsonl.gz"]),
        flips in prop::collection::vec((0.0f64..1.0, any::<u8>()), 1..6),
        format in any_schema(),
        skip in any::<bool>(),
    ) {
        let bytes = mutate(std::fs::read(fixture(file)).expect("fixture"), &flips);
        drain(bytes, file, format, skip);
    }

    /// A gzip file of arbitrary lines under a small cap: every line is accounted for.
    #[test]
    fn gzip_lines_under_a_small_cap_add_up(
        bytes in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..512),
        cap in 0usize..48,
        format in any_schema(),
    ) {
        let empty = BTreeMap::new();
        let o = opts(format, dims_of(format), true);
        let mut r = read_pair_bytes(gzip(&bytes), "g.jsonl.gz", FileFormat::Auto, &empty, o)
            .expect("options")
            .max_line_bytes(cap);
        let n = r.by_ref().filter(Result::is_ok).count();
        let rep = r.report();
        let lines = bytes.split(|&b| b == b'\n').count()
            - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));
        prop_assert_eq!(rep.records + rep.skipped + rep.blank_lines + rep.dropped_identical, lines);
        prop_assert_eq!(n, rep.records);
    }
}

#[test]
fn a_parquet_row_over_the_cap_is_refused_and_counted() {
    let bytes = std::fs::read(fixture("pku.parquet")).expect("fixture");
    let o = opts(PairFormat::PkuSaferlhf, &["helpful"], true);
    // Row 1's strings (prompt, responses, sources, sha256s) take 257 bytes (pyarrow's count),
    // the others more.
    let mut r = read_pair_bytes(bytes, "pku.parquet", FileFormat::Auto, &BTreeMap::new(), o)
        .expect("options")
        .max_line_bytes(100);
    assert_eq!(r.by_ref().count(), 0);
    assert_eq!(r.report().skipped, 4);
    assert!(r.report().first_errors[0].contains("row 1: the row's text is longer than 100 bytes"));
}
