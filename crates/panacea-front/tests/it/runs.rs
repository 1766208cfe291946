//! Training runs as the front evaluation reads them: the latest run of a job (panacea-run's
//! one rule), the gold scorers of what a run optimised, and run labels.

use std::path::Path;

use panacea_core::ObjectiveKind;
use panacea_data::ScorerSpec;
use panacea_front::{latest_adapter, run_label, trained_objectives, FrontObjective, RunJob};
use panacea_run::{Manifest, Silent};

use crate::support::temp_dir;

/// Makes `root/<run>/checkpoints/step-N` a complete checkpoint (its loop state is written).
fn checkpoint(root: &Path, run: &str, step: u64) {
    let dir = root.join(run).join(format!("checkpoints/step-{step:06}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(panacea_run::LOOP_STATE_FILE), "{}").expect("write");
}

/// Writes `root/<run>/manifest.json` naming `job`, started at `started`.
fn manifest(root: &Path, run: &str, job: &str, started: &str) {
    let mut m = Manifest::now(job, "cpu", 1);
    m.started_utc = started.to_owned();
    let text = serde_json::to_string(&m).expect("json");
    std::fs::write(root.join(run).join(panacea_run::MANIFEST_FILE), text).expect("write");
}

#[test]
fn latest_adapter_is_the_newest_complete_checkpoint_of_the_jobs_latest_run() {
    let root = temp_dir("latest");
    let missing = root.join("nothing-here");
    let err = latest_adapter(&missing, RunJob::Ppo).expect_err("no runs folder at all");
    assert!(format!("{err}").contains("hint: train one"), "{err}");
    checkpoint(&root, "2026-11-26-1000-ppo", 200);
    manifest(&root, "2026-11-26-1000-ppo", "train-ppo", "2026-11-26T10:00:00Z");
    checkpoint(&root, "2026-11-27-0900-ppo", 20);
    checkpoint(&root, "2026-11-27-0900-ppo", 100);
    manifest(&root, "2026-11-27-0900-ppo", "train-ppo", "2026-11-27T09:00:00Z");
    // A checkpoint still being written (no loop state yet) does not count.
    std::fs::create_dir_all(root.join("2026-11-27-0900-ppo/checkpoints/step-000120"))
        .expect("mkdir");
    checkpoint(&root, "2026-11-27-1000-dpo", 500);
    manifest(&root, "2026-11-27-1000-dpo", "train-dpo", "2026-11-27T10:00:00Z");
    // A newer PPO run without a complete checkpoint, and a reward-model run named `ppo`.
    std::fs::create_dir_all(root.join("2026-11-27-1100-ppo")).expect("in-progress run");
    manifest(&root, "2026-11-27-1100-ppo", "train-ppo", "2026-11-27T11:00:00Z");
    checkpoint(&root, "2026-11-28-0900-rm-for-ppo", 10);
    manifest(&root, "2026-11-28-0900-rm-for-ppo", "train-rm", "2026-11-28T09:00:00Z");
    // A run folder without a manifest is not a run of any job, whatever its name.
    checkpoint(&root, "2026-11-29-0900-ppo", 10);
    let (run, adapter) = latest_adapter(&root, RunJob::Ppo).expect("found");
    assert!(run.ends_with("2026-11-27-0900-ppo"), "{}", run.display());
    assert!(adapter.ends_with("checkpoints/step-000100"), "{}", adapter.display());
    let (dpo, _) = latest_adapter(&root, RunJob::Dpo).expect("found");
    assert!(dpo.ends_with("2026-11-27-1000-dpo"), "{}", dpo.display());
    // The manifest's job decides over the name: a newer DPO run named freely.
    checkpoint(&root, "2026-11-28-0800-mine", 10);
    manifest(&root, "2026-11-28-0800-mine", "train-dpo", "2026-11-28T08:00:00Z");
    let (dpo, _) = latest_adapter(&root, RunJob::Dpo).expect("found");
    assert!(dpo.ends_with("2026-11-28-0800-mine"), "{}", dpo.display());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn trained_objectives_and_labels_come_from_the_runs_config() {
    let root = temp_dir("objectives");
    let run = root.join("2026-11-27-0900-ppo");
    let adapter = run.join("checkpoints/step-000100");
    std::fs::create_dir_all(&adapter).expect("mkdir");
    let objectives = |yaml: &str| {
        std::fs::write(run.join("config.yaml"), yaml).expect("write");
        trained_objectives(&run, &adapter, &mut Silent)
    };
    assert!(
        trained_objectives(&run, &adapter, &mut Silent).is_err(),
        "no config.yaml, no adapter names"
    );
    // The run's objectives, with the settings it trained with (the PPO config schema).
    assert_eq!(
        objectives(
            "seed: 1\nobjectives:\n  - name: positive\n    kind: reward\n    source: { kind: \
             positive }\n  - name: concise\n    kind: reward\n    source: { kind: concise, \
             r_max: 4.0, c: 6.0 }\n"
        )
        .expect("ppo"),
        vec![
            FrontObjective::reward("positive", ScorerSpec::Positive),
            FrontObjective::reward("concise", ScorerSpec::Concise { r_max: 4.0, c: 6.0 })
        ]
    );
    assert_eq!(run_label(&run), "panacea PPO LS (2026-11-27-0900-ppo)");
    // A gold scorer declared a cost is measured by the scorer its name gives, never by the
    // (un-negated) source: here `negative`, i.e. −VADER.
    assert_eq!(
        objectives(
            "objectives:\n  - name: positive\n    kind: reward\n    source: { kind: positive \
             }\n  - name: negative\n    kind: cost\n    source: { kind: positive }\n"
        )
        .expect("ppo"),
        vec![
            FrontObjective::reward("positive", ScorerSpec::Positive),
            FrontObjective::reward("negative", ScorerSpec::Negative)
        ]
    );
    // Learned score models measure their own objectives, costs flagged for negation.
    assert_eq!(
        objectives(
            "objectives:\n  - name: helpful\n    kind: reward\n    source: { kind: \
             score_model, path: R/score-helpful }\n  - name: harmless\n    kind: cost\n    \
             source: { kind: score_model, path: R/score-harmless }\n"
        )
        .expect("ppo"),
        vec![
            FrontObjective::reward(
                "helpful",
                ScorerSpec::ScoreModel { path: "R/score-helpful".into() }
            ),
            FrontObjective {
                name: "harmless".into(),
                kind: ObjectiveKind::Cost,
                source: ScorerSpec::ScoreModel { path: "R/score-harmless".into() }
            },
        ]
    );
    // A PPO objective no text scorer measures: an error with the --set hint.
    let err = objectives(
        "objectives:\n  - name: even\n    kind: reward\n    source: { kind: even_tokens }\n",
    )
    .expect_err("no gold scorer for even");
    assert!(format!("{err}").contains("hint: choose one objective per trained"), "{err}");

    // DPO (objectives are pair dimensions): PKU `helpful` is `relevant` (the bundled PKU
    // pairs' better_response_id), `harmless` itself; concise takes the pair file's stats.json
    // settings (c = 24); the aggregation names the method.
    let dpo = |objectives: &str, data: &str| {
        format!(
            "model: smollm2-135m\nobjectives: {objectives}\ndata: {{ train: {data}, format: \
             pku-saferlhf }}\ndpo: {{ aggregation: {{ kind: tchebycheff, ideal: [0.0, 0.0] }} \
             }}\n"
        )
    };
    let relevant = ScorerSpec::Relevant { batch_size: 32 };
    let yaml = dpo("[helpful, harmless]", "data/pairs/smollm2-pku.jsonl");
    assert_eq!(
        objectives(&yaml).expect("dpo"),
        vec![
            FrontObjective::reward("helpful", relevant.clone()),
            FrontObjective::reward("harmless", ScorerSpec::Harmless)
        ]
    );
    assert_eq!(run_label(&run), "panacea DPO Tche (2026-11-27-0900-ppo)");
    let yaml = dpo("[relevant, concise]", "data/pairs/smollm2-generic.jsonl");
    assert_eq!(
        objectives(&yaml).expect("dpo"),
        vec![
            FrontObjective::reward("relevant", relevant),
            FrontObjective::reward("concise", ScorerSpec::Concise { r_max: 4.0, c: 24.0 })
        ]
    );
    // The shared top-level `aggregation` key names the method too.
    std::fs::write(
        run.join("config.yaml"),
        "objectives: [helpful, harmless]\naggregation: { kind: tchebycheff }\n",
    )
    .expect("write");
    assert_eq!(run_label(&run), "panacea DPO Tche (2026-11-27-0900-ppo)");
    let err = objectives(&dpo("[helpful, verbose]", "data/pairs/smollm2-pku.jsonl"))
        .expect_err("no gold scorer for verbose");
    let msg = format!("{err}");
    assert!(msg.contains("[\"verbose\"]") && msg.contains("--set 'objectives="), "{msg}");
    let _ = std::fs::remove_dir_all(&root);
}
