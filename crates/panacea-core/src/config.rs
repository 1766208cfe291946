//! Typed, strict YAML configs: YAML → `serde_yaml::Value` → `--set a.b=c` overrides → a typed
//! struct (`#[serde(deny_unknown_fields)]`, defaults) → one [`Validate`] pass that reports every
//! problem at once, each with its key path.
//!
//! serde_yaml is archived upstream, so it is used here and nowhere else: swapping it means
//! editing this file only.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// One problem found while validating a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `ppo.clip_ratio`.
    pub key: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Errors from reading, overriding, parsing or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML was malformed, had an unknown key, or a value of the wrong type.
    #[error("config {source_name}: at `{key}`: {message}")]
    Parse {
        /// The file name (or `<string>`).
        source_name: String,
        /// Dotted path of the offending key (`.` for the top level).
        key: String,
        /// The parser's message (names unknown fields and the expected ones).
        message: String,
    },
    /// A `--set key=value` override was malformed or pointed through a non-mapping.
    #[error("override `{expr}`: {reason}")]
    Override {
        /// The override as given.
        expr: String,
        /// Why it could not be applied.
        reason: String,
    },
    /// The config uses a key that was renamed (or moved to another section).
    #[error(
        "config {source_name}: `{old}` is now `{new}`{note}; hint: rename the key (the table of \
         renamed keys is in configs/README.md)"
    )]
    Renamed {
        /// The file name (or `<string>`).
        source_name: String,
        /// The old dotted key, as found.
        old: String,
        /// The key to use instead.
        new: String,
        /// What else changed with it, if anything (empty or starting with `: `).
        note: String,
    },
    /// The config parsed but some values are out of range or inconsistent.
    #[error("config {source_name} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        /// The file name (or `<string>`).
        source_name: String,
        /// Every problem found, in key order of discovery.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

/// Collects validation problems with their key paths.
#[derive(Debug, Default)]
pub struct Validator {
    prefix: Vec<String>,
    problems: Vec<Problem>,
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Self {
        Self::default()
    }

    fn full_key(&self, key: &str) -> String {
        let mut parts = self.prefix.clone();
        if !key.is_empty() {
            parts.push(key.to_owned());
        }
        parts.join(".")
    }

    /// Records a problem at `key` (relative to the current section).
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.full_key(key);
        self.problems.push(Problem { key, message: message.into() });
    }

    /// Records a problem at `key` unless `ok` holds.
    pub fn check(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.problem(key, message);
        }
    }

    /// Checks that a float lies in `[lo, hi]` (and is finite).
    pub fn in_range(&mut self, value: f64, key: &str, lo: f64, hi: f64) {
        if !(value.is_finite() && value >= lo && value <= hi) {
            self.problem(key, format!("must lie in [{lo}, {hi}], got {value}"));
        }
    }

    /// Checks that a float is finite and > 0.
    pub fn positive(&mut self, value: f64, key: &str) {
        if !(value.is_finite() && value > 0.0) {
            self.problem(key, format!("must be > 0, got {value}"));
        }
    }

    /// Validates a nested section under `key`.
    pub fn section<T: Validate + ?Sized>(&mut self, key: &str, value: &T) {
        self.prefix.push(key.to_owned());
        value.validate(self);
        self.prefix.pop();
    }

    /// The problems collected so far.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `Ok` when nothing was recorded, else [`ConfigError::Invalid`] listing everything.
    pub fn finish(self, source_name: &str) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                source_name: source_name.to_owned(),
                problems: self.problems,
            })
        }
    }
}

/// A config section that can check its own values. Implementations record every problem
/// instead of stopping at the first, and use [`Validator::section`] for nested sections.
pub trait Validate {
    /// Records every problem with this value.
    fn validate(&self, v: &mut Validator);

    /// Keys that this config (at the top level) had under other names in earlier versions:
    /// [`parse_config`] refuses a config that still uses one, naming the new key, so old YAML
    /// fails loudly instead of being read differently.
    fn renamed_keys() -> &'static [RenamedKey]
    where
        Self: Sized,
    {
        &[]
    }
}

/// A config key that moved: `old` and `new` are dotted paths from the top of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenamedKey {
    /// The key as earlier versions spelled it (`ppo.ppo.kl_coef`).
    pub old: &'static str,
    /// The key to use now (`ppo.kl_coef`).
    pub new: &'static str,
    /// What else changed with it (units, meaning), or empty.
    pub note: &'static str,
}

/// The first key of `renamed` present in `root`.
fn find_renamed<'a>(root: &Value, renamed: &'a [RenamedKey]) -> Option<&'a RenamedKey> {
    renamed.iter().find(|r| {
        let mut node = root;
        for segment in r.old.split('.') {
            let next = match node {
                Value::Mapping(map) => map.get(Value::String(segment.to_owned())),
                Value::Sequence(seq) => segment.parse::<usize>().ok().and_then(|i| seq.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        true
    })
}

/// Reads a YAML config file, applies `--set` overrides, parses it strictly and validates it.
pub fn load_config<T: DeserializeOwned + Validate>(
    path: &Path,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
    parse_config(&text, &path.display().to_string(), overrides)
}

/// Like [`load_config`] for YAML held in memory (embedded defaults, tests).
pub fn parse_config<T: DeserializeOwned + Validate>(
    yaml: &str,
    source_name: &str,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let parse_err = |key: String, message: String| ConfigError::Parse {
        source_name: source_name.to_owned(),
        key,
        message,
    };
    let mut root: Value =
        serde_yaml::from_str(yaml).map_err(|e| parse_err(".".into(), e.to_string()))?;
    if root.is_null() {
        root = Value::Mapping(Mapping::new());
    }
    for expr in overrides {
        apply_override(&mut root, expr)?;
    }
    if let Some(r) = find_renamed(&root, T::renamed_keys()) {
        return Err(ConfigError::Renamed {
            source_name: source_name.to_owned(),
            old: r.old.to_owned(),
            new: r.new.to_owned(),
            note: if r.note.is_empty() { String::new() } else { format!(": {}", r.note) },
        });
    }
    let value: T = serde_path_to_error::deserialize(root).map_err(|e| {
        let key = e.path().to_string();
        parse_err(key, e.into_inner().to_string())
    })?;
    let mut v = Validator::new();
    value.validate(&mut v);
    v.finish(source_name)?;
    Ok(value)
}

/// Applies one `a.b.c=value` override. The value is read as YAML, so `3`, `0.5`, `true`,
/// `[1, 2]` and `null` get their types and anything else is a string. Missing intermediate
/// sections are created; numeric segments index sequences.
pub fn apply_override(root: &mut Value, expr: &str) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::Override { expr: expr.to_owned(), reason };
    let (key, raw) =
        expr.split_once('=').ok_or_else(|| bad("expected key=value, e.g. ppo.lr=1e-4".into()))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("the key must be a dotted path such as ppo.lr".into()));
    }
    let value: Value = serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut node = root;
    for segment in key.split('.') {
        node = match node {
            Value::Mapping(map) => {
                let k = Value::String(segment.to_owned());
                if !map.contains_key(&k) {
                    map.insert(k.clone(), Value::Mapping(Mapping::new()));
                }
                map.get_mut(&k).ok_or_else(|| bad(format!("cannot enter `{segment}`")))?
            }
            Value::Sequence(seq) => {
                let len = seq.len();
                let i: usize = segment
                    .parse()
                    .map_err(|_| bad(format!("`{segment}` indexes a list: use a number")))?;
                seq.get_mut(i)
                    .ok_or_else(|| bad(format!("index {i} is past the list's end ({len})")))?
            }
            Value::Null => {
                *node = Value::Mapping(Mapping::new());
                let Value::Mapping(map) = node else { unreachable!("just assigned") };
                let k = Value::String(segment.to_owned());
                map.insert(k.clone(), Value::Mapping(Mapping::new()));
                map.get_mut(&k).ok_or_else(|| bad(format!("cannot enter `{segment}`")))?
            }
            _ => return Err(bad(format!("`{segment}` is inside a value that is not a section"))),
        };
    }
    *node = value;
    Ok(())
}

/// Renders a resolved config as YAML, to be saved with a run.
pub fn to_yaml<T: Serialize>(config: &T) -> Result<String, ConfigError> {
    serde_yaml::to_string(config).map_err(|e| ConfigError::Parse {
        source_name: "<resolved config>".into(),
        key: ".".into(),
        message: e.to_string(),
    })
}
