//! `objectives` in the training jobs' vocabulary, `{name, kind: reward|cost, source}`: the old
//! bare-scorer form is refused with the entry rewritten, built-in scorers cannot be costs, and
//! an adapter that records its objectives' names must be scored under the same names.

use panacea_core::ObjectiveKind;
use panacea_data::ScorerSpec;
use panacea_front::{evaluate, AdapterSpec, FrontConfig, FrontObjective, Method};
use panacea_run::Silent;

use crate::support::{random_adapter, temp_dir, tiny_base, workspace};

fn parse(sets: &[&str]) -> Result<FrontConfig, panacea_core::config::ConfigError> {
    let path = workspace().join("configs/tiny/eval.yaml");
    let yaml = std::fs::read_to_string(&path).expect("configs/tiny/eval.yaml");
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    panacea_core::config::parse_config(&yaml, "eval.yaml", &sets)
}

#[test]
fn the_bundled_configs_name_their_objectives_and_sources() {
    for file in ["configs/eval-front.yaml", "configs/tiny/eval.yaml"] {
        let cfg: FrontConfig =
            panacea_core::config::load_config(&workspace().join(file), &[]).expect(file);
        assert_eq!(
            cfg.objectives,
            [
                FrontObjective::reward("harmless", ScorerSpec::Harmless),
                FrontObjective::reward("positive", ScorerSpec::Positive)
            ],
            "{file}"
        );
    }
    // The three-objective front: three named objectives and a Das–Dennis grid of 15 points.
    let cfg: FrontConfig =
        panacea_core::config::load_config(&workspace().join("configs/eval-front-three.yaml"), &[])
            .expect("eval-front-three");
    let names: Vec<&str> = cfg.objectives.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["relevant", "positive", "concise"]);
    assert_eq!(cfg.grid.grid(3).expect("grid").len(), 15);
}

#[test]
fn an_old_form_entry_is_refused_with_the_new_form() {
    let msg = parse(&["objectives=[{kind: harmless}, {kind: concise, c: 4}]"])
        .expect_err("old form")
        .to_string();
    assert!(msg.contains("objectives"), "{msg}");
    assert!(msg.contains("{name: harmless, kind: reward, source: {kind: harmless}}"), "{msg}");
    let msg = parse(&[
        "objectives=[{kind: score_model, name: harmless, path: R/score-harmless, cost: true}, \
         {name: positive, kind: reward, source: {kind: positive}}]",
    ])
    .expect_err("old learned form")
    .to_string();
    assert!(
        msg.contains(
            "{name: harmless, kind: cost, source: {kind: score_model, path: R/score-harmless}}"
        ),
        "{msg}"
    );
    // The new form with a typo is a plain strict-config error, not the old-form message.
    let msg = parse(&["objectives=[{name: a, kind: reward, sorce: {kind: positive}}, \
                       {name: b, kind: reward, source: {kind: harmless}}]"])
    .expect_err("unknown field")
    .to_string();
    assert!(msg.contains("sorce") && !msg.contains("old form"), "{msg}");
}

#[test]
fn built_in_costs_token_rules_and_duplicate_names_are_refused() {
    let msg = parse(&["objectives=[{name: h, kind: cost, source: {kind: harmless}}, \
                       {name: p, kind: reward, source: {kind: positive}}]"])
    .expect_err("a built-in cost")
    .to_string();
    assert!(msg.contains("objectives.0.kind") && msg.contains("only a learned"), "{msg}");
    let msg = parse(&["objectives=[{name: e, kind: reward, source: {kind: even_tokens}}, \
                       {name: p, kind: reward, source: {kind: positive}}]"])
    .expect_err("a token rule")
    .to_string();
    assert!(msg.contains("objectives.0.source") && msg.contains("token ids"), "{msg}");
    let msg = parse(&["objectives=[{name: p, kind: reward, source: {kind: harmless}}, \
                       {name: p, kind: reward, source: {kind: positive}}]"])
    .expect_err("the same name twice")
    .to_string();
    assert!(msg.contains("same objective name twice"), "{msg}");
    // The same scorer under two names is fine (e.g. two objectives both read by positive).
    let cfg = parse(&["objectives=[{name: a, kind: reward, source: {kind: positive}}, \
                       {name: b, kind: reward, source: {kind: positive}}]"])
    .expect("two names, one scorer");
    assert_eq!(cfg.objectives[1].kind, ObjectiveKind::Reward);
}

/// An adapter trained on `[helpful, harmless]` scored as `[harmless, positive]`: an error that
/// names both lists; named as the adapter names them, it evaluates.
#[test]
fn objective_names_must_match_the_adapters() {
    let Some(base) = tiny_base(5) else { return };
    let dir = temp_dir("objective-names");
    let adapter = dir.join("adapter");
    random_adapter(&base, &["helpful", "harmless"], 3, &adapter);
    let method = [Method::Adapter(AdapterSpec { label: "a".into(), adapter })];
    let prompts = vec!["Hello there".to_owned()];
    let short = ["grid={kind: grid2d, n: 2}", "generation.max_new_tokens=2"];
    let cfg = parse(&[&["model=tiny-random"][..], &short].concat()).expect("config");
    let msg = evaluate(&cfg, &base, &method, &prompts, &mut Silent)
        .expect_err("names differ")
        .to_string();
    assert!(msg.contains(r#"["helpful", "harmless"]"#), "{msg}");
    assert!(msg.contains(r#"["harmless", "positive"]"#), "{msg}");
    let renamed = "objectives=[{name: helpful, kind: reward, source: {kind: positive}}, \
                   {name: harmless, kind: reward, source: {kind: harmless}}]";
    let cfg = parse(&[&["model=tiny-random", renamed][..], &short].concat()).expect("config");
    let ev = evaluate(&cfg, &base, &method, &prompts, &mut Silent).expect("same names");
    assert_eq!(ev.objectives, ["helpful", "harmless"]);
    let _ = std::fs::remove_dir_all(&dir);
}
