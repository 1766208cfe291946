//! Another project's view of Panacea: train the tiny multi-objective DPO config for 3 steps,
//! resume it to 5, and evaluate a 3-point Pareto front of the result, all through library
//! calls. Exits non-zero (with the error) when any step fails or a check does not hold.

use std::path::Path;

use panacea_core::config::load_config;
use panacea_dpo::{train_dpo, DpoRunConfig};
use panacea_front::{evaluate_front, AdapterSpec, FrontConfig, Method};
use panacea_run::{RunOptions, Silent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    panacea_core::device::init_torch();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let runs = std::env::temp_dir().join(format!("panacea-use-the-crates-{}", std::process::id()));

    // 1. Three DPO steps of the tiny config on a random 2-layer model.
    let sets = [
        "model=tiny-random".to_owned(),
        "train.steps=3".to_owned(),
        "train.save_every=1".to_owned(),
        "data.eval=null".to_owned(),
        format!("ref_cache.dir={}", runs.join("ref-cache").display()),
    ];
    let mut cfg: DpoRunConfig = load_config(&repo.join("configs/tiny/dpo.yaml"), &sets)?;
    cfg.config_dir = Some(repo.join("configs/tiny"));
    let first = train_dpo(&cfg, &RunOptions::new(&runs).named("outside"), &mut Silent)?;
    check(first.step == 3 && !first.interrupted, "the first run ends at step 3")?;

    // 2. Resume the same run folder for two more steps.
    cfg.train.steps = 5;
    let resumed = train_dpo(&cfg, &RunOptions::new(&runs).resuming(&first.run_dir), &mut Silent)?;
    check(resumed.step == 5, "the resumed run ends at step 5")?;
    let rows = std::fs::read_to_string(first.run_dir.join("metrics.jsonl"))?;
    let steps: Vec<u64> = rows
        .lines()
        .filter_map(|l| serde_json_step(l))
        .filter(|&s| s > 0)
        .collect();
    check(steps == [1, 2, 3, 4, 5], "every step is logged exactly once")?;

    // 3. A 3-point front of the trained adapter on the same base.
    let adapter = resumed.checkpoint.ok_or("the resumed run wrote no checkpoint")?;
    // The run's objectives under the names its adapter records (helpful measured here by
    // VADER positivity, which needs no download).
    let objectives = "objectives=[{name: helpful, kind: reward, source: {kind: positive}}, \
                      {name: harmless, kind: reward, source: {kind: harmless}}]";
    let front_cfg: FrontConfig = load_config(
        &repo.join("configs/tiny/eval.yaml"),
        &["model=tiny-random".to_owned(), "prompts.count=2".to_owned(), objectives.to_owned()],
    )?;
    let base = panacea_front::load_base(&front_cfg)?;
    let method = Method::Adapter(AdapterSpec { label: "panacea".into(), adapter });
    let fronts = evaluate_front(&front_cfg, &base, &[method])?;
    let panacea = fronts.iter().find(|m| m.name == "panacea").ok_or("no panacea front")?;
    check(panacea.front.points.len() == 3, "the front has one point per grid λ")?;
    for (pref, point) in panacea.front.prefs.iter().zip(&panacea.front.points) {
        println!("λ = {pref:?} → objectives {point:?}");
    }
    std::fs::remove_dir_all(&runs)?;
    println!("use-the-crates: trained, resumed and evaluated through the library APIs");
    Ok(())
}

/// The `step` of a metrics line, without a JSON dependency of our own: the crates' types are
/// what this project is about.
fn serde_json_step(line: &str) -> Option<u64> {
    let rest = line.split("\"step\":").nth(1)?;
    rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}
