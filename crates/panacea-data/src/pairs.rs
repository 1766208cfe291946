//! Streaming, strictly validated loaders for preference pairs, mapped to per-dimension labels
//! t ∈ {+1, −1, 0} (docs/method.md, §7.1). Files are JSON Lines, gzip JSON Lines or parquet
//! ([`crate::formats::FileFormat`], by extension unless given; [`load_pair_file`]), and a
//! `labels` mapping can say which column labels which dimension
//! ([`crate::formats::LabelSource`]). Errors name the file and the line (or, in parquet, the
//! row) and the field.
//!
//! Four schemas ([`PairFormat`]):
//!
//! - **Generic** (this project's N-dimension schema, one object per line, unknown keys rejected):
//!   `{"prompt": str, "response_0": str, "response_1": str, "prefs": {dim: 0|1|null, ...},
//!   "scores": {dim: [s_0, s_1], ...}}` where `prefs[dim]` is the index of the response that wins
//!   dimension `dim` (null or absent: no label) and the optional `scores` are the raw gold scores.
//! - **PKU-SafeRLHF**: `prompt, response_0, response_1, better_response_id, safer_response_id,
//!   is_response_0_safe, is_response_1_safe` (extra keys of the published files are allowed).
//!   Dimension `helpful` takes its winner from `better_response_id`, `harmless` from
//!   `safer_response_id`. The full schema's `response_{0,1}_severity_level` (0–3), where a
//!   file has them, are carried along in [`PairRecord::severity`].
//! - **HH-RLHF**: `{"chosen": str, "rejected": str}`, whole dialogues. The shared prompt is
//!   everything up to and including the last `"\n\nAssistant:"`, which must be the same in both;
//!   `response_0` is the chosen continuation, so the one dimension's label is +1.
//! - **TRL**: `prompt, chosen, rejected` as strings (standard form) or message lists
//!   (conversational form, with or without a separate prompt); see [`crate::formats::trl`]'s
//!   rules. `response_0` is chosen, so the one dimension's label is +1.
//!
//! Labels: t = +1 if `response_0` wins the dimension, −1 if `response_1` wins, 0 if the record
//! has no label for it (the DPO loss masks it). Dimensions are given by name, in the order the
//! caller's objectives use; `PairRecord::labels[k]` belongs to `dims[k]`. Generic records may
//! carry more dimensions than requested; those are not read.
//!
//! Strict by default: the first malformed line is an `Err` naming the file, the line and the
//! field. With `skip_invalid` the reader skips such lines, counts them in [`ReadReport`] and keeps
//! the first few messages; nothing is dropped without being counted. Blank lines are counted
//! too. I/O errors always end the stream with an error. A line longer than the reader's cap
//! ([`crate::DEFAULT_MAX_LINE_BYTES`], see [`PairReader::max_line_bytes`]) is a malformed line,
//! refused before it is parsed.
//!
//! Two things a valid file can hold are not errors but are reported:
//!
//! - a pair whose two responses are identical ([`same_responses`]) carries no preference: it is
//!   dropped and counted ([`ReadReport::dropped_identical`]);
//! - a generic record's label key (`prefs.<key>`, `scores.<key>`) that is none of the requested
//!   dimensions is not read, and is listed with the line where it first appears
//!   ([`ReadReport::unknown_label_keys`]), so a typo such as `helpfull` can be warned about
//!   instead of leaving a dimension silently unlabelled.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::formats::trl::{self, ChatTurn, TrlRow};
use crate::formats::{
    parse_record, record_error, FileFormat, FileSource, LabelSource, RawRecord, Records,
};
use crate::jsonl::Lines;
use crate::DataError;

/// A preference pair with one label per requested dimension: what the DPO trainer consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRecord {
    /// The prompt (for HH-RLHF, the dialogue up to and including the last `"\n\nAssistant:"`).
    pub prompt: String,
    /// The first response.
    pub response_0: String,
    /// The second response.
    pub response_1: String,
    /// `labels[k]` ∈ {+1, −1, 0} for dimension `dims[k]`: +1 if `response_0` wins, −1 if
    /// `response_1` wins, 0 if unlabelled (masked).
    pub labels: Vec<i8>,
    /// `scores[k]`: the raw gold scores `[s_0, s_1]` of dimension `dims[k]`, where the file has
    /// them (generic schema only).
    pub scores: Vec<Option<[f64; 2]>>,
    /// Whether response 0 and response 1 are safe, where the file says so (PKU-SafeRLHF's
    /// `is_response_{0,1}_safe`, the generic schema's optional `safe`); cost models use them
    /// for safe-rlhf's sign terms.
    pub safety: Option<[bool; 2]>,
    /// The harm severity levels (0–3) of response 0 and response 1, where the file gives them
    /// (PKU-SafeRLHF's `response_{0,1}_severity_level`).
    pub severity: Option<[u8; 2]>,
    /// The prompt as a conversation, where the file gives more than one user message (TRL's
    /// conversational form with a system message or earlier turns); `prompt` then holds it as
    /// a transcript. `None`: the prompt is one user message, `prompt`.
    pub chat: Option<Vec<ChatTurn>>,
    /// The 1-based line (parquet: row) the record came from.
    pub line: usize,
}

/// A record of the generic N-dimension schema, as written to and read from JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericPair {
    /// The prompt.
    pub prompt: String,
    /// The first response.
    pub response_0: String,
    /// The second response.
    pub response_1: String,
    /// Per dimension, the index (0 or 1) of the winning response; `None` for no label.
    pub prefs: BTreeMap<String, Option<u8>>,
    /// Per dimension, the raw gold scores of response 0 and response 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<BTreeMap<String, [f64; 2]>>,
    /// Whether response 0 and response 1 are safe (optional; cost models' sign terms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe: Option<[bool; 2]>,
}

/// A record of PKU-SafeRLHF's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PkuRecord {
    /// The prompt.
    pub prompt: String,
    /// The first response.
    pub response_0: String,
    /// The second response.
    pub response_1: String,
    /// 0 or 1: the more helpful response.
    pub better_response_id: u8,
    /// 0 or 1: the safer response.
    pub safer_response_id: u8,
    /// Whether response 0 is safe.
    pub is_response_0_safe: bool,
    /// Whether response 1 is safe.
    pub is_response_1_safe: bool,
}

/// The columns of a PKU-SafeRLHF record that are read (the full schema's others are allowed).
#[derive(Deserialize)]
struct PkuRow {
    prompt: String,
    response_0: String,
    response_1: String,
    better_response_id: u8,
    safer_response_id: u8,
    is_response_0_safe: bool,
    is_response_1_safe: bool,
    #[serde(default)]
    response_0_severity_level: Option<u8>,
    #[serde(default)]
    response_1_severity_level: Option<u8>,
}

#[derive(Deserialize)]
struct HhRecord {
    chosen: String,
    rejected: String,
}

/// Which schema a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairFormat {
    /// The project's generic N-dimension schema.
    Generic,
    /// PKU-SafeRLHF (`better_response_id`, `safer_response_id`).
    PkuSaferlhf,
    /// Anthropic HH-RLHF (`chosen`, `rejected`); exactly one dimension.
    HhRlhf,
    /// TRL's `prompt`/`chosen`/`rejected`, standard or conversational; exactly one dimension.
    Trl,
}

impl PairFormat {
    /// The schema's name in messages.
    pub fn display_name(self) -> &'static str {
        match self {
            PairFormat::Generic => "generic",
            PairFormat::PkuSaferlhf => "PKU-SafeRLHF",
            PairFormat::HhRlhf => "HH-RLHF",
            PairFormat::Trl => "TRL",
        }
    }
}

/// How to read a pair file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// The schema.
    pub format: PairFormat,
    /// Dimension names, in objective order. PKU-SafeRLHF knows `helpful` and `harmless`;
    /// HH-RLHF and TRL take exactly one name (their single label); the generic schema takes
    /// any. A `labels` mapping ([`load_pair_file`]) lifts these rules.
    pub dims: Vec<String>,
    /// Skip (and count) malformed lines (parquet: rows) instead of failing on the first one.
    pub skip_invalid: bool,
}

/// What a reader saw. After a full pass, `records + skipped + blank_lines + dropped_identical`
/// is the number of lines (parquet: rows) in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Records returned.
    pub records: usize,
    /// Malformed lines skipped (only with `skip_invalid`).
    pub skipped: usize,
    /// Empty or whitespace-only lines.
    pub blank_lines: usize,
    /// Valid records dropped because their two responses are identical ([`same_responses`]).
    pub dropped_identical: usize,
    /// Label keys of generic records that name none of the requested dimensions, in order of
    /// first appearance (generic schema only; PKU-SafeRLHF and HH-RLHF have fixed keys).
    pub unknown_label_keys: Vec<UnknownLabelKey>,
    /// The first [`ReadReport::KEPT_ERRORS`] skip messages, each naming file, line and field.
    pub first_errors: Vec<String>,
    /// Per dimension, how many returned records carry a non-zero label.
    pub labelled: Vec<usize>,
}

impl ReadReport {
    /// How many skip messages are kept.
    pub const KEPT_ERRORS: usize = 10;

    /// How many distinct unknown label keys are listed (a file with a free-form key per
    /// record must not grow the report without bound).
    pub const KEPT_UNKNOWN_KEYS: usize = 32;
}

/// A label key that is none of the requested dimensions: a typo (`helpfull`) or a dimension
/// the caller does not train. Its values were not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownLabelKey {
    /// The key's field path, `prefs.<key>` or `scores.<key>`.
    pub field: String,
    /// The 1-based line of its first appearance.
    pub first_line: usize,
    /// Records that carry it.
    pub records: usize,
    /// A requested dimension at most two edits away (the likely intended name), if any.
    pub did_you_mean: Option<String>,
}

impl std::fmt::Display for UnknownLabelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "label key `{}` (first on line {}, in {} record(s)) is not a requested dimension",
            self.field, self.first_line, self.records
        )?;
        match &self.did_you_mean {
            Some(d) => write!(f, "; did you mean `{d}`?"),
            None => Ok(()),
        }
    }
}

/// Whether a pair's two responses are the same. Such a pair says nothing about which response
/// is better (and leaves DPO's divergence range empty), so every consumer drops and counts it
/// by this one rule: pair generation and the pair readers compare the texts, DPO compares the
/// token sequences it built (two texts cut to the same tokens are the same pair to it).
pub fn same_responses<T: PartialEq + ?Sized>(response_0: &T, response_1: &T) -> bool {
    response_0 == response_1
}

/// Levenshtein distance of two short keys, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// A streaming pair reader; iterate it for `Result<PairRecord, DataError>`.
#[derive(Debug)]
pub struct PairReader<R> {
    records: Records<R>,
    opts: ReadOptions,
    /// Where each of `opts.dims` takes its label.
    sources: Vec<LabelSource>,
    report: ReadReport,
}

/// Unknown label keys of one record: (field path, key).
type RecordKeys = Vec<(String, String)>;

/// Opens `path` for streaming.
pub fn open_pairs(
    path: &Path,
    opts: ReadOptions,
) -> Result<PairReader<BufReader<File>>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_pairs(BufReader::new(file), path, opts)
}

/// Reads JSON Lines pairs from any buffered reader; `name` stands for the file in error
/// messages.
pub fn read_pairs<R: BufRead>(
    reader: R,
    name: impl Into<PathBuf>,
    opts: ReadOptions,
) -> Result<PairReader<R>, DataError> {
    PairReader::new(Records::Lines(Lines::new(reader, name.into())), opts, &BTreeMap::new())
}

/// Opens a pair file stored as `file_format` ([`FileFormat::Auto`]: by its extension), with
/// `labels` mapping objectives to the file's label columns (empty: the schema's own rule; see
/// [`LabelSource::resolve`]).
pub fn open_pair_file(
    path: &Path,
    file_format: FileFormat,
    labels: &BTreeMap<String, String>,
    opts: ReadOptions,
) -> Result<PairReader<FileSource>, DataError> {
    PairReader::new(crate::formats::open_records(path, file_format)?, opts, labels)
}

/// [`open_pair_file`] of a file held in memory; `name` stands for it in errors and, with
/// [`FileFormat::Auto`], gives its extension.
pub fn read_pair_bytes(
    bytes: Vec<u8>,
    name: impl Into<PathBuf>,
    file_format: FileFormat,
    labels: &BTreeMap<String, String>,
    opts: ReadOptions,
) -> Result<PairReader<FileSource>, DataError> {
    let records = crate::formats::records_from_bytes(bytes, name.into(), file_format)?;
    PairReader::new(records, opts, labels)
}

/// Reads a whole pair file of any [`FileFormat`]; returns the records and the report.
pub fn load_pair_file(
    path: &Path,
    file_format: FileFormat,
    labels: &BTreeMap<String, String>,
    opts: ReadOptions,
) -> Result<(Vec<PairRecord>, ReadReport), DataError> {
    let mut reader = open_pair_file(path, file_format, labels, opts)?;
    let records = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((records, reader.report().clone()))
}

/// Reads a whole file, its format chosen by the extension (`.parquet`, `.gz`, else JSON Lines)
/// and its labels by the schema's own rule; returns the records and the report.
pub fn load_pairs(
    path: &Path,
    opts: ReadOptions,
) -> Result<(Vec<PairRecord>, ReadReport), DataError> {
    load_pair_file(path, FileFormat::Auto, &BTreeMap::new(), opts)
}

impl<R: BufRead> PairReader<R> {
    fn new(
        records: Records<R>,
        opts: ReadOptions,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, DataError> {
        let setting =
            |m: String| Err(DataError::Setting { setting: "dims".to_owned(), message: m });
        if opts.dims.is_empty() {
            return setting(
                "no dimensions given\nhint: name one per objective, e.g. helpful, harmless".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for d in &opts.dims {
            if !seen.insert(d) {
                return setting(format!("dimension {d:?} is listed twice"));
            }
        }
        let sources = LabelSource::resolve(opts.format, &opts.dims, labels)?;
        let report = ReadReport { labelled: vec![0; opts.dims.len()], ..Default::default() };
        Ok(PairReader { records, opts, sources, report })
    }

    /// Sets the cap on one line's length in bytes (default [`crate::DEFAULT_MAX_LINE_BYTES`]):
    /// a longer line is a malformed line naming the file, the line and the cap, found before
    /// more than the cap is buffered. In parquet files it caps the bytes of a row's strings.
    pub fn max_line_bytes(mut self, cap: usize) -> Self {
        self.records.set_max_bytes(cap);
        self
    }

    /// Counts so far (complete once the iterator is exhausted).
    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// Records the unknown label keys of the record on `line`.
    fn note_unknown_keys(&mut self, line: usize, keys: RecordKeys) {
        for (field, key) in keys {
            let known = &mut self.report.unknown_label_keys;
            if let Some(k) = known.iter_mut().find(|k| k.field == field) {
                k.records += 1;
            } else if known.len() < ReadReport::KEPT_UNKNOWN_KEYS {
                let did_you_mean = self
                    .opts
                    .dims
                    .iter()
                    .map(|d| (edit_distance(&key, d), d))
                    .filter(|&(n, _)| n <= 2)
                    .min()
                    .map(|(_, d)| d.clone());
                known.push(UnknownLabelKey { field, first_line: line, records: 1, did_you_mean });
            }
        }
    }

    fn err(&self, line: usize, field: &str, message: String) -> DataError {
        let (path, unit) = (self.records.path(), self.records.unit());
        record_error(path, unit, line, Some(field.to_owned()), message)
    }

    fn winner(&self, line: usize, field: &str, id: u8) -> Result<i8, DataError> {
        match id {
            0 => Ok(1),
            1 => Ok(-1),
            other => Err(self.err(line, field, format!("must be 0 or 1, got {other}"))),
        }
    }

    /// The labels of a record with one preference (response 0 chosen): +1 where the file's
    /// `chosen` labels the dimension, 0 elsewhere.
    fn chosen_labels(&self) -> Vec<i8> {
        self.sources.iter().map(|s| i8::from(*s == LabelSource::Chosen)).collect()
    }

    /// Parses one record; also returns its unknown label keys.
    fn parse(&self, raw: &RawRecord) -> Result<(PairRecord, RecordKeys), DataError> {
        let path = self.records.path();
        let number = raw.number();
        let k = self.opts.dims.len();
        let mut unknown = Vec::new();
        let mut severity = None;
        let mut chat = None;
        let (prompt, response_0, response_1, labels, scores, safety) = match self.opts.format {
            PairFormat::Generic => {
                let g: GenericPair = parse_record(path, raw)?;
                let mut labels = Vec::with_capacity(k);
                let mut scores = Vec::with_capacity(k);
                for source in &self.sources {
                    let LabelSource::Prefs(d) = source else {
                        labels.push(0);
                        scores.push(None);
                        continue;
                    };
                    labels.push(match g.prefs.get(d) {
                        None | Some(None) => 0,
                        Some(Some(id)) => self.winner(number, &format!("prefs.{d}"), *id)?,
                    });
                    let s = g.scores.as_ref().and_then(|s| s.get(d)).copied();
                    if let Some(s) = s {
                        if !s.iter().all(|v| v.is_finite()) {
                            return Err(self.err(
                                number,
                                &format!("scores.{d}"),
                                format!("scores must be finite, got {s:?}"),
                            ));
                        }
                    }
                    scores.push(s);
                }
                let unrequested = |key: &&String| {
                    !self.sources.iter().any(|s| matches!(s, LabelSource::Prefs(p) if p == *key))
                };
                for key in g.prefs.keys().filter(unrequested) {
                    unknown.push((format!("prefs.{key}"), key.clone()));
                }
                for key in g.scores.iter().flat_map(|s| s.keys()).filter(unrequested) {
                    unknown.push((format!("scores.{key}"), key.clone()));
                }
                (g.prompt, g.response_0, g.response_1, labels, scores, g.safe)
            }
            PairFormat::PkuSaferlhf => {
                let p: PkuRow = parse_record(path, raw)?;
                let better = self.winner(number, "better_response_id", p.better_response_id)?;
                let safer = self.winner(number, "safer_response_id", p.safer_response_id)?;
                let labels = self
                    .sources
                    .iter()
                    .map(|d| match d {
                        LabelSource::Better => better,
                        LabelSource::Safer => safer,
                        _ => 0,
                    })
                    .collect();
                severity = self.severity(
                    number,
                    p.response_0_severity_level,
                    p.response_1_severity_level,
                )?;
                let safety = Some([p.is_response_0_safe, p.is_response_1_safe]);
                (p.prompt, p.response_0, p.response_1, labels, vec![None; k], safety)
            }
            PairFormat::HhRlhf => {
                let h: HhRecord = parse_record(path, raw)?;
                let (prompt, chosen) = split_hh(&h.chosen).ok_or_else(|| {
                    self.err(number, "chosen", format!("has no {HH_MARKER:?} turn"))
                })?;
                let (prompt_r, rejected) = split_hh(&h.rejected).ok_or_else(|| {
                    self.err(number, "rejected", format!("has no {HH_MARKER:?} turn"))
                })?;
                if prompt != prompt_r {
                    return Err(self.err(
                        number,
                        "rejected",
                        "its dialogue before the last assistant turn differs from chosen's"
                            .to_owned(),
                    ));
                }
                let labels = self.chosen_labels();
                (
                    prompt.to_owned(),
                    chosen.to_owned(),
                    rejected.to_owned(),
                    labels,
                    vec![None; k],
                    None,
                )
            }
            PairFormat::Trl => {
                let row: TrlRow = parse_record(path, raw)?;
                let pair =
                    trl::pair(row).map_err(|(field, message)| self.err(number, &field, message))?;
                chat = pair.chat;
                (pair.prompt, pair.chosen, pair.rejected, self.chosen_labels(), vec![None; k], None)
            }
        };
        let record = PairRecord {
            prompt,
            response_0,
            response_1,
            labels,
            scores,
            safety,
            severity,
            chat,
            line: number,
        };
        Ok((record, unknown))
    }

    /// PKU-SafeRLHF's two severity levels: both or neither, each 0–3.
    fn severity(
        &self,
        number: usize,
        level_0: Option<u8>,
        level_1: Option<u8>,
    ) -> Result<Option<[u8; 2]>, DataError> {
        for (field, level) in
            [("response_0_severity_level", level_0), ("response_1_severity_level", level_1)]
        {
            if let Some(l) = level.filter(|&l| l > 3) {
                return Err(self.err(number, field, format!("must be 0 to 3, got {l}")));
            }
        }
        match (level_0, level_1) {
            (Some(a), Some(b)) => Ok(Some([a, b])),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(self.err(
                number,
                "response_0_severity_level",
                "is missing but response_1_severity_level is given; give both or neither".into(),
            )),
            (Some(_), None) => Err(self.err(
                number,
                "response_1_severity_level",
                "is missing but response_0_severity_level is given; give both or neither".into(),
            )),
        }
    }
}

/// The turn marker that ends an HH-RLHF prompt.
const HH_MARKER: &str = "\n\nAssistant:";

/// Splits an HH-RLHF dialogue after its last assistant marker: (prompt, response). The response
/// keeps its text as written, without the single space that follows the marker.
fn split_hh(dialogue: &str) -> Option<(&str, &str)> {
    let at = dialogue.rfind(HH_MARKER)? + HH_MARKER.len();
    let (prompt, rest) = dialogue.split_at(at);
    Some((prompt, rest.strip_prefix(' ').unwrap_or(rest)))
}

impl<R: BufRead> Iterator for PairReader<R> {
    type Item = Result<PairRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let result = match self.records.next()? {
                Ok(raw) if raw.is_blank() => {
                    self.report.blank_lines += 1;
                    continue;
                }
                Ok(raw) => self.parse(&raw),
                // The stream cannot go on after these: the file could not be read or decoded.
                Err(e @ (DataError::Io { .. } | DataError::Model { .. })) => return Some(Err(e)),
                Err(e) => Err(e),
            };
            match result {
                Ok((rec, unknown)) => {
                    self.note_unknown_keys(rec.line, unknown);
                    if same_responses(&rec.response_0, &rec.response_1) {
                        self.report.dropped_identical += 1;
                        continue;
                    }
                    self.report.records += 1;
                    for (n, t) in self.report.labelled.iter_mut().zip(&rec.labels) {
                        *n += usize::from(*t != 0);
                    }
                    return Some(Ok(rec));
                }
                Err(e) if self.opts.skip_invalid => {
                    self.report.skipped += 1;
                    if self.report.first_errors.len() < ReadReport::KEPT_ERRORS {
                        self.report.first_errors.push(e.to_string());
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
