//! The strict config layer: unknown keys, overrides and the single validation pass.

use panacea_core::config::{
    load_config, parse_config, ConfigError, RenamedKey, Validate, Validator, MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Train {
    #[serde(default = "default_lr")]
    lr: f64,
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    ppo: Ppo,
    /// A number no `validate` looks at (like an adapter's α): only the generic finiteness
    /// check stands between it and a NaN run.
    #[serde(default)]
    alpha: f64,
    #[serde(default)]
    milestones: Vec<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Ppo {
    #[serde(default)]
    clip_ratio: f64,
}

fn default_lr() -> f64 {
    1e-3
}

impl Validate for Train {
    fn validate(&self, v: &mut Validator) {
        v.positive(self.lr, "lr");
        v.check(self.steps > 0, "steps", format!("must be at least 1, got {}", self.steps));
        v.section("ppo", &self.ppo);
    }

    fn renamed_keys() -> &'static [RenamedKey] {
        &[
            RenamedKey { old: "ppo.ppo.clip_ratio", new: "ppo.clip_ratio", note: "" },
            RenamedKey { old: "grad_clip", new: "optim.max_grad_norm", note: "same meaning" },
        ]
    }
}

impl Validate for Ppo {
    fn validate(&self, v: &mut Validator) {
        v.in_range(self.clip_ratio, "clip_ratio", 0.0, 1.0);
    }
}

#[test]
fn config_rejects_unknown_key_with_its_path() {
    let err = parse_config::<Train>("steps: 3\nppo:\n  clip_ratoi: 0.2\n", "t.yaml", &[])
        .expect_err("typo must be rejected");
    match &err {
        ConfigError::Parse { key, message, source_name } => {
            assert_eq!(source_name, "t.yaml");
            assert_eq!(key, "ppo.clip_ratoi");
            assert!(message.contains("clip_ratoi") && message.contains("clip_ratio"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn config_reports_two_bad_values_in_one_error() {
    let err = parse_config::<Train>("lr: -1\nsteps: 0\nppo: {clip_ratio: 0.2}\n", "t.yaml", &[])
        .expect_err("two bad values");
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err:?}")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["lr", "steps"]);
    let text = err.to_string();
    assert!(text.contains("2 problem(s)") && text.contains("got -1"), "{text}");
}

#[test]
fn config_overrides_nested_keys_with_typed_values() {
    let cfg = parse_config::<Train>(
        "steps: 3\n",
        "t.yaml",
        &["ppo.clip_ratio=0.3".into(), "steps=7".into()],
    )
    .expect("valid");
    assert_eq!(
        cfg,
        Train { lr: 1e-3, steps: 7, ppo: Ppo { clip_ratio: 0.3 }, alpha: 0.0, milestones: vec![] }
    );
    // A bad override value is reported with its key path, like a bad file value.
    let err = parse_config::<Train>("steps: 3\n", "t.yaml", &["ppo.clip_ratio=2".into()])
        .expect_err("out of range");
    assert!(err.to_string().contains("ppo.clip_ratio"), "{err}");
    let err = parse_config::<Train>("steps: 3\n", "t.yaml", &["ppo".into()]).expect_err("no =");
    assert!(matches!(err, ConfigError::Override { .. }), "{err:?}");
}

#[test]
fn config_wrong_type_names_the_key() {
    let err = parse_config::<Train>("steps: many\n", "t.yaml", &[]).expect_err("not a number");
    let ConfigError::Parse { key, .. } = &err else { panic!("{err:?}") };
    assert_eq!(key, "steps");
}

/// A config that still uses a renamed key fails with the new key's name, whether the key comes
/// from the file or from a `--set` override; the same config with the new key parses.
#[test]
fn renamed_keys_are_refused_with_the_new_name() {
    let err = parse_config::<Train>("steps: 3\nppo:\n  ppo:\n    clip_ratio: 0.2\n", "t.yaml", &[])
        .expect_err("old key");
    assert!(matches!(err, ConfigError::Renamed { .. }), "{err}");
    assert!(err.to_string().contains("`ppo.ppo.clip_ratio` is now `ppo.clip_ratio`"), "{err}");
    let err = parse_config::<Train>("steps: 3\n", "t.yaml", &["grad_clip=1".to_owned()])
        .expect_err("old key in an override");
    assert!(
        err.to_string().contains("`grad_clip` is now `optim.max_grad_norm`: same meaning"),
        "{err}"
    );
    let ok: Train =
        parse_config("steps: 3\nppo: {clip_ratio: 0.2}\n", "t.yaml", &[]).expect("new key");
    assert_eq!(ok.ppo.clip_ratio, 0.2);
}

#[test]
fn config_rejects_non_finite_numbers_anywhere_with_key_and_value() {
    // From an override, in a field no validator checks (issue 18: `--set adapter.alpha=.nan`).
    let err = parse_config::<Train>("steps: 3\n", "t.yaml", &["alpha=.nan".into()])
        .expect_err("NaN alpha");
    let ConfigError::Invalid { problems, source_name } = &err else { panic!("{err:?}") };
    assert_eq!(source_name, "t.yaml");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "alpha");
    assert!(problems[0].message.starts_with(".nan is not a finite number"), "{err}");
    assert!(err.to_string().contains("hint"), "{err}");

    // From the file, every one at once, in list items and nested sections too.
    let yaml = "steps: 3\nalpha: .inf\nmilestones: [1.0, -.inf]\nppo: {clip_ratio: .NaN}\n";
    let err = parse_config::<Train>(yaml, "t.yaml", &[]).expect_err("three non-finite");
    let ConfigError::Invalid { problems, .. } = &err else { panic!("{err:?}") };
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.split(' ').next().unwrap_or("")))
        .collect();
    assert_eq!(
        found,
        [("alpha", ".inf"), ("milestones.1", "-.inf"), ("ppo.clip_ratio", ".nan")],
        "{err}"
    );

    // Finite extremes still pass.
    let cfg = parse_config::<Train>("steps: 3\nalpha: 1.0e300\nmilestones: [-1e300]\n", "t", &[])
        .expect("finite values");
    assert_eq!(cfg.alpha, 1e300);
}

#[test]
fn config_refuses_deep_nesting_before_parsing() {
    // Issue 18: 100k levels in 200 KB took the YAML parser 37–79 s before its recursion error.
    // The scan refuses them before the parser runs, naming the line and the limit.
    let deep = format!("steps: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let err = parse_config::<Train>(&deep, "deep.yaml", &[]).expect_err("too deep");
    let ConfigError::Limit { source_name, message } = &err else { panic!("{err:?}") };
    assert_eq!(source_name, "deep.yaml");
    assert!(message.contains("line 1") && message.contains(&MAX_CONFIG_DEPTH.to_string()));

    // Compact block lists (`- - - x`) and deep indentation count too.
    let compact = format!("steps: 3\nmilestones:\n  {}1\n", "- ".repeat(MAX_CONFIG_DEPTH + 1));
    let err = parse_config::<Train>(&compact, "c.yaml", &[]).expect_err("compact lists");
    assert!(matches!(&err, ConfigError::Limit { message, .. } if message.contains("line 3")));
    let indented: String =
        (0..=MAX_CONFIG_DEPTH).map(|d| format!("{}k{d}:\n", " ".repeat(d))).collect();
    let err = parse_config::<Train>(&indented, "i.yaml", &[]).expect_err("indentation");
    assert!(matches!(err, ConfigError::Limit { .. }), "{err:?}");

    // Through an override: a deep value, or a key with too many segments.
    let value = format!("milestones={}1{}", "[".repeat(1000), "]".repeat(1000));
    let err = parse_config::<Train>("steps: 3", "t", &[value]).expect_err("deep value");
    assert!(matches!(err, ConfigError::Override { .. }), "{err:?}");
    let key = format!("{}=1", vec!["a"; 10_000].join("."));
    let err = parse_config::<Train>("steps: 3", "t", &[key]).expect_err("deep key");
    assert!(matches!(err, ConfigError::Override { .. }), "{err:?}");
}

#[test]
fn config_nesting_scan_accepts_real_configs() {
    // Brackets inside quotes, comments and block scalars are text, not nesting; the bundled
    // configs all pass (they are parsed by the crates that own their types).
    let yaml = format!(
        "steps: 3 # {open}\nppo: {{clip_ratio: 0.2}}\nmilestones: [0.5, 1.0]\nnote: '{open}'\n\
         text: \"{open}\\\" {open}\"\nprompt: |\n  {open}\n  - - - - {open}\nalpha: 1.5\n",
        open = "[".repeat(MAX_CONFIG_DEPTH + 1)
    );
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct WithText {
        steps: u32,
        ppo: Ppo,
        milestones: Vec<f64>,
        note: String,
        text: String,
        prompt: String,
        alpha: f64,
    }
    impl Validate for WithText {
        fn validate(&self, _: &mut Validator) {}
    }
    let cfg = parse_config::<WithText>(&yaml, "text.yaml", &[]).expect("brackets in text");
    assert_eq!(cfg.prompt.lines().count(), 2);
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for entry in walk(&configs) {
        if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read_to_string(&entry).expect("read config");
            let err = parse_config::<Train>(&text, &entry.display().to_string(), &[]);
            assert!(!matches!(err, Err(ConfigError::Limit { .. })), "{}: {err:?}", entry.display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "found {seen} configs under {}", configs.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("configs folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn config_file_over_the_size_cap_is_refused_unread() {
    let dir = crate::temp_dir("config-size");
    let path = dir.join("big.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&path, line.repeat(MAX_CONFIG_BYTES / line.len() + 1)).expect("write");
    let err = load_config::<Train>(&path, &[]).expect_err("too large");
    assert!(
        matches!(&err, ConfigError::Limit { message, .. } if message.contains("larger than")),
        "{err:?}"
    );
    // The same bytes in memory are refused too.
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(matches!(parse_config::<Train>(&text, "m", &[]), Err(ConfigError::Limit { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes (as lossy UTF-8) and arbitrary overrides never panic the config layer.
    #[test]
    fn config_parser_never_panics_on_arbitrary_text(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        set in prop::collection::vec("[a-z.=\\[\\]{}:,. 0-9-]{0,24}", 0..3),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_config::<Train>(&text, "fuzz", &set);
    }

    /// YAML-ish pieces (brackets, indicators, quotes, indentation, NaN spellings) never panic.
    #[test]
    fn config_parser_never_panics_on_yamlish_text(
        pieces in prop::collection::vec(prop::sample::select(vec![
            "steps: ", "ppo:", "\n", "  ", "- ", "? ", "[", "]", "{", "}", ",", ": ", "'", "\"",
            "#", "|", ">", ".nan", "-.inf", "1e999", "3", "&a ", "*a", "!tag ", "alpha: ",
            "milestones: ", "\\", "\t",
        ]), 0..40),
    ) {
        let text: String = pieces.concat();
        let _ = parse_config::<Train>(&text, "fuzz", &[]);
    }
}
