//! λ-conditioned multi-objective critic: K value heads (D → K, per token) on a backbone view that shares the frozen base and carries its own SVD-LoRA,
//! conditioned on the step's λ. Its variables live in their own VarStore with their own
//! optimiser, so the actor's optimiser never sees them.

use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_core::optim::{AdamW, AdamWConfig};
use panacea_lm::{Checkpointed, Llama};
use tch::{nn, Kind, Tensor};

use crate::policy::PpoPolicy;
use crate::RlhfError;

/// K value heads on a λ-conditioned backbone.
pub struct MultiCritic<M: PpoPolicy = Llama> {
    /// The critic's variables (adapter and heads).
    pub vs: nn::VarStore,
    /// The backbone: shared frozen base, critic adapter.
    pub backbone: M,
    /// Heads' weight [K, D].
    pub head_w: Tensor,
    /// Heads' bias [K].
    pub head_b: Tensor,
    /// AdamW(0.9, 0.95) over `vs` (its moments are saved with checkpoints).
    pub opt: AdamW,
}

impl<M: PpoPolicy> std::fmt::Debug for MultiCritic<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiCritic").field("heads", &self.head_w.size()).finish()
    }
}

impl<M: PpoPolicy> MultiCritic<M> {
    /// Builds the critic on `base` (any view of the frozen base) with a fresh VarStore on the
    /// base's device. `adapter.n_objectives` must be K. Heads start at zero (there are no
    /// score-model heads to copy them from), so every value starts at 0.
    pub fn new(
        base: &M,
        adapter: &SvdLoraConfig,
        lr: f64,
        weight_decay: f64,
    ) -> Result<Self, RlhfError> {
        let vs = nn::VarStore::new(base.device());
        let root = vs.root();
        let backbone = PpoPolicy::with_adapter(base, Some((&root.sub("backbone"), adapter)));
        let k = adapter.n_objectives;
        let d = base.hidden_size();
        let heads = root.sub("value_heads");
        let head_w = heads.zeros("weight", &[k, d]);
        let head_b = heads.zeros("bias", &[k]);
        let opt = AdamW::new(&vs, AdamWConfig { weight_decay, ..Default::default() }, lr);
        Ok(Self { vs, backbone, head_w, head_b, opt })
    }

    /// Values of every action position: seq [B, T], mask [B, T], pref [B, K] → [B, A, K] f32
    /// (position t values the state before token t + 1).
    pub fn values(&self, seq: &Tensor, mask: &Tensor, pref: &Tensor) -> Tensor {
        let h = self.backbone.hidden_states(seq, mask, Adapter::On { pref }); // [B, T, D]
        self.values_of_hidden(&h)
    }

    /// [`MultiCritic::values`] for the critic's training forward: with `checkpointing`
    /// (`train.activation_checkpointing`) the backbone keeps only each decoder layer's input,
    /// and the returned [`Checkpointed`] must run its [`Checkpointed::backward`] after the
    /// caller's backward of a loss of the values. Without it this is
    /// [`MultiCritic::values`] and `None`.
    pub fn values_for_training(
        &self,
        seq: &Tensor,
        mask: &Tensor,
        pref: &Tensor,
        checkpointing: bool,
    ) -> (Tensor, Option<Checkpointed<'_>>) {
        if !checkpointing {
            return (self.values(seq, mask, pref), None);
        }
        let ck = self.backbone.hidden_states_checkpointed(seq, mask, Adapter::On { pref });
        (self.values_of_hidden(&ck.hidden), Some(ck))
    }

    /// Final hidden states [B, T, D] → values [B, A, K] (f32).
    fn values_of_hidden(&self, h: &Tensor) -> Tensor {
        let t = h.size()[1];
        let v = h.to_kind(Kind::Float).linear(&self.head_w, Some(&self.head_b)); // [B, T, K]
        v.narrow(1, 0, t - 1) // [B, A, K]
    }
}
