//! The single integration-test binary of panacea-core (one binary per crate keeps link time
//! down on 2-core machines). One module per topic.

mod adapter;
mod aggregation;
mod checkpoint;
mod config;
mod device;
mod ops;
mod overfit;
mod preference;
mod reference;

/// Loads libtorch's CUDA backend when present; every test that touches tch calls it first.
pub(crate) fn setup() {
    panacea_core::device::init_torch();
}

/// A fresh, empty folder under the system temp dir for one test.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-core-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
