//! The front of an eval-front report (`panacea serve --report DIR`): the page at `/` embeds
//! the report's interactive front ([`panacea_eval::FrontView`], served at `/report.html`) and
//! marks the grid point nearest the λ being sent.

use std::path::Path;

use panacea_eval::FrontView;

use crate::error::ServeError;

/// Reads the front view that eval-front stored under `front_view` in `DIR/report.json`.
pub fn load_front_view(dir: &Path) -> Result<FrontView, ServeError> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ServeError::io(format!("reading the report {}", path.display()), e))?;
    let invalid = |what: String| {
        ServeError::Invalid(format!(
            "{}: {what} (hint: --report takes the output folder of `panacea eval-front`; \
             reports written before the interactive front have no `front_view`: run \
             eval-front again)",
            path.display()
        ))
    };
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON ({e})")))?;
    let view = json
        .get_mut("front_view")
        .map(serde_json::Value::take)
        .ok_or_else(|| invalid("no `front_view` field".into()))?;
    let view: FrontView =
        serde_json::from_value(view).map_err(|e| invalid(format!("front_view: {e}")))?;
    view.check().map_err(|e| invalid(e.to_string()))?;
    Ok(view)
}

/// Checks that the report measured the served adapter's objectives, in the same λ order.
pub(crate) fn check_objectives(view: &FrontView, served: &[String]) -> Result<(), ServeError> {
    if view.objectives != served {
        return Err(ServeError::Invalid(format!(
            "the report's objectives ({}) are not the served adapter's ({}) (hint: pass the \
             eval-front report of this adapter)",
            view.objectives.join(", "),
            if served.is_empty() { "none: no adapter is served".into() } else { served.join(", ") }
        )));
    }
    if view.steered().is_none() {
        return Err(ServeError::Invalid(
            "the report has no Panacea front (no method with preferences) to steer along".into(),
        ));
    }
    Ok(())
}
