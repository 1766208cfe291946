#!/usr/bin/env python3
"""End-to-end check of `panacea export-peft` against Hugging Face PEFT.

1. Builds a tiny random Llama (transformers `LlamaForCausalLM`, no hub access) and writes a
   native Panacea adapter folder for it by hand (adapter_config.json + adapter_model.safetensors
   with `<module>.svd_lora_{u,v,sigma,pref_scale}`), with non-zero σ and s.
2. Runs `panacea export-peft --adapter A --pref 0.7,0.3 --out P`.
3. Loads P with `PeftModel.from_pretrained` and checks, for every adapted module, that PEFT's
   delta weight equals ΔW(λ) = c·U diag([σ; s·λ]) Vᵀ (c = α/k), that no adapter tensor was
   unexpected or missing, and that the PEFT model's logits equal those of the base model with
   W0 + ΔW(λ) merged by hand.

Needs torch, transformers, peft and safetensors (CPU is enough):
    python3 scripts/check_peft_export.py target/debug/panacea
Prints "PEFT export OK" and exits 0 on success.
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

K, M, ALPHA = 4, 2, 8.0
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PREF = [0.7, 0.3]


def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def adapted_modules(model):
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            yield name, mod


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/panacea"
    model = tiny_llama()
    r = K + M
    c = ALPHA / K
    tensors, delta = {}, {}
    g = torch.Generator().manual_seed(1)
    lam = torch.tensor(PREF, dtype=torch.float64)
    for name, mod in adapted_modules(model):
        d_out, d_in = mod.weight.shape
        u = torch.randn(d_out, r, generator=g) * 0.2
        v = torch.randn(d_in, r, generator=g) * 0.2
        sigma = torch.randn(K, generator=g)
        s = torch.randn(1, generator=g) + 1.0
        for key, t in [("u", u), ("v", v), ("sigma", sigma), ("pref_scale", s)]:
            tensors[f"{name}.svd_lora_{key}"] = t.float().contiguous()
        dvec = torch.cat([sigma.double(), s.double() * lam])
        delta[name] = c * (u.double() * dvec[None, :]) @ v.double().T  # [d_out, d_in]
    with tempfile.TemporaryDirectory() as tmp:
        native, out = os.path.join(tmp, "native"), os.path.join(tmp, "peft")
        os.makedirs(native)
        save_file(tensors, os.path.join(native, "adapter_model.safetensors"))
        with open(os.path.join(native, "adapter_config.json"), "w") as f:
            json.dump({
                "adapter_type": "panacea_svd_lora", "format_version": 1, "rank": K,
                "alpha": ALPHA, "n_objectives": M, "objectives": ["helpful", "harmless"],
                "target_modules": TARGETS, "init_std": 0.02,
                "base_model": {"name": "tiny-llama", "hash": "test"},
            }, f)
        pref = ",".join(str(p) for p in PREF)
        subprocess.run([binary, "export-peft", "--adapter", native, "--pref", pref, "--out", out],
                       check=True)
        config = json.load(open(os.path.join(out, "adapter_config.json")))
        assert config["peft_type"] == "LORA" and config["r"] == r and config["lora_alpha"] == r

        ids = torch.randint(0, 64, (2, 9), generator=g)
        merged = tiny_llama()
        with torch.no_grad():
            for name, mod in adapted_modules(merged):
                mod.weight += delta[name].float()
            want = merged(ids).logits

        peft_model = PeftModel.from_pretrained(tiny_llama(), out).eval()
        n = 0
        for name, mod in peft_model.named_modules():
            if hasattr(mod, "get_delta_weight") and name.split(".")[-1] in TARGETS:
                key = name.removeprefix("base_model.model.")
                got = mod.get_delta_weight("default").double()
                err = (got - delta[key]).abs().max().item()
                assert err < 1e-5, f"{key}: PEFT ΔW differs by {err}"
                n += 1
        assert n == len(delta), f"PEFT loaded {n} LoRA modules, expected {len(delta)}"
        with torch.no_grad():
            got = peft_model(ids).logits
        err = (got - want).abs().max().item()
        assert err < 1e-4, f"logits differ by {err}"
    print(f"PEFT export OK: {n} modules, rank {r}, max |logit diff| {err:.2e}")


if __name__ == "__main__":
    main()
