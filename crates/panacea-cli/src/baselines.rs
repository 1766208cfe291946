//! `eval-front --compare rs,dps`: the baselines of method.md §9, trained by the same PPO loop
//! with the Panacea run's own config, at equal total compute.
//!
//! - **Rewarded Soups** (`rs`): one model per objective i, trained at the fixed λ = e_i for
//!   S/K steps each (S = the Panacea run's steps, K objectives); evaluated by interpolating
//!   the merged ΔW (see eval_front.rs).
//! - **DPS** (`dps`): one scalarised model per λ of the Das–Dennis lattice with H = 2 (K = 2:
//!   e_1, (½, ½), e_2), S/n steps each for n models; a grid λ is answered by the model trained
//!   at the nearest lattice λ.
//!
//! Runs go to `<panacea run>/baselines/<date>-<name>/`. A finished run of the same name and
//! step count there is reused, so a second `--compare` only evaluates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use panacea_core::device::DeviceChoice;
use panacea_core::{PreferenceSampler, PreferenceVector};
use panacea_rlhf::config::TrainPpoConfig;

use crate::eval_front::{DpsSpec, SoupSpec};
use crate::train_ppo;

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

/// The baselines' specs, ready for evaluation.
#[derive(Debug, Default)]
pub(crate) struct Baselines {
    /// Rewarded Soups, when asked for.
    pub(crate) soup: Option<SoupSpec>,
    /// DPS, when asked for.
    pub(crate) dps: Option<DpsSpec>,
}

/// Trains (or reuses) the requested baselines of the PPO run in `panacea_run`. `steps`
/// overrides the total step budget S (default: the run's `train.steps`).
pub(crate) fn train_baselines(
    panacea_run: &Path,
    which: &[Baseline],
    steps: Option<u64>,
    device: Option<DeviceChoice>,
) -> Result<Baselines> {
    let config = panacea_run.join("config.yaml");
    let cfg: TrainPpoConfig =
        panacea_core::config::load_config(&config, &[]).with_context(|| {
            format!(
                "--compare trains the baselines with the Panacea run's config, and {} is not one; \
             hint: pass --latest-ppo-run or an --adapter inside a PPO run folder",
                config.display()
            )
        })?;
    let k = cfg.objectives.len();
    let total = steps.unwrap_or(cfg.train.steps);
    let root = panacea_run.join("baselines");
    let mut out = Baselines::default();
    for b in which {
        match b {
            Baseline::Rs => {
                let members: Vec<PreferenceVector> =
                    (0..k).map(|i| PreferenceVector::vertex(k, i)).collect::<Result<_, _>>()?;
                let adapters = train_members(&config, &root, "rs", &members, total, device)?;
                out.soup = Some(SoupSpec { label: "rewarded-soups".into(), adapters });
            }
            Baseline::Dps => {
                let members = PreferenceSampler::DasDennis { h: 2 }.grid(k)?;
                let adapters = train_members(&config, &root, "dps", &members, total, device)?;
                out.dps = Some(DpsSpec {
                    label: "dps".into(),
                    members: members.into_iter().zip(adapters).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// One fixed-λ PPO run per member with `total / members` steps each (at least 1); returns the
/// final adapter folder of each.
fn train_members(
    config: &Path,
    root: &Path,
    kind: &str,
    members: &[PreferenceVector],
    total: u64,
    device: Option<DeviceChoice>,
) -> Result<Vec<PathBuf>> {
    let steps = (total / members.len() as u64).max(1);
    let mut adapters = Vec::with_capacity(members.len());
    for (j, pref) in members.iter().enumerate() {
        let weights: Vec<String> = pref.as_slice().iter().map(|w| format!("{w}")).collect();
        let name = format!("{kind}-{j}");
        let checkpoint = |run: &Path| run.join(format!("checkpoints/step-{steps:06}"));
        if let Some(run) = finished_run(root, &name, &checkpoint) {
            eprintln!("{kind}: reusing {} (λ = {pref})", run.display());
            adapters.push(checkpoint(&run));
            continue;
        }
        eprintln!(
            "{kind}: training member {} of {} at λ = {pref} for {steps} steps",
            j + 1,
            members.len()
        );
        let args = train_ppo::Args::new_run(
            config.to_owned(),
            vec![
                format!("preference={{kind: fixed, weights: [{}]}}", weights.join(", ")),
                "train.preference_per_row=false".into(),
                format!("train.steps={steps}"),
            ],
            device,
            root.to_owned(),
            name,
        );
        let trained = train_ppo::train(args)?;
        if trained.interrupted {
            bail!(
                "interrupted while training the {kind} baseline; run --compare again to continue"
            );
        }
        adapters.push(checkpoint(&trained.run_dir));
    }
    Ok(adapters)
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

    /// On the tiny PPO config (4 steps): RS trains K = 2 fixed-λ runs of 2 steps, DPS three of
    /// 1 step at e_1, (½, ½), e_2; each run's resolved config holds its fixed λ; a second call
    /// trains nothing and returns the same folders. Needs the cached SmolLM2 tokenizer.
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
        let which = [Baseline::Rs, Baseline::Dps];
        let b = train_baselines(&panacea, &which, None, Some(DeviceChoice::Cpu)).expect("train");
        let soup = b.soup.expect("rs");
        assert_eq!(soup.adapters.len(), 2);
        for a in &soup.adapters {
            assert!(a.ends_with("checkpoints/step-000002"), "{}", a.display());
        }
        let dps = b.dps.expect("dps");
        let prefs: Vec<Vec<f64>> = dps.members.iter().map(|(p, _)| p.as_slice().to_vec()).collect();
        assert_eq!(prefs.len(), 3);
        assert!(prefs.contains(&vec![0.5, 0.5]), "{prefs:?}");
        for (pref, adapter) in &dps.members {
            assert!(adapter.ends_with("checkpoints/step-000001"), "{}", adapter.display());
            let run = adapter.parent().and_then(Path::parent).expect("run folder");
            let cfg: TrainPpoConfig =
                panacea_core::config::load_config(&run.join("config.yaml"), &[]).expect("config");
            assert_eq!(
                cfg.preference,
                PreferenceSampler::Fixed { weights: pref.as_slice().to_vec() }
            );
        }
        let count = || std::fs::read_dir(panacea.join("baselines")).expect("ls").count();
        let before = count();
        assert_eq!(before, 5);
        let again =
            train_baselines(&panacea, &which, None, Some(DeviceChoice::Cpu)).expect("reuse");
        assert_eq!(count(), before, "a second --compare must reuse the finished runs");
        assert_eq!(again.soup.expect("rs").adapters, soup.adapters);
        std::fs::remove_dir_all(&runs).expect("clean up");
    }
}
