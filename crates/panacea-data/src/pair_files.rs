//! `data.train` (and DPO's `data.eval`) of the pair-training jobs: one file (a path, read with
//! the section's `format`, `file_format` and `labels`) or a list of files, each of which may
//! give its own schema, storage and label mapping. One vocabulary for `train-dpo` and
//! `train-rm`:
//!
//! ```yaml
//! data:
//!   format: hh-rlhf                  # the default schema of the files
//!   train:
//!     - { path: helpful-base.jsonl.gz, labels: { helpful: chosen } }
//!     - { path: harmless-base.parquet, labels: { harmless: chosen } }
//! ```
//!
//! A file labels the objectives its mapping names and leaves the others unlabelled (t = 0).
//! Records of all files are read in order and concatenated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, value::SeqAccessDeserializer, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::{FileFormat, PairFormat};

/// `data.train` / `data.eval`: one path, or a list of files.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PairFiles {
    /// One file, read with the section's `format`, `file_format` and `labels`.
    One(PathBuf),
    /// Several files, each with optional settings of its own.
    Many(Vec<PairFileConfig>),
}

/// One entry of a `data.train` / `data.eval` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairFileConfig {
    /// The file; a relative path is looked up like `data.train`.
    pub path: PathBuf,
    /// Its schema (default: `data.format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<PairFormat>,
    /// How it is stored (default: `data.file_format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_format: Option<FileFormat>,
    /// Objective → label column (default: `data.labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for PairFiles {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FilesVisitor;
        impl<'de> Visitor<'de> for FilesVisitor {
            type Value = PairFiles;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file path, or a list of {path, format, file_format, labels}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PairFiles, E> {
                Ok(PairFiles::One(PathBuf::from(v)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PairFiles, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(PairFiles::Many)
            }
        }
        d.deserialize_any(FilesVisitor)
    }
}

impl fmt::Display for PairFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairFiles::One(p) => write!(f, "{}", p.display()),
            PairFiles::Many(files) => {
                let paths: Vec<_> = files.iter().map(|e| e.path.display().to_string()).collect();
                f.write_str(&paths.join(", "))
            }
        }
    }
}

/// A pair file with the section's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct PairFile {
    /// The file as configured (not yet looked up).
    pub path: PathBuf,
    /// Its schema.
    pub format: PairFormat,
    /// How it is stored.
    pub file_format: FileFormat,
    /// Objective → label column; empty: the schema's own rule.
    pub labels: BTreeMap<String, String>,
}

impl PairFiles {
    /// The files with a section's defaults (`format`, `file_format`, `labels`) filled in
    /// where an entry gives none.
    pub fn resolve(
        &self,
        format: PairFormat,
        file_format: FileFormat,
        labels: &BTreeMap<String, String>,
    ) -> Vec<PairFile> {
        let one = |path: &std::path::Path, e: Option<&PairFileConfig>| PairFile {
            path: path.to_owned(),
            format: e.and_then(|e| e.format).unwrap_or(format),
            file_format: e.and_then(|e| e.file_format).unwrap_or(file_format),
            labels: e.and_then(|e| e.labels.clone()).unwrap_or_else(|| labels.clone()),
        };
        match self {
            PairFiles::One(p) => vec![one(p, None)],
            PairFiles::Many(entries) => entries.iter().map(|e| one(&e.path, Some(e))).collect(),
        }
    }

    /// The config key of file `i`'s labels: `data.labels` for one file, `<key>[i].labels`
    /// for a list (`key`: `data.train` or `data.eval`).
    pub fn labels_key(&self, key: &str, i: usize) -> String {
        match self {
            PairFiles::One(_) => "data.labels".to_owned(),
            PairFiles::Many(_) => format!("{key}[{i}].labels"),
        }
    }

    /// The config key of file `i`'s path: `key` itself for one file, `<key>[i].path` for a
    /// list.
    pub fn path_key(&self, key: &str, i: usize) -> String {
        match self {
            PairFiles::One(_) => key.to_owned(),
            PairFiles::Many(_) => format!("{key}[{i}].path"),
        }
    }
}
