//! Shared helpers: the tiny random-init model, the real tokenizer from the model cache, and
//! the fetched SmolLM2 folder.

use std::path::PathBuf;

use panacea_lm::{init_random, Llama, LlamaConfig, Tokenizer};
use tch::{nn, Device, Tensor};

/// The model cache folder of SmolLM2 when `cargo xtask fetch-model smollm2-135m` has run.
/// `cargo xtask test` always fetches it first, so in CI this is never `None`.
pub(crate) fn smollm_dir() -> Option<PathBuf> {
    match panacea_lm::resolve_model("smollm2-135m") {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIPPED: {e} (`cargo xtask test` fetches it)");
            None
        }
    }
}

/// The real 49,152-token SmolLM2 tokenizer, from the model cache.
pub(crate) fn real_tokenizer() -> Option<Tokenizer> {
    let dir = smollm_dir()?;
    Some(Tokenizer::from_file(&dir.join("tokenizer.json"), 2).expect("cached tokenizer.json loads"))
}

/// libtorch start-up for tests. The harness already runs tests on parallel threads, and on a
/// loaded 2-core machine a second intra-op thread per test makes OpenMP barriers wait for
/// descheduled threads (several times slower), so each test computes on one thread.
pub(crate) fn setup() {
    panacea_core::device::init_torch();
    tch::set_num_threads(1);
}

/// A tiny random-init Llama (2 layers, D = 64, the real vocabulary size).
pub(crate) fn tiny(seed: i64) -> (nn::VarStore, Llama) {
    setup();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), None, &LlamaConfig::tiny());
    init_random(&vs, seed);
    (vs, model)
}

/// max |a − b| as f64.
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).expect("scalar")
}
