//! [`PpoPolicy`]: what PPO needs of a policy model beyond [`CausalLm`]'s forward — sampling a
//! rollout under a preference, and a second view of the same frozen base with another adapter
//! (the critic's backbone). [`Llama`] implements it; another architecture plugs into
//! [`crate::PpoTrainer`] by implementing it too.

use panacea_core::adapter::{Adapter, SvdLoraConfig};
use panacea_lm::{generate_ids, CausalLm, GenerateConfig, Generation, Llama, LmError};
use rand::Rng;
use tch::{nn, Tensor};

/// A preference-conditioned causal LM that PPO can train.
pub trait PpoPolicy: CausalLm + Sized {
    /// Generates continuations of `prompts` (token ids, any lengths) under `adapter`, without
    /// gradients; sampling draws only from `rng`.
    fn generate<R: Rng>(
        &self,
        prompts: &[Vec<i64>],
        adapter: Adapter<'_>,
        cfg: &GenerateConfig,
        rng: &mut R,
    ) -> Result<Generation, LmError>;

    /// [`PpoPolicy::generate`] under `Adapter::On { pref }` (pref [B, K]) for a whole rollout;
    /// an implementation may prepare the adapter for `pref` once (same tokens as unprepared).
    fn rollout<R: Rng>(
        &mut self,
        prompts: &[Vec<i64>],
        pref: &Tensor,
        cfg: &GenerateConfig,
        rng: &mut R,
    ) -> Result<Generation, LmError> {
        self.generate(prompts, Adapter::On { pref }, cfg, rng)
    }

    /// A view of the same frozen base weights with another adapter whose variables are
    /// created under the given path (`None`: no adapter).
    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self;
}

impl PpoPolicy for Llama {
    fn generate<R: Rng>(
        &self,
        prompts: &[Vec<i64>],
        adapter: Adapter<'_>,
        cfg: &GenerateConfig,
        rng: &mut R,
    ) -> Result<Generation, LmError> {
        tch::no_grad(|| generate_ids(self, prompts, adapter, cfg, rng))
    }

    fn rollout<R: Rng>(
        &mut self,
        prompts: &[Vec<i64>],
        pref: &Tensor,
        cfg: &GenerateConfig,
        rng: &mut R,
    ) -> Result<Generation, LmError> {
        self.with_prepared_adapter(pref, |p| {
            tch::no_grad(|| generate_ids(p, prompts, Adapter::On { pref }, cfg, rng))
        })?
    }

    fn with_adapter(&self, adapter: Option<(&nn::Path, &SvdLoraConfig)>) -> Self {
        Llama::with_adapter(self, adapter)
    }
}
