//! Baseline families trained from the Panacea run's typed config: the members' λ, their step
//! budgets (equal total compute), their fixed-λ configs, and reuse of finished members. The
//! trainer here records what it is asked and writes the run folder a trainer would (manifest,
//! config, a complete checkpoint); the last two tests train the members with the real loops.

use std::path::{Path, PathBuf};

use panacea_core::{Aggregation, PreferenceSampler};
use panacea_front::{
    train_baselines, Baseline, FrontError, JobTrainer, MemberRun, MemberTrainer, RunConfig, RunJob,
};
use panacea_run::{Manifest, Observer, Silent, Trained};

use crate::support::{temp_dir, workspace};

/// Writes the run folder of a finished member at its config's last step.
struct RecordingTrainer {
    trained: Vec<(String, RunConfig)>,
}

impl MemberTrainer for RecordingTrainer {
    fn train(
        &mut self,
        member: &MemberRun<'_>,
        _observer: &mut dyn Observer,
    ) -> Result<Trained, FrontError> {
        let run_dir = member.runs_dir.join(format!("2026-12-07-1200-{}", member.name));
        let steps = member.config.steps();
        let checkpoint = run_dir.join(format!("checkpoints/step-{steps:06}"));
        std::fs::create_dir_all(&checkpoint).expect("mkdir");
        std::fs::write(checkpoint.join(panacea_run::LOOP_STATE_FILE), "{}").expect("state");
        let manifest = Manifest::now(member.config.job().manifest_name(), "cpu", 0);
        std::fs::write(run_dir.join("manifest.json"), serde_json::to_string(&manifest).unwrap())
            .expect("manifest");
        self.trained.push((member.name.to_owned(), member.config.clone()));
        Ok(Trained { run_dir, step: steps, checkpoint: Some(checkpoint), interrupted: false })
    }
}

/// A Panacea run folder holding `config` (a bundled tiny config) as its resolved config, with
/// a manifest naming `job`, and `train.steps` = 4.
fn panacea_run(root: &Path, config: &str, job: RunJob) -> PathBuf {
    let run = root.join("2026-12-07-1100-panacea");
    std::fs::create_dir_all(&run).expect("mkdir");
    let path = workspace().join(config);
    let sets = ["train.steps=4".to_owned()];
    let yaml = match job {
        RunJob::Ppo => {
            let c: panacea_rlhf::config::TrainPpoConfig =
                panacea_core::config::load_config(&path, &sets).expect("ppo config");
            panacea_core::config::to_yaml(&c)
        }
        RunJob::Dpo => {
            let c: panacea_dpo::DpoRunConfig =
                panacea_core::config::load_config(&path, &sets).expect("dpo config");
            panacea_core::config::to_yaml(&c)
        }
    }
    .expect("yaml");
    std::fs::write(run.join("config.yaml"), yaml).expect("config");
    let manifest = Manifest::now(job.manifest_name(), "cpu", 0);
    std::fs::write(run.join("manifest.json"), serde_json::to_string(&manifest).unwrap())
        .expect("manifest");
    run
}

/// RS: K = 2 members at e_1, e_2 with S/2 = 2 steps; DPS: 3 members at e_1, (½, ½), e_2 with
/// S/3 = 1 step; each member's config is the run's own at its fixed λ, one λ per step; a second
/// call trains nothing and returns the same folders.
fn check_family(config: &str, job: RunJob, check: impl Fn(&RunConfig, &[f64])) {
    let root = temp_dir(&format!("baselines-{}", job.short()));
    let run = panacea_run(&root, config, job);
    let mut trainer = RecordingTrainer { trained: Vec::new() };
    let which = [Baseline::Rs, Baseline::Dps];
    let b = train_baselines(&run, &which, None, &mut trainer, &mut Silent).expect("train");
    let soup = b.soup.expect("rs");
    assert_eq!(soup.label, "rewarded-soups");
    assert_eq!(soup.adapters.len(), 2);
    for a in &soup.adapters {
        assert!(a.starts_with(run.join("baselines")), "{}", a.display());
        assert!(a.ends_with("checkpoints/step-000002"), "{}", a.display());
    }
    let dps = b.dps.expect("dps");
    let prefs: Vec<Vec<f64>> = dps.members.iter().map(|(p, _)| p.as_slice().to_vec()).collect();
    assert_eq!(prefs, [vec![0.0, 1.0], vec![0.5, 0.5], vec![1.0, 0.0]]);
    for (_, adapter) in &dps.members {
        assert!(adapter.ends_with("checkpoints/step-000001"), "{}", adapter.display());
    }
    let names: Vec<&str> = trainer.trained.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["rs-0", "rs-1", "dps-0", "dps-1", "dps-2"]);
    let wanted = [vec![1.0, 0.0], vec![0.0, 1.0]].into_iter().chain(prefs.iter().cloned());
    for ((_, cfg), pref) in trainer.trained.iter().zip(wanted) {
        assert_eq!(cfg.job(), job);
        assert_eq!(*cfg.preference(), PreferenceSampler::Fixed { weights: pref.clone() });
        check(cfg, &pref);
    }
    let steps: Vec<u64> = trainer.trained.iter().map(|(_, c)| c.steps()).collect();
    assert_eq!(steps, [2, 2, 1, 1, 1], "S/n steps per member: equal total compute");
    let again = train_baselines(&run, &which, None, &mut trainer, &mut Silent).expect("reuse");
    assert_eq!(trainer.trained.len(), 5, "a second comparison reuses the finished members");
    assert_eq!(again.soup.expect("rs").adapters, soup.adapters);
    // Another step budget is another family: trained anew.
    let more =
        train_baselines(&run, &[Baseline::Rs], Some(8), &mut trainer, &mut Silent).expect("train");
    assert_eq!(trainer.trained.len(), 7);
    assert!(more.soup.expect("rs").adapters[0].ends_with("step-000004"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn ppo_baselines_are_fixed_preference_members_of_the_runs_config() {
    check_family("configs/tiny/ppo.yaml", RunJob::Ppo, |cfg, _| {
        let RunConfig::Ppo(c) = cfg else { panic!("{cfg:?}") };
        assert!(!c.train.preference_per_row, "one λ per step");
    });
}

#[test]
fn dpo_baselines_are_linear_fixed_preference_members_of_the_runs_config() {
    check_family("configs/tiny/dpo.yaml", RunJob::Dpo, |cfg, _| {
        let RunConfig::Dpo(c) = cfg else { panic!("{cfg:?}") };
        assert!(!c.train.preference_per_row, "one λ per step");
        assert_eq!(c.aggregation, Aggregation::Linear, "DPS is the LS objective");
    });
}

#[test]
fn a_folder_that_is_no_training_run_is_refused_with_a_hint() {
    let root = temp_dir("baselines-none");
    let mut trainer = RecordingTrainer { trained: Vec::new() };
    let err = train_baselines(&root, &[Baseline::Rs], None, &mut trainer, &mut Silent)
        .expect_err("no run");
    assert!(format!("{err}").contains("neither a PPO nor a DPO run folder"), "{err}");
    assert!(trainer.trained.is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

/// Trains RS and DPS for the Panacea run `panacea` (S = 4 steps, K = 2) with the real loops
/// ([`JobTrainer`]) and checks: RS is two runs of 2 steps, DPS three of 1 step; each member is
/// a run of the same job whose resolved config holds its fixed λ (read by `fixed_pref`); a
/// second call trains nothing and returns the same folders.
#[track_caller]
fn check_trained_family(
    panacea: &Path,
    job: RunJob,
    fixed_pref: impl Fn(&Path) -> PreferenceSampler,
) {
    let which = [Baseline::Rs, Baseline::Dps];
    let mut trainer = JobTrainer::default();
    let b = train_baselines(panacea, &which, None, &mut trainer, &mut Silent).expect("train");
    let soup = b.soup.expect("rs");
    assert_eq!(soup.adapters.len(), 2);
    for a in &soup.adapters {
        assert!(a.ends_with("step-000002"), "{}", a.display());
    }
    let dps = b.dps.expect("dps");
    assert_eq!(dps.members.len(), 3);
    for (pref, adapter) in &dps.members {
        assert!(adapter.ends_with("step-000001"), "{}", adapter.display());
        let run = adapter.parent().and_then(Path::parent).expect("run folder");
        assert_eq!(RunJob::from_manifest(run), Some(job));
        assert_eq!(
            fixed_pref(&run.join("config.yaml")),
            PreferenceSampler::Fixed { weights: pref.as_slice().to_vec() }
        );
    }
    let count = || std::fs::read_dir(panacea.join("baselines")).expect("ls").count();
    assert_eq!(count(), 5);
    let again = train_baselines(panacea, &which, None, &mut trainer, &mut Silent).expect("reuse");
    assert_eq!(count(), 5, "a second comparison must reuse the finished runs");
    assert_eq!(again.soup.expect("rs").adapters, soup.adapters);
}

/// On the tiny PPO config (4 steps): RS trains K = 2 fixed-λ PPO runs of 2 steps, DPS three
/// of 1 step, reused the second time.
#[test]
fn ppo_baselines_are_trained_by_train_ppo_and_reused() {
    if !crate::support::smollm2_available() {
        return;
    }
    let runs = temp_dir("baselines-ppo-real");
    let cfg = crate::support::tiny_ppo(&["train.steps=4"]);
    let opts = panacea_run::RunOptions::new(&runs).named("ppo");
    let panacea = panacea_rlhf::train_ppo(&cfg, &opts, &mut Silent).expect("panacea run").run_dir;
    check_trained_family(&panacea, RunJob::Ppo, |config| {
        let cfg: panacea_rlhf::TrainPpoConfig =
            panacea_core::config::load_config(config, &[]).expect("config");
        assert!(!cfg.train.preference_per_row);
        cfg.preference
    });
    let _ = std::fs::remove_dir_all(&runs);
}

/// The same for a Tchebycheff DPO run (the tiny DPO config on `tiny-random`, 4 steps): the
/// members are DPO runs, one shared λ per step, linear aggregation, and every logged step's λ
/// is the member's fixed one.
#[test]
fn dpo_baselines_are_trained_by_train_dpo_and_reused() {
    if !crate::support::smollm2_available() {
        return;
    }
    let runs = temp_dir("baselines-dpo-real");
    let cfg = crate::support::tiny_dpo(&runs, &["train.steps=4"]);
    let opts = panacea_run::RunOptions::new(&runs).named("dpo");
    let panacea = panacea_dpo::train_dpo(&cfg, &opts, &mut Silent).expect("panacea run").run_dir;
    check_trained_family(&panacea, RunJob::Dpo, |config| {
        let cfg: panacea_dpo::DpoRunConfig =
            panacea_core::config::load_config(config, &[]).expect("config");
        assert!(!cfg.train.preference_per_row);
        assert_eq!(cfg.aggregation, Aggregation::Linear);
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
        assert_eq!(logged, vec![weights.clone(); cfg.train.steps as usize], "{}", run.display());
        cfg.preference
    });
    let _ = std::fs::remove_dir_all(&runs);
}
