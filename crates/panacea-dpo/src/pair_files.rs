//! The pair files of a DPO run: `data.train` and `data.eval` are each one file (a path, read
//! with the section's `format`, `file_format` and `labels`) or a list of files, each of which
//! may give its own schema, storage and label mapping:
//!
//! ```yaml
//! objectives: [helpful, harmless]
//! data:
//!   format: hh-rlhf                  # the default schema of the files
//!   train:
//!     - { path: helpful-base.jsonl.gz, labels: { helpful: chosen } }
//!     - { path: harmless-base.parquet, labels: { harmless: chosen } }
//! ```
//!
//! A file labels the objectives its mapping names and leaves the others unlabelled (t = 0,
//! masked in the loss), so two single-preference files train two objectives. Records of all
//! files are read in order and concatenated. See configs/README.md, "Pair files".

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use panacea_core::config::Validator;
use panacea_data::{FileFormat, LabelSource, PairFormat, PairRecord, ReadOptions, ReadReport};
use serde::de::{self, value::SeqAccessDeserializer, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::{DpoDataConfig, DpoRunConfig};
use crate::job::resolve_data_path;
use crate::DpoError;

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

impl DpoDataConfig {
    /// The files of `files` (`data.train` or `data.eval`) with this section's defaults.
    pub fn pair_files(&self, files: &PairFiles) -> Vec<PairFile> {
        let one = |path: &Path, e: Option<&PairFileConfig>| PairFile {
            path: path.to_owned(),
            format: e.and_then(|e| e.format).unwrap_or(self.format),
            file_format: e.and_then(|e| e.file_format).unwrap_or(self.file_format),
            labels: e.and_then(|e| e.labels.clone()).unwrap_or_else(|| self.labels.clone()),
        };
        match files {
            PairFiles::One(p) => vec![one(p, None)],
            PairFiles::Many(entries) => entries.iter().map(|e| one(&e.path, Some(e))).collect(),
        }
    }
}

/// Checks `data.train` (`key`) or `data.eval`: at least one file, and every file's labels
/// resolve for the objectives. Returns, per objective, whether some file labels it (`None`
/// when a file's labels do not resolve: that problem is reported already).
pub(crate) fn validate_files(
    data: &DpoDataConfig,
    files: &PairFiles,
    key: &str,
    objectives: &[String],
    v: &mut Validator,
) -> Option<Vec<bool>> {
    let mut labelled = Some(vec![false; objectives.len()]);
    let resolved = data.pair_files(files);
    v.check(!resolved.is_empty(), key, "give at least one pair file");
    for (i, file) in resolved.iter().enumerate() {
        let at = match files {
            PairFiles::One(_) => "data.labels".to_owned(),
            PairFiles::Many(_) => format!("{key}[{i}].labels"),
        };
        match LabelSource::resolve(file.format, objectives, &file.labels) {
            Ok(sources) => {
                for (l, s) in labelled.iter_mut().flatten().zip(&sources) {
                    *l |= *s != LabelSource::Unlabelled;
                }
            }
            Err(e) => {
                let file_name = file.path.display();
                v.problem(&at, format!("{file_name} ({}): {e}", file.format.display_name()));
                labelled = None;
            }
        }
    }
    labelled
}

/// Each file's path (as found) and its read report.
pub type FileReports = Vec<(PathBuf, ReadReport)>;

/// Reads every file of `files` (`data.train` or `data.eval`) for the run's objectives, in
/// order; returns the records and each file's path (as found) and read report. A relative
/// path is looked up as [`resolve_data_path`] does.
pub fn read_pair_files(
    cfg: &DpoRunConfig,
    files: &PairFiles,
) -> Result<(Vec<PairRecord>, FileReports), DpoError> {
    let mut records = Vec::new();
    let mut reports = Vec::new();
    for file in cfg.data.pair_files(files) {
        let path = resolve_data_path(&file.path, cfg.config_dir.as_deref())?;
        let opts = ReadOptions {
            format: file.format,
            dims: cfg.objectives.clone(),
            skip_invalid: cfg.data.skip_invalid,
        };
        let (mut part, report) =
            panacea_data::load_pair_file(&path, file.file_format, &file.labels, opts)
                .map_err(|source| DpoError::Pairs { path: path.clone(), source })?;
        records.append(&mut part);
        reports.push((path, report));
    }
    Ok((records, reports))
}
