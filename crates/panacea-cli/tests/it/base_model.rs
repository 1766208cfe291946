//! `--model` in every command that loads a base model, and `generate` refusing an adapter
//! trained on other base weights (the check eval-front makes). The base is panacea-lm's tiny
//! Llama-3 fixture folder, so no cached weights are needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use panacea_core::adapter::SvdLoraConfig;
use panacea_core::checkpoint::{AdapterFolderConfig, BaseModelId, CONFIG_FILE};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `panacea args…` in the workspace; returns (success, stderr).
fn panacea(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_panacea"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run panacea");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("panacea-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Each command that takes its base from a config honours `--model` over the config's
/// `model`: a model that does not exist is the error, named as given.
#[test]
fn model_flag_overrides_the_config_in_every_command() {
    let runs = temp_dir("runs");
    let runs = runs.to_str().expect("utf-8");
    let missing = "no-such-model-folder";
    let commands: [&[&str]; 4] = [
        &["train-dpo", "--config", "configs/tiny/dpo.yaml", "--runs-dir", runs],
        &["train-ppo", "--config", "configs/tiny/ppo.yaml", "--runs-dir", runs],
        &["train-rm", "--config", "configs/tiny/rm.yaml", "--runs-dir", runs],
        &["eval-front", "--config", "configs/eval-front.yaml", "--out", runs],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--model", missing, "--device", "cpu"]);
        let (ok, stderr) = panacea(&args);
        assert!(!ok, "{command:?} ran with a missing model");
        assert!(stderr.contains(missing), "{command:?}: {stderr}");
    }
    std::fs::remove_dir_all(runs).expect("clean up");
}

/// An adapter folder records its base model; `generate` loads the base, hashes it and refuses
/// an adapter of another base before reading the adapter's weights.
#[test]
fn generate_refuses_an_adapter_of_another_base() {
    let model = workspace().join("crates/panacea-lm/tests/fixtures/models/llama3");
    let adapter = temp_dir("adapter");
    let other = BaseModelId { name: "some-other-base".into(), hash: "0".repeat(64) };
    let folder = AdapterFolderConfig::new(&SvdLoraConfig::new(2), &["a".into(), "b".into()], other)
        .expect("folder config");
    let json = serde_json::to_string_pretty(&folder).expect("json");
    std::fs::write(adapter.join(CONFIG_FILE), json).expect("write adapter_config.json");
    let model_arg = model.to_str().expect("utf-8");
    let args = [
        "generate",
        "--model",
        model_arg,
        "--adapter",
        adapter.to_str().expect("utf-8"),
        "--pref",
        "0.5,0.5",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "2",
        "--device",
        "cpu",
    ];
    let (ok, stderr) = panacea(&args);
    assert!(!ok, "generate accepted an adapter of another base");
    assert!(
        stderr.contains("was trained on base model some-other-base (hash 0000")
            && stderr.contains(&format!("loads {model_arg} (hash ")),
        "{stderr}"
    );
    std::fs::remove_dir_all(&adapter).expect("clean up");
}
