//! A streaming JSONL line reader shared by the loaders: it hands out one line at a time with
//! its 1-based number, turns bad UTF-8 and I/O failures into typed errors naming the file and
//! line, and never panics on hostile bytes.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::DataError;

/// One raw line: its number and text (without the line ending).
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) number: usize,
    pub(crate) text: String,
}

/// Reads `reader` line by line.
#[derive(Debug)]
pub(crate) struct Lines<R> {
    reader: R,
    path: PathBuf,
    number: usize,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, path: PathBuf) -> Self {
        Self { reader, path, number: 0, buf: Vec::new(), done: false }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    /// `Err` for an unreadable line; an I/O error ends the stream.
    type Item = Result<Line, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(_) => {
                self.number += 1;
                while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                    self.buf.pop();
                }
                Some(match std::str::from_utf8(&self.buf) {
                    Ok(text) => Ok(Line { number: self.number, text: text.to_owned() }),
                    Err(e) => Err(DataError::Record {
                        path: self.path.clone(),
                        line: self.number,
                        field: None,
                        message: format!(
                            "not valid UTF-8 (byte {} of the line)\nhint: JSONL files must be UTF-8",
                            e.valid_up_to() + 1
                        ),
                    }),
                })
            }
            Err(e) => {
                self.done = true;
                Some(Err(DataError::io(&self.path, e)))
            }
        }
    }
}

/// Parses one line into `T`, naming the failing field by its path (`prefs.harmless`).
pub(crate) fn parse_line<T: serde::de::DeserializeOwned>(
    path: &Path,
    line: &Line,
) -> Result<T, DataError> {
    if let Some(message) = not_json_lines(&line.text) {
        return Err(DataError::Record {
            path: path.to_owned(),
            line: line.number,
            field: None,
            message,
        });
    }
    let mut de = serde_json::Deserializer::from_str(&line.text);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        DataError::Record {
            path: path.to_owned(),
            line: line.number,
            field: (field != "." && !field.is_empty()).then_some(field),
            message: format!("{inner}"),
        }
    })?;
    de.end().map_err(|e| DataError::Record {
        path: path.to_owned(),
        line: line.number,
        field: None,
        message: format!("{e}\nhint: one JSON object per line"),
    })?;
    Ok(value)
}

/// A message when a line shows that the file is JSON but not JSON Lines: one JSON array (on
/// one line, or pretty-printed so that its first line is `[`), or a pretty-printed object.
/// Records are objects, and serde would otherwise read an array positionally into a struct,
/// or fail with "field `[0]`: invalid type".
fn not_json_lines(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        Some(
            "is a JSON array, not an object: the file looks like one JSON array, but JSON Lines \
             holds one object per line\nhint: convert it with `jq -c '.[]' FILE > FILE.jsonl`"
                .to_owned(),
        )
    } else if trimmed == "{" {
        Some(
            "opens an object that does not end on this line: the file looks like pretty-printed \
             JSON, but JSON Lines holds one whole object per line\nhint: convert it with \
             `jq -c . FILE > FILE.jsonl`"
                .to_owned(),
        )
    } else {
        None
    }
}
