//! One step of preference-conditioned multi-objective PPO (Panacea, arXiv 2402.02030, Eq. 16).
//! No loop and no I/O besides [`PpoTrainer::save_state`] / [`PpoTrainer::restore_state`]: the
//! whole job is [`crate::train_ppo`].
//!
//! λ is sampled by the caller **before** generation and passed in; it is stored in
//! [`Experience::pref`] and every later stage (scores, critic values, advantages, each PPO
//! epoch and minibatch) reads it from there. Resampling λ after the rollout (as one public
//! re-implementation does) would optimise experience generated under one preference as if it
//! had been generated under another.
//!
//! **Data parallel** ([`PpoTrainer::step_data_parallel`] with a [`ProcessGroup`] of W ranks,
//! each holding b rows of the global batch of W·b; global row r·b + i is row i of rank r). The
//! step computes what one process computes on the whole batch:
//!
//! - the rollout samples row i of rank r with the words global row r·b + i draws in one
//!   process ([`RankSlicedRng`]), so every row's tokens are the one process's;
//! - one all-gather after scoring shares each row's raw utilities, λ and response length:
//!   every rank then updates the score normaliser, the Lagrange multiplier and Tchebycheff's
//!   batch estimate and ideal point from the whole batch, exactly as one process would;
//! - one all-gather after the log-probs shares each row's KL and the sums that whiten the
//!   advantages (Σ A·m and Σ m; a second small all-reduce gives Σ (A − mean)²·m), so the
//!   whitening uses the global mean and variance;
//! - the PPO epochs shuffle the global row order (same stream, same order as one process) and
//!   cut it into global minibatches of W × `ppo.mini_batch_size` rows. A rank holds some of a
//!   minibatch's rows (possibly none, possibly more than `mini_batch_size`: it runs them in
//!   pieces of at most that many) and back-propagates its rows' share of the minibatch loss:
//!   token sums divided by the minibatch's global token count, known from the gathered
//!   lengths. One sum all-reduce per optimiser step of the actor's and of the critic's flat
//!   gradient buffer then gives every rank the gradient of the whole minibatch;
//! - the step's metrics are reduced (one all-reduce of the per-minibatch loss shares at the
//!   end of the step) or computed from the gathered rows, so they are the one process's.
//!
//! Hence W ranks × b rows train the same adapter and critic as one process × W·b rows, up to
//! float summation order (tested). One caveat on "the same tokens": a rank computes a row's
//! logits in a batch of another shape (its own left padding, kernels chosen by batch size), so
//! they can differ from the one process's by float rounding, and a draw that lands within that
//! rounding of a CDF boundary picks the neighbouring token. That is rare over a trained
//! model's peaked distributions and common over a random model's nearly uniform one (the test
//! samples from the top 8 tokens for that reason); a flipped token makes the runs differ
//! from then on, like any other sampling noise, and both remain correct PPO.

use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_core::adapter_stats::{preference_gradient_share, AdapterStats};
use panacea_core::checkpoint::{load_var_store, save_var_store, write_atomic};
use panacea_core::objective::{utilities, Objective};
use panacea_core::ops::{masked_mean, masked_whiten};
use panacea_core::optim::{AdamW, AdamWConfig};
use panacea_core::{Aggregation, PreferenceVector, RunRng, StepPreference};
use panacea_lm::generate::response_texts;
use panacea_lm::{GenerateConfig, Llama, Tokenizer};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::path::Path;

use tch::{nn, Kind, Tensor};

use crate::config::PpoConfig;
use crate::critic::MultiCritic;
use crate::error::ensure_finite;
use crate::experience::GlobalBatch;
use crate::experience::{Experience, PromptBatch};
use crate::gae::gae;
use crate::lagrange::{weighted_advantages, Lagrangian};
use crate::loss::{policy_loss, value_loss};
use crate::loss::{policy_loss_share, value_loss_share};
use crate::policy::PpoPolicy;
use crate::rewards::{shape_rewards, ScoreNormaliser};
use crate::rollout::{
    action_mask, generate_config, response_log_probs, response_log_probs_for_training, rollout,
    score_all, RankSlicedRng, RewardSource, RolloutView,
};
use crate::RlhfError;
use panacea_shim::dist::{ProcessGroup, ReduceOp};
use std::time::Instant;

/// What the trainer is built from.
pub struct PpoParts<M: PpoPolicy = Llama> {
    /// The policy: frozen base plus the SVD-LoRA adapter living in `adapter_vs`.
    pub policy: M,
    /// The adapter's VarStore; the actor optimiser covers it alone.
    pub adapter_vs: nn::VarStore,
    /// The critic's adapter settings (`n_objectives` = K).
    pub critic_adapter: SvdLoraConfig,
    /// The K objectives, in preference order.
    pub objectives: Vec<Objective>,
    /// One reward source per objective, same order.
    pub sources: Vec<Box<dyn RewardSource>>,
    /// Decodes responses for text scorers (None: empty texts; id-based sources only).
    pub tokenizer: Option<Tokenizer>,
    /// EOS ids: a rollout row stops at the first of them it samples (Llama-3 lists several in
    /// generation_config.json). Empty: rows run to `rollout.max_new_tokens`.
    pub eos_ids: Vec<i64>,
    /// Padding id.
    pub pad_id: i64,
    /// Total number of steps of the run (for the learning-rate schedule).
    pub total_steps: u64,
}

/// Numbers from one step, materialised once at its end.
#[derive(Clone, Debug, PartialEq)]
pub struct PpoStepMetrics {
    /// 1-based step number.
    pub step: u64,
    /// The preference of this step (the mean over rows when each row has its own): [K].
    pub pref: Vec<f64>,
    /// Every distinct preference row the PPO update fed to the policy and the critic.
    pub pref_used: Vec<Vec<f64>>,
    /// Mean raw utility per objective over the rollout (before normalisation): [K].
    pub score_mean: Vec<f64>,
    /// Mean over rows of Σ_t (old_lp − ref_lp) on response tokens.
    pub kl: f64,
    /// Mean policy loss over minibatches and epochs.
    pub policy_loss: f64,
    /// Mean value loss over minibatches and epochs.
    pub value_loss: f64,
    /// Mean fraction of clipped ratios.
    pub clip_frac: f64,
    /// Mean k3 KL(old ‖ new).
    pub approx_kl: f64,
    /// Mean per-token entropy of the policy on response tokens.
    pub entropy: f64,
    /// Mean number of response tokens.
    pub response_len: f64,
    /// Actor learning rate used.
    pub actor_lr: f64,
    /// Critic learning rate used.
    pub critic_lr: f64,
    /// The Lagrange multiplier μ, when a constraint is configured.
    pub lagrange_mu: Option<f64>,
    /// Mean over minibatches of the share of the actor's squared gradient norm that reaches
    /// the preference part of the adapter (s and the λ columns of U and V).
    pub preference_grad_share: f64,
    /// The adapter's shared and preference strengths after the step.
    pub adapter: AdapterStats,
    /// For each vertex e_i that some rows of this step used: (i, mean raw utility per
    /// objective [K], mean KL per sequence) over those rows.
    pub vertices: Vec<(usize, Vec<f64>, f64)>,
}

impl PpoStepMetrics {
    /// Namespaced keys for metrics.jsonl (`train/score/<name>`, `train/kl`, ...).
    pub fn to_json(&self, objectives: &[Objective]) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("step".into(), self.step.into());
        for (o, s) in objectives.iter().zip(&self.score_mean) {
            m.insert(format!("train/score/{}", o.name), (*s).into());
        }
        for (o, p) in objectives.iter().zip(&self.pref) {
            m.insert(format!("train/pref/{}", o.name), (*p).into());
        }
        let scalars = [
            ("train/kl", self.kl),
            ("train/policy_loss", self.policy_loss),
            ("train/value_loss", self.value_loss),
            ("train/clip_frac", self.clip_frac),
            ("train/approx_kl", self.approx_kl),
            ("train/entropy", self.entropy),
            ("train/response_len", self.response_len),
            ("train/actor_lr", self.actor_lr),
            ("train/critic_lr", self.critic_lr),
        ];
        for (k, v) in scalars {
            m.insert(k.into(), v.into());
        }
        if let Some(mu) = self.lagrange_mu {
            m.insert("train/lagrange_mu".into(), mu.into());
        }
        let a = &self.adapter;
        let diag = [
            ("diag/preference_grad_share", self.preference_grad_share),
            ("diag/shared_strength", a.shared_strength),
            ("diag/preference_strength", a.preference_strength),
            ("diag/sigma_abs", a.sigma_abs),
            ("diag/pref_scale_abs", a.pref_scale_abs),
        ];
        for (k, v) in diag {
            m.insert(k.into(), v.into());
        }
        for (i, scores, kl) in &self.vertices {
            for (o, s) in objectives.iter().zip(scores) {
                m.insert(format!("train/e{}/score/{}", i + 1, o.name), (*s).into());
            }
            m.insert(format!("train/e{}/kl", i + 1), (*kl).into());
        }
        serde_json::Value::Object(m)
    }
}

/// The critic's variables in a checkpoint folder.
pub const CRITIC_FILE: &str = "critic.safetensors";
/// The actor optimiser's moments in a checkpoint folder.
pub const ACTOR_OPTIM_FILE: &str = "actor_optim.safetensors";
/// The critic optimiser's moments in a checkpoint folder.
pub const CRITIC_OPTIM_FILE: &str = "critic_optim.safetensors";
/// The trainer's counters and statistics ([`PpoState`]) in a checkpoint folder.
pub const PPO_STATE_FILE: &str = "ppo_state.json";

/// What the trainer needs to continue besides tensors: written last, so a folder with this file
/// holds every tensor file too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PpoState {
    /// Steps completed.
    pub step: u64,
    /// Actor optimiser steps (AdamW's bias-correction t).
    pub actor_opt_steps: u64,
    /// Critic optimiser steps.
    pub critic_opt_steps: u64,
    /// Running score statistics.
    pub normaliser: ScoreNormaliser,
    /// The Lagrange multiplier state, when configured.
    pub lagrangian: Option<Lagrangian>,
    /// Tchebycheff's running ideal point (the maximum batch estimate of each J_i so far), when
    /// Tchebycheff aggregation runs without a configured ideal point.
    #[serde(default)]
    pub ideal: Option<Vec<f64>>,
}

/// Multi-objective PPO on an SVD-LoRA policy with a λ-conditioned multi-head critic, generic
/// over the policy model ([`PpoPolicy`]; [`Llama`] by default).
pub struct PpoTrainer<M: PpoPolicy = Llama> {
    /// Settings.
    pub cfg: PpoConfig,
    /// The policy (base + adapter).
    pub policy: M,
    /// The adapter's variables.
    pub adapter_vs: nn::VarStore,
    /// AdamW(0.9, 0.95) over `adapter_vs` (σ and s in the no-decay group); its moments are
    /// saved with checkpoints.
    pub actor_opt: AdamW,
    /// The critic with its own VarStore and optimiser.
    pub critic: MultiCritic<M>,
    /// The objectives.
    pub objectives: Vec<Objective>,
    sources: Vec<Box<dyn RewardSource>>,
    /// Running score statistics (saved with checkpoints).
    pub normaliser: ScoreNormaliser,
    /// The Lagrange multiplier state, when configured.
    pub lagrangian: Option<Lagrangian>,
    /// Tchebycheff's running ideal point ([`PpoState::ideal`]).
    pub ideal: Option<Vec<f64>>,
    tokenizer: Option<Tokenizer>,
    /// The adapter settings (the policy's and the critic's are the same).
    adapter_cfg: SvdLoraConfig,
    gen_cfg: GenerateConfig,
    /// Steps completed: bumped only when a step succeeded, restored from checkpoints.
    steps_done: u64,
    /// Total steps of the run.
    pub total_steps: u64,
    /// Milliseconds the gradient all-reduces of the last data-parallel step took.
    grad_sync_ms: f64,
}

impl<M: PpoPolicy> PpoTrainer<M> {
    /// Builds the optimisers and the critic and checks the objectives against the config.
    pub fn new(cfg: PpoConfig, parts: PpoParts<M>) -> Result<Self, RlhfError> {
        let k = parts.objectives.len();
        let invalid = |reason: String| RlhfError::Invalid { what: "PPO set-up".into(), reason };
        if k == 0 || parts.sources.len() != k {
            return Err(invalid(format!(
                "{k} objectives but {} reward sources; hint: give one source per objective",
                parts.sources.len()
            )));
        }
        if parts.critic_adapter.n_objectives != k as i64 {
            return Err(invalid(format!(
                "the critic adapter has {} preference slots for {k} objectives",
                parts.critic_adapter.n_objectives
            )));
        }
        cfg.aggregation.check(k)?;
        let lagrangian = match &cfg.lagrange {
            Some(l) => {
                if l.objective >= k || k < 2 {
                    return Err(invalid(format!(
                        "lagrange.objective = {} needs at least 2 objectives and an index below {k}",
                        l.objective
                    )));
                }
                if !matches!(cfg.aggregation, panacea_core::Aggregation::Linear) {
                    return Err(invalid("lagrange works with linear aggregation only".into()));
                }
                Some(Lagrangian::new(l))
            }
            None => None,
        };
        let o = &cfg.optim;
        let mut actor_opt = AdamW::new(
            &parts.adapter_vs,
            AdamWConfig { weight_decay: o.weight_decay, ..Default::default() },
            o.lr,
        );
        o.lr_multipliers.apply(&mut actor_opt);
        let critic = MultiCritic::new(
            &parts.policy,
            &parts.critic_adapter,
            o.critic_lr,
            o.critic_weight_decay,
        )?;
        let gen_cfg = generate_config(&cfg.rollout, &parts.eos_ids, parts.pad_id);
        Ok(Self {
            normaliser: ScoreNormaliser::new(k),
            cfg,
            policy: parts.policy,
            adapter_vs: parts.adapter_vs,
            actor_opt,
            critic,
            objectives: parts.objectives,
            sources: parts.sources,
            lagrangian,
            ideal: None,
            tokenizer: parts.tokenizer,
            adapter_cfg: parts.critic_adapter.clone(),
            gen_cfg,
            steps_done: 0,
            total_steps: parts.total_steps,
            grad_sync_ms: 0.0,
        })
    }

    /// Writes what the trainer owns besides the policy adapter into the folder `dir` (which
    /// must exist): the critic, both optimisers' moments and [`PpoState`], each file atomically
    /// and the state last. The caller saves the adapter and its own loop state beside them.
    pub fn save_state(&self, dir: &Path) -> Result<(), RlhfError> {
        save_var_store(&dir.join(CRITIC_FILE), &self.critic.vs)?;
        self.actor_opt.save(&dir.join(ACTOR_OPTIM_FILE))?;
        self.critic.opt.save(&dir.join(CRITIC_OPTIM_FILE))?;
        let state = PpoState {
            step: self.steps_done,
            actor_opt_steps: self.actor_opt.steps(),
            critic_opt_steps: self.critic.opt.steps(),
            normaliser: self.normaliser.clone(),
            lagrangian: self.lagrangian.clone(),
            ideal: self.ideal.clone(),
        };
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| RlhfError::Invalid { what: "PPO state".into(), reason: e.to_string() })?;
        write_atomic(&dir.join(PPO_STATE_FILE), format!("{text}\n").as_bytes())?;
        Ok(())
    }

    /// Restores what [`PpoTrainer::save_state`] wrote (the adapter is loaded by the caller).
    /// Shapes and names are checked strictly; the objectives must match the checkpoint's.
    pub fn restore_state(&mut self, dir: &Path) -> Result<(), RlhfError> {
        let path = dir.join(PPO_STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RlhfError::Invalid {
            what: path.display().to_string(),
            reason: format!("cannot read: {e}; hint: is this a PPO checkpoint folder?"),
        })?;
        let state: PpoState = serde_json::from_str(&text).map_err(|e| RlhfError::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if state.normaliser.k() != self.k() {
            return Err(RlhfError::Invalid {
                what: path.display().to_string(),
                reason: format!(
                    "the checkpoint has {} objectives, this run {}",
                    state.normaliser.k(),
                    self.k()
                ),
            });
        }
        load_var_store(&dir.join(CRITIC_FILE), &self.critic.vs)?;
        self.actor_opt.restore(&dir.join(ACTOR_OPTIM_FILE), state.actor_opt_steps)?;
        self.critic.opt.restore(&dir.join(CRITIC_OPTIM_FILE), state.critic_opt_steps)?;
        self.steps_done = state.step;
        self.normaliser = state.normaliser;
        self.lagrangian = state.lagrangian;
        self.ideal = state.ideal;
        Ok(())
    }

    /// The reward sources, one per objective.
    pub fn sources(&self) -> &[Box<dyn RewardSource>] {
        &self.sources
    }

    /// The tokenizer used to decode responses, if any.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// K.
    pub fn k(&self) -> usize {
        self.objectives.len()
    }

    /// The rollouts' generation settings (sampling, length, the EOS ids rows stop on).
    pub fn generate_config(&self) -> &GenerateConfig {
        &self.gen_cfg
    }

    /// Steps completed (a restored checkpoint's count included). A failed step does not count.
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// The step being worked on (1-based).
    fn current_step(&self) -> u64 {
        self.steps_done + 1
    }

    /// Checks that every trainable tensor (policy adapter and critic) is finite, naming the
    /// first that is not; called before anything is saved.
    pub fn check_finite_parameters(&self) -> Result<(), RlhfError> {
        for (store, vs) in [("adapter", &self.adapter_vs), ("critic", &self.critic.vs)] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, t) in vars {
                let finite = tch::no_grad(|| t.isfinite().all().int64_value(&[]) == 1);
                if !finite {
                    return Err(RlhfError::NonFinite {
                        step: self.steps_done,
                        what: format!("{store} parameter `{name}`"),
                        value: f64::NAN,
                    });
                }
            }
        }
        Ok(())
    }

    /// One PPO step under the preference `pref`, sampled by the caller before generation:
    /// one vector shared by every row (the paper), or one per prompt row, so one rollout covers
    /// several points of the simplex. The step counter moves only when the step succeeded.
    #[tracing::instrument(skip_all, fields(step = self.steps_done + 1))]
    pub fn step(
        &mut self,
        batch: &PromptBatch,
        pref: StepPreference<'_>,
        rng: &mut RunRng,
    ) -> Result<PpoStepMetrics, RlhfError> {
        self.step_data_parallel(batch, pref, rng, None)
    }

    /// [`PpoTrainer::step`] as one rank of the data-parallel `group` (module docs): `batch`
    /// and `pref` are this rank's rows of the global batch, every rank passes the same `rng`
    /// state, and the returned metrics are the whole batch's. `None` is [`PpoTrainer::step`].
    pub fn step_data_parallel(
        &mut self,
        batch: &PromptBatch,
        pref: StepPreference<'_>,
        rng: &mut RunRng,
        group: Option<&ProcessGroup>,
    ) -> Result<PpoStepMetrics, RlhfError> {
        let exp = self.make_experience_data_parallel(batch, pref, rng, group)?;
        self.learn_data_parallel(&exp, rng, group)
    }

    /// Makes every rank's adapter and critic rank 0's (one broadcast per variable, in name
    /// order), and gives every trainable variable a (zero) gradient, so that the flat gradient
    /// buffers exist before the first all-reduce even on a rank that holds no row of the first
    /// minibatch. Called once at the start of a data-parallel run, fresh or resumed.
    pub fn broadcast_parameters(&mut self, group: &ProcessGroup) -> Result<(), RlhfError> {
        for vs in [&self.adapter_vs, &self.critic.vs] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            tch::no_grad(|| vars.iter().try_for_each(|(_, t)| group.broadcast(t, 0)))?;
            let trainable = vs.trainable_variables();
            if let Some(zero) =
                trainable.iter().map(|t| t.sum(Kind::Float) * 0.0).reduce(|a, b| a + b)
            {
                zero.backward();
            }
        }
        self.actor_opt.zero_grad();
        self.critic.opt.zero_grad();
        Ok(())
    }

    /// Milliseconds the gradient all-reduces of the last data-parallel step took in all
    /// (waiting for the slowest rank included; 0 in one process).
    pub fn grad_sync_ms(&self) -> f64 {
        self.grad_sync_ms
    }

    /// The step's preference rows [B, K] (f32): one vector for every row or exactly one per
    /// row.
    fn preference_rows(&self, pref: StepPreference<'_>, b: usize) -> Result<Vec<f32>, RlhfError> {
        let prefs: &[PreferenceVector] = match pref {
            StepPreference::Shared(p) => std::slice::from_ref(p),
            StepPreference::PerRow(ps) => ps,
        };
        let k = self.k();
        for p in prefs {
            p.expect_len(k)?;
        }
        let flat: Vec<f32> = match prefs.len() {
            1 => prefs[0].as_slice().iter().map(|&x| x as f32).cycle().take(b * k).collect(),
            n if n == b => {
                prefs.iter().flat_map(|p| p.as_slice().iter().map(|&x| x as f32)).collect()
            }
            n => {
                return Err(RlhfError::Invalid {
                    what: "step preferences".into(),
                    reason: format!(
                        "{n} preference vectors for {b} prompt rows; hint: pass one shared \
                         vector or one per row"
                    ),
                })
            }
        };
        Ok(flat)
    }

    /// The first half of a step (stages 1–5): rollout, scores, log-probs, values, rewards,
    /// advantages. [`PpoTrainer::learn`] completes the step.
    pub fn make_experience(
        &mut self,
        batch: &PromptBatch,
        pref: StepPreference<'_>,
        rng: &mut RunRng,
    ) -> Result<Experience, RlhfError> {
        self.make_experience_data_parallel(batch, pref, rng, None)
    }

    /// [`PpoTrainer::make_experience`] as one rank of `group` (module docs): the experience
    /// holds this rank's rows and, in [`Experience::global`], what the whole batch's
    /// statistics need.
    pub fn make_experience_data_parallel(
        &mut self,
        batch: &PromptBatch,
        pref: StepPreference<'_>,
        rng: &mut RunRng,
        group: Option<&ProcessGroup>,
    ) -> Result<Experience, RlhfError> {
        let k = self.k();
        if batch.is_empty() {
            return Err(RlhfError::Invalid { what: "prompt batch".into(), reason: "empty".into() });
        }
        let step = self.current_step();
        let dev = self.policy.device();
        let b = batch.len() as i64;
        // λ and the scaled scores are built on the host; the aggregation reads these copies
        // rather than the device tensors back.
        let pref_host = self.preference_rows(pref, batch.len())?; // [B·K] f32
        let pref_t = Tensor::from_slice(&pref_host).view([b, k as i64]).to_device(dev); // [B, K]

        // 1. Rollout under On{λ}; a rank samples its rows with the whole batch's words.
        let (gen, drawn_steps) = match group {
            None => {
                (rollout(&mut self.policy, batch, &pref_t, &self.gen_cfg, &mut rng.sampling)?, 0)
            }
            Some(g) => {
                let mut sliced =
                    RankSlicedRng::new(&mut rng.sampling, g.rank(), g.world_size(), batch.len());
                let gen = rollout(&mut self.policy, batch, &pref_t, &self.gen_cfg, &mut sliced)?;
                (gen, sliced.steps())
            }
        };
        let responses = match &self.tokenizer {
            Some(t) => response_texts(&gen, t).map_err(|e| RlhfError::Invalid {
                what: "decoding responses".into(),
                reason: e.to_string(),
            })?,
            None => vec![String::new(); batch.len()],
        };
        let act_mask = action_mask(&gen); // [B, A]

        // 2. Scores → utilities (costs negated in `utilities` only) → normalised, scaled.
        let view = RolloutView::of(&gen, &batch.prompts, &responses);
        let raw: Vec<f64> = score_all(&self.sources, &view)?.concat();
        let raw_t = Tensor::from_slice(&raw).view([b, k as i64]); // [B, K] f64, CPU
        let util = utilities(&self.objectives, &raw_t)?; // [B, K]
        let util_host: Vec<f64> = Vec::try_from(util.flatten(0, -1))?;
        let mut rows: Vec<Vec<f64>> = util_host.chunks(k).map(<[f64]>::to_vec).collect();
        let mut global = match group {
            None => None,
            Some(g) => {
                let gb = gather_rows(g, &rows, &pref_host, &act_mask, drawn_steps)?;
                // Every rank's sampling stream ends where one process's does.
                RankSlicedRng::catch_up(
                    &mut rng.sampling,
                    gb.world,
                    batch.len(),
                    drawn_steps,
                    gb.decode_steps,
                );
                Some(gb)
            }
        };
        // The batch statistics below read every row of the step: this rank's, or the whole
        // global batch's in a data-parallel step.
        let batch_rows: Vec<Vec<f64>> =
            global.as_ref().map_or_else(|| rows.clone(), |g| g.utilities.clone());
        for (j, o) in self.objectives.iter().enumerate() {
            let mean = batch_rows.iter().map(|r| r[j]).sum::<f64>() / batch_rows.len() as f64;
            ensure_finite(step, &format!("score[{}]", o.name), mean)?;
        }
        if let (Some(lc), Some(l)) = (&self.cfg.lagrange, &mut self.lagrangian) {
            // Episode costs are cost-positive: the negated utility of the constrained objective.
            let costs: Vec<f64> = batch_rows.iter().map(|r| -r[lc.objective]).collect();
            l.update(lc, &costs);
        }
        let mut estimate_rows = batch_rows;
        if self.cfg.ppo.normalise_scores {
            self.normaliser.update(&estimate_rows);
            rows = self.normaliser.normalise(&rows);
            estimate_rows = self.normaliser.normalise(&estimate_rows);
        }
        let scaled = scale_rows(&rows, &self.objectives);
        // Tchebycheff's batch estimate reads the whole batch's scaled utilities.
        let estimate_scaled = if global.is_some() {
            scale_rows(&estimate_rows, &self.objectives)
        } else {
            scaled.clone()
        };
        let scores = Tensor::from_slice(&scaled).view([b, k as i64]).to_device(dev); // [B, K]
        let raw_utilities = util.to_kind(Kind::Float).to_device(dev); // [B, K]

        // 3. Log-probs under On{λ} and Off (the same weights: no second model), values.
        let seq = &gen.ids; // [B, T]
        let mask = &gen.attention_mask; // [B, T]
        let (old_lp, ref_lp, old_values) = tch::no_grad(|| -> Result<_, RlhfError> {
            let (on, off, p_len) = (Adapter::On { pref: &pref_t }, Adapter::Off, gen.prompt_len);
            let (old_lp, _) = response_log_probs(&self.policy, seq, mask, on, p_len)?; // [B, A]
            let (ref_lp, _) = response_log_probs(&self.policy, seq, mask, off, p_len)?; // [B, A]
            let values = self.critic.values(seq, mask, &pref_t); // [B, A, K]
            Ok((old_lp, ref_lp, values))
        })?;

        // 4. Per-token rewards with the KL penalty.
        let p = self.cfg.ppo.clone();
        let shaped = shape_rewards(&old_lp, &ref_lp, &act_mask, &scores, p.kl_coef, p.clip_score);
        if global.is_none() {
            let kl_seq = shaped.kl.sum_dim_intlist([-1i64].as_slice(), false, Kind::Float); // [B]
            ensure_finite(step, "kl", kl_seq.mean(Kind::Float).double_value(&[]))?;
        }

        // 5. Per-objective GAE, then the single aggregation call site.
        let adv = gae(&old_values, &shaped.rewards, &act_mask, p.gamma, p.gae_lambda);
        let mut advantages =
            self.aggregate_advantages(&adv.advantages, &pref_host, &estimate_scaled)?; // [B, A]
        match (group, global.as_mut()) {
            (Some(g), Some(gb)) => {
                advantages =
                    whiten_globally(g, gb, advantages, &act_mask, &shaped.kl, p.whiten_advantages)?;
                let kl_mean = gb.kl.iter().sum::<f64>() / gb.kl.len() as f64;
                ensure_finite(step, "kl", kl_mean)?;
            }
            _ if p.whiten_advantages => {
                advantages = masked_whiten(&advantages, &act_mask, true); // [B, A]
            }
            _ => {}
        }
        Ok(Experience {
            seq: gen.ids.shallow_clone(),
            mask: gen.attention_mask.shallow_clone(),
            act_mask,
            pref: pref_t,
            old_lp,
            ref_lp,
            old_values,
            raw_utilities,
            scores,
            rewards: shaped.rewards,
            kl: shaped.kl,
            advantages,
            returns: adv.returns,
            prompt_len: gen.prompt_len,
            responses,
            global,
        })
    }

    /// adv [B, A, K], pref [B·K] and scores [N·K] (host copies, row-major; the scaled
    /// utilities the rewards were built from, of the whole batch: N = B in one process, the
    /// global batch in a data-parallel step) → [B, A]: Σ_i w_{r,i} A_{r,t,i} with the weights of
    /// [`panacea_core::Aggregation::advantage_weights`] — λ itself (linear), or λ_{i*} on the
    /// worst dimension i* from this batch's estimate of each J_i against the ideal point
    /// (Tchebycheff; a configured `ideal`, else the running maximum of the batch estimates,
    /// updated here and saved with checkpoints).
    ///
    /// With a Lagrangian constraint on objective c, λ keeps its meaning and the multiplier adds
    /// the constrained utility's advantage on top: A = (Σ_i λ_i A_i + μ·A_c) / (1 + μ). At μ = 0
    /// this is plain Panacea; as μ grows every λ is pulled towards satisfying the constraint,
    /// while the trade-off among the objectives (c included) still follows λ.
    fn aggregate_advantages(
        &mut self,
        adv: &Tensor,
        pref: &[f32],
        scores: &[f32],
    ) -> Result<Tensor, RlhfError> {
        let k = self.k();
        let rows_of = |flat: &[f32]| -> Vec<Vec<f64>> {
            flat.chunks(k).map(|r| r.iter().map(|&x| f64::from(x)).collect()).collect()
        };
        let prefs = rows_of(pref); // [B][K]
        let rows = rows_of(scores); // [B][K]
        let estimate: Vec<f64> =
            (0..k).map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64).collect();
        let ideal = match &self.cfg.aggregation {
            Aggregation::Tchebycheff { ideal } if !ideal.is_empty() => ideal.clone(),
            Aggregation::Tchebycheff { .. } => {
                let z = match self.ideal.take() {
                    Some(z) => z.iter().zip(&estimate).map(|(a, b)| a.max(*b)).collect(),
                    None => estimate.clone(),
                };
                self.ideal = Some(z.clone());
                z
            }
            Aggregation::Linear => estimate.clone(),
        };
        let weights = self.cfg.aggregation.advantage_weights(&prefs, &estimate, &ideal)?;
        let constraint = match (&self.cfg.lagrange, &self.lagrangian) {
            (Some(lc), Some(l)) => Some((lc.objective, l.mu())),
            _ => None,
        };
        Ok(weighted_advantages(adv, &weights, constraint))
    }

    /// The second half of a step (stage 6): PPO epochs over shuffled minibatches, always with
    /// the stored λ. When it succeeds the step counts as done.
    pub fn learn(
        &mut self,
        exp: &Experience,
        rng: &mut RunRng,
    ) -> Result<PpoStepMetrics, RlhfError> {
        self.learn_data_parallel(exp, rng, None)
    }

    /// [`PpoTrainer::learn`] as one rank of `group`, on experience made with the same group
    /// (module docs). `None` is [`PpoTrainer::learn`].
    pub fn learn_data_parallel(
        &mut self,
        exp: &Experience,
        rng: &mut RunRng,
        group: Option<&ProcessGroup>,
    ) -> Result<PpoStepMetrics, RlhfError> {
        match (group, &exp.global) {
            (None, None) => {}
            (Some(g), Some(gb)) => return self.learn_sharded(exp, gb, g, rng),
            _ => {
                return Err(RlhfError::Invalid {
                    what: "PPO update".into(),
                    reason: "experience and update disagree on data parallelism; hint: make \
                             and learn from experience with the same process group"
                        .into(),
                })
            }
        }
        let step = self.current_step();
        let b = exp.seq.size()[0] as usize;
        let mb = self.cfg.ppo.mini_batch_size;
        if mb == 0 || !b.is_multiple_of(mb) {
            return Err(RlhfError::Invalid {
                what: "minibatching".into(),
                reason: format!(
                    "rollout batch {b} is not a multiple of ppo.mini_batch_size {mb}; hint: \
                     make the batch size a multiple of the minibatch size"
                ),
            });
        }
        let o = self.cfg.optim.clone();
        let actor_lr = o.actor_lr_at(step.max(1), self.total_steps.max(step));
        let critic_lr = o.critic_lr_at(step.max(1), self.total_steps.max(step));
        self.actor_opt.set_lr(actor_lr);
        self.critic.opt.set_lr(critic_lr);
        let dev = exp.seq.device();
        let p = self.cfg.ppo.clone();
        let mut sums = [0.0f64; 6]; // policy loss, value loss, clip frac, approx kl, entropy, grad share
        let rank = self.policy_rank();
        let mut n = 0.0;
        // Every row is in some minibatch of every epoch, so the distinct preferences used are
        // those of the whole rollout (read once: a device sync per minibatch would stall a GPU).
        let mut pref_used: Vec<Vec<f64>> = Vec::new();
        for row in
            Vec::<Vec<f64>>::try_from(exp.pref.to_kind(Kind::Double).to_device(tch::Device::Cpu))?
        {
            if !pref_used.contains(&row) {
                pref_used.push(row);
            }
        }
        for _epoch in 0..p.update_iters {
            let mut order: Vec<i64> = (0..b as i64).collect();
            order.shuffle(&mut rng.sampling);
            for chunk in order.chunks(mb) {
                let idx = Tensor::from_slice(chunk).to_device(dev);
                let sel = |t: &Tensor| t.index_select(0, &idx);
                let seq = sel(&exp.seq); // [b, T]
                let mask = sel(&exp.mask); // [b, T]
                let act = sel(&exp.act_mask); // [b, A]
                let pref = sel(&exp.pref); // [b, K]

                // Actor.
                let on = Adapter::On { pref: &pref };
                let checkpointing = self.cfg.activation_checkpointing;
                let (lp, logits, recompute) = response_log_probs_for_training(
                    &self.policy,
                    &seq,
                    &mask,
                    on,
                    exp.prompt_len,
                    checkpointing,
                )?; // [b, A], [b, N, V]
                let pl =
                    policy_loss(&lp, &sel(&exp.old_lp), &sel(&exp.advantages), &act, p.clip_ratio);
                // The finiteness checks come after the backward is queued (the clip's norm
                // syncs anyway) but before the step, so a NaN never reaches the adapter.
                self.actor_opt.zero_grad();
                pl.loss.backward();
                if let Some(layers) = recompute {
                    layers.backward(); // the checkpointed layers' part of the gradient
                }
                sums[5] += preference_gradient_share(&self.adapter_vs, rank);
                let grad_norm = self.actor_opt.clip_grad_norm(o.max_grad_norm);
                let ploss = ensure_finite(step, "policy loss", pl.loss.double_value(&[]))?;
                ensure_finite(step, "policy gradient norm", grad_norm)?;
                self.actor_opt.step();
                let entropy = tch::no_grad(|| {
                    let logp = logits.detach().log_softmax(-1, Kind::Float); // [b, N, V]
                    let ent = -(logp.exp() * &logp).sum_dim_intlist(
                        [-1i64].as_slice(),
                        false,
                        Kind::Float,
                    ); // [b, N]
                    let n = ent.size()[1];
                    let resp_act = act.narrow(1, exp.prompt_len - 1, n); // [b, N]
                    masked_mean(&ent, &resp_act).double_value(&[])
                });
                drop(logits);

                // Critic.
                self.critic.opt.zero_grad();
                let (v, recompute) =
                    self.critic.values_for_training(&seq, &mask, &pref, checkpointing); // [b, A, K]
                let vl =
                    value_loss(&v, &sel(&exp.old_values), &sel(&exp.returns), &act, p.clip_value);
                vl.backward();
                if let Some(layers) = recompute {
                    layers.backward();
                }
                let grad_norm = self.critic.opt.clip_grad_norm(o.max_grad_norm);
                let vloss = ensure_finite(step, "value loss", vl.double_value(&[]))?;
                ensure_finite(step, "value gradient norm", grad_norm)?;
                self.critic.opt.step();

                sums[0] += ploss;
                sums[1] += vloss;
                sums[2] += pl.clip_frac.double_value(&[]);
                sums[3] += pl.approx_kl.double_value(&[]);
                sums[4] += entropy;
                n += 1.0;
            }
        }
        let k = self.k();
        let score_mean: Vec<f64> = Vec::try_from(
            exp.raw_utilities
                .to_kind(Kind::Double)
                .mean_dim([0i64].as_slice(), false, Kind::Double)
                .to_device(tch::Device::Cpu),
        )?;
        debug_assert_eq!(score_mean.len(), k);
        let kl = exp
            .kl
            .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        let response_len = exp.act_mask.sum(Kind::Float).double_value(&[]) / b as f64;
        let pref: Vec<f64> = Vec::try_from(
            exp.pref
                .to_kind(Kind::Double)
                .mean_dim([0i64].as_slice(), false, Kind::Double)
                .to_device(tch::Device::Cpu),
        )?;
        let vertices = vertex_means(exp)?;
        self.steps_done = step;
        self.grad_sync_ms = 0.0;
        Ok(PpoStepMetrics {
            step,
            pref,
            pref_used,
            score_mean,
            kl,
            policy_loss: sums[0] / n,
            value_loss: sums[1] / n,
            clip_frac: sums[2] / n,
            approx_kl: sums[3] / n,
            entropy: sums[4] / n,
            response_len,
            actor_lr,
            critic_lr,
            lagrange_mu: self.lagrangian.as_ref().map(Lagrangian::mu),
            preference_grad_share: sums[5] / n,
            adapter: AdapterStats::of(&self.adapter_vs, rank, self.policy_scale()),
            vertices,
        })
    }

    /// The PPO epochs of one rank of a data-parallel step (module docs): global minibatches
    /// of W × `mini_batch_size` rows from the global order, this rank's rows of each in
    /// pieces of at most `mini_batch_size`, loss shares over the minibatch's global token
    /// count, one sum all-reduce per optimiser step and buffer.
    fn learn_sharded(
        &mut self,
        exp: &Experience,
        gb: &GlobalBatch,
        group: &ProcessGroup,
        rng: &mut RunRng,
    ) -> Result<PpoStepMetrics, RlhfError> {
        let step = self.current_step();
        let b = exp.seq.size()[0] as usize;
        let mb = self.cfg.ppo.mini_batch_size;
        if gb.tokens.len() != gb.world * b {
            return Err(RlhfError::Invalid {
                what: "data-parallel PPO update".into(),
                reason: format!(
                    "{} rows gathered from {} ranks, this rank holds {b}; hint: every rank must \
                     run the same train.batch_size",
                    gb.tokens.len(),
                    gb.world
                ),
            });
        }
        if mb == 0 || !b.is_multiple_of(mb) {
            return Err(RlhfError::Invalid {
                what: "minibatching".into(),
                reason: format!(
                    "rollout batch {b} per rank is not a multiple of ppo.mini_batch_size {mb}; \
                     hint: make the batch size a multiple of the minibatch size"
                ),
            });
        }
        let o = self.cfg.optim.clone();
        let actor_lr = o.actor_lr_at(step.max(1), self.total_steps.max(step));
        let critic_lr = o.critic_lr_at(step.max(1), self.total_steps.max(step));
        self.actor_opt.set_lr(actor_lr);
        self.critic.opt.set_lr(critic_lr);
        let dev = exp.seq.device();
        let p = self.cfg.ppo.clone();
        let rank = self.policy_rank();
        let (me, total) = (gb.rank, gb.world * b);
        // Per minibatch, this rank's shares of: policy loss, value loss, clip fraction, approx
        // KL, entropy (reduced once at the end of the step).
        let mut shares: Vec<f64> = Vec::new();
        let mut grad_share = 0.0;
        let mut sync = 0.0;
        for _epoch in 0..p.update_iters {
            let mut order: Vec<i64> = (0..total as i64).collect();
            order.shuffle(&mut rng.sampling);
            for chunk in order.chunks(gb.world * mb) {
                let tokens = chunk.iter().map(|&g| gb.tokens[g as usize]).sum::<f64>().max(1.0);
                let own: Vec<i64> = chunk
                    .iter()
                    .filter(|&&g| g as usize / b == me)
                    .map(|&g| g - (me * b) as i64)
                    .collect();
                let mut part = [0.0f64; 5];

                // Actor: this rank's rows' share of the minibatch loss, then the sum over ranks.
                self.actor_opt.zero_grad();
                for piece in own.chunks(mb) {
                    let idx = Tensor::from_slice(piece).to_device(dev);
                    let sel = |t: &Tensor| t.index_select(0, &idx);
                    let (seq, mask, act, pref) =
                        (sel(&exp.seq), sel(&exp.mask), sel(&exp.act_mask), sel(&exp.pref)); // [b', T], [b', T], [b', A], [b', K]
                    let on = Adapter::On { pref: &pref };
                    let (lp, logits) =
                        response_log_probs(&self.policy, &seq, &mask, on, exp.prompt_len)?; // [b', A], [b', N, V]
                    let pl = policy_loss_share(
                        &lp,
                        &sel(&exp.old_lp),
                        &sel(&exp.advantages),
                        &act,
                        p.clip_ratio,
                        tokens,
                    );
                    pl.loss.backward();
                    part[0] += pl.loss.double_value(&[]);
                    part[2] += pl.clip_frac.double_value(&[]);
                    part[3] += pl.approx_kl.double_value(&[]);
                    part[4] += tch::no_grad(|| {
                        let logp = logits.detach().log_softmax(-1, Kind::Float); // [b', N, V]
                        let ent = -(logp.exp() * &logp).sum_dim_intlist(
                            [-1i64].as_slice(),
                            false,
                            Kind::Float,
                        ); // [b', N]
                        let n = ent.size()[1];
                        let resp_act = act.narrow(1, exp.prompt_len - 1, n); // [b', N]
                        (ent * resp_act).sum(Kind::Double).double_value(&[]) / tokens
                    });
                }
                let t0 = Instant::now();
                for g in self.actor_opt.gradients() {
                    group.all_reduce(&g, ReduceOp::Sum)?;
                }
                sync += t0.elapsed().as_secs_f64() * 1e3;
                grad_share += preference_gradient_share(&self.adapter_vs, rank);
                let grad_norm = self.actor_opt.clip_grad_norm(o.max_grad_norm);
                ensure_finite(step, "policy gradient norm", grad_norm)?;
                ensure_finite(step, "policy loss", part[0])?;
                self.actor_opt.step();

                // Critic.
                self.critic.opt.zero_grad();
                for piece in own.chunks(mb) {
                    let idx = Tensor::from_slice(piece).to_device(dev);
                    let sel = |t: &Tensor| t.index_select(0, &idx);
                    let (seq, mask, act, pref) =
                        (sel(&exp.seq), sel(&exp.mask), sel(&exp.act_mask), sel(&exp.pref));
                    let v = self.critic.values(&seq, &mask, &pref); // [b', A, K]
                    let vl = value_loss_share(
                        &v,
                        &sel(&exp.old_values),
                        &sel(&exp.returns),
                        &act,
                        p.clip_value,
                        tokens,
                    );
                    vl.backward();
                    part[1] += vl.double_value(&[]);
                }
                let t0 = Instant::now();
                for g in self.critic.opt.gradients() {
                    group.all_reduce(&g, ReduceOp::Sum)?;
                }
                sync += t0.elapsed().as_secs_f64() * 1e3;
                let grad_norm = self.critic.opt.clip_grad_norm(o.max_grad_norm);
                ensure_finite(step, "value gradient norm", grad_norm)?;
                ensure_finite(step, "value loss", part[1])?;
                self.critic.opt.step();
                shares.extend(part);
            }
        }
        group.all_reduce_f64(&mut shares, ReduceOp::Sum)?;
        let n = (shares.len() / 5).max(1) as f64;
        let mut sums = [0.0f64; 5];
        for mb_shares in shares.chunks(5) {
            for (s, x) in sums.iter_mut().zip(mb_shares) {
                *s += x;
            }
        }
        let k = self.k();
        let column_means = |rows: &[Vec<f64>]| -> Vec<f64> {
            (0..k).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64).collect()
        };
        let mut pref_used: Vec<Vec<f64>> = Vec::new();
        for row in &gb.prefs {
            if !pref_used.contains(row) {
                pref_used.push(row.clone());
            }
        }
        self.steps_done = step;
        self.grad_sync_ms = sync;
        Ok(PpoStepMetrics {
            step,
            pref: column_means(&gb.prefs),
            pref_used,
            score_mean: column_means(&gb.utilities),
            kl: gb.kl.iter().sum::<f64>() / total as f64,
            policy_loss: sums[0] / n,
            value_loss: sums[1] / n,
            clip_frac: sums[2] / n,
            approx_kl: sums[3] / n,
            entropy: sums[4] / n,
            response_len: gb.tokens.iter().sum::<f64>() / total as f64,
            actor_lr,
            critic_lr,
            lagrange_mu: self.lagrangian.as_ref().map(Lagrangian::mu),
            preference_grad_share: grad_share / n,
            adapter: AdapterStats::of(&self.adapter_vs, rank, self.policy_scale()),
            vertices: vertex_means_of(&gb.prefs, &gb.utilities, &gb.kl),
        })
    }

    /// k, the shared rank of the policy adapter.
    fn policy_rank(&self) -> i64 {
        self.adapter_cfg.rank
    }

    /// c = α / k of the policy adapter.
    fn policy_scale(&self) -> f64 {
        self.adapter_cfg.scale()
    }
}

/// For each vertex e_i among the rows' preferences: (i, mean raw utility [K], mean KL per
/// sequence) over the rows that used it.
fn vertex_means(exp: &Experience) -> Result<Vec<(usize, Vec<f64>, f64)>, RlhfError> {
    let host = |t: &Tensor| -> Result<Vec<Vec<f64>>, RlhfError> {
        Ok(Vec::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu))?)
    }; // once per step, after the update
    let prefs = host(&exp.pref)?;
    let utils = host(&exp.raw_utilities)?;
    let kl: Vec<f64> = Vec::try_from(
        exp.kl.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double).to_device(tch::Device::Cpu),
    )?;
    Ok(vertex_means_of(&prefs, &utils, &kl))
}

/// [`vertex_means`] of host rows: λ [N][K], raw utilities [N][K], sequence KL [N].
fn vertex_means_of(
    prefs: &[Vec<f64>],
    utils: &[Vec<f64>],
    kl: &[f64],
) -> Vec<(usize, Vec<f64>, f64)> {
    let k = prefs.first().map_or(0, Vec::len);
    let mut out = Vec::new();
    for i in 0..k {
        let rows: Vec<usize> = (0..prefs.len())
            .filter(|&r| panacea_eval::steering::vertex_of(&prefs[r]) == Some(i))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> =
            (0..k).map(|j| rows.iter().map(|&r| utils[r][j]).sum::<f64>() / n).collect();
        out.push((i, mean, rows.iter().map(|&r| kl[r]).sum::<f64>() / n));
    }
    out
}

/// Utilities [N][K] → the scaled scores the rewards are built from, row-major f32 [N·K].
fn scale_rows(rows: &[Vec<f64>], objectives: &[Objective]) -> Vec<f32> {
    rows.iter().flat_map(|r| r.iter().zip(objectives).map(|(u, o)| (u * o.scale) as f32)).collect()
}

/// The first all-gather of a data-parallel step: every rank's decoding steps and, per row,
/// its raw utilities [K], λ [K] and response tokens, assembled in global row order.
fn gather_rows(
    group: &ProcessGroup,
    utilities: &[Vec<f64>],
    pref: &[f32],
    act_mask: &Tensor,
    decode_steps: u64,
) -> Result<GlobalBatch, RlhfError> {
    let k = utilities.first().map_or(0, Vec::len);
    let tokens: Vec<f64> = Vec::try_from(
        act_mask
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .to_device(tch::Device::Cpu),
    )?; // [B]
    let mut mine = vec![decode_steps as f64];
    for (i, u) in utilities.iter().enumerate() {
        mine.extend(u);
        mine.extend(pref[i * k..(i + 1) * k].iter().map(|&x| f64::from(x)));
        mine.push(tokens[i]);
    }
    let all = group.all_gather_f64(&mine)?;
    let mut gb =
        GlobalBatch { rank: group.rank(), world: group.world_size(), ..Default::default() };
    for theirs in &all {
        gb.decode_steps = gb.decode_steps.max(theirs[0] as u64);
        for row in theirs[1..].chunks(2 * k + 1) {
            gb.utilities.push(row[..k].to_vec());
            gb.prefs.push(row[k..2 * k].to_vec());
            gb.tokens.push(row[2 * k]);
        }
    }
    Ok(gb)
}

/// The second all-gather of a data-parallel step: each row's sequence KL into `gb.kl`, and,
/// when `whiten`, the advantages [B, A] whitened with the whole batch's masked mean and
/// population variance (as [`masked_whiten`] on the global batch).
fn whiten_globally(
    group: &ProcessGroup,
    gb: &mut GlobalBatch,
    advantages: Tensor,
    act_mask: &Tensor,
    kl: &Tensor,
    whiten: bool,
) -> Result<Tensor, RlhfError> {
    let m = act_mask.to_kind(Kind::Float); // [B, A]
    let x = advantages.to_kind(Kind::Float); // [B, A]
    let kl_rows: Vec<f64> = Vec::try_from(
        kl.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double).to_device(tch::Device::Cpu),
    )?; // [B]
    let mut mine =
        vec![(&x * &m).sum(Kind::Double).double_value(&[]), m.sum(Kind::Double).double_value(&[])];
    mine.extend(&kl_rows);
    let all = group.all_gather_f64(&mine)?;
    let (sum, count) = all.iter().fold((0.0, 0.0), |(s, c), v| (s + v[0], c + v[1]));
    gb.kl = all.iter().flat_map(|v| v[2..].iter().copied()).collect();
    if !whiten {
        return Ok(advantages);
    }
    let count = count.max(1.0);
    let centred = (&x - sum / count) * &m; // [B, A]
    let mut sq = [centred.square().sum(Kind::Double).double_value(&[])];
    group.all_reduce_f64(&mut sq, ReduceOp::Sum)?;
    let var = sq[0] / count;
    Ok(centred * (var + 1e-8).sqrt().recip() * m) // [B, A]
}
