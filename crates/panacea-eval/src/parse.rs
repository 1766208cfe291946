//! Parsing user point files for `panacea metrics`: a JSON array of arrays of numbers, or CSV
//! (one point per line, comma-separated, an optional all-text header line, `#` comments).
//!
//! A pure function of the text, so it is tested here without the CLI. Errors name the source and
//! the 1-based line of the offending row: ragged rows, a dimension that differs from the one
//! expected (the reference point's), non-numbers and non-finite values. It never panics on
//! hostile bytes; JSON is scanned by hand so that every row keeps its line number.

use crate::error::{EvalError, Result};

fn err(source: &str, line: usize, detail: impl Into<String>) -> EvalError {
    EvalError::Parse { source_name: source.to_string(), line, detail: detail.into() }
}

/// Parses `text` (JSON if its first non-blank character is `[`, CSV otherwise). With
/// `expected_dim`, every row must have exactly that many values.
pub fn parse_points(
    text: &str,
    source: &str,
    expected_dim: Option<usize>,
) -> Result<Vec<Vec<f64>>> {
    let rows = if text.trim_start().starts_with('[') {
        parse_json(text, source)?
    } else {
        parse_csv(text, source)?
    };
    if rows.is_empty() {
        return Err(err(
            source,
            1,
            "no points found (hint: give a JSON array of arrays or CSV rows)",
        ));
    }
    let expected = expected_dim.unwrap_or(rows[0].1.len());
    for (line, row) in &rows {
        if row.len() != expected {
            let why = match expected_dim {
                Some(d) => format!("row has {} values but the reference point has {d}", row.len()),
                None => {
                    format!("ragged row: {} values but the first row has {expected}", row.len())
                }
            };
            return Err(err(
                source,
                *line,
                format!("{why} (hint: one value per objective on every row)"),
            ));
        }
    }
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

fn number(token: &str, source: &str, line: usize) -> Result<f64> {
    let value: f64 = token.parse().map_err(|_| {
        err(
            source,
            line,
            format!("{token:?} is not a number (hint: objective values must be plain numbers)"),
        )
    })?;
    if !value.is_finite() {
        return Err(err(
            source,
            line,
            format!("{token:?} is not finite (hint: remove NaN/Inf points)"),
        ));
    }
    Ok(value)
}

fn parse_csv(text: &str, source: &str) -> Result<Vec<(usize, Vec<f64>)>> {
    let mut rows = Vec::new();
    let mut first_content = true;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();
        if first_content {
            first_content = false;
            let numeric = fields.iter().filter(|f| f.parse::<f64>().is_ok()).count();
            if numeric == 0 {
                continue; // a header line such as `helpful,harmless`
            }
        }
        let row = fields.iter().map(|f| number(f, source, line)).collect::<Result<Vec<f64>>>()?;
        rows.push((line, row));
    }
    Ok(rows)
}

/// A tiny scanner for `[[n, n, …], …]` that keeps line numbers.
struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
    source: &'a str,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            match b {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, want: u8, context: &str) -> Result<()> {
        match self.peek() {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(err(
                self.source,
                self.line,
                format!("expected '{}' {context}, found '{}'", want as char, b as char),
            )),
            None => Err(err(
                self.source,
                self.line,
                format!("expected '{}' {context}, found the end of the file", want as char),
            )),
        }
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b'[' | b']' | b',' | b' ' | b'\t' | b'\r' | b'\n') {
                break;
            }
            self.pos += 1;
        }
        // Token boundaries are ASCII, so the slice is on char boundaries.
        self.text.get(start..self.pos).unwrap_or("")
    }
}

fn parse_json(text: &str, source: &str) -> Result<Vec<(usize, Vec<f64>)>> {
    let mut s = Scanner { bytes: text.as_bytes(), text, pos: 0, line: 1, source };
    s.expect(b'[', "at the start of the JSON array")?;
    let mut rows = Vec::new();
    if s.peek() == Some(b']') {
        s.pos += 1;
    } else {
        loop {
            if s.peek() != Some(b'[') {
                let line = s.line;
                let tok = s.token().to_string();
                return Err(err(source, line, format!("expected a row '[…]', found {tok:?} (hint: the file must be an array of arrays of numbers)")));
            }
            s.pos += 1;
            let line = s.line;
            let mut row = Vec::new();
            if s.peek() == Some(b']') {
                return Err(err(
                    source,
                    line,
                    "empty row (hint: every point needs one value per objective)",
                ));
            }
            loop {
                s.skip_ws();
                let tline = s.line;
                let tok = s.token().to_string();
                if tok.is_empty() {
                    let found = s
                        .peek()
                        .map_or("the end of the file".to_string(), |b| format!("'{}'", b as char));
                    return Err(err(source, tline, format!("expected a number, found {found}")));
                }
                row.push(number(&tok, source, tline)?);
                match s.peek() {
                    Some(b',') => s.pos += 1,
                    Some(b']') => {
                        s.pos += 1;
                        break;
                    }
                    _ => s.expect(b']', "after a number")?,
                }
            }
            rows.push((line, row));
            match s.peek() {
                Some(b',') => s.pos += 1,
                Some(b']') => {
                    s.pos += 1;
                    break;
                }
                _ => s.expect(b']', "after a row")?,
            }
        }
    }
    if let Some(b) = s.peek() {
        return Err(err(
            source,
            s.line,
            format!("unexpected '{}' after the closing ']'", b as char),
        ));
    }
    Ok(rows)
}
