//! Rows of a parquet file as JSON objects, through the parquet crate's record reader (no arrow).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use parquet::errors::ParquetError;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use serde_json::{Map, Value};

use super::RawRecord;
use crate::DataError;

/// The rows of one parquet file, numbered from 1.
pub(crate) struct ParquetRows {
    path: PathBuf,
    rows: Option<RowIter<'static>>,
    number: usize,
    max_row_bytes: usize,
}

impl std::fmt::Debug for ParquetRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("path", &self.path)
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

/// The error for a file the parquet crate cannot read.
fn unreadable(path: &Path, what: &str) -> DataError {
    let hint = if what.contains("Disabled feature") || what.contains("not supported") {
        "\nhint: this build reads snappy-compressed and uncompressed parquet; rewrite the file \
         with pyarrow, e.g. pq.write_table(pq.read_table(f), g, compression=\"snappy\")"
    } else {
        "\nhint: is it a parquet file? The format is chosen by the extension unless \
         `file_format` says otherwise"
    };
    DataError::model(path, format!("cannot read as parquet: {what}{hint}"))
}

/// Runs a call into the parquet crate, turning a panic on malformed bytes into an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, ParquetError>) -> Result<T, DataError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unreadable(path, &e.to_string())),
        Err(_) => Err(unreadable(path, "the parquet reader failed on malformed data")),
    }
}

impl ParquetRows {
    /// Opens `path`; its footer (schema and row groups) is read now.
    pub(crate) fn open(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
        let reader = guarded(path, || SerializedFileReader::new(file))?;
        Self::from_reader(Box::new(reader), path.to_owned())
    }

    /// Reads an in-memory file; `name` stands for it in errors.
    pub(crate) fn from_bytes(bytes: Vec<u8>, name: PathBuf) -> Result<Self, DataError> {
        let bytes = bytes::Bytes::from(bytes);
        let reader = guarded(&name, || SerializedFileReader::new(bytes))?;
        Self::from_reader(Box::new(reader), name)
    }

    fn from_reader(reader: Box<dyn FileReader>, path: PathBuf) -> Result<Self, DataError> {
        let rows = guarded(&path, || Ok(RowIter::from_file_into(reader)))?;
        Ok(Self { path, rows: Some(rows), number: 0, max_row_bytes: crate::DEFAULT_MAX_LINE_BYTES })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn set_max_row_bytes(&mut self, cap: usize) {
        self.max_row_bytes = cap;
    }

    /// One row as a JSON object, or the column and message of what cannot be converted.
    fn convert(&self, row: &Row) -> Result<Value, (Option<String>, String)> {
        let mut budget = Budget { left: self.max_row_bytes, cap: self.max_row_bytes };
        let mut object = Map::new();
        for (name, field) in row.get_column_iter() {
            object.insert(name.clone(), to_json(field, name, &mut budget)?);
        }
        Ok(Value::Object(object))
    }
}

impl Iterator for ParquetRows {
    /// A decoding failure ends the stream: the reader cannot find the next row after it.
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rows = self.rows.as_mut()?;
        let next = catch_unwind(AssertUnwindSafe(|| rows.next()));
        let row = match next {
            Ok(None) => {
                self.rows = None;
                return None;
            }
            Ok(Some(Ok(row))) => row,
            Ok(Some(Err(e))) => {
                self.rows = None;
                return Some(Err(unreadable(&self.path, &e.to_string())));
            }
            Err(_) => {
                self.rows = None;
                let what = "the parquet reader failed on malformed data";
                return Some(Err(unreadable(&self.path, what)));
            }
        };
        self.number += 1;
        Some(match self.convert(&row) {
            Ok(value) => Ok(RawRecord::Row { number: self.number, value }),
            Err((field, message)) => {
                Err(DataError::Row { path: self.path.clone(), row: self.number, field, message })
            }
        })
    }
}

/// What is left of a row's cap on string bytes.
struct Budget {
    left: usize,
    cap: usize,
}

impl Budget {
    fn take(&mut self, n: usize) -> Result<(), (Option<String>, String)> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            (
                None,
                format!(
                    "the row's text is longer than {} bytes, the reader's cap per record; it was \
                     not parsed\nhint: a record this long is far beyond any model's context; \
                     remove it, or raise the cap where the reader is built",
                    self.cap
                ),
            )
        })?;
        Ok(())
    }
}

/// A finite float as a JSON number; NaN and ±∞ are errors naming the column.
fn float(v: f64, at: &str) -> Result<Value, (Option<String>, String)> {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| (Some(at.to_owned()), format!("{v} is not a finite number")))
}

/// A parquet value as JSON; `at` is its field path (`chosen[1].content`).
fn to_json(
    field: &Field,
    at: &str,
    budget: &mut Budget,
) -> Result<Value, (Option<String>, String)> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float16(v) => float(f64::from(*v), at)?,
        Field::Float(v) => float(f64::from(*v), at)?,
        Field::Double(v) => float(*v, at)?,
        Field::Str(s) => {
            budget.take(s.len())?;
            Value::String(s.clone())
        }
        Field::Bytes(b) => {
            budget.take(b.data().len())?;
            match std::str::from_utf8(b.data()) {
                Ok(s) => Value::String(s.to_owned()),
                Err(e) => {
                    return Err((
                        Some(at.to_owned()),
                        format!(
                            "binary value is not UTF-8 (byte {})\nhint: text columns must be \
                             UTF-8 strings",
                            e.valid_up_to() + 1
                        ),
                    ))
                }
            }
        }
        Field::Group(row) => {
            let mut object = Map::new();
            for (name, f) in row.get_column_iter() {
                object.insert(name.clone(), to_json(f, &format!("{at}.{name}"), budget)?);
            }
            Value::Object(object)
        }
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .enumerate()
                .map(|(i, f)| to_json(f, &format!("{at}[{i}]"), budget))
                .collect::<Result<_, _>>()?,
        ),
        Field::MapInternal(map) => {
            let mut object = Map::new();
            for (k, v) in map.entries() {
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                budget.take(key.len())?;
                let value = to_json(v, &format!("{at}.{key}"), budget)?;
                object.insert(key, value);
            }
            Value::Object(object)
        }
        // Dates, times and decimals: their text, as pandas prints them.
        other => Value::String(other.to_string()),
    })
}
