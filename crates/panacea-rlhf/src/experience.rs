//! The immutable record of one rollout (stages 1–5 of a PPO step: rollout, scores, log-probs
//! and values, shaped rewards, advantages). It carries the preference it
//! was generated with, and the PPO update reads λ from here and nowhere else.

use tch::Tensor;

/// A prompt batch: the rendered prompt texts and their token ids (not yet padded).
#[derive(Clone, Debug)]
pub struct PromptBatch {
    /// Rendered prompts (chat template applied), one per row; may be empty strings in tests
    /// whose objectives read token ids only.
    pub prompts: Vec<String>,
    /// Token ids of each prompt (≥ 1 token each).
    pub ids: Vec<Vec<i64>>,
}

impl PromptBatch {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// One rollout with everything the PPO epochs need. Tensors live on the model's device.
#[derive(Debug)]
pub struct Experience {
    /// Prompt (left-padded) and response (right-padded after EOS): [B, T] i64.
    pub seq: Tensor,
    /// Attention mask of `seq`: [B, T] i64 (1 = real token).
    pub mask: Tensor,
    /// 1 on action positions whose next token is a response token (up to and including EOS):
    /// [B, A] f32, A = T − 1.
    pub act_mask: Tensor,
    /// The preference the rollout was generated under, one row per sequence: [B, K] f32.
    pub pref: Tensor,
    /// log π_old of each next token under `Adapter::On { pref }`: [B, A] f32.
    pub old_lp: Tensor,
    /// log π_ref under `Adapter::Off`: [B, A] f32.
    pub ref_lp: Tensor,
    /// Critic values at rollout time: [B, A, K] f32.
    pub old_values: Tensor,
    /// Raw utilities (costs already negated) before normalisation: [B, K] f32.
    pub raw_utilities: Tensor,
    /// Normalised, scaled utilities that enter the rewards: [B, K] f32.
    pub scores: Tensor,
    /// Per-token shaped rewards: [B, A, K] f32.
    pub rewards: Tensor,
    /// Per-token KL estimate old_lp − ref_lp on action tokens: [B, A] f32.
    pub kl: Tensor,
    /// The aggregated advantage the actor uses: [B, A] f32.
    pub advantages: Tensor,
    /// Per-objective critic targets: [B, A, K] f32.
    pub returns: Tensor,
    /// P: the padded prompt length.
    pub prompt_len: i64,
    /// The decoded responses (empty strings when no tokenizer is attached).
    pub responses: Vec<String>,
    /// A data-parallel step's view of the whole batch (`None` in one process).
    pub global: Option<GlobalBatch>,
}

/// What one rank of a data-parallel PPO step knows of the global batch of W ranks × B rows,
/// in global row order (global row r·B + i is row i of rank r): gathered from every rank
/// after scoring (utilities, λ, lengths) and after the log-probs (KL). See
/// [`crate::trainer`]'s module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlobalBatch {
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks W.
    pub world: usize,
    /// Raw utility per objective of every global row: [W·B][K].
    pub utilities: Vec<Vec<f64>>,
    /// λ of every global row: [W·B][K].
    pub prefs: Vec<Vec<f64>>,
    /// Response tokens (the action mask's sum) of every global row: [W·B].
    pub tokens: Vec<f64>,
    /// Σ_t (old_lp − ref_lp) of every global row: [W·B].
    pub kl: Vec<f64>,
    /// Decoding steps of the rollout: the most any rank ran, which one process would run.
    pub decode_steps: u64,
}
