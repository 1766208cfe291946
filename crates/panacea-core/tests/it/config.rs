//! The strict config layer: unknown keys, overrides and the single validation pass.

use panacea_core::config::{parse_config, ConfigError, RenamedKey, Validate, Validator};
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
    assert_eq!(cfg, Train { lr: 1e-3, steps: 7, ppo: Ppo { clip_ratio: 0.3 } });
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
