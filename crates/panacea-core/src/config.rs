//! Typed, strict YAML configs: YAML → `serde_yaml::Value` → `--set a.b=c` overrides → a typed
//! struct (`#[serde(deny_unknown_fields)]`, defaults) → one [`Validate`] pass that reports every
//! problem at once, each with its key path.
//!
//! Two checks run on the untyped YAML, so every config type gets them without writing a line:
//!
//! - Before parsing, the text is bounded ([`MAX_CONFIG_BYTES`]) and a cheap scan over it bounds
//!   its nesting ([`MAX_CONFIG_DEPTH`]): the YAML parser takes tens of seconds on a few hundred
//!   kilobytes of deeply nested brackets before its own recursion limit stops it.
//! - After the overrides, every number must be finite: YAML spells NaN and ∞ as `.nan`, `.inf`
//!   and `-.inf`, and a non-finite setting (a learning rate, an adapter's α) trains silently
//!   into NaN weights. The error names each key and its value.
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
    /// The config text is too large or too deeply nested to be a config; nothing was parsed.
    #[error("config {source_name}: {message}")]
    Limit {
        /// The file name (or `<string>`, or the override).
        source_name: String,
        /// Which limit was exceeded, where, and a hint.
        message: String,
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

/// Largest config text accepted, in bytes. Run configs are a few kilobytes; a bigger file is
/// not a config (or is an attack on the parser), and is refused before it is read whole.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Deepest nesting of sections and lists accepted (the bundled configs nest at most 4 deep).
/// Checked before parsing by a linear scan that over-estimates the depth slightly.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// Reads a YAML config file, applies `--set` overrides, parses it strictly and validates it.
pub fn load_config<T: DeserializeOwned + Validate>(
    path: &Path,
    overrides: &[String],
) -> Result<T, ConfigError> {
    let text = read_config_file(path)?;
    parse_config(&text, &path.display().to_string(), overrides)
}

/// Reads a config file as UTF-8 text, refusing one over [`MAX_CONFIG_BYTES`] without reading
/// more than that (the file may be a device or a pipe that never ends).
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(too_large(&path.display().to_string()));
    }
    String::from_utf8(bytes)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

fn too_large(source_name: &str) -> ConfigError {
    ConfigError::Limit {
        source_name: source_name.to_owned(),
        message: format!(
            "is larger than {MAX_CONFIG_BYTES} bytes, the most a config may hold; hint: is this \
             the right file? Data belongs in a data file named by the config"
        ),
    }
}

/// `Err` when the scan of `yaml` finds nesting deeper than [`MAX_CONFIG_DEPTH`].
fn check_nesting(yaml: &str, source_name: &str) -> Result<(), ConfigError> {
    match first_line_nested_too_deep(yaml, MAX_CONFIG_DEPTH) {
        None => Ok(()),
        Some(line) => Err(ConfigError::Limit {
            source_name: source_name.to_owned(),
            message: format!(
                "line {line} nests sections or lists more than {MAX_CONFIG_DEPTH} levels deep; \
                 hint: configs are shallow (a few levels); check the brackets and indentation"
            ),
        }),
    }
}

/// The first 1-based line at which an upper bound on the YAML nesting depth exceeds `limit`,
/// found in one pass without parsing. The bound adds, per line:
///
/// - the block levels open at its indentation (a stack of increasing indentations: a deeper
///   indentation opens at most one level),
/// - one level per compact entry indicator (`- - x` opens two lists on one line), and
/// - the flow brackets `[` / `{` open outside quoted scalars, comments and block scalars.
///
/// It can over-count (a `[` inside an unquoted string counts), never under-count the levels a
/// parser would build, and costs one pass over the bytes.
fn first_line_nested_too_deep(yaml: &str, limit: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar (which may span lines): its quote character.
    let mut quote: Option<char> = None;
    // The indentation of the line that opened a block scalar (`|`, `>`): deeper lines are text.
    let mut block_scalar: Option<usize> = None;
    for (i, line) in yaml.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = &line[indent..];
        if let Some(opener) = block_scalar {
            if body.trim().is_empty() || indent > opener {
                continue;
            }
            block_scalar = None;
        }
        let mut block_depth = 0;
        if quote.is_none() && flow == 0 && !body.trim().is_empty() && !body.starts_with('#') {
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last().is_none_or(|&top| indent > top) {
                indents.push(indent);
            }
            let mut rest = body;
            let mut compact = 0;
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
                compact += 1;
                rest = r.trim_start_matches(' ');
            }
            block_depth = indents.len() + compact;
        }
        let mut deepest_flow = flow;
        let mut prev = ' ';
        let mut escaped = false;
        for c in body.chars() {
            match quote {
                Some('"') => {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        quote = None;
                    }
                }
                // `''` inside single quotes closes and reopens: the count stays right.
                Some(_) => {
                    if c == '\'' {
                        quote = None;
                    }
                }
                None => match c {
                    '#' if prev == ' ' || prev == '\t' => break,
                    '\'' | '"' if matches!(prev, ' ' | '\t' | '[' | '{' | ',' | ':' | '-') => {
                        quote = Some(c)
                    }
                    '[' | '{' => {
                        flow += 1;
                        deepest_flow = deepest_flow.max(flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            prev = c;
        }
        if block_depth + deepest_flow > limit {
            return Some(i + 1);
        }
        if quote.is_none() && flow == 0 && opens_block_scalar(body) {
            block_scalar = Some(indent);
        }
    }
    None
}

/// Whether a line ends with a block scalar header (`key: |`, `- >-`, `|2`), comments aside.
fn opens_block_scalar(body: &str) -> bool {
    let code = match body.find(" #") {
        Some(at) => &body[..at],
        None => body,
    };
    let code = code.trim_end();
    let (before, header) = match code.rfind(' ') {
        Some(at) => (code[..at].trim_end(), &code[at + 1..]),
        None => ("", code),
    };
    let mut chars = header.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| c == '-' || c == '+' || c.is_ascii_digit())
        && (before.is_empty() || before.ends_with(':') || before.ends_with('-'))
}

/// Records every non-finite number in the tree as a problem at its key path, and refuses a
/// tree nested deeper than [`MAX_CONFIG_DEPTH`] (overrides can deepen a file's tree). Walks
/// with an explicit stack, so no input can exhaust the call stack.
fn check_values(root: &Value, source_name: &str) -> Result<(), ConfigError> {
    let mut v = Validator::new();
    let mut stack: Vec<(&Value, String, usize)> = vec![(root, String::new(), 0)];
    while let Some((value, key, depth)) = stack.pop() {
        if depth > MAX_CONFIG_DEPTH {
            return Err(ConfigError::Limit {
                source_name: source_name.to_owned(),
                message: format!(
                    "`{key}` lies more than {MAX_CONFIG_DEPTH} levels deep; hint: configs are \
                     shallow (a few levels); check the overrides"
                ),
            });
        }
        let child = |segment: String| {
            if key.is_empty() {
                segment
            } else {
                format!("{key}.{segment}")
            }
        };
        match value {
            Value::Number(n) => {
                if let Some(x) = n.as_f64().filter(|x| !x.is_finite()) {
                    let yaml = if x.is_nan() {
                        ".nan"
                    } else if x > 0.0 {
                        ".inf"
                    } else {
                        "-.inf"
                    };
                    v.problem(
                        &key,
                        format!(
                            "{yaml} is not a finite number; hint: every number in a config must \
                             be finite (YAML reads .nan, .inf and -.inf as NaN and ±∞)"
                        ),
                    );
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push((item, child(i.to_string()), depth + 1));
                }
            }
            Value::Mapping(map) => {
                let entries: Vec<(&Value, &Value)> = map.iter().collect();
                for (k, item) in entries.into_iter().rev() {
                    let segment = match k {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => "<key>".to_owned(),
                    };
                    stack.push((item, child(segment), depth + 1));
                }
            }
            Value::Tagged(tagged) => stack.push((&tagged.value, key.clone(), depth + 1)),
            Value::Null | Value::Bool(_) | Value::String(_) => {}
        }
    }
    v.finish(source_name)
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
    if yaml.len() > MAX_CONFIG_BYTES {
        return Err(too_large(source_name));
    }
    check_nesting(yaml, source_name)?;
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
    check_values(&root, source_name)?;
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
    if key.split('.').count() > MAX_CONFIG_DEPTH {
        return Err(bad(format!("the key has more than {MAX_CONFIG_DEPTH} segments")));
    }
    if raw.len() > MAX_CONFIG_BYTES {
        return Err(bad(format!("the value is longer than {MAX_CONFIG_BYTES} bytes")));
    }
    if let Some(line) = first_line_nested_too_deep(raw, MAX_CONFIG_DEPTH) {
        return Err(bad(format!(
            "the value nests more than {MAX_CONFIG_DEPTH} levels deep (line {line})"
        )));
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
