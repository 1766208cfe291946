//! The objectives a front is measured on, in the training jobs' vocabulary: `{name, kind:
//! reward|cost, source}`, where `source` is a [`ScorerSpec`] (PPO's objectives use the same
//! words). Every scorer returns a higher-is-better utility; a learned cost model is negated here,
//! and only here.
//!
//! ```yaml
//! objectives:
//!   - { name: harmless, kind: reward, source: { kind: harmless } }
//!   - { name: helpful, kind: reward, source: { kind: score_model, path: runs/rm/score-helpful } }
//! ```
//!
//! The form before the shared vocabulary, a bare scorer (`- kind: harmless`, or `{kind:
//! score_model, name, path, cost}`), is refused with the entry rewritten in the new form.

use std::path::Path;

use panacea_core::config::Validator;
use panacea_core::ObjectiveKind;
use panacea_data::{Scorer, ScorerSpec, TokenCounter};
use panacea_lm::{Llama, PromptTemplate, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::error::{ensure, Context, FrontError, Result};

/// One objective of the front (one λ dimension): its name, which must be the adapter's
/// objective name where the adapter records names; reward or cost (only a learned score model
/// can be a cost); and the score function that measures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct FrontObjective {
    /// The objective's name (`harmless`, `helpful`, ...), as the trained adapter names it.
    pub name: String,
    /// `reward` or `cost`: a cost model's score is negated so that higher is better.
    pub kind: ObjectiveKind,
    /// The score function: a text scorer (`harmless`, `positive`, `negative`, `relevant`,
    /// `concise`) or a learned `score_model`. The rule rewards on token ids cannot score texts.
    pub source: ScorerSpec,
}

/// The entry as the YAML spells it (strict).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kind: ObjectiveKind,
    source: ScorerSpec,
}

impl TryFrom<serde_json::Value> for FrontObjective {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        if let Some(rewritten) = old_form(&value) {
            return Err(format!(
                "{value} is the old form of an objective; objectives now use the training \
                 jobs' vocabulary {{name, kind: reward|cost, source}}: write \
                 {rewritten} (configs/README.md, \"Renamed keys\")"
            ));
        }
        let e: Entry = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Ok(FrontObjective { name: e.name, kind: e.kind, source: e.source })
    }
}

/// The new form of an entry written as a bare scorer (`{kind: harmless}`, `{kind:
/// score_model, name, path, cost}`), or `None` when it is not one.
fn old_form(value: &serde_json::Value) -> Option<String> {
    let map = value.as_object()?;
    let kind = map.get("kind")?.as_str()?;
    if kind == "reward" || kind == "cost" || map.contains_key("source") {
        return None;
    }
    let name = map.get("name").and_then(|n| n.as_str()).unwrap_or(kind);
    let cost = map.get("cost").and_then(|c| c.as_bool()).unwrap_or(false);
    let settings: Vec<String> = map
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "name" | "cost"))
        .map(|(k, v)| format!(", {k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    Some(format!(
        "{{name: {name}, kind: {}, source: {{kind: {kind}{}}}}}",
        if cost { "cost" } else { "reward" },
        settings.concat()
    ))
}

impl FrontObjective {
    /// A reward objective named `name`, measured by `source`.
    pub fn reward(name: &str, source: ScorerSpec) -> Self {
        FrontObjective { name: name.to_owned(), kind: ObjectiveKind::Reward, source }
    }

    /// The objective measured by the text scorer of the same name with default settings
    /// (`harmless`, `positive`, `negative`, `relevant`, `concise`), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(Self::reward(name, ScorerSpec::text_by_name(name)?))
    }

    /// The objective that measures a DPO objective, i.e. a preference-pair dimension of that
    /// name:
    ///
    /// - `harmless`, `positive`, `negative`, `relevant`, `concise`: the text scorer of that
    ///   name. The bundled pairs (`data/pairs/`) were labelled by exactly these scorers.
    /// - `helpful`, measured by `relevant`. The PKU-SafeRLHF schema calls
    ///   `better_response_id` helpful, and the bundled `smollm2-pku.jsonl` writes the
    ///   `relevant` winner there (and the `harmless` winner as `safer_response_id`), so on
    ///   those pairs this is exact. On the published PKU-SafeRLHF (human helpfulness labels)
    ///   relevance is only a proxy; choose other sources with `objectives` there.
    /// - anything else: none.
    pub fn for_pair_dimension(name: &str) -> Option<Self> {
        let scorer = if name == "helpful" { "relevant" } else { name };
        Some(Self::reward(name, ScorerSpec::text_by_name(scorer)?))
    }

    /// Records this objective's problems under `key` (e.g. `objectives.1`).
    pub(crate) fn validate(&self, key: &str, v: &mut Validator) {
        v.check(!self.name.trim().is_empty(), &format!("{key}.name"), "must not be empty");
        let source = format!("{key}.source");
        match &self.source {
            ScorerSpec::EvenTokens | ScorerSpec::OddTokens | ScorerSpec::NegativeLength => v
                .problem(
                    &source,
                    format!(
                        "`{}` scores token ids, and a front is measured on texts\nhint: \
                         harmless, positive, negative, relevant, concise or score_model",
                        self.source.kind_name()
                    ),
                ),
            ScorerSpec::ScoreModel { path } => v.check(
                path.join(panacea_rlhf::score::SCORE_META_FILE).is_file(),
                &format!("{source}.path"),
                "is not a score-model folder (no score_model.json); hint: pass a folder \
                 written by `panacea train-rm`",
            ),
            text => {
                for (sub, message) in text.problems() {
                    v.problem(&format!("{source}.{sub}"), message);
                }
            }
        }
        if self.kind == ObjectiveKind::Cost && !self.source.is_learned() {
            v.problem(
                &format!("{key}.kind"),
                format!(
                    "`cost` with source `{}`: every built-in scorer is a higher-is-better \
                     utility, so only a learned score_model can be a cost\nhint: kind: reward",
                    self.source.kind_name()
                ),
            );
        }
    }

    /// Builds the scorer: a text scorer through [`ScorerSpec::text_scorer`] (concise counts
    /// the policy tokenizer's tokens, MiniLM runs on `device`), a learned score model loaded
    /// onto `base` (negated for a cost) that reads each prompt through `template`, as train-rm
    /// rendered its pairs.
    pub fn build(
        &self,
        tokenizer: &Tokenizer,
        template: &PromptTemplate,
        base: &Llama,
        device: tch::Device,
    ) -> Result<Box<dyn Scorer>> {
        let name = &self.name;
        if let ScorerSpec::ScoreModel { path } = &self.source {
            let cost = self.kind == ObjectiveKind::Cost;
            return Ok(Box::new(LearnedScorer::load(name, path, cost, base, tokenizer, template)?));
        }
        let tok = tokenizer.clone();
        let tokens: TokenCounter =
            std::sync::Arc::new(move |t: &str| tok.encode(t).ok().map(|ids| ids.len()));
        self.source
            .text_scorer(Some(tokens), device)
            .context_with(|| {
                format!("building the {} scorer of objective {name}", self.source.kind_name())
            })?
            .ok_or_else(|| {
                FrontError::Invalid(format!(
                    "objective {name}: `{}` is not a text scorer",
                    self.source.kind_name()
                ))
            })
    }
}

/// A learned score model as a higher-is-better [`Scorer`] (a cost model negated).
struct LearnedScorer {
    name: String,
    model: panacea_rlhf::LearnedScoreModel,
    tokenizer: Tokenizer,
    template: PromptTemplate,
    negate: bool,
}

impl LearnedScorer {
    fn load(
        name: &str,
        path: &Path,
        cost: bool,
        base: &Llama,
        tokenizer: &Tokenizer,
        template: &PromptTemplate,
    ) -> Result<Self> {
        let model = panacea_rlhf::LearnedScoreModel::load(path, base)
            .context_with(|| format!("objective {name}: loading score model {}", path.display()))?;
        let is_cost = model.meta.kind == panacea_core::ObjectiveKind::Cost;
        ensure(is_cost == cost, || {
            format!(
                "objective {name}: {} holds a {:?} model but the objective says cost = {cost}",
                path.display(),
                model.meta.kind
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            model,
            tokenizer: tokenizer.clone(),
            template: template.clone(),
            negate: cost,
        })
    }
}

impl Scorer for LearnedScorer {
    fn name(&self) -> &str {
        &self.name
    }

    /// Unbounded: a learned score has no fixed range.
    fn range(&self) -> (f64, f64) {
        (f64::NEG_INFINITY, f64::INFINITY)
    }

    fn score(
        &self,
        prompts: &[&str],
        responses: &[&str],
    ) -> std::result::Result<Vec<f64>, panacea_data::DataError> {
        use panacea_rlhf::score::ScoreModel;
        let err = |message: String| panacea_data::DataError::Scorer {
            scorer: self.name.clone(),
            message,
        };
        if prompts.len() != responses.len() {
            return Err(err(format!(
                "{} prompts for {} responses",
                prompts.len(),
                responses.len()
            )));
        }
        let device = panacea_lm::CausalLm::device(&self.model.model.backbone);
        let mut out = Vec::with_capacity(prompts.len());
        for (ps, rs) in prompts.chunks(16).zip(responses.chunks(16)) {
            let mut rows = Vec::with_capacity(ps.len());
            for (p, r) in ps.iter().zip(rs) {
                let prompt = self.template.user_prompt(p).map_err(|e| err(e.to_string()))?;
                let text = format!("{prompt}{r}");
                let mut ids = self.tokenizer.encode(&text).map_err(|e| err(e.to_string()))?;
                ids.push(self.tokenizer.eos_id);
                rows.push(ids);
            }
            let (ids, mask) = panacea_rlhf::score::right_pad(&rows, self.tokenizer.pad_id, device);
            let s = tch::no_grad(|| self.model.end_scores(&ids, &mask)); // [b]
            let s: Vec<f64> =
                Vec::try_from(s.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu))
                    .map_err(|e: tch::TchError| err(e.to_string()))?;
            out.extend(s.into_iter().map(|x| if self.negate { -x } else { x }));
        }
        Ok(out)
    }
}
