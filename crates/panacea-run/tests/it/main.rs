//! Integration tests of panacea-run: one binary, one module per topic.

mod resume;
mod run_dir;

/// A fresh empty folder under the system temp dir, unique per test.
pub(crate) fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
