//! The gold scorers a front is measured with: one per objective, each a higher-is-better
//! utility (a learned cost model is negated here, and only here).

use std::path::{Path, PathBuf};

use panacea_core::config::Validator;
use panacea_data::{ConciseScorer, Scorer, ScorerSpec, TokenCounter};
use panacea_lm::{ChatTemplate, Llama, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::error::{ensure, Context, FrontError, Result};

/// A gold scorer (all higher-is-better utilities; ranges in panacea-data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GoldScorer {
    /// 1 − p(toxic) of the bundled alt-profanity-check model, in [0, 1].
    Harmless,
    /// VADER compound sentiment, in [−1, 1].
    Positive,
    /// Minus the VADER compound, in [−1, 1].
    Negative,
    /// Cosine of all-MiniLM-L6-v2 prompt and response embeddings, in [−1, 1]
    /// (`cargo xtask fetch-scorers`).
    Relevant {
        /// Texts per encoder batch (default 32).
        #[serde(default = "default_relevant_batch")]
        batch_size: usize,
    },
    /// A learned reward or cost model folder from `panacea train-rm`, on the evaluated base
    /// model: it scores the ChatML-rendered prompt + response + EOS at the last token, as PPO
    /// scored rollouts; a cost is negated, so higher is better like every other scorer.
    ScoreModel {
        /// The objective's name (the trained objective's, e.g. `helpful`).
        name: String,
        /// The score-model folder.
        path: PathBuf,
        /// True for a cost model (its score is negated).
        #[serde(default)]
        cost: bool,
    },
    /// The paper's concise reward r_max, or r_max + 1 − |y|/c past c policy tokens.
    Concise {
        /// r_max (default 4).
        #[serde(default = "default_r_max")]
        r_max: f64,
        /// c in policy tokens (default 50).
        #[serde(default = "default_c")]
        c: f64,
    },
}

fn default_relevant_batch() -> usize {
    32
}
fn default_r_max() -> f64 {
    ConciseScorer::DEFAULT_R_MAX
}
fn default_c() -> f64 {
    ConciseScorer::DEFAULT_C
}

impl GoldScorer {
    /// The objective name (the scorer's `name()`).
    pub fn name(&self) -> &str {
        match self {
            GoldScorer::ScoreModel { name, .. } => name,
            GoldScorer::Harmless => "harmless",
            GoldScorer::Positive => "positive",
            GoldScorer::Negative => "negative",
            GoldScorer::Relevant { .. } => "relevant",
            GoldScorer::Concise { .. } => "concise",
        }
    }

    /// The scorer with default settings for an objective name, if it is a gold scorer's.
    pub fn from_name(name: &str) -> Option<GoldScorer> {
        Some(match name {
            "harmless" => GoldScorer::Harmless,
            "positive" => GoldScorer::Positive,
            "negative" => GoldScorer::Negative,
            "relevant" => GoldScorer::Relevant { batch_size: default_relevant_batch() },
            "concise" => GoldScorer::concise_default(),
            _ => return None,
        })
    }

    /// concise with r_max = 4, c = 50 policy tokens.
    pub(crate) fn concise_default() -> GoldScorer {
        GoldScorer::Concise { r_max: default_r_max(), c: default_c() }
    }

    /// The gold scorer that measures a DPO objective, i.e. a preference-pair dimension:
    ///
    /// - `harmless`, `positive`, `negative`, `relevant`, `concise`: the gold scorer of that
    ///   name. The bundled pairs (`data/pairs/`) were labelled by exactly these scorers.
    /// - `helpful` → `relevant`. The PKU-SafeRLHF schema calls `better_response_id` helpful,
    ///   and the bundled `smollm2-pku.jsonl` writes the `relevant` winner there (and the
    ///   `harmless` winner as `safer_response_id`), so on those pairs this is exact. On the
    ///   published PKU-SafeRLHF (human helpfulness labels) relevance is only a proxy; choose
    ///   other scorers with `objectives` there.
    /// - anything else: none.
    pub fn for_pair_dimension(name: &str) -> Option<GoldScorer> {
        match name {
            "helpful" => GoldScorer::from_name("relevant"),
            other => GoldScorer::from_name(other),
        }
    }

    /// Records this scorer's problems under `key` (e.g. `objectives.1`).
    pub(crate) fn validate(&self, key: &str, v: &mut Validator) {
        match self {
            GoldScorer::Relevant { batch_size } => {
                v.check(*batch_size >= 1, &format!("{key}.batch_size"), "must be ≥ 1")
            }
            GoldScorer::Concise { r_max, c } => {
                v.check(r_max.is_finite(), &format!("{key}.r_max"), "must be finite");
                v.positive(*c, &format!("{key}.c"));
            }
            GoldScorer::Harmless | GoldScorer::Positive | GoldScorer::Negative => {}
            GoldScorer::ScoreModel { path, .. } => v.check(
                path.join(panacea_rlhf::score::SCORE_META_FILE).is_file(),
                &format!("{key}.path"),
                "is not a score-model folder (no score_model.json); hint: pass a folder \
                 written by `panacea train-rm`",
            ),
        }
    }

    /// The shared scorer spec of a text scorer (`None` for a learned score model): PPO
    /// rewards and evaluation build text scorers with one constructor.
    pub fn text_spec(&self) -> Option<ScorerSpec> {
        Some(match self {
            GoldScorer::ScoreModel { .. } => return None,
            GoldScorer::Harmless => ScorerSpec::Harmless,
            GoldScorer::Positive => ScorerSpec::Positive,
            GoldScorer::Negative => ScorerSpec::Negative,
            GoldScorer::Relevant { batch_size } => ScorerSpec::Relevant { batch_size: *batch_size },
            GoldScorer::Concise { r_max, c } => ScorerSpec::Concise { r_max: *r_max, c: *c },
        })
    }

    /// Builds the scorer: a text scorer through [`ScorerSpec::text_scorer`] (concise counts
    /// the policy tokenizer's tokens, MiniLM runs on `device`), a learned score model loaded
    /// onto `base`.
    pub fn build(
        &self,
        tokenizer: &Tokenizer,
        base: &Llama,
        device: tch::Device,
    ) -> Result<Box<dyn Scorer>> {
        if let GoldScorer::ScoreModel { name, path, cost } = self {
            return Ok(Box::new(LearnedScorer::load(name, path, *cost, base, tokenizer)?));
        }
        let tok = tokenizer.clone();
        let tokens: TokenCounter =
            std::sync::Arc::new(move |t: &str| tok.encode(t).ok().map(|ids| ids.len()));
        let spec = self.text_spec().ok_or_else(|| {
            FrontError::Invalid(format!("objective {}: not a text scorer", self.name()))
        })?;
        spec.text_scorer(Some(tokens), device)
            .context_with(|| format!("building the {} scorer", self.name()))?
            .ok_or_else(|| {
                FrontError::Invalid(format!("objective {}: not a text scorer", self.name()))
            })
    }
}

/// A learned score model as a higher-is-better [`Scorer`] (see [`GoldScorer::ScoreModel`]).
struct LearnedScorer {
    name: String,
    model: panacea_rlhf::LearnedScoreModel,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    negate: bool,
}

impl LearnedScorer {
    fn load(
        name: &str,
        path: &Path,
        cost: bool,
        base: &Llama,
        tokenizer: &Tokenizer,
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
            template: ChatTemplate::default(),
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
                let text = format!("{}{r}", self.template.user_prompt(p));
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
