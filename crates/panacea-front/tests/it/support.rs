//! Shared by the tests: the tiny-random base, random adapter folders on it, and the tiny eval
//! config.

use std::path::{Path, PathBuf};

use panacea_core::checkpoint::{hash_var_store, save_adapter, AdapterFolderConfig, BaseModelId};
use panacea_core::SvdLoraConfig;
use panacea_front::FrontConfig;
use panacea_lm::LoadedModel;
use tch::nn;

/// The workspace root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh, empty temporary folder for one test.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-front-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The tiny-random base (2 layers, D = 64) with the SmolLM2 tokenizer, initialised from
/// `seed`, on the CPU with one intra-op thread; None (the test is skipped) without the
/// tokenizer.
pub(crate) fn tiny_base(seed: i64) -> Option<LoadedModel> {
    panacea_core::device::init_torch();
    // The tiny model gains nothing from more threads, and test binaries run their tests in
    // parallel on small shared machines.
    tch::set_num_threads(1);
    match panacea_lm::tiny_random_model(tch::Device::Cpu, seed, tch::Kind::Float) {
        Ok(base) => Some(base),
        Err(e) => {
            eprintln!("SKIPPED: {e} (`cargo xtask test` fetches the SmolLM2 tokenizer)");
            None
        }
    }
}

/// Writes an adapter folder for `objectives` on `base` into `dir`, with σ and s drawn from
/// N(0, 5²) (seed `seed`) so that λ visibly changes the model; its base hash is `base`'s.
pub(crate) fn random_adapter(base: &LoadedModel, objectives: &[&str], seed: i64, dir: &Path) {
    tch::manual_seed(seed);
    let svd = SvdLoraConfig::new(objectives.len() as i64);
    let adapter_vs = nn::VarStore::new(tch::Device::Cpu);
    let _policy = base.model.with_adapter(Some((&adapter_vs.root(), &svd)));
    tch::no_grad(|| {
        for (name, t) in adapter_vs.variables() {
            if name.ends_with("svd_lora_pref_scale") || name.ends_with("svd_lora_sigma") {
                let _ = t.shallow_clone().normal_(0.0, 5.0);
            }
        }
    });
    let names: Vec<String> = objectives.iter().map(|s| s.to_string()).collect();
    let hash = hash_var_store(&base.base_vs).expect("base hash");
    let folder =
        AdapterFolderConfig::new(&svd, &names, BaseModelId { name: "tiny-random".into(), hash })
            .expect("folder config");
    save_adapter(dir, &adapter_vs, &folder).expect("save adapter");
}

/// `configs/tiny/eval.yaml` on the tiny-random base with `overrides`.
pub(crate) fn tiny_eval_config(overrides: &[&str]) -> FrontConfig {
    let path = workspace().join("configs/tiny/eval.yaml");
    let yaml = std::fs::read_to_string(&path).expect("configs/tiny/eval.yaml");
    let mut sets = vec!["model=tiny-random".to_owned()];
    sets.extend(overrides.iter().map(|s| s.to_string()));
    panacea_core::config::parse_config(&yaml, "configs/tiny/eval.yaml", &sets)
        .expect("tiny eval config parses")
}

/// True when the SmolLM2 tokenizer is in the model cache (the tiny-random base and the tiny
/// configs use it); otherwise says the test is skipped.
pub(crate) fn smollm2_available() -> bool {
    panacea_core::device::init_torch();
    if panacea_lm::resolve_model("smollm2-135m").is_err() {
        eprintln!(
            "SKIPPED: smollm2-135m is not in the model cache (`cargo xtask test` fetches it)"
        );
        return false;
    }
    true
}

/// `configs/tiny/dpo.yaml` as a quick run: the `tiny-random` base, the batch in one forward,
/// no evaluation pairs, one thread, a reference cache inside `runs`; then `extra`.
pub(crate) fn tiny_dpo(runs: &Path, extra: &[&str]) -> panacea_dpo::DpoRunConfig {
    let mut sets = vec![
        "model=tiny-random".to_owned(),
        "dpo.micro_batch_size=0".to_owned(),
        "data.eval=null".to_owned(),
        "threads=1".to_owned(),
        "device=cpu".to_owned(),
        format!("ref_cache.dir={}", runs.join("ref-cache").display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut cfg: panacea_dpo::DpoRunConfig =
        panacea_core::config::load_config(&workspace().join("configs/tiny/dpo.yaml"), &sets)
            .expect("tiny DPO config");
    cfg.config_dir = Some(workspace().join("configs/tiny"));
    cfg
}

/// `configs/tiny/ppo.yaml` on the CPU with `extra`.
pub(crate) fn tiny_ppo(extra: &[&str]) -> panacea_rlhf::TrainPpoConfig {
    let mut sets = vec!["device=cpu".to_owned()];
    sets.extend(extra.iter().map(|s| s.to_string()));
    panacea_core::config::load_config(&workspace().join("configs/tiny/ppo.yaml"), &sets)
        .expect("tiny PPO config")
}
