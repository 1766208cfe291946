//! `eval-front --compare rs,dps`: the baselines of method.md §9, trained by the Panacea run's
//! own trainer (PPO or DPO, read from its `manifest.json`) with the run's own resolved config,
//! at equal total compute.
//!
//! - **Rewarded Soups** (`rs`): one model per objective i, trained at the fixed λ = e_i for
//!   S/K steps each (S = the Panacea run's steps, K objectives); evaluated by interpolating
//!   the merged ΔW (see eval_front.rs).
//! - **DPS** (`dps`): one scalarised model per λ of the Das–Dennis lattice with H = 2 (K = 2:
//!   e_1, (½, ½), e_2), S/n steps each for n models; a grid λ is answered by the model trained
//!   at the nearest lattice λ.
//!
//! Every member is the Panacea run's config with `preference = { kind: fixed, weights: λ }`,
//! one λ per step (`train.preference_per_row=false`) and `train.steps = S/n`. DPO members also
//! get `aggregation = { kind: linear }`:
//! DPS is the LS-scalarised objective (method.md §9), and at a vertex λ = e_i linear and
//! Tchebycheff (z = 0) are the same loss L_i. So an LS and a Tchebycheff Panacea DPO run of
//! one config have the same baselines, and one report compares both with them (the
//! Tchebycheff run as a second `--adapter`; see eval_front.rs).
//!
//! Runs go to `<panacea run>/baselines/<date>-<name>/` (`rs-0`, `rs-1`, `dps-0`, …). A
//! finished run of the same name and step count there is reused, so a second `--compare` only
//! evaluates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use panacea_core::device::DeviceChoice;
use panacea_core::{PreferenceSampler, PreferenceVector};
use panacea_dpo::DpoRunConfig;
use panacea_rlhf::config::TrainPpoConfig;

use crate::eval_front::{DpsSpec, SoupSpec};
use crate::train_ppo::Trained;
use crate::{train_dpo, train_ppo};

/// A baseline `--compare` can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Baseline {
    /// Rewarded Soups.
    Rs,
    /// Discrete policy set.
    Dps,
}

impl std::str::FromStr for Baseline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "rs" => Ok(Self::Rs),
            "dps" => Ok(Self::Dps),
            other => Err(format!("unknown baseline {other:?}; known: rs, dps")),
        }
    }
}

/// Which trainer wrote a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunJob {
    /// `panacea train-ppo`.
    Ppo,
    /// `panacea train-dpo`.
    Dpo,
}

impl RunJob {
    /// The `job` field of `manifest.json` this trainer writes.
    pub(crate) fn manifest_name(self) -> &'static str {
        match self {
            RunJob::Ppo => "train-ppo",
            RunJob::Dpo => "train-dpo",
        }
    }

    /// `ppo` or `dpo`.
    pub(crate) fn short(self) -> &'static str {
        match self {
            RunJob::Ppo => "ppo",
            RunJob::Dpo => "dpo",
        }
    }

    /// The job named in `run/manifest.json`, if the file is there and names PPO or DPO.
    pub(crate) fn from_manifest(run: &Path) -> Option<RunJob> {
        let text = std::fs::read_to_string(run.join("manifest.json")).ok()?;
        let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
        match manifest.get("job")?.as_str()? {
            "train-ppo" => Some(RunJob::Ppo),
            "train-dpo" => Some(RunJob::Dpo),
            _ => None,
        }
    }

    /// The objective count and step budget of `config`, read as this trainer's config.
    fn counts(self, config: &Path) -> Result<(usize, u64)> {
        Ok(match self {
            RunJob::Ppo => {
                let cfg: TrainPpoConfig = panacea_core::config::load_config(config, &[])?;
                (cfg.objectives.len(), cfg.train.steps)
            }
            RunJob::Dpo => {
                let cfg: DpoRunConfig = panacea_core::config::load_config(config, &[])?;
                (cfg.k(), cfg.train.steps)
            }
        })
    }

    /// The run's job with its objective count and step budget, reading `config.yaml` once:
    /// the job from the manifest, else whichever trainer's config the file is.
    pub(crate) fn of_run(run: &Path) -> Result<(RunJob, usize, u64)> {
        let config = run.join("config.yaml");
        if let Some(job) = Self::from_manifest(run) {
            let (k, steps) = job.counts(&config).with_context(|| {
                format!(
                    "--compare trains the baselines with the Panacea run's config, and {} is \
                     not a {} config (the run's manifest says {})",
                    config.display(),
                    job.short(),
                    job.manifest_name()
                )
            })?;
            return Ok((job, k, steps));
        }
        for job in [RunJob::Dpo, RunJob::Ppo] {
            if let Ok((k, steps)) = job.counts(&config) {
                return Ok((job, k, steps));
            }
        }
        bail!(
            "{} is neither a PPO nor a DPO run folder (no manifest.json naming train-ppo or \
             train-dpo, and {} is neither trainer's config)\nhint: pass --latest-ppo-run, \
             --latest-dpo-run or an --adapter inside a training run's folder \
             (<run>/checkpoints/step-N)",
            run.display(),
            config.display()
        )
    }
}

/// The baselines' specs, ready for evaluation.
#[derive(Debug, Default)]
pub(crate) struct Baselines {
    /// Rewarded Soups, when asked for.
    pub(crate) soup: Option<SoupSpec>,
    /// DPS, when asked for.
    pub(crate) dps: Option<DpsSpec>,
}

/// Trains (or reuses) the requested baselines of the PPO or DPO run in `panacea_run`. `steps`
/// overrides the total step budget S (default: the run's `train.steps`).
pub(crate) fn train_baselines(
    panacea_run: &Path,
    which: &[Baseline],
    steps: Option<u64>,
    device: Option<DeviceChoice>,
) -> Result<Baselines> {
    let (job, k, run_steps) = RunJob::of_run(panacea_run)?;
    let config = panacea_run.join("config.yaml");
    let total = steps.unwrap_or(run_steps);
    let family = Family { job, config, root: panacea_run.join("baselines"), total, device };
    let mut out = Baselines::default();
    for b in which {
        match b {
            Baseline::Rs => {
                let members: Vec<PreferenceVector> =
                    (0..k).map(|i| PreferenceVector::vertex(k, i)).collect::<Result<_, _>>()?;
                let adapters = family.train_members("rs", &members)?;
                out.soup = Some(SoupSpec { label: "rewarded-soups".into(), adapters });
            }
            Baseline::Dps => {
                let members = PreferenceSampler::DasDennis { h: 2 }.grid(k)?;
                let adapters = family.train_members("dps", &members)?;
                out.dps = Some(DpsSpec {
                    label: "dps".into(),
                    members: members.into_iter().zip(adapters).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// What every member of one `--compare` shares.
struct Family {
    /// The Panacea run's trainer.
    job: RunJob,
    /// The Panacea run's resolved config.
    config: PathBuf,
    /// `<panacea run>/baselines`.
    root: PathBuf,
    /// Total steps S of one baseline family.
    total: u64,
    device: Option<DeviceChoice>,
}

impl Family {
    /// One fixed-λ run per member with `total / members` steps each (at least 1); returns the
    /// final adapter folder of each.
    fn train_members(&self, kind: &str, members: &[PreferenceVector]) -> Result<Vec<PathBuf>> {
        let steps = (self.total / members.len() as u64).max(1);
        let mut adapters = Vec::with_capacity(members.len());
        for (j, pref) in members.iter().enumerate() {
            let name = format!("{kind}-{j}");
            let checkpoint = |run: &Path| run.join(format!("checkpoints/step-{steps:06}"));
            if let Some(run) = finished_run(&self.root, &name, &checkpoint) {
                eprintln!("{kind}: reusing {} (λ = {pref})", run.display());
                adapters.push(checkpoint(&run));
                continue;
            }
            eprintln!(
                "{kind}: training member {} of {} at λ = {pref} for {steps} {} steps",
                j + 1,
                members.len(),
                self.job.short()
            );
            let trained = self.train_one(pref, steps, name)?;
            if trained.interrupted {
                bail!(
                    "interrupted while training the {kind} baseline; run --compare again to \
                     continue"
                );
            }
            adapters.push(checkpoint(&trained.run_dir));
        }
        Ok(adapters)
    }

    /// Trains one member: the Panacea run's config at the fixed λ `pref` for `steps` steps.
    fn train_one(&self, pref: &PreferenceVector, steps: u64, name: String) -> Result<Trained> {
        let weights: Vec<String> = pref.as_slice().iter().map(|w| format!("{w}")).collect();
        let fixed = format!("preference={{kind: fixed, weights: [{}]}}", weights.join(", "));
        let (config, root) = (self.config.clone(), self.root.clone());
        match self.job {
            RunJob::Ppo => train_ppo::train(train_ppo::Args::new_run(
                config,
                vec![
                    fixed,
                    "train.preference_per_row=false".into(),
                    format!("train.steps={steps}"),
                ],
                self.device,
                root,
                name,
            )),
            RunJob::Dpo => train_dpo::train(train_dpo::Args::new_run(
                config,
                vec![
                    fixed,
                    "train.preference_per_row=false".into(),
                    "aggregation={kind: linear}".into(),
                    format!("train.steps={steps}"),
                ],
                self.device,
                root,
                name,
            ))
            .map(|t| Trained { run_dir: t.run_dir, interrupted: t.interrupted }),
        }
    }
}

/// The newest run folder under `root` named `<date>-<name>` that holds `checkpoint(run)`.
fn finished_run(root: &Path, name: &str, checkpoint: &dyn Fn(&Path) -> PathBuf) -> Option<PathBuf> {
    let suffix = format!("-{name}");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .filter(|p| checkpoint(p).join(panacea_core::checkpoint::CONFIG_FILE).is_file())
        .collect();
    runs.sort();
    runs.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trains RS and DPS for the Panacea run `panacea` (S steps, K = 2) and checks: RS is two
    /// runs of S/2 steps at e_1, e_2, DPS three of S/3 steps at e_1, (½, ½), e_2; each member
    /// is a run of the same job whose resolved config holds its fixed λ (read by
    /// `fixed_pref`); a second call trains nothing and returns the same folders.
    #[track_caller]
    fn check_baselines(
        panacea: &Path,
        job: RunJob,
        (rs_step, dps_step): (&str, &str),
        fixed_pref: impl Fn(&Path) -> PreferenceSampler,
    ) {
        let which = [Baseline::Rs, Baseline::Dps];
        let b = train_baselines(panacea, &which, None, Some(DeviceChoice::Cpu)).expect("train");
        let soup = b.soup.expect("rs");
        assert_eq!(soup.adapters.len(), 2);
        for a in &soup.adapters {
            assert!(a.ends_with(rs_step), "{}", a.display());
        }
        let dps = b.dps.expect("dps");
        let prefs: Vec<Vec<f64>> = dps.members.iter().map(|(p, _)| p.as_slice().to_vec()).collect();
        assert_eq!(prefs.len(), 3);
        assert!(prefs.contains(&vec![0.5, 0.5]), "{prefs:?}");
        for (pref, adapter) in &dps.members {
            assert!(adapter.ends_with(dps_step), "{}", adapter.display());
            let run = adapter.parent().and_then(Path::parent).expect("run folder");
            assert_eq!(RunJob::from_manifest(run), Some(job));
            assert_eq!(
                fixed_pref(&run.join("config.yaml")),
                PreferenceSampler::Fixed { weights: pref.as_slice().to_vec() }
            );
        }
        let count = || std::fs::read_dir(panacea.join("baselines")).expect("ls").count();
        let before = count();
        assert_eq!(before, 5);
        let again = train_baselines(panacea, &which, None, Some(DeviceChoice::Cpu)).expect("reuse");
        assert_eq!(count(), before, "a second --compare must reuse the finished runs");
        assert_eq!(again.soup.expect("rs").adapters, soup.adapters);
    }

    /// On the tiny PPO config (4 steps): RS trains K = 2 fixed-λ runs of 2 steps, DPS three of
    /// 1 step, reused the second time. Needs the cached SmolLM2 tokenizer.
    #[test]
    fn baselines_train_fixed_preference_runs_at_equal_compute_and_are_reused() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let runs = std::env::temp_dir().join(format!("panacea-baselines-{}", std::process::id()));
        let args = train_ppo::Args::new_run(
            root.join("configs/tiny/ppo.yaml"),
            vec!["train.steps=4".into()],
            Some(DeviceChoice::Cpu),
            runs.clone(),
            "ppo".into(),
        );
        let panacea = train_ppo::train(args).expect("panacea run").run_dir;
        check_baselines(&panacea, RunJob::Ppo, ("step-000002", "step-000001"), |config| {
            let cfg: TrainPpoConfig =
                panacea_core::config::load_config(config, &[]).expect("config");
            assert!(!cfg.train.preference_per_row);
            cfg.preference
        });
        std::fs::remove_dir_all(&runs).expect("clean up");
    }

    /// The same for a Tchebycheff DPO run (the tiny DPO config on `tiny-random`, 4 steps):
    /// the members are DPO runs (RS 2 × 2 steps, DPS 3 × 1 step), one shared λ per step,
    /// linear aggregation, and every logged step's λ is the member's fixed one.
    #[test]
    fn dpo_baselines_train_fixed_preference_dpo_runs_at_equal_compute_and_are_reused() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        let runs =
            std::env::temp_dir().join(format!("panacea-dpo-baselines-{}", std::process::id()));
        let panacea = train_dpo::train(train_dpo::Args::new_run(
            root.join("configs/tiny/dpo.yaml"),
            crate::test_support::tiny_dpo_sets(&runs, &["train.steps=4"]),
            Some(DeviceChoice::Cpu),
            runs.clone(),
            "dpo".into(),
        ))
        .expect("panacea run")
        .run_dir;
        check_baselines(&panacea, RunJob::Dpo, ("step-000002", "step-000001"), |config| {
            let cfg: DpoRunConfig = panacea_core::config::load_config(config, &[]).expect("config");
            assert!(!cfg.train.preference_per_row);
            assert_eq!(cfg.aggregation, panacea_core::Aggregation::Linear);
            let PreferenceSampler::Fixed { weights } = &cfg.preference else {
                panic!("{:?}", cfg.preference)
            };
            let run = config.parent().expect("run");
            let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
            let logged: Vec<Vec<f64>> = metrics
                .lines()
                .filter_map(|l| {
                    let j: serde_json::Value = serde_json::from_str(l).ok()?;
                    Some(vec![j["dpo/pref/helpful"].as_f64()?, j["dpo/pref/harmless"].as_f64()?])
                })
                .collect();
            assert_eq!(
                logged,
                vec![weights.clone(); cfg.train.steps as usize],
                "{}",
                run.display()
            );
            cfg.preference
        });
        std::fs::remove_dir_all(&runs).expect("clean up");
    }
}
