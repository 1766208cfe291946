//! A streaming JSONL line reader shared by the loaders: it hands out one line at a time with
//! its 1-based number, turns bad UTF-8 and I/O failures into typed errors naming the file and
//! line, and never panics on hostile bytes.
//!
//! Memory is bounded by a per-line byte cap ([`DEFAULT_MAX_LINE_BYTES`] unless the caller sets
//! another): a longer line is an error naming the file, the line and the cap as soon as its
//! first cap + 1 bytes are read, before anything parses or tokenises it. Its remaining bytes
//! are skipped without being stored only if the caller asks for the next line. (A 50 MB line
//! used to cost 27–37 s and 5.5 GB before a later length check dropped it.)

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::DataError;

/// The default cap on one JSONL line, in bytes (line ending excluded): 1 MiB. The longest line
/// of the bundled data is under 3 KB; a record near the cap is far longer than any model's
/// context.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

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
    max_line_bytes: usize,
    /// The previous line was over the cap and its tail is still unread.
    skip_rest: bool,
}

/// What one pass of [`Lines::read_line`] found.
enum Read {
    /// End of input before any byte.
    End,
    /// A whole line is in the buffer.
    Line,
    /// The line passed the cap; with `rest_unread`, its tail is still in the reader.
    TooLong { rest_unread: bool },
}

impl<R: BufRead> Lines<R> {
    /// A reader with the default line cap.
    pub(crate) fn new(reader: R, path: PathBuf) -> Self {
        Self::with_max_line_bytes(reader, path, DEFAULT_MAX_LINE_BYTES)
    }

    /// A reader that refuses lines longer than `max_line_bytes` (line ending excluded).
    pub(crate) fn with_max_line_bytes(reader: R, path: PathBuf, max_line_bytes: usize) -> Self {
        Self {
            reader,
            path,
            number: 0,
            buf: Vec::new(),
            done: false,
            max_line_bytes,
            skip_rest: false,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the cap for the lines not read yet.
    pub(crate) fn set_max_line_bytes(&mut self, max_line_bytes: usize) {
        self.max_line_bytes = max_line_bytes;
    }

    /// Discards input up to and including the next newline, storing nothing.
    fn skip_line(&mut self) -> std::io::Result<()> {
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = available.len();
                    self.reader.consume(n);
                }
            }
        }
    }

    /// Reads one line into `buf` (newline included), stopping once it holds more than the
    /// cap allows (the line's text plus a `\r\n` ending), so `buf` never grows past cap + 2.
    fn read_line(&mut self) -> std::io::Result<Read> {
        self.buf.clear();
        let limit = self.max_line_bytes.saturating_add(2);
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(if self.buf.is_empty() {
                    Read::End
                } else if self.text_len() > self.max_line_bytes {
                    Read::TooLong { rest_unread: false }
                } else {
                    Read::Line
                });
            }
            let (take, ends) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let room = limit - self.buf.len();
            if take > room {
                // The buffer fills up with no newline in it: more than the cap of text.
                self.buf.extend_from_slice(&available[..room]);
                self.reader.consume(room);
                return Ok(Read::TooLong { rest_unread: true });
            }
            self.buf.extend_from_slice(&available[..take]);
            self.reader.consume(take);
            if ends {
                return Ok(if self.text_len() > self.max_line_bytes {
                    Read::TooLong { rest_unread: false }
                } else {
                    Read::Line
                });
            }
        }
    }

    /// Length of the buffered line without its ending (`\n`, `\r\n`).
    fn text_len(&self) -> usize {
        let mut n = self.buf.len();
        if n > 0 && self.buf[n - 1] == b'\n' {
            n -= 1;
            if n > 0 && self.buf[n - 1] == b'\r' {
                n -= 1;
            }
        }
        n
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    /// `Err` for an unreadable line; an I/O error ends the stream.
    type Item = Result<Line, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if std::mem::take(&mut self.skip_rest) {
            if let Err(e) = self.skip_line() {
                self.done = true;
                return Some(Err(DataError::io(&self.path, e)));
            }
        }
        match self.read_line() {
            Ok(Read::End) => {
                self.done = true;
                None
            }
            Ok(Read::TooLong { rest_unread }) => {
                self.number += 1;
                self.skip_rest = rest_unread;
                self.buf = Vec::new(); // give the cap's worth of memory back
                Some(Err(DataError::Record {
                    path: self.path.clone(),
                    line: self.number,
                    field: None,
                    message: format!(
                        "the line is longer than {} bytes, the reader's cap per line; it was \
                         not parsed\nhint: a record this long is far beyond any model's \
                         context; remove it, or raise the cap where the reader is built",
                        self.max_line_bytes
                    ),
                }))
            }
            Ok(Read::Line) => {
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
