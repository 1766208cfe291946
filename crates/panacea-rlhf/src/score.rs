//! Score models (reward and cost) and their losses (after safe-rlhf's `values/reward` and
//! `values/cost`), and [`LearnedScoreModel`], the one loader of a saved score-model folder.
//!
//! A score model is the LM backbone (a [`Llama`] view sharing the frozen base, with its own
//! adapter) plus a linear head D → 1 applied to every token. The sequence score is read at the
//! last non-pad token, whose position comes from the **attention mask**, never from
//! `token == pad`: SmolLM2's pad id equals its EOS id, so a pad test would stop at the EOS
//! that ends every response.
//!
//! ```text
//! Bradley–Terry:  L = −mean log σ(r(y_w) − r(y_l))                          [+ η·mean r²]
//! cost:           L = −mean[ log σ(C(y_u) − C(y_s)) + log σ(κ_s C(y_s)) + log σ(κ_u C(y_u)) ]
//!                                                                           [+ η·mean C²]
//! ```
//!
//! κ = −(safety sign): +1 for an unsafe response, −1 for a safe one, so the sign terms pin the
//! cost's zero point (safe ⇒ C < 0, unsafe ⇒ C > 0).

use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_lm::{CausalLm, Llama};
use tch::{nn, Kind, Tensor};

use crate::RlhfError;

/// Index of the last position where `mask` [B, T] is 1 → [B] (i64). Works for left padding
/// (prompts), right padding (responses after EOS) and both at once. A row without any token
/// maps to 0.
pub fn last_token_index(mask: &Tensor) -> Tensor {
    let t = mask.size()[1];
    let pos = Tensor::arange(t, (Kind::Int64, mask.device())) + 1; // [T]
    (mask.to_kind(Kind::Int64) * pos).argmax(-1, false) // [B]
}

/// Anything that gives one score per sequence.
pub trait ScoreModel {
    /// Scores of ids [B, T] with attention mask [B, T] at each row's last token → [B] (f32).
    fn end_scores(&self, ids: &Tensor, mask: &Tensor) -> Tensor;
}

/// A backbone view with its own adapter and a scalar head: the project's reward/cost model.
///
/// The adapter is SVD-LoRA with one preference slot held at 1 (a plain LoRA of rank k + 1):
/// score models are not preference-conditioned.
#[derive(Debug)]
pub struct LmScoreModel {
    /// The backbone: the shared frozen base plus this model's adapter.
    pub backbone: Llama,
    /// Head weight [1, D] (score VarStore).
    pub head_w: Tensor,
    /// Head bias [1] (score VarStore).
    pub head_b: Tensor,
    /// The constant preference [1] that switches the adapter on.
    pref: Tensor,
}

/// Settings of a score model's trainable part.
pub fn score_adapter_config(rank: i64, alpha: f64) -> SvdLoraConfig {
    let mut cfg = SvdLoraConfig::new(1);
    cfg.rank = rank;
    cfg.alpha = alpha;
    cfg
}

impl LmScoreModel {
    /// Builds a score model on `base` (any view of the frozen base model), with its adapter
    /// and head created under `p` (the score model's own VarStore).
    pub fn new(base: &Llama, p: &nn::Path, adapter: &SvdLoraConfig) -> Self {
        let backbone = base.with_adapter(Some((&p.sub("backbone"), adapter)));
        let d = base.hidden_size();
        let head = p.sub("score_head");
        let head_w = head.var("weight", &[1, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        let head_b = head.zeros("bias", &[1]);
        let pref = Tensor::ones([adapter.n_objectives], (Kind::Float, base.device()));
        Self { backbone, head_w, head_b, pref }
    }

    /// Per-token scores: ids [B, T], mask [B, T] → [B, T] (f32).
    pub fn token_scores(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let h = self.backbone.hidden_states(ids, mask, Adapter::On { pref: &self.pref }); // [B, T, D]
        h.to_kind(Kind::Float).linear(&self.head_w, Some(&self.head_b)).squeeze_dim(-1)
        // [B, T]
    }
}

impl LmScoreModel {
    /// [`ScoreModel::end_scores`] with activation checkpointing: the scores [B] and the
    /// checkpointed forward, whose [`panacea_lm::Checkpointed::backward`] the caller runs after
    /// the loss's `backward`.
    pub fn end_scores_checkpointed(
        &self,
        ids: &Tensor,
        mask: &Tensor,
    ) -> (Tensor, panacea_lm::Checkpointed<'_>) {
        let ck =
            self.backbone.hidden_states_checkpointed(ids, mask, Adapter::On { pref: &self.pref });
        let scores = ck.hidden.to_kind(Kind::Float).linear(&self.head_w, Some(&self.head_b));
        let last = last_token_index(mask).unsqueeze(-1); // [B, 1]
        (scores.squeeze_dim(-1).gather(1, &last, false).squeeze_dim(-1), ck) // [B]
    }
}

impl ScoreModel for LmScoreModel {
    fn end_scores(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let scores = self.token_scores(ids, mask); // [B, T]
        let last = last_token_index(mask).unsqueeze(-1); // [B, 1]
        scores.gather(1, &last, false).squeeze_dim(-1) // [B]
    }
}

/// A loss and its diagnostics.
#[derive(Debug)]
pub struct ScoreLoss {
    /// The scalar loss (with a graph).
    pub loss: Tensor,
    /// Ordering accuracy: mean 1[better > worse] (for costs: mean 1[C(y_u) > C(y_s)]).
    pub accuracy: Tensor,
    /// Sign accuracy of a cost model: mean over both responses of 1[sign(C) = κ]; None for BT.
    pub sign_accuracy: Option<Tensor>,
}

/// Sequence-wise Bradley–Terry loss for reward scores of the preferred (`better` [B]) and the
/// other (`worse` [B]) responses, with the optional η·mean(r²) regulariser.
pub fn bradley_terry_loss(better: &Tensor, worse: &Tensor, eta: f64) -> ScoreLoss {
    let mut loss = -(better - worse).log_sigmoid().mean(Kind::Float); // []
    if eta > 0.0 {
        loss += Tensor::cat(&[better, worse], 0).square().mean(Kind::Float) * eta;
    }
    let accuracy = tch::no_grad(|| better.gt_tensor(worse).to_kind(Kind::Float).mean(Kind::Float));
    ScoreLoss { loss, accuracy, sign_accuracy: None }
}

/// safe-rlhf's cost loss. `safer` and `unsafer` are the costs [B] of the safer and the less
/// safe response; `safer_is_safe` / `unsafer_is_safe` [B] hold the safety labels (1 = safe,
/// 0 = unsafe).
pub fn cost_loss(
    safer: &Tensor,
    unsafer: &Tensor,
    safer_is_safe: &Tensor,
    unsafer_is_safe: &Tensor,
    eta: f64,
) -> ScoreLoss {
    // κ = −(safety sign): safe (1) → −1, unsafe (0) → +1.
    let kappa = |is_safe: &Tensor| -(is_safe.to_kind(Kind::Float) * 2.0 - 1.0); // [B]
    let (k_s, k_u) = (kappa(safer_is_safe), kappa(unsafer_is_safe));
    let per_pair = (unsafer - safer).log_sigmoid()
        + (&k_s * safer).log_sigmoid()
        + (&k_u * unsafer).log_sigmoid(); // [B]
    let mut loss = -per_pair.mean(Kind::Float);
    if eta > 0.0 {
        loss += Tensor::cat(&[safer, unsafer], 0).square().mean(Kind::Float) * eta;
    }
    let (accuracy, sign_accuracy) = tch::no_grad(|| {
        let acc = unsafer.gt_tensor(safer).to_kind(Kind::Float).mean(Kind::Float);
        let sign_ok = |c: &Tensor, k: &Tensor| c.sign().eq_tensor(k).to_kind(Kind::Float);
        let sign =
            Tensor::cat(&[sign_ok(safer, &k_s), sign_ok(unsafer, &k_u)], 0).mean(Kind::Float);
        (acc, sign)
    });
    ScoreLoss { loss, accuracy, sign_accuracy: Some(sign_accuracy) }
}

/// One tokenised preference batch for score-model training: both sides right-padded.
#[derive(Debug)]
pub struct ScorePairBatch {
    /// Preferred (or safer) sequences [B, T] (i64).
    pub better_ids: Tensor,
    /// Their mask [B, T].
    pub better_mask: Tensor,
    /// The other sequences [B, T'] (i64).
    pub worse_ids: Tensor,
    /// Their mask [B, T'].
    pub worse_mask: Tensor,
    /// For cost models: safety labels of the better and worse responses [B] (1 = safe).
    pub safety: Option<(Tensor, Tensor)>,
}

impl ScorePairBatch {
    /// Right-pads token lists into a batch on `device`. `safety` holds per-pair
    /// (better is safe, worse is safe) labels for cost models.
    pub fn from_tokens(
        better: &[Vec<i64>],
        worse: &[Vec<i64>],
        safety: Option<&[(bool, bool)]>,
        pad_id: i64,
        device: tch::Device,
    ) -> Result<Self, RlhfError> {
        if better.len() != worse.len() || better.is_empty() {
            return Err(RlhfError::Invalid {
                what: "score pair batch".into(),
                reason: format!("{} better vs {} worse sequences", better.len(), worse.len()),
            });
        }
        let (better_ids, better_mask) = right_pad(better, pad_id, device);
        let (worse_ids, worse_mask) = right_pad(worse, pad_id, device);
        let safety = safety.map(|s| {
            let b: Vec<f32> = s.iter().map(|p| f32::from(u8::from(p.0))).collect();
            let w: Vec<f32> = s.iter().map(|p| f32::from(u8::from(p.1))).collect();
            (Tensor::from_slice(&b).to_device(device), Tensor::from_slice(&w).to_device(device))
        });
        Ok(Self { better_ids, better_mask, worse_ids, worse_mask, safety })
    }
}

/// Right-pads token lists: ids [B, T] and mask [B, T].
pub fn right_pad(rows: &[Vec<i64>], pad_id: i64, device: tch::Device) -> (Tensor, Tensor) {
    let t = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len() * t);
    for r in rows {
        ids.extend(r.iter().copied().chain(std::iter::repeat_n(pad_id, t - r.len())));
        mask.extend(std::iter::repeat_n(1i64, r.len()).chain(std::iter::repeat_n(0, t - r.len())));
    }
    let shape = [rows.len() as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// The loss of one pair batch: Bradley–Terry, or the cost loss when safety labels are given.
pub fn pair_loss(model: &impl ScoreModel, batch: &ScorePairBatch, eta: f64) -> ScoreLoss {
    let better = model.end_scores(&batch.better_ids, &batch.better_mask); // [B]
    let worse = model.end_scores(&batch.worse_ids, &batch.worse_mask); // [B]
    match &batch.safety {
        None => bradley_terry_loss(&better, &worse, eta),
        Some((bs, ws)) => cost_loss(&better, &worse, bs, ws, eta),
    }
}

/// [`pair_loss`] with activation checkpointing: the loss and the two checkpointed forwards
/// (better, worse), to be backpropagated with [`panacea_lm::Checkpointed::backward`] after
/// `loss.backward()`.
pub fn pair_loss_checkpointed<'m>(
    model: &'m LmScoreModel,
    batch: &ScorePairBatch,
    eta: f64,
) -> (ScoreLoss, [panacea_lm::Checkpointed<'m>; 2]) {
    let (better, better_ck) = model.end_scores_checkpointed(&batch.better_ids, &batch.better_mask);
    let (worse, worse_ck) = model.end_scores_checkpointed(&batch.worse_ids, &batch.worse_mask);
    let loss = match &batch.safety {
        None => bradley_terry_loss(&better, &worse, eta),
        Some((bs, ws)) => cost_loss(&better, &worse, bs, ws, eta),
    };
    (loss, [better_ck, worse_ck])
}

/// The metadata file of a saved score model folder.
pub const SCORE_META_FILE: &str = "score_model.json";
/// The weights file of a saved score model folder (adapter + head).
pub const SCORE_WEIGHTS_FILE: &str = "score_model.safetensors";

/// What a score model folder records next to its weights.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreModelMeta {
    /// The backbone adapter's settings.
    pub adapter: SvdLoraConfig,
    /// Whether the model scores a reward or a cost.
    pub kind: panacea_core::ObjectiveKind,
    /// The base model it was trained on (name or path as given).
    pub base_model: String,
    /// Held-out pairwise accuracy at the end of training.
    pub eval_accuracy: Option<f64>,
    /// Held-out sign accuracy (cost models).
    pub eval_sign_accuracy: Option<f64>,
}

/// Saves the score model's VarStore (adapter + head, sorted names) and `meta` into `dir`:
/// weights first, metadata last, each written atomically.
pub fn save_score_model(
    dir: &std::path::Path,
    vs: &nn::VarStore,
    meta: &ScoreModelMeta,
) -> Result<(), RlhfError> {
    let ck = |message: String| RlhfError::Checkpoint { path: dir.to_owned(), message };
    std::fs::create_dir_all(dir).map_err(|e| ck(format!("cannot create: {e}")))?;
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    panacea_core::checkpoint::write_safetensors_atomic(&dir.join(SCORE_WEIGHTS_FILE), &vars)?;
    let text = serde_json::to_string_pretty(meta).map_err(|e| ck(e.to_string()))?;
    panacea_core::checkpoint::write_atomic(&dir.join(SCORE_META_FILE), text.as_bytes())?;
    Ok(())
}

/// Loads a score model folder onto `base`: its variables are created in `vs` (on the base's
/// device) and filled from the weights file.
pub fn load_score_model(
    dir: &std::path::Path,
    base: &Llama,
    vs: &mut nn::VarStore,
) -> Result<(LmScoreModel, ScoreModelMeta), RlhfError> {
    let ck = |message: String| RlhfError::Checkpoint { path: dir.to_owned(), message };
    let meta_path = dir.join(SCORE_META_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| {
        ck(format!(
            "cannot read {}: {e}; hint: train one with `panacea train-rm`",
            meta_path.display()
        ))
    })?;
    let meta: ScoreModelMeta =
        serde_json::from_str(&text).map_err(|e| ck(format!("{}: {e}", meta_path.display())))?;
    let model = LmScoreModel::new(base, &vs.root(), &meta.adapter);
    vs.load(dir.join(SCORE_WEIGHTS_FILE)).map_err(|e| ck(format!("loading weights: {e}")))?;
    Ok((model, meta))
}

/// A saved score model loaded onto a base model, frozen: the one loader of `panacea train-rm`'s
/// folders, used by PPO rewards and by front evaluation.
#[derive(Debug)]
pub struct LearnedScoreModel {
    /// The model (backbone view with its own adapter, scalar head).
    pub model: LmScoreModel,
    /// What the folder records (adapter, reward or cost, base model, held-out accuracy).
    pub meta: ScoreModelMeta,
    /// Holds the adapter and head variables.
    vs: nn::VarStore,
}

impl LearnedScoreModel {
    /// Loads the folder `dir` onto `base` (any view of the frozen base the model was trained
    /// on), on the base's device, with its variables frozen.
    pub fn load(dir: &std::path::Path, base: &Llama) -> Result<Self, RlhfError> {
        let mut vs = nn::VarStore::new(base.device());
        let (model, meta) = load_score_model(dir, base, &mut vs)?;
        vs.freeze();
        Ok(Self { model, meta, vs })
    }

    /// The model's own variables (adapter and head).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
}

impl ScoreModel for LearnedScoreModel {
    fn end_scores(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        self.model.end_scores(ids, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn last_token_comes_from_the_mask_not_the_pad_id() {
        panacea_core::device::init_torch();
        // Row 0: left padding then tokens: last index 3. Row 1: a response ending in EOS (= pad
        // id 2) followed by right padding: last real token at index 2, although ids[1][2] == pad.
        let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 0]).view([2, 4]);
        let idx: Vec<i64> = Vec::try_from(last_token_index(&mask)).expect("vec");
        assert_eq!(idx, vec![3, 2]);
    }

    #[test]
    fn bradley_terry_matches_hand_computation() {
        panacea_core::device::init_torch();
        // Margins 1 and −1: L = −(ln σ(1) + ln σ(−1))/2 = (0.3132617 + 1.3132617)/2 = 0.8132617;
        // η = 0.1 adds 0.1·mean(1, 0, 0, 1) = 0.05. Accuracy 1/2.
        let better = Tensor::from_slice(&[1.0f32, 0.0]);
        let worse = Tensor::from_slice(&[0.0f32, 1.0]);
        let out = bradley_terry_loss(&better, &worse, 0.1);
        assert!((f(&out.loss) - 0.863_261_7).abs() < 1e-6, "{}", f(&out.loss));
        assert_eq!(f(&out.accuracy), 0.5);
    }

    #[test]
    fn cost_loss_matches_hand_computation() {
        panacea_core::device::init_torch();
        // One pair: C(y_s) = −1 (labelled safe, κ_s = −1), C(y_u) = 2 (labelled unsafe, κ_u = +1).
        // L = −[ln σ(2 − (−1)) + ln σ(−1·−1) + ln σ(1·2)]
        //   = 0.0485874 + 0.3132617 + 0.1269280 = 0.4887771
        // Ordering correct (2 > −1); both signs correct.
        let out = cost_loss(
            &Tensor::from_slice(&[-1.0f32]),
            &Tensor::from_slice(&[2.0f32]),
            &Tensor::from_slice(&[1.0f32]),
            &Tensor::from_slice(&[0.0f32]),
            0.0,
        );
        assert!((f(&out.loss) - 0.488_777_1).abs() < 1e-6, "{}", f(&out.loss));
        assert_eq!(f(&out.accuracy), 1.0);
        assert_eq!(f(out.sign_accuracy.as_ref().expect("cost")), 1.0);
    }
}
