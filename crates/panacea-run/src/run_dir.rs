//! Run folders: `<runs>/<yyyy-mm-dd-HHMM>-<name>/` holding the resolved config, the command
//! line, a manifest (git revision, libtorch version, data hashes, seed), `metrics.jsonl` and the
//! same numbers as TensorBoard event files, and `checkpoints/step-NNNNNN/` folders that are
//! either complete or absent. One process writes a run folder at a time ([`RunLock`]).
//!
//! Resuming continues from the newest complete checkpoint: metric rows and TensorBoard events
//! logged after it (by the process that stopped) are dropped first, so every step is logged
//! once; the config may change only in the keys [`RESUMABLE_KEYS`] names, and each change is
//! recorded in `resume.jsonl`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{io, Result, RunError};
use crate::fs::{now_secs, utc_stamp, wall_time, write_atomic};
use crate::lock::RunLock;
use crate::observer::StopFlag;
use crate::tensorboard::{scalars_of, truncate_event_files, EventWriter};

/// Checkpoint folders live here inside a run folder.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The training loop's own state (step, RNG streams, data cursor) in a checkpoint folder; it is
/// written last, so its presence marks a complete checkpoint.
pub const LOOP_STATE_FILE: &str = "trainer_state.json";
/// The resolved config of a run.
pub const CONFIG_FILE: &str = "config.yaml";
/// Per-step metrics, one JSON object per line, each with its `step`.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One line per resume: when, from which step, and which config keys changed.
pub const RESUME_LOG_FILE: &str = "resume.jsonl";
/// What a run ran on and with.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Config keys (dotted paths) a resumed run may change. Everything else would make the resumed
/// run a different experiment from the one its checkpoints belong to. `train.steps` may only
/// grow past the checkpoint's step.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.steps",
    "train.log_every",
    "train.save_every",
    "train.eval_every",
    "train.hv_every",
    "device",
    "threads",
    "train.activation_checkpointing",
];

/// Where a job puts its run folder and how it may be stopped: everything about a run that is
/// not the job's config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The folder that receives new run folders.
    pub runs_dir: PathBuf,
    /// The run folder's name after its date (default: the job's config name).
    pub name: Option<String>,
    /// Continue this run folder from its newest complete checkpoint instead of starting anew.
    pub resume: Option<PathBuf>,
    /// Set it to stop after the current step with a checkpoint.
    pub stop: StopFlag,
    /// The command line recorded in `command.txt`.
    pub command: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::new("runs")
    }
}

impl RunOptions {
    /// New runs under `runs_dir`, named after the config, never stopped early, recording this
    /// process's command line.
    pub fn new(runs_dir: impl Into<PathBuf>) -> Self {
        Self {
            runs_dir: runs_dir.into(),
            name: None,
            resume: None,
            stop: StopFlag::new(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    /// The same options resuming `run_dir`.
    pub fn resuming(mut self, run_dir: impl Into<PathBuf>) -> Self {
        self.resume = Some(run_dir.into());
        self
    }

    /// The same options with a run-folder name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Trained {
    /// Its run folder.
    pub run_dir: PathBuf,
    /// The last step done.
    pub step: u64,
    /// The newest complete checkpoint folder, if any.
    pub checkpoint: Option<PathBuf>,
    /// True when the stop flag ended it before its last step.
    pub interrupted: bool,
}

/// What goes into `manifest.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The job (`train-ppo`, `train-dpo`, `train-rm`, ...).
    pub job: String,
    /// `git rev-parse HEAD` of the working folder, when available (`-dirty` with uncommitted
    /// changes).
    pub git_hash: Option<String>,
    /// libtorch's version, when known.
    pub libtorch_version: Option<String>,
    /// The device the run used.
    pub device: String,
    /// The run's seed.
    pub seed: u64,
    /// SHA-256 of each input the run read (data files, the base weights), by name.
    pub data_hashes: Vec<(String, String)>,
    /// When the run started (UTC, RFC 3339 without fractions).
    pub started_utc: String,
    /// Number of data-parallel processes (1 for a single process; manifests written before
    /// data parallelism read as 1). A resume must use the same number.
    #[serde(default = "one")]
    pub world_size: usize,
    /// The collective backend of a data-parallel run (`gloo`, `nccl`); `None` for one process.
    #[serde(default)]
    pub backend: Option<String>,
}

fn one() -> usize {
    1
}

impl Manifest {
    /// A manifest of `job` started now, with the git revision and libtorch version of this
    /// process and no data hashes yet.
    pub fn now(job: &str, device: impl Into<String>, seed: u64) -> Self {
        Self {
            job: job.to_owned(),
            git_hash: crate::fs::git_hash(),
            libtorch_version: crate::fs::libtorch_version(),
            device: device.into(),
            seed,
            data_hashes: Vec::new(),
            started_utc: utc_stamp(now_secs()).1,
            world_size: 1,
            backend: None,
        }
    }

    /// Refuses to continue this run (in `run_dir`) with `world_size` processes when it was
    /// started with another number: the data order, the per-rank shards and the per-row
    /// preferences of every later step depend on it.
    pub fn check_world_size(&self, run_dir: &Path, world_size: usize) -> Result<()> {
        if self.world_size == world_size {
            return Ok(());
        }
        Err(crate::RunError::WorldSizeChanged {
            path: run_dir.to_owned(),
            saved: self.world_size,
            requested: world_size,
        })
    }

    /// Reads a run folder's manifest.
    pub fn read(run_dir: &Path) -> Result<Self> {
        read_json(&run_dir.join(MANIFEST_FILE))
    }
}

/// A complete checkpoint folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The step it was written after.
    pub step: u64,
    /// The folder (`checkpoints/step-NNNNNN`).
    pub dir: PathBuf,
}

impl Checkpoint {
    /// The training loop's state saved in it ([`LOOP_STATE_FILE`]).
    pub fn loop_state<S: serde::de::DeserializeOwned>(&self) -> Result<S> {
        read_json(&self.dir.join(LOOP_STATE_FILE))
    }
}

/// An open run folder, locked for this process.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    metrics: File,
    events: EventWriter,
    _lock: RunLock,
}

impl RunDir {
    /// Creates `root/<yyyy-mm-dd-HHMM>-<name>/` (with `-2`, `-3`, ... appended when it exists),
    /// takes its lock, writes `config.yaml`, `command.txt` and a `.gitignore` of `*`, and opens
    /// the metrics files.
    pub fn create(root: &Path, name: &str, config_yaml: &str, command: &str) -> Result<Self> {
        let base = format!("{}-{name}", utc_stamp(now_secs()).0);
        std::fs::create_dir_all(root).map_err(io("creating", root))?;
        let mut n = 1;
        let path = loop {
            let candidate =
                if n == 1 { root.join(&base) } else { root.join(format!("{base}-{n}")) };
            // create_dir (not _all) fails when the folder exists, so two processes starting at
            // the same minute never share one.
            match std::fs::create_dir(&candidate) {
                Ok(()) => break candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(io("creating", &candidate)(e)),
            }
        };
        let lock = RunLock::acquire(&path)?;
        write_atomic(&path.join(".gitignore"), b"*\n")?;
        write_atomic(&path.join(CONFIG_FILE), config_yaml.as_bytes())?;
        write_atomic(&path.join("command.txt"), format!("{command}\n").as_bytes())?;
        let metrics = open_append(&path.join(METRICS_FILE))?;
        let events = EventWriter::create(&path, wall_time())?;
        Ok(Self { path, metrics, events, _lock: lock })
    }

    /// Re-opens the run folder `path` of `job` to continue it from its newest complete
    /// checkpoint, which it returns. `saved` and `requested` are the run's saved config and the
    /// config to continue with, as JSON values of the same typed config: they may differ only
    /// in [`RESUMABLE_KEYS`], `train.steps` only upwards. Metric rows and TensorBoard events
    /// after the checkpoint's step are dropped, the changes are appended to `resume.jsonl`, and
    /// `config.yaml` becomes `requested_yaml`.
    pub fn resume(
        path: &Path,
        job: &str,
        saved: &Value,
        requested: &Value,
        requested_yaml: &str,
        command: &str,
    ) -> Result<(Self, Checkpoint)> {
        if !path.join(CONFIG_FILE).is_file() {
            return Err(RunError::NotARunFolder { path: path.to_owned() });
        }
        let lock = RunLock::acquire(path)?;
        check_job(path, job)?;
        let checkpoint =
            latest_checkpoint(path)?.ok_or_else(|| RunError::NoCheckpoint { path: path.into() })?;
        let changes = check_resume_changes(path, saved, requested, checkpoint.step)?;
        truncate_metrics(&path.join(METRICS_FILE), checkpoint.step)?;
        truncate_event_files(path, i64::try_from(checkpoint.step).unwrap_or(i64::MAX))?;
        let record = serde_json::json!({
            "utc": utc_stamp(now_secs()).1,
            "from_step": checkpoint.step,
            "command": command,
            "changes": changes,
        });
        let mut log = open_append(&path.join(RESUME_LOG_FILE))?;
        writeln!(log, "{record}").map_err(io("writing", &path.join(RESUME_LOG_FILE)))?;
        if !changes.is_empty() {
            write_atomic(&path.join(CONFIG_FILE), requested_yaml.as_bytes())?;
        }
        let metrics = open_append(&path.join(METRICS_FILE))?;
        let events = EventWriter::create(path, wall_time())?;
        Ok((Self { path: path.to_owned(), metrics, events, _lock: lock }, checkpoint))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the run folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `manifest.json`.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        write_json(&self.path.join(MANIFEST_FILE), manifest)
    }

    /// Writes a JSON file into the run folder atomically (final evaluations, reports).
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        write_json(&self.path.join(name), value)
    }

    /// Appends one JSON object to `metrics.jsonl` and flushes it; its numeric fields also go to
    /// the TensorBoard event file at the object's `step`.
    pub fn log_metrics(&mut self, value: &Value) -> Result<()> {
        let path = self.path.join(METRICS_FILE);
        writeln!(self.metrics, "{value}")
            .and_then(|()| self.metrics.flush())
            .map_err(io("writing", &path))?;
        if let Some((step, scalars)) = scalars_of(value) {
            self.events.scalars(step, wall_time(), &scalars)?;
        }
        Ok(())
    }

    /// Writes `checkpoints/step-NNNNNN/` as a whole: `fill` writes the job's files into a
    /// staging folder, then the loop state goes in as [`LOOP_STATE_FILE`] and the folder is
    /// renamed into place. A checkpoint folder therefore is complete or absent, whatever stops
    /// the process.
    pub fn save_checkpoint<S, E>(
        &self,
        step: u64,
        loop_state: &S,
        fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<Checkpoint, E>
    where
        S: serde::Serialize,
        E: From<RunError>,
    {
        let parent = self.path.join(CHECKPOINTS_DIR);
        let dir = parent.join(format!("step-{step:06}"));
        let tmp = parent.join(format!(".step-{step:06}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
        fill(&tmp)?;
        write_json(&tmp.join(LOOP_STATE_FILE), loop_state)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("replacing", &dir))?;
        }
        std::fs::rename(&tmp, &dir)
            .map_err(io("moving a finished checkpoint into place at", &dir))?;
        crate::fs::sync_parent(&dir);
        Ok(Checkpoint { step, dir })
    }
}

/// The complete checkpoint of `run_dir` with the highest step, if any. The one rule every
/// command uses: a checkpoint is complete when its loop state file exists (it is written last,
/// inside a staging folder that is renamed whole).
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<Checkpoint>> {
    let parent = run_dir.join(CHECKPOINTS_DIR);
    let Ok(entries) = std::fs::read_dir(&parent) else { return Ok(None) };
    let mut best: Option<Checkpoint> = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if e.path().join(LOOP_STATE_FILE).is_file() && best.as_ref().is_none_or(|b| step > b.step) {
            best = Some(Checkpoint { step, dir: e.path() });
        }
    }
    Ok(best)
}

/// The newest run folder directly under `root` whose manifest names `job` and that holds a
/// complete checkpoint: newest by the manifest's start time, then by folder name. The one rule
/// for "the latest run" of every command.
pub fn latest_run(root: &Path, job: &str) -> Result<Option<(PathBuf, Checkpoint)>> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(None) };
    let mut best: Option<(String, PathBuf, Checkpoint)> = None;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(manifest) = Manifest::read(&path) else { continue };
        if manifest.job != job {
            continue;
        }
        let Some(ckpt) = latest_checkpoint(&path)? else { continue };
        let key = format!("{}\u{0}{}", manifest.started_utc, e.file_name().to_string_lossy());
        if best.as_ref().is_none_or(|b| key > b.0) {
            best = Some((key, path, ckpt));
        }
    }
    Ok(best.map(|(_, p, c)| (p, c)))
}

/// One config key whose value differs between a run's saved config and a resume's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigChange {
    /// The dotted key (`train.steps`, `objectives.0.name`).
    pub key: String,
    /// The saved value (null when the key is new).
    pub old: Value,
    /// The requested value (null when the key is gone).
    pub new: Value,
}

/// Every leaf of two configs that differs, by dotted key, in key order.
pub fn config_changes(saved: &Value, requested: &Value) -> Vec<ConfigChange> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", saved, &mut a);
    flatten("", requested, &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (old, new) = (a.get(k).cloned(), b.get(k).cloned());
            (old != new).then(|| ConfigChange {
                key: k.clone(),
                old: old.unwrap_or(Value::Null),
                new: new.unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(m) if !m.is_empty() => m.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(a) if !a.is_empty() => {
            a.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), v, out));
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// The changes of a resume at `done_steps`, or the error listing every refused one.
fn check_resume_changes(
    path: &Path,
    saved: &Value,
    requested: &Value,
    done_steps: u64,
) -> Result<Vec<ConfigChange>> {
    let changes = config_changes(saved, requested);
    let mut problems = Vec::new();
    for c in &changes {
        if !RESUMABLE_KEYS.contains(&c.key.as_str()) {
            problems.push(format!(
                "  `{}` is {} in the run and {} now; hint: only {} may change on resume — start \
                 a new run to change it",
                c.key,
                c.old,
                c.new,
                RESUMABLE_KEYS.join(", ")
            ));
        }
    }
    let steps = requested.pointer("/train/steps").and_then(Value::as_u64);
    if let Some(steps) = steps.filter(|&s| s <= done_steps) {
        problems.push(format!(
            "  `train.steps` = {steps} but the newest checkpoint is at step {done_steps}: nothing \
             would be trained; hint: `--set train.steps=N` with N > {done_steps} to train longer"
        ));
    }
    if problems.is_empty() {
        Ok(changes)
    } else {
        Err(RunError::ResumeChange { path: path.to_owned(), problems: problems.join("\n") })
    }
}

/// Fails unless the run folder's manifest names `job`.
fn check_job(path: &Path, job: &str) -> Result<()> {
    match Manifest::read(path) {
        Ok(m) if m.job != job => Err(RunError::WrongJob {
            path: path.to_owned(),
            expected: job.to_owned(),
            found: m.job,
        }),
        // A folder without a readable manifest is judged by its config, which the job parses.
        _ => Ok(()),
    }
}

/// Drops the rows of `metrics.jsonl` whose `step` is after `max_step`, and a torn last line.
fn truncate_metrics(path: &Path, max_step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') {
            break; // torn by a kill during the write
        }
        let step = serde_json::from_str::<Value>(line).ok().and_then(|v| v["step"].as_u64());
        if step.is_none_or(|s| s <= max_step) {
            kept.push_str(line);
        }
    }
    if kept.len() != text.len() {
        write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).map_err(io("opening", path))
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Json {
        path: path.to_owned(),
        message: format!("cannot serialise: {e}"),
    })?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|e| RunError::Json {
        path: path.to_owned(),
        message: format!("{e}; hint: was it written by this version of panacea?"),
    })
}
