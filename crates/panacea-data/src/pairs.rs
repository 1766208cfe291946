//! Streaming, strictly validated JSONL loaders for preference pairs, mapped to per-dimension
//! labels t ∈ {+1, −1, 0} (docs/method.md, §7.1).
//!
//! Three formats ([`PairFormat`]):
//!
//! - **Generic** (this project's N-dimension schema, one object per line, unknown keys rejected):
//!   `{"prompt": str, "response_0": str, "response_1": str, "prefs": {dim: 0|1|null, ...},
//!   "scores": {dim: [s_0, s_1], ...}}` where `prefs[dim]` is the index of the response that wins
//!   dimension `dim` (null or absent: no label) and the optional `scores` are the raw gold scores.
//! - **PKU-SafeRLHF**: `prompt, response_0, response_1, better_response_id, safer_response_id,
//!   is_response_0_safe, is_response_1_safe` (extra keys of the published files are allowed).
//!   Dimension `helpful` takes its winner from `better_response_id`, `harmless` from
//!   `safer_response_id`.
//! - **HH-RLHF**: `{"chosen": str, "rejected": str}`, whole dialogues. The shared prompt is
//!   everything up to and including the last `"\n\nAssistant:"`, which must be the same in both;
//!   `response_0` is the chosen continuation, so the one dimension's label is +1.
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

use crate::jsonl::{parse_line, Line, Lines};
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
    /// The 1-based line the record came from.
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
}

/// How to read a pair file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// The schema.
    pub format: PairFormat,
    /// Dimension names, in objective order. PKU-SafeRLHF knows `helpful` and `harmless`;
    /// HH-RLHF takes exactly one name (its single label); the generic schema takes any.
    pub dims: Vec<String>,
    /// Skip (and count) malformed lines instead of failing on the first one.
    pub skip_invalid: bool,
}

/// What a reader saw. After a full pass, `records + skipped + blank_lines + dropped_identical`
/// is the number of lines in the file.
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

/// Which PKU field gives a dimension's winner.
#[derive(Debug, Clone, Copy)]
enum PkuDim {
    Better,
    Safer,
}

/// A streaming pair reader; iterate it for `Result<PairRecord, DataError>`.
#[derive(Debug)]
pub struct PairReader<R> {
    lines: Lines<R>,
    opts: ReadOptions,
    pku: Vec<PkuDim>,
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

/// Reads pairs from any buffered reader; `name` stands for the file in error messages.
pub fn read_pairs<R: BufRead>(
    reader: R,
    name: impl Into<PathBuf>,
    opts: ReadOptions,
) -> Result<PairReader<R>, DataError> {
    let setting = |m: String| Err(DataError::Setting { setting: "dims".to_owned(), message: m });
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
    let mut pku = Vec::new();
    match opts.format {
        PairFormat::PkuSaferlhf => {
            for d in &opts.dims {
                pku.push(match d.as_str() {
                    "helpful" => PkuDim::Better,
                    "harmless" => PkuDim::Safer,
                    other => {
                        return setting(format!(
                            "PKU-SafeRLHF has no dimension {other:?}\nhint: use helpful \
                             (better_response_id) and/or harmless (safer_response_id)"
                        ))
                    }
                });
            }
        }
        PairFormat::HhRlhf if opts.dims.len() != 1 => {
            return setting(format!(
                "HH-RLHF files carry one label but {} dimensions were given\nhint: name the one \
                 dimension the file labels, e.g. helpful or harmless",
                opts.dims.len()
            ));
        }
        _ => {}
    }
    let report = ReadReport { labelled: vec![0; opts.dims.len()], ..Default::default() };
    Ok(PairReader { lines: Lines::new(reader, name.into()), opts, pku, report })
}

/// Reads a whole file; returns the records and the report.
pub fn load_pairs(
    path: &Path,
    opts: ReadOptions,
) -> Result<(Vec<PairRecord>, ReadReport), DataError> {
    let mut reader = open_pairs(path, opts)?;
    let records = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((records, reader.report().clone()))
}

impl<R: BufRead> PairReader<R> {
    /// Sets the cap on one line's length in bytes (default [`crate::DEFAULT_MAX_LINE_BYTES`]):
    /// a longer line is a malformed line naming the file, the line and the cap, found before
    /// more than the cap is buffered.
    pub fn max_line_bytes(mut self, cap: usize) -> Self {
        self.lines.set_max_line_bytes(cap);
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
        DataError::Record {
            path: self.lines.path().to_owned(),
            line,
            field: Some(field.to_owned()),
            message,
        }
    }

    fn winner(&self, line: usize, field: &str, id: u8) -> Result<i8, DataError> {
        match id {
            0 => Ok(1),
            1 => Ok(-1),
            other => Err(self.err(line, field, format!("must be 0 or 1, got {other}"))),
        }
    }

    /// Parses one line; also returns the record's unknown label keys.
    fn parse(&self, line: &Line) -> Result<(PairRecord, RecordKeys), DataError> {
        let path = self.lines.path();
        let k = self.opts.dims.len();
        let mut unknown = Vec::new();
        let (prompt, response_0, response_1, labels, scores, safety) = match self.opts.format {
            PairFormat::Generic => {
                let g: GenericPair = parse_line(path, line)?;
                let mut labels = Vec::with_capacity(k);
                let mut scores = Vec::with_capacity(k);
                for d in &self.opts.dims {
                    labels.push(match g.prefs.get(d) {
                        None | Some(None) => 0,
                        Some(Some(id)) => self.winner(line.number, &format!("prefs.{d}"), *id)?,
                    });
                    let s = g.scores.as_ref().and_then(|s| s.get(d)).copied();
                    if let Some(s) = s {
                        if !s.iter().all(|v| v.is_finite()) {
                            return Err(self.err(
                                line.number,
                                &format!("scores.{d}"),
                                format!("scores must be finite, got {s:?}"),
                            ));
                        }
                    }
                    scores.push(s);
                }
                let unrequested = |key: &&String| !self.opts.dims.contains(*key);
                for key in g.prefs.keys().filter(unrequested) {
                    unknown.push((format!("prefs.{key}"), key.clone()));
                }
                for key in g.scores.iter().flat_map(|s| s.keys()).filter(unrequested) {
                    unknown.push((format!("scores.{key}"), key.clone()));
                }
                (g.prompt, g.response_0, g.response_1, labels, scores, g.safe)
            }
            PairFormat::PkuSaferlhf => {
                let p: PkuRecord = parse_line(path, line)?;
                let better =
                    self.winner(line.number, "better_response_id", p.better_response_id)?;
                let safer = self.winner(line.number, "safer_response_id", p.safer_response_id)?;
                let labels = self
                    .pku
                    .iter()
                    .map(|d| match d {
                        PkuDim::Better => better,
                        PkuDim::Safer => safer,
                    })
                    .collect();
                let safety = Some([p.is_response_0_safe, p.is_response_1_safe]);
                (p.prompt, p.response_0, p.response_1, labels, vec![None; k], safety)
            }
            PairFormat::HhRlhf => {
                let h: HhRecord = parse_line(path, line)?;
                let (prompt, chosen) = split_hh(&h.chosen).ok_or_else(|| {
                    self.err(line.number, "chosen", format!("has no {HH_MARKER:?} turn"))
                })?;
                let (prompt_r, rejected) = split_hh(&h.rejected).ok_or_else(|| {
                    self.err(line.number, "rejected", format!("has no {HH_MARKER:?} turn"))
                })?;
                if prompt != prompt_r {
                    return Err(self.err(
                        line.number,
                        "rejected",
                        "its dialogue before the last assistant turn differs from chosen's"
                            .to_owned(),
                    ));
                }
                (
                    prompt.to_owned(),
                    chosen.to_owned(),
                    rejected.to_owned(),
                    vec![1],
                    vec![None],
                    None,
                )
            }
        };
        let record = PairRecord {
            prompt,
            response_0,
            response_1,
            labels,
            scores,
            safety,
            line: line.number,
        };
        Ok((record, unknown))
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
            let result = match self.lines.next()? {
                Ok(line) if line.text.trim().is_empty() => {
                    self.report.blank_lines += 1;
                    continue;
                }
                Ok(line) => self.parse(&line),
                Err(e @ DataError::Io { .. }) => return Some(Err(e)),
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
