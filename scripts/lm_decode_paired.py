#!/usr/bin/env python3
"""Paired decode timing on a shared machine: panacea-lm (the `decode_timer` example, warm, in its
own process; several builds may be compared) and Hugging Face transformers `generate` (in this
process) take turns, one generation each, so all see the same load; the order rotates every
round. Reports each side's median and best tokens/s and the median of the per-round ratios,
plus the CPU time (user + system) each generation used: on a shared machine wall time also
counts the time other processes held the cores, CPU time only the work done.

    cargo build -p panacea-lm --example decode_timer
    OMP_NUM_THREADS=1 python scripts/lm_decode_paired.py --rounds 5 \
        --timer rust=$CARGO_TARGET_DIR/debug/examples/decode_timer [--timer old=PATH ...]

Same settings as scripts/hf_decode_bench.py (whose loader and prompts it imports): f32 (or
`--dtype bf16` on both sides), greedy,
64 new tokens, min_new_tokens = 64, left-padded ChatML prompts, 1 thread on both sides.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_decode_bench import PROMPTS, chatml, load  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=os.path.expanduser("~/.cache/panacea/models/smollm2-135m"))
    ap.add_argument("--timer", action="append", required=True,
                    help="NAME=PATH of a decode_timer binary (repeat to compare builds)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="weights and activations on both sides (bf16: transformers' model.to("
                         "torch.bfloat16), decode_timer's PANACEA_DTYPE=bf16)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, tok = load(args.model_dir)
    if args.dtype == "bf16":
        model = model.to(torch.bfloat16)
    env = dict(os.environ, OMP_NUM_THREADS="1", PANACEA_DTYPE=args.dtype)
    rusts = {}
    for spec in args.timer:
        name, path = spec.split("=", 1) if "=" in spec else ("rust", spec)
        p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
        print(name + ":", p.stdout.readline().strip(), flush=True)
        rusts[name] = p

    def rust_runner(p):
        def run(b):
            p.stdin.write(f"{b}\n")
            p.stdin.flush()
            _, secs, lens, cpu = p.stdout.readline().split()
            return float(secs), lens, float(cpu)
        return run

    def run_hf(b):
        enc = tok([chatml(p) for p in PROMPTS[:b]], return_tensors="pt", padding=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape[1] - enc.input_ids.shape[1] == 64
        lens = ",".join(str(int(x)) for x in enc.attention_mask.sum(1))
        return secs, lens, cpu

    runners = [(n, rust_runner(p)) for n, p in rusts.items()] + [("hf", run_hf)]
    batches = [int(x) for x in args.batches.split(",")]
    for b in batches:  # warm-up, and the prompts must tokenise alike
        lens = {n: f(b)[1] for n, f in runners}
        assert len(set(lens.values())) == 1, f"prompt lengths differ: {lens}"
    res = {b: {n: [] for n, _ in runners} for b in batches}
    cpu = {b: {n: [] for n, _ in runners} for b in batches}
    for r in range(args.rounds):
        for b in batches:
            k = r % len(runners)
            t, c = {}, {}
            for name, f in runners[k:] + runners[:k]:  # rotate the order every round
                t[name], _, c[name] = f(b)
            for n in t:
                res[b][n].append(t[n])
                cpu[b][n].append(c[n])
            row = {"round": r, "batch": b, "dtype": args.dtype, "load1": os.getloadavg()[0]}
            row.update({f"{n}_tok_s": round(b * 64 / t[n], 2) for n in t})
            row.update({f"ratio_hf_over_{n}": round(t["hf"] / t[n], 3) for n in rusts})
            row.update({f"{n}_cpu_s": round(c[n], 2) for n in c})
            print(json.dumps(row), flush=True)
    for b in batches:
        x = res[b]
        out = {"batch": b, "dtype": args.dtype, "rounds": args.rounds}
        for n in x:
            out[f"{n}_tok_s_median"] = round(b * 64 / statistics.median(x[n]), 2)
            out[f"{n}_tok_s_best"] = round(b * 64 / min(x[n]), 2)
        for n in rusts:
            ratios = [h / r for h, r in zip(x["hf"], x[n])]
            out[f"{n}_ratio_median_of_rounds"] = round(statistics.median(ratios), 3)
            out[f"{n}_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
            cr = [h / r for h, r in zip(cpu[b]["hf"], cpu[b][n]) if r > 0]
            if cr:
                out[f"{n}_cpu_time_ratio_median"] = round(statistics.median(cr), 3)
        for n in x:
            out[f"{n}_cpu_s_median"] = round(statistics.median(cpu[b][n]), 2)
        print(json.dumps(out), flush=True)
    for p in rusts.values():
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    main()
