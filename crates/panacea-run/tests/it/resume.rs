//! Resuming a run folder: every step logged once, config changes checked and recorded, the
//! trainer named when it does not match.

use panacea_run::{config_changes, Manifest, RunDir, RunError};
use serde_json::json;

use crate::temp_dir;

/// A run of `steps` logged steps with checkpoints at `ckpts`, as a process killed after its
/// last logged step leaves it (no final checkpoint), plus a torn last metrics line.
fn killed_run(root: &std::path::Path, steps: u64, ckpts: &[u64]) -> std::path::PathBuf {
    let mut run = RunDir::create(root, "tiny", "seed: 1\n", "x").expect("create");
    run.write_manifest(&Manifest::now("train-dpo", "cpu", 1)).expect("manifest");
    for step in 1..=steps {
        run.log_metrics(&json!({"step": step, "loss": step as f64 / 10.0})).expect("log");
        if ckpts.contains(&step) {
            run.save_checkpoint(step, &step, |_| Ok::<(), RunError>(())).expect("ckpt");
        }
    }
    let path = run.path().to_owned();
    drop(run);
    let metrics = path.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).expect("read");
    text.push_str("{\"step\": 16, \"lo");
    std::fs::write(&metrics, text).expect("write");
    path
}

fn logged_steps(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect()
}

/// The steps of every scalar event in the run's TensorBoard files.
fn event_steps(path: &std::path::Path) -> Vec<i64> {
    let mut steps = Vec::new();
    for e in std::fs::read_dir(path).expect("ls").flatten() {
        if !e.file_name().to_string_lossy().starts_with("events.out.tfevents.") {
            continue;
        }
        let bytes = std::fs::read(e.path()).expect("read");
        let mut i = 0;
        while i + 12 <= bytes.len() {
            let len = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8")) as usize;
            let data = &bytes[i + 12..i + 12 + len];
            // Event field 2 (step, varint) right after field 1 (wall time, 8 bytes + key).
            if data.len() > 10 && data[9] == 0x10 {
                let (mut v, mut shift, mut j) = (0u64, 0, 10);
                loop {
                    let b = data[j];
                    v |= u64::from(b & 0x7f) << shift;
                    j += 1;
                    if b < 0x80 {
                        break;
                    }
                    shift += 7;
                }
                steps.push(v as i64);
            }
            i += 16 + len;
        }
    }
    steps.sort_unstable();
    steps
}

/// kill -9 at step 15 with the last checkpoint at step 10, then resume to 30: every step is
/// logged exactly once in metrics.jsonl and in TensorBoard.
#[test]
fn resume_logs_each_step_once() {
    let root = temp_dir("resume-once");
    let path = killed_run(&root, 15, &[5, 10]);
    assert_eq!(event_steps(&path).len(), 15);
    let saved = json!({"seed": 1, "train": {"steps": 30}});
    let (mut run, ckpt) =
        RunDir::resume(&path, "train-dpo", &saved, &saved, "seed: 1\n", "x --resume")
            .expect("resume");
    assert_eq!(ckpt.step, 10);
    for step in ckpt.step + 1..=30 {
        run.log_metrics(&json!({"step": step, "loss": 0.0})).expect("log");
    }
    drop(run);
    assert_eq!(logged_steps(&path), (1..=30).collect::<Vec<_>>());
    assert_eq!(event_steps(&path), (1..=30).collect::<Vec<_>>());
    std::fs::remove_dir_all(&root).expect("clean up");
}

#[test]
fn resume_refuses_changes_outside_the_resumable_keys_and_records_the_rest() {
    let root = temp_dir("resume-keys");
    let path = killed_run(&root, 12, &[10]);
    let before = std::fs::read(path.join("metrics.jsonl")).expect("metrics");
    let saved = json!({"seed": 1, "train": {"steps": 30, "save_every": 10}});
    let reseeded = json!({"seed": 5, "train": {"steps": 30, "save_every": 10}});
    let err = RunDir::resume(&path, "train-dpo", &saved, &reseeded, "seed: 5\n", "x")
        .expect_err("seed may not change");
    assert!(err.to_string().contains("`seed` is 1 in the run and 5 now"), "{err}");
    let shorter = json!({"seed": 1, "train": {"steps": 5, "save_every": 10}});
    let err = RunDir::resume(&path, "train-dpo", &saved, &shorter, "seed: 1\n", "x")
        .expect_err("steps must grow past the checkpoint");
    assert!(
        err.to_string().contains("`train.steps` = 5 but the newest checkpoint is at step 10"),
        "{err}"
    );
    // The refused resumes changed nothing.
    assert_eq!(std::fs::read(path.join("metrics.jsonl")).expect("metrics"), before);
    assert!(!path.join("resume.jsonl").exists());
    let longer = json!({"seed": 1, "train": {"steps": 40, "save_every": 10}});
    let (run, _) = RunDir::resume(
        &path,
        "train-dpo",
        &saved,
        &longer,
        "steps: 40\n",
        "x --set train.steps=40",
    )
    .expect("steps may grow");
    drop(run);
    let log = std::fs::read_to_string(path.join("resume.jsonl")).expect("resume log");
    let line: serde_json::Value = serde_json::from_str(log.trim()).expect("json");
    assert_eq!(line["from_step"], 10);
    assert_eq!(line["changes"], json!([{"key": "train.steps", "old": 30, "new": 40}]));
    assert_eq!(std::fs::read_to_string(path.join("config.yaml")).expect("config"), "steps: 40\n");
    std::fs::remove_dir_all(&root).expect("clean up");
}

#[test]
fn resuming_with_the_wrong_trainer_names_both_jobs() {
    let root = temp_dir("resume-job");
    let path = killed_run(&root, 3, &[2]);
    let saved = json!({"seed": 1});
    let err = RunDir::resume(&path, "train-ppo", &saved, &saved, "", "x").expect_err("wrong job");
    let text = err.to_string();
    assert!(text.contains("is a train-dpo run, not a train-ppo run"), "{text}");
    assert!(text.contains("panacea train-dpo --resume"), "{text}");
    std::fs::remove_dir_all(&root).expect("clean up");
}

#[test]
fn config_changes_lists_leaves_by_dotted_key() {
    let a = json!({"train": {"steps": 3, "lr": 0.1}, "objectives": [{"name": "a"}, {"name": "b"}]});
    let b = json!({"train": {"steps": 4, "lr": 0.1}, "objectives": [{"name": "a"}, {"name": "c"}], "x": 1});
    let keys: Vec<String> = config_changes(&a, &b).into_iter().map(|c| c.key).collect();
    assert_eq!(keys, ["objectives.1.name", "train.steps", "x"]);
    assert!(config_changes(&a, &a).is_empty());
}
