//! The 8 user prompts every decode measurement uses: the criterion bench
//! (`benches/benches/benchmarks/lm_decode.rs`), the `decode_timer` and `decode_profile`
//! examples, and their Python peers (`scripts/hf_decode_bench.py`, `scripts/lm_decode_paired.py`,
//! which keep a copy of this list). Rendered with [`crate::ChatTemplate::user_prompt`].

/// The decode-benchmark prompts, in batch order (batch B takes the first B).
pub const DECODE_BENCH_PROMPTS: [&str; 8] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a tip for learning to cook.",
    "What is 12 times 7?",
    "Describe a cat to someone who has never seen one.",
];
