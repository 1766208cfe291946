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

/// `--set` overrides that make `configs/tiny/dpo.yaml` a quick run: the `tiny-random` base
/// (2 layers, D = 64, SmolLM2 tokenizer; its 49,152-way output layer still costs about a
/// second per step on a shared 2-core machine), the batch in one forward, no evaluation
/// pairs, and a reference cache inside `runs`; then `extra`.
pub(crate) fn tiny_dpo_sets(runs: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut sets = vec![
        "model=tiny-random".to_owned(),
        "dpo.micro_batch_size=0".to_owned(),
        "data.eval=null".to_owned(),
        format!("ref_cache.dir={}", runs.join("ref-cache").display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    sets
}
