//! Shared by the CLI's tests.

use std::path::PathBuf;

/// The workspace root, when the SmolLM2 files (tokenizer, weights) are in the model cache;
/// otherwise says the test is skipped and returns None (`cargo xtask test` fetches them first).
pub(crate) fn workspace_with_smollm2() -> Option<PathBuf> {
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!("skipped: smollm2-135m is not in the model cache");
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}
