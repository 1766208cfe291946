//! An estimate of the memory one adapter-training forward and backward needs: the frozen base
//! weights, the SVD-LoRA adapter with its gradient and AdamW moments, the activations autograd
//! keeps for the backward pass (all layers', or with activation checkpointing
//! ([`crate::Llama::hidden_states_checkpointed`]) each layer's input plus one layer being
//! recomputed), and the LM head's f32 logits. A planning number, not a measurement: libtorch's
//! caching allocator, workspace buffers and fragmentation come on top.
//!
//! Activations per token and layer, counted from the tensors [`crate::Llama`]'s forward saves
//! for its backward (D hidden, I intermediate, H/Hkv query/key-value heads of size hd):
//! the attention norm's input (D), the q/k/v projections' input (D), q, k and v after RoPE
//! (H·hd + 2·Hkv·hd, kept by the fused attention kernel), the attention output that o_proj
//! reads (H·hd), the MLP norm's input (D), the gate/up input (D), gate, SiLU(gate), up and
//! their product (4·I), plus each adapted projection's rank-space activation (k + m). That is
//! 4D + 2·H·hd + 2·Hkv·hd + 4I + 7(k + m) elements in the base dtype; attention probabilities
//! are not kept (fused attention recomputes them). The head keeps the final norm's and the
//! head's inputs (2D, base dtype) and two f32 [V] rows per token that goes through the head
//! (the logits and their log-softmax; PPO and DPO score only response positions). Padded rows
//! add the boolean attention mask [B, 1, T, T] once.

use panacea_core::adapter::SvdLoraConfig;

use crate::config::LlamaConfig;

/// What one training forward covers.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlanInput<'a> {
    /// The architecture.
    pub config: &'a LlamaConfig,
    /// The adapter (its targets, rank k and objectives m).
    pub adapter: &'a SvdLoraConfig,
    /// Sequences in one forward (a DPO pair counts 2).
    pub batch: i64,
    /// Tokens per sequence.
    pub seq_len: i64,
    /// Tokens whose logits the LM head computes in one forward: `batch · seq_len` for a full
    /// head, fewer when only response positions are scored (PPO, DPO), 0 for a score model's
    /// scalar head.
    pub head_tokens: i64,
    /// Adapters trained alongside, each with its gradient and AdamW moments (PPO: the actor's
    /// and the critic's, 2; otherwise 1).
    pub trained_adapters: i64,
    /// Bytes per base weight and activation: 4 (f32) or 2 (bf16, f16).
    pub base_bytes: i64,
    /// Activation checkpointing per decoder layer.
    pub checkpointing: bool,
    /// Whether rows are padded (an explicit attention mask is built).
    pub padded: bool,
}

/// The estimate, in parameters and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Frozen base parameters.
    pub base_params: i64,
    /// Trainable adapter parameters.
    pub adapter_params: i64,
    /// Base weights: `base_params · base_bytes`.
    pub base_weight_bytes: i64,
    /// Adapter in f32 with its gradient and two AdamW moments: 16 bytes a parameter, times
    /// the adapters trained.
    pub adapter_state_bytes: i64,
    /// Decoder activations kept for the backward pass.
    pub activation_bytes: i64,
    /// Final norm and LM head inputs of every token, and the f32 logits and log-probabilities
    /// of the head tokens.
    pub head_bytes: i64,
    /// The attention mask of padded rows.
    pub mask_bytes: i64,
}

impl MemoryPlan {
    /// The parts in bytes, named: base weights, adapter state, activations, LM head, attention
    /// mask.
    pub fn parts(&self) -> [(&'static str, i64); 5] {
        [
            ("base weights", self.base_weight_bytes),
            ("adapter + AdamW", self.adapter_state_bytes),
            ("activations", self.activation_bytes),
            ("LM head", self.head_bytes),
            ("attention mask", self.mask_bytes),
        ]
    }

    /// Everything together.
    pub fn total_bytes(&self) -> i64 {
        self.base_weight_bytes
            + self.adapter_state_bytes
            + self.activation_bytes
            + self.head_bytes
            + self.mask_bytes
    }
}

/// The (input, output) sizes of a layer's seven projections, by module name.
fn projections(c: &LlamaConfig) -> [(&'static str, i64, i64); 7] {
    let (d, i) = (c.hidden_size, c.intermediate_size);
    let q = c.num_attention_heads * c.head_dim();
    let kv = c.kv_heads() * c.head_dim();
    [
        ("q_proj", d, q),
        ("k_proj", d, kv),
        ("v_proj", d, kv),
        ("o_proj", q, d),
        ("gate_proj", d, i),
        ("up_proj", d, i),
        ("down_proj", i, d),
    ]
}

/// The estimate for `input` (see the module docs for what is counted).
pub fn memory_plan(input: &MemoryPlanInput<'_>) -> MemoryPlan {
    let c = input.config;
    let (d, v, l) = (c.hidden_size, c.vocab_size, c.num_hidden_layers);
    let (hd, h, hkv) = (c.head_dim(), c.num_attention_heads, c.kv_heads());
    let projs = projections(c);
    let mut per_layer: i64 = projs.iter().map(|(_, i, o)| i * o).sum::<i64>() + 2 * d;
    if c.qkv_bias() {
        per_layer += h * hd + 2 * hkv * hd;
    }
    if c.qk_norm() {
        per_layer += 2 * hd;
    }
    let heads = if c.tie_word_embeddings { 1 } else { 2 };
    let base_params = heads * v * d + l * per_layer + d;

    let rank = input.adapter.total_rank();
    let adapted: Vec<_> = projs
        .iter()
        .filter(|(name, _, _)| input.adapter.target_modules.iter().any(|t| t == name))
        .collect();
    let adapter_per_layer: i64 =
        adapted.iter().map(|(_, i, o)| (i + o) * rank + input.adapter.rank + 1).sum();
    let adapter_params = l * adapter_per_layer;

    let tokens = input.batch * input.seq_len;
    let layer_elems =
        4 * d + 2 * h * hd + 2 * hkv * hd + 4 * c.intermediate_size + adapted.len() as i64 * rank;
    let kept_elems = if input.checkpointing { l * d + layer_elems } else { l * layer_elems };
    MemoryPlan {
        base_params,
        adapter_params,
        base_weight_bytes: base_params * input.base_bytes,
        adapter_state_bytes: adapter_params * 16 * input.trained_adapters,
        activation_bytes: tokens * kept_elems * input.base_bytes,
        head_bytes: tokens * 2 * d * input.base_bytes + input.head_tokens * 2 * v * 4,
        mask_bytes: if input.padded { input.batch * input.seq_len * input.seq_len } else { 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counted by hand for D = 64, I = 128, L = 2, H = 4, Hkv = 2, hd = 16, V = 256 (tied),
    /// an adapter of rank 4 with 2 objectives on all seven projections, B = 2, T = 8, f32:
    ///
    /// - base: embeddings 256·64 = 16,384; a layer: q 64·64 + k 64·32 + v 64·32 + o 64·64 +
    ///   MLP 3·64·128 + two norms 2·64 = 36,992; final norm 64: 16,384 + 2·36,992 + 64 = 90,432;
    /// - adapter (R = 6): q and o (64 + 64)·6 + 4 + 1 = 773 each, k and v (64 + 32)·6 + 5 = 581
    ///   each, gate, up and down (64 + 128)·6 + 5 = 1,157 each: 6,179 a layer, 12,358 in all,
    ///   16 bytes each = 197,728;
    /// - a layer's activations per token: 4·64 + 2·64 + 2·32 + 4·128 + 7·6 = 1,002 elements;
    ///   16 tokens, 4 bytes: plain 2·1,002·64 = 128,256 bytes; checkpointed (2·64 + 1,002)·64
    ///   = 72,320;
    /// - head (all 16 tokens scored): 16·(2·64·4 + 2·256·4) = 40,960; mask 2·8·8 = 128.
    #[test]
    fn matches_a_hand_count() {
        let config = LlamaConfig { intermediate_size: 128, vocab_size: 256, ..LlamaConfig::tiny() };
        let adapter = SvdLoraConfig {
            rank: 4,
            alpha: 8.0,
            n_objectives: 2,
            target_modules: panacea_core::adapter::default_targets(),
            init_std: 0.02,
        };
        let mut input = MemoryPlanInput {
            config: &config,
            adapter: &adapter,
            batch: 2,
            seq_len: 8,
            head_tokens: 16,
            trained_adapters: 1,
            base_bytes: 4,
            checkpointing: false,
            padded: true,
        };
        let plain = memory_plan(&input);
        assert_eq!((plain.base_params, plain.adapter_params), (90_432, 12_358));
        assert_eq!(plain.base_weight_bytes, 361_728);
        assert_eq!(plain.adapter_state_bytes, 197_728);
        assert_eq!(plain.activation_bytes, 128_256);
        assert_eq!((plain.head_bytes, plain.mask_bytes), (40_960, 128));
        assert_eq!(plain.total_bytes(), 361_728 + 197_728 + 128_256 + 40_960 + 128);
        input.checkpointing = true;
        let ck = memory_plan(&input);
        assert_eq!(ck.activation_bytes, 72_320);
        assert_eq!(ck.total_bytes(), plain.total_bytes() - 128_256 + 72_320);
        // PPO-like: 6 of the 16 tokens go through the head, two adapters are trained. Head
        // 16·2·64·4 + 6·2·256·4 = 8,192 + 12,288 = 20,480; adapter state 2·197,728 = 395,456.
        input.head_tokens = 6;
        input.trained_adapters = 2;
        let ppo = memory_plan(&input);
        assert_eq!((ppo.head_bytes, ppo.adapter_state_bytes), (20_480, 395_456));
        assert_eq!(ppo.parts().iter().map(|(_, b)| b).sum::<i64>(), ppo.total_bytes());
    }
}
