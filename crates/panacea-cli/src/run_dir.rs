//! Run folders: `runs/<yyyy-mm-dd-HHMM>-<config-stem>/` holding the resolved config, the
//! command line, a manifest (git hash, libtorch version, data hashes, seed), `metrics.jsonl`
//! and the same numbers as a TensorBoard event file (`tensorboard --logdir runs/`),
//! checkpoint folders written atomically (`checkpoints/step-NNNNNN/`, staged then renamed) and a
//! `.gitignore` with `*`.
//! Generic over the job: PPO, reward-model and DPO training all use it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use panacea_run::tensorboard::{scalars_of, EventWriter};

/// Seconds since the Unix epoch with sub-second precision (TensorBoard's wall time).
fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// An open run folder.
#[derive(Debug)]
pub(crate) struct RunDir {
    /// The folder.
    pub(crate) path: PathBuf,
    metrics: File,
    events: EventWriter,
}

/// What goes into `manifest.json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Manifest {
    /// The job (`train-ppo`, `train-rm`, ...).
    pub(crate) job: String,
    /// `git rev-parse HEAD` of the working tree, when available (with `-dirty` when it has
    /// uncommitted changes).
    pub(crate) git_hash: Option<String>,
    /// libtorch's version as reported by the venv's torch or $LIBTORCH/build-version.
    pub(crate) libtorch_version: Option<String>,
    /// The device the run used.
    pub(crate) device: String,
    /// The seed.
    pub(crate) seed: u64,
    /// SHA-256 of each data file the run read, by path.
    pub(crate) data_hashes: Vec<(String, String)>,
    /// When the run started (UTC, RFC 3339 without fractions).
    pub(crate) started_utc: String,
}

impl RunDir {
    /// Creates `root/<yyyy-mm-dd-HHMM>-<stem>/` (with `-2`, `-3`, ... appended when it already
    /// exists), writes `config.yaml`, `command.txt` and `.gitignore`, and opens `metrics.jsonl`.
    pub(crate) fn create(root: &Path, stem: &str, config_yaml: &str) -> Result<Self> {
        let base = format!("{}-{stem}", utc_stamp(now_secs()).0);
        let mut path = root.join(&base);
        let mut n = 2;
        while path.exists() {
            path = root.join(format!("{base}-{n}"));
            n += 1;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating run folder {}", path.display()))?;
        write_atomic(&path.join(".gitignore"), b"*\n")?;
        write_atomic(&path.join("config.yaml"), config_yaml.as_bytes())?;
        let command: Vec<String> = std::env::args().collect();
        write_atomic(&path.join("command.txt"), format!("{}\n", command.join(" ")).as_bytes())?;
        let metrics = open_append(&path.join("metrics.jsonl"))?;
        let events = EventWriter::create(&path, wall_time())?;
        Ok(Self { path, metrics, events })
    }

    /// Re-opens an existing run folder (for `--resume`); metrics are appended.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if !path.join("config.yaml").is_file() {
            anyhow::bail!(
                "{} is not a run folder (no config.yaml); hint: pass the folder printed at the \
                 start of the run",
                path.display()
            );
        }
        let metrics = open_append(&path.join("metrics.jsonl"))?;
        let events = EventWriter::create(path, wall_time())?;
        Ok(Self { path: path.to_owned(), metrics, events })
    }

    /// Writes `manifest.json`.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_string_pretty(manifest)?;
        write_atomic(&self.path.join("manifest.json"), format!("{text}\n").as_bytes())
    }

    /// Appends one JSON object as a line of `metrics.jsonl` and flushes it; its numeric fields
    /// also go to the TensorBoard event file, at the object's `step`.
    pub(crate) fn log_metrics(&mut self, value: &serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{value}").context("writing metrics.jsonl")?;
        self.metrics.flush().context("flushing metrics.jsonl")?;
        if let Some((step, scalars)) = scalars_of(value) {
            self.events.scalars(step, wall_time(), &scalars)?;
        }
        Ok(())
    }

    /// A path inside the run folder.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `checkpoints/step-NNNNNN/` as a whole: `fill` writes the job's files (the native
    /// adapter folder files, trainer tensors) into a staging folder, then the loop state goes
    /// in as [`LOOP_STATE_FILE`] and the folder is renamed into place. A checkpoint folder
    /// therefore either is complete or does not exist, whatever stops the process.
    pub(crate) fn save_checkpoint<S: serde::Serialize>(
        &self,
        step: u64,
        loop_state: &S,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let parent = self.path.join(CHECKPOINTS_DIR);
        let dir = parent.join(format!("step-{step:06}"));
        let tmp = parent.join(format!(".step-{step:06}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        fill(&tmp).with_context(|| format!("writing checkpoint {}", dir.display()))?;
        let text = serde_json::to_string_pretty(loop_state)?;
        write_atomic(&tmp.join(LOOP_STATE_FILE), format!("{text}\n").as_bytes())?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("replacing checkpoint {}", dir.display()))?;
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving {} into place", tmp.display()))?;
        Ok(dir)
    }

    /// The complete checkpoint with the highest step, if any: (step, folder, loop state).
    pub(crate) fn latest_checkpoint<S: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<Option<(u64, PathBuf, S)>> {
        let parent = self.path.join(CHECKPOINTS_DIR);
        let Ok(entries) = std::fs::read_dir(&parent) else { return Ok(None) };
        let mut best: Option<(u64, PathBuf)> = None;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if e.path().join(LOOP_STATE_FILE).is_file() && best.as_ref().is_none_or(|b| step > b.0)
            {
                best = Some((step, e.path()));
            }
        }
        let Some((step, dir)) = best else { return Ok(None) };
        let path = dir.join(LOOP_STATE_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let state = serde_json::from_slice(&bytes).with_context(|| {
            format!("parsing {}; hint: was it written by this version?", path.display())
        })?;
        Ok(Some((step, dir, state)))
    }
}

/// Checkpoint folders live here inside a run folder.
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
/// The training loop's own state (step, RNG streams, data cursor) in a checkpoint folder.
pub(crate) const LOOP_STATE_FILE: &str = "trainer_state.json";

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    panacea_core::checkpoint::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// SHA-256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// `git rev-parse HEAD` (+ `-dirty`), or None outside a git checkout.
pub(crate) fn git_hash() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty { format!("{hash}-dirty") } else { hash })
}

/// libtorch's version from `$LIBTORCH/build-version` or the torch package's `version.py`
/// next to `$LIBTORCH` (the project cache's venv layout).
pub(crate) fn libtorch_version() -> Option<String> {
    let root = PathBuf::from(std::env::var_os("LIBTORCH")?);
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return Some(v.trim().to_owned());
    }
    let text = std::fs::read_to_string(root.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// (`yyyy-mm-dd-HHMM`, `yyyy-mm-ddTHH:MM:SSZ`) of a Unix time, in UTC.
pub(crate) fn utc_stamp(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's days → civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}-{mo:02}-{d:02}-{h:02}{m:02}"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        // `date -u -d @0` and `date -u -d @1795786200` (2026-11-27 13:30:00 UTC).
        assert_eq!(utc_stamp(0).0, "1970-01-01-0000");
        assert_eq!(utc_stamp(1_795_786_200).1, "2026-11-27T13:30:00Z");
        // A leap day: `date -u -d @1709210096` = 2024-02-29 12:34:56.
        assert_eq!(utc_stamp(1_709_210_096).1, "2024-02-29T12:34:56Z");
        // 2026-11-27 is day 20_784 (Python: date(2026,11,27) - date(1970,1,1)); 2000-02-29 (leap
        // day) is day 11_016.
        assert_eq!(utc_stamp(20_784 * 86_400 + 4 * 3600 + 14 * 60 + 59).0, "2026-11-27-0414");
        assert_eq!(utc_stamp(11_016 * 86_400).0, "2000-02-29-0000");
    }

    #[test]
    fn run_dir_writes_its_files_and_never_reuses_a_folder() {
        let root = std::env::temp_dir().join(format!("panacea-rundir-{}", std::process::id()));
        let mut a = RunDir::create(&root, "tiny", "seed: 1\n").expect("create");
        let b = RunDir::create(&root, "tiny", "seed: 1\n").expect("create again");
        assert_ne!(a.path, b.path);
        a.log_metrics(&serde_json::json!({"step": 1})).expect("log");
        assert_eq!(std::fs::read_to_string(a.file(".gitignore")).expect("read"), "*\n");
        assert_eq!(
            std::fs::read_to_string(a.file("metrics.jsonl")).expect("read"),
            "{\"step\":1}\n"
        );
        assert!(a.file("command.txt").is_file());
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
