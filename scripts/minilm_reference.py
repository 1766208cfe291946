#!/usr/bin/env python3
"""Reference forward of all-MiniLM-L6-v2 (sentence-transformers' Transformer → mean pooling →
Normalize) in plain PyTorch, for panacea-data's relevance-scorer parity test.

It reads the same files the Rust scorer reads (`cargo xtask fetch-scorers` puts them in
`$PANACEA_CACHE/models/all-minilm-l6-v2/`), tokenises with Python `tokenizers` after turning off
the padding (fixed 128) and truncation (128) baked into tokenizer.json and re-applying truncation
at sentence_bert_config.json's max_seq_length (256), exactly as sentence-transformers does. Each
text is encoded alone (no padding), in float32, so the Rust side's padded batches are checked
against unpadded references. Output: data/fixtures/minilm_expected.json.

    ~/.cache/panacea/libtorch-2.11.0/venv/bin/python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install safetensors tokenizers      # tokenizers 0.23.3, safetensors 0.8.0
    echo ~/.cache/panacea/libtorch-2.11.0/venv/lib/python3.11/site-packages \
        > /tmp/refvenv/lib/python3.11/site-packages/zz_torch.pth   # reuse torch 2.11.0 read-only
    /tmp/refvenv/bin/python scripts/minilm_reference.py
"""

import json
import math
import os

import tokenizers
import torch
from safetensors.torch import load_file

VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("PANACEA_CACHE") or os.path.expanduser("~/.cache/panacea")
MODEL = os.path.join(CACHE, "models", "all-minilm-l6-v2")
OUT = os.path.join(ROOT, "data", "fixtures", "minilm_expected.json")

TEXTS = [
    "How do I bake a loaf of sourdough bread?",
    "Mix flour, water, salt and starter, let it rise overnight, then bake at 230 C.",
    "The stock market fell sharply on Tuesday.",
    "Café déjà vu: naïve résumé, 日本語 and emoji 😀!",
    # Longer than max_seq_length (256): checks the deliberate truncation.
    " ".join(["the quick brown fox jumps over the lazy dog"] * 40),
]
PAIRS = [[0, 1], [0, 2], [1, 2], [0, 3], [2, 4]]


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def encode(ids, w, cfg):
    h_dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = h_dim // n_heads
    eps = cfg["layer_norm_eps"]
    t = ids.shape[0]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:t]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    lin = lambda v, p: v @ w[p + ".weight"].T + w[p + ".bias"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = lin(x, p + "attention.self.query").view(t, n_heads, hd).transpose(0, 1)
        k = lin(x, p + "attention.self.key").view(t, n_heads, hd).transpose(0, 1)
        v = lin(x, p + "attention.self.value").view(t, n_heads, hd).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)
        ctx = (att @ v).transpose(0, 1).reshape(t, h_dim)
        x = layer_norm(
            x + lin(ctx, p + "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        inter = torch.nn.functional.gelu(lin(x, p + "intermediate.dense"))
        x = layer_norm(
            x + lin(inter, p + "output.dense"),
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
            eps,
        )
    pooled = x.mean(dim=0)  # every position is real: no padding here
    return torch.nn.functional.normalize(pooled, dim=0)


def main():
    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    st_cfg = json.load(open(os.path.join(MODEL, "sentence_bert_config.json")))
    tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tok.enable_truncation(max_length=st_cfg["max_seq_length"])
    w = load_file(os.path.join(MODEL, "model.safetensors"))
    cases = []
    embs = []
    with torch.no_grad():
        for text in TEXTS:
            ids = tok.encode(text).ids
            e = encode(torch.tensor(ids), w, cfg)
            embs.append(e)
            cases.append({"text": text, "ids": ids, "embedding": [float(v) for v in e]})
    cos = [
        {"a": a, "b": b, "cosine": float(torch.dot(embs[a], embs[b]))} for a, b in PAIRS
    ]
    out = {
        "version": VERSION,
        "generated_by": "scripts/minilm_reference.py",
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "max_seq_length": st_cfg["max_seq_length"],
        "cases": cases,
        "cosines": cos,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    for c in cases:
        print(len(c["ids"]), c["embedding"][:3], c["text"][:40])
    for c in cos:
        print(c)


if __name__ == "__main__":
    main()
