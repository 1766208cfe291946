//! `panacea bench-steering`: seeds run in child processes (`--jobs 2`) give the same table as
//! the same seeds run one after the other in one process, since a run depends on its seed and
//! config only.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn seeds_in_child_processes_give_the_sequential_table() {
    let root = std::env::temp_dir().join(format!("panacea-cli-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut tables = Vec::new();
    for jobs in ["1", "2"] {
        let runs = root.join(format!("jobs-{jobs}"));
        let out = Command::new(env!("CARGO_BIN_EXE_panacea"))
            .args(["bench-steering", "--config", "configs/tiny/ppo.yaml", "--seeds", "1,2"])
            .args(["--set", "train.steps=1", "--set", "threads=1", "--jobs", jobs])
            .arg("--runs-dir")
            .arg(&runs)
            .current_dir(workspace())
            .output()
            .expect("run panacea");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--jobs {jobs}: {stderr}");
        let table = std::fs::read_to_string(runs.join("steering-summary.md")).expect("summary");
        assert!(table.contains("| 1 |") && table.contains("| 2 |"), "{table}");
        tables.push(table);
    }
    assert_eq!(tables[0], tables[1], "sequential and child-process tables differ");
    std::fs::remove_dir_all(&root).expect("clean up");
}
