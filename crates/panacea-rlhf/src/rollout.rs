//! Rollout and the reward sources that score it, and [`reward_source`]: the one factory from
//! an objective's [`ScorerSpec`] to its source.
//!
//! A reward source returns one **raw** score per row in its own direction (a cost model
//! returns costs); the trainer turns scores into utilities with
//! [`panacea_core::objective::utilities`], the project's only negation of costs.

use std::sync::Arc;

use panacea_core::adapter::Adapter;
use panacea_core::ObjectiveKind;
use panacea_data::{Scorer, ScorerSpec};
use panacea_lm::{CausalLm, Checkpointed, GenerateConfig, Generation, Llama, Sampling, Tokenizer};
use rand::{Rng, RngCore};
use tch::{Kind, Tensor};

use crate::config::RolloutConfig;
use crate::experience::PromptBatch;
use crate::policy::PpoPolicy;
use crate::score::{LearnedScoreModel, ScoreModel};
use crate::testing::{EvenTokenFraction, NegativeLength, OddTokenFraction};
use crate::RlhfError;

/// What a reward source may look at: the full sequences and the texts.
#[derive(Debug)]
pub struct RolloutView<'a> {
    /// Prompt + response ids: [B, T] i64.
    pub seq: &'a Tensor,
    /// Attention mask of `seq`: [B, T] i64.
    pub mask: &'a Tensor,
    /// The response alone: [B, N] i64.
    pub response_ids: &'a Tensor,
    /// 1 on response tokens up to and including EOS: [B, N].
    pub response_mask: &'a Tensor,
    /// The rendered prompts.
    pub prompts: &'a [String],
    /// The decoded responses (empty strings without a tokenizer).
    pub responses: &'a [String],
}

impl<'a> RolloutView<'a> {
    /// The view of a generation `gen` of `prompts`, with its decoded `responses`.
    pub fn of(gen: &'a Generation, prompts: &'a [String], responses: &'a [String]) -> Self {
        Self {
            seq: &gen.ids,
            mask: &gen.attention_mask,
            response_ids: &gen.response_ids,
            response_mask: &gen.response_mask,
            prompts,
            responses,
        }
    }
}

/// One objective's score function.
pub trait RewardSource {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// One raw score per row (a cost model returns costs; the trainer negates them).
    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError>;
}

/// A built-in text scorer from panacea-data (its scores are already utilities).
pub struct ScorerSource(pub Box<dyn Scorer>);

impl RewardSource for ScorerSource {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        let prompts: Vec<&str> = view.prompts.iter().map(String::as_str).collect();
        let responses: Vec<&str> = view.responses.iter().map(String::as_str).collect();
        self.0.score(&prompts, &responses).map_err(|e| RlhfError::Invalid {
            what: format!("scorer {}", self.0.name()),
            reason: e.to_string(),
        })
    }
}

/// A learned reward or cost model, read at each sequence's last token.
pub struct ModelSource<M: ScoreModel> {
    /// Name for logs.
    pub name: String,
    /// The model.
    pub model: M,
}

impl<M: ScoreModel> RewardSource for ModelSource<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, view: &RolloutView<'_>) -> Result<Vec<f64>, RlhfError> {
        let s = tch::no_grad(|| self.model.end_scores(view.seq, view.mask)); // [B]
        Ok(Vec::<f64>::try_from(s.to_kind(Kind::Double).to_device(tch::Device::Cpu))?)
    }
}

/// The reward source of an objective named `name` declared as `kind`, scored by `spec`: text
/// scorers through panacea-data's one constructor (concise counts tokens of `tokenizer`), a
/// learned score model loaded onto `base` (it must have been trained as `kind`), the rule
/// rewards on token ids directly.
pub fn reward_source(
    name: &str,
    kind: ObjectiveKind,
    spec: &ScorerSpec,
    tokenizer: &Tokenizer,
    base: &Llama,
) -> Result<Box<dyn RewardSource>, RlhfError> {
    let tok = tokenizer.clone();
    let counter: panacea_data::TokenCounter =
        Arc::new(move |text: &str| tok.encode(text).ok().map(|ids| ids.len()));
    if let Some(scorer) = spec.text_scorer(Some(counter), base.device())? {
        return Ok(Box::new(ScorerSource(scorer)));
    }
    Ok(match spec {
        ScorerSpec::ScoreModel { path } => {
            let model = LearnedScoreModel::load(path, base)?;
            if model.meta.kind != kind {
                return Err(RlhfError::Invalid {
                    what: format!("objective {name}"),
                    reason: format!(
                        "declared a {kind:?} but the score model in {} was trained as a {:?}; \
                         hint: set the objective's `kind` to match",
                        path.display(),
                        model.meta.kind
                    ),
                });
            }
            Box::new(ModelSource { name: name.to_owned(), model })
        }
        ScorerSpec::EvenTokens => Box::new(EvenTokenFraction),
        ScorerSpec::OddTokens => Box::new(OddTokenFraction),
        ScorerSpec::NegativeLength => Box::new(NegativeLength),
        other => {
            return Err(RlhfError::Invalid {
                what: format!("objective {name}"),
                reason: format!("the scorer `{}` could not be built", other.kind_name()),
            })
        }
    })
}

/// Raw scores of every row under every source: one row of K scores per sequence.
pub fn score_all(
    sources: &[Box<dyn RewardSource>],
    view: &RolloutView<'_>,
) -> Result<Vec<Vec<f64>>, RlhfError> {
    let b = view.seq.size()[0] as usize;
    let mut rows = vec![vec![0.0; sources.len()]; b];
    for (j, src) in sources.iter().enumerate() {
        let s = src.score(view)?;
        if s.len() != b {
            return Err(RlhfError::Invalid {
                what: format!("reward source {}", src.name()),
                reason: format!("returned {} scores for {b} rows", s.len()),
            });
        }
        for (row, v) in rows.iter_mut().zip(s) {
            row[j] = v;
        }
    }
    Ok(rows)
}

/// Generation settings for a rollout: a row stops on any of `eos_ids`.
pub fn generate_config(cfg: &RolloutConfig, eos_ids: &[i64], pad_id: i64) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: Sampling::Sample {
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
        },
        eos_ids: eos_ids.to_vec(),
        pad_id,
    }
}

/// Samples responses to `batch` under `Adapter::On { pref }` (pref [B, K]) without gradients
/// ([`PpoPolicy::rollout`]: [`Llama`] prepares the adapter's factors once for the whole rollout,
/// with the same tokens as unprepared).
pub fn rollout<M: PpoPolicy>(
    policy: &mut M,
    batch: &PromptBatch,
    pref: &Tensor,
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> Result<Generation, RlhfError> {
    let invalid = |e: panacea_lm::LmError| RlhfError::Invalid {
        what: "rollout generation".into(),
        reason: e.to_string(),
    };
    policy.rollout(&batch.ids, pref, cfg, rng).map_err(invalid)
}

/// The action mask [B, A] (f32) of a generation: action position t predicts token t + 1, so
/// the response tokens at columns P.. are predicted from positions P − 1...
pub fn action_mask(g: &Generation) -> Tensor {
    let b = g.response_mask.size()[0];
    let device = g.response_mask.device();
    let lead = Tensor::zeros([b, g.prompt_len - 1], (Kind::Float, device)); // [B, P − 1]
    Tensor::cat(&[lead, g.response_mask.to_kind(Kind::Float)], 1) // [B, A]
}

/// Token log-probs of a rollout under `adapter`, computing the LM head only where it matters:
/// seq [B, T] with the response from column `prompt_len` on → (log-probs [B, A] with zeros on
/// the P − 1 prompt positions, response logits [B, N, V]). The head is about a fifth of
/// SmolLM2-135M's forward FLOPs and most positions of a rollout are prompt, so this saves a
/// sizeable share of each PPO forward; on the response positions it equals
/// `gather_log_probs(policy.logits(..))`.
pub fn response_log_probs<M: CausalLm>(
    policy: &M,
    seq: &Tensor,
    mask: &Tensor,
    adapter: Adapter<'_>,
    prompt_len: i64,
) -> Result<(Tensor, Tensor), RlhfError> {
    check_lengths(seq, prompt_len)?;
    let hidden = policy.hidden_states(seq, mask, adapter); // [B, T, D]
    Ok(response_log_probs_of_hidden(policy, seq, &hidden, prompt_len))
}

/// [`response_log_probs`] for the actor's training forward: with `checkpointing`
/// (`train.activation_checkpointing`) the forward keeps only each decoder layer's input, and
/// the returned [`Checkpointed`] must run its [`Checkpointed::backward`] after the caller's
/// backward of a loss of the log-probs. Without it this is [`response_log_probs`] and `None`.
pub fn response_log_probs_for_training<'m, M: PpoPolicy>(
    policy: &'m M,
    seq: &Tensor,
    mask: &Tensor,
    adapter: Adapter<'_>,
    prompt_len: i64,
    checkpointing: bool,
) -> Result<(Tensor, Tensor, Option<Checkpointed<'m>>), RlhfError> {
    if !checkpointing {
        let (lp, logits) = response_log_probs(policy, seq, mask, adapter, prompt_len)?;
        return Ok((lp, logits, None));
    }
    check_lengths(seq, prompt_len)?;
    let ck = policy.hidden_states_checkpointed(seq, mask, adapter);
    let (lp, logits) = response_log_probs_of_hidden(policy, seq, &ck.hidden, prompt_len);
    Ok((lp, logits, Some(ck)))
}

/// Fails unless `seq` [B, T] has a prompt of ≥ 1 and a response of ≥ 1 tokens.
fn check_lengths(seq: &Tensor, prompt_len: i64) -> Result<(), RlhfError> {
    let t = seq.size()[1];
    if prompt_len < 1 || t - prompt_len < 1 {
        return Err(RlhfError::Invalid {
            what: "response log-probs".into(),
            reason: format!("prompt length {prompt_len} with sequence length {t}"),
        });
    }
    Ok(())
}

/// The log-probs and response logits of [`response_log_probs`] from the final hidden states
/// [B, T, D] of `seq`.
fn response_log_probs_of_hidden<M: CausalLm>(
    policy: &M,
    seq: &Tensor,
    hidden: &Tensor,
    prompt_len: i64,
) -> (Tensor, Tensor) {
    let (b, t) = (seq.size()[0], seq.size()[1]);
    let n = t - prompt_len;
    let logits = policy.lm_head(&hidden.narrow(1, prompt_len - 1, n)); // [B, N, V]
    let next = seq.narrow(1, prompt_len, n).unsqueeze(-1); // [B, N, 1]
    let logits_f = logits.to_kind(Kind::Float);
    let picked = logits_f.gather(2, &next, false).squeeze_dim(-1); // [B, N]
    let lp = picked - logits_f.logsumexp([-1], false); // [B, N]
    let lead = Tensor::zeros([b, prompt_len - 1], (Kind::Float, lp.device())); // [B, P − 1]
    (Tensor::cat(&[lead, lp], 1), logits) // [B, A], [B, N, V]
}

/// The sampling stream of one rank in a data-parallel rollout, so that a row samples the same
/// tokens whichever rank holds it.
///
/// Generation with one stream draws, in every decoding step, one `u32` word per row in row
/// order (rand's `f32` is one `next_u32`). A rollout of the global batch of W × b rows in one
/// process therefore reads W·b words per step, global row g taking the g-th. This adaptor
/// reads the same W·b words per step from the run's one stream and hands rank r the r-th run
/// of b of them, so its row i samples with exactly the words of global row r·b + i.
///
/// One process stops decoding when every global row has finished; a rank stops when its own
/// rows have. [`RankSlicedRng::catch_up`] then skips the words of the steps the other ranks
/// still decoded (the maximum of the ranks' step counts is the one process's count, since "all
/// finished" holds for the batch exactly when it holds on every rank), so every rank's stream
/// ends where the one process's does and the PPO shuffle that follows draws the same order.
pub struct RankSlicedRng<'a, R: RngCore> {
    inner: &'a mut R,
    rank: usize,
    world: usize,
    rows: usize,
    /// This rank's words of the current step.
    words: Vec<u32>,
    next: usize,
    steps: u64,
}

impl<'a, R: RngCore> RankSlicedRng<'a, R> {
    /// Rank `rank` of `world`, each holding `rows` rows, drawing from `inner`.
    pub fn new(inner: &'a mut R, rank: usize, world: usize, rows: usize) -> Self {
        Self { inner, rank, world, rows, words: Vec::new(), next: 0, steps: 0 }
    }

    /// Decoding steps drawn so far (W·b words each from the shared stream).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Skips, in the shared stream `inner`, the words of the steps between this rank's count
    /// `own_steps` and `global_steps` (the most any rank drew) in a world of `world` ranks of
    /// `rows` rows, leaving it where a one-process rollout of the whole batch leaves it.
    pub fn catch_up(inner: &mut R, world: usize, rows: usize, own_steps: u64, global_steps: u64) {
        let missing = global_steps.saturating_sub(own_steps) * (world * rows) as u64;
        for _ in 0..missing {
            inner.next_u32();
        }
    }
}

impl<R: RngCore> RngCore for RankSlicedRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        if self.next == self.words.len() {
            let own = self.rank * self.rows..(self.rank + 1) * self.rows;
            self.words.clear();
            for g in 0..self.world * self.rows {
                let w = self.inner.next_u32();
                if own.contains(&g) {
                    self.words.push(w);
                }
            }
            self.next = 0;
            self.steps += 1;
        }
        let w = self.words[self.next];
        self.next += 1;
        w
    }

    fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_u32());
        (u64::from(self.next_u32()) << 32) | low
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let word = self.next_u32().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
