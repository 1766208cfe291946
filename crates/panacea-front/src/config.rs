//! [`FrontConfig`]: what a front evaluation measures and how — the base model, the objectives
//! (one per λ dimension, each `{name, kind: reward|cost, source}` as in PPO), the λ grid, the
//! prompts, sampling and the bootstrap. Shared keys (`model`, `seed`, `device`, `dtype`,
//! `threads`, `objectives`) mean what they mean in every other job of the workspace.

use panacea_core::config::{Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::PreferenceSampler;
use panacea_data::{PromptSet, Split};
use panacea_lm::Sampling;
use serde::{Deserialize, Serialize};

use crate::error::{ensure, Context, Result};
use crate::scorer::FrontObjective;

/// The whole front-evaluation config (`configs/eval-front.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontConfig {
    /// Base model: a short name (`smollm2-135m`), a GGUF file, an HF folder, or `tiny-random`
    /// (initialised from `seed`).
    pub model: String,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (default auto).
    #[serde(default = "auto")]
    pub device: DeviceChoice,
    /// Base-model dtype: f32 or bf16 (adapters stay f32); it must be the dtype the adapters
    /// were trained on (their base hash includes it).
    #[serde(default)]
    pub dtype: DType,
    /// libtorch intra-op threads, 0 = libtorch's default.
    #[serde(default)]
    pub threads: usize,
    /// The seed of every (prompt, sample) row's sampling stream (the same for every method)
    /// and of the bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// The objectives, in λ order: `{name, kind: reward|cost, source: <scorer>}`; names are
    /// the adapter's objective names.
    pub objectives: Vec<FrontObjective>,
    /// The preference grid: `{ kind: grid2d, n: 11 }` (K = 2) or `{ kind: das_dennis, h: 5 }`.
    pub grid: PreferenceSampler,
    /// Which prompts to answer.
    pub prompts: PromptsConfig,
    /// Seeded samples per (λ, prompt), ≥ 1.
    pub samples_per_prompt: usize,
    /// Decoding settings.
    pub generation: GenerationConfig,
    /// Rows (λ × prompt × sample) per generation batch, ≥ 1. Changes speed; results only in
    /// the last bits (see `sample.rs`, "Common random numbers").
    pub batch_size: usize,
    /// Percentile bootstrap over prompts.
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
}

fn auto() -> DeviceChoice {
    DeviceChoice::Auto
}

/// Where prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// Do-Not-Answer + HarmBench (prompts to refuse).
    Harmful,
    /// HELM everyday instructions + templates.
    Benign,
    /// Both, alternating harmful and benign.
    Mixed,
}

/// The eval prompt selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// `harmful`, `benign` or `mixed` (bundled sets).
    pub set: PromptSource,
    /// `eval` (never trained on) or `train`.
    pub split: Split,
    /// The first `count` prompts of that split, in file order (≥ 1).
    pub count: usize,
}

/// Decoding settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most new tokens per response, ≥ 1.
    pub max_new_tokens: i64,
    /// Softmax temperature; 0 means greedy (then samples_per_prompt > 1 repeats itself).
    pub temperature: f64,
    /// Nucleus threshold in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens (≥ 1).
    #[serde(default)]
    pub top_k: Option<i64>,
    /// Render prompts with the model's own chat template, ChatML when it has none (default
    /// true).
    #[serde(default = "yes")]
    pub chat_template: bool,
    /// System prompt of the template (default: the template's own; ChatML's is SmolLM2's).
    #[serde(default)]
    pub system: Option<String>,
}

fn yes() -> bool {
    true
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Resamples of the prompts (default 1000, ≥ 2).
    #[serde(default = "default_resamples")]
    pub n_resamples: usize,
    /// Two-sided level in (0, 1) (default 0.95).
    #[serde(default = "default_level")]
    pub level: f64,
}

fn default_resamples() -> usize {
    1000
}
fn default_level() -> f64 {
    0.95
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig { n_resamples: default_resamples(), level: default_level() }
    }
}

impl Validate for FrontConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(!self.model.trim().is_empty(), "model", "must name a model path or short name");
        let k = self.objectives.len();
        v.check(k >= 2, "objectives", format!("needs at least 2 objectives, got {k}"));
        let mut names: Vec<&str> = self.objectives.iter().map(|o| o.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        v.check(names.len() == k, "objectives", "lists the same objective name twice");
        for (i, o) in self.objectives.iter().enumerate() {
            o.validate(&format!("objectives.{i}"), v);
        }
        v.section("grid", &self.grid);
        match &self.grid {
            PreferenceSampler::Grid2d { .. } | PreferenceSampler::DasDennis { .. } => {
                if k >= 1 {
                    if let Err(e) = self.grid.grid(k) {
                        v.problem("grid", format!("{e}"));
                    }
                }
            }
            other => v.problem(
                "grid",
                format!(
                    "{other:?} is not an evaluation grid\nhint: use {{ kind: grid2d, n: 11 }} \
                     for 2 objectives or {{ kind: das_dennis, h: 5 }} for 3 or more"
                ),
            ),
        }
        v.check(self.prompts.count >= 1, "prompts.count", "must be ≥ 1");
        v.check(self.samples_per_prompt >= 1, "samples_per_prompt", "must be ≥ 1");
        v.check(self.batch_size >= 1, "batch_size", "must be ≥ 1");
        let g = &self.generation;
        v.check(g.max_new_tokens >= 1, "generation.max_new_tokens", "must be ≥ 1");
        v.check(
            g.temperature.is_finite() && g.temperature >= 0.0,
            "generation.temperature",
            format!("must be ≥ 0 (0 = greedy), got {}", g.temperature),
        );
        if let Some(p) = g.top_p {
            v.check(p > 0.0 && p <= 1.0, "generation.top_p", format!("must be in (0, 1], got {p}"));
        }
        if let Some(tk) = g.top_k {
            v.check(tk >= 1, "generation.top_k", format!("must be ≥ 1, got {tk}"));
        }
        v.check(self.bootstrap.n_resamples >= 2, "bootstrap.n_resamples", "must be ≥ 2");
        v.check(
            self.bootstrap.level > 0.0 && self.bootstrap.level < 1.0,
            "bootstrap.level",
            format!("must be in (0, 1), got {}", self.bootstrap.level),
        );
    }
}

impl FrontConfig {
    /// The objective names, in λ order.
    pub fn objective_names(&self) -> Vec<String> {
        self.objectives.iter().map(|o| o.name.clone()).collect()
    }

    /// The λ grid over this config's objectives.
    pub fn grid_points(&self) -> Result<Vec<panacea_core::PreferenceVector>> {
        Ok(self.grid.grid(self.objectives.len())?)
    }

    /// The token choice the generation settings describe.
    pub fn sampling(&self) -> Sampling {
        let g = &self.generation;
        if g.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample { temperature: g.temperature, top_k: g.top_k, top_p: g.top_p }
        }
    }

    /// The eval prompts (raw user text), `prompts.count` of them.
    pub fn load_prompts(&self) -> Result<Vec<String>> {
        let pick = |set: PromptSet| -> Result<Vec<String>> {
            Ok(set
                .load()
                .context_with(|| format!("loading the bundled {set:?} prompts"))?
                .into_iter()
                .filter(|r| r.split == self.prompts.split)
                .map(|r| r.prompt)
                .collect())
        };
        let all = match self.prompts.set {
            PromptSource::Harmful => pick(PromptSet::Harmful)?,
            PromptSource::Benign => pick(PromptSet::Benign)?,
            PromptSource::Mixed => {
                let (h, b) = (pick(PromptSet::Harmful)?, pick(PromptSet::Benign)?);
                let mut out = Vec::with_capacity(h.len() + b.len());
                let (mut hi, mut bi) = (h.into_iter(), b.into_iter());
                loop {
                    match (hi.next(), bi.next()) {
                        (None, None) => break,
                        (x, y) => out.extend(x.into_iter().chain(y)),
                    }
                }
                out
            }
        };
        ensure(all.len() >= self.prompts.count, || {
            format!(
                "prompts.count = {} but the {:?} set has only {} {:?} prompts\nhint: lower \
                 prompts.count",
                self.prompts.count,
                self.prompts.set,
                all.len(),
                self.prompts.split
            )
        })?;
        Ok(all.into_iter().take(self.prompts.count).collect())
    }
}
