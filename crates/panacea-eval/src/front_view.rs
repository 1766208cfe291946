//! The interactive front view: every method's points in objective space, drawn as SVG by the
//! page's own JavaScript (no CDN, no network), with each point's λ and a sample answer shown on
//! hover, and the point nearest a chosen λ marked.
//!
//! eval-front stores a [`FrontView`] under `front_view` in its `report.json` and writes
//! [`FrontView::html`] as the standalone `report.html`; `panacea serve --report DIR` reads the
//! same view back and serves the same page at `/report.html`, which its chat page embeds and
//! tells the current λ (`window.postMessage({panaceaPref: [..]})`, or `#pref=a,b` in the URL).
//!
//! The steered front is the first method that is not a baseline and has preferences (the
//! Panacea adapter); its circles carry the class `grid`, one per grid λ.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// What the view draws: objective names and each method's points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontView {
    /// Objective names, in λ order (higher is better for each).
    pub objectives: Vec<String>,
    /// Methods in report order (the base first).
    pub methods: Vec<ViewMethod>,
}

/// One method's points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewMethod {
    /// The method's name (a legend entry).
    pub name: String,
    /// A baseline (soups, DPS) rather than a Panacea adapter or the base.
    pub baseline: bool,
    /// Its points.
    pub points: Vec<ViewPoint>,
}

/// One point of a front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewPoint {
    /// The preference it was generated under (`None` for the base).
    pub pref: Option<Vec<f64>>,
    /// Its objective vector (mean over prompts).
    pub value: Vec<f64>,
    /// One answer generated at this point, when the evaluation kept one.
    pub sample: Option<SampleAnswer>,
}

/// A prompt and the answer generated for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleAnswer {
    /// The prompt.
    pub prompt: String,
    /// The answer.
    pub answer: String,
}

/// The page; `/*FRONT_VIEW*/null` is replaced by the view's JSON.
const TEMPLATE: &str = include_str!("front_view.html");
const SLOT: &str = "/*FRONT_VIEW*/null";

impl FrontView {
    /// Checks that every value and λ has one finite entry per objective, and that λ are
    /// weights (≥ 0).
    pub fn check(&self) -> Result<()> {
        let k = self.objectives.len();
        if k == 0 {
            return Err(EvalError::InvalidValue {
                what: "front view",
                detail: "no objectives (hint: a front needs at least one objective)".into(),
            });
        }
        for m in &self.methods {
            for (i, p) in m.points.iter().enumerate() {
                let entries = std::iter::once(("value", p.value.as_slice()))
                    .chain(p.pref.as_deref().map(|l| ("pref", l)));
                for (what, v) in entries {
                    let problem = if v.len() != k {
                        Some(format!(
                            "{what} has {} entries but there are {k} objectives ({})",
                            v.len(),
                            self.objectives.join(", ")
                        ))
                    } else {
                        v.iter()
                            .find(|x| !x.is_finite() || (what == "pref" && **x < 0.0))
                            .map(|x| format!("{what} holds {x}"))
                    };
                    if let Some(problem) = problem {
                        return Err(EvalError::InvalidValue {
                            what: "front view",
                            detail: format!(
                                "method {:?} point {i}: {problem} (hint: one finite entry per \
                                 objective, in λ order; λ weights ≥ 0)",
                                m.name
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The steered front: the first method that is not a baseline and has preferences.
    pub fn steered(&self) -> Option<&ViewMethod> {
        self.methods.iter().find(|m| !m.baseline && m.points.iter().any(|p| p.pref.is_some()))
    }

    /// The standalone page (one file, inline CSS and JavaScript), titled `title`.
    pub fn html(&self, title: &str) -> Result<String> {
        self.check()?;
        let json = serde_json::to_string(self).map_err(|e| EvalError::InvalidValue {
            what: "front view",
            detail: format!("cannot write it as JSON: {e}"),
        })?;
        // Inside <script>, "</script>" in an answer would end the element; "\u003c" is the same
        // JSON string.
        let json = json.replace('<', "\\u003c");
        Ok(TEMPLATE.replace("<!--TITLE-->", &escape_html(title)).replacen(SLOT, &json, 1))
    }
}

/// Escapes text for HTML element content.
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
