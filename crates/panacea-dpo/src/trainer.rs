//! One multi-objective DPO step:
//!
//! ```text
//! 1. [response 0 of every pair; response 1 of every pair], packed into one    ids [B, L]
//!    row per pair with the shared prefix once (crate::shared_prefix)
//! 2. policy log-probs under Adapter::On{λ}                                   lp  [2B]
//! 3. reference log-probs under Adapter::Off (same weights) or the cache      ref [2B]
//! 4. per-dimension losses from h = (lp_0 − ref_0) − (lp_1 − ref_1)           [B, K]
//! 5. per-dimension masked batch means → LS or Tchebycheff (z = 0)            []
//! 6. zero_grad → backward → clip_grad_norm → AdamW step, adapter VarStore only
//! ```
//!
//! **Activation checkpointing** (`train.activation_checkpointing`): the policy forward of
//! step 2 keeps only each decoder layer's input, and after the loss's backward every layer is
//! recomputed from it and backpropagated alone ([`panacea_lm::Checkpointed::backward`]); the
//! same gradients for about one more forward of time, with one layer's activations alive
//! instead of all of them.
//!
//! **Micro-batches.** With `micro_batch_size` < B the step accumulates gradients over
//! micro-batches. The Tchebycheff loss max_i λ_i L̄_i is not a sum over pairs, so the loss of a
//! micro-batch is not a share of the batch loss. The step therefore runs in two phases:
//! (a) policy log-probs of the whole batch without a graph, then the exact batch loss on a
//! detached leaf `lp` (the one [`mo_dpo_loss`] call), whose backward gives g = ∂L/∂lp [2B];
//! (b) per micro-batch, a forward with a graph and a backward of Σ_rows g·lp, which by the chain
//! rule accumulates exactly ∂L/∂θ. This costs one extra forward without a graph (about a third
//! of a forward + backward), and is exact for every aggregation, masks and per-pair λ included.
//! With one micro-batch the loss is back-propagated directly.
//!
//! The optimiser is AdamW (β = (0.9, 0.999), weight decay `optim.weight_decay`, 0 by default)
//! over the adapter VarStore alone: the base weights are never in it, λ is an input (never a
//! variable), and σ and s are never decayed (decaying them would pull every preference's
//! effect towards the base). Its moments and step count are saved with checkpoints
//! ([`DpoTrainer::save_state`]), so a resumed run continues exactly.
//!
//! **Non-finite values stop the step.** A loss or gradient norm that is not finite fails the
//! step before the optimiser moves ([`DpoError::NonFinite`]), and so do parameters that the
//! update made non-finite; the step counter does not advance, so a caller that saves only
//! after a successful step never writes a NaN checkpoint.

use panacea_core::adapter::Adapter;
use std::path::Path;
use std::time::Instant;

use panacea_core::checkpoint::write_atomic;
use panacea_core::optim::{AdamW, AdamWConfig};
use panacea_core::preference::StepPreference;
use panacea_lm::graph_step::DEFAULT_WARMUPS;
use panacea_lm::{CausalLm, GraphedStep};
use panacea_shim::dist::{ProcessGroup, ReduceOp};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::config::DpoTrainerConfig;
use crate::data::PairBatch;
use crate::loss::{mo_dpo_loss, ranking_accuracy, DpoLossOutput};
use crate::ref_cache::RefLogpCache;
use crate::shared_prefix::{shared_prefix_logps, shared_prefix_logps_for_training, PackedLm};
use crate::static_step::{padded_pair_logps, DpoGraphOutputs, DpoGraphs, DpoStatics, PaddedPairs};
use crate::DpoError;

/// Sequence log-probs of a pair batch: Σ over the response mask of log p(token | prefix), for
/// every row → [2B] (f32), each row its own sequence. Only the scored positions go through the
/// LM head (gathered with the mask), which skips the prompt's [·, V] logits; this equals
/// `sequence_log_probs(gather_log_probs(logits), response_mask)` of panacea-core (tested). The
/// trainer uses [`shared_prefix_logps`] (the same numbers with the prompt run once per pair);
/// this is the plain path it is tested against.
pub fn sequence_logps<M: CausalLm + ?Sized>(
    model: &M,
    batch: &PairBatch,
    adapter: Adapter<'_>,
) -> Tensor {
    let hidden = model.hidden_states(&batch.ids, &batch.attention_mask, adapter); // [2B, T, D]
    sequence_logps_of_hidden(model, batch, &hidden)
}

/// [`sequence_logps`] from the final hidden states [2B, T, D] of `batch`'s rows → [2B].
pub(crate) fn sequence_logps_of_hidden<M: CausalLm + ?Sized>(
    model: &M,
    batch: &PairBatch,
    hidden: &Tensor,
) -> Tensor {
    let (rows, t, d) = (hidden.size()[0], hidden.size()[1], hidden.size()[2]);
    let a = t - 1;
    let h = hidden.narrow(1, 0, a).reshape([rows * a, d]); // [2B·A, D]
    let flat = batch.response_mask.reshape([-1]).nonzero().squeeze_dim(1); // [N]
    let targets = batch.ids.narrow(1, 1, a).reshape([-1]).index_select(0, &flat); // [N]
    let logits = model.lm_head(&h.index_select(0, &flat)).to_kind(Kind::Float); // [N, V]
    let picked = logits.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1); // [N]
    let token_lp = picked - logits.logsumexp([1i64].as_slice(), false); // [N]
    let row = flat.divide_scalar_mode(a, "floor"); // [N]
    Tensor::zeros([rows], (Kind::Float, hidden.device())).index_add(0, &row, &token_lp)
    // [2B]
}

/// Metrics of one training step (host numbers; computing them synced the device once).
#[derive(Clone, Debug, Serialize)]
pub struct DpoStepMetrics {
    /// The aggregated loss L.
    pub loss: f64,
    /// L̄_i per objective.
    pub loss_per_obj: Vec<f64>,
    /// Implicit-reward accuracy per objective (over labelled pairs).
    pub accuracy_per_obj: Vec<f64>,
    /// Labelled pairs per objective.
    pub labelled_per_obj: Vec<f64>,
    /// Mean of h_0 − h_1 over the batch.
    pub margin_mean: f64,
    /// Mean implicit reward β·h of response 0 and of response 1.
    pub reward_mean: [f64; 2],
    /// Global L2 norm of the adapter gradient before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Pairs in the batch.
    pub pairs: usize,
    /// Whether the reference log-probs came from the cache.
    pub ref_from_cache: bool,
    /// The step's λ (the mean λ for per-pair preferences).
    pub pref: Vec<f64>,
    /// Milliseconds the gradient all-reduce took, waiting for the slowest rank included (0
    /// for one process).
    pub grad_sync_ms: f64,
}

/// Metrics of an evaluation pass over one batch under one λ (no gradient).
#[derive(Clone, Debug, Serialize)]
pub struct DpoEvalMetrics {
    /// The aggregated loss L under this λ.
    pub loss: f64,
    /// L̄_i per objective.
    pub loss_per_obj: Vec<f64>,
    /// Implicit-reward accuracy per objective: 1[t·(h_0 − h_1) > 0].
    pub accuracy_per_obj: Vec<f64>,
    /// Likelihood-ranking accuracy of the policy: 1[t·(lp_0 − lp_1) > 0].
    pub policy_ranking_accuracy_per_obj: Vec<f64>,
    /// Likelihood-ranking accuracy of the reference (base) model: 1[t·(ref_0 − ref_1) > 0].
    pub base_ranking_accuracy_per_obj: Vec<f64>,
    /// Labelled pairs per objective.
    pub labelled_per_obj: Vec<f64>,
    /// Mean of h_0 − h_1.
    pub margin_mean: f64,
}

fn host(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1))
        .expect("a float tensor converts to host f64")
}

fn scalar(t: &Tensor) -> f64 {
    f64::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu)).expect("a scalar tensor")
}

/// AdamW's moments in a checkpoint folder ([`DpoTrainer::save_state`]).
pub const OPTIM_FILE: &str = "optim.safetensors";
/// The trainer's counters in a checkpoint folder, written after [`OPTIM_FILE`].
pub const STATE_FILE: &str = "dpo_state.json";

/// What [`DpoTrainer::save_state`] writes besides the moments.
#[derive(Serialize, serde::Deserialize)]
struct DpoState {
    /// Optimiser steps taken.
    steps_done: u64,
    /// K, checked on restore.
    n_objectives: usize,
}

/// The DPO trainer: the policy (base + adapter; `Adapter::Off` is the reference), the adapter
/// VarStore and its optimiser. One step at a time and no loop: [`crate::train_dpo`] drives it,
/// and so can a caller with its own loop.
pub struct DpoTrainer<M: PackedLm> {
    /// The model; its adapter variables live in `adapter_vs`.
    pub model: M,
    /// The trainable adapter variables (the only ones the optimiser sees).
    pub adapter_vs: nn::VarStore,
    opt: AdamW,
    /// Loss, optimiser and schedule settings.
    pub settings: DpoTrainerConfig,
    k: usize,
    steps_done: u64,
    /// The graphed steps (`settings.cuda_graphs`), built on the first one.
    graphs: Option<DpoGraphs>,
    /// Why a step asked to run under graphs ran eagerly, until a caller takes it
    /// ([`DpoTrainer::take_graph_note`]); then `graph_noted` keeps it from coming back.
    graph_note: Option<String>,
    graph_noted: bool,
}

impl<M: PackedLm> std::fmt::Debug for DpoTrainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpoTrainer")
            .field("settings", &self.settings)
            .field("k", &self.k)
            .field("steps_done", &self.steps_done)
            .finish_non_exhaustive()
    }
}

impl<M: PackedLm> DpoTrainer<M> {
    /// A trainer for `k` objectives. `adapter_vs` must hold every trainable variable of
    /// `model` (build the model with `Llama::new(base, Some((&adapter_vs.root(), cfg)), ..)`).
    pub fn new(
        model: M,
        adapter_vs: nn::VarStore,
        settings: DpoTrainerConfig,
        k: usize,
    ) -> Result<Self, DpoError> {
        settings.aggregation.check(k)?;
        if adapter_vs.trainable_variables().is_empty() {
            return Err(DpoError::Data(
                "the adapter VarStore has no trainable variables; hint: build the model with an \
                 adapter path"
                    .into(),
            ));
        }
        // β2 = 0.999: TRL's and PyTorch's AdamW default.
        let mut opt = AdamW::new(
            &adapter_vs,
            AdamWConfig {
                beta2: 0.999,
                weight_decay: settings.optim.weight_decay,
                ..Default::default()
            },
            settings.optim.lr,
        );
        settings.optim.lr_multipliers.apply(&mut opt);
        Ok(Self {
            model,
            adapter_vs,
            opt,
            settings,
            k,
            steps_done: 0,
            graphs: None,
            graph_note: None,
            graph_noted: false,
        })
    }

    /// Optimiser steps taken successfully (including those restored with
    /// [`DpoTrainer::restore_state`]).
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// The learning rate of the next step: linear warm-up over ⌈warmup_ratio · total_steps⌉
    /// steps, then constant.
    pub fn next_lr(&self) -> f64 {
        self.settings.optim.lr_at(self.steps_done + 1, self.settings.total_steps)
    }

    fn micro_ranges(&self, b: usize) -> Vec<(usize, usize)> {
        let m = match self.settings.dpo.micro_batch_size {
            0 => b,
            m => m.min(b),
        };
        (0..b).step_by(m).map(|s| (s, m.min(b - s))).collect()
    }

    fn check_batch(&self, batch: &PairBatch) -> Result<(), DpoError> {
        if batch.n_objectives() != self.k {
            return Err(DpoError::shape(
                "pair labels [B, K]",
                vec![batch.len() as i64, self.k as i64],
                batch.labels.size(),
            ));
        }
        Ok(())
    }

    /// Reference log-probs [2B] of `batch`: from `cache` when every pair is there, else a
    /// forward under `Adapter::Off` without a graph (stored into `cache`). Returns whether the
    /// cache served them.
    pub fn reference_logps(
        &self,
        batch: &PairBatch,
        mut cache: Option<&mut RefLogpCache>,
    ) -> Result<(Tensor, bool), DpoError> {
        let device = self.model.device();
        if let Some(c) = cache.as_deref_mut() {
            if let Some(v) = c.lookup(&batch.index, device) {
                return Ok((v, true));
            }
        }
        let b = batch.len();
        let mut halves: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
        tch::no_grad(|| {
            for (s, l) in self.micro_ranges(b) {
                let lp = shared_prefix_logps(&self.model, &batch.slice(s, l), Adapter::Off); // [2l]
                halves[0].push(lp.narrow(0, 0, l as i64));
                halves[1].push(lp.narrow(0, l as i64, l as i64));
            }
        });
        let v = Tensor::cat(&[Tensor::cat(&halves[0], 0), Tensor::cat(&halves[1], 0)], 0); // [2B]
        if let Some(c) = cache {
            c.insert(&batch.index, &v)?;
        }
        Ok((v, false))
    }

    /// Policy log-probs [2B] under λ for pairs in micro-batches, without a graph.
    fn policy_logps_no_grad(
        &self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
    ) -> Result<Tensor, DpoError> {
        let b = batch.len();
        let device = self.model.device();
        let mut halves: [Vec<Tensor>; 2] = [Vec::new(), Vec::new()];
        for (s, l) in self.micro_ranges(b) {
            let p = pref.tensor(self.k, s, l, device)?; // [K] or [l, K]
            let lp = tch::no_grad(|| {
                shared_prefix_logps(&self.model, &batch.slice(s, l), Adapter::On { pref: &p })
            }); // [2l]
            halves[0].push(lp.narrow(0, 0, l as i64));
            halves[1].push(lp.narrow(0, l as i64, l as i64));
        }
        Ok(Tensor::cat(&[Tensor::cat(&halves[0], 0), Tensor::cat(&halves[1], 0)], 0))
        // [2B]
    }

    fn loss(
        &self,
        policy: &Tensor,
        reference: &Tensor,
        batch: &PairBatch,
        pair_pref: &Tensor,
    ) -> Result<DpoLossOutput, DpoError> {
        let s = &self.settings;
        mo_dpo_loss(
            policy,
            reference,
            &batch.labels,
            pair_pref,
            s.dpo.beta,
            s.dpo.loss,
            &s.aggregation,
        )
    }

    /// Zeroes the adapter gradients and accumulates ∂L/∂θ of `batch` under `pref` into them
    /// (phases 1–5 of the module docs), without touching the weights. Returns the loss output
    /// (detached) and whether the reference came from the cache. [`DpoTrainer::step`] is this
    /// plus clipping and the optimiser step.
    pub fn accumulate_gradients(
        &mut self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
        cache: Option<&mut RefLogpCache>,
    ) -> Result<(DpoLossOutput, bool), DpoError> {
        self.check_batch(batch)?;
        let b = batch.len();
        let device = self.model.device();
        let (reference, from_cache) = self.reference_logps(batch, cache)?; // [2B]
        let pair_pref = pref.tensor(self.k, 0, b, device)?; // [K] or [B, K]
        self.opt.zero_grad();
        let ranges = self.micro_ranges(b);
        let checkpointing = self.settings.activation_checkpointing;
        if ranges.len() == 1 {
            let on = Adapter::On { pref: &pair_pref };
            let (lp, recompute) =
                shared_prefix_logps_for_training(&self.model, batch, on, checkpointing); // [2B]
            let out = self.loss(&lp, &reference, batch, &pair_pref)?;
            out.loss.backward();
            if let Some(layers) = recompute {
                layers.backward();
            }
            return Ok((out, from_cache));
        }
        // Phase (a): the exact batch loss on a detached leaf gives g = ∂L/∂lp.
        let lp_all = self.policy_logps_no_grad(batch, pref)?; // [2B]
        let leaf = lp_all.detach().set_requires_grad(true); // [2B]
        let out = self.loss(&leaf, &reference, batch, &pair_pref)?;
        out.loss.backward();
        let g = leaf.grad().detach(); // [2B]

        // Phase (b): Σ g·lp per micro-batch accumulates ∂L/∂θ.
        for (s, l) in ranges {
            let p = pref.tensor(self.k, s, l, device)?; // [K] or [l, K]
            let micro = batch.slice(s, l);
            let on = Adapter::On { pref: &p };
            let (lp, recompute) =
                shared_prefix_logps_for_training(&self.model, &micro, on, checkpointing); // [2l]
            let (s, l) = (s as i64, l as i64);
            let g_mb = Tensor::cat(&[g.narrow(0, s, l), g.narrow(0, b as i64 + s, l)], 0); // [2l]
            (lp * g_mb).sum(Kind::Float).backward();
            if let Some(layers) = recompute {
                layers.backward();
            }
        }
        let out = DpoLossOutput { loss: out.loss.detach(), ..out };
        Ok((out, from_cache))
    }

    /// One optimiser step on `batch` under `pref`; reference log-probs from `cache` when
    /// given (missing pairs are computed and added; saving the cache is the caller's job).
    /// Fails with [`DpoError::NonFinite`] at a non-finite loss or gradient norm (before the
    /// update) or non-finite parameters (after it); the step then does not count.
    pub fn step(
        &mut self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
        cache: Option<&mut RefLogpCache>,
    ) -> Result<DpoStepMetrics, DpoError> {
        self.step_data_parallel(batch, pref, cache, None)
    }

    /// [`DpoTrainer::step`] as one rank of a data-parallel group: `batch` is this rank's shard,
    /// and after the backward the gradient is averaged over the ranks (one all-reduce of the
    /// optimiser's flat gradient buffer), so every rank clips and applies the same update. The
    /// average equals the gradient of the whole batch when the batch loss is a mean over
    /// pairs: linear aggregation with every pair labelled in every dimension and the same
    /// shard size on each rank (per-dimension means over unequal label counts, and
    /// Tchebycheff's max over dimensions, make it the usual data-parallel approximation). The
    /// returned metrics are this rank's. `group = None` is [`DpoTrainer::step`].
    #[tracing::instrument(skip_all, fields(step = self.steps_done + 1))]
    pub fn step_data_parallel(
        &mut self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
        cache: Option<&mut RefLogpCache>,
        group: Option<&ProcessGroup>,
    ) -> Result<DpoStepMetrics, DpoError> {
        if self.settings.cuda_graphs {
            match self.graph_blocker(batch.len(), pref, group.is_some()) {
                None => return self.step_graphed(batch, pref, cache),
                Some(why) => self.note_eager(why),
            }
        }
        let step = self.steps_done + 1;
        let (out, from_cache) = self.accumulate_gradients(batch, pref, cache)?;
        let mut grad_sync_ms = 0.0;
        if let Some(group) = group {
            // Before any check, so that a non-finite gradient on one rank stops every rank at
            // the same step instead of leaving the others waiting in the next collective.
            let t0 = Instant::now();
            for g in self.opt.gradients() {
                group.all_reduce(&g, ReduceOp::Average)?;
            }
            grad_sync_ms = t0.elapsed().as_secs_f64() * 1e3;
        }
        let loss = scalar(&out.loss);
        if !loss.is_finite() {
            return Err(DpoError::non_finite(step, "loss", loss, &self.settings));
        }
        let grad_norm = self.opt.clip_grad_norm(self.settings.optim.max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(DpoError::non_finite(step, "gradient norm", grad_norm, &self.settings));
        }
        let lr = self.next_lr();
        self.opt.set_lr(lr);
        self.opt.step();
        if let Some((name, value)) = self.first_non_finite_parameter() {
            let what = format!("adapter parameter `{name}` after the update");
            return Err(DpoError::non_finite(step, &what, value, &self.settings));
        }
        self.steps_done = step;
        let b = batch.len() as i64;
        let beta = self.settings.dpo.beta;
        Ok(DpoStepMetrics {
            loss,
            loss_per_obj: host(&out.loss_per_obj),
            accuracy_per_obj: host(&out.accuracy_per_obj),
            labelled_per_obj: host(&out.labelled_per_obj),
            margin_mean: scalar(&out.margin.mean(Kind::Float)),
            reward_mean: [
                beta * scalar(&out.implicit_reward.narrow(0, 0, b).mean(Kind::Float)),
                beta * scalar(&out.implicit_reward.narrow(0, b, b).mean(Kind::Float)),
            ],
            grad_norm,
            lr,
            pairs: batch.len(),
            ref_from_cache: from_cache,
            pref: pref.mean(),
            grad_sync_ms,
        })
    }

    /// Why a step of `pairs` pairs under `pref` cannot run as the graphed step
    /// ([`DpoTrainer::step_graphed`]) here, or `None` when it can. Graphs need CUDA (the shim's
    /// reason otherwise), one λ for the batch (per-row λ groups rows on the host), one
    /// micro-batch (the two-phase micro-batch step reads the whole batch's loss between
    /// forwards), no activation checkpointing (its recomputation is a second backward pass
    /// per layer) and one process (the all-reduce sits between backward and update).
    pub fn graph_blocker(
        &self,
        pairs: usize,
        pref: StepPreference<'_>,
        data_parallel: bool,
    ) -> Option<String> {
        if let Some(why) = panacea_shim::graph::unavailable_reason(self.model.device()) {
            return Some(why);
        }
        self.graphed_step_blocker(pairs, pref, data_parallel)
    }

    /// [`DpoTrainer::graph_blocker`] without the device: what the graphed step cannot do on
    /// any device.
    fn graphed_step_blocker(
        &self,
        pairs: usize,
        pref: StepPreference<'_>,
        data_parallel: bool,
    ) -> Option<String> {
        if matches!(pref, StepPreference::PerRow(_)) {
            return Some(
                "per-row preferences (train.preference_per_row) group rows by λ on the host".into(),
            );
        }
        if self.micro_ranges(pairs).len() > 1 {
            return Some(format!(
                "dpo.micro_batch_size {} splits the batch of {pairs} pairs (the graphed step \
                 runs one micro-batch)",
                self.settings.dpo.micro_batch_size
            ));
        }
        if self.settings.activation_checkpointing {
            return Some(
                "train.activation_checkpointing recomputes layers outside the graph".into(),
            );
        }
        if data_parallel {
            return Some("data-parallel steps all-reduce between backward and update".into());
        }
        None
    }

    fn note_eager(&mut self, why: String) {
        if !self.graph_noted && self.graph_note.is_none() {
            self.graph_note = Some(why);
        }
    }

    /// Why steps asked to run under CUDA graphs (`train.cuda_graphs`) ran eagerly, or why a
    /// capture failed, the first time it happens; `None` afterwards and while they run under
    /// graphs. The run loop turns it into one event.
    pub fn take_graph_note(&mut self) -> Option<String> {
        let capture_failed = self.graphs.as_ref().and_then(|g| g.steps.capture_error());
        if let (false, Some(why)) = (self.graph_noted || self.graph_note.is_some(), capture_failed)
        {
            self.graph_note = Some(format!("a capture failed, that bucket runs eagerly: {why}"));
        }
        let note = self.graph_note.take();
        self.graph_noted |= note.is_some();
        note
    }

    /// Steps replayed from CUDA graphs so far, and the graphs captured (one per bucket).
    pub fn graph_replays(&self) -> (u64, usize) {
        self.graphs.as_ref().map_or((0, 0), |g| (g.steps.replays(), g.steps.graphs()))
    }

    /// [`DpoTrainer::step`] at bucketed shapes ([`crate::static_step`]): forward, loss,
    /// backward, clipping and the AdamW update as one step that reads only static buffers, so
    /// that on CUDA it is captured once per bucket and replayed (elsewhere, or when a capture
    /// fails, the same step runs eagerly). The loss, gradients and update equal
    /// [`DpoTrainer::step`]'s within f32 rounding (tested). A non-finite loss or gradient
    /// norm leaves the adapter and the moments unchanged (the update is gated on the device)
    /// and fails the step as in [`DpoTrainer::step`]. Fails with [`DpoError::Data`] for what
    /// it cannot run ([`DpoTrainer::graph_blocker`], the device aside).
    pub fn step_graphed(
        &mut self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
        cache: Option<&mut RefLogpCache>,
    ) -> Result<DpoStepMetrics, DpoError> {
        self.check_batch(batch)?;
        if let Some(why) = self.graphed_step_blocker(batch.len(), pref, false) {
            return Err(DpoError::Data(format!("the graphed DPO step cannot run: {why}")));
        }
        let step = self.steps_done + 1;
        let device = self.model.device();
        let (reference, from_cache) = self.reference_logps(batch, cache)?; // [2B]
        let pair_pref = pref.tensor(self.k, 0, batch.len(), device)?; // [K]
        let lr = self.next_lr();
        self.opt.set_lr(lr);
        if self.graphs.is_none() {
            let scalars = self.opt.device_scalars()?;
            self.graphs =
                Some(DpoGraphs { steps: GraphedStep::new(device, DEFAULT_WARMUPS), scalars });
        }
        let pairs = PaddedPairs::new(batch, device);
        let bucket = pairs.bucket();
        let k = self.k as i64;
        let labels = batch.labels.to_kind(Kind::Float); // [B, K]
        let reference = reference.to_kind(Kind::Float); // [2B]
        let pair_pref = pair_pref.to_kind(Kind::Float); // [K]
        let Self { model, opt, settings, graphs, .. } = self;
        let DpoGraphs { steps, scalars } = graphs.as_mut().expect("built above");
        let scalars = &*scalars;
        opt.write_device_scalars(scalars, true);
        let (beta, loss_kind, max_norm) =
            (settings.dpo.beta, settings.dpo.loss, settings.optim.max_grad_norm);
        let aggregation = &settings.aggregation;
        let run = steps.run(
            bucket,
            || Ok::<_, DpoError>(DpoStatics::zeros(bucket, k, device)),
            |statics, real| {
                statics.fill(&pairs, &reference, &labels, &pair_pref);
                scalars.set_apply(real);
                Ok(())
            },
            |s| {
                // Everything below reads only `s`, the model, the optimiser's buffers and
                // `scalars`: the graph's static memory.
                opt.zero_grad();
                let lp = padded_pair_logps(model, &s.pairs, Adapter::On { pref: &s.pref }); // [2B]
                let out = mo_dpo_loss(
                    &lp,
                    &s.reference,
                    &s.labels,
                    &s.pref,
                    beta,
                    loss_kind,
                    aggregation,
                )?;
                out.loss.backward();
                let loss = out.loss.detach();
                let (grad_norm, applied) = opt.clip_and_step_on_device(scalars, max_norm, &loss)?;
                Ok(DpoGraphOutputs { out: DpoLossOutput { loss, ..out }, grad_norm, applied })
            },
        )?;
        let DpoGraphOutputs { out, grad_norm, applied } = run.outputs();
        // The one sync of the step's checks: loss, norm and the update's flag together.
        let checks = Tensor::stack(
            &[
                out.loss.to_kind(Kind::Double),
                grad_norm.to_kind(Kind::Double),
                applied.to_kind(Kind::Double),
            ],
            0,
        );
        let checks = host(&checks);
        let (loss, grad_norm, applied) = (checks[0], checks[1], checks[2] != 0.0);
        let b = batch.len() as i64;
        let beta = self.settings.dpo.beta;
        let metrics = DpoStepMetrics {
            loss,
            loss_per_obj: host(&out.loss_per_obj),
            accuracy_per_obj: host(&out.accuracy_per_obj),
            labelled_per_obj: host(&out.labelled_per_obj),
            margin_mean: scalar(&out.margin.mean(Kind::Float)),
            reward_mean: [
                beta * scalar(&out.implicit_reward.narrow(0, 0, b).mean(Kind::Float)),
                beta * scalar(&out.implicit_reward.narrow(0, b, b).mean(Kind::Float)),
            ],
            grad_norm,
            lr,
            pairs: batch.len(),
            ref_from_cache: from_cache,
            pref: pref.mean(),
            grad_sync_ms: 0.0,
        };
        if !loss.is_finite() {
            return Err(DpoError::non_finite(step, "loss", loss, &self.settings));
        }
        if !grad_norm.is_finite() {
            return Err(DpoError::non_finite(step, "gradient norm", grad_norm, &self.settings));
        }
        debug_assert!(applied, "finite loss and norm with apply set: the update applied");
        self.opt.count_device_step();
        if let Some((name, value)) = self.first_non_finite_parameter() {
            let what = format!("adapter parameter `{name}` after the update");
            return Err(DpoError::non_finite(step, &what, value, &self.settings));
        }
        self.steps_done = step;
        Ok(metrics)
    }

    /// Makes every rank's adapter rank 0's: one broadcast per adapter variable, in name order
    /// (at the start of a data-parallel run, fresh or resumed).
    pub fn broadcast_adapter(&self, group: &ProcessGroup) -> Result<(), DpoError> {
        let mut vars: Vec<(String, Tensor)> = self.adapter_vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tch::no_grad(|| vars.iter().try_for_each(|(_, t)| group.broadcast(t, 0)))?;
        Ok(())
    }

    /// The first adapter variable holding a NaN or an infinity, with one such value. One
    /// device sync for the whole adapter.
    fn first_non_finite_parameter(&self) -> Option<(String, f64)> {
        let mut vars: Vec<(String, Tensor)> = self.adapter_vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let finite: Vec<Tensor> = vars.iter().map(|(_, t)| t.isfinite().all()).collect();
        let finite = Tensor::stack(&finite, 0).to_device(Device::Cpu); // [n_vars]
        let flags = Vec::<bool>::try_from(&finite).ok()?;
        let i = flags.iter().position(|ok| !ok)?;
        let t = &vars[i].1;
        let bad = t.masked_select(&t.isfinite().logical_not()).get(0);
        Some((vars[i].0.clone(), scalar(&bad)))
    }

    /// Writes what the trainer owns besides the adapter into the folder `dir` (which must
    /// exist): AdamW's moments ([`OPTIM_FILE`]) and the step count ([`STATE_FILE`], last), each
    /// atomically. The caller saves the adapter (with its folder config) and its loop state
    /// beside them.
    pub fn save_state(&self, dir: &Path) -> Result<(), DpoError> {
        self.opt.save(&dir.join(OPTIM_FILE))?;
        let state = DpoState { steps_done: self.steps_done, n_objectives: self.k };
        let text = serde_json::to_string_pretty(&state).map_err(|e| DpoError::State {
            path: dir.join(STATE_FILE),
            message: format!("cannot serialise: {e}"),
        })?;
        write_atomic(&dir.join(STATE_FILE), format!("{text}\n").as_bytes())?;
        Ok(())
    }

    /// Restores what [`DpoTrainer::save_state`] wrote (the adapter is loaded by the caller):
    /// the moments, and the step count, so warm-up and bias correction continue where they
    /// stopped. The number of objectives must match the checkpoint's.
    pub fn restore_state(&mut self, dir: &Path) -> Result<(), DpoError> {
        let path = dir.join(STATE_FILE);
        let state_err = |message: String| DpoError::State { path: path.clone(), message };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            state_err(format!("cannot read: {e}; hint: is this a train-dpo checkpoint folder?"))
        })?;
        let state: DpoState = serde_json::from_str(&text).map_err(|e| state_err(format!("{e}")))?;
        if state.n_objectives != self.k {
            return Err(state_err(format!(
                "the checkpoint has {} objectives, this trainer {}",
                state.n_objectives, self.k
            )));
        }
        self.opt.restore(&dir.join(OPTIM_FILE), state.steps_done)?;
        self.steps_done = state.steps_done;
        Ok(())
    }

    /// Per pair and dimension, whether the policy's likelihood under `pref` ranks the pair as
    /// its label says: [B, K], 1.0 for a win and 0.0 otherwise (and where unlabelled); see
    /// [`crate::loss::ranking_wins`].
    pub fn policy_ranking_wins(
        &self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
    ) -> Result<Tensor, DpoError> {
        self.check_batch(batch)?;
        let policy = self.policy_logps_no_grad(batch, pref)?; // [2B]
        crate::loss::ranking_wins(&policy, &batch.labels)
    }

    /// Loss and accuracies of `batch` under `pref`, without a graph and without changing
    /// anything but `cache`.
    pub fn evaluate(
        &self,
        batch: &PairBatch,
        pref: StepPreference<'_>,
        cache: Option<&mut RefLogpCache>,
    ) -> Result<DpoEvalMetrics, DpoError> {
        self.check_batch(batch)?;
        let device = self.model.device();
        let (reference, _) = self.reference_logps(batch, cache)?; // [2B]
        let policy = self.policy_logps_no_grad(batch, pref)?; // [2B]
        let pair_pref = pref.tensor(self.k, 0, batch.len(), device)?; // [K] or [B, K]
        let out = tch::no_grad(|| self.loss(&policy, &reference, batch, &pair_pref))?;
        Ok(DpoEvalMetrics {
            loss: scalar(&out.loss),
            loss_per_obj: host(&out.loss_per_obj),
            accuracy_per_obj: host(&out.accuracy_per_obj),
            policy_ranking_accuracy_per_obj: host(&ranking_accuracy(&policy, &batch.labels)?),
            base_ranking_accuracy_per_obj: host(&ranking_accuracy(&reference, &batch.labels)?),
            labelled_per_obj: host(&out.labelled_per_obj),
            margin_mean: scalar(&out.margin.mean(Kind::Float)),
        })
    }
}
