//! Training runs as seen by the front evaluation: which trainer wrote a run folder, the latest
//! run of a job (panacea-run's one rule: the newest run whose manifest names the job and that
//! holds a complete checkpoint), what a run optimised (the objectives that measure it) and its
//! label.

use std::path::{Path, PathBuf};

use panacea_core::checkpoint::read_adapter_config;
use panacea_core::config::{Validate, Validator};
use panacea_core::ObjectiveKind;
use panacea_data::ScorerSpec;
use panacea_run::{Event, Observer};
use serde::Deserialize;

use crate::error::{ensure, Context, FrontError, Result};
use crate::scorer::FrontObjective;

/// Which trainer wrote a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunJob {
    /// `panacea train-ppo`.
    Ppo,
    /// `panacea train-dpo`.
    Dpo,
}

impl RunJob {
    /// The `job` field of `manifest.json` this trainer writes.
    pub fn manifest_name(self) -> &'static str {
        match self {
            RunJob::Ppo => "train-ppo",
            RunJob::Dpo => "train-dpo",
        }
    }

    /// `ppo` or `dpo`.
    pub fn short(self) -> &'static str {
        match self {
            RunJob::Ppo => "ppo",
            RunJob::Dpo => "dpo",
        }
    }

    /// The job named in `run/manifest.json`, if the file is there and names PPO or DPO.
    pub fn from_manifest(run: &Path) -> Option<RunJob> {
        match panacea_run::Manifest::read(run).ok()?.job.as_str() {
            "train-ppo" => Some(RunJob::Ppo),
            "train-dpo" => Some(RunJob::Dpo),
            _ => None,
        }
    }
}

/// The newest complete checkpoint (an adapter folder) of the latest `job` run under `runs`:
/// returns (run folder, checkpoint folder).
pub fn latest_adapter(runs: &Path, job: RunJob) -> Result<(PathBuf, PathBuf)> {
    let what = job.short().to_uppercase();
    let hint = format!(
        "hint: train one with `cargo xtask train-{}`, or pass an adapter folder",
        job.short()
    );
    if !runs.is_dir() {
        return Err(FrontError::NotFound(format!(
            "no run folder {}: no {what} run exists yet\n{hint}",
            runs.display()
        )));
    }
    match panacea_run::latest_run(runs, job.manifest_name())? {
        Some((run, checkpoint)) => Ok((run, checkpoint.dir)),
        None => Err(FrontError::NotFound(format!(
            "no {what} run with a complete checkpoint under {} (a run folder whose manifest.json \
             names {} and that holds checkpoints/step-N with {}); nothing was evaluated\n{hint}",
            runs.display(),
            job.manifest_name(),
            panacea_run::LOOP_STATE_FILE
        ))),
    }
}

/// The training run around an adapter checkpoint (`<run>/checkpoints/step-N`), when that
/// folder holds a run's `config.yaml`.
pub fn run_of_adapter(adapter: &Path) -> Option<PathBuf> {
    let run = adapter.parent()?.parent()?;
    run.join(panacea_run::CONFIG_FILE).is_file().then(|| run.to_path_buf())
}

/// What the front evaluation reads of a training run's resolved `config.yaml` (other keys
/// ignored): the objectives, and for DPO the pair file and the aggregation.
#[derive(Debug, Deserialize)]
struct RunSummary {
    objectives: Vec<RunObjective>,
    /// DPO: `data.train`, the pair file (its `stats.json` holds concise's settings).
    #[serde(default)]
    data: Option<serde_json::Value>,
    /// `aggregation` (the shared key).
    #[serde(default)]
    aggregation: Option<serde_json::Value>,
    /// DPO settings (`dpo.aggregation` in configs written before the shared key).
    #[serde(default)]
    dpo: Option<serde_json::Value>,
    /// PPO settings (`ppo.aggregation` in configs written before the shared key).
    #[serde(default)]
    ppo: Option<serde_json::Value>,
}

/// One trained objective: a PPO objective (name, kind, reward source) or a DPO pair
/// dimension (a name).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RunObjective {
    /// A DPO objective: the name of a preference-pair dimension.
    Dimension(String),
    /// A PPO objective.
    Reward {
        name: String,
        /// `reward` or `cost`.
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        source: Option<serde_json::Value>,
    },
}

impl Validate for RunSummary {
    fn validate(&self, _v: &mut Validator) {}
}

impl RunSummary {
    fn read(run: &Path) -> Result<RunSummary> {
        let path = run.join(panacea_run::CONFIG_FILE);
        panacea_core::config::load_config(&path, &[])
            .map_err(panacea_core::CoreError::from)
            .context_with(|| format!("reading the objectives of run {}", path.display()))
    }

    fn names(&self) -> Vec<&str> {
        self.objectives
            .iter()
            .map(|o| match o {
                RunObjective::Dimension(name) | RunObjective::Reward { name, .. } => name.as_str(),
            })
            .collect()
    }

    /// `LS` or `Tche`: the run's aggregation (both trainers default to linear).
    fn aggregation(&self) -> &'static str {
        let section = |s: &Option<serde_json::Value>| s.as_ref()?.get("aggregation").cloned();
        let kind = self
            .aggregation
            .clone()
            .or_else(|| section(&self.dpo))
            .or_else(|| section(&self.ppo))
            .and_then(|a| a.get("kind")?.as_str().map(str::to_owned));
        if kind.as_deref() == Some("tchebycheff") {
            "Tche"
        } else {
            "LS"
        }
    }

    /// concise's settings from the `stats.json` beside a DPO run's pair file, which
    /// `cargo xtask make-pairs` writes with the settings it labelled the pairs by.
    fn pair_concise(&self) -> Option<ScorerSpec> {
        let train = self.data.as_ref()?.get("train")?.as_str()?;
        let dir = panacea_dpo::resolve_data_path(Path::new(train), None).ok()?.parent()?.to_owned();
        let text = std::fs::read_to_string(dir.join("stats.json")).ok()?;
        let stats: serde_json::Value = serde_json::from_str(&text).ok()?;
        let c = stats.get("concise")?;
        Some(ScorerSpec::Concise { r_max: c.get("r_max")?.as_f64()?, c: c.get("c")?.as_f64()? })
    }

    /// The front objective of each trained objective, in the run's order; `None` where no
    /// scorer measures it.
    ///
    /// PPO: the objective's `source` when it is a text scorer's settings (`{ kind: concise,
    /// r_max: 4.0, c: 6.0 }`), a learned `score_model` for itself (a cost stays a cost), else
    /// the text scorer of the same name with default settings. DPO:
    /// [`FrontObjective::for_pair_dimension`], with concise's settings from the pair file's
    /// `stats.json` when there is one.
    fn front_objectives(&self) -> Vec<Option<FrontObjective>> {
        self.objectives
            .iter()
            .map(|o| match o {
                RunObjective::Dimension(name) => {
                    let mut objective = FrontObjective::for_pair_dimension(name)?;
                    if let ScorerSpec::Concise { .. } = objective.source {
                        objective.source = self.pair_concise().unwrap_or(objective.source);
                    }
                    Some(objective)
                }
                RunObjective::Reward { name, kind, source } => {
                    let spec =
                        source.clone().and_then(|s| serde_json::from_value::<ScorerSpec>(s).ok());
                    if let Some(spec @ ScorerSpec::ScoreModel { .. }) = spec {
                        // The run's learned reward/cost model measures its own objective.
                        let kind = if kind.as_deref() == Some("cost") {
                            ObjectiveKind::Cost
                        } else {
                            ObjectiveKind::Reward
                        };
                        return Some(FrontObjective { name: name.clone(), kind, source: spec });
                    }
                    // A text scorer declared a cost was optimised negated: only its name can
                    // say which (higher-is-better) scorer measures it, e.g. `negative`.
                    let as_cost = kind.as_deref() == Some("cost");
                    let text = spec
                        .filter(|s| !as_cost && ScorerSpec::text_by_name(s.kind_name()).is_some());
                    match text {
                        Some(spec) => Some(FrontObjective::reward(name, spec)),
                        None => FrontObjective::from_name(name),
                    }
                }
            })
            .collect()
    }
}

/// The objectives that measure what the training run `run` optimised, in its objective order,
/// named as the run names them: a PPO objective by its own text-scorer source or learned score
/// model, a DPO pair dimension by the scorer of its name
/// ([`FrontObjective::for_pair_dimension`]); without a readable `config.yaml`, those of the
/// adapter's objective names. An objective nothing measures is an error whose hint says how to
/// choose.
pub fn trained_objectives(
    run: &Path,
    adapter: &Path,
    observer: &mut dyn Observer,
) -> Result<Vec<FrontObjective>> {
    let (names, objectives): (Vec<String>, Vec<Option<FrontObjective>>) =
        match RunSummary::read(run) {
            Ok(summary) => (
                summary.names().into_iter().map(str::to_owned).collect(),
                summary.front_objectives(),
            ),
            Err(e) => {
                observer.on_event(&Event::Warning(&format!(
                    "{e}; using the adapter's objective names"
                )));
                let folder = read_adapter_config(adapter)
                    .context_with(|| format!("reading adapter {}", adapter.display()))?;
                let found = folder.objectives.iter().map(|n| FrontObjective::for_pair_dimension(n));
                (folder.objectives.clone(), found.collect())
            }
        };
    let missing: Vec<&str> = names
        .iter()
        .zip(&objectives)
        .filter(|(_, o)| o.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    ensure(missing.is_empty(), || {
        format!(
            "run {} optimised {names:?}, and nothing measures {missing:?}, so eval-front \
             cannot score it\nhint: choose one objective per trained objective, in the run's \
             order, e.g. --set 'objectives=[{{name: {}, kind: reward, source: {{kind: \
             relevant}}}}, ...]'; sources: harmless, positive, negative, relevant, concise, and \
             {{kind: score_model, path}} for a learned model",
            run.display(),
            missing[0]
        )
    })?;
    Ok(objectives.into_iter().flatten().collect())
}

/// The default table name of an adapter inside a training run: `panacea DPO LS (<run>)`,
/// `panacea DPO Tche (<run>)`, `panacea PPO LS (<run>)`.
pub fn run_label(run: &Path) -> String {
    let name = run.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().to_string());
    let Ok(summary) = RunSummary::read(run) else { return format!("panacea ({name})") };
    let job = RunJob::from_manifest(run).unwrap_or(
        if summary.objectives.iter().any(|o| matches!(o, RunObjective::Dimension(_))) {
            RunJob::Dpo
        } else {
            RunJob::Ppo
        },
    );
    format!("panacea {} {} ({name})", job.short().to_uppercase(), summary.aggregation())
}
