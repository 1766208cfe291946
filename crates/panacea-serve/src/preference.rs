//! Reading a preference λ the way users write it, against the adapter's objective names:
//! a list of weights in objective order (`[0.7, 0.3]`, `0.7,0.3`) or weights by name
//! (`{"helpful": 0.7, "harmless": 0.3}`, `helpful=0.7,harmless=0.3`; a name left out weighs 0).
//!
//! Weights must be finite and ≥ 0 with a positive sum; they are divided by their sum, so
//! `helpful=7,harmless=3` is λ = (0.7, 0.3). Every error names the field or entry at fault.

use panacea_core::preference::PreferenceVector;

/// A preference that is not a point of the objectives' simplex, with what to write instead.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PreferenceError {
    /// Where: `preference`, `preference[1]`, `preference.helpful`.
    pub field: String,
    /// What is wrong, with a hint.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> PreferenceError {
    PreferenceError { field: field.into(), message: message.into() }
}

fn listing(objectives: &[String]) -> String {
    objectives.join(", ")
}

/// Divides finite, non-negative `weights` (one per objective) by their sum.
pub fn normalise(
    field: &str,
    weights: Vec<f64>,
    objectives: &[String],
) -> Result<PreferenceVector, PreferenceError> {
    if weights.len() != objectives.len() {
        return Err(err(
            field,
            format!(
                "`{field}` has {} weights but the adapter has {} objectives ({}); give one \
                 weight per objective in that order, or weights by name",
                weights.len(),
                objectives.len(),
                listing(objectives)
            ),
        ));
    }
    for (i, &w) in weights.iter().enumerate() {
        let name = &objectives[i];
        if !w.is_finite() {
            return Err(err(
                format!("{field}[{i}]"),
                format!("`{field}[{i}]` ({name}) is {w}, not a finite number"),
            ));
        }
        if w < 0.0 {
            return Err(err(
                format!("{field}[{i}]"),
                format!("`{field}[{i}]` ({name}) is {w}; weights must be ≥ 0"),
            ));
        }
    }
    let sum: f64 = weights.iter().sum();
    if sum <= 0.0 {
        return Err(err(
            field,
            format!("`{field}` weights sum to 0; give at least one positive weight"),
        ));
    }
    let scaled: Vec<f64> = weights.iter().map(|w| w / sum).collect();
    PreferenceVector::new(scaled).map_err(|e| err(field, format!("`{field}`: {e}")))
}

/// λ from a JSON request field: an array of numbers, or an object of numbers keyed by
/// objective name.
pub fn from_json(
    field: &str,
    value: &serde_json::Value,
    objectives: &[String],
) -> Result<PreferenceVector, PreferenceError> {
    match value {
        serde_json::Value::Array(items) => {
            let mut weights = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_f64() {
                    Some(w) => weights.push(w),
                    None => {
                        return Err(err(
                            format!("{field}[{i}]"),
                            format!("`{field}[{i}]` is {item}, not a number"),
                        ))
                    }
                }
            }
            normalise(field, weights, objectives)
        }
        serde_json::Value::Object(map) => {
            let mut weights = vec![0.0; objectives.len()];
            for (name, item) in map {
                let Some(i) = objectives.iter().position(|o| o == name) else {
                    return Err(err(
                        format!("{field}.{name}"),
                        format!(
                            "`{field}.{name}`: `{name}` is not an objective of this adapter \
                             (objectives: {})",
                            listing(objectives)
                        ),
                    ));
                };
                weights[i] = item.as_f64().ok_or_else(|| {
                    err(
                        format!("{field}.{name}"),
                        format!("`{field}.{name}` is {item}, not a number"),
                    )
                })?;
            }
            normalise(field, weights, objectives)
        }
        other => Err(err(
            field,
            format!(
                "`{field}` is {other}; give a list of weights ([0.7, 0.3]) or weights by \
                 objective name ({{\"{}\": 1.0}})",
                objectives.first().map_or("objective", String::as_str)
            ),
        )),
    }
}

/// λ from text: `0.7,0.3` (objective order) or `helpful=0.7,harmless=0.3` (by name).
pub fn from_text(
    field: &str,
    text: &str,
    objectives: &[String],
) -> Result<PreferenceVector, PreferenceError> {
    let body = text.trim().trim_start_matches('[').trim_end_matches(']');
    let parts: Vec<&str> = body.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(err(field, format!("`{field}` is empty; write e.g. {}", example(objectives))));
    }
    let number = |s: &str, at: &str| {
        s.parse::<f64>().map_err(|_| err(at, format!("`{at}` is `{s}`, not a number")))
    };
    if parts.iter().any(|p| p.contains('=')) {
        let mut map = serde_json::Map::new();
        for p in &parts {
            let Some((name, value)) = p.split_once('=') else {
                return Err(err(
                    field,
                    format!(
                        "`{p}` has no `=`; write every weight as name=value, e.g. {}",
                        example(objectives)
                    ),
                ));
            };
            let name = name.trim();
            let w = number(value.trim(), &format!("{field}.{name}"))?;
            map.insert(name.to_owned(), serde_json::json!(w));
        }
        return from_json(field, &serde_json::Value::Object(map), objectives);
    }
    let weights = parts
        .iter()
        .enumerate()
        .map(|(i, p)| number(p, &format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    normalise(field, weights, objectives)
}

/// `helpful=0.5,harmless=0.5` for the given names.
fn example(objectives: &[String]) -> String {
    let w = 1.0 / objectives.len().max(1) as f64;
    objectives.iter().map(|o| format!("{o}={w}")).collect::<Vec<_>>().join(",")
}

/// `helpful=0.7, harmless=0.3`.
pub fn describe(pref: &[f64], objectives: &[String]) -> String {
    objectives
        .iter()
        .zip(pref)
        .map(|(o, w)| format!("{o}={}", (w * 1000.0).round() / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `{"helpful": 0.7, "harmless": 0.3}`.
pub fn to_json(pref: &[f64], objectives: &[String]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> =
        objectives.iter().zip(pref).map(|(o, w)| (o.clone(), serde_json::json!(w))).collect();
    serde_json::Value::Object(map)
}
