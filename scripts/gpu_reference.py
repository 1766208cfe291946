#!/usr/bin/env python3
"""PyTorch-eager reference of `gpu_bench` (benches/src/bin/gpu_bench.rs, issue #10).

Runs the same workloads on the same shapes with random weights and writes `gpu_reference.json`
with the same result keys, so `benches/gpu/compare.py` can print the ratios:

- roofline/matmulN, roofline/copy        matmul TFLOP/s in the dtype; copy GB/s (read + write)
- fwdbwd/<shape>/{off,on,rows}          forward + backward, cross-entropy over the vocabulary,
                                         base frozen; off = frozen backprop (activation
                                         gradients only), on = SVD-LoRA with one λ, rows = λ per
                                         sequence
- decode/b<B>/{base,merged,rows}        greedy decoding with a preallocated KV cache (this
                                         script's own eager loop), P = 32, N = 128 on SmolLM2-135M
- ppo/{iteration,generation,scoring,reference,update}
                                         one MO-PPO iteration: sampled rollout, two score models
                                         (reward, cost), log-probs under On/Off + critic values,
                                         KL-shaped rewards and per-objective GAE, then PPO
                                         minibatches (actor and critic, AdamW, grad clipping)
- dpo/{step,reference,update}           one MO-DPO step (sigmoid loss, linear aggregation)

The model is a small nanoGPT-style Llama written here (RMSNorm, RoPE, GQA through SDPA,
SwiGLU), with the SVD-LoRA adapter computed naively as the formula reads (y + c·((xV)⊙d)Uᵀ),
which makes the same passes as a PEFT LoRA layer. Nothing but torch is needed.

When `transformers` is importable, it also times Hugging Face `generate` on a random
`LlamaForCausalLM` of the same shape (keys decode_hf/b<B>/base, ppo_hf/generation: the
"HF generate" peer of the issue's goals); when `peft` is importable too, a PEFT LoRA (r = 10, all
seven projections) forward + backward (keys fwdbwd_peft/<shape>/{off,on}). The JSON records which
were used.

GPU:  python3 scripts/gpu_reference.py --device cuda --dtype bf16 --sizes full --out DIR
CPU smoke (< 1 min): python3 scripts/gpu_reference.py --device cpu --dtype f32 --sizes small \
          --out /tmp/gpu-ref-smoke
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------
# Shapes (the same as gpu_bench.rs).

def shape(d, ffn, layers, heads, kv, vocab, tie=True, theta=10_000.0):
    return dict(d=d, ffn=ffn, layers=layers, heads=heads, kv=kv, vocab=vocab, tie=tie, theta=theta)


GPT2_124M = shape(768, 2048, 12, 12, 12, 50_257)
D2048 = shape(2048, 5632, 22, 32, 4, 32_000, tie=False)
SMOLLM2_135M = shape(576, 1536, 30, 9, 3, 49_152, theta=100_000.0)


def small(d, layers, vocab):
    return shape(d, 2 * d, layers, 4, 2, vocab)


RANK, N_OBJ, ALPHA = 8, 2, 512.0  # the adapter of every workload: k = 8, m = 2, c = α / k

# ------------------------------------------------------------------------------------------------
# Timing.


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(device, warmup, iters, f):
    for _ in range(warmup):
        f()
    sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        f()
        sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


class Recorder:
    def __init__(self):
        self.results = []

    def record(self, key, ms, **extra):
        med = statistics.median(ms)
        row = dict(key=key, ms=med, ms_all=ms, **extra)
        notes = "  ".join(
            f"{k} {row[k]:.4e}"
            for k in ("tflops", "gb_per_s", "tokens_per_s", "hbm_fraction", "max_abs_diff")
            if k in row
        )
        print(f"{key:<44} {med:>11.3f} ms  {notes}", flush=True)
        self.results.append(row)


# ------------------------------------------------------------------------------------------------
# The eager model: frozen base + named SVD-LoRA adapters on every projection.


class Adapter(nn.Module):
    """U [d_out, R], V [d_in, R], σ [k], s [1]; f32 master weights."""

    def __init__(self, d_in, d_out, k, m):
        super().__init__()
        r = k + m
        self.u = nn.Parameter(torch.randn(d_out, r) * 0.02)
        self.v = nn.Parameter(torch.randn(d_in, r) * 0.02)
        self.sigma = nn.Parameter(torch.full((k,), 0.05))
        self.s = nn.Parameter(torch.full((1,), 0.05))
        self.c = ALPHA / k

    def diag(self, pref):
        if pref.dim() == 1:
            return torch.cat([self.sigma, self.s * pref])  # [R]
        b = pref.shape[0]
        return torch.cat([self.sigma.expand(b, -1), self.s * pref], 1).unsqueeze(1)  # [B, 1, R]

    def delta(self, x, pref):
        d = self.diag(pref).to(x.dtype)
        return ((x @ self.v.to(x.dtype)) * d) @ self.u.to(x.dtype).t() * self.c


class Linear(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_out, d_in), requires_grad=False)
        self.adapters = nn.ModuleDict()
        self.merged = None  # (weight, pref) of a merged λ

    def forward(self, x, ad):
        if ad is None:
            return F.linear(x, self.weight)
        name, pref = ad
        if self.merged is not None and name == "policy" and pref.dim() == 1 and not torch.is_grad_enabled():
            return F.linear(x, self.merged)
        return F.linear(x, self.weight) + self.adapters[name].delta(x, pref)


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


class Block(nn.Module):
    def __init__(self, s):
        super().__init__()
        d, hd = s["d"], s["d"] // s["heads"]
        self.h, self.kv, self.hd = s["heads"], s["kv"], hd
        self.ln1 = nn.Parameter(torch.ones(d), requires_grad=False)
        self.ln2 = nn.Parameter(torch.ones(d), requires_grad=False)
        self.q = Linear(d, s["heads"] * hd)
        self.k = Linear(d, s["kv"] * hd)
        self.v = Linear(d, s["kv"] * hd)
        self.o = Linear(s["heads"] * hd, d)
        self.gate = Linear(d, s["ffn"])
        self.up = Linear(d, s["ffn"])
        self.down = Linear(s["ffn"], d)

    def linears(self):
        return [self.q, self.k, self.v, self.o, self.gate, self.up, self.down]

    def forward(self, x, cos, sin, ad, cache=None, pos=0):
        b, t, _ = x.shape
        h = F.rms_norm(x, (x.shape[-1],), self.ln1, 1e-5)
        q = self.q(h, ad).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(h, ad).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(h, ad).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None:
            ck, cv = cache
            ck[:, :, pos:pos + t] = k
            cv[:, :, pos:pos + t] = v
            k, v = ck[:, :, :pos + t], cv[:, :, :pos + t]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=self.h != self.kv)
        x = x + self.o(y.transpose(1, 2).reshape(b, t, self.h * self.hd), ad)
        h = F.rms_norm(x, (x.shape[-1],), self.ln2, 1e-5)
        return x + self.down(F.silu(self.gate(h, ad)) * self.up(h, ad), ad)


class Llama(nn.Module):
    def __init__(self, s, device, dtype):
        super().__init__()
        self.s = s
        self.embed = nn.Parameter(torch.empty(s["vocab"], s["d"]), requires_grad=False)
        self.blocks = nn.ModuleList([Block(s) for _ in range(s["layers"])])
        self.norm = nn.Parameter(torch.ones(s["d"]), requires_grad=False)
        self.head = None if s["tie"] else nn.Parameter(torch.empty(s["vocab"], s["d"]), requires_grad=False)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.02)
            for p in self.base_params():
                p.data = p.data.to(dtype)
        self.device, self.dtype = device, dtype
        hd = s["d"] // s["heads"]
        self.inv_freq = s["theta"] ** (-torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)

    def base_params(self):
        ps = [self.embed, self.norm] + ([self.head] if self.head is not None else [])
        for b in self.blocks:
            ps += [b.ln1, b.ln2] + [l.weight for l in b.linears()]
        return ps

    def add_adapter(self, name, k, m):
        for b in self.blocks:
            for l in b.linears():
                d_out, d_in = l.weight.shape
                with torch.device(self.device):
                    l.adapters[name] = Adapter(d_in, d_out, k, m)
        return [p for b in self.blocks for l in b.linears() for p in l.adapters[name].parameters()]

    def merge(self, pref):
        with torch.no_grad():
            for b in self.blocks:
                for l in b.linears():
                    a = l.adapters["policy"]
                    dw = (a.u * a.diag(pref)) @ a.v.t() * a.c
                    l.merged = (l.weight.float() + dw).to(l.weight.dtype)

    def unmerge(self):
        for b in self.blocks:
            for l in b.linears():
                l.merged = None

    def rope_tables(self, pos0, t):
        pos = torch.arange(pos0, pos0 + t, device=self.device, dtype=torch.float32)
        f = pos[:, None] * self.inv_freq[None]
        emb = torch.cat([f, f], -1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def hidden(self, ids, ad=None, caches=None, pos=0):
        x = F.embedding(ids, self.embed)
        cos, sin = self.rope_tables(pos, ids.shape[1])
        for i, b in enumerate(self.blocks):
            x = b(x, cos, sin, ad, None if caches is None else caches[i], pos)
        return F.rms_norm(x, (x.shape[-1],), self.norm, 1e-5)

    def logits(self, h):
        return F.linear(h, self.embed if self.head is None else self.head).float()

    def param_bytes(self):
        return sum(p.numel() * p.element_size() for p in self.base_params())


def build(s, device, dtype, seed):
    torch.manual_seed(seed)
    with torch.device(device):  # parameters are created on the device, not copied there
        m = Llama(s, device, dtype)
        policy = m.add_adapter("policy", RANK, N_OBJ)
    return m, policy


def prefs(b, device):
    one = torch.tensor([0.7, 0.3], device=device)
    w = torch.linspace(0.0, 1.0, b, device=device)
    return one, torch.stack([w, 1 - w], 1)


def rand_ids(b, t, vocab, device):
    return torch.randint(3, vocab, (b, t), device=device)


def generate(model, prompts, n, ad, sample, gen=None):
    """Preallocated KV cache; greedy or full-vocabulary sampling; returns ids [B, P+N] and the
    sampled tokens' log-probs [B, N]."""
    b, p = prompts.shape
    s = model.s
    hd = s["d"] // s["heads"]
    caches = [
        (torch.empty(b, s["kv"], p + n, hd, device=model.device, dtype=model.dtype),
         torch.empty(b, s["kv"], p + n, hd, device=model.device, dtype=model.dtype))
        for _ in range(s["layers"])
    ]
    out = torch.empty(b, n, dtype=torch.long, device=model.device)
    lps = torch.empty(b, n, device=model.device)
    with torch.no_grad():
        h = model.hidden(prompts, ad, caches, 0)
        logits = model.logits(h[:, -1])
        for i in range(n):
            logp = logits.log_softmax(-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1) if sample else logits.argmax(-1)
            out[:, i] = nxt
            lps[:, i] = logp.gather(1, nxt[:, None]).squeeze(1)
            if i + 1 < n:
                h = model.hidden(nxt[:, None], ad, caches, p + i)
                logits = model.logits(h[:, -1])
    return torch.cat([prompts, out], 1), lps


# ------------------------------------------------------------------------------------------------
# Optional Hugging Face peers.


def peer(state, what, f):
    """Runs an optional Hugging Face peer; a failure is recorded and does not cost the eager
    numbers of the same workload."""
    try:
        return f()
    except Exception as e:  # noqa: BLE001
        msg = f"{what}: {type(e).__name__}: {e}"
        print(f"peer {msg}", file=sys.stderr, flush=True)
        state.setdefault("peer_failures", []).append(msg)
        return None


def try_import(name):
    try:
        return __import__(name)
    except Exception:  # noqa: BLE001 (any import failure means "absent")
        return None


def hf_model(s, device, dtype):
    import transformers
    cfg = transformers.LlamaConfig(
        hidden_size=s["d"], intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv"], vocab_size=s["vocab"],
        tie_word_embeddings=s["tie"], rope_theta=s["theta"], max_position_embeddings=4096,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    with torch.device(device):
        m = transformers.LlamaForCausalLM(cfg).to(dtype=dtype).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def hf_generate(m, prompts, n, sample):
    with torch.no_grad():
        return m.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
            min_new_tokens=n, do_sample=sample, top_k=0 if sample else None, pad_token_id=0,
        )


# ------------------------------------------------------------------------------------------------
# Workloads.


def roofline(a, rec, state):
    dev = a.device
    n = 8192 if a.full else 256
    x = torch.randn(n, n, device=dev, dtype=a.dtype)
    y = torch.randn(n, n, device=dev, dtype=a.dtype)
    iters = a.iters or (20 if a.full else 5)
    ms = time_ms(dev, 2, iters, lambda: x @ y)
    rec.record(f"roofline/matmul{n}", ms, workload="roofline", n=n,
               tflops=2 * n ** 3 / (statistics.median(ms) * 1e-3) / 1e12)
    nbytes = (1 << 30) if a.full else (32 << 20)
    src = torch.zeros(nbytes // 4, device=dev)
    dst = torch.zeros(nbytes // 4, device=dev)
    ms = time_ms(dev, 2, iters, lambda: dst.copy_(src))
    bw = 2 * nbytes / (statistics.median(ms) * 1e-3)
    state["copy_bw"] = bw
    rec.record("roofline/copy", ms, workload="roofline", bytes=nbytes, gb_per_s=bw / 1e9)


def fwdbwd(a, rec, state):
    dev = a.device
    cases = ([("gpt2-124m", GPT2_124M, 16, 1024), ("d2048", D2048, 8, 1024)] if a.full else
             [("gpt2-124m", small(64, 2, 512), 2, 32), ("d2048", small(128, 2, 512), 2, 32)])
    iters = a.iters or (10 if a.full else 3)
    for name, s, b, t in cases:
        model, adapter = build(s, dev, a.dtype, a.seed)
        ids = rand_ids(b, t, s["vocab"], dev)
        targets = rand_ids(b, t, s["vocab"], dev).view(-1)
        one, rows = prefs(b, dev)
        probe = model.blocks[0].ln1
        probe.requires_grad_(True)  # frozen backprop: activation gradients through every layer

        def step(ad):
            logits = model.logits(model.hidden(ids, ad))
            F.cross_entropy(logits.view(-1, s["vocab"]), targets).backward()
            for p in adapter + [probe]:
                p.grad = None

        for mode, ad in (("off", None), ("on", ("policy", one)), ("rows", ("policy", rows))):
            ms = time_ms(dev, 2, iters, lambda: step(ad))
            rec.record(f"fwdbwd/{name}/{mode}", ms, workload="fwdbwd", shape=name, batch=b, seq=t,
                       mode=mode, tokens_per_s=b * t / (statistics.median(ms) * 1e-3))
        probe.requires_grad_(False)
        del model, adapter
        if state["peft"] is not None:
            peer(state, "fwdbwd_peft", lambda: fwdbwd_peft(a, rec, name, s, b, t, iters))


def fwdbwd_peft(a, rec, name, s, b, t, iters):
    import peft
    dev = a.device
    torch.manual_seed(a.seed)
    base = hf_model(s, dev, a.dtype)
    cfg = peft.LoraConfig(r=RANK + N_OBJ, lora_alpha=RANK + N_OBJ, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    m = peft.get_peft_model(base, cfg)
    # LoRA B starts at zero in PEFT; give it values so the adapter path is real work.
    with torch.no_grad():
        for n_, p in m.named_parameters():
            if "lora_B" in n_:
                p.normal_(0, 0.02)
    ids = rand_ids(b, t, s["vocab"], dev)
    targets = rand_ids(b, t, s["vocab"], dev).view(-1)
    emb = m.get_input_embeddings()

    def step(on):
        x = emb(ids).detach().requires_grad_(True)  # frozen backprop down to the embeddings
        if on:
            logits = m(inputs_embeds=x).logits
        else:
            with m.disable_adapter():
                logits = m(inputs_embeds=x).logits
        F.cross_entropy(logits.float().view(-1, s["vocab"]), targets).backward()
        for p in m.parameters():
            p.grad = None

    for mode, on in (("off", False), ("on", True)):
        ms = time_ms(dev, 2, iters, lambda: step(on))
        rec.record(f"fwdbwd_peft/{name}/{mode}", ms, workload="fwdbwd_peft", shape=name, mode=mode,
                   tokens_per_s=b * t / (statistics.median(ms) * 1e-3))
    del m, base


def decode(a, rec, state):
    dev = a.device
    s, batches, p, n = (SMOLLM2_135M, [1, 8, 64, 256], 32, 128) if a.full else (small(64, 2, 512), [1, 4], 8, 8)
    model, _ = build(s, dev, a.dtype, a.seed)
    weight_bytes = model.param_bytes()
    hd = s["d"] // s["heads"]
    kv_per_pos = 2 * s["layers"] * s["kv"] * hd
    elt = torch.tensor([], dtype=a.dtype).element_size()
    one, _ = prefs(1, dev)
    probe = rand_ids(2, p, s["vocab"], dev)
    with torch.no_grad():
        unmerged = model.logits(model.hidden(probe, ("policy", one)))
        model.merge(one)
        merged = model.logits(model.hidden(probe, ("policy", one)))
        model.unmerge()
    rec.record("decode/check/merged_vs_unmerged", [0.0], workload="check",
               max_abs_diff=(merged - unmerged).abs().max().item())
    iters = a.iters or 2
    hf = None
    warm = rand_ids(1, p, s["vocab"], dev)
    if state["transformers"] is not None:
        hf = peer(state, "decode_hf", lambda: hf_model(s, dev, a.dtype))
    # One short warm-up generation per path (kernels, allocator), instead of a full-length one
    # per case: HF generate at B = 1 takes seconds per call.
    generate(model, warm, 4, None, False)
    if hf is not None and peer(state, "decode_hf", lambda: hf_generate(hf, warm, 4, False)) is None:
        hf = None
    for b in batches:
        prompts = rand_ids(b, p, s["vocab"], dev)
        one, rows = prefs(b, dev)
        for mode in a.decode_modes.split(","):
            if mode == "merged":
                model.merge(one)
            ad = None if mode == "base" else ("policy", one if mode == "merged" else rows)
            ms = time_ms(dev, 0, iters, lambda: generate(model, prompts, n, ad, False))
            model.unmerge()
            secs = statistics.median(ms) * 1e-3
            mean_ctx = p + (n - 1) / 2
            bytes_per_step = weight_bytes + b * kv_per_pos * mean_ctx * elt
            extra = dict(workload="decode", batch=b, prompt=p, new_tokens=n, mode=mode,
                         tokens_per_s=b * n / secs, bytes_per_step=bytes_per_step,
                         achieved_gb_per_s=bytes_per_step * n / secs / 1e9)
            if "copy_bw" in state:
                extra["hbm_fraction"] = bytes_per_step * n / secs / state["copy_bw"]
            rec.record(f"decode/b{b}/{mode}", ms, **extra)
        if hf is not None:
            ms = peer(state, f"decode_hf/b{b}",
                      lambda: time_ms(dev, 0, iters, lambda: hf_generate(hf, prompts, n, False)))
            if ms is not None:
                rec.record(f"decode_hf/b{b}/base", ms, workload="decode_hf", batch=b, mode="base",
                           tokens_per_s=b * n / (statistics.median(ms) * 1e-3))


def clip_and_step(opt, params, max_norm):
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


def ppo(a, rec, state):
    """One MO-PPO iteration as the Rust trainer does it (safe-rlhf's structure, K = 2)."""
    dev = a.device
    s, b, p, n, mb = (SMOLLM2_135M, 64, 64, 128, 16) if a.full else (small(64, 2, 512), 4, 8, 8, 2)
    k = N_OBJ
    model, actor = build(s, dev, a.dtype, a.seed)
    critic = model.add_adapter("critic", RANK, k)
    v_head = nn.Linear(s["d"], k).to(dev)
    nn.init.zeros_(v_head.weight), nn.init.zeros_(v_head.bias)
    score_heads = {}
    for name in ("reward", "cost"):
        for q in model.add_adapter(name, RANK, 1):
            q.requires_grad_(False)
        score_heads[name] = nn.Linear(s["d"], 1).to(dev).requires_grad_(False)
    actor_opt = torch.optim.AdamW(actor, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.01)
    critic_opt = torch.optim.AdamW(critic + list(v_head.parameters()), lr=1e-3, betas=(0.9, 0.95),
                                   weight_decay=0.0)
    prompts = rand_ids(b, p, s["vocab"], dev)
    _, pref = prefs(b, dev)
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    ones1 = torch.ones(1, device=dev)

    def rollout():
        return generate(model, prompts, n, ("policy", pref), True, gen)

    def scores(seq):
        with torch.no_grad():
            return torch.stack([score_heads[nm](model.hidden(seq, (nm, ones1))[:, -1].float()).squeeze(-1)
                                for nm in ("reward", "cost")], 1)  # [B, K]

    def response_lp(seq, ad):
        h = model.hidden(seq, ad)[:, p - 1:-1]  # [b, N, D]
        logits = model.logits(h)
        lp = logits.log_softmax(-1)
        return lp.gather(2, seq[:, p:, None]).squeeze(-1), lp  # [b, N], [b, N, V]

    def values(seq, pr):
        return v_head(model.hidden(seq, ("critic", pr))[:, p - 1:-1].float())  # [b, N, K]

    def reference(seq):
        with torch.no_grad():
            old, _ = response_lp(seq, ("policy", pref))
            ref, _ = response_lp(seq, None)
            return old, ref, values(seq, pref)

    def experience(seq, sc, old, ref, val):
        kl = old - ref  # [B, N]
        rewards = (-0.02 * kl)[:, :, None].expand(-1, -1, k).clone()  # [B, N, K]
        rewards[:, -1] += sc.clamp(-50, 50)
        adv = torch.zeros_like(rewards)
        last = torch.zeros(b, k, device=dev)
        for t in reversed(range(n)):  # per-objective GAE, γ = 1, λ = 0.95
            nxt = val[:, t + 1] if t + 1 < n else torch.zeros_like(last)
            delta = rewards[:, t] + nxt - val[:, t]
            last = delta + 0.95 * last
            adv[:, t] = last
        returns = adv + val
        return (adv * pref[:, None]).sum(-1), returns  # linear aggregation [B, N]

    def learn(seq, old, adv, val, returns):
        order = torch.randperm(b, device=dev)
        for i in range(0, b, mb):
            idx = order[i:i + mb]
            lp, logits_lp = response_lp(seq[idx], ("policy", pref[idx]))
            ratio = (lp - old[idx]).exp()
            a_ = adv[idx]
            loss = -torch.min(ratio * a_, ratio.clamp(0.8, 1.2) * a_).mean()
            loss.backward()
            clip_and_step(actor_opt, actor, 1.0)
            with torch.no_grad():
                _ = -(logits_lp.exp() * logits_lp).sum(-1).mean()  # entropy metric
            v = values(seq[idx], pref[idx])
            v_clip = val[idx] + (v - val[idx]).clamp(-5, 5)
            vl = 0.5 * torch.max((v - returns[idx]) ** 2, (v_clip - returns[idx]) ** 2).mean()
            vl.backward()
            clip_and_step(critic_opt, critic + list(v_head.parameters()), 1.0)
            _ = loss.item(), vl.item()

    def iteration():
        seq, _ = rollout()
        sc = scores(seq)
        old, ref, val = reference(seq)
        adv, returns = experience(seq, sc, old, ref, val)
        learn(seq, old, adv, val, returns)

    iters = a.iters or 2
    info = dict(workload="ppo", batch=b, prompt=p, new_tokens=n, mini_batch=mb)
    ms = time_ms(dev, 1, iters, iteration)
    rec.record("ppo/iteration", ms, tokens_per_s=b * n / (statistics.median(ms) * 1e-3), **info)
    split = {k_: [] for k_ in ("generation", "scoring", "reference", "update")}
    for _ in range(iters):
        t0 = time.perf_counter(); seq, _ = rollout(); sync(dev)
        split["generation"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter(); sc = scores(seq); sync(dev)
        split["scoring"].append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter(); old, ref, val = reference(seq); sync(dev)
        split["reference"].append((time.perf_counter() - t0) * 1e3)
        adv, returns = experience(seq, sc, old, ref, val); sync(dev)
        t0 = time.perf_counter(); learn(seq, old, adv, val, returns); sync(dev)
        split["update"].append((time.perf_counter() - t0) * 1e3)
    for phase, ms in split.items():
        rec.record(f"ppo/{phase}", ms, phase=phase, **info)
    if state["transformers"] is not None:
        def hf_rollout():
            hf = hf_model(s, dev, a.dtype)
            return time_ms(dev, 1, iters, lambda: hf_generate(hf, prompts, n, True))
        ms = peer(state, "ppo_hf", hf_rollout)
        if ms is not None:
            rec.record("ppo_hf/generation", ms, phase="generation", peer="hf generate", **info)


def dpo(a, rec, state):
    dev = a.device
    s, b, p, t = (SMOLLM2_135M, 16, 256, 512) if a.full else (small(64, 2, 512), 2, 8, 16)
    model, adapter = build(s, dev, a.dtype, a.seed)
    opt = torch.optim.AdamW(adapter, lr=5e-4, betas=(0.9, 0.999), weight_decay=0.0)
    ids = rand_ids(2 * b, t, s["vocab"], dev)
    ids[b:, :p] = ids[:b, :p]  # the two sequences of a pair share the prompt, as in gpu_bench
    one = torch.tensor([0.7, 0.3], device=dev)
    labels = torch.ones(b, N_OBJ, device=dev)

    def seq_lp(ad):
        logits = model.logits(model.hidden(ids, ad)[:, p - 1:-1])  # response positions only
        return logits.log_softmax(-1).gather(2, ids[:, p:, None]).squeeze(-1).sum(-1)  # [2B]

    def reference():
        with torch.no_grad():
            return seq_lp(None)

    def step():
        ref = reference()
        lp = seq_lp(("policy", one))
        h = (lp - ref)
        z = 0.1 * (h[:b] - h[b:])  # β = 0.1
        per = -F.logsigmoid(labels * z[:, None]).mean(0)  # [K]
        (per * one).sum().backward()
        clip_and_step(opt, adapter, 1.0)
        _ = per.tolist()

    iters = a.iters or (5 if a.full else 2)
    info = dict(workload="dpo", pairs=b, prompt=p, seq=t)
    step_ms = time_ms(dev, 1, iters, step)
    ref_ms = time_ms(dev, 0, iters, reference)
    rec.record("dpo/step", step_ms, tokens_per_s=2 * b * t / (statistics.median(step_ms) * 1e-3), **info)
    rec.record("dpo/reference", ref_ms, phase="reference", **info)
    rec.record("dpo/update", [max(x - y, 0.0) for x, y in zip(step_ms, ref_ms)], phase="update", **info)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="bf16")
    ap.add_argument("--sizes", choices=["small", "full"], default="full")
    ap.add_argument("--out", default="gpu-bench-out")
    ap.add_argument("--only", default="", help="comma-separated subset of roofline,fwdbwd,decode,ppo,dpo")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers/peft peers")
    ap.add_argument("--decode-modes", default="base,merged,rows",
                    help="decode modes of the eager model (run.sh times only base: the goals use it)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    a.device = torch.device(a.device)
    a.dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    a.full = a.sizes == "full"
    state = {
        "transformers": None if a.no_hf else try_import("transformers"),
        "peft": None if a.no_hf else try_import("peft"),
    }
    if state["transformers"] is None:
        state["peft"] = None
    used = {k: (getattr(v, "__version__", "?") if v is not None else None) for k, v in state.items()}
    gpu = torch.cuda.get_device_name(a.device) if a.device.type == "cuda" else None
    print(f"gpu_reference: torch {torch.__version__}, device {a.device} ({gpu}), dtype {a.dtype}, "
          f"sizes {a.sizes}, transformers {used['transformers']}, peft {used['peft']}", flush=True)
    rec = Recorder()
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "gpu_reference.json")
    gpu_name = gpu

    def write(failures, t0):
        # Rewritten after every workload, so a run cut short by a time limit keeps its numbers.
        report = dict(tool="scripts/gpu_reference.py", torch=torch.__version__, device=str(a.device),
                      gpu=gpu_name, dtype="bf16" if a.dtype == torch.bfloat16 else "f32",
                      sizes=a.sizes, peers=used, threads=torch.get_num_threads(),
                      wall_s=time.perf_counter() - t0, failures=failures,
                      peer_failures=state.get("peer_failures", []), results=rec.results)
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")

    wanted = [w for w in a.only.split(",") if w] or ["roofline", "fwdbwd", "decode", "ppo", "dpo"]
    t0 = time.perf_counter()
    failures = []
    for w in ("roofline", "fwdbwd", "decode", "ppo", "dpo"):
        if w not in wanted:
            continue
        try:
            globals()[w](a, rec, state)
        except Exception as e:  # noqa: BLE001 (keep the other workloads' numbers)
            print(f"workload {w} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            failures.append(f"{w}: {type(e).__name__}: {e}")
        if a.device.type == "cuda":
            torch.cuda.empty_cache()
        write(failures, t0)
    write(failures, t0)
    print(f"wrote {path} ({time.perf_counter() - t0:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
