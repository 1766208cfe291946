#!/usr/bin/env python3
"""Joins gpu_bench.json (Rust, tch) and gpu_reference.json (PyTorch eager) from one run on one
card and prints the ratios and the goals of issue #10. Plain Python, no packages.

    python3 benches/gpu/compare.py OUT/gpu_bench.json OUT/gpu_reference.json [--json OUT/compare.json]
"""
import argparse
import json
import sys


def load(path):
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"warning: {path}: {e}")
        report = dict(device="?", dtype="?", sizes="?", torch="?", peers={}, failures=[f"no report: {e}"],
                      results=[])
    return report, {r["key"]: r for r in report["results"]}


def fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rust")
    ap.add_argument("reference")
    ap.add_argument("--json", help="also write the table and goals here")
    a = ap.parse_args()
    rust_rep, rust = load(a.rust)
    ref_rep, ref = load(a.reference)

    print(f"rust: {rust_rep['device']} {rust_rep['dtype']} {rust_rep['sizes']}  |  reference: "
          f"torch {ref_rep['torch']} on {ref_rep.get('gpu') or ref_rep['device']}, peers {ref_rep['peers']}")
    if rust_rep["failures"] or ref_rep["failures"]:
        print(f"FAILED WORKLOADS: rust {rust_rep['failures']}  reference {ref_rep['failures']}")
    if ref_rep.get("peer_failures"):
        print(f"failed HF peers (eager numbers kept): {ref_rep['peer_failures']}")
    print()
    print(f"{'key':<40} {'rust ms':>11} {'torch ms':>11} {'torch/rust':>11}")
    table = []
    for key, r in rust.items():
        p = ref.get(key)
        speedup = p["ms"] / r["ms"] if p and r["ms"] > 0 else None
        table.append(dict(key=key, rust_ms=r["ms"], torch_ms=p["ms"] if p else None, speedup=speedup))
        print(f"{key:<40} {r['ms']:>11.3f} {fmt(p['ms'] if p else None):>11} {fmt(speedup, '.2f'):>11}")
    for key, p in ref.items():
        if key not in rust:
            print(f"{key:<40} {'':>11} {p['ms']:>11.3f}   (peer only)")

    def ms(d, key):
        return d[key]["ms"] if key in d else None

    def ratio(x, y):
        return x / y if x is not None and y not in (None, 0) else None

    goals = []

    def goal(name, value, target, ok):
        if value is None:
            status = "n/a"
        elif target == "info":
            status = "info"
        else:
            status = "PASS" if ok(value) else "FAIL"
        goals.append(dict(goal=name, value=value, target=target, status=status))

    for shape, limit in (("gpt2-124m", 1.30), ("d2048", 1.10)):
        on_off = ratio(ms(rust, f"fwdbwd/{shape}/on"), ms(rust, f"fwdbwd/{shape}/off"))
        goal(f"adapter fwd+bwd / frozen backprop, {shape} (rust)", on_off, f"<= {limit}",
             lambda v, l=limit: v <= l)
        goal(f"  same, torch eager naive SVD-LoRA (peer)",
             ratio(ms(ref, f"fwdbwd/{shape}/on"), ms(ref, f"fwdbwd/{shape}/off")), "info", lambda v: True)
        goal(f"  same, PEFT LoRA r=10 (peer)",
             ratio(ms(ref, f"fwdbwd_peft/{shape}/on"), ms(ref, f"fwdbwd_peft/{shape}/off")), "info",
             lambda v: True)
    b64 = rust.get("decode/b64/base", {}).get("tokens_per_s")
    hf64 = ref.get("decode_hf/b64/base", {}).get("tokens_per_s")
    peer = "HF generate"
    if hf64 is None:
        hf64 = ref.get("decode/b64/base", {}).get("tokens_per_s")
        peer = "torch eager loop (no HF number)"
    goal(f"decode B=64 tokens/s vs {peer}", ratio(b64, hf64), ">= 10", lambda v: v >= 10)
    goal("decode B=256 base, fraction of HBM roofline",
         rust.get("decode/b256/base", {}).get("hbm_fraction"), ">= 0.25", lambda v: v >= 0.25)
    # The same two goals through the static decoder: one CUDA graph replay per step where the
    # row says graphs=true, its eager static step otherwise (then the goal says so).
    for b, name, value, target, ok in (
            (64, f"decode B=64 tokens/s vs {peer}",
             ratio(rust.get("decode/b64/graph_base", {}).get("tokens_per_s"), hf64), ">= 10",
             lambda v: v >= 10),
            (256, "decode B=256 base, fraction of HBM roofline",
             rust.get("decode/b256/graph_base", {}).get("hbm_fraction"), ">= 0.25",
             lambda v: v >= 0.25)):
        row = rust.get(f"decode/b{b}/graph_base", {})
        how = "graph" if row.get("graphs") else "static, eager: " + str(row.get("graphs_unavailable"))
        goal(f"  {name} ({how})", value, target, ok)
    for shape in ("gpt2-124m", "d2048"):
        goal(f"adapter fwd+bwd / frozen, {shape}, one GEMM pair per projection (info)",
             ratio(ms(rust, f"fwdbwd/{shape}/on_ungrouped"), ms(rust, f"fwdbwd/{shape}/off")),
             "info", lambda v: True)
    for b in (1, 8, 64, 256):
        goal(f"merged-λ decode time / base, B={b}",
             ratio(ms(rust, f"decode/b{b}/merged"), ms(rust, f"decode/b{b}/base")), "<= 1.02",
             lambda v: v <= 1.02)
    ref_iter = ms(ref, "ppo/iteration")
    peer = "torch eager"
    if ref_iter is not None and "ppo_hf/generation" in ref and "ppo/generation" in ref:
        # The issue's peer is HF generate + PEFT: swap the eager rollout for HF's.
        ref_iter = ref_iter - ms(ref, "ppo/generation") + ms(ref, "ppo_hf/generation")
        peer = "torch eager with HF generate"
    goal(f"MO-PPO iteration speed-up vs {peer}", ratio(ref_iter, ms(rust, "ppo/iteration")), ">= 2",
         lambda v: v >= 2)
    goal("MO-DPO step speed-up vs torch eager (info)", ratio(ms(ref, "dpo/step"), ms(rust, "dpo/step")),
         "info", lambda v: True)

    print()
    print("PPO split (ms):      " + "  ".join(
        f"{ph} {fmt(ms(rust, f'ppo/{ph}'), '.1f')} / {fmt(ms(ref, f'ppo/{ph}'), '.1f')}"
        for ph in ("generation", "scoring", "reference", "update")) + "   (rust / torch)")
    print("DPO split (ms):      " + "  ".join(
        f"{ph} {fmt(ms(rust, f'dpo/{ph}'), '.1f')} / {fmt(ms(ref, f'dpo/{ph}'), '.1f')}"
        for ph in ("reference", "update")) + "   (rust / torch)")
    print("roofline:            " + "  ".join(
        f"{k} {fmt(rust.get(k, {}).get(f))} / {fmt(ref.get(k, {}).get(f))} {f}"
        for k, f in (("roofline/matmul8192", "tflops"), ("roofline/matmul256", "tflops"),
                     ("roofline/copy", "gb_per_s")) if k in rust) + "   (rust / torch)")
    print()
    print(f"{'goal':<58} {'value':>9} {'target':>9}  status")
    for g in goals:
        print(f"{g['goal']:<58} {fmt(g['value']):>9} {g['target']:>9}  {g['status']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(table=table, goals=goals), f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
