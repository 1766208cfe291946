//! Pair files in the forms people have them: how a file is stored ([`FileFormat`]: JSON
//! Lines, gzip-compressed JSON Lines, parquet) and which of its columns label which objective
//! ([`LabelSource`], from a `labels` mapping). The schemas themselves ([`crate::PairFormat`])
//! are read by [`crate::pairs`]; this module hands it rows.
//!
//! - **JSON Lines** (`.jsonl` and any other name): one object per line, through the line
//!   reader with its per-line byte cap.
//! - **gzip JSON Lines** (`.jsonl.gz`, `.gz`): the same reader over a streaming gzip decoder
//!   (flate2's pure-Rust miniz_oxide backend); line numbers count lines of the decompressed
//!   text, and the line cap bounds memory however well the file compresses. A corrupt stream
//!   ends the read with an I/O error naming the file.
//! - **parquet** (`.parquet`): rows through the parquet crate's record reader, each row turned
//!   into a JSON object (strings, numbers, booleans, nulls, lists and structs map to their JSON
//!   counterparts; a binary column must hold UTF-8; a non-finite float is an error naming its
//!   column). Errors name the 1-based row ([`crate::DataError::Row`]). The reader's cap applies
//!   to the bytes of a row's strings. Only snappy-compressed and uncompressed files are read
//!   (pyarrow's and `datasets`' default is snappy); another codec is an error that says so.
//!
//! The format is chosen by the file's extension ([`FileFormat::Auto`]) unless given.
//!
//! Nothing here panics on hostile bytes: the parquet crate is additionally run under
//! `catch_unwind`, so that a panic inside it on a malformed file becomes an error naming the
//! file (the default panic hook may still print its message to stderr).

mod parquet_rows;
pub mod trl;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jsonl::{parse_line, Line, Lines};
use crate::pairs::PairFormat;
use crate::DataError;

pub(crate) use parquet_rows::ParquetRows;

/// How a pair file is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// By the file name: `.parquet` is parquet, `.gz` gzip JSON Lines, anything else JSON Lines.
    #[default]
    Auto,
    /// JSON Lines, one object per line.
    Jsonl,
    /// gzip-compressed JSON Lines.
    JsonlGz,
    /// Apache parquet.
    Parquet,
}

impl FileFormat {
    /// The concrete format of `path`: `self` unless it is [`FileFormat::Auto`], then by the
    /// extension (case-insensitive).
    pub fn resolve(self, path: &Path) -> FileFormat {
        if self != FileFormat::Auto {
            return self;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("parquet") => FileFormat::Parquet,
            Some("gz") => FileFormat::JsonlGz,
            _ => FileFormat::Jsonl,
        }
    }

    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Auto => "auto",
            FileFormat::Jsonl => "jsonl",
            FileFormat::JsonlGz => "jsonl-gz",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Where one dimension's label comes from in a file of a given schema: the value of a `labels`
/// entry `objective: column`, parsed by [`LabelSource::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// The file does not label this dimension: t = 0 (masked) on each of its records.
    Unlabelled,
    /// Generic schema: `prefs.<key>` (and the scores `scores.<key>`).
    Prefs(String),
    /// PKU-SafeRLHF: `better_response_id`.
    Better,
    /// PKU-SafeRLHF: `safer_response_id`.
    Safer,
    /// HH-RLHF and TRL: `chosen`, the record's one preference (t = +1: response 0 is chosen).
    Chosen,
}

impl LabelSource {
    /// The label source of each of `dims` in a file of schema `format`.
    ///
    /// Without a mapping (`labels` empty) each schema's own rule applies: generic reads
    /// `prefs.<dim>`; PKU-SafeRLHF knows `helpful` (`better_response_id`) and `harmless`
    /// (`safer_response_id`); HH-RLHF and TRL files label exactly one dimension. With a
    /// mapping, each entry `dim: column` names the column that labels `dim` (`prefs.<key>`,
    /// `better_response_id`, `safer_response_id` or `chosen`, by schema) and the dimensions it
    /// leaves out are unlabelled in this file, so that two files can label two objectives.
    pub fn resolve(
        format: PairFormat,
        dims: &[String],
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<LabelSource>, DataError> {
        let setting = |message: String| DataError::Setting { setting: "labels".into(), message };
        if labels.is_empty() {
            return dims
                .iter()
                .map(|d| match format {
                    PairFormat::Generic => Ok(LabelSource::Prefs(d.clone())),
                    PairFormat::PkuSaferlhf => match d.as_str() {
                        "helpful" => Ok(LabelSource::Better),
                        "harmless" => Ok(LabelSource::Safer),
                        other => Err(DataError::Setting {
                            setting: "dims".into(),
                            message: format!(
                                "PKU-SafeRLHF has no dimension {other:?}\nhint: use helpful \
                                 (better_response_id) and/or harmless (safer_response_id), or \
                                 map the objective to a column with `labels`, e.g. {other}: \
                                 safer_response_id"
                            ),
                        }),
                    },
                    PairFormat::HhRlhf | PairFormat::Trl if dims.len() == 1 => {
                        Ok(LabelSource::Chosen)
                    }
                    PairFormat::HhRlhf | PairFormat::Trl => Err(DataError::Setting {
                        setting: "dims".into(),
                        message: format!(
                            "{} files carry one label but {} dimensions were given\nhint: name \
                             the one dimension the file labels with `labels`, e.g. {}: chosen",
                            format.display_name(),
                            dims.len(),
                            dims[0]
                        ),
                    }),
                })
                .collect();
        }
        for key in labels.keys() {
            if !dims.contains(key) {
                return Err(setting(format!(
                    "`{key}` is not one of the objectives ({})\nhint: the keys of `labels` are \
                     objective names, its values the file's columns",
                    dims.join(", ")
                )));
            }
        }
        dims.iter()
            .map(|d| {
                let Some(column) = labels.get(d) else {
                    return Ok(LabelSource::Unlabelled);
                };
                let source = match (format, column.as_str()) {
                    (PairFormat::Generic, c) => c
                        .strip_prefix("prefs.")
                        .filter(|k| !k.is_empty())
                        .map(|k| LabelSource::Prefs(k.to_owned())),
                    (PairFormat::PkuSaferlhf, "better_response_id") => Some(LabelSource::Better),
                    (PairFormat::PkuSaferlhf, "safer_response_id") => Some(LabelSource::Safer),
                    (PairFormat::HhRlhf | PairFormat::Trl, "chosen") => Some(LabelSource::Chosen),
                    _ => None,
                };
                source.ok_or_else(|| {
                    let valid = match format {
                        PairFormat::Generic => "`prefs.<key>` (a key of the records' prefs)",
                        PairFormat::PkuSaferlhf => "`better_response_id` or `safer_response_id`",
                        PairFormat::HhRlhf | PairFormat::Trl => {
                            "`chosen` (the record's one preference)"
                        }
                    };
                    setting(format!(
                        "`{d}: {column}`: {} files have no label column {column:?}\nhint: use \
                         {valid}",
                        format.display_name()
                    ))
                })
            })
            .collect()
    }
}

/// Whether errors count lines (JSON Lines) or rows (parquet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Line,
    Row,
}

/// The error for record `number` of `path`.
pub(crate) fn record_error(
    path: &Path,
    unit: Unit,
    number: usize,
    field: Option<String>,
    message: String,
) -> DataError {
    match unit {
        Unit::Line => DataError::Record { path: path.to_owned(), line: number, field, message },
        Unit::Row => DataError::Row { path: path.to_owned(), row: number, field, message },
    }
}

/// One record as read: a line of text, or a parquet row already turned into JSON.
#[derive(Debug)]
pub(crate) enum RawRecord {
    Line(Line),
    Row { number: usize, value: serde_json::Value },
}

impl RawRecord {
    pub(crate) fn number(&self) -> usize {
        match self {
            RawRecord::Line(l) => l.number,
            RawRecord::Row { number, .. } => *number,
        }
    }

    /// Empty or whitespace-only (lines only).
    pub(crate) fn is_blank(&self) -> bool {
        matches!(self, RawRecord::Line(l) if l.text.trim().is_empty())
    }
}

/// Parses a record into `T`, naming the failing field by its path (`prefs.harmless`).
pub(crate) fn parse_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    record: &RawRecord,
) -> Result<T, DataError> {
    match record {
        RawRecord::Line(line) => parse_line(path, line),
        RawRecord::Row { number, value } => serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            DataError::Row {
                path: path.to_owned(),
                row: *number,
                field: (field != "." && !field.is_empty()).then_some(field),
                message: e.into_inner().to_string(),
            }
        }),
    }
}

/// The records of a file, whatever its format.
#[derive(Debug)]
pub(crate) enum Records<R> {
    Lines(Lines<R>),
    Parquet(Box<ParquetRows>),
}

impl<R: BufRead> Records<R> {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Records::Lines(l) => l.path(),
            Records::Parquet(p) => p.path(),
        }
    }

    pub(crate) fn unit(&self) -> Unit {
        match self {
            Records::Lines(_) => Unit::Line,
            Records::Parquet(_) => Unit::Row,
        }
    }

    /// Sets the cap on one record's bytes (a line's length, a row's string bytes).
    pub(crate) fn set_max_bytes(&mut self, cap: usize) {
        match self {
            Records::Lines(l) => l.set_max_line_bytes(cap),
            Records::Parquet(p) => p.set_max_row_bytes(cap),
        }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    /// `Err(DataError::Io)` (or a parquet decoding failure) ends the stream; other errors are
    /// one bad record.
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Lines(l) => l.next().map(|r| r.map(RawRecord::Line)),
            Records::Parquet(p) => p.next(),
        }
    }
}

/// The byte source of [`crate::open_pair_file`]'s line reader: a plain file, a gzip decoder
/// over one, or bytes in memory (unused for parquet, whose rows have their own reader).
pub struct FileSource(Box<dyn BufRead>);

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileSource")
    }
}

impl std::io::Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for FileSource {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.0.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.0.consume(amount)
    }
}

fn lines(source: impl BufRead + 'static, path: PathBuf) -> Records<FileSource> {
    Records::Lines(Lines::new(FileSource(Box::new(source)), path))
}

/// The records of `path` stored as `format` (resolved already).
pub(crate) fn open_records(
    path: &Path,
    format: FileFormat,
) -> Result<Records<FileSource>, DataError> {
    let open = || std::fs::File::open(path).map_err(|e| DataError::io(path, e));
    Ok(match format.resolve(path) {
        FileFormat::Parquet => Records::Parquet(Box::new(ParquetRows::open(path)?)),
        FileFormat::JsonlGz => {
            let gz = flate2::read::MultiGzDecoder::new(open()?);
            lines(std::io::BufReader::new(gz), path.to_owned())
        }
        FileFormat::Jsonl | FileFormat::Auto => {
            lines(std::io::BufReader::new(open()?), path.to_owned())
        }
    })
}

/// The records of an in-memory file `bytes` stored as `format` (`name` stands for the file in
/// errors and, with [`FileFormat::Auto`], gives the extension).
pub(crate) fn records_from_bytes(
    bytes: Vec<u8>,
    name: PathBuf,
    format: FileFormat,
) -> Result<Records<FileSource>, DataError> {
    Ok(match format.resolve(&name) {
        FileFormat::Parquet => Records::Parquet(Box::new(ParquetRows::from_bytes(bytes, name)?)),
        FileFormat::JsonlGz => {
            let gz = flate2::read::MultiGzDecoder::new(std::io::Cursor::new(bytes));
            lines(std::io::BufReader::new(gz), name)
        }
        FileFormat::Jsonl | FileFormat::Auto => lines(std::io::Cursor::new(bytes), name),
    })
}
