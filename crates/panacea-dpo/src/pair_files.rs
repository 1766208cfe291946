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
//! files are read in order and concatenated (the types: [`panacea_data::pair_files`], shared with
//! `train-rm`). See configs/README.md, "Pair files".

use std::path::PathBuf;

use panacea_core::config::Validator;
use panacea_data::{LabelSource, PairRecord, ReadOptions, ReadReport};
pub use panacea_data::{PairFile, PairFileConfig, PairFiles};

use crate::config::{DpoDataConfig, DpoRunConfig};
use crate::job::resolve_data_path;
use crate::DpoError;

impl DpoDataConfig {
    /// The files of `files` (`data.train` or `data.eval`) with this section's defaults.
    pub fn pair_files(&self, files: &PairFiles) -> Vec<PairFile> {
        files.resolve(self.format, self.file_format, &self.labels)
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
        let at = files.labels_key(key, i);
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
