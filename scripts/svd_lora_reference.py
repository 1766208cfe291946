#!/usr/bin/env python3
"""PyTorch reference for panacea-core's SVD-LoRA layer and loss aggregation.

Writes crates/panacea-core/tests/fixtures/svd_lora_reference.json, which the Rust test
`reference::matches_pytorch_reference` reads. Everything is computed in float64 from inputs
given by closed-form formulas (no RNG), so the fixture is reproducible on any machine.

Formulas (method.md §2.1, §3.3):
    d      = concat(sigma, s * pref)                      [R] or [B, R]
    y      = x W0^T + b + c * ((x V) * d) U^T,  c = alpha / k
    dW     = c * U diag(d) V^T                             (one pref)
    LS     = sum_i pref_i * mean_i,    Tche = max_i pref_i * mean_i   (z = 0)
    mean_i = masked batch mean of dimension i; rows grouped by identical pref,
             groups weighted by their row counts.

Run (torch 2.x, CPU is enough):
    python3 scripts/svd_lora_reference.py
The Rust test refuses a fixture whose `version` differs from the one it expects; bump VERSION
here and in tests/it/reference.rs together when the contents change.
"""
import json
import math
import os

import torch

VERSION = 1
OUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "crates", "panacea-core", "tests", "fixtures", "svd_lora_reference.json",
)


def fill(shape, seed, scale):
    """Deterministic values: scale * sin(1.7 * i + seed) for i = 0..numel-1."""
    n = math.prod(shape)
    v = torch.tensor([scale * math.sin(1.7 * i + seed) for i in range(n)], dtype=torch.float64)
    return v.reshape(shape)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1)]


def layer_case():
    d_in, d_out, k, m, alpha = 5, 4, 3, 2, 6.0
    r = k + m
    c = alpha / k
    w0 = fill([d_out, d_in], 0.1, 0.5)
    b0 = fill([d_out], 0.2, 0.3)
    u = fill([d_out, r], 0.3, 0.4).requires_grad_(True)
    v = fill([d_in, r], 0.4, 0.4).requires_grad_(True)
    sigma = fill([k], 0.5, 0.8).requires_grad_(True)
    s = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
    x = fill([2, 3, d_in], 0.6, 1.0)
    g = fill([2, 3, d_out], 0.7, 1.0)
    pref_rows = torch.tensor([[0.7, 0.3], [0.0, 1.0]], dtype=torch.float64)

    d = torch.cat([sigma.expand(2, k), s * pref_rows], dim=1)  # [B, R]
    y = x @ w0.T + b0 + c * ((x @ v) * d[:, None, :]) @ u.T  # [B, T, d_out]
    (y * g).sum().backward()

    pref = torch.tensor([0.7, 0.3], dtype=torch.float64)
    d1 = torch.cat([sigma, s * pref])  # [R]
    delta_w = c * (u * d1[None, :]) @ v.T  # [d_out, d_in]
    return {
        "d_in": d_in, "d_out": d_out, "rank": k, "n_objectives": m, "alpha": alpha,
        "weight": flat(w0), "bias": flat(b0), "u": flat(u), "v": flat(v),
        "sigma": flat(sigma), "pref_scale": flat(s),
        "x": flat(x), "x_shape": list(x.shape), "grad_out": flat(g),
        "pref_rows": flat(pref_rows), "y": flat(y),
        "grad_u": flat(u.grad), "grad_v": flat(v.grad),
        "grad_sigma": flat(sigma.grad), "grad_pref_scale": flat(s.grad),
        "pref": flat(pref), "delta_w": flat(delta_w),
    }


def grouped(losses, mask, prefs, reduce):
    b = losses.shape[0]
    groups = {}
    for row in range(b):
        groups.setdefault(tuple(prefs[row].tolist()), []).append(row)
    total = torch.zeros((), dtype=torch.float64)
    for key, rows in groups.items():
        l, mk = losses[rows], mask[rows]
        means = (l * mk).sum(0) / mk.sum(0).clamp_min(1.0)
        total = total + reduce(means, torch.tensor(key, dtype=torch.float64)) * len(rows) / b
    return total


def aggregation_case():
    losses = fill([6, 3], 0.9, 1.0).abs().requires_grad_(True)  # L >= 0
    mask = torch.tensor(
        [[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.float64
    )
    prefs = torch.tensor(
        [[0.2, 0.3, 0.5]] * 3 + [[0.6, 0.2, 0.2]] * 2 + [[1.0, 0.0, 0.0]], dtype=torch.float64
    )
    ls = grouped(losses, mask, prefs, lambda mu, p: (p * mu).sum())
    ls_grad = torch.autograd.grad(ls, losses)[0]
    tche = grouped(losses, mask, prefs, lambda mu, p: torch.amax(p * mu))
    tche_grad = torch.autograd.grad(tche, losses)[0]
    return {
        "losses": flat(losses), "mask": flat(mask), "prefs": flat(prefs),
        "linear": float(ls.detach()), "linear_grad": flat(ls_grad),
        "tchebycheff": float(tche.detach()), "tchebycheff_grad": flat(tche_grad),
    }


def main():
    fixture = {
        "version": VERSION,
        "generator": "scripts/svd_lora_reference.py",
        "torch": torch.__version__,
        "layer": layer_case(),
        "aggregation": aggregation_case(),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
