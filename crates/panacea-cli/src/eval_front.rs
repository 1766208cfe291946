//! `panacea eval-front`: measures the Pareto front of one or more adapters across a preference
//! grid and compares them in one report (method.md §4.2 grids, §8 evaluation, §9 baselines;
//! style.md §3.3).
//!
//! Data flow:
//!
//! 1. the grid comes from `PreferenceSampler::{Grid2d, DasDennis}` (K = number of objectives);
//! 2. every (λ, prompt, sample) row of one method is generated in mixed-λ batches: one λ per row,
//!    `Adapter::On { pref }` with pref [B, K], so the whole grid runs in a few large batches;
//!    the untrained base (`Adapter::Off`) is generated once per (prompt, sample) as a reference;
//! 3. every response is scored by the configured gold scorers (the objective order is the λ
//!    order); samples are averaged per prompt ([K][P][D]) and prompts per λ (one objective vector
//!    per λ, with per-prompt percentile bootstrap intervals);
//! 4. the plain fronts go to panacea-eval: HV against one reference point (auto over the union of
//!    every front, base included, always reported), inner product on raw scores, sparsity,
//!    spacing (project default and LibMOON's), IGD+ against the non-dominated union, and for
//!    every ordered pair of methods the coverage C(A, B) and the additive ε+(A, B), which say
//!    whether one front dominates another (the paper's claim about Panacea vs RS and DPS);
//! 5. the run folder gets `front.json`, `report.json`, `report.md`, `points.csv`, `front.png`,
//!    `front.svg`, the resolved `config.yaml` and `command.txt`.
//!
//! Every method is sampled with the same seed (common random numbers), so differences between
//! methods come from the models, not from the sampling noise.
//!
//! Training runs (PPO or DPO, told apart by `manifest.json`): `--latest-ppo-run DIR` /
//! `--latest-dpo-run DIR` evaluate the newest checkpoint of the latest such run, and an
//! `--adapter` inside a run folder (`<run>/checkpoints/step-N`) names its run too. The Panacea
//! run (the latest one, else the first `--adapter`'s) decides the gold scorers, unless
//! `--set objectives=[...]` chooses them: a PPO objective is measured by its own gold-scorer
//! source or learned score model, a DPO pair dimension by the gold scorer of its name, with
//! PKU-SafeRLHF's `helpful` → `relevant` ([`GoldScorer::for_pair_dimension`]); an objective
//! without a gold scorer is an error. `--compare rs,dps` trains the baselines of that run
//! (baselines.rs). Adapters in run folders are labelled `panacea {PPO|DPO} {LS|Tche} (<run>)`,
//! so an LS and a Tchebycheff DPO run go into one report as two `--adapter`s (the first one's
//! run holds the baselines; both share them, see baselines.rs); labels must be distinct.
//!
//! Rewarded Soups (method.md §9, `--soup A,B`): one adapter per objective i, trained at λ = e_i
//! (an m-objective Panacea adapter is read at e_i, a single-objective one at [1]). This tool
//! interpolates the **merged ΔW**, not the factors: θ(λ) = W0 + Σ_i λ_i ΔW_i, which is exactly
//! linear in λ. The soup is merged into the base weights for one λ at a time (the originals are
//! kept and copied back afterwards), so its batches hold one λ each.

use crate::baselines::RunJob;
use crate::run_dir;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, ensure, Context};
use panacea_core::checkpoint::{load_adapter, read_adapter_config, AdapterFolderConfig};
use panacea_core::config::{Validate, Validator};
use panacea_core::device::{DType, DeviceChoice};
use panacea_core::SvdLoraLinear;
use panacea_core::{PreferenceSampler, PreferenceVector, RunRng};
use panacea_data::{ConciseScorer, PromptSet, Scorer, Split};
use panacea_eval::{
    details_markdown, dominance, dominance_markdown, method_details, plot_fronts, points_markdown,
    BootstrapOptions, Dominance, Front, FrontReport, MethodDetail, MethodInput, PlotOptions,
    RefPoint, ReportOptions, Sense,
};
use panacea_lm::{Adapter, ChatTemplate, GenerateConfig, Llama, Sampling, Tokenizer};
use serde::{Deserialize, Serialize};
use tch::nn;

/// Flags of `panacea eval-front`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The evaluation config (YAML).
    #[arg(long, default_value = "configs/eval-front.yaml")]
    config: PathBuf,
    /// Override a config value, e.g. `--set prompts.count=8` (repeatable).
    #[arg(long = "set")]
    overrides: Vec<String>,
    /// auto, cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<DeviceChoice>,
    /// Weight dtype of the base model, f32 or bf16 (overrides the config's `dtype`); it must
    /// match the dtype the adapters were trained with (their base hash includes it).
    #[arg(long)]
    dtype: Option<DType>,
    /// A native Panacea adapter folder to evaluate on the grid (repeat to compare methods).
    #[arg(long = "adapter")]
    adapters: Vec<PathBuf>,
    /// The table name of the matching --adapter, in the same order (default: the folder name).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// A Rewarded Soups baseline: comma-separated adapter folders, one per objective in λ
    /// order, each trained at λ = e_i; ΔW is interpolated (repeat for several soups).
    #[arg(long = "soup")]
    soups: Vec<String>,
    /// The table name of the matching --soup (default: rewarded-soups).
    #[arg(long = "soup-label")]
    soup_labels: Vec<String>,
    /// Evaluate the newest adapter checkpoint of the latest PPO run under this folder.
    #[arg(long, value_name = "RUNS_DIR", conflicts_with = "latest_dpo_run")]
    latest_ppo_run: Option<PathBuf>,
    /// Evaluate the newest adapter checkpoint of the latest DPO run under this folder.
    #[arg(long, value_name = "RUNS_DIR")]
    latest_dpo_run: Option<PathBuf>,
    /// Baselines to train (or reuse) with the Panacea run's own trainer (PPO or DPO) and
    /// config at equal total compute and add to the table: `rs` (Rewarded Soups), `dps`
    /// (discrete policy set). The Panacea run is the --latest-*-run, else the run around the
    /// first --adapter.
    #[arg(long, value_delimiter = ',')]
    compare: Vec<crate::baselines::Baseline>,
    /// Total PPO or DPO steps for each baseline family (default: the Panacea run's
    /// `train.steps`).
    #[arg(long)]
    baseline_steps: Option<u64>,
    /// The run folder (default: runs/<yyyy-mm-dd-HHMM>-eval-front).
    #[arg(long)]
    out: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The whole `eval-front` config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvalFrontConfig {
    /// Base model: a path (GGUF, HF folder) or a short name such as `smollm2-135m`.
    pub(crate) model: String,
    /// `auto`, `cpu`, `cuda` or `cuda:N` (default cpu); `--device` overrides it.
    #[serde(default)]
    pub(crate) device: DeviceChoice,
    /// Base-model dtype: f32 or bf16 (adapters stay f32).
    #[serde(default)]
    pub(crate) dtype: DType,
    /// Seed of the sampling RNG (the same for every method) and of the bootstrap.
    #[serde(default)]
    pub(crate) seed: u64,
    /// Gold scorers, one per objective, in λ order.
    pub(crate) objectives: Vec<GoldScorer>,
    /// The preference grid: `{ kind: grid2d, n: 11 }` (K = 2) or `{ kind: das_dennis, h: 5 }`.
    pub(crate) grid: PreferenceSampler,
    /// Which prompts to answer.
    pub(crate) prompts: PromptsConfig,
    /// Seeded samples per (λ, prompt), ≥ 1.
    pub(crate) samples_per_prompt: usize,
    /// Decoding settings.
    pub(crate) generation: GenerationConfig,
    /// Rows (λ × prompt × sample) per generation batch, ≥ 1.
    pub(crate) batch_size: usize,
    /// Percentile bootstrap over prompts.
    #[serde(default)]
    pub(crate) bootstrap: BootstrapConfig,
}

/// A gold scorer (all higher-is-better utilities; ranges in panacea-data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum GoldScorer {
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

/// A learned score model as a higher-is-better [`Scorer`] (see [`GoldScorer::ScoreModel`]).
struct LearnedScorer {
    name: String,
    model: panacea_rlhf::score::LmScoreModel,
    /// Holds the model's adapter and head.
    _vs: nn::VarStore,
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
    ) -> anyhow::Result<Self> {
        let mut vs = nn::VarStore::new(panacea_lm::CausalLm::device(base));
        let (model, meta) = panacea_rlhf::score::load_score_model(path, base, &mut vs)
            .with_context(|| format!("objective {name}: loading score model {}", path.display()))?;
        let is_cost = meta.kind == panacea_core::ObjectiveKind::Cost;
        ensure!(
            is_cost == cost,
            "objective {name}: {} holds a {:?} model but the objective says cost = {cost}",
            path.display(),
            meta.kind
        );
        vs.freeze();
        Ok(Self {
            name: name.to_owned(),
            model,
            _vs: vs,
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
    ) -> Result<Vec<f64>, panacea_data::DataError> {
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
        let device = panacea_lm::CausalLm::device(&self.model.backbone);
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
    pub(crate) fn name(&self) -> &str {
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
    pub(crate) fn from_name(name: &str) -> Option<GoldScorer> {
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
    fn concise_default() -> GoldScorer {
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
    ///   other scorers with `--set objectives=[...]` there.
    /// - anything else: none.
    pub(crate) fn for_pair_dimension(name: &str) -> Option<GoldScorer> {
        match name {
            "helpful" => GoldScorer::from_name("relevant"),
            other => GoldScorer::from_name(other),
        }
    }

    /// The shared scorer spec of a text scorer (`None` for a learned score model), which
    /// builds it: one constructor for PPO rewards and evaluation.
    fn text_spec(&self) -> Option<panacea_data::ScorerSpec> {
        use panacea_data::ScorerSpec;
        Some(match self {
            GoldScorer::ScoreModel { .. } => return None,
            GoldScorer::Harmless => ScorerSpec::Harmless,
            GoldScorer::Positive => ScorerSpec::Positive,
            GoldScorer::Negative => ScorerSpec::Negative,
            GoldScorer::Relevant { batch_size } => ScorerSpec::Relevant { batch_size: *batch_size },
            GoldScorer::Concise { r_max, c } => ScorerSpec::Concise { r_max: *r_max, c: *c },
        })
    }

    /// Builds the scorer; concise counts tokens of the policy's tokenizer; a learned score
    /// model is loaded onto `base`.
    fn build(
        &self,
        tokenizer: &Tokenizer,
        base: &Llama,
        device: tch::Device,
    ) -> anyhow::Result<Box<dyn Scorer>> {
        Ok(match self {
            GoldScorer::ScoreModel { name, path, cost } => {
                Box::new(LearnedScorer::load(name, path, *cost, base, tokenizer)?)
            }
            text => {
                let spec = text.text_spec().context("a text scorer")?;
                let tok = tokenizer.clone();
                let tokens: panacea_data::TokenCounter =
                    std::sync::Arc::new(move |t: &str| tok.encode(t).ok().map(|ids| ids.len()));
                spec.text_scorer(Some(tokens), device)?.context("a text scorer")?
            }
        })
    }
}

/// Where prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PromptSource {
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
pub(crate) struct PromptsConfig {
    /// `harmful`, `benign` or `mixed` (bundled sets).
    pub(crate) set: PromptSource,
    /// `eval` (never trained on) or `train`.
    pub(crate) split: Split,
    /// The first `count` prompts of that split, in file order (≥ 1).
    pub(crate) count: usize,
}

/// Decoding settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationConfig {
    /// Most new tokens per response, ≥ 1.
    pub(crate) max_new_tokens: i64,
    /// Softmax temperature; 0 means greedy (then samples_per_prompt > 1 repeats itself).
    pub(crate) temperature: f64,
    /// Nucleus threshold in (0, 1].
    #[serde(default)]
    pub(crate) top_p: Option<f64>,
    /// Keep only the k most likely tokens (≥ 1).
    #[serde(default)]
    pub(crate) top_k: Option<i64>,
    /// Render prompts with the ChatML template (default true).
    #[serde(default = "yes")]
    pub(crate) chat_template: bool,
    /// System prompt of the template (default: SmolLM2's).
    #[serde(default)]
    pub(crate) system: Option<String>,
}

fn yes() -> bool {
    true
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BootstrapConfig {
    /// Resamples of the prompts (default 1000, ≥ 2).
    #[serde(default = "default_resamples")]
    pub(crate) n_resamples: usize,
    /// Two-sided level in (0, 1) (default 0.95).
    #[serde(default = "default_level")]
    pub(crate) level: f64,
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

impl Validate for EvalFrontConfig {
    fn validate(&self, v: &mut Validator) {
        v.check(!self.model.trim().is_empty(), "model", "must name a model path or short name");
        let k = self.objectives.len();
        v.check(k >= 2, "objectives", format!("needs at least 2 gold scorers, got {k}"));
        let mut names: Vec<&str> = self.objectives.iter().map(GoldScorer::name).collect();
        names.sort_unstable();
        names.dedup();
        v.check(names.len() == k, "objectives", "lists the same scorer twice");
        for (i, o) in self.objectives.iter().enumerate() {
            match o {
                GoldScorer::Relevant { batch_size } => {
                    v.check(*batch_size >= 1, &format!("objectives.{i}.batch_size"), "must be ≥ 1")
                }
                GoldScorer::Concise { r_max, c } => {
                    v.check(r_max.is_finite(), &format!("objectives.{i}.r_max"), "must be finite");
                    v.positive(*c, &format!("objectives.{i}.c"));
                }
                GoldScorer::Harmless | GoldScorer::Positive | GoldScorer::Negative => {}
                GoldScorer::ScoreModel { path, .. } => v.check(
                    path.join(panacea_rlhf::score::SCORE_META_FILE).is_file(),
                    &format!("objectives.{i}.path"),
                    "is not a score-model folder (no score_model.json); hint: pass a folder \
                     written by `panacea train-rm`",
                ),
            }
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

impl EvalFrontConfig {
    fn objective_names(&self) -> Vec<String> {
        self.objectives.iter().map(|o| o.name().to_owned()).collect()
    }

    fn sampling(&self) -> Sampling {
        let g = &self.generation;
        if g.temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Sample { temperature: g.temperature, top_k: g.top_k, top_p: g.top_p }
        }
    }

    /// The eval prompts (raw user text), `prompts.count` of them.
    fn load_prompts(&self) -> anyhow::Result<Vec<String>> {
        let pick = |set: PromptSet| -> anyhow::Result<Vec<String>> {
            Ok(set
                .load()
                .with_context(|| format!("loading the bundled {set:?} prompts"))?
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
        ensure!(
            all.len() >= self.prompts.count,
            "prompts.count = {} but the {:?} set has only {} {:?} prompts\nhint: lower \
             prompts.count",
            self.prompts.count,
            self.prompts.set,
            all.len(),
            self.prompts.split
        );
        Ok(all.into_iter().take(self.prompts.count).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// One method to evaluate on the grid.
#[derive(Debug, Clone)]
pub(crate) struct MethodSpec {
    /// Table name.
    pub(crate) label: String,
    /// Native adapter folder.
    pub(crate) adapter: PathBuf,
}

/// A Rewarded Soups baseline: one adapter folder per objective, in λ order.
#[derive(Debug, Clone)]
pub(crate) struct SoupSpec {
    /// Table name.
    pub(crate) label: String,
    /// Adapter i was trained at λ = e_i.
    pub(crate) adapters: Vec<PathBuf>,
}

/// A DPS baseline (method.md §9): one scalarised model per λ of a small set; a grid λ is
/// answered by the model trained at the nearest member λ (Euclidean; ties go to the first).
#[derive(Debug, Clone)]
pub(crate) struct DpsSpec {
    /// Table name.
    pub(crate) label: String,
    /// (training λ, adapter folder) per member.
    pub(crate) members: Vec<(PreferenceVector, PathBuf)>,
}

impl DpsSpec {
    /// Index of the member nearest to `pref`.
    fn nearest(&self, pref: &PreferenceVector) -> usize {
        let dist = |m: &PreferenceVector| -> f64 {
            m.as_slice().iter().zip(pref.as_slice()).map(|(a, b)| (a - b) * (a - b)).sum()
        };
        let mut best = 0;
        for (j, (m, _)) in self.members.iter().enumerate() {
            if dist(m) < dist(&self.members[best].0) {
                best = j;
            }
        }
        best
    }
}

/// Everything measured: per method (base first) its front and per-prompt samples.
#[derive(Debug)]
pub(crate) struct Evaluation {
    /// Objective names (λ order).
    pub(crate) objectives: Vec<String>,
    /// `(scorer range)` per objective.
    pub(crate) ranges: Vec<(f64, f64)>,
    /// Base first, then one per adapter.
    pub(crate) methods: Vec<MethodInput>,
    /// Adapter folder(s) per method (None for the base).
    pub(crate) sources: Vec<Option<String>>,
    /// The prompts answered.
    pub(crate) prompts: Vec<String>,
    /// Example responses: (method, λ label, prompt, response), the first prompt and sample.
    pub(crate) examples: Vec<(String, String, String, String)>,
    /// Generated rows and seconds spent generating.
    pub(crate) rows: usize,
    /// Wall time of generation + scoring.
    pub(crate) seconds: f64,
}

/// One score vector [D] per generated row, and the rows' response texts.
type Scored = (Vec<Vec<f64>>, Vec<String>);

/// The models compared besides the base: adapters, soups and DPS sets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Methods<'a> {
    /// Native Panacea adapter folders.
    pub(crate) adapters: &'a [MethodSpec],
    /// Rewarded Soups.
    pub(crate) soups: &'a [SoupSpec],
    /// DPS sets.
    pub(crate) dps: &'a [DpsSpec],
}

/// What every method's evaluation shares: the base model, the prompts (raw and rendered), the
/// λ grid, the settings and the scorers.
struct EvalContext<'a> {
    /// The loaded base model (soups merge into its weights and restore them).
    base: &'a Llama,
    tokenizer: &'a Tokenizer,
    /// Prompts as the model sees them (ChatML when configured).
    rendered: &'a [String],
    /// Prompts as the scorers see them.
    prompts: &'a [String],
    grid: &'a [PreferenceVector],
    cfg: &'a EvalFrontConfig,
    scorers: &'a [Box<dyn Scorer>],
    device: tch::Device,
}

/// Generation + scoring of one model view over `rows` = (pref, prompt index) pairs, in
/// `batch_size` chunks; returns one score vector [D] per row.
fn generate_and_score(
    ctx: &EvalContext<'_>,
    label: &str,
    model: &Llama,
    rows: &[(Option<&PreferenceVector>, usize)],
) -> anyhow::Result<Scored> {
    let EvalContext { tokenizer, rendered, prompts, cfg, scorers, device, .. } = *ctx;
    let gen_cfg = GenerateConfig {
        sampling: cfg.sampling(),
        ..GenerateConfig::greedy(tokenizer, cfg.generation.max_new_tokens)
    };
    // The same sampling stream for every method: common random numbers.
    let mut rng = RunRng::new(cfg.seed).sampling;
    let mut texts = Vec::with_capacity(rows.len());
    let n_batches = rows.len().div_ceil(cfg.batch_size);
    for (i, chunk) in rows.chunks(cfg.batch_size).enumerate() {
        let t0 = std::time::Instant::now();
        let batch: Vec<String> = chunk.iter().map(|(_, p)| rendered[*p].clone()).collect();
        let g = match chunk[0].0 {
            None => {
                panacea_lm::generate(model, tokenizer, &batch, Adapter::Off, &gen_cfg, &mut rng)?
            }
            Some(_) => {
                let prefs: Vec<PreferenceVector> = chunk
                    .iter()
                    .map(|(l, _)| (*l).cloned().context("a base row in an adapter batch"))
                    .collect::<anyhow::Result<_>>()?;
                let pref = PreferenceVector::stack(&prefs, device)?; // [B, K]
                panacea_lm::generate(
                    model,
                    tokenizer,
                    &batch,
                    Adapter::On { pref: &pref },
                    &gen_cfg,
                    &mut rng,
                )?
            }
        };
        texts.extend(g.texts);
        tracing::info!(
            "{label}: batch {}/{n_batches} ({} rows) generated in {:.1} s",
            i + 1,
            chunk.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    let row_prompts: Vec<&str> = rows.iter().map(|(_, p)| prompts[*p].as_str()).collect();
    let row_texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut scores = vec![Vec::with_capacity(scorers.len()); rows.len()];
    for s in scorers {
        let col = s
            .score(&row_prompts, &row_texts)
            .with_context(|| format!("scoring with {}", s.name()))?;
        ensure!(col.len() == rows.len(), "scorer {} returned {} scores", s.name(), col.len());
        for (row, v) in scores.iter_mut().zip(col) {
            ensure!(v.is_finite(), "scorer {} returned a non-finite score {v}", s.name());
            row.push(v);
        }
    }
    Ok((scores, texts))
}

/// Mean over samples of rows laid out as [point][prompt][sample] → [point][prompt][D].
fn per_prompt_means(
    scores: &[Vec<f64>],
    n_points: usize,
    n_prompts: usize,
    n_samples: usize,
) -> Vec<Vec<Vec<f64>>> {
    let d = scores.first().map_or(0, Vec::len);
    (0..n_points)
        .map(|k| {
            (0..n_prompts)
                .map(|p| {
                    let mut mean = vec![0.0; d];
                    for s in 0..n_samples {
                        let row = &scores[(k * n_prompts + p) * n_samples + s];
                        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                    }
                    mean.iter_mut().for_each(|m| *m /= n_samples as f64);
                    mean
                })
                .collect()
        })
        .collect()
}

/// Runs the base and every adapter over the grid. `model` is the loaded base model.
pub(crate) fn evaluate(
    cfg: &EvalFrontConfig,
    model: &Llama,
    tokenizer: &Tokenizer,
    compared: Methods<'_>,
    prompts: &[String],
    device: tch::Device,
) -> anyhow::Result<Evaluation> {
    let Methods { adapters: methods, soups, dps } = compared;
    let t0 = std::time::Instant::now();
    let objectives = cfg.objective_names();
    let k = objectives.len();
    let grid = cfg.grid.grid(k)?;
    let scorers: Vec<Box<dyn Scorer>> = cfg
        .objectives
        .iter()
        .map(|o| o.build(tokenizer, model, device))
        .collect::<anyhow::Result<_>>()?;
    let ranges = scorers.iter().map(|s| s.range()).collect();
    let template = ChatTemplate {
        default_system: Some(
            cfg.generation
                .system
                .clone()
                .unwrap_or_else(|| panacea_lm::chat::SMOLLM_SYSTEM_PROMPT.into()),
        ),
    };
    let rendered: Vec<String> = prompts
        .iter()
        .map(|p| if cfg.generation.chat_template { template.user_prompt(p) } else { p.clone() })
        .collect();
    let (np, ns) = (prompts.len(), cfg.samples_per_prompt);
    let ctx = EvalContext {
        base: model,
        tokenizer,
        rendered: &rendered,
        prompts,
        grid: &grid,
        cfg,
        scorers: &scorers,
        device,
    };
    let mut out = Vec::new();
    let mut sources = Vec::new();
    let mut examples = Vec::new();
    let mut n_rows = 0;

    // The untrained base: one point, no preference.
    let base_rows: Vec<(Option<&PreferenceVector>, usize)> =
        (0..np).flat_map(|p| (0..ns).map(move |_| (None, p))).collect();
    let (scores, texts) = generate_and_score(&ctx, "base", model, &base_rows)?;
    n_rows += base_rows.len();
    examples.push(("base".into(), "Off".into(), prompts[0].clone(), texts[0].clone()));
    let pp = per_prompt_means(&scores, 1, np, ns);
    let front =
        Front { prefs: vec![], points: panacea_eval::mean_front(&pp)?, labels: objectives.clone() };
    tracing::info!("base: {:?}", front.points[0]);
    out.push(MethodInput { name: "base".into(), front, per_prompt: Some(pp) });
    sources.push(None);

    for m in methods {
        let folder = read_adapter_config(&m.adapter)
            .with_context(|| format!("reading adapter {}", m.adapter.display()))?;
        check_adapter_objectives(&folder, &objectives, &m.adapter)?;
        let adapter_vs = nn::VarStore::new(device);
        let svd = folder.svd_lora();
        let policy = model.with_adapter(Some((&adapter_vs.root(), &svd)));
        // Strict load against the folder's own settings: names and shapes must match this
        // model exactly. The base-model hash is the trainer's; it is reported, not recomputed.
        load_adapter(&m.adapter, &adapter_vs, &folder)
            .with_context(|| format!("loading adapter {}", m.adapter.display()))?;
        tracing::info!(
            "{}: adapter {} (k = {}, base {} {})",
            m.label,
            m.adapter.display(),
            folder.rank,
            folder.base_model.name,
            folder.base_model.hash
        );
        // Rows in [λ][prompt][sample] order: consecutive rows mix λs once a batch spans more
        // than np·ns rows, and every batch has one λ per row either way.
        let rows: Vec<(Option<&PreferenceVector>, usize)> = grid
            .iter()
            .flat_map(|l| (0..np).flat_map(move |p| (0..ns).map(move |_| (Some(l), p))))
            .collect();
        let scored = generate_and_score(&ctx, &m.label, &policy, &rows)?;
        n_rows += rows.len();
        out.push(grid_method(&ctx, &m.label, &scored, &mut examples)?);
        sources.push(Some(m.adapter.display().to_string()));
    }

    for soup in soups {
        let scored = evaluate_soup(&ctx, soup)?;
        n_rows += scored.0.len();
        out.push(grid_method(&ctx, &soup.label, &scored, &mut examples)?);
        let names: Vec<String> = soup.adapters.iter().map(|a| a.display().to_string()).collect();
        sources.push(Some(format!("soup of {}", names.join(" + "))));
    }

    for set in dps {
        let scored = evaluate_dps(&ctx, set)?;
        n_rows += scored.0.len();
        out.push(grid_method(&ctx, &set.label, &scored, &mut examples)?);
        let names: Vec<String> =
            set.members.iter().map(|(l, a)| format!("{} at λ = {l}", a.display())).collect();
        sources.push(Some(format!("DPS of {}", names.join(", "))));
    }
    Ok(Evaluation {
        objectives,
        ranges,
        methods: out,
        sources,
        prompts: prompts.to_vec(),
        examples,
        rows: n_rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// One method's front over the grid from its scored rows (in [λ][prompt][sample] order), and
/// one example response per λ (the first prompt's first sample) for the report.
fn grid_method(
    ctx: &EvalContext<'_>,
    label: &str,
    (scores, texts): &Scored,
    examples: &mut Vec<(String, String, String, String)>,
) -> anyhow::Result<MethodInput> {
    let EvalContext { grid, prompts, cfg, .. } = *ctx;
    let (np, ns) = (prompts.len(), cfg.samples_per_prompt);
    for (i, l) in grid.iter().enumerate() {
        examples.push((
            label.to_owned(),
            l.to_string(),
            prompts[0].clone(),
            texts[i * np * ns].clone(),
        ));
    }
    let pp = per_prompt_means(scores, grid.len(), np, ns);
    let front = Front {
        prefs: grid.iter().map(|l| l.as_slice().to_vec()).collect(),
        points: panacea_eval::mean_front(&pp)?,
        labels: cfg.objective_names(),
    };
    Ok(MethodInput { name: label.to_owned(), front, per_prompt: Some(pp) })
}

/// Generates and scores the soup θ(λ) = W0 + Σ_i λ_i ΔW_i for every grid λ, one λ per batch
/// (merged weights), rows in [λ][prompt][sample] order. The base weights are restored exactly.
fn evaluate_soup(ctx: &EvalContext<'_>, soup: &SoupSpec) -> anyhow::Result<Scored> {
    let EvalContext { base: model, prompts, grid, cfg, device, .. } = *ctx;
    let k = cfg.objectives.len();
    ensure!(
        soup.adapters.len() == k,
        "soup {} has {} adapters for {k} objectives\nhint: give one adapter per objective, \
         trained at λ = e_i, in λ order",
        soup.label,
        soup.adapters.len()
    );
    let mut stores = Vec::with_capacity(k);
    let mut views = Vec::with_capacity(k);
    let mut prefs = Vec::with_capacity(k);
    for (i, dir) in soup.adapters.iter().enumerate() {
        let folder = read_adapter_config(dir)
            .with_context(|| format!("reading soup adapter {}", dir.display()))?;
        let pref = match folder.n_objectives {
            1 => PreferenceVector::new(vec![1.0])?,
            m if m as usize == k => PreferenceVector::vertex(k, i)?,
            m => bail!("soup adapter {} has m = {m} objectives; expected 1 or {k}", dir.display()),
        };
        let vs = nn::VarStore::new(device);
        let view = model.with_adapter(Some((&vs.root(), &folder.svd_lora())));
        load_adapter(dir, &vs, &folder)
            .with_context(|| format!("loading soup adapter {}", dir.display()))?;
        tracing::info!("{}: ingredient {i} = {} at λ = {pref}", soup.label, dir.display());
        stores.push(vs);
        views.push(view);
        prefs.push(pref.to_tensor(device));
    }
    let base: Vec<&SvdLoraLinear> = model.linears().collect();
    let parts: Vec<Vec<&SvdLoraLinear>> = views.iter().map(|v| v.linears().collect()).collect();
    let originals: Vec<tch::Tensor> = base.iter().map(|p| p.weight.copy()).collect();
    let (np, ns) = (prompts.len(), cfg.samples_per_prompt);
    let rows: Vec<(Option<&PreferenceVector>, usize)> =
        (0..np).flat_map(|p| (0..ns).map(move |_| (None, p))).collect();
    let mut scores = Vec::with_capacity(grid.len() * rows.len());
    let mut texts = Vec::with_capacity(grid.len() * rows.len());
    let restore = || {
        tch::no_grad(|| {
            for (p, w0) in base.iter().zip(&originals) {
                p.weight.shallow_clone().copy_(w0);
            }
        })
    };
    for l in grid {
        tch::no_grad(|| {
            for (j, (p, w0)) in base.iter().zip(&originals).enumerate() {
                // A fresh buffer: `to_kind` to the same kind aliases, and `+=` would then
                // overwrite the kept original.
                let mut w = w0.to_kind(tch::Kind::Float).copy(); // [d_out, d_in]
                for ((part, pref), li) in parts.iter().zip(&prefs).zip(l.as_slice()) {
                    if let Some(lora) = &part[j].lora {
                        w += lora.delta_weight(pref) * *li; // [d_out, d_in]
                    }
                }
                p.weight.shallow_clone().copy_(&w.to_kind(w0.kind()));
            }
        });
        let label = format!("{} λ={l}", soup.label);
        let result = generate_and_score(ctx, &label, model, &rows);
        restore();
        let (s, t) = result?;
        scores.extend(s);
        texts.extend(t);
    }
    drop(stores);
    Ok((scores, texts))
}

/// Generates and scores DPS over the grid, rows in [λ][prompt][sample] order: each member that
/// is nearest to some grid λ answers every prompt once, under `Adapter::On` at its own training
/// λ, and its rows serve every grid λ it is nearest to.
fn evaluate_dps(ctx: &EvalContext<'_>, set: &DpsSpec) -> anyhow::Result<Scored> {
    let EvalContext { base: model, prompts, grid, cfg, device, .. } = *ctx;
    ensure!(!set.members.is_empty(), "DPS {} has no members", set.label);
    let objectives = cfg.objective_names();
    let nearest: Vec<usize> = grid.iter().map(|l| set.nearest(l)).collect();
    let (np, ns) = (prompts.len(), cfg.samples_per_prompt);
    let mut answered: Vec<Option<Scored>> = vec![None; set.members.len()];
    for (j, (pref, dir)) in set.members.iter().enumerate() {
        if !nearest.contains(&j) {
            continue;
        }
        let folder = read_adapter_config(dir)
            .with_context(|| format!("reading DPS adapter {}", dir.display()))?;
        check_adapter_objectives(&folder, &objectives, dir)?;
        let vs = nn::VarStore::new(device);
        let view = model.with_adapter(Some((&vs.root(), &folder.svd_lora())));
        load_adapter(dir, &vs, &folder)
            .with_context(|| format!("loading DPS adapter {}", dir.display()))?;
        tracing::info!("{}: member {j} = {} at λ = {pref}", set.label, dir.display());
        let rows: Vec<(Option<&PreferenceVector>, usize)> =
            (0..np).flat_map(|p| (0..ns).map(move |_| (Some(pref), p))).collect();
        let label = format!("{} λ={pref}", set.label);
        answered[j] = Some(generate_and_score(ctx, &label, &view, &rows)?);
    }
    let mut scores = Vec::with_capacity(grid.len() * np * ns);
    let mut texts = Vec::with_capacity(grid.len() * np * ns);
    for j in nearest {
        let (s, t) = answered[j].as_ref().expect("every nearest member was generated above");
        scores.extend(s.iter().cloned());
        texts.extend(t.iter().cloned());
    }
    Ok((scores, texts))
}

/// Fails unless every adapter folder in `dirs` records `base_hash` as its base model's hash.
fn check_base_models(dirs: &[&Path], model: &str, base_hash: &str) -> anyhow::Result<()> {
    for dir in dirs {
        let folder = read_adapter_config(dir)
            .with_context(|| format!("reading adapter {}", dir.display()))?;
        ensure!(
            folder.base_model.hash == base_hash,
            "adapter {} was trained on base model {} (hash {}), but this evaluation loads {model} \
             (hash {base_hash})\nhint: evaluate with the base the adapter was trained on \
             (`--set model=...`)",
            dir.display(),
            folder.base_model.name,
            folder.base_model.hash
        );
    }
    Ok(())
}

fn check_adapter_objectives(
    folder: &AdapterFolderConfig,
    objectives: &[String],
    dir: &Path,
) -> anyhow::Result<()> {
    ensure!(
        folder.n_objectives as usize == objectives.len(),
        "adapter {} has m = {} objectives {:?}, the config scores {} {:?}\nhint: list one gold \
         scorer per adapter objective, in the adapter's order",
        dir.display(),
        folder.n_objectives,
        folder.objectives,
        objectives.len(),
        objectives
    );
    // Silent where the scorer is the one the objective's name maps to (e.g. DPO `helpful` →
    // `relevant`, see `GoldScorer::for_pair_dimension`).
    let mapped = |(trained, scored): (&String, &String)| {
        trained == scored
            || GoldScorer::for_pair_dimension(trained).is_some_and(|g| g.name() == scored)
    };
    if !folder.objectives.iter().zip(objectives).all(mapped) {
        tracing::warn!(
            "adapter {} was trained on objectives {:?}; λ dimension i is scored with gold \
             scorer {:?}[i]",
            dir.display(),
            folder.objectives,
            objectives
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// What `report.json` holds.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    tool: &'static str,
    objectives: &'a [String],
    objective_ranges: Vec<[f64; 2]>,
    grid: &'a PreferenceSampler,
    n_prompts: usize,
    samples_per_prompt: usize,
    seed: u64,
    reference_point: &'a [f64],
    reference_point_rule: &'a str,
    inner_product_scaling: &'static str,
    union_nondominated: Vec<Vec<f64>>,
    dominance: &'a [Dominance],
    report: &'a FrontReport,
    methods: Vec<MethodDetail>,
    generated_rows: usize,
    seconds: f64,
}

const IP_SCALING: &str = "raw gold-scorer values, no normalisation: mean over λ of ⟨λ, ξ(λ)⟩";

/// Files written into the run folder, and the report.
pub(crate) struct Written {
    pub(crate) report: FrontReport,
    pub(crate) markdown: String,
}

/// Computes the metrics and writes every output file into `out`.
pub(crate) fn write_report(
    ev: &Evaluation,
    cfg: &EvalFrontConfig,
    out: &Path,
) -> anyhow::Result<Written> {
    let sense = Sense::Max;
    let boot = BootstrapOptions {
        n_resamples: cfg.bootstrap.n_resamples,
        level: cfg.bootstrap.level,
        seed: cfg.seed,
    };
    let options =
        ReportOptions { sense, reference: RefPoint::Auto, bootstrap: boot, ..Default::default() };
    let report = FrontReport::build(&ev.methods, &options)?;
    let (union_nd, extras) = method_details(&ev.methods, &ev.sources, sense, &boot)?;
    let dominance = dominance(&ev.methods, sense)?;
    let markdown = markdown(ev, cfg, &report, &extras, &dominance);
    let json = ReportJson {
        tool: "panacea eval-front",
        objectives: &ev.objectives,
        objective_ranges: ev.ranges.iter().map(|(a, b)| [*a, *b]).collect(),
        grid: &cfg.grid,
        n_prompts: ev.prompts.len(),
        samples_per_prompt: cfg.samples_per_prompt,
        seed: cfg.seed,
        reference_point: &report.reference_point,
        reference_point_rule: &report.reference_point_rule,
        inner_product_scaling: IP_SCALING,
        union_nondominated: union_nd,
        report: &report,
        methods: extras,
        dominance: &dominance,
        generated_rows: ev.rows,
        seconds: ev.seconds,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str| -> anyhow::Result<()> {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("report.json", &serde_json::to_string_pretty(&json)?)?;
    write("report.md", &markdown)?;
    write("points.csv", &FrontReport::points_csv(&ev.methods))?;
    let fronts: Vec<serde_json::Value> = ev
        .methods
        .iter()
        .zip(&ev.sources)
        .map(|(m, src)| {
            serde_json::json!({
                "name": m.name, "adapter": src, "front": m.front, "per_prompt": m.per_prompt,
            })
        })
        .collect();
    let front_json = serde_json::json!({
        "objectives": ev.objectives, "prompts": ev.prompts, "methods": fronts,
    });
    write("front.json", &serde_json::to_string_pretty(&front_json)?)?;
    let plot_input: Vec<(String, Front)> =
        ev.methods.iter().map(|m| (m.name.clone(), m.front.clone())).collect();
    let plot = PlotOptions {
        title: format!(
            "Pareto front ({} prompts × {} samples)",
            ev.prompts.len(),
            cfg.samples_per_prompt
        ),
        sense,
        reference_point: Some(report.reference_point.clone()),
        pref_labels: true,
        size: (900, 700),
    };
    for name in ["front.png", "front.svg"] {
        plot_fronts(&out.join(name), &plot_input, &plot)?;
    }
    Ok(Written { report, markdown })
}

fn fmt_vec(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
    format!("({})", parts.join(", "))
}

fn markdown(
    ev: &Evaluation,
    cfg: &EvalFrontConfig,
    report: &FrontReport,
    extras: &[MethodDetail],
    dominance: &[Dominance],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# eval-front\n");
    let _ = writeln!(
        s,
        "Model `{}`; objectives {} (gold scorers, higher is better, λ order); grid {:?}; {} \
         prompts ({:?}, {:?} split) × {} samples; max_new_tokens {}, temperature {}, top_p {:?}; \
         seed {} (the same sampling stream for every method). {} rows generated in {:.1} s.\n",
        cfg.model,
        ev.objectives.join(", "),
        cfg.grid,
        ev.prompts.len(),
        cfg.prompts.set,
        cfg.prompts.split,
        cfg.samples_per_prompt,
        cfg.generation.max_new_tokens,
        cfg.generation.temperature,
        cfg.generation.top_p,
        cfg.seed,
        ev.rows,
        ev.seconds
    );
    let _ = writeln!(
        s,
        "`base` is the untrained model (adapter off), one point. HV uses the reference point \
         below (auto: min over the union of every front − 5 % of the range). Inner product: \
         {IP_SCALING}. Sparsity on each method's non-dominated subset (PGMORL); spacing L1, \
         1/(n−1) (Schott, project default); LibMOON's spacing (L2, 1/n) and IGD+ against the \
         non-dominated union of every front are in the second table. LibMOON displays sparsity \
         and spacing ×100; these are not scaled.\n"
    );
    s.push_str(&report.to_markdown());
    s.push_str(&details_markdown(extras));
    let names: Vec<&str> = ev.methods.iter().map(|m| m.name.as_str()).collect();
    s.push_str(&dominance_markdown(&names, dominance));
    s.push_str(&points_markdown(&ev.objectives, cfg.bootstrap.level, extras));
    let _ = writeln!(s, "\n## Example responses (first prompt, first sample)\n");
    for (m, l, p, r) in &ev.examples {
        let short: String = r.chars().take(300).collect();
        let _ = writeln!(s, "- **{m}** {l} — _{p}_ → {:?}", short);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Run folders, the latest PPO or DPO run, and what a run optimised
// ---------------------------------------------------------------------------------------------

/// A fresh `runs/<stamp>-eval-front[-n]` folder path (not yet created).
fn default_out_dir(runs: &Path) -> PathBuf {
    let base = format!("{}-eval-front", run_dir::utc_stamp(run_dir::now_secs()).0);
    let mut dir = runs.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = runs.join(format!("{base}-{n}"));
        n += 1;
    }
    dir
}

/// Adapter folders (holding `adapter_config.json`) under `dir`, up to 3 levels deep.
fn adapter_folders(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if dir.join(panacea_core::checkpoint::CONFIG_FILE).is_file()
        && dir.join(panacea_core::checkpoint::WEIGHTS_FILE).is_file()
    {
        out.push(dir.to_owned());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            adapter_folders(&p, depth - 1, out);
        }
    }
}

/// The trailing number of a checkpoint folder name (`step-000120` → 120), if any.
fn step_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

/// The newest adapter checkpoint of the latest run of `job` under `runs`. Candidates are the
/// run folders whose `manifest.json` names the job (`train-ppo`, `train-dpo`), or, without a
/// manifest, whose name contains `ppo` / `dpo`; eval-front folders never count. Newest name
/// first (names start with the UTC date); in the first that holds any native adapter folder,
/// the one with the highest step number (then the newest). Returns (run, adapter).
pub(crate) fn latest_checkpoint(runs: &Path, job: RunJob) -> anyhow::Result<(PathBuf, PathBuf)> {
    let what = job.short().to_uppercase();
    let train = format!("cargo xtask train-{}", job.short());
    let entries = std::fs::read_dir(runs).with_context(|| {
        format!(
            "no run folder {}: no {what} run exists yet\nhint: train one with `{train}`, or \
             pass --adapter DIR",
            runs.display()
        )
    })?;
    let mut candidates: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else { return false };
            if !p.is_dir() || name.contains("eval-front") {
                return false;
            }
            match RunJob::from_manifest(p) {
                Some(j) => j == job,
                None => !p.join("manifest.json").is_file() && name.contains(job.short()),
            }
        })
        .collect();
    candidates.sort();
    for run in candidates.iter().rev() {
        let mut found = Vec::new();
        adapter_folders(run, 3, &mut found);
        let newest = found.into_iter().max_by_key(|p| {
            let mtime = std::fs::metadata(p.join(panacea_core::checkpoint::WEIGHTS_FILE))
                .and_then(|m| m.modified())
                .ok();
            (step_of(p), mtime)
        });
        if let Some(adapter) = newest {
            return Ok((run.clone(), adapter));
        }
        tracing::warn!("run {} has no adapter checkpoint yet; trying an older one", run.display());
    }
    bail!(
        "no {what} run with an adapter checkpoint under {} ({} {what} run folder(s) found); \
         nothing was evaluated\nhint: train one with `{train}`, or pass --adapter DIR",
        runs.display(),
        candidates.len()
    )
}

/// The training run around an adapter checkpoint (`<run>/checkpoints/step-N`), when that
/// folder holds a run's `config.yaml`.
fn run_of_adapter(adapter: &Path) -> Option<PathBuf> {
    let run = adapter.parent()?.parent()?;
    run.join("config.yaml").is_file().then(|| run.to_path_buf())
}

/// What eval-front reads of a training run's resolved `config.yaml` (other keys ignored): the
/// objectives, and for DPO the pair file and the aggregation.
#[derive(Debug, Deserialize)]
struct RunSummary {
    objectives: Vec<RunObjective>,
    /// DPO: `data.train`, the pair file (its `stats.json` holds concise's settings).
    #[serde(default)]
    data: Option<serde_json::Value>,
    /// The aggregation (`aggregation`, a top-level key of every trainer's config).
    #[serde(default)]
    aggregation: Option<serde_json::Value>,
    /// DPO settings (`dpo.aggregation` in configs of earlier versions).
    #[serde(default)]
    dpo: Option<serde_json::Value>,
    /// PPO settings (`ppo.aggregation` in runs from before the shared config vocabulary).
    #[serde(default)]
    ppo: Option<serde_json::Value>,
}

/// One trained objective: a PPO objective (name, kind, reward source) or a DPO pair
/// dimension (a name).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RunObjective {
    /// A DPO objective: the name of a preference-pair dimension.
    Dimension(String),
    /// A PPO objective.
    Reward {
        name: String,
        /// `reward` or `cost`.
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        source: Option<serde_json::Value>,
    },
}

impl Validate for RunSummary {
    fn validate(&self, _v: &mut Validator) {}
}

impl RunSummary {
    fn read(run: &Path) -> anyhow::Result<RunSummary> {
        let path = run.join("config.yaml");
        panacea_core::config::load_config(&path, &[])
            .with_context(|| format!("reading the objectives of run {}", path.display()))
    }

    fn names(&self) -> Vec<&str> {
        self.objectives
            .iter()
            .map(|o| match o {
                RunObjective::Dimension(name) | RunObjective::Reward { name, .. } => name.as_str(),
            })
            .collect()
    }

    /// `LS` or `Tche`: the run's aggregation (both trainers default to linear).
    fn aggregation(&self) -> &'static str {
        let top = self.aggregation.as_ref().and_then(|a| a.get("kind")?.as_str());
        let nested = || {
            self.dpo
                .as_ref()
                .or(self.ppo.as_ref())
                .and_then(|s| s.get("aggregation")?.get("kind")?.as_str())
        };
        let kind = top.or_else(nested).map(str::to_owned);
        if kind.as_deref() == Some("tchebycheff") {
            "Tche"
        } else {
            "LS"
        }
    }

    /// concise's settings from the `stats.json` beside a DPO run's pair file, which
    /// `cargo xtask make-pairs` writes with the settings it labelled the pairs by.
    fn pair_concise(&self) -> Option<GoldScorer> {
        let train = self.data.as_ref()?.get("train")?.as_str()?;
        let dir = crate::train_dpo::resolve_data_path(Path::new(train)).parent()?.to_owned();
        let text = std::fs::read_to_string(dir.join("stats.json")).ok()?;
        let stats: serde_json::Value = serde_json::from_str(&text).ok()?;
        let c = stats.get("concise")?;
        Some(GoldScorer::Concise { r_max: c.get("r_max")?.as_f64()?, c: c.get("c")?.as_f64()? })
    }

    /// The gold scorer of each objective, in the run's order; `None` where there is none.
    ///
    /// PPO: the objective's `source` when it is a gold scorer's settings (`{ kind: concise,
    /// r_max: 4.0, c: 6.0 }`), a learned `score_model` for itself, else the gold scorer of the
    /// same name with default settings. DPO: [`GoldScorer::for_pair_dimension`], with
    /// concise's settings from the pair file's `stats.json` when there is one.
    fn gold_scorers(&self) -> Vec<Option<GoldScorer>> {
        self.objectives
            .iter()
            .map(|o| match o {
                RunObjective::Dimension(name) => match GoldScorer::for_pair_dimension(name)? {
                    GoldScorer::Concise { .. } => {
                        Some(self.pair_concise().unwrap_or_else(GoldScorer::concise_default))
                    }
                    other => Some(other),
                },
                RunObjective::Reward { name, kind, source } => {
                    // A gold scorer declared a cost was optimised negated: only its name can
                    // say which (higher-is-better) gold scorer measures it, e.g. `negative`.
                    let as_cost = kind.as_deref() == Some("cost");
                    if let Some(path) = source.as_ref().and_then(|s| {
                        (s.get("kind")?.as_str()? == "score_model")
                            .then(|| s.get("path")?.as_str())?
                    }) {
                        // The run's learned reward/cost model measures its own objective.
                        return Some(GoldScorer::ScoreModel {
                            name: name.clone(),
                            path: PathBuf::from(path),
                            cost: as_cost,
                        });
                    }
                    source
                        .clone()
                        .filter(|_| !as_cost)
                        .and_then(|s| serde_json::from_value::<GoldScorer>(s).ok())
                        .or_else(|| GoldScorer::from_name(name))
                }
            })
            .collect()
    }
}

/// The gold scorers that measure what the training run `run` optimised, in its objective
/// order (see [`RunSummary::gold_scorers`]); without a readable `config.yaml`, those of the
/// adapter's objective names. An objective without a gold scorer is an error whose hint says
/// how to choose scorers with `--set objectives=[...]`.
fn trained_objectives(run: &Path, adapter: &Path) -> anyhow::Result<Vec<GoldScorer>> {
    let (names, scorers): (Vec<String>, Vec<Option<GoldScorer>>) = match RunSummary::read(run) {
        Ok(summary) => {
            (summary.names().into_iter().map(str::to_owned).collect(), summary.gold_scorers())
        }
        Err(e) => {
            tracing::warn!("{e:#}; using the adapter's objective names");
            let folder = read_adapter_config(adapter)
                .with_context(|| format!("reading adapter {}", adapter.display()))?;
            let scorers = folder.objectives.iter().map(|n| GoldScorer::for_pair_dimension(n));
            (folder.objectives.clone(), scorers.collect())
        }
    };
    let missing: Vec<&str> =
        names.iter().zip(&scorers).filter(|(_, s)| s.is_none()).map(|(n, _)| n.as_str()).collect();
    ensure!(
        missing.is_empty(),
        "run {} optimised {names:?}, and {missing:?} has no gold scorer, so eval-front cannot \
         measure it\nhint: choose one gold scorer per objective, in the run's order, e.g. \
         --set 'objectives=[{{kind: relevant}}, {{kind: harmless}}]'; gold scorers: harmless, \
         positive, negative, relevant, concise, and {{kind: score_model, name, path}} for a \
         learned model",
        run.display()
    );
    Ok(scorers.into_iter().flatten().collect())
}

/// The default table name of an adapter inside a training run: `panacea DPO LS (<run>)`,
/// `panacea DPO Tche (<run>)`, `panacea PPO LS (<run>)`.
fn run_label(run: &Path) -> String {
    let name = run.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().to_string());
    let Ok(summary) = RunSummary::read(run) else { return format!("panacea ({name})") };
    let job = RunJob::from_manifest(run).unwrap_or(
        if summary.objectives.iter().any(|o| matches!(o, RunObjective::Dimension(_))) {
            RunJob::Dpo
        } else {
            RunJob::Ppo
        },
    );
    format!("panacea {} {} ({name})", job.short().to_uppercase(), summary.aggregation())
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

/// What `eval-front` evaluates once its flags are resolved: the config (objectives set to what
/// the Panacea run optimised, unless `--set objectives=...` chose them) and every method.
pub(crate) struct Plan {
    /// The resolved, validated config.
    pub(crate) cfg: EvalFrontConfig,
    /// Native adapters, in flag order, then the latest run's.
    pub(crate) methods: Vec<MethodSpec>,
    /// `--soup`s, then a `--compare rs` soup.
    pub(crate) soups: Vec<SoupSpec>,
    /// A `--compare dps` set.
    pub(crate) dps: Vec<DpsSpec>,
}

/// Resolves the flags: the config, the methods and their labels, the Panacea run (the latest
/// PPO/DPO run, else the run around the first `--adapter`) and its objectives, and trains or
/// reuses the `--compare` baselines.
pub(crate) fn plan(args: &Args) -> anyhow::Result<Plan> {
    let mut cfg: EvalFrontConfig = panacea_core::config::load_config(&args.config, &args.overrides)
        .with_context(|| format!("loading config {}", args.config.display()))?;
    if let Some(d) = args.device {
        cfg.device = d;
    }
    if let Some(dtype) = args.dtype {
        cfg.dtype = dtype;
    }
    ensure!(
        args.labels.is_empty() || args.labels.len() == args.adapters.len(),
        "{} --label for {} --adapter\nhint: give one label per adapter, in the same order, or none",
        args.labels.len(),
        args.adapters.len()
    );
    let mut methods: Vec<MethodSpec> = args
        .adapters
        .iter()
        .enumerate()
        .map(|(i, a)| MethodSpec {
            label: args.labels.get(i).cloned().unwrap_or_else(|| match run_of_adapter(a) {
                Some(run) => run_label(&run),
                None => a
                    .file_name()
                    .map_or_else(|| format!("adapter{i}"), |n| n.to_string_lossy().to_string()),
            }),
            adapter: a.clone(),
        })
        .collect();
    ensure!(
        args.soup_labels.is_empty() || args.soup_labels.len() == args.soups.len(),
        "{} --soup-label for {} --soup\nhint: give one label per soup, in the same order, or none",
        args.soup_labels.len(),
        args.soups.len()
    );
    let mut soups: Vec<SoupSpec> = args
        .soups
        .iter()
        .enumerate()
        .map(|(i, s)| SoupSpec {
            label: args.soup_labels.get(i).cloned().unwrap_or_else(|| {
                if i == 0 {
                    "rewarded-soups".to_owned()
                } else {
                    format!("rewarded-soups-{}", i + 1)
                }
            }),
            adapters: s.split(',').map(|p| PathBuf::from(p.trim())).collect(),
        })
        .collect();
    // The Panacea run: the latest PPO or DPO run, else the run folder around the first
    // --adapter (runs/<run>/checkpoints/step-N).
    let latest = match (&args.latest_ppo_run, &args.latest_dpo_run) {
        (Some(runs), _) => Some(latest_checkpoint(runs, RunJob::Ppo)?),
        (None, Some(runs)) => Some(latest_checkpoint(runs, RunJob::Dpo)?),
        (None, None) => None,
    };
    if let Some((run, adapter)) = &latest {
        eprintln!("evaluating {} (latest run {})", adapter.display(), run.display());
        methods.push(MethodSpec { label: run_label(run), adapter: adapter.clone() });
    }
    let panacea = latest.or_else(|| {
        let adapter = args.adapters.first()?;
        Some((run_of_adapter(adapter)?, adapter.clone()))
    });
    // Score what the Panacea run optimised (same settings, e.g. concise's c) unless the
    // command line chose the scorers.
    let chose_objectives = args.overrides.iter().any(|o| {
        let key = o.split('=').next().unwrap_or_default().trim();
        key == "objectives" || key.starts_with("objectives.")
    });
    if let (Some((run, adapter)), false) = (&panacea, chose_objectives) {
        let trained = trained_objectives(run, adapter)?;
        if trained != cfg.objectives {
            eprintln!("scoring the run's objectives {trained:?} (from {})", run.display());
            cfg.objectives = trained;
        }
    }
    let mut v = Validator::new();
    cfg.validate(&mut v);
    v.finish("the resolved config")?;
    let mut labels: Vec<&str> = std::iter::once("base")
        .chain(methods.iter().map(|m| m.label.as_str()))
        .chain(soups.iter().map(|s| s.label.as_str()))
        .chain(args.compare.iter().map(|b| match b {
            crate::baselines::Baseline::Rs => "rewarded-soups",
            crate::baselines::Baseline::Dps => "dps",
        }))
        .collect();
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        bail!(
            "two methods would both be called {:?} in the report\nhint: name them with \
             --label / --soup-label (`base`, `rewarded-soups` and `dps` are taken by the base \
             model and the --compare baselines)",
            w[0]
        );
    }
    let mut dps = Vec::new();
    if !args.compare.is_empty() {
        let (run, _) = panacea.context(
            "--compare needs a Panacea run; pass --latest-ppo-run DIR, --latest-dpo-run DIR or \
             an --adapter inside a run folder",
        )?;
        let trained = crate::baselines::train_baselines(
            &run,
            &args.compare,
            args.baseline_steps,
            args.device,
        )?;
        soups.extend(trained.soup);
        dps.extend(trained.dps);
    }
    if methods.is_empty() && soups.is_empty() && dps.is_empty() {
        eprintln!("note: no --adapter given; only the base model is evaluated (a one-point front)");
    }
    Ok(Plan { cfg, methods, soups, dps })
}

/// Evaluates `plan` against the loaded base model and writes the report into `out`.
pub(crate) fn execute(
    plan: &Plan,
    base: &panacea_lm::LoadedModel,
    out: &Path,
    device: tch::Device,
) -> anyhow::Result<Written> {
    let Plan { cfg, methods, soups, dps } = plan;
    let prompts = cfg.load_prompts()?;
    // Every adapter must have been trained on exactly these base weights.
    let base_hash = panacea_core::checkpoint::hash_var_store(&base.base_vs)?;
    let folders: Vec<&Path> = methods
        .iter()
        .map(|mm| mm.adapter.as_path())
        .chain(soups.iter().flat_map(|s| s.adapters.iter().map(PathBuf::as_path)))
        .chain(dps.iter().flat_map(|d| d.members.iter().map(|(_, a)| a.as_path())))
        .collect();
    check_base_models(&folders, &cfg.model, &base_hash)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("config.yaml"), panacea_core::config::to_yaml(cfg)?)?;
    let command: Vec<String> = std::env::args().collect();
    std::fs::write(out.join("command.txt"), command.join(" ") + "\n")?;
    let compared = Methods { adapters: methods, soups, dps };
    let ev = evaluate(cfg, &base.model, &base.tokenizer, compared, &prompts, device)?;
    write_report(&ev, cfg, out)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    let device = plan.cfg.device.resolve()?;
    tracing::info!("running on {device:?}, dtype {}", plan.cfg.dtype);
    let base = panacea_lm::load_model(&plan.cfg.model, device, plan.cfg.dtype.kind())
        .with_context(|| format!("loading model {}", plan.cfg.model))?;
    let out = args.out.clone().unwrap_or_else(|| default_out_dir(Path::new("runs")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if args.out.is_none() {
        std::fs::write(out.join(".gitignore"), "*\n")?;
    }
    let w = execute(&plan, &base, &out, device)?;
    println!("{}", w.markdown);
    println!(
        "reference point {} (auto); report in {}",
        fmt_vec(&w.report.reference_point),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use panacea_core::checkpoint::{save_adapter, BaseModelId};
    use panacea_core::SvdLoraConfig;
    use panacea_lm::{init_random, LlamaConfig};

    #[test]
    fn latest_checkpoint_picks_the_jobs_newest_run_and_highest_step_and_its_objectives() {
        let root =
            std::env::temp_dir().join(format!("panacea-evalfront-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mk = |rel: &str| {
            let d = root.join(rel);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("adapter_config.json"), "{}").expect("write");
            std::fs::write(d.join("adapter_model.safetensors"), "").expect("write");
        };
        let write = |rel: &str, text: &str| std::fs::write(root.join(rel), text).expect("write");
        assert!(latest_checkpoint(&root, RunJob::Ppo).is_err(), "no runs folder at all");
        mk("2026-11-26-1000-ppo/checkpoints/step-000200");
        mk("2026-11-27-0900-ppo/checkpoints/step-000020");
        mk("2026-11-27-0900-ppo/checkpoints/step-000100");
        mk("2026-11-27-1000-dpo/checkpoints/step-000500");
        std::fs::create_dir_all(root.join("2026-11-27-1100-ppo")).expect("in-progress run");
        let (run, adapter) = latest_checkpoint(&root, RunJob::Ppo).expect("found");
        assert!(run.ends_with("2026-11-27-0900-ppo"), "{}", run.display());
        assert!(adapter.ends_with("step-000100"), "{}", adapter.display());
        let (dpo, _) = latest_checkpoint(&root, RunJob::Dpo).expect("found");
        assert!(dpo.ends_with("2026-11-27-1000-dpo"), "{}", dpo.display());
        // The manifest's job decides over the name: a newer DPO run named freely, and a
        // reward-model run with `ppo` in its name that is no PPO run.
        mk("2026-11-28-0800-mine/checkpoints/step-000010");
        write("2026-11-28-0800-mine/manifest.json", r#"{"job": "train-dpo"}"#);
        mk("2026-11-28-0900-rm-for-ppo/checkpoints/step-000010");
        write("2026-11-28-0900-rm-for-ppo/manifest.json", r#"{"job": "train-rm"}"#);
        let (dpo, _) = latest_checkpoint(&root, RunJob::Dpo).expect("found");
        assert!(dpo.ends_with("2026-11-28-0800-mine"), "{}", dpo.display());
        let (ppo, _) = latest_checkpoint(&root, RunJob::Ppo).expect("found");
        assert_eq!(ppo, run);

        // The run's objectives, with the settings it trained with (the PPO config schema).
        let objectives = |yaml: &str| {
            std::fs::write(run.join("config.yaml"), yaml).expect("write");
            trained_objectives(&run, &adapter)
        };
        assert!(trained_objectives(&run, &adapter).is_err(), "no config.yaml, no adapter names");
        assert_eq!(
            objectives(
                "seed: 1\nobjectives:\n  - name: positive\n    kind: reward\n    source: { kind: \
                 positive }\n  - name: concise\n    kind: reward\n    source: { kind: concise, \
                 r_max: 4.0, c: 6.0 }\n"
            )
            .expect("ppo"),
            vec![GoldScorer::Positive, GoldScorer::Concise { r_max: 4.0, c: 6.0 }]
        );
        assert_eq!(run_label(&run), "panacea PPO LS (2026-11-27-0900-ppo)");
        // A gold scorer declared a cost is measured by the scorer its name gives, never by
        // the (un-negated) source: here `negative`, i.e. −VADER.
        assert_eq!(
            objectives(
                "objectives:\n  - name: positive\n    kind: reward\n    source: { kind: positive \
                 }\n  - name: negative\n    kind: cost\n    source: { kind: positive }\n"
            )
            .expect("ppo"),
            vec![GoldScorer::Positive, GoldScorer::Negative]
        );
        // Learned score models measure their own objectives, costs flagged for negation.
        assert_eq!(
            objectives(
                "objectives:\n  - name: helpful\n    kind: reward\n    source: { kind: \
                 score_model, path: R/score-helpful }\n  - name: harmless\n    kind: cost\n    \
                 source: { kind: score_model, path: R/score-harmless }\n"
            )
            .expect("ppo"),
            vec![
                GoldScorer::ScoreModel {
                    name: "helpful".into(),
                    path: "R/score-helpful".into(),
                    cost: false
                },
                GoldScorer::ScoreModel {
                    name: "harmless".into(),
                    path: "R/score-harmless".into(),
                    cost: true
                },
            ]
        );
        // A PPO objective without a gold scorer: an error with the --set hint.
        let err = objectives(
            "objectives:\n  - name: even\n    kind: reward\n    source: { kind: even_tokens }\n",
        )
        .expect_err("no gold scorer for even");
        assert!(format!("{err}").contains("hint: choose one gold scorer"), "{err}");

        // DPO (objectives are pair dimensions): PKU `helpful` is `relevant` (the bundled PKU
        // pairs' better_response_id), `harmless` itself; concise takes the pair file's
        // stats.json settings (c = 24); the aggregation names the method.
        let dpo = |objectives: &str, data: &str| {
            format!(
                "model: smollm2-135m\nobjectives: {objectives}\ndata: {{ train: {data}, format: \
                 pku-saferlhf }}\ndpo: {{ aggregation: {{ kind: tchebycheff, ideal: [0.0, 0.0] \
                 }} }}\n"
            )
        };
        let relevant = GoldScorer::Relevant { batch_size: 32 };
        let yaml = dpo("[helpful, harmless]", "data/pairs/smollm2-pku.jsonl");
        assert_eq!(objectives(&yaml).expect("dpo"), vec![relevant.clone(), GoldScorer::Harmless]);
        assert_eq!(run_label(&run), "panacea DPO Tche (2026-11-27-0900-ppo)");
        let yaml = dpo("[relevant, concise]", "data/pairs/smollm2-generic.jsonl");
        assert_eq!(
            objectives(&yaml).expect("dpo"),
            vec![relevant, GoldScorer::Concise { r_max: 4.0, c: 24.0 }]
        );
        let err = objectives(&dpo("[helpful, verbose]", "data/pairs/smollm2-pku.jsonl"))
            .expect_err("no gold scorer for verbose");
        let msg = format!("{err}");
        assert!(msg.contains("[\"verbose\"]") && msg.contains("--set 'objectives="), "{msg}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The whole pipeline on a tiny random Llama with the real tokenizer: 2-point grid, 2 eval
    /// prompts, concise + positive scorers, one adapter folder plus the base.
    #[test]
    fn tiny_pipeline_writes_a_complete_report() {
        panacea_core::device::init_torch();
        // One intra-op thread: the tiny model gains nothing from more, and test binaries run
        // their tests in parallel on small shared machines.
        tch::set_num_threads(1);
        let Ok(dir) = panacea_lm::resolve_model("smollm2-135m") else {
            eprintln!("SKIPPED: smollm2-135m tokenizer not cached (`cargo xtask test` fetches it)");
            return;
        };
        let tokenizer =
            Tokenizer::from_file(&dir.join("tokenizer.json"), 2).expect("cached tokenizer loads");
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny/eval.yaml"),
        )
        .expect("configs/tiny/eval.yaml");
        let cfg: EvalFrontConfig = panacea_core::config::parse_config(
            &yaml,
            "configs/tiny/eval.yaml",
            &[
                "objectives=[{kind: concise, c: 4}, {kind: positive}]".into(),
                "grid={kind: grid2d, n: 2}".into(),
                "prompts.count=2".into(),
                "samples_per_prompt=1".into(),
                "generation.max_new_tokens=6".into(),
                // Greedy, so the soup-vs-adapter check below compares models, not RNG draws.
                "generation.temperature=0".into(),
                "bootstrap.n_resamples=50".into(),
            ],
        )
        .expect("tiny config parses");

        let base_vs = nn::VarStore::new(tch::Device::Cpu);
        let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
        init_random(&base_vs, 3);
        let svd = SvdLoraConfig::new(2);
        let adapter_vs = nn::VarStore::new(tch::Device::Cpu);
        let _policy = model.with_adapter(Some((&adapter_vs.root(), &svd)));
        tch::no_grad(|| {
            for (name, t) in adapter_vs.variables() {
                if name.ends_with("svd_lora_pref_scale") || name.ends_with("svd_lora_sigma") {
                    let _ = t.shallow_clone().normal_(0.0, 5.0);
                }
            }
        });
        let tmp = std::env::temp_dir().join(format!("panacea-evalfront-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let adapter_dir = tmp.join("adapter");
        let folder = AdapterFolderConfig::new(
            &svd,
            &["concise".into(), "positive".into()],
            BaseModelId { name: "tiny".into(), hash: "random-seed-3".into() },
        )
        .expect("folder config");
        save_adapter(&adapter_dir, &adapter_vs, &folder).expect("save adapter");
        let err = check_base_models(&[adapter_dir.as_path()], "tiny", "another-hash")
            .expect_err("a different base must be refused");
        assert!(format!("{err}").contains("random-seed-3"), "{err}");
        check_base_models(&[adapter_dir.as_path()], "tiny", "random-seed-3").expect("same base");

        let prompts = cfg.load_prompts().expect("bundled prompts");
        assert_eq!(prompts.len(), 2);
        let methods = [MethodSpec { label: "panacea".into(), adapter: adapter_dir.clone() }];
        // A soup of the same adapter read at e_1 and at e_2: at a vertex λ = e_j it is ΔW(e_j)
        // merged, so it must reproduce the adapter's own point there (merged = unmerged).
        let soups = [SoupSpec {
            label: "soup".into(),
            adapters: vec![adapter_dir.clone(), adapter_dir.clone()],
        }];
        // DPS with the same adapter as member at e_1 and at e_2, listed against the grid's
        // order ([0, 1] first): each vertex must be answered by the member at that vertex, so
        // DPS reproduces the adapter's own points in grid order.
        let dps = [DpsSpec {
            label: "dps".into(),
            members: vec![
                (PreferenceVector::vertex(2, 0).expect("e1"), adapter_dir.clone()),
                (PreferenceVector::vertex(2, 1).expect("e2"), adapter_dir),
            ],
        }];
        let ev = evaluate(
            &cfg,
            &model,
            &tokenizer,
            Methods { adapters: &methods, soups: &soups, dps: &dps },
            &prompts,
            tch::Device::Cpu,
        )
        .expect("evaluation runs");
        // base: 2 prompts; adapter, soup and DPS: 2 λ × 2 prompts each.
        assert_eq!(ev.rows, 2 + 4 + 4 + 4);
        let panacea = &ev.methods[1].front;
        for other in [&ev.methods[2].front, &ev.methods[3].front] {
            for (a, b) in panacea.points.iter().zip(&other.points) {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() < 1e-9, "vertex point {b:?} vs adapter {a:?}");
                }
            }
        }
        // The base weights were restored: the base model still gives the base's point.
        let again =
            evaluate(&cfg, &model, &tokenizer, Methods::default(), &prompts, tch::Device::Cpu)
                .expect("base again");
        assert_eq!(again.methods[0].front.points, ev.methods[0].front.points);
        let out = tmp.join("run");
        let w = write_report(&ev, &cfg, &out).expect("report written");

        assert_eq!(w.report.methods.len(), 4);
        assert_eq!(w.report.methods[0].method, "base");
        assert_eq!(w.report.methods[0].n_points, 1);
        assert_eq!(w.report.methods[1].n_points, 2, "one point per λ");
        for name in
            ["front.json", "report.md", "report.json", "points.csv", "front.png", "front.svg"]
        {
            let meta = std::fs::metadata(out.join(name)).expect(name);
            assert!(meta.len() > 0, "{name} is empty");
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("read"))
                .expect("report.json parses");
        let rp = json["reference_point"].as_array().expect("reference point");
        assert_eq!(rp.len(), 2);
        let methods = json["report"]["methods"].as_array().expect("methods");
        for m in methods {
            assert!(m["hypervolume"].as_f64().is_some_and(f64::is_finite), "{m}");
        }
        assert_eq!(json["methods"][1]["points"].as_array().map(Vec::len), Some(2));
        assert_eq!(json["methods"][1]["points"][0]["pref"], serde_json::json!([0.0, 1.0]));
        assert!(json["methods"][0]["points"][0]["pref"].is_null(), "the base has no λ");
        // Scores lie in the scorers' ranges: concise ≤ r_max = 4, positive in [−1, 1].
        for m in &ev.methods {
            for p in &m.front.points {
                assert!(p[0] <= 4.0, "concise {p:?}");
                assert!((-1.0..=1.0).contains(&p[1]), "positive {p:?}");
            }
        }
        // The soup reproduces the adapter at both (vertex) grid points: each front covers the
        // other (C = 1) with ε+ = 0.
        let pairs = json["dominance"].as_array().expect("dominance");
        assert_eq!(pairs.len(), 4 * 3, "every ordered pair of distinct methods");
        let panacea_over_soup = pairs
            .iter()
            .find(|d| d["method"] == "panacea" && d["over"] == "soup")
            .expect("panacea over soup");
        assert_eq!(panacea_over_soup["coverage"], 1.0);
        assert!(panacea_over_soup["epsilon_additive"].as_f64().expect("ε").abs() < 1e-9);
        assert!(w.markdown.contains("## Dominance between fronts"));
        let csv = std::fs::read_to_string(out.join("points.csv")).expect("csv");
        assert_eq!(csv.lines().count(), 1 + 1 + 3 * 2, "header + base + 2 λ × 3 methods:\n{csv}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// Issue #9, DPO half: a linear and a Tchebycheff tiny DPO run in one report with Rewarded
    /// Soups trained by the DPO loop. `--latest-dpo-run` finds the Tchebycheff run (the newer),
    /// `--adapter` adds the linear one; both get labels naming their aggregation; the runs'
    /// PKU objectives map to gold scorers; `--compare rs` trains two fixed-λ DPO members of
    /// one step each under the latest run; the report holds all four methods.
    #[test]
    fn dpo_runs_ls_and_tchebycheff_share_one_report_with_rewarded_soups() {
        let Some(root) = crate::test_support::workspace_with_smollm2() else { return };
        tch::set_num_threads(1);
        let runs =
            std::env::temp_dir().join(format!("panacea-evalfront-dpo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runs);
        let train = |name: &str, extra: &[&str]| {
            let args = crate::train_dpo::Args::new_run(
                root.join("configs/tiny/dpo.yaml"),
                crate::test_support::tiny_dpo_sets(&runs, extra),
                Some(DeviceChoice::Cpu),
                runs.clone(),
                name.into(),
            );
            crate::train_dpo::train(args).expect("train-dpo").run_dir
        };
        // configs/tiny/dpo.yaml aggregates with Tchebycheff.
        let ls = train("dpo-ls", &["train.steps=2", "aggregation={kind: linear}"]);
        let tche = train("dpo-tche", &["train.steps=2"]);
        let ls_adapter = ls.join("checkpoints/step-000002");
        let out = runs.join("report");
        let args = Args {
            config: root.join("configs/tiny/eval.yaml"),
            overrides: vec![
                "grid={kind: grid2d, n: 2}".into(),
                "prompts.count=2".into(),
                "generation.max_new_tokens=4".into(),
                "generation.temperature=0".into(),
                "bootstrap.n_resamples=20".into(),
            ],
            device: Some(DeviceChoice::Cpu),
            dtype: None,
            adapters: vec![ls_adapter.clone()],
            labels: vec![],
            soups: vec![],
            soup_labels: vec![],
            latest_ppo_run: None,
            latest_dpo_run: Some(runs.clone()),
            compare: vec![crate::baselines::Baseline::Rs],
            baseline_steps: Some(2),
            out: Some(out.clone()),
        };
        let mut planned = plan(&args).expect("plan");
        assert_eq!(
            planned.cfg.objectives,
            [GoldScorer::Relevant { batch_size: 32 }, GoldScorer::Harmless],
            "PKU helpful → relevant, harmless → harmless"
        );
        let stamp = |run: &Path| run.file_name().expect("name").to_string_lossy().to_string();
        let labels: Vec<String> = planned.methods.iter().map(|m| m.label.clone()).collect();
        assert_eq!(
            labels,
            [
                format!("panacea DPO LS ({})", stamp(&ls)),
                format!("panacea DPO Tche ({})", stamp(&tche)),
            ]
        );
        assert_eq!(planned.methods[1].adapter, tche.join("checkpoints/step-000002"));
        let soup = &planned.soups[0];
        assert_eq!(soup.label, "rewarded-soups");
        for a in &soup.adapters {
            assert!(a.starts_with(tche.join("baselines")), "{}", a.display());
            assert!(a.ends_with("checkpoints/step-000001"), "{}", a.display());
        }
        // Scored here by positive instead of relevant, so the test needs no MiniLM.
        planned.cfg.objectives = vec![GoldScorer::Positive, GoldScorer::Harmless];
        let cfg: panacea_dpo::DpoRunConfig =
            panacea_core::config::load_config(&tche.join("config.yaml"), &[]).expect("config");
        let base = crate::train_dpo::load_base(&cfg, tch::Device::Cpu).expect("tiny base");
        let w = execute(&planned, &base, &out, tch::Device::Cpu).expect("report");
        let names: Vec<&str> = w.report.methods.iter().map(|m| m.method.as_str()).collect();
        assert_eq!(names, ["base", &labels[0], &labels[1], "rewarded-soups"]);
        for m in &w.report.methods[1..] {
            assert_eq!(m.n_points, 2, "{}: one point per λ", m.method);
        }
        assert!(out.join("report.md").is_file() && out.join("front.json").is_file());
        // A label taken twice is refused before anything is trained or evaluated.
        let twice = Args { labels: vec!["rewarded-soups".into()], ..args };
        let err = plan(&twice).err().expect("duplicate label");
        assert!(format!("{err}").contains("--label"), "{err}");
        std::fs::remove_dir_all(&runs).expect("clean up");
    }

    /// A learned reward and a learned cost model as eval objectives: each scores rendered
    /// prompt + response at the last token, the cost negated; a kind mismatch is refused.
    #[test]
    fn learned_score_models_are_objectives_with_costs_negated() {
        panacea_core::device::init_torch();
        let Ok(dir) = panacea_lm::resolve_model("smollm2-135m") else {
            eprintln!("SKIPPED: smollm2-135m tokenizer not cached (`cargo xtask test` fetches it)");
            return;
        };
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 2).expect("tokenizer");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let runs = std::env::temp_dir().join(format!("panacea-eval-rm-{}", std::process::id()));
        let cfg: panacea_rlhf::TrainRmConfig = panacea_core::config::load_config(
            &root.join("configs/tiny/rm.yaml"),
            &[
                "train.epochs=1".into(),
                format!("data.train={}", root.join("data/tiny/pairs_generic.jsonl").display()),
            ],
        )
        .expect("config");
        let rm = panacea_rlhf::train_score_models(
            &cfg,
            &panacea_run::RunOptions::new(&runs),
            &mut panacea_run::Silent,
        )
        .expect("train-rm")
        .run_dir;
        // The score models' base: configs/tiny/rm.yaml's tiny-random body with init seed 1.
        let base_vs = nn::VarStore::new(tch::Device::Cpu);
        let model = Llama::new(&base_vs.root(), None, &LlamaConfig::tiny());
        init_random(&base_vs, 1);
        let scorer = |name: &str, cost: bool| {
            GoldScorer::ScoreModel {
                name: name.into(),
                path: rm.join(format!("score-{name}")),
                cost,
            }
            .build(&tokenizer, &model, tch::Device::Cpu)
        };
        let (prompts, responses) = (["Hi there", "Tell me a joke"], ["Hello!", "No."]);
        let helpful = scorer("helpful", false).expect("reward model");
        let harmless = scorer("harmless", true).expect("cost model");
        assert!(scorer("harmless", false).is_err(), "a cost model read as a reward must fail");
        assert_eq!(helpful.name(), "helpful");
        let h = helpful.score(&prompts, &responses).expect("helpful scores");
        let c = harmless.score(&prompts, &responses).expect("harmless scores");
        // The same texts through the cost model directly: the scorer returns their negation.
        let mut vs = nn::VarStore::new(tch::Device::Cpu);
        let (cm, _) =
            panacea_rlhf::score::load_score_model(&rm.join("score-harmless"), &model, &mut vs)
                .expect("load");
        let rows: Vec<Vec<i64>> = prompts
            .iter()
            .zip(&responses)
            .map(|(p, r)| {
                let mut ids = tokenizer
                    .encode(&format!("{}{r}", ChatTemplate::default().user_prompt(p)))
                    .expect("encode");
                ids.push(tokenizer.eos_id);
                ids
            })
            .collect();
        let (ids, mask) = panacea_rlhf::score::right_pad(&rows, tokenizer.pad_id, tch::Device::Cpu);
        let direct: Vec<f64> = Vec::try_from(
            tch::no_grad(|| panacea_rlhf::score::ScoreModel::end_scores(&cm, &ids, &mask))
                .to_kind(tch::Kind::Double),
        )
        .expect("direct");
        for (got, want) in c.iter().zip(&direct) {
            assert!((got + want).abs() < 1e-6, "cost {got} vs −{want}");
        }
        assert!(h.iter().all(|x| x.is_finite()) && h.len() == 2);
        std::fs::remove_dir_all(&runs).expect("clean up");
    }
}
