#!/usr/bin/env python3
"""Peer measurement for the panacea-lm decode bench (benches/benches/benchmarks/lm_decode.rs):
Hugging Face transformers `generate` on the SAME dequantised SmolLM2-135M weights that
`cargo xtask fetch-model smollm2-135m` writes (model.safetensors + config.json + tokenizer.json).

Greedy, 64 new tokens (min_new_tokens = 64, like the Rust bench's disabled EOS), ChatML prompts
left-padded, batch 1 and 8, f32 and bf16, on the CPU, with torch's default thread count unless
--threads is given. Prints the passage NLL first as a parity check (expected 1.31682),
then one JSON line per configuration with tokens/s (B × 64 / median wall time of --iters runs).

Set-up (not part of the build):
    python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch==2.11.0 transformers
    /tmp/hfvenv/bin/python scripts/hf_decode_bench.py --model-dir ~/.cache/panacea/models/smollm2-135m
"""
import argparse
import json
import os
import statistics
import time

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a tip for learning to cook.",
    "What is 12 times 7?",
    "Describe a cat to someone who has never seen one.",
]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PASSAGE = ("The capital of France is Paris. The capital of Germany is Berlin. "
           "The capital of Italy is Rome.")


def chatml(user):
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        raw = json.load(f)
    cfg = LlamaConfig(
        vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"], num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        num_key_value_heads=raw["num_key_value_heads"], rms_norm_eps=raw["rms_norm_eps"],
        rope_theta=raw["rope_theta"], max_position_embeddings=raw["max_position_embeddings"],
        tie_word_embeddings=raw["tie_word_embeddings"], bos_token_id=raw["bos_token_id"],
        eos_token_id=raw["eos_token_id"], pad_token_id=raw["eos_token_id"])
    model = LlamaForCausalLM(cfg)
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    model.tie_weights()
    model.eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    tok.pad_token_id = raw["eos_token_id"]
    tok.padding_side = "left"
    return model, tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.path.expanduser("~/.cache/panacea/models/smollm2-135m"))
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load(args.model_dir)
    with torch.no_grad():
        ids = tok(PASSAGE, return_tensors="pt").input_ids
        nll = model(ids, labels=ids).loss.item()
    print(json.dumps({"check": "passage_nll", "tokens": ids.shape[1], "mean_nll": nll,
                      "reference": 1.31682}), flush=True)
    for dt in args.dtypes.split(","):
        m = model.to(torch.float32 if dt == "f32" else torch.bfloat16)
        for b in [int(x) for x in args.batches.split(",")]:
            enc = tok([chatml(p) for p in PROMPTS[:b]], return_tensors="pt", padding=True)
            times = []
            for it in range(args.iters + 1):
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = m.generate(**enc, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                if it > 0:  # the first run warms up
                    times.append(time.perf_counter() - t0)
            assert out.shape[1] - enc.input_ids.shape[1] == 64
            med = statistics.median(times)
            print(json.dumps({"impl": "transformers", "dtype": dt, "batch": b, "new_tokens": 64,
                              "threads": torch.get_num_threads(), "median_s": med,
                              "tokens_per_s": b * 64 / med,
                              "first_answer": tok.decode(out[0, enc.input_ids.shape[1]:][:12],
                                                         skip_special_tokens=True)}), flush=True)


if __name__ == "__main__":
    main()
