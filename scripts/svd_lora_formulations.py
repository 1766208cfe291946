#!/usr/bin/env python3
"""Times formulations of the SVD-LoRA forward + backward against the frozen base layer, in
PyTorch eager on one CPU thread (the same libtorch 2.11 that tch links). Companion of the Rust
bench `benches/benches/benchmarks/svd_lora.rs`; results are recorded in benches/README.md,
section "SVD-LoRA adapter".

Ratios use per-thread CPU time (time.thread_time), so that other processes on a shared machine
disturb them less than wall-clock time would; every round runs all variants back to back and
the median over rounds is reported.

    python3 scripts/svd_lora_formulations.py [N] [d] [rounds]
"""
import sys
import time

import torch

F = torch.nn.functional


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    r, c = 10, 64.0
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(n, d, requires_grad=True)  # [N, d_in], as the input of a deeper layer
    w0 = torch.randn(d, d) / d**0.5  # [d_out, d_in], frozen
    b0 = torch.zeros(d)
    u = torch.randn(d, r).requires_grad_()  # [d_out, R]
    v = torch.randn(d, r).requires_grad_()  # [d_in, R]
    diag = torch.rand(r).requires_grad_()  # d = [σ; s·λ], [R]
    rows = torch.rand(n, r)  # per-row diagonal, [N, R]

    def off():
        F.linear(x, w0, b0).sum().backward()

    def naive():  # y + c·((x V) ⊙ d) Uᵀ, as written
        y = F.linear(x, w0, b0)
        (y + ((x @ v) * diag) @ u.t() * c).sum().backward()

    def fold_v_addmm():  # c·d folded into V's columns, product added inside addmm (the Rust path)
        y = F.linear(x, w0, b0)
        xv = x @ (v * (diag * c))
        torch.addmm(y, xv, u.t()).sum().backward()

    def fold_v_linear():  # same, with x·V as F.linear (other backward GEMM layout)
        y = F.linear(x, w0, b0)
        xv = F.linear(x, (v * (diag * c)).t())
        torch.addmm(y, xv, u.t()).sum().backward()

    def transposed():  # (Vᵀ xᵀ)ᵀ: the skinny GEMM with R as the row count
        y = F.linear(x, w0, b0)
        xvt = (v * (diag * c)).t() @ x.t()
        torch.addmm(y, xvt.t(), u.t()).sum().backward()

    def per_row_addmm():  # per-row λ: scale x V per row, then addmm (the Rust per-row path)
        y = F.linear(x, w0, b0)
        xv = (x @ v) * (rows * diag * c)
        torch.addmm(y, xv, u.t()).sum().backward()

    variants = [off, naive, fold_v_addmm, fold_v_linear, transposed, per_row_addmm]
    for f in variants:
        for _ in range(3):
            f()
    times = {f.__name__: [] for f in variants}
    for _ in range(rounds):
        for f in variants:
            start = time.thread_time()
            f()
            times[f.__name__].append(time.thread_time() - start)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    print(f"torch {torch.__version__}, 1 thread, N={n} d={d} R={r}, fwd+bwd, median of {rounds}")
    for k, ms in med.items():
        print(f"  {k:15s} {ms:8.3f} ms  {ms / med['off']:.3f} x off")


if __name__ == "__main__":
    main()
