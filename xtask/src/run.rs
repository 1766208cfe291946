//! Commands that run cargo (and so the libtorch-linked crates) with the right environment.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::libtorch::{self, Source};

/// `cargo` with libtorch's build environment, run from the workspace root.
pub(crate) fn cargo(lt: &libtorch::Libtorch) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    for (k, v) in lt.cargo_env() {
        cmd.env(k, v);
    }
    cmd
}

pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn status_to_exit(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    }
}

/// `cargo xtask test`: set-up, then the whole workspace's tests.
pub(crate) fn test(extra: &[String]) -> Result<ExitCode> {
    let lt = libtorch::ensure()?;
    eprintln!("xtask: libtorch {} at {}", lt.version, lt.root.display());
    crate::fetch_scorers::ensure()?;
    // The real-weight tests of panacea-lm need SmolLM2; fetching it here makes them run in CI.
    crate::fetch::ensure_model("smollm2-135m")?;
    // The protocol test of panacea-serve drives the server with the real `openai` client; a
    // failed install only makes that test skip.
    if let Err(e) = crate::python_tools::ensure() {
        eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
    }
    let status = cargo(&lt)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        return Ok(status_to_exit(status));
    }
    outside_project(&lt)
}

/// Builds and runs `examples/use-the-crates`, a Cargo project outside the workspace that uses
/// the crates by path as another project would (train, resume, evaluate a front). It shares the
/// workspace's target folder, profiles and lock file, so only its own binary is compiled.
fn outside_project(lt: &libtorch::Libtorch) -> Result<ExitCode> {
    let root = workspace_root();
    let project = root.join("examples/use-the-crates");
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock"))
        .context("copying Cargo.lock into examples/use-the-crates")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    eprintln!("xtask: building and running examples/use-the-crates (the crates used from outside)");
    let status = cargo(lt)
        .env("CARGO_TARGET_DIR", target)
        .args(["run", "--quiet", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        .status()
        .context("running examples/use-the-crates")?;
    Ok(status_to_exit(status))
}

/// `cargo xtask doctor`.
pub(crate) fn doctor() -> Result<ExitCode> {
    let cache = libtorch::cache_root()?;
    println!("cache root        {}", cache.display());
    let Some(lt) = libtorch::find()? else {
        println!("libtorch          not found");
        eprintln!(
            "hint: run `cargo xtask setup` to install torch=={} into {}, or set LIBTORCH to a \
             libtorch {} folder",
            libtorch::TORCH_VERSION,
            libtorch::cache_dir()?.display(),
            libtorch::TORCH_VERSION
        );
        return Ok(ExitCode::from(1));
    };
    let source = match lt.source {
        Source::Env => "LIBTORCH",
        Source::Cache => "project cache",
    };
    println!("libtorch          {} ({source})", lt.version);
    println!("libtorch path     {}", lt.root.display());
    println!("libtorch libs     {}", lt.lib_dir().display());
    println!("checking the `panacea` binary against it (builds it on first use)...");
    let status = cargo(&lt)
        .args(["run", "--quiet", "-p", "panacea-cli", "--", "doctor"])
        .status()
        .context("running panacea doctor")?;
    Ok(status_to_exit(status))
}

/// `cargo xtask train-ppo [args]`: the main job, `panacea train-ppo` (release) with the
/// libtorch environment. Without `--config` it runs the embedded default (SmolLM2-135M, the
/// bundled prompts, two built-in objectives, CPU); the model is fetched first when missing.
pub(crate) fn train_ppo(args: &[String]) -> Result<ExitCode> {
    if !args.iter().any(|a| a == "--config" || a.starts_with("--config=")) {
        crate::fetch::ensure_model("smollm2-135m")?;
        // The protocol test of panacea-serve drives the server with the real `openai` client; a
        // failed install only makes that test skip.
        if let Err(e) = crate::python_tools::ensure() {
            eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
        }
    }
    let mut full = vec!["train-ppo".to_owned()];
    full.extend_from_slice(args);
    panacea(&full)
}

/// `cargo xtask train-rm [args]`: `panacea train-rm` (release); without `--config` it trains
/// the helpful reward and harmless cost models of `configs/rm-hh.yaml` on SmolLM2-135M.
pub(crate) fn train_rm(args: &[String]) -> Result<ExitCode> {
    crate::fetch::ensure_model("smollm2-135m")?;
    // The protocol test of panacea-serve drives the server with the real `openai` client; a
    // failed install only makes that test skip.
    if let Err(e) = crate::python_tools::ensure() {
        eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
    }
    let mut full = vec!["train-rm".to_owned()];
    if !args.iter().any(|a| a == "--config" || a.starts_with("--config=")) {
        full.extend([
            "--config".to_owned(),
            workspace_root().join("configs/rm-hh.yaml").display().to_string(),
        ]);
    }
    full.extend_from_slice(args);
    panacea(&full)
}

/// `cargo xtask train-ppo-learned [args]`: the learned-reward path at full size in two stages:
/// `panacea train-rm --config configs/rm-hh.yaml` (a helpful reward and a harmless cost model)
/// into `runs/learned-rm/`, then `panacea train-ppo --config configs/ppo-learned.yaml` with the
/// two new score-model folders filled in; `args` go to the PPO stage.
pub(crate) fn train_ppo_learned(args: &[String]) -> Result<ExitCode> {
    crate::fetch::ensure_model("smollm2-135m")?;
    // The protocol test of panacea-serve drives the server with the real `openai` client; a
    // failed install only makes that test skip.
    if let Err(e) = crate::python_tools::ensure() {
        eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
    }
    let root = workspace_root();
    let rm_runs = root.join("runs").join("learned-rm");
    let before = run_folders(&rm_runs);
    let rm = [
        "train-rm".to_owned(),
        "--config".to_owned(),
        root.join("configs/rm-hh.yaml").display().to_string(),
        "--runs-dir".to_owned(),
        rm_runs.display().to_string(),
    ];
    let code = panacea(&rm)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let Some(rm_run) = run_folders(&rm_runs).into_iter().filter(|p| !before.contains(p)).max()
    else {
        anyhow::bail!("train-rm finished but left no run folder in {}", rm_runs.display());
    };
    eprintln!("score models from {}", rm_run.display());
    let mut full = vec![
        "train-ppo".to_owned(),
        "--config".to_owned(),
        root.join("configs/ppo-learned.yaml").display().to_string(),
        "--set".to_owned(),
        format!("objectives.0.source.path={}", rm_run.join("score-helpful").display()),
        "--set".to_owned(),
        format!("objectives.1.source.path={}", rm_run.join("score-harmless").display()),
    ];
    full.extend_from_slice(args);
    panacea(&full)
}

/// The sub-folders of `dir` (none when it does not exist).
fn run_folders(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default()
}

/// `cargo xtask train-dpo [args]`: `panacea train-dpo` (release) with the libtorch
/// environment; without arguments it runs the embedded default config (SmolLM2-135M, CPU).
/// The default's model is fetched into the cache first when it is missing.
pub(crate) fn train_dpo(args: &[String]) -> Result<ExitCode> {
    if !args.iter().any(|a| a == "--config" || a.starts_with("--config=") || a == "--resume") {
        crate::fetch::ensure_model("smollm2-135m")?;
        // The protocol test of panacea-serve drives the server with the real `openai` client; a
        // failed install only makes that test skip.
        if let Err(e) = crate::python_tools::ensure() {
            eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
        }
    }
    let mut full = vec!["train-dpo".to_owned()];
    full.extend_from_slice(args);
    panacea(&full)
}

/// `cargo xtask eval-front [args]`: `panacea eval-front` (release) with the libtorch
/// environment. Unless the arguments name a model (`--adapter`, `--soup`, `--latest-ppo-run`,
/// `--latest-dpo-run`) it evaluates the newest adapter checkpoint of the latest PPO run under
/// `runs/` against the base with `configs/eval-front.yaml` (so `cargo xtask eval-front
/// --compare rs,dps` compares that run with its baselines); when there is no PPO run it says
/// so and fails without building or running anything. DPO runs are named explicitly:
/// `--latest-dpo-run runs` or `--adapter <dpo run>/checkpoints/step-N`.
pub(crate) fn eval_front(args: &[String]) -> Result<ExitCode> {
    let mut full = vec!["eval-front".to_owned()];
    let names_a_model = args.iter().any(|a| {
        ["--adapter", "--soup", "--latest-ppo-run", "--latest-dpo-run"]
            .iter()
            .any(|flag| a.starts_with(flag))
    });
    if !names_a_model {
        let runs = workspace_root().join("runs");
        // The same rule `panacea eval-front --latest-ppo-run` applies (panacea-run's).
        let latest = panacea_run::latest_run(&runs, "train-ppo")
            .with_context(|| format!("looking for the latest PPO run under {}", runs.display()))?;
        if latest.is_none() {
            eprintln!(
                "no PPO run with a complete checkpoint under {}: nothing to evaluate, no results \
                 were produced.\nhint: train one with `cargo xtask train-ppo`, or evaluate \
                 adapter folders with `cargo xtask eval-front --adapter DIR [--label NAME]...`",
                runs.display()
            );
            return Ok(ExitCode::from(1));
        }
        crate::fetch::ensure_model("smollm2-135m")?;
        // The protocol test of panacea-serve drives the server with the real `openai` client; a
        // failed install only makes that test skip.
        if let Err(e) = crate::python_tools::ensure() {
            eprintln!("xtask: warning: {e:#}; the openai-client test will skip");
        }
        full.extend(["--latest-ppo-run".to_owned(), runs.display().to_string()]);
    }
    full.extend_from_slice(args);
    panacea(&full)
}

/// `cargo xtask panacea ...`: the release `panacea` binary with the libtorch environment. The
/// build runs first with cargo's own progress on screen: from a cold cache it compiles the
/// release profile for several minutes, which a quiet `cargo run` would spend in silence.
pub(crate) fn panacea(args: &[String]) -> Result<ExitCode> {
    let lt = libtorch::ensure()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    if !target.join("release/panacea").is_file() {
        eprintln!(
            "xtask: building the release `panacea` binary first (once; about 12 minutes on 2 \
             cores from a cold cache, later runs start at once). Training runs need the release \
             profile: the dev profile's own loops are several times slower."
        );
    }
    let build = cargo(&lt)
        .args(["build", "--release", "-p", "panacea-cli"])
        .status()
        .context("building the panacea binary")?;
    if !build.success() {
        return Ok(status_to_exit(build));
    }
    let status = cargo(&lt)
        .args(["run", "--release", "--quiet", "-p", "panacea-cli", "--"])
        .args(args)
        .status()
        .context("running panacea")?;
    Ok(status_to_exit(status))
}
