//! The baselines a Panacea run is compared with, trained by the run's own trainer (PPO or DPO,
//! read from its manifest) from its own resolved config, at equal total compute:
//!
//! - **Rewarded Soups** (`rs`): one model per objective i, trained at the fixed λ = e_i for
//!   S/K steps each (S = the Panacea run's steps, K objectives); evaluated by interpolating
//!   the merged ΔW ([`crate::SoupSpec`]).
//! - **DPS** (`dps`): one scalarised model per λ of the Das–Dennis lattice with H = 2 (K = 2:
//!   e_1, (½, ½), e_2), S/n steps each for n models; reported at its members' λ.
//!
//! Every member is the Panacea run's typed config with `preference = { kind: fixed, weights:
//! λ }`, one λ per step (no per-row preference) and `train.steps = S/n`. DPO members also
//! aggregate linearly: DPS is the LS-scalarised objective, and at a vertex λ = e_i linear and
//! Tchebycheff (z = 0) are the same loss L_i, so an LS and a Tchebycheff Panacea DPO run of one
//! config share their baselines and one report compares both with them.
//!
//! Runs go to `<panacea run>/baselines/<date>-<name>/` (`rs-0`, `rs-1`, `dps-0`, …). A
//! finished run of the same name and step count there is reused, so a second comparison only
//! evaluates.

use std::path::{Path, PathBuf};

use panacea_core::device::DeviceChoice;
use panacea_core::{Aggregation, PreferenceSampler, PreferenceVector};
use panacea_dpo::DpoRunConfig;
use panacea_rlhf::config::TrainPpoConfig;
use panacea_run::{Event, Observer, RunOptions, StopFlag, Trained};

use crate::error::{Context, FrontError, Result};
use crate::method::{DpsSpec, SoupSpec};
use crate::runs::RunJob;

/// A baseline the comparison can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Rewarded Soups.
    Rs,
    /// Discrete policy set.
    Dps,
}

impl Baseline {
    /// Its name in the report (`rewarded-soups`, `dps`).
    pub fn label(self) -> &'static str {
        match self {
            Baseline::Rs => "rewarded-soups",
            Baseline::Dps => "dps",
        }
    }
}

impl std::str::FromStr for Baseline {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "rs" => Ok(Self::Rs),
            "dps" => Ok(Self::Dps),
            other => Err(format!("unknown baseline {other:?}; known: rs, dps")),
        }
    }
}

/// A training run's resolved config, typed by its trainer.
#[derive(Debug, Clone)]
pub enum RunConfig {
    /// A `train-ppo` config.
    Ppo(Box<TrainPpoConfig>),
    /// A `train-dpo` config.
    Dpo(Box<DpoRunConfig>),
}

impl RunConfig {
    /// Reads `config` as `job`'s config.
    fn load(job: RunJob, config: &Path) -> Result<RunConfig> {
        Ok(match job {
            RunJob::Ppo => RunConfig::Ppo(Box::new(
                panacea_core::config::load_config(config, &[])
                    .map_err(panacea_core::CoreError::from)?,
            )),
            RunJob::Dpo => {
                let mut cfg: DpoRunConfig = panacea_core::config::load_config(config, &[])
                    .map_err(panacea_core::CoreError::from)?;
                // Relative data paths as a resumed run reads them: from the run folder, the
                // current folder, then the workspace.
                cfg.config_dir = config.parent().map(Path::to_path_buf);
                RunConfig::Dpo(Box::new(cfg))
            }
        })
    }

    /// The config of the run folder `run`: its manifest's trainer, else whichever trainer's
    /// config `config.yaml` is.
    pub fn of_run(run: &Path) -> Result<RunConfig> {
        let config = run.join(panacea_run::CONFIG_FILE);
        if let Some(job) = RunJob::from_manifest(run) {
            return Self::load(job, &config).context_with(|| {
                format!(
                    "the baselines are trained with the Panacea run's config, and {} is not a \
                     {} config (the run's manifest says {})",
                    config.display(),
                    job.short(),
                    job.manifest_name()
                )
            });
        }
        for job in [RunJob::Dpo, RunJob::Ppo] {
            if let Ok(cfg) = Self::load(job, &config) {
                return Ok(cfg);
            }
        }
        Err(FrontError::Invalid(format!(
            "{} is neither a PPO nor a DPO run folder (no manifest.json naming train-ppo or \
             train-dpo, and {} is neither trainer's config)\nhint: name the Panacea run with \
             --latest-ppo-run, --latest-dpo-run or an --adapter inside a training run's folder \
             (<run>/checkpoints/step-N)",
            run.display(),
            config.display()
        )))
    }

    /// The trainer.
    pub fn job(&self) -> RunJob {
        match self {
            RunConfig::Ppo(_) => RunJob::Ppo,
            RunConfig::Dpo(_) => RunJob::Dpo,
        }
    }

    /// Number of objectives K.
    pub fn n_objectives(&self) -> usize {
        match self {
            RunConfig::Ppo(c) => c.objectives.len(),
            RunConfig::Dpo(c) => c.k(),
        }
    }

    /// The step budget `train.steps`.
    pub fn steps(&self) -> u64 {
        match self {
            RunConfig::Ppo(c) => c.train.steps,
            RunConfig::Dpo(c) => c.train.steps,
        }
    }

    /// The preference sampler it trains with.
    pub fn preference(&self) -> &PreferenceSampler {
        match self {
            RunConfig::Ppo(c) => &c.preference,
            RunConfig::Dpo(c) => &c.preference,
        }
    }

    /// A baseline member of this run: the same config at the fixed λ `pref`, one λ per step,
    /// for `steps` steps (DPO: linear aggregation, see the module docs).
    pub fn fixed_member(&self, pref: &PreferenceVector, steps: u64) -> RunConfig {
        let fixed = PreferenceSampler::Fixed { weights: pref.as_slice().to_vec() };
        match self {
            RunConfig::Ppo(c) => {
                let mut c = c.clone();
                c.preference = fixed;
                c.train.preference_per_row = false;
                c.train.steps = steps;
                RunConfig::Ppo(c)
            }
            RunConfig::Dpo(c) => {
                let mut c = c.clone();
                c.preference = fixed;
                c.train.preference_per_row = false;
                c.aggregation = Aggregation::Linear;
                c.train.steps = steps;
                RunConfig::Dpo(c)
            }
        }
    }
}

/// One baseline member to train: its typed config, the folder that receives its run folder,
/// and the run folder's name.
#[derive(Debug)]
pub struct MemberRun<'a> {
    /// The member's config.
    pub config: &'a RunConfig,
    /// `<panacea run>/baselines`.
    pub runs_dir: &'a Path,
    /// `rs-0`, `dps-2`, ...
    pub name: &'a str,
}

/// Trains one baseline member with its trainer's whole job (PPO or DPO) and reports how it
/// ended.
pub trait MemberTrainer {
    /// Trains `member` into a new run folder under `member.runs_dir` named after
    /// `member.name`.
    fn train(&mut self, member: &MemberRun<'_>, observer: &mut dyn Observer) -> Result<Trained>;
}

/// Trains members with the workspace's whole jobs: [`panacea_rlhf::train_ppo`] for PPO runs,
/// [`panacea_dpo::train_dpo`] for DPO runs.
#[derive(Debug, Default, Clone)]
pub struct JobTrainer {
    /// Runs the members on this device instead of their config's.
    pub device: Option<DeviceChoice>,
    /// Stops a member after its current step (with a checkpoint); the family then ends with
    /// [`FrontError::Interrupted`] and a later comparison continues it.
    pub stop: StopFlag,
}

impl MemberTrainer for JobTrainer {
    fn train(&mut self, member: &MemberRun<'_>, observer: &mut dyn Observer) -> Result<Trained> {
        let opts = RunOptions {
            stop: self.stop.clone(),
            ..RunOptions::new(member.runs_dir).named(member.name)
        };
        Ok(match member.config {
            RunConfig::Ppo(c) => {
                let mut cfg = (**c).clone();
                cfg.device = self.device.unwrap_or(cfg.device);
                panacea_rlhf::train_ppo(&cfg, &opts, observer)?
            }
            RunConfig::Dpo(c) => {
                let mut cfg = (**c).clone();
                cfg.device = self.device.unwrap_or(cfg.device);
                panacea_dpo::train_dpo(&cfg, &opts, observer)?
            }
        })
    }
}

/// The baselines, ready for evaluation.
#[derive(Debug, Default)]
pub struct Baselines {
    /// Rewarded Soups, when asked for.
    pub soup: Option<SoupSpec>,
    /// DPS, when asked for.
    pub dps: Option<DpsSpec>,
}

/// Trains (or reuses) the requested baselines of the PPO or DPO run in `panacea_run`. `steps`
/// overrides the total step budget S (default: the run's `train.steps`).
pub fn train_baselines(
    panacea_run: &Path,
    which: &[Baseline],
    steps: Option<u64>,
    trainer: &mut dyn MemberTrainer,
    observer: &mut dyn Observer,
) -> Result<Baselines> {
    let config = RunConfig::of_run(panacea_run)?;
    let k = config.n_objectives();
    let total = steps.unwrap_or_else(|| config.steps());
    let family = Family { config: &config, root: panacea_run.join("baselines"), total };
    let mut out = Baselines::default();
    for b in which {
        match b {
            Baseline::Rs => {
                let members: Vec<PreferenceVector> = (0..k)
                    .map(|i| PreferenceVector::vertex(k, i))
                    .collect::<std::result::Result<_, _>>()?;
                let adapters = family.train_members("rs", &members, trainer, observer)?;
                out.soup = Some(SoupSpec { label: b.label().into(), adapters });
            }
            Baseline::Dps => {
                let members = PreferenceSampler::DasDennis { h: 2 }.grid(k)?;
                let adapters = family.train_members("dps", &members, trainer, observer)?;
                out.dps = Some(DpsSpec {
                    label: b.label().into(),
                    members: members.into_iter().zip(adapters).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// What every member of one baseline family shares.
struct Family<'a> {
    /// The Panacea run's config.
    config: &'a RunConfig,
    /// `<panacea run>/baselines`.
    root: PathBuf,
    /// Total steps S of one baseline family.
    total: u64,
}

impl Family<'_> {
    /// One fixed-λ run per member with `total / members` steps each (at least 1); returns the
    /// final adapter folder of each.
    fn train_members(
        &self,
        kind: &str,
        members: &[PreferenceVector],
        trainer: &mut dyn MemberTrainer,
        observer: &mut dyn Observer,
    ) -> Result<Vec<PathBuf>> {
        let steps = (self.total / members.len() as u64).max(1);
        let mut adapters = Vec::with_capacity(members.len());
        for (j, pref) in members.iter().enumerate() {
            let name = format!("{kind}-{j}");
            if let Some(checkpoint) = finished_member(&self.root, &name, steps)? {
                observer.on_event(&Event::Message(&format!(
                    "{kind}: reusing {} (λ = {pref})",
                    checkpoint.display()
                )));
                adapters.push(checkpoint);
                continue;
            }
            observer.on_event(&Event::Phase(&format!(
                "{kind}: training member {} of {} at λ = {pref} for {steps} {} steps",
                j + 1,
                members.len(),
                self.config.job().short()
            )));
            let config = self.config.fixed_member(pref, steps);
            let member = MemberRun { config: &config, runs_dir: &self.root, name: &name };
            let trained = trainer.train(&member, observer)?;
            if trained.interrupted {
                return Err(FrontError::Interrupted { family: kind.to_owned() });
            }
            let checkpoint = panacea_run::latest_checkpoint(&trained.run_dir)?
                .filter(|c| c.step == steps)
                .ok_or_else(|| {
                    FrontError::NotFound(format!(
                        "{kind} member {} finished without a complete checkpoint at step {steps}",
                        trained.run_dir.display()
                    ))
                })?;
            adapters.push(checkpoint.dir);
        }
        Ok(adapters)
    }
}

/// The checkpoint at `steps` of the newest run folder under `root` named `<date>-<name>` whose
/// newest complete checkpoint (panacea-run's rule) is at `steps`.
fn finished_member(root: &Path, name: &str, steps: u64) -> Result<Option<PathBuf>> {
    let suffix = format!("-{name}");
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(None) };
    let mut runs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .collect();
    runs.sort();
    for run in runs.iter().rev() {
        if let Some(c) = panacea_run::latest_checkpoint(run)?.filter(|c| c.step == steps) {
            return Ok(Some(c.dir));
        }
    }
    Ok(None)
}
