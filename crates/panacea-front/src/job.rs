//! The whole front-evaluation job: resolve what to compare ([`plan`]: the methods and their
//! labels, the Panacea run and the objectives it optimised, the baselines trained or reused),
//! load the base, evaluate, and write the report into a folder ([`execute`], [`run_front_job`]).

use std::path::{Path, PathBuf};

use panacea_core::config::{Validate, Validator};
use panacea_lm::LoadedModel;
use panacea_run::{Event, Observer};

use crate::baselines::{train_baselines, Baseline, MemberTrainer};
use crate::config::FrontConfig;
use crate::error::{io, Context, FrontError, Result};
use crate::evaluate::{check_base_models, evaluate};
use crate::method::{AdapterSpec, Method, SoupSpec};
use crate::report::{write_report, Written};
use crate::runs::{latest_adapter, run_label, run_of_adapter, trained_objectives, RunJob};

/// What one front-evaluation job is asked to compare (the command line, typed).
#[derive(Debug, Clone)]
pub struct FrontJob {
    /// The config, overrides applied (validated again once the objectives are settled).
    pub config: FrontConfig,
    /// True when the caller chose `objectives`; otherwise the Panacea run's own objectives
    /// are scored.
    pub objectives_chosen: bool,
    /// Native adapter folders, each one method.
    pub adapters: Vec<PathBuf>,
    /// Labels of `adapters`, in order (empty: each from its run, else its folder name).
    pub labels: Vec<String>,
    /// Rewarded Soups given as adapter folders (one per objective, in λ order).
    pub soups: Vec<Vec<PathBuf>>,
    /// Labels of `soups`, in order (empty: `rewarded-soups`, `rewarded-soups-2`, ...).
    pub soup_labels: Vec<String>,
    /// Evaluate the newest checkpoint of the latest run of this job under this folder.
    pub latest: Option<(PathBuf, RunJob)>,
    /// Baselines to train (or reuse) for the Panacea run.
    pub compare: Vec<Baseline>,
    /// Total steps of each baseline family (default: the Panacea run's `train.steps`).
    pub baseline_steps: Option<u64>,
}

impl FrontJob {
    /// A job that evaluates only the base model with `config`.
    pub fn new(config: FrontConfig) -> Self {
        Self {
            config,
            objectives_chosen: false,
            adapters: Vec::new(),
            labels: Vec::new(),
            soups: Vec::new(),
            soup_labels: Vec::new(),
            latest: None,
            compare: Vec::new(),
            baseline_steps: None,
        }
    }
}

/// What a job evaluates once resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The resolved, validated config (objectives set to what the Panacea run optimised,
    /// unless the job chose them).
    pub config: FrontConfig,
    /// Adapters (given, then the latest run's), soups (given, then a trained one), DPS.
    pub methods: Vec<Method>,
}

/// Resolves `job`: the methods and their labels, the Panacea run (the latest run, else the
/// run around the first adapter) and its objectives, and trains or reuses the baselines
/// with `trainer`.
pub fn plan(
    job: &FrontJob,
    trainer: &mut dyn MemberTrainer,
    observer: &mut dyn Observer,
) -> Result<Plan> {
    let mut cfg = job.config.clone();
    if !job.labels.is_empty() && job.labels.len() != job.adapters.len() {
        return Err(FrontError::Invalid(format!(
            "{} --label for {} --adapter\nhint: give one label per adapter, in the same order, \
             or none",
            job.labels.len(),
            job.adapters.len()
        )));
    }
    let mut adapters: Vec<AdapterSpec> = job
        .adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSpec {
            label: job.labels.get(i).cloned().unwrap_or_else(|| match run_of_adapter(a) {
                Some(run) => run_label(&run),
                None => a
                    .file_name()
                    .map_or_else(|| format!("adapter{i}"), |n| n.to_string_lossy().to_string()),
            }),
            adapter: a.clone(),
        })
        .collect();
    if !job.soup_labels.is_empty() && job.soup_labels.len() != job.soups.len() {
        return Err(FrontError::Invalid(format!(
            "{} --soup-label for {} --soup\nhint: give one label per soup, in the same order, \
             or none",
            job.soup_labels.len(),
            job.soups.len()
        )));
    }
    let mut soups: Vec<SoupSpec> = job
        .soups
        .iter()
        .enumerate()
        .map(|(i, s)| SoupSpec {
            label: job.soup_labels.get(i).cloned().unwrap_or_else(|| {
                if i == 0 {
                    Baseline::Rs.label().to_owned()
                } else {
                    format!("{}-{}", Baseline::Rs.label(), i + 1)
                }
            }),
            adapters: s.clone(),
        })
        .collect();
    // The Panacea run: the latest PPO or DPO run, else the run folder around the first
    // adapter (runs/<run>/checkpoints/step-N).
    let latest = match &job.latest {
        Some((runs, run_job)) => Some(latest_adapter(runs, *run_job)?),
        None => None,
    };
    if let Some((run, adapter)) = &latest {
        observer.on_event(&Event::Message(&format!(
            "evaluating {} (latest run {})",
            adapter.display(),
            run.display()
        )));
        adapters.push(AdapterSpec { label: run_label(run), adapter: adapter.clone() });
    }
    let panacea = latest.or_else(|| {
        let adapter = job.adapters.first()?;
        Some((run_of_adapter(adapter)?, adapter.clone()))
    });
    // Score what the Panacea run optimised (same settings, e.g. concise's c) unless the job
    // chose the scorers.
    if let (Some((run, adapter)), false) = (&panacea, job.objectives_chosen) {
        let trained = trained_objectives(run, adapter, observer)?;
        if trained != cfg.objectives {
            observer.on_event(&Event::Message(&format!(
                "scoring the run's objectives {trained:?} (from {})",
                run.display()
            )));
            cfg.objectives = trained;
        }
    }
    let mut v = Validator::new();
    cfg.validate(&mut v);
    v.finish("the resolved config").map_err(panacea_core::CoreError::from)?;
    let mut labels: Vec<&str> = std::iter::once("base")
        .chain(adapters.iter().map(|m| m.label.as_str()))
        .chain(soups.iter().map(|s| s.label.as_str()))
        .chain(job.compare.iter().map(|b| b.label()))
        .collect();
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        return Err(FrontError::Invalid(format!(
            "two methods would both be called {:?} in the report\nhint: name them with \
             --label / --soup-label (`base`, `rewarded-soups` and `dps` are taken by the base \
             model and the --compare baselines)",
            w[0]
        )));
    }
    let mut dps = None;
    if !job.compare.is_empty() {
        let (run, _) = panacea.ok_or_else(|| {
            FrontError::Invalid(
                "--compare needs a Panacea run; pass --latest-ppo-run DIR, --latest-dpo-run DIR \
                 or an --adapter inside a run folder"
                    .into(),
            )
        })?;
        let trained = train_baselines(&run, &job.compare, job.baseline_steps, trainer, observer)?;
        soups.extend(trained.soup);
        dps = trained.dps;
    }
    if adapters.is_empty() && soups.is_empty() && dps.is_none() {
        observer.on_event(&Event::Warning(
            "no adapter given; only the base model is evaluated (a one-point front)",
        ));
    }
    let methods = adapters
        .into_iter()
        .map(Method::Adapter)
        .chain(soups.into_iter().map(Method::Soup))
        .chain(dps.map(Method::Dps))
        .collect();
    Ok(Plan { config: cfg, methods })
}

/// Loads the base model of `cfg` on its device (`tiny-random` initialised from `seed`).
pub fn load_base(cfg: &FrontConfig) -> Result<LoadedModel> {
    let device = cfg.device.resolve()?;
    if cfg.model == panacea_lm::TINY_RANDOM {
        return Ok(panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())?);
    }
    panacea_lm::load_model(&cfg.model, device, cfg.dtype.kind())
        .context_with(|| format!("loading model {}", cfg.model))
}

/// Evaluates `plan` against the loaded base model and writes the report, the resolved
/// `config.yaml` and `command.txt` into `out`. Every adapter must have been trained on exactly
/// these base weights.
pub fn execute(
    plan: &Plan,
    base: &LoadedModel,
    out: &Path,
    command: &str,
    observer: &mut dyn Observer,
) -> Result<Written> {
    let cfg = &plan.config;
    let prompts = cfg.load_prompts()?;
    let base_hash = panacea_core::checkpoint::hash_var_store(&base.base_vs)?;
    let folders: Vec<&Path> = plan.methods.iter().flat_map(Method::adapter_folders).collect();
    check_base_models(&folders, &cfg.model, &base_hash)?;
    std::fs::create_dir_all(out).map_err(io("creating", out))?;
    let config_path = out.join(panacea_run::CONFIG_FILE);
    std::fs::write(
        &config_path,
        panacea_core::config::to_yaml(cfg).map_err(panacea_core::CoreError::from)?,
    )
    .map_err(io("writing", &config_path))?;
    let command_path = out.join("command.txt");
    std::fs::write(&command_path, format!("{command}\n")).map_err(io("writing", &command_path))?;
    observer.on_event(&Event::Phase("evaluating the front"));
    let ev = evaluate(cfg, base, &plan.methods, &prompts, observer)?;
    write_report(&ev, cfg, out)
}

/// A fresh `<runs>/<yyyy-mm-dd-HHMM>-eval-front[-n]` folder path (not yet created).
pub fn default_out_dir(runs: &Path) -> PathBuf {
    let base = format!("{}-eval-front", panacea_run::utc_stamp(panacea_run::now_secs()).0);
    let mut dir = runs.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = runs.join(format!("{base}-{n}"));
        n += 1;
    }
    dir
}

/// The whole job: plan (baselines included), load the base, evaluate, write the report into
/// `out`. `command` is recorded in `command.txt`.
pub fn run_front_job(
    job: &FrontJob,
    out: &Path,
    command: &str,
    trainer: &mut dyn MemberTrainer,
    observer: &mut dyn Observer,
) -> Result<Written> {
    let plan = plan(job, trainer, observer)?;
    if plan.config.threads > 0 {
        tch::set_num_threads(plan.config.threads as i32);
    }
    observer.on_event(&Event::Phase(&format!(
        "loading {} on {:?} ({})",
        plan.config.model, plan.config.device, plan.config.dtype
    )));
    let base = load_base(&plan.config)?;
    execute(&plan, &base, out, command, observer)
}
