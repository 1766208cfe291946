//! Run folders: creation, the one-writer lock, complete-or-absent checkpoints and the one
//! "latest" rule.

use panacea_run::{
    latest_checkpoint, latest_run, utc_stamp, Manifest, RunDir, RunError, CHECKPOINTS_DIR,
};

use crate::temp_dir;

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
    let root = temp_dir("create");
    let mut a = RunDir::create(&root, "tiny", "seed: 1\n", "panacea train-ppo").expect("create");
    let b = RunDir::create(&root, "tiny", "seed: 1\n", "panacea train-ppo").expect("create again");
    assert_ne!(a.path(), b.path());
    a.log_metrics(&serde_json::json!({"step": 1})).expect("log");
    assert_eq!(std::fs::read_to_string(a.file(".gitignore")).expect("read"), "*\n");
    assert_eq!(std::fs::read_to_string(a.file("metrics.jsonl")).expect("read"), "{\"step\":1}\n");
    assert_eq!(
        std::fs::read_to_string(a.file("command.txt")).expect("read"),
        "panacea train-ppo\n"
    );
    assert_eq!(std::fs::read_to_string(a.file("config.yaml")).expect("read"), "seed: 1\n");
    std::fs::remove_dir_all(&root).expect("clean up");
}

/// A second writer on one run folder is refused while the first holds it, with the holder's
/// pid in the message, and gets it once the first is gone (the OS releases the lock).
#[test]
fn a_second_writer_is_refused_until_the_first_is_dropped() {
    let root = temp_dir("lock");
    let first = RunDir::create(&root, "tiny", "seed: 1\n", "x").expect("create");
    let path = first.path().to_owned();
    let saved = serde_json::json!({"seed": 1});
    first.save_checkpoint(1, &1u64, |_| Ok::<(), RunError>(())).expect("checkpoint");
    let err = RunDir::resume(&path, "train-ppo", &saved, &saved, "seed: 1\n", "y")
        .expect_err("a second writer must be refused");
    let text = err.to_string();
    assert!(matches!(err, RunError::Locked { .. }), "{text}");
    assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    drop(first);
    let (second, ckpt) = RunDir::resume(&path, "train-ppo", &saved, &saved, "seed: 1\n", "y")
        .expect("the lock is free again");
    assert_eq!(ckpt.step, 1);
    drop(second);
    std::fs::remove_dir_all(&root).expect("clean up");
}

#[test]
fn checkpoints_are_complete_or_absent_and_the_newest_complete_one_wins() {
    let root = temp_dir("ckpt");
    let run = RunDir::create(&root, "tiny", "seed: 1\n", "x").expect("create");
    for step in [2u64, 4] {
        run.save_checkpoint(step, &step, |dir| {
            std::fs::write(dir.join("adapter.bin"), [step as u8]).map_err(|e| RunError::Io {
                what: "writing",
                path: dir.to_owned(),
                source: e,
            })
        })
        .expect("checkpoint");
    }
    // A staging folder left by a crash and a step-6 folder without loop state do not count.
    let ckpts = run.path().join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(ckpts.join(".step-000006.tmp")).expect("mkdir");
    std::fs::create_dir_all(ckpts.join("step-000006")).expect("mkdir");
    let latest = latest_checkpoint(run.path()).expect("scan").expect("one");
    assert_eq!(latest.step, 4);
    assert_eq!(latest.loop_state::<u64>().expect("state"), 4);
    // A failing fill leaves no checkpoint folder behind.
    let failed = run
        .save_checkpoint(8, &8u64, |_| Err(RunError::NotARunFolder { path: "disk full".into() }));
    assert!(failed.is_err());
    assert!(!ckpts.join("step-000008").exists());
    assert_eq!(latest_checkpoint(run.path()).expect("scan").expect("one").step, 4);
    std::fs::remove_dir_all(&root).expect("clean up");
}

#[test]
fn latest_run_is_the_newest_run_of_the_job_with_a_complete_checkpoint() {
    let root = temp_dir("latest");
    let make = |name: &str, job: &str, started: &str, ckpt: bool| {
        let run = RunDir::create(&root, name, "seed: 1\n", "x").expect("create");
        let mut m = Manifest::now(job, "cpu", 1);
        m.started_utc = started.to_owned();
        run.write_manifest(&m).expect("manifest");
        if ckpt {
            run.save_checkpoint(3, &3u64, |_| Ok::<(), RunError>(())).expect("checkpoint");
        }
        run.path().to_owned()
    };
    let old = make("a", "train-ppo", "2026-01-01T00:00:00Z", true);
    let _newer_dpo = make("b", "train-dpo", "2026-03-01T00:00:00Z", true);
    let _newest_without_checkpoint = make("c", "train-ppo", "2026-04-01T00:00:00Z", false);
    assert_eq!(latest_run(&root, "train-ppo").expect("scan").expect("a run").0, old);
    let newer = make("d", "train-ppo", "2026-02-01T00:00:00Z", true);
    let (found, ckpt) = latest_run(&root, "train-ppo").expect("scan").expect("a run");
    assert_eq!((found, ckpt.step), (newer, 3));
    assert!(latest_run(&root, "train-rm").expect("scan").is_none());
    std::fs::remove_dir_all(&root).expect("clean up");
}
